"""Edge settings (environment variables).

:class:`EdgeSettings` says which backend this process serves. The backend itself is described by the
``BACKEND_<NAME>_*`` variables (``TYPE``, ``HOST``, ``PORT``, ``MODELS``, ``TIMEOUT``, ``KEY``) read by
:func:`hermes_proto.backends.load_backend`, the same parser the router uses, so both read one backend the
same way.
"""

from __future__ import annotations

import os
import re
from urllib.parse import urlsplit, urlunsplit

from pydantic import field_validator

from hermes_proto.backends import BackendConfig, load_backend, read_backends_file
from hermes_proto.settings import BusSettings


class EdgeSettings(BusSettings):
    """``HERMES_EDGE_BACKEND``: the backend served (lower case; consumes ``hermes.exec.<name>`` with durable
    ``edge-<name>``); ``HERMES_EDGE_CONCURRENCY``: model calls run at once by this process;
    ``HERMES_EDGE_ACK_WAIT_S``: JetStream ack wait (seconds; ``in_progress`` is sent every third of it while
    a call runs); ``HERMES_EDGE_HEARTBEAT_S``: heartbeat period (seconds); ``HERMES_EDGE_PROBE_TIMEOUT_S``:
    health probe timeout (seconds); ``HERMES_EDGE_SHUTDOWN_GRACE_S``: how long running calls may finish
    after SIGTERM (seconds); ``METRICS_PORT``: Prometheus ``/metrics`` (default 9104, 0 disables)."""

    hermes_edge_backend: str = "talos"
    hermes_edge_concurrency: int = 1
    hermes_edge_ack_wait_s: float = 5.0
    hermes_edge_heartbeat_s: float = 5.0
    hermes_edge_probe_timeout_s: float = 3.0
    hermes_edge_shutdown_grace_s: float = 20.0
    metrics_port: int = 9104

    @field_validator("hermes_edge_backend")
    @classmethod
    def _backend_name(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_]+", value):
            raise ValueError(
                "backend name must be letters, digits or '_' (a NATS subject token and part of "
                "the BACKEND_<NAME>_ variable names)"
            )
        return value.lower()

    @field_validator("hermes_edge_concurrency")
    @classmethod
    def _concurrency(cls, value: int) -> int:
        if value < 1:
            raise ValueError("HERMES_EDGE_CONCURRENCY must be >= 1")
        return value


def load_backend_settings(name: str) -> BackendConfig:
    """Read the backend's table of ``HERMES_BACKENDS_FILE`` (when set) under ``BACKEND_<NAME>_*`` from the
    environment, as the router does; raises ``pydantic.ValidationError``, or ``OSError`` /
    ``tomllib.TOMLDecodeError`` for an unreadable file."""
    tables = read_backends_file(os.environ.get("HERMES_BACKENDS_FILE") or None)
    return load_backend(name, file_fields=tables.get(name.lower()))


def loggable_url(url: str) -> str:
    """``url`` without any ``user:password@`` part."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc.rsplit("@", 1)[-1], parts.path, "", ""))
