"""What every ``hermes`` command shares: the options for the gateway and its token, the client they make, how a
failure becomes a message and an exit code, and the small text helpers of the listings.

Exit codes: 0 done; 1 the gateway answered an error (401: no or a wrong token), the thread or agent run failed (or
was cancelled), or waiting timed out; 2 bad usage (including an unreadable ``cli.toml``); 3 the gateway could not be
reached (130: following an agent run was interrupted, :mod:`hermes_cli.agents`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Annotated, Any

import typer

from hermes_cli.client import GatewayClient, GatewayError, GatewayUnreachable
from hermes_cli.config import ConfigError, default_url, load_settings

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3

URL_HELP = (
    "Gateway base URL (else $HERMES_URL, else url in $HERMES_HOME/cli.toml, else "
    "http://127.0.0.1:$HERMES_WEB_PORT, port 5000 by default)."
)
TOKEN_HELP = (
    "API token, sent as Authorization: Bearer (else $HERMES_TOKEN, else token in $HERMES_HOME/cli.toml; "
    "prefer those: options show up in the process list)."
)
TOKEN_HINT = "Set HERMES_TOKEN or token in $HERMES_HOME/cli.toml (or pass --token) to a token the gateway accepts."
UrlOption = Annotated[str | None, typer.Option("--url", help=URL_HELP)]
TokenOption = Annotated[str | None, typer.Option("--token", help=TOKEN_HELP, show_default=False)]
TimeoutOption = Annotated[float, typer.Option("--timeout", min=1, help="Give up waiting after this many seconds.")]


def fail(message: str, hint: str | None = None, code: int = EXIT_ERROR) -> typer.Exit:
    """Print ``error: <message>`` (and the indented ``hint``) on stderr; returns the ``typer.Exit(code)`` to
    raise."""
    typer.echo(f"error: {message}", err=True)
    if hint:
        typer.echo(f"  {hint}", err=True)
    return typer.Exit(code)


def gateway(url: str | None, token: str | None) -> GatewayClient:
    """A client of the configured gateway (see :mod:`hermes_cli.config`); exits 2 on a broken config."""
    try:
        settings = load_settings(url, token)
    except ConfigError as exc:
        raise fail(str(exc), code=EXIT_USAGE) from None
    return GatewayClient(settings.url or default_url(), token=settings.bearer())


def gateway_failure(exc: GatewayError | GatewayUnreachable) -> typer.Exit:
    """Print what went wrong with a gateway call (message, code and HTTP status; a hint: how to start Hermes, how
    to set a token on a 401, the error's ``user_action`` or else its validation details); returns the exit to
    raise (3 when unreachable, else 1)."""
    if isinstance(exc, GatewayUnreachable):
        return fail(
            f"cannot reach the Hermes gateway at {exc.url} ({type(exc.error).__name__}).",
            "Is Hermes running? Start it with `hermes up`, or point --url / HERMES_URL at it.",
            EXIT_UNREACHABLE,
        )
    if exc.status == 401:
        return fail(f"{exc.message} [{exc.code}, HTTP 401]", TOKEN_HINT)
    return fail(f"{exc.message} [{exc.code}, HTTP {exc.status}]", exc.user_action or validation_hint(exc))


def validation_hint(exc: GatewayError) -> str | None:
    """What a ``validation_failed`` error's ``details`` say, one ``field: message`` per failure joined by ``; ``
    (e.g. ``status: Input should be 'drafting', ...``); None for any other error or details of another shape."""
    if exc.code != "validation_failed" or not isinstance(exc.details, list):
        return None
    parts = [
        f"{d['loc'][-1]}: {d.get('message')}" if d.get("loc") else str(d.get("message"))
        for d in exc.details
        if isinstance(d, dict)
    ]
    return "; ".join(parts) or None


def with_client(url: str | None, token: str | None, call: Any) -> Any:
    """``call(client)`` with a client of the configured gateway, its result returned; a gateway error or an
    unreachable gateway exits as :func:`gateway_failure` says."""
    with gateway(url, token) as client:
        try:
            return call(client)
        except (GatewayError, GatewayUnreachable) as exc:
            raise gateway_failure(exc) from None


def show(data: Any, as_json: bool, pretty: Callable[[Any], None]) -> None:
    """Print ``data`` (a gateway answer) as indented JSON with ``--json``, else as ``pretty`` prints it."""
    if as_json:
        typer.echo(json.dumps(data, indent=2, ensure_ascii=False))
    else:
        pretty(data)


def table(rows: list[list[str]]) -> str:
    """``rows`` (the first one a heading) as left-aligned columns two spaces apart, trailing spaces dropped."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows
    )


def when(stamp: str | None) -> str:
    """An ISO timestamp (UTC) shortened to minutes: ``2026-05-09 07:35``."""
    return stamp[:16].replace("T", " ") if stamp else "-"


def clip(text: str, width: int) -> str:
    """``text`` on one line (whitespace runs made single spaces), cut to ``width`` characters with ``…``."""
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"
