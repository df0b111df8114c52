"""Agent commands: ``do`` (start an agent run and follow it live: the model's text, each tool call with its
arguments, each result cut for the terminal, each approval it asks for with the commands that answer it),
``runs`` (list), ``run`` (one run: its steps, approvals and answer; ``--follow`` it live), and ``approvals``
(list what waits for a decision; ``approve`` / ``reject`` one). ``hermes cancel RUN_ID`` stops a run
(:func:`hermes_cli.threads.cancel`).

A followed run exits 0 when it completes, 1 when it fails or is cancelled (or waiting for it timed out; it goes
on), 130 on Ctrl-C (it goes on too).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, TextIO

import typer

from hermes_cli.client import GatewayClient, GatewayError, GatewayUnreachable
from hermes_cli.common import (
    TimeoutOption,
    TokenOption,
    UrlOption,
    clip,
    fail,
    gateway,
    gateway_failure,
    show,
    table,
    when,
    with_client,
)
from hermes_sdk import AgentRun, steps
from hermes_sdk.steps import Step

APPROVALS_HELP = "Tool calls of agent runs waiting for your decision: list them, approve or reject one."
RESULT_LINES = 12
"""A tool's output shows at most this many lines while following (``hermes run ID --json`` has all of it)."""
LINE_WIDTH = 160
ARGUMENTS_WIDTH = 200
EXIT_INTERRUPTED = 130


def arguments_text(arguments: dict[str, Any], width: int = ARGUMENTS_WIDTH) -> str:
    """A call's arguments as one line of JSON, cut to ``width`` characters."""
    return clip(json.dumps(arguments, ensure_ascii=False, separators=(", ", ": ")), width)


def output_lines(output: str, limit: int = RESULT_LINES, width: int = LINE_WIDTH) -> list[str]:
    """A tool's output for the terminal: its first ``limit`` lines, each cut to ``width`` characters, and a line
    saying how many more there were."""
    lines = output.rstrip("\n").splitlines()
    shown = [line if len(line) <= width else line[: width - 1] + "…" for line in lines[:limit]]
    if len(lines) > limit:
        shown.append(f"… {len(lines) - limit} more line{'s' if len(lines) - limit != 1 else ''}")
    return shown


def _utc(stamp: datetime | None) -> str:
    return stamp.strftime("%Y-%m-%d %H:%M UTC") if stamp else "-"


@dataclass
class RunPrinter:
    """Turns a run's steps into terminal output (pure presentation); ``outcome`` is set when the run ends:
    ``completed``, ``failed`` or ``cancelled`` (``message`` says why)."""

    run_id: str
    out: TextIO = field(default_factory=lambda: sys.stdout)
    outcome: str | None = None
    message: str = ""

    def _write(self, *lines: str) -> None:
        self.out.write("".join(f"{line}\n" for line in lines))
        self.out.flush()

    def show(self, step: Step) -> None:
        """Print one step (the steps nobody needs to see, like a call's dispatch, print nothing)."""
        match step:
            case steps.AgentRunStarted():
                reason = f" ({step.profile_reason})" if step.profile_reason else ""
                self._write(f"Profile: {step.profile}{reason} · project {step.project}")
                self._write(f"Tools:   {', '.join(step.tools) if step.tools else 'none'}")
            case steps.ModelTurnCompleted():
                if step.text.strip() and step.tool_calls:  # without tool calls the text is the answer, shown below
                    self._write(f"\n[turn {step.iteration}] {step.text.strip()}")
                elif step.tool_calls:
                    self._write(f"\n[turn {step.iteration}]")
            case steps.ToolCallRequested():
                ask = "  [needs approval]" if step.decision == "ask" else ""
                self._write(f"  → {step.name} {arguments_text(step.arguments)}{ask}")
            case steps.ApprovalRequested():
                reason = f": {step.reason}" if step.reason else ""
                self._write(
                    f"  ? approval {step.approval_id} for {step.name}{reason} (expires {_utc(step.expires_at)})",
                    f"      approve: hermes approvals approve {step.approval_id}   (--run: also the same call later)",
                    f'      reject:  hermes approvals reject {step.approval_id} -m "why"',
                )
            case steps.ApprovalGranted():
                comment = f": {step.comment}" if step.comment else ""
                self._write(f"  ✓ approved by {step.by} ({step.scope}){comment}")
            case steps.ApprovalDenied():
                comment = f": {step.comment}" if step.comment else ""
                self._write(f"  ✗ rejected by {step.by}{comment}")
            case steps.ApprovalExpired():
                self._write(f"  ✗ approval {step.approval_id} expired: the call was not run")
            case steps.ToolCallCompleted():
                self._completed(step)
            case steps.ToolCallFailed():
                if step.error_code not in ("approval_denied", "approval_expired"):  # said by the approval's line
                    self._write(f"  ✗ {step.name} failed [{step.error_code}]: {step.message}")
            case steps.AgentRunCompleted():
                self.outcome = "completed"
                self._write(f"\nAnswer:\n{step.answer.strip()}")
                self._write(f"\n({step.iterations} turns, {step.tool_calls} tool calls)")
            case steps.AgentRunFailed():
                self.outcome, self.message = "failed", f"{step.message} [{step.reason}]"
            case steps.AgentRunCancelled():
                self.outcome, self.message = "cancelled", f"cancelled by {step.by or 'someone'}"
            case steps.ThreadFailed():
                if self.outcome is None:
                    self.outcome, self.message = "failed", f"{step.message} [{step.error_code}]"
            case steps.ThreadCompleted():
                if self.outcome is None:
                    self.outcome = "completed"

    def _completed(self, step: steps.ToolCallCompleted) -> None:
        facts = [f"exit {step.exit_code}"] if step.exit_code is not None else []
        facts.append(f"{step.duration_ms:.0f} ms")
        error = " reported an error" if step.is_error else ""
        self._write(f"  ← {step.name}{error} ({', '.join(facts)})")
        self._write(*(f"    {line}" for line in output_lines(step.output)))
        if step.truncated:
            where = f"; all of it in {step.full_output_path}" if step.full_output_path else ""
            self._write(f"    (output cut by the tool service{where})")

    def follow(self, run_steps: Iterable[Step]) -> None:
        for step in run_steps:
            self.show(step)
            if step.ends_run and self.outcome is not None:
                return


def _follow(client: GatewayClient, run_id: str, timeout_s: float) -> RunPrinter:
    """Print the run's steps until it ends; exits 1 on a timeout (the run goes on), 130 on Ctrl-C."""
    printer = RunPrinter(run_id)
    try:
        printer.follow(client.steps(run_id, timeout_s=timeout_s))
    except TimeoutError:
        raise fail(
            f"stopped waiting after {timeout_s:g} s; the run goes on.",
            f"Follow it with `hermes run {run_id} --follow`, stop it with `hermes cancel {run_id}`.",
        ) from None
    except KeyboardInterrupt:
        typer.echo(
            f"\nStopped following; run {run_id} goes on. Follow it with `hermes run {run_id} --follow`, "
            f"stop it with `hermes cancel {run_id}`.",
            err=True,
        )
        raise typer.Exit(EXIT_INTERRUPTED) from None
    return printer


def _ended(printer: RunPrinter, run_id: str) -> None:
    """Exit as the run ended: 0 completed, 1 failed or cancelled."""
    if printer.outcome == "failed":
        raise fail(f"run {run_id} failed: {printer.message}")
    if printer.outcome == "cancelled":
        raise fail(f"run {run_id} was {printer.message}")


def do(
    task: Annotated[str, typer.Argument(help="What the agent should do, in words.")],
    profile: Annotated[
        str | None,
        typer.Option("--profile", help="code, research, fileops or one of $HERMES_HOME/agents (default: picked)."),
    ] = None,
    project: Annotated[
        str, typer.Option("--project", help="The workspace: $HERMES_HOME/workspace/<project>.")
    ] = "default",
    no_follow: Annotated[bool, typer.Option("--no-follow", help="Print the run id and return at once.")] = False,
    url: UrlOption = None,
    token: TokenOption = None,
    timeout: TimeoutOption = 3600.0,
) -> None:
    """Start an agent run and follow it live: the model's text, each tool call, each result, each approval it
    asks for (answer it with `hermes approvals approve|reject ID`) and the answer. Exits 0 when the run
    completes, 1 when it fails or is cancelled."""
    with gateway(url, token) as client:
        try:
            started = client.run_agent(task, profile, project)
            typer.echo(f"Agent run {started.run_id}")
            if no_follow:
                typer.echo(f"Follow it with: hermes run {started.run_id} --follow")
                return
            printer = _follow(client, started.run_id, timeout)
        except (GatewayError, GatewayUnreachable) as exc:
            raise gateway_failure(exc) from None
    _ended(printer, started.run_id)


def _print_runs(runs: list[dict[str, Any]]) -> None:
    if not runs:
        typer.echo("No agent runs.")
        return
    rows = [["ID", "STATUS", "PROFILE", "TURNS", "TOOL CALLS", "CREATED (UTC)", "TASK"]]
    rows += [
        [
            r["run_id"],
            r["status"],
            r.get("profile") or "-",
            str(r.get("iterations", 0)),
            str(r.get("tool_calls", 0)),
            when(r.get("created_at")),
            clip(r.get("task", ""), 50),
        ]
        for r in runs
    ]
    typer.echo(table(rows))


def runs(
    limit: Annotated[int, typer.Option("--limit", min=1, max=500, help="At most this many.")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print the raw runs as JSON.")] = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """List agent runs, newest first: id, status, profile, turns, tool calls, created, task."""
    listing = with_client(url, token, lambda client: [r.raw for r in client.agent_runs(limit)])
    show(listing, as_json, _print_runs)


def _print_run(run: AgentRun) -> None:
    ended = f" ({run.reason.replace('_', ' ')})" if run.reason and run.reason != "answered" else ""
    typer.echo(f"Run {run.run_id}: {run.status.replace('_', ' ')}{ended}")
    typer.echo(f"Task:    {run.task}")
    typer.echo(f"Since:   {_utc(run.created_at)}  (updated {_utc(run.updated_at)})")
    typer.echo(
        f"Usage:   {run.iterations} turns, {run.tool_calls} tool calls, {run.tokens} tokens, {run.cost_cents:.4f}¢"
    )
    printer = RunPrinter(run.run_id)
    for step in run.steps:
        printer.show(step)
    if run.status == "completed" and printer.outcome != "completed" and run.answer:
        typer.echo(f"\nAnswer:\n{run.answer.strip()}")
    if run.status in ("failed", "cancelled") and run.message:
        typer.echo(f"\n{run.status.capitalize()}: {run.message}")
    pending = [a for a in run.approvals if a.pending]
    if pending:
        typer.echo("\nWaiting for approval:")
        for a in pending:
            typer.echo(
                f"  {a.approval_id}  {a.tool} {arguments_text(a.arguments, 100)}  (expires {_utc(a.expires_at)})"
            )


def run(
    run_id: Annotated[str, typer.Argument(help="The agent run (see `hermes runs`).")],
    follow_live: Annotated[
        bool, typer.Option("--follow", "-f", help="Follow it live until it ends (exit 1 if it fails).")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the raw run, with its steps, as JSON.")] = False,
    url: UrlOption = None,
    token: TokenOption = None,
    timeout: TimeoutOption = 3600.0,
) -> None:
    """Show an agent run: status, usage, its steps (model text, tool calls and results, approvals) and answer;
    --follow prints its steps from the start and then live until it ends."""
    if not follow_live:
        found = with_client(url, token, lambda client: client.agent_run(run_id))
        show(found.raw, as_json, lambda _: _print_run(found))
        return
    with gateway(url, token) as client:
        try:
            found = client.agent_run(run_id)
            typer.echo(f"Agent run {run_id}: {found.task}")
            printer = _follow(client, run_id, timeout)
        except (GatewayError, GatewayUnreachable) as exc:
            raise gateway_failure(exc) from None
    _ended(printer, run_id)


class ApprovalStatus(StrEnum):
    pending = "pending"
    granted = "granted"
    denied = "denied"
    expired = "expired"
    all = "all"


def _print_approvals(listing: list[dict[str, Any]]) -> None:
    if not listing:
        typer.echo("No approvals.")
        return
    rows = [["ID", "STATUS", "RUN", "TOOL", "ARGUMENTS", "EXPIRES (UTC)", "REASON"]]
    rows += [
        [
            a["approval_id"],
            a["status"],
            a["run_id"],
            a["tool"],
            arguments_text(a.get("arguments") or {}, 50),
            when(a.get("expires_at")),
            clip(a.get("reason") or "", 40),
        ]
        for a in listing
    ]
    typer.echo(table(rows))
    if any(a["status"] == "pending" for a in listing):
        typer.echo(
            '\nAnswer with: hermes approvals approve ID [--run] [-m "..."]  or  hermes approvals reject ID -m "..."'
        )


def approvals(
    ctx: typer.Context,
    status: Annotated[ApprovalStatus, typer.Option("--status", help="Which ones (all: every status).")] = (
        ApprovalStatus.pending
    ),
    run_id: Annotated[str | None, typer.Option("--run-id", help="Only this run's.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the raw approvals as JSON.")] = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """List the approvals waiting for you (or --status ...), newest first: id, run, tool, arguments, expiry."""
    if ctx.invoked_subcommand is not None:
        return
    wanted = None if status is ApprovalStatus.all else status.value
    listing = with_client(url, token, lambda client: [a.raw for a in client.approvals(wanted, run_id)])
    show(listing, as_json, _print_approvals)


def approve(
    approval_id: Annotated[str, typer.Argument(help="The approval (see `hermes approvals`).")],
    for_run: Annotated[
        bool, typer.Option("--run", help="Also approve the same call (tool and arguments) later in this run.")
    ] = False,
    comment: Annotated[str, typer.Option("--comment", "-m", help="Why, in a few words (the model is told).")] = "",
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Approve a tool call an agent run waits for: it runs, and the run goes on."""
    scope = "run" if for_run else "once"
    with_client(url, token, lambda client: client.approve(approval_id, scope, comment))
    typer.echo(f"Approved {approval_id} ({'for this run' if for_run else 'once'}).")


def reject(
    approval_id: Annotated[str, typer.Argument(help="The approval (see `hermes approvals`).")],
    comment: Annotated[str, typer.Option("--comment", "-m", help="Why (the model is told).")] = "",
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Reject a tool call an agent run waits for: it does not run, and the model is told (with the comment)."""
    with_client(url, token, lambda client: client.reject(approval_id, comment))
    typer.echo(f"Rejected {approval_id}.")


APPROVAL_COMMANDS = (("approve", approve), ("reject", reject))
