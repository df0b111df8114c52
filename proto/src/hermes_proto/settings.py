"""Settings every service shares, read from the environment (pydantic-settings).

Each service subclasses :class:`BusSettings` with its own fields; the variable
name is the field name in upper case (``NATS_URL``, ``HERMES_HOME``...).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_home() -> Path:
    return Path.home() / ".hermes"


class BusSettings(BaseSettings):
    """``nats_url``: the NATS server; ``hermes_home``: all local state; ``metrics_port``: 0 disables the
    Prometheus endpoint of a non-HTTP service; ``dedup_window_s``: JetStream duplicate window (seconds).
    ``nats_nkey_seed_file``: this service's NKey seed (``<role>.nk``, :mod:`hermes_proto.credentials`; unset: connect
    without credentials); ``nats_tls_ca_file`` (verify the server), ``nats_tls_cert_file`` + ``nats_tls_key_file``
    (present a client certificate): TLS for a server on another host (``tls://`` URLs)."""

    model_config = SettingsConfigDict(env_prefix="", extra="ignore", case_sensitive=False)

    nats_url: str = "nats://127.0.0.1:4222"
    hermes_home: Path = Field(default_factory=default_home)
    log_level: str = "INFO"
    log_file: Path | None = None
    metrics_port: int = 0
    dedup_window_s: float = 600.0
    stream_replicas: int = 1
    nats_nkey_seed_file: Path | None = None
    nats_tls_ca_file: Path | None = None
    nats_tls_cert_file: Path | None = None
    nats_tls_key_file: Path | None = None
