"""Loopback fakes of external services for the Hermes tests (real wire formats, real sockets)."""
