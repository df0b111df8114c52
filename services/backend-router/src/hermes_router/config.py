"""Router settings and the backend registry, both from the environment.

The registry is ``HERMES_BACKENDS_ENABLED`` (comma-separated names) plus, per name, the
``BACKEND_<NAME>_*`` variables of :mod:`hermes_proto.backends`. Adding a backend is configuration only.
"""

from __future__ import annotations

from hermes_proto.backends import BackendConfig, load_backend
from hermes_proto.settings import BusSettings


class RouterSettings(BusSettings):
    """``hermes_default_selection_criteria``: quality_first, speed_first or cost_first;
    ``hermes_heartbeat_stale_seconds``: a backend whose last heartbeat is older counts as unhealthy;
    ``hermes_no_backend_wait_seconds``: how long a job waits for an eligible backend (counted from when it
    was queued, so a router restart does not reset it) before it fails with ``no_backend``."""

    metrics_port: int = 9103
    hermes_backends_enabled: str = "talos"
    hermes_primary_backend: str | None = None
    hermes_fallback_backend: str | None = None
    hermes_default_selection_criteria: str = "quality_first"
    hermes_heartbeat_stale_seconds: float = 15.0
    hermes_no_backend_wait_seconds: float = 300.0

    def backend_names(self) -> list[str]:
        return [n.strip().lower() for n in self.hermes_backends_enabled.split(",") if n.strip()]


def load_registry(settings: RouterSettings) -> dict[str, BackendConfig]:
    """The enabled backends by name; raises ``pydantic.ValidationError`` on a bad ``BACKEND_*`` value."""
    return {name: load_backend(name) for name in settings.backend_names()}
