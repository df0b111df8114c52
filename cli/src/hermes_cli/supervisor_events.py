"""supervisord's event listener under ``hermes up``: logs and counts every exit, restart, backoff and give-up of
the processes it supervises, and serves the counts as Prometheus metrics.

supervisord runs it (``[eventlistener:supervisor]``, see :mod:`hermes_cli.supervision`) as
``python -m hermes_cli.supervisor_events``. It speaks supervisord's event listener protocol on stdin/stdout
(``supervisor.childutils.listener``), writes one JSON line per exit, restart, backoff or give-up on stderr
(``$HERMES_HOME/logs/supervisor.log``, shown in ``hermes up``'s terminal) and serves ``/metrics`` on
127.0.0.1:``HERMES_SUPERVISOR_METRICS_PORT`` (0: not served). Its counters start from 0 when it starts (with
``hermes up``, or again if it ever crashed).

Metrics, ``service`` being the program name (``orchestrator``, ``talos-edge``, ``nats``...):
``hermes_supervisor_exits_total{service, phase}`` exits nobody asked for, ``phase`` ``running`` (it had been up
``HERMES_UP_START_SECONDS``) or ``starting`` (a failed start: the next try waits 1, 2, 3... s);
``hermes_supervisor_restarts_total{service}`` starts after such an exit;
``hermes_supervisor_failed_total{service}`` give-ups (``HERMES_UP_START_RETRIES`` failed starts in a row: it is
not started again); ``hermes_supervisor_process_up{service}`` 1 while running.
"""

from __future__ import annotations

import os
import sys
from typing import TextIO

import structlog
from prometheus_client import Counter, Gauge, start_http_server
from supervisor import childutils

EXITS = Counter(
    "hermes_supervisor_exits",
    "Exits of supervised processes that nobody asked for; phase running "
    "(it had been up HERMES_UP_START_SECONDS) or starting (a failed start)",
    ["service", "phase"],
)
RESTARTS = Counter("hermes_supervisor_restarts", "Supervised processes started again after an exit", ["service"])
FAILED = Counter(
    "hermes_supervisor_failed",
    "Supervised processes given up on after HERMES_UP_START_RETRIES failed starts in a row (not started again)",
    ["service"],
)
UP = Gauge("hermes_supervisor_process_up", "1 while the supervised process is running, else 0", ["service"])

log = structlog.get_logger("hermes.supervisor")


class Tally:
    """What the events say so far: failed starts in a row per service, and whether supervisord is stopping (then
    exits and give-ups are the shutdown's, not failures). :meth:`handle` updates the metrics and logs."""

    def __init__(self, own_name: str, start_retries: int) -> None:
        self.own_name = own_name
        self.start_retries = start_retries
        self.failed_starts: dict[str, int] = {}
        self.exits: dict[str, int] = {}
        self.restarts: dict[str, int] = {}
        self.stopping = False

    def handle(self, event: str, body: dict[str, str]) -> None:
        """One event: ``event`` its name (``PROCESS_STATE_EXITED``...), ``body`` its payload's fields."""
        if event == "SUPERVISOR_STATE_CHANGE_STOPPING":
            self.stopping = True
            log.info("supervisor_stopping")
            return
        service = body.get("processname", "")
        if not event.startswith("PROCESS_STATE_") or not service or service == self.own_name:
            return
        state = event.removeprefix("PROCESS_STATE_")
        UP.labels(service).set(1 if state == "RUNNING" else 0)
        if self.stopping:
            return
        match state:
            case "EXITED":
                EXITS.labels(service, "running").inc()
                self.exits[service] = self.exits.get(service, 0) + 1
                log.warning(
                    "service_exited",
                    supervised=service,
                    pid=body.get("pid"),
                    exit_status_expected=body.get("expected") == "1",
                    exits=self.exits[service],
                )
            case "BACKOFF":
                # supervisord waits one second more after each failed start in a row, and gives up after
                # start_retries + 1 of them.
                EXITS.labels(service, "starting").inc()
                self.exits[service] = self.exits.get(service, 0) + 1
                failed = self.failed_starts[service] = self.failed_starts.get(service, 0) + 1
                log.warning(
                    "service_backoff",
                    supervised=service,
                    failed_starts=failed,
                    retry_in_s=failed if failed <= self.start_retries else None,
                    gives_up_after=self.start_retries + 1,
                    exits=self.exits[service],
                )
            case "STARTING" if body.get("from_state") in ("EXITED", "BACKOFF"):
                RESTARTS.labels(service).inc()
                self.restarts[service] = self.restarts.get(service, 0) + 1
                log.info("service_restarting", supervised=service, restarts=self.restarts[service])
            case "RUNNING":
                self.failed_starts.pop(service, None)
                if self.restarts.get(service):
                    log.info("service_running", supervised=service, restarts=self.restarts[service])
            case "FATAL":
                FAILED.labels(service).inc()
                log.error(
                    "service_failed",
                    supervised=service,
                    failed_starts=self.failed_starts.get(service, 0),
                    detail="gave up: it kept exiting right after starting; the others keep running",
                )


def configure_logging(level: str) -> None:
    """JSON lines on stderr (stdout carries the event protocol)."""
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.JSONRenderer(),
        ],
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        wrapper_class=structlog.make_filtering_bound_logger(level.upper()),
    )
    structlog.contextvars.bind_contextvars(service="supervisor")


def serve(stdin: TextIO, stdout: TextIO, tally: Tally) -> None:
    """Handle events until stdin closes (supervisord stopped)."""
    while True:
        try:
            headers, payload = childutils.listener.wait(stdin, stdout)
        except KeyError:  # end of input: no header line any more
            return
        try:
            tally.handle(headers.get("eventname", ""), childutils.get_headers(payload.split("\n", 1)[0]))
        except Exception as exc:  # never stall supervisord's event queue on one odd event
            log.exception("event_not_handled", eventname=headers.get("eventname"), error=repr(exc))
        childutils.listener.ok(stdout)


def main() -> None:
    configure_logging(os.environ.get("LOG_LEVEL", "INFO"))
    port = int(os.environ.get("HERMES_SUPERVISOR_METRICS_PORT", "0") or 0)
    if port:
        try:
            start_http_server(port, addr="127.0.0.1")
        except OSError as exc:
            log.error("metrics_port_unavailable", port=port, error=repr(exc))
    tally = Tally(
        os.environ.get("SUPERVISOR_PROCESS_NAME", "supervisor"), int(os.environ.get("HERMES_UP_START_RETRIES", "5"))
    )
    log.info("supervisor_listening", metrics_port=port or None)
    serve(sys.stdin, sys.stdout, tally)


if __name__ == "__main__":
    main()
