"""Sessions and memory: ``search`` (earlier turns of every channel), ``sessions``, ``session`` (its turns with
backend, model, tokens, cost, latency), ``soul`` (print or replace SOUL.md) and ``export sft|dpo`` (training data
as JSONL, streamed), or ``export --user U`` (everything Hermes holds about a user, :mod:`hermes_cli.user_export`)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, BinaryIO

import typer

from hermes_cli import user_export
from hermes_cli.client import GatewayClient
from hermes_cli.common import (
    EXIT_ERROR,
    EXIT_USAGE,
    TokenOption,
    UrlOption,
    clip,
    fail,
    show,
    table,
    when,
    with_client,
)


def _print_hits(query: str, hits: list[dict[str, Any]]) -> None:
    if not hits:
        typer.echo(f"Nothing in memory matches {query!r}.")
        return
    for hit in hits:
        typer.echo(
            f"session {hit['session_id']} · {hit['channel']} · {when(hit['created_at'])} UTC · score {hit['score']:.2f}"
        )
        typer.echo(f"  {' '.join(hit['snippet'].split())}\n")
    typer.echo("Open one with: hermes session SESSION_ID")


def search(
    query: Annotated[str, typer.Argument(help="Words to look for in earlier turns (any of them matches).")],
    limit: Annotated[int, typer.Option("--limit", min=1, max=100, help="At most this many hits.")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="Print the raw hits as JSON.")] = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Search memory: every channel's completed turns, best match first; prints session, channel, date (UTC)
    and a snippet with the matching words in […]."""
    hits = with_client(url, token, lambda client: client.search(query, limit))["hits"]
    show(hits, as_json, lambda found: _print_hits(query, found))


def _print_sessions(sessions: list[dict[str, Any]]) -> None:
    if not sessions:
        typer.echo("No sessions.")
        return
    rows = [["ID", "KIND", "CHANNEL", "USER", "STATUS", "TURNS", "RATING", "UPDATED (UTC)", "TITLE"]]
    rows += [
        [
            s["session_id"],
            s["kind"],
            s["channel"],
            s["user_id"],
            s["status"],
            str(s["turn_count"]),
            f"{s['rating']}/5" if s.get("rating") else "-",
            when(s["updated_at"]),
            clip(s["title"], 40),
        ]
        for s in sessions
    ]
    typer.echo(table(rows))


def sessions(
    channel: Annotated[
        str | None, typer.Option("--channel", help="Only this channel's (web, cli, api, telegram, perception...).")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=500, help="At most this many.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="Print the raw sessions as JSON.")] = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """List sessions (idea threads and chats of every channel), newest activity first."""
    listing = with_client(url, token, lambda client: client.sessions(channel, limit))["sessions"]
    show(listing, as_json, _print_sessions)


def _turn_stats(turn: dict[str, Any]) -> str:
    where = f"{turn['backend']} · {turn['model']}" if turn.get("backend") else "no backend yet"
    took = f"{turn['latency_ms']:.0f} ms" if turn.get("latency_ms") is not None else "- ms"
    return f"{where}, {turn['prompt_tokens']} + {turn['completion_tokens']} tokens, {turn['cost_cents']:.4f}¢, {took}"


def _print_session(view: dict[str, Any]) -> None:
    typer.echo(f"Session {view['session_id']}: {view['kind']} on {view['channel']}, {view['status']}")
    typer.echo(f"Title:  {view['title']}")
    typer.echo(f"User:   {view['user_id']}" + (f"  (key {view['session_key']})" if view.get("session_key") else ""))
    typer.echo(f"Since:  {view['created_at']}  (updated {view['updated_at']})")
    if view.get("rating"):
        typer.echo(f"Rated:  {view['rating']}/5")
    for number, turn in enumerate(view.get("turns", []), 1):
        typer.echo(
            f"\nTurn {number} [{turn['kind']}, {turn['status']}] job {turn['job_id']} at {when(turn['queued_at'])} UTC"
        )
        typer.echo(f"  {_turn_stats(turn)}")
        asked = next((m["content"] for m in reversed(turn["messages"]) if m["role"] == "user"), None)
        if asked:
            typer.echo(f"  > {clip(asked, 200)}")
        if turn.get("memories"):
            typer.echo(f"  memories: {', '.join(turn['memories'])}")
        typer.echo(turn["reply"] if turn.get("reply") is not None else "(no reply yet)")


def session(
    session_id: Annotated[str, typer.Argument(help="The session (see `hermes sessions`).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the raw session as JSON.")] = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Show a session's turns: backend, model, tokens, cost (cents), latency (ms), the question and the reply."""
    view = with_client(url, token, lambda client: client.session(session_id))
    show(view, as_json, _print_session)


def soul(
    set_from: Annotated[
        str | None,
        typer.Option("--set", metavar="FILE|-", help="Replace SOUL.md with this file's text (- reads standard input)."),
    ] = None,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Print SOUL.md, the system prompt every channel's turns start with; --set replaces it."""
    text = None
    if set_from is not None:
        try:
            text = sys.stdin.read() if set_from == "-" else Path(set_from).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise fail(f"cannot read {set_from}: {exc}", code=EXIT_USAGE) from None
        if not text.strip():
            raise fail("the new SOUL.md is empty.", code=EXIT_USAGE)
    reply = with_client(url, token, lambda client: client.soul(text))
    if text is None:
        typer.echo(reply["text"])
    else:
        typer.echo(f"SOUL.md updated ({reply['path']}); turns queued from now on start with it.")


class ExportKind(StrEnum):
    sft = "sft"
    dpo = "dpo"


class ExportFormat(StrEnum):
    openai = "openai"
    sharegpt = "sharegpt"


def stream_export(chunks: Iterator[bytes], sink: BinaryIO) -> int:
    """Copy ``chunks`` to ``sink``; returns the number of JSONL records (lines) written."""
    records, last = 0, b"\n"
    for chunk in chunks:
        if chunk:
            sink.write(chunk)
            records += chunk.count(b"\n")
            last = chunk[-1:]
    sink.flush()
    return records + (last != b"\n")


def _export_to(client: GatewayClient, kind: str, params: dict[str, Any], output: str) -> int:
    with client.export(kind, params) as chunks:
        if output == "-":
            return stream_export(chunks, sys.stdout.buffer)
        target = Path(output)
        partial = target.with_name(target.name + ".part")  # the file appears only once complete
        try:
            with partial.open("wb") as sink:
                records = stream_export(chunks, sink)
            partial.replace(target)
        except OSError as exc:
            raise fail(f"cannot write {output}: {exc}", code=EXIT_ERROR) from None
        finally:
            partial.unlink(missing_ok=True)
        return records


def export(
    kind: Annotated[
        ExportKind | None,
        typer.Argument(
            help="sft: one record per completed turn; dpo: preference pairs "
            "{prompt, chosen, rejected} from rated threads. Leave it out with --user."
        ),
    ] = None,
    fmt: Annotated[
        ExportFormat,
        typer.Option(
            "--format", help="SFT record format: openai ({messages}) or sharegpt ({conversations}); dpo ignores it."
        ),
    ] = ExportFormat.openai,
    since: Annotated[
        str | None, typer.Option("--since", metavar="YYYY-MM-DD", help="Only turns from this day on (UTC, inclusive).")
    ] = None,
    until: Annotated[
        str | None, typer.Option("--until", metavar="YYYY-MM-DD", help="Only turns up to this day (UTC, inclusive).")
    ] = None,
    channel: Annotated[str | None, typer.Option("--channel", help="Only this channel's turns.")] = None,
    min_rating: Annotated[
        int | None, typer.Option("--min-rating", min=1, max=5, help="Only turns of threads rated at least this.")
    ] = None,
    output: Annotated[
        str,
        typer.Option(
            "--output",
            "--out",
            "-o",
            metavar="FILE",
            help="Write the JSONL (or JSON) here (- or none: standard output).",
        ),
    ] = "-",
    user: Annotated[
        str | None,
        typer.Option(
            "--user",
            metavar="USER_ID",
            help="Instead: everything Hermes holds about this user, as one JSON document (an admin token's export).",
        ),
    ] = None,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Export training data as JSONL, streamed as the gateway sends it; prints the record count on stderr.
    A bad filter (e.g. an impossible date) exits 1 with the gateway's error. With --user (and no sft/dpo): the
    user's data-rights export, one JSON document (see hermes_cli.user_export); a non-admin token exits 1."""
    if user is not None:
        if kind is not None or any(v is not None for v in (since, until, channel, min_rating)):
            raise fail("--user exports everything about a user: leave out sft/dpo and their filters.", code=EXIT_USAGE)
        user_export.export_user(user, output, url, token)
        return
    if kind is None:
        raise fail("name what to export: sft or dpo, or --user USER_ID.", code=EXIT_USAGE)
    params = {
        "format": fmt.value if kind is ExportKind.sft else None,
        "since": since,
        "until": until,
        "channel": channel,
        "min_rating": min_rating,
    }
    records = with_client(url, token, lambda client: _export_to(client, kind.value, params, output))
    where = "standard output" if output == "-" else output
    typer.echo(f"Wrote {records} {kind.value} record{'s' if records != 1 else ''} to {where}.", err=True)
