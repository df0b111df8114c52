"""Thread commands: ``submit`` (streams draft 1 live, then prints the questions), ``answer`` (streams draft 2),
``status``, ``list``, ``rate``, ``cancel`` (a thread's jobs, or an agent run), ``workflow``. What may be done to a
thread comes from the view's flags (``answerable``, each job's ``cancellable``), set by the gateway's
``hermes_proto.threads``: no status is spelled here."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from hermes_cli.client import GatewayClient, GatewayError, GatewayUnreachable
from hermes_cli.common import (
    EXIT_USAGE,
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
from hermes_cli.follow import ThreadFollower, follow, print_questions


def submit(
    idea: Annotated[str, typer.Argument(help="Your idea, in a few words or many.")],
    max_questions: Annotated[
        int | None, typer.Option("--max-questions", min=0, max=10, help="Ask at most this many questions.")
    ] = None,
    project: Annotated[
        str | None, typer.Option("--project", help="Budget scope (letters, digits, - or _; default: default).")
    ] = None,
    private: Annotated[bool, typer.Option("--private", help="Keep every model call on local backends.")] = False,
    priority: Annotated[
        int | None, typer.Option("--priority", min=1, max=10, help="1 (lowest) to 10; default 5.")
    ] = None,
    no_wait: Annotated[bool, typer.Option("--no-wait", help="Print the thread id and return at once.")] = False,
    url: UrlOption = None,
    token: TokenOption = None,
    timeout: TimeoutOption = 600.0,
) -> None:
    """Submit an idea, stream draft 1 as it is written, then print the clarifying questions."""
    with gateway(url, token) as client:
        try:
            thread_id = client.submit(
                idea, max_questions, project=project, private=private or None, priority=priority
            ).thread_id
            typer.echo(f"Thread {thread_id}")
            if no_wait:
                typer.echo(f"Follow it with: hermes status {thread_id}")
                return
            with client.watch(thread_id) as events:
                follower = ThreadFollower(draft=1)
                follow(events, thread_id, follower, timeout, until_questions=True)
        except (GatewayError, GatewayUnreachable) as exc:
            raise gateway_failure(exc) from None
    if follower.completed:
        typer.echo(f"\nThread completed ({follower.completed.replace('_', ' ')}).")
    elif follower.questions:
        print_questions(thread_id, follower.questions)


def parse_pairs(items: list[str]) -> list[tuple[str, str]]:
    """``ID=TEXT`` items as ``(question id, text)`` pairs (the id stripped, the text as given); exits 2 on an item
    without ``=`` or an id."""
    pairs = []
    for item in items:
        question_id, sep, text = item.partition("=")
        if not sep or not question_id:
            raise fail(f"--question wants ID=TEXT, got {item!r}.", code=EXIT_USAGE)
        pairs.append((question_id.strip(), text))
    return pairs


def answer(
    thread_id: Annotated[str, typer.Argument(help="The thread to answer.")],
    answers: Annotated[list[str] | None, typer.Argument(help='Answers in question order ("" skips one).')] = None,
    question: Annotated[
        list[str] | None, typer.Option("--question", "-q", help="Answer by id: ID=TEXT (repeatable).")
    ] = None,
    url: UrlOption = None,
    token: TokenOption = None,
    timeout: TimeoutOption = 600.0,
) -> None:
    """Answer the thread's questions, then stream draft 2 until the thread completes."""
    positional, by_id = answers or [], parse_pairs(question or [])
    with gateway(url, token) as client:
        try:
            pairs: list[tuple[str, str]] = []
            if positional:
                questions = client.status(thread_id).questions
                if len(positional) > len(questions):
                    raise fail(
                        f"{len(positional)} answers for {len(questions)} questions.",
                        f"See them with `hermes status {thread_id}`.",
                        EXIT_USAGE,
                    )
                pairs = [(q.question_id, text) for q, text in zip(questions, positional, strict=False)]
            answered = {qid for qid, _ in by_id}
            pairs = [(qid, text) for qid, text in pairs if qid not in answered and text.strip()] + by_id
            if not any(text.strip() for _, text in pairs):
                raise fail("nothing to answer: every answer is empty.", code=EXIT_USAGE)
            with client.watch(thread_id) as events:  # subscribed before the answers go out: no token is missed
                client.answer(thread_id, pairs)
                typer.echo(f"Answers sent for thread {thread_id}.")
                follower = ThreadFollower(draft=2)
                follow(events, thread_id, follower, timeout, until_questions=False)
        except (GatewayError, GatewayUnreachable) as exc:
            raise gateway_failure(exc) from None
    typer.echo(f"\nThread completed ({(follower.completed or '').replace('_', ' ')}).")


def _print_status(view: dict[str, Any]) -> None:
    reason = f" ({view['completion_reason'].replace('_', ' ')})" if view.get("completion_reason") else ""
    typer.echo(f"Thread {view['thread_id']}: {view['status'].replace('_', ' ')}{reason}")
    if view["status"] == "accepted":  # the gateway answers for it: the orchestrator has not opened it yet
        typer.echo("        submitted and waiting for the orchestrator to open it")
    typer.echo(f"Idea:   {view['idea']}")
    if view.get("idea_type"):
        clarity = f", clarity {view['clarity']:.2f}" if view.get("clarity") is not None else ""
        typer.echo(f"Type:   {view['idea_type']}{clarity}")
    typer.echo(f"Since:  {view['created_at']}  (updated {view['updated_at']})")
    if view.get("rating"):
        comment = f" — {view['rating_comment']}" if view.get("rating_comment") else ""
        typer.echo(f"Rated:  {view['rating']}/5{comment}")
    if view.get("answer_deadline") and view.get("answerable"):
        typer.echo(f"Answer by: {view['answer_deadline']}")
    if view.get("jobs"):
        typer.echo("\nJobs:")
        for job in view["jobs"]:
            where = f"{job['backend']} · {job['model']}" if job.get("backend") else "-"
            tokens = job.get("prompt_tokens", 0) + job.get("completion_tokens", 0)
            took = f"{job['latency_ms'] / 1000:.1f} s" if job.get("latency_ms") is not None else "-"
            error = f"  {job['error_code']}: {job['error_message']}" if job.get("error_code") else ""
            typer.echo(f"  {job['kind']:<7} {job['status']:<10} {where:<28} {tokens:>6} tokens {took:>8}{error}")
    if view.get("questions"):
        typer.echo("\nQuestions:")
        for number, q in enumerate(view["questions"], 1):
            answered = f"\n     → {q['answer']}" if q.get("answer") else ""
            typer.echo(f"  {number}. [{q['category']}] {q['text']}  (id: {q['question_id']}){answered}")
    for number in (1, 2):
        if view.get(f"draft{number}"):
            typer.echo(f"\nDraft {number}:\n{view[f'draft{number}']}")
    results = {j["job_id"]: j.get("text") for j in view.get("jobs", [])}
    for step in view.get("steps", []):
        after = f" (after {', '.join(step['depends_on'])})" if step["depends_on"] else ""
        why = f": {step['reason']}" if step.get("reason") else ""
        typer.echo(f"\nStep {step['step_id']}{after} [{step['status']}{why}]")
        if results.get(step["job_id"]):
            typer.echo(results[step["job_id"]])


def status(
    thread_id: Annotated[str, typer.Argument(help="The thread to show.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the raw thread view as JSON.")] = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Show a thread: status, jobs (backend, model, tokens, time), questions and drafts."""
    with gateway(url, token) as client:
        try:
            view = client.status(thread_id).raw
        except (GatewayError, GatewayUnreachable) as exc:
            raise gateway_failure(exc) from None
    show(view, as_json, _print_status)


LIST_PAGE_MAX = 200  # the gateway's largest /api/threads page


def _print_threads(threads: list[dict[str, Any]]) -> None:
    if not threads:
        typer.echo("No threads.")
        return
    rows = [["ID", "STATUS", "CREATED (UTC)", "IDEA"]]
    rows += [[t["thread_id"], t["status"], when(t["created_at"]), clip(t["idea"], 60)] for t in threads]
    typer.echo(table(rows))


def list_threads(
    status_filter: Annotated[
        str | None,
        typer.Option(
            "--status",
            help="Only threads in this status (the gateway knows the statuses and names them when this is not one).",
        ),
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=LIST_PAGE_MAX, help="At most this many.")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print the raw threads as JSON.")] = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """List the most recent threads, newest first: id, status, created, idea. --status keeps those of the newest
    200 in that status (filtered by the gateway; an unknown status exits 1 with its error, which lists the
    statuses)."""
    threads = with_client(url, token, lambda client: [t.raw for t in client.threads(limit, status_filter)])
    show(threads, as_json, _print_threads)


def rate(
    thread_id: Annotated[str, typer.Argument(help="The completed thread to rate.")],
    rating: Annotated[int, typer.Argument(min=1, max=5, help="1 (useless) to 5 (just right).")],
    comment: Annotated[str, typer.Option("--comment", "-m", help="Why, in a few words.")] = "",
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Rate a completed thread's final draft; Hermes learns which questions lead to good results."""
    with gateway(url, token) as client:
        try:
            client.rate(thread_id, rating, comment)
        except (GatewayError, GatewayUnreachable) as exc:
            raise gateway_failure(exc) from None
    typer.echo(f"Rated thread {thread_id}: {rating}/5.")


def cancel(
    thread_id: Annotated[str, typer.Argument(help="The thread of the job, or the agent run to stop.")],
    job_id: Annotated[str | None, typer.Argument(help="The job to stop (default: the thread's open jobs).")] = None,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Stop a job: a queued one never runs, a running model call is stopped at its edge. Given an agent run's id
    (and no job), stop the run and its running tool call (it ends cancelled)."""

    def run(client: GatewayClient) -> list[str] | None:
        if job_id is None:
            try:
                client.cancel_run(thread_id)
                return None
            except GatewayError as exc:
                if exc.status != 404:  # 409 run_ended: it is a run, and it is over
                    raise
        return client.cancel(thread_id, job_id)

    cancelled = with_client(url, token, run)
    if cancelled is None:
        typer.echo(f"Cancelling agent run {thread_id}.")
        return
    if not cancelled:
        raise fail(f"Thread {thread_id} has no open job to cancel.")
    typer.echo("\n".join(f"Cancelling job {job} of thread {thread_id}." for job in cancelled))


def workflow(
    spec: Annotated[
        Path,
        typer.Argument(
            help='A JSON file: {"steps": [{"step_id", "prompt", "depends_on": '
            '[...]}], "title"}; - reads standard input.',
            allow_dash=True,
        ),
    ],
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Submit a workflow: each step runs once the steps it depends on completed, with their results."""
    try:
        text = sys.stdin.read() if str(spec) == "-" else spec.read_text(encoding="utf-8")
        body = json.loads(text)
    except (OSError, ValueError) as exc:
        raise fail(f"{spec} is not readable JSON: {exc}", code=EXIT_USAGE) from None
    if not isinstance(body, dict):
        raise fail('A workflow is a JSON object with a "steps" list.', code=EXIT_USAGE)
    reply = with_client(url, token, lambda client: client.workflow(body))
    typer.echo(
        f"Workflow thread {reply['thread_id']}: steps {', '.join(reply['steps'])}.\n"
        f"Follow it with: hermes status {reply['thread_id']}"
    )
