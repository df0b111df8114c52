"""``hermes-talos-edge`` / ``python -m hermes_edge``: run one edge for ``HERMES_EDGE_BACKEND``."""

from __future__ import annotations

import asyncio

from hermes_proto.backends import BackendConfig
from hermes_proto.service import stop_on_signals
from hermes_proto.telemetry import bind_ids, configure_logging, configure_tracing, start_metrics_server

from hermes_edge.bootstrap import SERVICE, build_edge, run_edge
from hermes_edge.config import EdgeSettings, load_backend_settings


async def serve(settings: EdgeSettings, backend: BackendConfig) -> None:
    """Compose and run the edge until SIGINT/SIGTERM (a signal while still connecting exits at once)."""
    stop = stop_on_signals()
    building = asyncio.create_task(build_edge(settings, backend))
    stopped = asyncio.create_task(stop.wait())
    await asyncio.wait({building, stopped}, return_when=asyncio.FIRST_COMPLETED)
    if not building.done():
        building.cancel()
        return
    stopped.cancel()
    await run_edge(building.result(), stop)


def main() -> None:
    """Read the settings (raises ``pydantic.ValidationError`` on bad configuration), set up logging,
    tracing and ``/metrics``, and serve."""
    settings = EdgeSettings()
    backend = load_backend_settings(settings.hermes_edge_backend)
    configure_logging(SERVICE, settings.log_level, settings.log_file)
    bind_ids(backend=settings.hermes_edge_backend)
    configure_tracing(SERVICE)
    start_metrics_server(settings.metrics_port)
    asyncio.run(serve(settings, backend))


if __name__ == "__main__":
    main()
