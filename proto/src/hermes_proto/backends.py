"""Backend configuration shared by the router (registry) and the edge (its one backend).

A backend named ``<name>`` is configured by ``BACKEND_<NAME>_*`` environment variables:
``ENABLED``, ``TYPE`` (``openai``: any OpenAI-compatible server; ``ollama``: Ollama's native API),
``HOST`` (may carry a scheme, e.g. ``https://openrouter.ai/api``), ``PORT``, ``KEY`` (secret),
``MODELS`` (comma-separated, first is the default), ``TIMEOUT`` (seconds per call),
``RATE_LIMIT`` (requests per minute), ``HEALTH_CHECK_INTERVAL`` (seconds), ``LOCAL`` (keeps data
on the user's machines; default true for ``talos``), ``QUALITY`` and ``SPEED`` (priors in [0, 1]),
``COST_PER_MTOK_CENTS`` (price per million tokens, cents; 0 = free).
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, SecretStr, field_validator

DEFAULT_PORTS = {"ollama": 11434, "openai": 8080}


class BackendConfig(BaseModel):
    name: str
    enabled: bool = True
    type: str = "openai"
    host: str = "127.0.0.1"
    port: int | None = None
    key: SecretStr | None = None
    models: list[str] = []
    timeout: float = 300.0
    rate_limit: int | None = None
    health_check_interval: float = 30.0
    local: bool | None = None
    quality: float = 0.5
    speed: float = 0.5
    cost_per_mtok_cents: float = 0.0

    @field_validator("models", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            return [m.strip() for m in value.split(",") if m.strip()]
        return value

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        value = value.lower()
        if value not in DEFAULT_PORTS:
            raise ValueError(f"unknown backend type {value!r}; expected one of {sorted(DEFAULT_PORTS)}")
        return value

    @property
    def default_model(self) -> str:
        return self.models[0] if self.models else "default"

    @property
    def is_local(self) -> bool:
        return self.local if self.local is not None else self.name == "talos"

    @property
    def base_url(self) -> str:
        """Where the model server listens, without a trailing slash.

        A bare host gets ``http://`` and ``port`` (default 11434 for ollama, 8080 for openai). A host with
        a scheme keeps its scheme and path and gets ``port`` only when one is set explicitly and the host
        names none, so ``https://openrouter.ai/api`` stays on port 443."""
        host = self.host.strip().rstrip("/")
        if "://" not in host:
            if ":" in host and not host.startswith("["):  # a bare IPv6 address
                host = f"[{host}]"
            return f"http://{host}:{self.port or DEFAULT_PORTS[self.type]}"
        parts = urlsplit(host)
        netloc = parts.netloc
        if self.port is not None and parts.port is None:
            netloc = f"{netloc}:{self.port}"
        return urlunsplit((parts.scheme, netloc, parts.path, "", "")).rstrip("/")


def load_backend(name: str, environ: dict[str, str] | None = None) -> BackendConfig:
    """Read ``BACKEND_<NAME>_*`` from ``environ`` (default: the process environment).
    Raises ``pydantic.ValidationError`` on a bad value."""
    env = os.environ if environ is None else environ
    prefix = f"BACKEND_{name.upper()}_"
    raw = {k[len(prefix):].lower(): v for k, v in env.items() if k.upper().startswith(prefix) and v != ""}
    return BackendConfig(name=name.lower(), **raw)
