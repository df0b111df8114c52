"""Router settings, the backend registry and the price table, all from configuration.

The registry is ``HERMES_BACKENDS_ENABLED`` (comma-separated names) plus, per name, the ``BACKEND_<NAME>_*``
variables (or a ``[backends.<name>]`` table of ``HERMES_BACKENDS_FILE``) of :mod:`hermes_proto.backends`.
Adding a backend is configuration only.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

import structlog
from pydantic import Field, field_validator

from hermes_proto.backends import BackendConfig, enabled_backend_names, load_backend, read_backends_file
from hermes_proto.events import JOB_TYPES
from hermes_proto.partitions import PartitionSettings
from hermes_proto.settings import BusSettings

log = structlog.get_logger("hermes.router")

CRITERIA = ("quality_first", "speed_first", "cost_first")
BALANCING = ("round_robin", "least_loaded", "weighted")
FAILOVER = ("next_best", "any_available")


def parse_mapping(text: str) -> dict[str, float]:
    """``"a=3,b=1.5"`` → ``{"a": 3.0, "b": 1.5}``. Raises ``ValueError`` on an entry without ``=`` or a
    value that is not a number."""
    result: dict[str, float] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, sep, value = part.partition("=")
        if not sep:
            raise ValueError(f"expected name=value, got {part!r}")
        result[name.strip().lower()] = float(value)
    return result


class RouterSettings(BusSettings, PartitionSettings):
    """Routing policy (environment variables, the seed's names).

    Selection: ``hermes_default_selection_criteria`` (quality_first, speed_first, cost_first);
    ``hermes_primary_backend`` gets a score bonus, ``hermes_fallback_backend`` a bonus on failover attempts;
    ``hermes_prefer_local`` / ``hermes_prefer_free`` add a bonus to local / free backends;
    ``hermes_<type>_jobs_backend`` sends jobs of that type (code, analysis, content, research, reasoning,
    general) to one backend while it is eligible.
    Health: ``hermes_unhealthy_threshold`` consecutive failed signals (heartbeats, probes, connection-level
    call failures) mark a backend unhealthy; ``hermes_probe_timeout_seconds`` bounds a probe;
    ``hermes_edge_stale_seconds``: a backend none of whose edges sent a heartbeat or probe reply for this long
    (or whose probe nobody answers) is ``no_edge`` and not eligible (keep it above the edges'
    ``HERMES_EDGE_HEARTBEAT_S``, 5 s by default).
    Budgets (cents; None = no limit): ``hermes_daily_budget_cents``, ``hermes_project_budgets`` (``a=500,b=200``),
    ``hermes_max_cost_per_job_cents``, ``hermes_min_remote_budget_cents`` (a paid backend is used only while at
    least this much of the daily budget remains), ``hermes_budget_alert_threshold`` (fraction, alert once per
    budget and period), ``hermes_price_table`` (TOML ``[models."<model>"]`` with ``input_cents_per_mtok`` and
    ``output_cents_per_mtok``; re-read when it changes).
    Failover and retries: ``hermes_max_failover_attempts`` further attempts after the first (seed
    ``max_retry_attempts``; a job's own ``max_retries`` wins), exponential backoff with jitter between them
    starting at ``hermes_failover_delay_seconds`` (seed ``retry_interval``) and capped at
    ``hermes_retry_max_delay_seconds`` (a 429's Retry-After wins when longer), ``hermes_failover_strategy``
    next_best (skip backends that already failed this job) or any_available.
    Load balancing: ``hermes_load_balancing_enabled``, ``hermes_load_balancing_strategy`` (round_robin,
    least_loaded, weighted), ``hermes_backend_weights`` (``talos=3,remote_api=1``).
    Waiting: ``hermes_no_backend_wait_seconds``: how long a job may wait for an eligible backend (counted from
    when it was queued, or from its failed attempt for a failover) before it is abandoned; unset (the default),
    a job waits for a backend to come back until its own timeout (``HERMES_JOB_TIMEOUT_SECONDS``, the
    orchestrator cancels it); a job waiting only because backends are saturated (concurrency or rate limit)
    waits its turn without a deadline."""

    metrics_port: int = 9103
    database_url: str | None = None
    hermes_backends_enabled: str = "talos"
    hermes_backends_file: Path | None = None
    hermes_primary_backend: str | None = None
    hermes_fallback_backend: str | None = None
    hermes_default_selection_criteria: str = "quality_first"
    hermes_prefer_local: bool = False
    hermes_prefer_free: bool = False
    hermes_code_jobs_backend: str | None = None
    hermes_analysis_jobs_backend: str | None = None
    hermes_content_jobs_backend: str | None = None
    hermes_research_jobs_backend: str | None = None
    hermes_reasoning_jobs_backend: str | None = None
    hermes_general_jobs_backend: str | None = None
    hermes_unhealthy_threshold: int = Field(3, ge=1)
    hermes_probe_timeout_seconds: float = 5.0
    hermes_edge_stale_seconds: float = Field(15.0, gt=0)
    hermes_daily_budget_cents: float | None = None
    hermes_project_budgets: str = ""
    hermes_max_cost_per_job_cents: float | None = None
    hermes_min_remote_budget_cents: float | None = None
    hermes_budget_alert_threshold: float = Field(0.8, gt=0, le=1)
    hermes_price_table: Path | None = None
    hermes_max_failover_attempts: int = Field(2, ge=0)
    hermes_failover_delay_seconds: float = Field(1.0, ge=0)
    hermes_failover_strategy: str = "next_best"
    hermes_load_balancing_enabled: bool = False
    hermes_load_balancing_strategy: str = "round_robin"
    hermes_backend_weights: str = ""
    hermes_no_backend_wait_seconds: float | None = Field(None, ge=0)
    hermes_retry_max_delay_seconds: float = Field(60.0, ge=0)

    @field_validator("hermes_default_selection_criteria")
    @classmethod
    def _criteria(cls, value: str) -> str:
        return _one_of(value, CRITERIA, "HERMES_DEFAULT_SELECTION_CRITERIA")

    @field_validator("hermes_load_balancing_strategy")
    @classmethod
    def _balancing(cls, value: str) -> str:
        return _one_of(value, BALANCING, "HERMES_LOAD_BALANCING_STRATEGY")

    @field_validator("hermes_failover_strategy")
    @classmethod
    def _failover(cls, value: str) -> str:
        return _one_of(value, FAILOVER, "HERMES_FAILOVER_STRATEGY")

    @field_validator("hermes_backends_enabled")
    @classmethod
    def _backends(cls, value: str) -> str:
        enabled_backend_names(value)
        return value

    @field_validator("hermes_project_budgets", "hermes_backend_weights")
    @classmethod
    def _mapping(cls, value: str) -> str:
        parse_mapping(value)
        return value

    def backend_names(self) -> list[str]:
        return enabled_backend_names(self.hermes_backends_enabled)

    def job_type_routes(self) -> dict[str, str]:
        """Job type → backend from ``HERMES_<TYPE>_JOBS_BACKEND``."""
        routes = {t: getattr(self, f"hermes_{t}_jobs_backend") for t in JOB_TYPES}
        return {t: b.lower() for t, b in routes.items() if b}

    def project_budgets(self) -> dict[str, float]:
        return parse_mapping(self.hermes_project_budgets)

    def backend_weights(self) -> dict[str, float]:
        return parse_mapping(self.hermes_backend_weights)

    def db_url(self) -> str:
        if self.database_url:
            return self.database_url
        self.hermes_home.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{self.hermes_home / 'router.db'}"


def _one_of(value: str, allowed: tuple[str, ...], name: str) -> str:
    value = value.strip().lower()
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")
    return value


def load_registry(settings: RouterSettings) -> dict[str, BackendConfig]:
    """The enabled backends by name. Raises ``pydantic.ValidationError`` on a bad ``BACKEND_*`` value and
    ``OSError``/``tomllib.TOMLDecodeError`` on an unreadable backends file."""
    tables = read_backends_file(settings.hermes_backends_file)
    return {name: load_backend(name, file_fields=tables.get(name)) for name in settings.backend_names()}


@dataclass(frozen=True)
class Price:
    """Cents per million tokens, input and output."""

    input: float
    output: float


class PriceTable:
    """Model prices users can edit: a TOML file ``[models."<model>"]`` with ``input_cents_per_mtok`` and
    ``output_cents_per_mtok``. Re-read whenever its modification time changes; a model not in the file is
    priced by its backend's configuration. A file that does not parse keeps the previous table (logged)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._mtime: float | None = None
        self._prices: dict[str, Price] = {}

    def _reload(self) -> None:
        if self.path is None:
            return
        try:
            mtime = os.stat(self.path).st_mtime
        except OSError:
            return
        if mtime == self._mtime:
            return
        self._mtime = mtime
        try:
            with open(self.path, "rb") as fh:
                models = tomllib.load(fh).get("models", {})
            self._prices = {
                name: Price(float(v.get("input_cents_per_mtok", 0)), float(v.get("output_cents_per_mtok", 0)))
                for name, v in models.items()
            }
            log.info("price_table_loaded", path=str(self.path), models=len(self._prices))
        except (OSError, tomllib.TOMLDecodeError, AttributeError, TypeError, ValueError) as exc:
            log.error("price_table_invalid", path=str(self.path), error=repr(exc))

    def price(self, backend: BackendConfig, model: str) -> Price:
        self._reload()
        return self._prices.get(model) or Price(backend.price_in, backend.price_out)
