"""``python -m hermes_gateway`` / ``hermes-gateway``: serve the API and web UI with uvicorn until SIGINT/SIGTERM."""

from __future__ import annotations

import logging
import sys
from types import FrameType

import uvicorn

from hermes_proto.telemetry import configure_logging, configure_tracing

from hermes_gateway.bootstrap import create_app
from hermes_gateway.config import get_settings

STARTUP_FAILURE = 3


class GatewayServer(uvicorn.Server):
    """uvicorn's server, except that after a graceful shutdown on SIGINT/SIGTERM the process exits 0
    instead of re-raising the signal (uvicorn's default, which ends in a KeyboardInterrupt traceback)."""

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        captured = getattr(self, "_captured_signals", None)
        if isinstance(captured, list):
            captured.clear()


def main() -> None:
    """Run the gateway on ``HERMES_WEB_HOST:HERMES_WEB_PORT``. uvicorn handles SIGINT/SIGTERM: open SSE
    streams end, the lifespan closes the NATS connection, the process exits 0. Exits 3 when it could not
    start (e.g. NATS unreachable for a minute, port taken)."""
    settings = get_settings()
    configure_logging("gateway", settings.log_level, settings.log_file)
    configure_tracing("gateway")
    for name in ("uvicorn", "uvicorn.error"):  # our own JSON lines say when we are ready and what we serve
        logging.getLogger(name).setLevel(logging.WARNING)
    config = uvicorn.Config(
        create_app(settings),
        host=settings.hermes_web_host,
        port=settings.hermes_web_port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=5,
        lifespan="on",
        # uvicorn would take the client address from X-Forwarded-For of any peer in FORWARDED_ALLOW_IPS (default
        # 127.0.0.1): off, so the peer stays the peer and only HERMES_TRUSTED_PROXIES decides (hermes_gateway.proxies).
        proxy_headers=False,
        server_header=False,
    )
    server = GatewayServer(config)
    server.run()
    if not server.started:
        sys.exit(STARTUP_FAILURE)


if __name__ == "__main__":
    main()
