"""Hermes service."""
