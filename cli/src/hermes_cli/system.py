"""System commands: ``dead-letters`` (list, ``replay``) and ``up`` (Hermes on this machine)."""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Annotated, Any

import typer

from hermes_cli.common import EXIT_USAGE, TokenOption, UrlOption, fail, show, table, with_client

DEAD_LETTERS_HELP = "Messages the services could not process: list them, replay one after fixing the cause."


def _print_dead_letters(page: dict[str, Any]) -> None:
    if not page["dead_letters"]:
        typer.echo("No dead letters.")
        return
    rows = [["SEQ", "CONSUMER", "REASON", "SUBJECT", "WHEN", "REPLAYED"]]
    for d in page["dead_letters"]:
        replayed = "-" if not d["replayable"] else (d["replayed_at"] or "no")
        rows.append(
            [
                str(d["dlq_sequence"]),
                d["consumer"],
                d["reason"],
                f"{d['subject']} #{d['stream_sequence']}",
                d["dead_lettered_at"],
                replayed,
            ]
        )
    typer.echo(table(rows))
    if page.get("next_before") is not None:
        typer.echo(f"\nOlder ones: --before {page['next_before']}")


def dead_letters(
    ctx: typer.Context,
    consumer: Annotated[
        str | None, typer.Option("--consumer", help="Only this consumer's (e.g. orchestrator-commands).")
    ] = None,
    reason: Annotated[
        str | None,
        typer.Option(
            "--reason",
            help="Only this reason (invalid_json, validation_failed, invalid_idea, max_deliveries, handler_error).",
        ),
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=500, help="At most this many.")] = 50,
    before: Annotated[int | None, typer.Option("--before", min=1, help="Only older than this sequence.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the raw listing as JSON.")] = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """List dead letters, newest first: sequence (the id to replay), consumer, reason, where it was, when."""
    if ctx.invoked_subcommand is not None:
        return
    page = with_client(url, token, lambda client: client.dead_letters(consumer, reason, limit, before))
    show(page, as_json, _print_dead_letters)


def corrected_payload(text: str | None) -> dict[str, Any] | None:
    """The ``--payload`` value as a JSON object: the text itself, or the file named after ``@``; None without one.
    Exits 2 when it cannot be read or parsed, or is not an object."""
    if text is None:
        return None
    try:
        payload = json.loads(Path(text[1:]).read_text(encoding="utf-8") if text.startswith("@") else text)
    except (OSError, ValueError) as exc:
        raise fail(f"--payload is not readable JSON: {exc}", code=EXIT_USAGE) from None
    if not isinstance(payload, dict):
        raise fail("--payload must be a JSON object.", code=EXIT_USAGE)
    return payload


def replay_dead_letter(
    seq: Annotated[int, typer.Argument(min=1, help="The dead letter's sequence (first column of the list).")],
    payload: Annotated[
        str | None, typer.Option("--payload", help="A corrected message to publish instead: JSON text, or @FILE.")
    ] = None,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Publish a dead letter again on its original subject (commands and execution requests only)."""
    corrected = corrected_payload(payload)
    marker = with_client(url, token, lambda client: client.replay_dead_letter(seq, corrected))
    what = "corrected payload" if marker["corrected"] else "original payload"
    typer.echo(f"Replayed dead letter {seq} ({what}) to {marker['subject']} as #{marker['stream_sequence']}.")


def up() -> None:
    """Start Hermes on this machine: NATS, every service and a local model; prints the web UI address."""
    try:
        local_stack = importlib.import_module("hermes_cli.up")  # written separately; imported only when used
    except ModuleNotFoundError as exc:
        if exc.name != "hermes_cli.up":
            raise
        raise fail("`hermes up` is not available in this installation.") from None
    code = local_stack.run()
    raise typer.Exit(code if isinstance(code, int) else 0)
