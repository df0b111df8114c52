"""Schedule commands: ``hermes schedule add|list|pause|resume|rm|run|runs`` (the gateway's ``/api/schedules``).

``add`` takes exactly one "when": ``--cron EXPR`` (with ``--tz``), ``--at TIME`` (ISO 8601), ``--on-event SUBJECT``
(an external producer's event under ``hermes.inbox.event.``), ``--on-file GLOB`` (a file in the project's workspace)
or ``--on-commit REPO`` (a local git repository); and what to run: an idea (default), ``--agent`` (a task, with an
optional ``--profile``) or ``--workflow FILE`` (a workflow spec's steps)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from hermes_cli.common import TokenOption, UrlOption, clip, fail, show, table, when, with_client

HELP = (
    "Schedules: run an idea, an agent task or a workflow on a cron, at a time, or when an event, file or commit comes."
)


def definition(
    name: str,
    text: str,
    cron: str | None,
    tz: str,
    at: str | None,
    on_event: str | None,
    on_file: str | None,
    on_commit: str | None,
    agent: bool,
    profile: str | None,
    workflow: Path | None,
    project: str,
    deliver: str,
    chat_id: str | None,
    url: str | None,
    missed: str,
    overlap: str,
) -> dict[str, Any]:
    """The ``POST /api/schedules`` body for the options; raises ``typer.Exit(2)`` when zero or two "when"s are given."""
    whens = {
        "cron": {"kind": "cron", "cron": cron, "timezone": tz} if cron else None,
        "at": {"kind": "at", "at": at} if at else None,
        "event": {"kind": "subject", "subject": _event_subject(on_event)} if on_event else None,
        "file": {"kind": "file", "path": on_file} if on_file else None,
        "commit": {"kind": "git", "path": str(Path(on_commit).resolve())} if on_commit else None,
    }
    chosen = [w for w in whens.values() if w is not None]
    if len(chosen) != 1:
        raise fail("give exactly one of --cron, --at, --on-event, --on-file, --on-commit", code=2)
    if workflow is not None:
        spec = json.loads(workflow.read_text())
        action: dict[str, Any] = {"kind": "workflow", "steps": spec.get("steps", []), "project": project}
    else:
        action = {"kind": "agent" if agent else "idea", "text": text, "project": project}
        if profile:
            action["profile"] = profile
    target: dict[str, Any] = {"to": deliver}
    if chat_id:
        target["chat_id"] = chat_id
    if url:
        target["url"] = url
    return {"name": name, "when": chosen[0], "action": action, "deliver": target, "missed": missed, "overlap": overlap}


def _event_subject(subject: str) -> str:
    prefix = "hermes.inbox.event."
    return subject if subject.startswith(prefix) else prefix + subject


def add(
    name: Annotated[str, typer.Argument(help="A name for the schedule.")],
    text: Annotated[str, typer.Argument(help="The idea, or the agent's task (ignored with --workflow).")] = "",
    cron: Annotated[str | None, typer.Option("--cron", help="Cron expression (5 fields; a 6th is seconds).")] = None,
    tz: Annotated[str, typer.Option("--tz", help="Time zone of --cron (IANA name).")] = "UTC",
    at: Annotated[str | None, typer.Option("--at", help="Run once at this ISO 8601 time.")] = None,
    on_event: Annotated[str | None, typer.Option("--on-event", help="Subject pattern of a producer's event.")] = None,
    on_file: Annotated[str | None, typer.Option("--on-file", help="Glob of workspace files (created/changed).")] = None,
    on_commit: Annotated[str | None, typer.Option("--on-commit", help="A local git repository (new commits).")] = None,
    agent: Annotated[bool, typer.Option("--agent", help="Run an agent on TEXT instead of the idea flow.")] = False,
    profile: Annotated[str | None, typer.Option("--profile", help="The agent's profile.")] = None,
    workflow: Annotated[Path | None, typer.Option("--workflow", help="A workflow spec (JSON) to run.")] = None,
    project: Annotated[str, typer.Option("--project", help="Budget scope and workspace.")] = "default",
    deliver: Annotated[str, typer.Option("--deliver", help="telegram, webhook, inbox or log.")] = "inbox",
    chat_id: Annotated[str | None, typer.Option("--chat-id", help="Telegram chat for --deliver telegram.")] = None,
    webhook: Annotated[str | None, typer.Option("--webhook-url", help="URL for --deliver webhook.")] = None,
    missed: Annotated[str, typer.Option("--missed", help="run_once or skip: a due time missed while down.")] = "skip",
    overlap: Annotated[str, typer.Option("--overlap", help="skip, queue or allow: due while a run goes.")] = "skip",
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Create a schedule; prints its id."""
    body = definition(
        name, text, cron, tz, at, on_event, on_file, on_commit, agent, profile, workflow, project, deliver, chat_id,
        webhook, missed, overlap,
    )  # fmt: skip
    created = with_client(url, token, lambda client: client.request("POST", "/api/schedules", json=body))
    typer.echo(f"Schedule {created['schedule_id']} created.")


def _print_schedules(data: dict[str, Any]) -> None:
    rows = [["ID", "NAME", "STATUS", "WHEN", "NEXT DUE", "LAST", "RUNS", "MISSED"]]
    for s in data["schedules"]:
        w = s["definition"]["when"]
        spec = w.get("cron") or w.get("at") or w.get("subject") or w.get("path") or ""
        rows.append(
            [
                s["schedule_id"],
                clip(s["definition"]["name"], 30),
                s["status"],
                clip(f"{w['kind']} {spec}", 40),
                when(s.get("next_due_at")),
                s.get("last_outcome") or "-",
                str(s.get("runs_total", 0)),
                str(s.get("missed_total", 0)),
            ]
        )
    typer.echo(table(rows) if len(rows) > 1 else "No schedules.")


def list_schedules(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print the raw schedules as JSON.")] = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """List your schedules: id, name, status, when, next due time, last outcome, runs, missed."""
    if ctx.invoked_subcommand is not None:
        return
    show(with_client(url, token, lambda client: client.request("GET", "/api/schedules")), as_json, _print_schedules)


def _action(verb: str, method: str, suffix: str, done: str):  # noqa: ANN202
    def command(
        schedule_id: Annotated[str, typer.Argument(help="The schedule (see `hermes schedule list`).")],
        url: UrlOption = None,
        token: TokenOption = None,
    ) -> None:
        with_client(url, token, lambda client: client.request(method, f"/api/schedules/{schedule_id}{suffix}"))
        typer.echo(f"Schedule {schedule_id} {done}.")

    command.__doc__ = verb
    return command


pause = _action("Pause: nothing runs and nothing counts as missed until resumed.", "POST", "/pause", "paused")
resume = _action("Resume from now (due times that passed while paused are not run).", "POST", "/resume", "resumed")
remove = _action("Delete the schedule (a run already going finishes).", "DELETE", "", "deleted")
run_now = _action("Run it now, once (also while paused).", "POST", "/run", "fired")


def _print_runs(data: dict[str, Any]) -> None:
    rows = [["DUE", "OUTCOME", "REASON", "LATE MS", "TOOK MS", "RUN", "DETAIL"]]
    for r in data.get("runs", []):
        rows.append(
            [
                r["due_key"][:40],
                r["outcome"],
                r.get("reason") or "-",
                f"{r['lateness_ms']:.0f}" if r.get("lateness_ms") is not None else "-",
                f"{r['duration_ms']:.0f}" if r.get("duration_ms") is not None else "-",
                r.get("run_id") or "-",
                clip(r.get("error_code") or r.get("detail") or "", 50),
            ]
        )
    typer.echo(table(rows) if len(rows) > 1 else "No runs yet.")


def runs(
    schedule_id: Annotated[str, typer.Argument(help="The schedule.")],
    limit: Annotated[int, typer.Option("--limit", help="How many, newest first.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="Print the raw schedule and runs as JSON.")] = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """A schedule's runs, newest first: due key, outcome (running, completed, failed, missed, skipped, queued),
    lateness and duration in ms, the run's id."""
    data = with_client(
        url, token, lambda client: client.request("GET", f"/api/schedules/{schedule_id}", params={"runs": limit})
    )
    show(data, as_json, _print_runs)


SCHEDULE_COMMANDS = (
    ("add", add),
    ("list", list_schedules),
    ("pause", pause),
    ("resume", resume),
    ("rm", remove),
    ("run", run_now),
    ("runs", runs),
)
