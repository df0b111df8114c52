"""Backend configuration shared by the router (registry) and the edge (its one backend).

A backend named ``<name>`` is configured by ``BACKEND_<NAME>_*`` environment variables:
``ENABLED``, ``TYPE`` (``openai``: any OpenAI-compatible server; ``ollama``: Ollama's native API;
``anthropic``: Anthropic's Messages API),
``HOST`` (may carry a scheme, e.g. ``https://openrouter.ai/api``), ``PORT``, ``KEY`` (secret),
``MODELS`` (comma-separated, first is the default), ``TIMEOUT`` (seconds per call),
``RATE_LIMIT`` (requests per minute), ``HEALTH_CHECK_INTERVAL`` (seconds), ``LOCAL`` (keeps data
on the user's machines; default true for ``talos``), ``QUALITY`` and ``SPEED`` (priors in [0, 1]),
``COST_PER_MTOK_CENTS`` (price per million tokens, cents; 0 = free; ``PRICE_IN_CENTS_PER_MTOK`` and
``PRICE_OUT_CENTS_PER_MTOK`` set input and output prices apart), ``MAX_CONCURRENT`` (jobs at once; default 1
for a local backend, the seed's ``talos.max_concurrent_jobs``, unlimited otherwise), ``CAPABILITIES``
(comma-separated, e.g. ``code,reasoning,vision``), ``TOOL_CALLING`` (how the edge offers tools to an ``openai``
backend: ``native``, the default, sends OpenAI ``tools`` and ``tool_choice``; ``constrained`` describes the tools
in the system message and has the server constrain the reply to one JSON object, a tool call or an answer, with
``response_format: {"type": "json_object", "schema": ...}``, llama-cpp-python's grammar-constrained decoding:
for a model whose chat template knows no tools; ``hermes up`` sets it for the embedded model).

The same fields may come from a TOML file (``HERMES_BACKENDS_FILE``), one table per backend::

    [backends.remote_api]
    type = "openai"
    host = "https://models.example/api"
    models = ["model-a", "model-b"]
    price_in_cents_per_mtok = 15

Environment variables override the file, field by field.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator

DEFAULT_PORTS = {"ollama": 11434, "openai": 8080, "anthropic": 8080}
TOOL_CALLING_MODES = ("native", "constrained")
"""``BACKEND_<NAME>_TOOL_CALLING``: how tools reach the model (``constrained``: ``openai`` backends only)."""
BACKEND_NAME = re.compile(r"[a-z0-9_]+")
"""A backend's name (lower case): a NATS subject token and part of the ``BACKEND_<NAME>_*`` variable names."""


def enabled_backend_names(text: str) -> list[str]:
    """The backends ``HERMES_BACKENDS_ENABLED`` registers (``"talos, remote_api"`` → ``["talos", "remote_api"]``):
    lower case, in order, each once. The router registers these and ``hermes up`` starts one edge for each.
    Raises ``ValueError`` for a name that is not letters, digits or '_'."""
    names: list[str] = []
    for name in (part.strip().lower() for part in text.split(",")):
        if not name or name in names:
            continue
        if not BACKEND_NAME.fullmatch(name):
            raise ValueError(f"backend name {name!r} in HERMES_BACKENDS_ENABLED: use letters, digits or '_' only")
        names.append(name)
    return names


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
    quality: float = Field(0.5, ge=0, le=1)
    speed: float = Field(0.5, ge=0, le=1)
    cost_per_mtok_cents: float = Field(0.0, ge=0)
    price_in_cents_per_mtok: float | None = Field(None, ge=0)
    price_out_cents_per_mtok: float | None = Field(None, ge=0)
    max_concurrent: int | None = Field(None, ge=1)
    capabilities: list[str] = []
    tool_calling: str = "native"

    @field_validator("models", "capabilities", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            return [m.strip() for m in value.split(",") if m.strip()]
        return value

    @property
    def price_in(self) -> float:
        """Input price, cents per million tokens."""
        return self.cost_per_mtok_cents if self.price_in_cents_per_mtok is None else self.price_in_cents_per_mtok

    @property
    def price_out(self) -> float:
        """Output price, cents per million tokens."""
        return self.cost_per_mtok_cents if self.price_out_cents_per_mtok is None else self.price_out_cents_per_mtok

    @property
    def concurrency_limit(self) -> int | None:
        """Jobs this backend may run at once: ``max_concurrent``, else 1 for a local backend, else None."""
        if self.max_concurrent is not None:
            return self.max_concurrent
        return 1 if self.is_local else None

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        value = value.lower()
        if value not in DEFAULT_PORTS:
            raise ValueError(f"unknown backend type {value!r}; expected one of {sorted(DEFAULT_PORTS)}")
        return value

    @field_validator("tool_calling")
    @classmethod
    def _tool_calling(cls, value: str) -> str:
        value = value.strip().lower()
        if value not in TOOL_CALLING_MODES:
            raise ValueError(f"unknown tool calling mode {value!r}; expected one of {list(TOOL_CALLING_MODES)}")
        return value

    @model_validator(mode="after")
    def _constrained_needs_openai(self) -> BackendConfig:
        if self.tool_calling == "constrained" and self.type != "openai":
            raise ValueError(f"tool_calling 'constrained' needs type 'openai' (response_format), not {self.type!r}")
        return self

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


def read_backends_file(path: Path | str | None) -> dict[str, dict[str, object]]:
    """The ``[backends.<name>]`` tables of a TOML file by lower-case name ({} when ``path`` is None).
    Raises ``OSError`` when the file cannot be read and ``tomllib.TOMLDecodeError`` when it is not TOML."""
    if not path:
        return {}
    with open(path, "rb") as fh:
        tables = tomllib.load(fh).get("backends", {})
    return {name.lower(): dict(fields) for name, fields in tables.items() if isinstance(fields, dict)}


def load_backend(
    name: str, environ: dict[str, str] | None = None, file_fields: dict[str, object] | None = None
) -> BackendConfig:
    """Read ``BACKEND_<NAME>_*`` from ``environ`` (default: the process environment) over ``file_fields``
    (one table of :func:`read_backends_file`). Raises ``pydantic.ValidationError`` on a bad value."""
    env = os.environ if environ is None else environ
    prefix = f"BACKEND_{name.upper()}_"
    raw: dict[str, object] = dict(file_fields or {})
    raw.update({k[len(prefix) :].lower(): v for k, v in env.items() if k.upper().startswith(prefix) and v != ""})
    raw.pop("name", None)
    return BackendConfig(name=name.lower(), **raw)
