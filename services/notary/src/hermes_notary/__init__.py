"""Hermes notary service."""
