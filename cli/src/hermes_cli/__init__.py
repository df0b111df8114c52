"""Hermes command line: ``hermes up`` runs the whole system locally; the rest talk to the gateway."""
