"""``hermes memory``: project memory, what the historian promoted from ended threads (decisions, patterns,
corrections, preferences). ``hermes memory`` lists the live entries (``--history`` also superseded, expired and
deleted ones), ``edit ID TEXT`` replaces one's text (``--kind``, ``--expires``), ``rm ID`` deletes one,
``consolidate`` runs the historian now."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from hermes_cli.common import TokenOption, UrlOption, clip, show, table, with_client

HELP = "Project memory: what Hermes keeps from ended threads; list, edit, delete, consolidate now."


def _print_entries(data: dict[str, Any]) -> None:
    rows = [["ID", "PROJECT", "KIND", "STATUS", "RELEVANCE", "TEXT"]]
    for e in data["entries"]:
        rows.append([e["entry_id"], e["project"], e["kind"], e["status"], f"{e['relevance']:.2f}", clip(e["text"], 80)])
    typer.echo(
        table(rows) if len(rows) > 1 else "No memory entries yet (`hermes memory consolidate` runs the historian)."
    )


def entries(
    ctx: typer.Context,
    project: Annotated[str | None, typer.Option("--project", help="Only this project's.")] = None,
    history: Annotated[bool, typer.Option("--history", help="Also superseded, expired and deleted ones.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the raw entries as JSON.")] = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """List project memory entries: id, project, kind, status, relevance, text."""
    if ctx.invoked_subcommand is not None:
        return
    params: dict[str, Any] = {"history": str(history).lower()}
    if project:
        params["project"] = project
    data = with_client(url, token, lambda client: client.request("GET", "/api/memory/entries", params=params))
    show(data, as_json, _print_entries)


def edit(
    entry_id: Annotated[str, typer.Argument(help="The entry (see `hermes memory`).")],
    text: Annotated[str, typer.Argument(help="Its new text.")],
    kind: Annotated[str, typer.Option("--kind", help="decision, pattern, correction or preference.")] = "preference",
    expires: Annotated[str | None, typer.Option("--expires", help="ISO 8601 time it stops applying.")] = None,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Replace an entry's text (and kind, expiry)."""
    body = {"text": text, "kind": kind, "expires_at": expires}
    with_client(url, token, lambda client: client.request("PUT", f"/api/memory/entries/{entry_id}", json=body))
    typer.echo(f"Memory entry {entry_id} updated.")


def remove(
    entry_id: Annotated[str, typer.Argument(help="The entry (see `hermes memory`).")],
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Delete an entry: it never reaches a prompt again and the historian does not bring it back."""
    with_client(url, token, lambda client: client.request("DELETE", f"/api/memory/entries/{entry_id}"))
    typer.echo(f"Memory entry {entry_id} deleted.")


def consolidate(
    project: Annotated[str | None, typer.Option("--project", help="Only this project's threads.")] = None,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Run the historian now over your ended threads."""
    body = {"project": project} if project else {}
    with_client(url, token, lambda client: client.request("POST", "/api/memory/consolidate", json=body))
    typer.echo("The historian is consolidating your ended threads.")


MEMORY_COMMANDS = (("list", entries), ("edit", edit), ("rm", remove), ("consolidate", consolidate))
