"""Settings every service shares, read from the environment (pydantic-settings).

Each service subclasses :class:`BusSettings` with its own fields; the variable
name is the field name in upper case (``NATS_URL``, ``HERMES_HOME``...).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from hermes_proto.outbound import OutboundPolicy


def default_home() -> Path:
    return Path.home() / ".hermes"


class BusSettings(BaseSettings):
    """``nats_url``: the NATS server; ``hermes_home``: all local state; ``metrics_port``: 0 disables the
    Prometheus endpoint of a non-HTTP service; ``dedup_window_s``: JetStream duplicate window (seconds).
    ``nats_nkey_seed_file``: this service's NKey seed (``<role>.nk``, :mod:`hermes_proto.credentials`; unset: connect
    without credentials); ``nats_tls_ca_file`` (verify the server), ``nats_tls_cert_file`` + ``nats_tls_key_file``
    (present a client certificate): TLS for a server on another host (``tls://`` URLs). ``hermes_seal_personal_data``:
    append personal events sealed under per-aggregate keys (:mod:`hermes_proto.keyring`; False only to measure
    its cost: forgetting cannot reach events appended in clear)."""

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
    hermes_seal_personal_data: bool = True


class OutboundSettings(BaseSettings):
    """For services that send requests to user-given URLs (mixed into their settings). ``hermes_outbound_allow``:
    receivers reachable although their address is not public (loopback, private, link-local...), comma-separated
    ``host``, ``host:port``, ``address[:port]`` or CIDR entries (:meth:`OutboundPolicy.parse`); blank: none.
    A bad entry is a settings error."""

    model_config = SettingsConfigDict(env_prefix="", extra="ignore", case_sensitive=False)

    hermes_outbound_allow: str = ""

    @field_validator("hermes_outbound_allow")
    @classmethod
    def _valid_allow_list(cls, value: str) -> str:
        OutboundPolicy.parse(value)
        return value

    def outbound_policy(self) -> OutboundPolicy:
        return OutboundPolicy.parse(self.hermes_outbound_allow)
