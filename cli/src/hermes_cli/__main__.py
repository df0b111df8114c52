"""The ``hermes`` command line: ``up`` runs Hermes locally; every other command talks to the gateway over HTTP.

Threads: ``submit`` (streams draft 1 live, then prints the questions), ``answer`` (streams draft 2), ``status``,
``list``, ``rate``, ``cancel``, ``workflow``. Sessions and memory: ``sessions``, ``session``, ``search``,
``soul``, ``export sft|dpo`` (training data as JSONL). Operations: ``backends`` (``enable``, ``disable``,
``compare``), ``dead-letters`` (``replay``).

The gateway and its token come from :mod:`hermes_cli.config`: ``--url`` / ``--token``, else ``$HERMES_URL`` /
``$HERMES_TOKEN``, else ``url`` / ``token`` in ``$HERMES_HOME/cli.toml`` (``~/.hermes/cli.toml``), else
``http://127.0.0.1:${HERMES_WEB_PORT:-5000}`` without a token. The token is sent as ``Authorization: Bearer``
and never printed.

Exit codes: 0 done; 1 the gateway answered an error (401: no or a wrong token), the thread failed, or waiting
timed out; 2 bad usage (including an unreadable ``cli.toml``); 3 the gateway could not be reached.
"""

from __future__ import annotations

import importlib
import json
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, BinaryIO, TextIO

import typer

from hermes_cli.client import GatewayClient, GatewayError, GatewayUnreachable, SseEvent
from hermes_cli.config import ConfigError, default_url, load_settings

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3

app = typer.Typer(name="hermes", no_args_is_help=True, add_completion=False, pretty_exceptions_show_locals=False,
                  help="Hermes: from a vague idea to a clear draft. Submit ideas, answer questions, watch threads; "
                       "browse sessions, search memory, export training data. The gateway and token come from "
                       "--url/--token, HERMES_URL/HERMES_TOKEN, or url/token in $HERMES_HOME/cli.toml.")

URL_HELP = ("Gateway base URL (else $HERMES_URL, else url in $HERMES_HOME/cli.toml, else "
            "http://127.0.0.1:$HERMES_WEB_PORT, port 5000 by default).")
TOKEN_HELP = ("API token, sent as Authorization: Bearer (else $HERMES_TOKEN, else token in $HERMES_HOME/cli.toml; "
              "prefer those: options show up in the process list).")
TOKEN_HINT = "Set HERMES_TOKEN or token in $HERMES_HOME/cli.toml (or pass --token) to a token the gateway accepts."
UrlOption = Annotated[str | None, typer.Option("--url", help=URL_HELP)]
TokenOption = Annotated[str | None, typer.Option("--token", help=TOKEN_HELP, show_default=False)]
TimeoutOption = Annotated[float, typer.Option("--timeout", min=1, help="Give up waiting after this many seconds.")]


def _fail(message: str, hint: str | None = None, code: int = EXIT_ERROR) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    if hint:
        typer.echo(f"  {hint}", err=True)
    return typer.Exit(code)


def _client(url: str | None, token: str | None) -> GatewayClient:
    """A client of the configured gateway (see :mod:`hermes_cli.config`); exits 2 on a broken config."""
    try:
        settings = load_settings(url, token)
    except ConfigError as exc:
        raise _fail(str(exc), code=EXIT_USAGE) from None
    return GatewayClient(settings.url or default_url(), token=settings.bearer())


def _gateway_failure(exc: GatewayError | GatewayUnreachable) -> typer.Exit:
    if isinstance(exc, GatewayUnreachable):
        return _fail(f"cannot reach the Hermes gateway at {exc.url} ({type(exc.error).__name__}).",
                     "Is Hermes running? Start it with `hermes up`, or point --url / HERMES_URL at it.",
                     EXIT_UNREACHABLE)
    if exc.status == 401:
        return _fail(f"{exc.message} [{exc.code}, HTTP 401]", TOKEN_HINT)
    return _fail(f"{exc.message} [{exc.code}, HTTP {exc.status}]", exc.user_action)


class WaitTimeout(Exception):
    pass


@dataclass
class ThreadFollower:
    """Turns one thread's Server-Sent Events into terminal output: the tokens of draft ``draft`` as they
    stream (the final text replaces them if any was missed), then what happened. Pure presentation."""

    draft: int
    out: TextIO = sys.stdout
    kinds: dict[str, str] = field(default_factory=dict)
    printed: dict[str, str] = field(default_factory=dict)
    next_seq: dict[str, int] = field(default_factory=dict)
    gaps: set[str] = field(default_factory=set)
    pending: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    stats: dict[str, dict[str, Any]] = field(default_factory=dict)
    questions: list[dict[str, Any]] | None = None
    draft_done: bool = False
    headed: bool = False
    completed: str | None = None
    failed: str | None = None

    @property
    def kind(self) -> str:
        return f"draft{self.draft}"

    def _write(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()

    def _heading(self) -> None:
        if not self.headed:
            self.headed = True
            self._write(f"\nDraft {self.draft}:\n")

    def _token(self, token: dict[str, Any]) -> None:
        job_id = token["job_id"]
        if job_id in self.gaps or token["seq"] != self.next_seq.get(job_id, 0):
            self.gaps.add(job_id)  # a token was missed: wait for the final text instead
            return
        self._heading()
        self.next_seq[job_id] = token["seq"] + 1
        self.printed[job_id] = self.printed.get(job_id, "") + token["text"]
        self._write(token["text"])

    def _draft_presented(self, event: dict[str, Any]) -> None:
        self._heading()
        shown, final = self.printed.get(event["job_id"], ""), event["text"]
        self._write(final[len(shown):] if final.startswith(shown) else f"\n[final text]\n{final}")
        stats = {"backend": event["backend"], "model": event["model"], **self.stats.get(event["job_id"], {})}
        parts = [f"{stats['backend']} · {stats['model']}"]
        if stats.get("tokens"):
            parts.append(f"{stats['tokens']} tokens")
        if stats.get("latency_ms"):
            parts.append(f"{stats['latency_ms'] / 1000:.1f} s")
        self._write(f"\n  ({', '.join(parts)})\n")
        self.draft_done = True

    def handle(self, sse: SseEvent) -> None:
        """Apply one event; sets ``questions``, ``completed`` or ``failed`` when the thread gets there."""
        if sse.event == "comment":
            return
        data = sse.json()
        job_id = data.get("job_id") if isinstance(data, dict) else None
        if sse.event == "job_queued":
            self.kinds[job_id] = data["kind"]
            for token in self.pending.pop(job_id, []) if data["kind"] == self.kind else []:
                self._token(token)
        elif sse.event == "token":
            if job_id not in self.kinds:
                self.pending.setdefault(job_id, []).append(data)
            elif self.kinds[job_id] == self.kind:
                self._token(data)
        elif sse.event == "execution_completed":
            self.stats[job_id] = {"tokens": data["prompt_tokens"] + data["completion_tokens"],
                                  "latency_ms": data["latency_ms"]}
        elif sse.event == "execution_failed" and data.get("retryable"):
            # A final failure is reported once, by the job_failed that follows it.
            typer.echo(f"warning: backend {data['backend']} failed: {data['message']} (will retry)", err=True)
        elif sse.event == "draft_presented" and data["draft_number"] == self.draft:
            self._draft_presented(data)
        elif sse.event == "questions_proposed":
            self.questions = data["questions"]
        elif sse.event == "job_failed":
            typer.echo(f"warning: job {job_id} failed: {data['message']}", err=True)
        elif sse.event == "thread_completed":
            self.completed = data["reason"]
        elif sse.event == "thread_failed":
            self.failed = f"{data['message']} [{data['error_code']}]"

    def follow(self, events: Iterator[SseEvent], timeout_s: float, until_questions: bool) -> None:
        """Consume ``events`` until the thread ends (or, with ``until_questions``, until draft 1 and a
        non-empty set of questions are in). Raises :class:`WaitTimeout` after ``timeout_s`` seconds."""
        deadline = time.monotonic() + timeout_s
        for sse in events:
            self.handle(sse)
            if self.completed or self.failed:
                return
            if until_questions and self.draft_done and self.questions:
                return
            if time.monotonic() > deadline:
                raise WaitTimeout()
        if not (self.completed or self.failed):
            raise WaitTimeout()


def _print_questions(thread_id: str, questions: list[dict[str, Any]]) -> None:
    typer.echo("\nQuestions (answer any of them; \"\" skips one):")
    for number, question in enumerate(questions, 1):
        typer.echo(f"  {number}. [{question['category']}] {question['text']}  (id: {question['question_id']})")
        if question.get("suggestions"):
            typer.echo(f"     suggestions: {' | '.join(question['suggestions'])}")
    placeholders = " ".join(f'"answer {n}"' for n in range(1, len(questions) + 1))
    typer.echo(f"\nAnswer with:\n  hermes answer {thread_id} {placeholders}")


def _follow(events: Iterator[SseEvent], thread_id: str, follower: ThreadFollower, timeout_s: float,
            until_questions: bool) -> None:
    try:
        follower.follow(events, timeout_s, until_questions)
    except WaitTimeout:
        raise _fail(f"stopped waiting after {timeout_s:g} s; the thread goes on.",
                    f"Check it with `hermes status {thread_id}`.") from None
    if follower.failed:
        raise _fail(f"thread {thread_id} failed: {follower.failed}")


@app.command()
def submit(
    idea: Annotated[str, typer.Argument(help="Your idea, in a few words or many.")],
    max_questions: Annotated[int | None, typer.Option("--max-questions", min=0, max=10,
                                                      help="Ask at most this many questions.")] = None,
    project: Annotated[str | None, typer.Option("--project", help="Budget scope (letters, digits, - or _; "
                                                "default: default).")] = None,
    private: Annotated[bool, typer.Option("--private", help="Keep every model call on local backends.")] = False,
    priority: Annotated[int | None, typer.Option("--priority", min=1, max=10,
                                                 help="1 (lowest) to 10; default 5.")] = None,
    no_wait: Annotated[bool, typer.Option("--no-wait", help="Print the thread id and return at once.")] = False,
    url: UrlOption = None,
    token: TokenOption = None,
    timeout: TimeoutOption = 600.0,
) -> None:
    """Submit an idea, stream draft 1 as it is written, then print the clarifying questions."""
    with _client(url, token) as client:
        try:
            thread_id = client.submit(idea, max_questions, project=project, private=private or None,
                                      priority=priority)["thread_id"]
            typer.echo(f"Thread {thread_id}")
            if no_wait:
                typer.echo(f"Follow it with: hermes status {thread_id}")
                return
            with client.watch(thread_id) as events:
                follower = ThreadFollower(draft=1)
                _follow(events, thread_id, follower, timeout, until_questions=True)
        except (GatewayError, GatewayUnreachable) as exc:
            raise _gateway_failure(exc) from None
    if follower.completed:
        typer.echo(f"\nThread completed ({follower.completed.replace('_', ' ')}).")
    elif follower.questions:
        _print_questions(thread_id, follower.questions)


def _parse_pairs(items: list[str]) -> list[tuple[str, str]]:
    pairs = []
    for item in items:
        question_id, sep, text = item.partition("=")
        if not sep or not question_id:
            raise _fail(f"--question wants ID=TEXT, got {item!r}.", code=EXIT_USAGE)
        pairs.append((question_id.strip(), text))
    return pairs


@app.command()
def answer(
    thread_id: Annotated[str, typer.Argument(help="The thread to answer.")],
    answers: Annotated[list[str] | None, typer.Argument(help="Answers in question order (\"\" skips one).")] = None,
    question: Annotated[list[str] | None, typer.Option("--question", "-q", help="Answer by id: ID=TEXT "
                                                       "(repeatable).")] = None,
    url: UrlOption = None,
    token: TokenOption = None,
    timeout: TimeoutOption = 600.0,
) -> None:
    """Answer the thread's questions, then stream draft 2 until the thread completes."""
    positional, by_id = answers or [], _parse_pairs(question or [])
    with _client(url, token) as client:
        try:
            pairs: list[tuple[str, str]] = []
            if positional:
                questions = client.status(thread_id)["questions"]
                if len(positional) > len(questions):
                    raise _fail(f"{len(positional)} answers for {len(questions)} questions.",
                                f"See them with `hermes status {thread_id}`.", EXIT_USAGE)
                pairs = [(q["question_id"], text) for q, text in zip(questions, positional, strict=False)]
            answered = {qid for qid, _ in by_id}
            pairs = [(qid, text) for qid, text in pairs if qid not in answered and text.strip()] + by_id
            if not any(text.strip() for _, text in pairs):
                raise _fail("nothing to answer: every answer is empty.", code=EXIT_USAGE)
            with client.watch(thread_id) as events:  # subscribed before the answers go out: no token is missed
                client.answer(thread_id, pairs)
                typer.echo(f"Answers sent for thread {thread_id}.")
                follower = ThreadFollower(draft=2)
                _follow(events, thread_id, follower, timeout, until_questions=False)
        except (GatewayError, GatewayUnreachable) as exc:
            raise _gateway_failure(exc) from None
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
    if view.get("answer_deadline") and view["status"] == "awaiting_answers":
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


@app.command()
def status(
    thread_id: Annotated[str, typer.Argument(help="The thread to show.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the raw thread view as JSON.")] = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Show a thread: status, jobs (backend, model, tokens, time), questions and drafts."""
    with _client(url, token) as client:
        try:
            view = client.status(thread_id)
        except (GatewayError, GatewayUnreachable) as exc:
            raise _gateway_failure(exc) from None
    if as_json:
        typer.echo(json.dumps(view, indent=2, ensure_ascii=False))
    else:
        _print_status(view)


THREAD_STATUSES = ("drafting", "awaiting_answers", "refining", "completed", "failed")
LIST_PAGE_MAX = 200  # the gateway's largest /api/threads page


def _when(stamp: str | None) -> str:
    """An ISO timestamp (UTC) shortened to minutes: ``2026-05-09 07:35``."""
    return stamp[:16].replace("T", " ") if stamp else "-"


def _clip(text: str, width: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[:width - 1] + "…"


def _print_threads(threads: list[dict[str, Any]]) -> None:
    if not threads:
        typer.echo("No threads.")
        return
    rows = [["ID", "STATUS", "CREATED (UTC)", "IDEA"]]
    rows += [[t["thread_id"], t["status"], _when(t["created_at"]), _clip(t["idea"], 60)] for t in threads]
    typer.echo(_table(rows))


@app.command("list")
def list_threads(
    status_filter: Annotated[str | None, typer.Option("--status", help="Only threads in this status: "
                                                      f"{', '.join(THREAD_STATUSES)}.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=LIST_PAGE_MAX, help="At most this many.")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print the raw threads as JSON.")] = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """List the most recent threads, newest first: id, status, created, idea. --status filters the newest 200
    (the gateway filters by nothing but count)."""
    if status_filter is not None and status_filter not in THREAD_STATUSES:
        raise _fail(f"--status must be one of {', '.join(THREAD_STATUSES)}; got {status_filter!r}.",
                    code=EXIT_USAGE)
    page = _with_client(url, token, lambda client: client.threads(LIST_PAGE_MAX if status_filter else limit))
    threads = [t for t in page["threads"] if status_filter in (None, t["status"])][:limit]
    if as_json:
        typer.echo(json.dumps(threads, indent=2, ensure_ascii=False))
    else:
        _print_threads(threads)


@app.command()
def rate(
    thread_id: Annotated[str, typer.Argument(help="The completed thread to rate.")],
    rating: Annotated[int, typer.Argument(min=1, max=5, help="1 (useless) to 5 (just right).")],
    comment: Annotated[str, typer.Option("--comment", "-m", help="Why, in a few words.")] = "",
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Rate a completed thread's final draft; Hermes learns which questions lead to good results."""
    with _client(url, token) as client:
        try:
            client.rate(thread_id, rating, comment)
        except (GatewayError, GatewayUnreachable) as exc:
            raise _gateway_failure(exc) from None
    typer.echo(f"Rated thread {thread_id}: {rating}/5.")


@app.command()
def cancel(
    thread_id: Annotated[str, typer.Argument(help="The thread of the job.")],
    job_id: Annotated[str | None, typer.Argument(help="The job to stop (default: the thread's open jobs).")] = None,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Stop a job: a queued one never runs, a running model call is stopped at its edge."""
    def run(client: GatewayClient) -> list[str]:
        jobs = [job_id] if job_id else [j["job_id"] for j in client.status(thread_id)["jobs"]
                                        if j["status"] in ("queued", "dispatched", "running", "retrying")]
        for job in jobs:
            client.cancel(thread_id, job)
        return jobs
    cancelled = _with_client(url, token, run)
    if not cancelled:
        raise _fail(f"Thread {thread_id} has no open job to cancel.")
    typer.echo("\n".join(f"Cancelling job {job} of thread {thread_id}." for job in cancelled))


@app.command()
def workflow(
    spec: Annotated[Path, typer.Argument(help='A JSON file: {"steps": [{"step_id", "prompt", "depends_on": '
                                         '[...]}], "title"}; - reads standard input.', allow_dash=True)],
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Submit a workflow: each step runs once the steps it depends on completed, with their results."""
    try:
        text = sys.stdin.read() if str(spec) == "-" else spec.read_text(encoding="utf-8")
        body = json.loads(text)
    except (OSError, ValueError) as exc:
        raise _fail(f"{spec} is not readable JSON: {exc}", code=EXIT_USAGE) from None
    if not isinstance(body, dict):
        raise _fail("A workflow is a JSON object with a \"steps\" list.", code=EXIT_USAGE)
    reply = _with_client(url, token, lambda client: client.workflow(body))
    typer.echo(f"Workflow thread {reply['thread_id']}: steps {', '.join(reply['steps'])}.\n"
               f"Follow it with: hermes status {reply['thread_id']}")


def _print_hits(query: str, hits: list[dict[str, Any]]) -> None:
    if not hits:
        typer.echo(f"Nothing in memory matches {query!r}.")
        return
    for hit in hits:
        typer.echo(f"session {hit['session_id']} · {hit['channel']} · {_when(hit['created_at'])} UTC "
                   f"· score {hit['score']:.2f}")
        typer.echo(f"  {' '.join(hit['snippet'].split())}\n")
    typer.echo("Open one with: hermes session SESSION_ID")


@app.command()
def search(
    query: Annotated[str, typer.Argument(help="Words to look for in earlier turns (any of them matches).")],
    limit: Annotated[int, typer.Option("--limit", min=1, max=100, help="At most this many hits.")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="Print the raw hits as JSON.")] = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Search memory: every channel's completed turns, best match first; prints session, channel, date (UTC)
    and a snippet with the matching words in […]."""
    hits = _with_client(url, token, lambda client: client.search(query, limit))["hits"]
    if as_json:
        typer.echo(json.dumps(hits, indent=2, ensure_ascii=False))
    else:
        _print_hits(query, hits)


def _print_sessions(sessions: list[dict[str, Any]]) -> None:
    if not sessions:
        typer.echo("No sessions.")
        return
    rows = [["ID", "KIND", "CHANNEL", "USER", "STATUS", "TURNS", "RATING", "UPDATED (UTC)", "TITLE"]]
    rows += [[s["session_id"], s["kind"], s["channel"], s["user_id"], s["status"], str(s["turn_count"]),
              f"{s['rating']}/5" if s.get("rating") else "-", _when(s["updated_at"]), _clip(s["title"], 40)]
             for s in sessions]
    typer.echo(_table(rows))


@app.command()
def sessions(
    channel: Annotated[str | None, typer.Option("--channel", help="Only this channel's (web, cli, api, telegram, "
                                                "perception...).")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=500, help="At most this many.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="Print the raw sessions as JSON.")] = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """List sessions (idea threads and chats of every channel), newest activity first."""
    listing = _with_client(url, token, lambda client: client.sessions(channel, limit))["sessions"]
    if as_json:
        typer.echo(json.dumps(listing, indent=2, ensure_ascii=False))
    else:
        _print_sessions(listing)


def _turn_stats(turn: dict[str, Any]) -> str:
    where = f"{turn['backend']} · {turn['model']}" if turn.get("backend") else "no backend yet"
    took = f"{turn['latency_ms']:.0f} ms" if turn.get("latency_ms") is not None else "- ms"
    return (f"{where}, {turn['prompt_tokens']} + {turn['completion_tokens']} tokens, "
            f"{turn['cost_cents']:.4f}¢, {took}")


def _print_session(view: dict[str, Any]) -> None:
    typer.echo(f"Session {view['session_id']}: {view['kind']} on {view['channel']}, {view['status']}")
    typer.echo(f"Title:  {view['title']}")
    typer.echo(f"User:   {view['user_id']}" + (f"  (key {view['session_key']})" if view.get("session_key") else ""))
    typer.echo(f"Since:  {view['created_at']}  (updated {view['updated_at']})")
    if view.get("rating"):
        typer.echo(f"Rated:  {view['rating']}/5")
    for number, turn in enumerate(view.get("turns", []), 1):
        typer.echo(f"\nTurn {number} [{turn['kind']}, {turn['status']}] job {turn['job_id']} at "
                   f"{_when(turn['queued_at'])} UTC")
        typer.echo(f"  {_turn_stats(turn)}")
        asked = next((m["content"] for m in reversed(turn["messages"]) if m["role"] == "user"), None)
        if asked:
            typer.echo(f"  > {_clip(asked, 200)}")
        if turn.get("memories"):
            typer.echo(f"  memories: {', '.join(turn['memories'])}")
        typer.echo(turn["reply"] if turn.get("reply") is not None else "(no reply yet)")


@app.command()
def session(
    session_id: Annotated[str, typer.Argument(help="The session (see `hermes sessions`).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the raw session as JSON.")] = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Show a session's turns: backend, model, tokens, cost (cents), latency (ms), the question and the reply."""
    view = _with_client(url, token, lambda client: client.session(session_id))
    if as_json:
        typer.echo(json.dumps(view, indent=2, ensure_ascii=False))
    else:
        _print_session(view)


@app.command()
def soul(
    set_from: Annotated[str | None, typer.Option("--set", metavar="FILE|-", help="Replace SOUL.md with this file's "
                                                 "text (- reads standard input).")] = None,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Print SOUL.md, the system prompt every channel's turns start with; --set replaces it."""
    text = None
    if set_from is not None:
        try:
            text = sys.stdin.read() if set_from == "-" else Path(set_from).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise _fail(f"cannot read {set_from}: {exc}", code=EXIT_USAGE) from None
        if not text.strip():
            raise _fail("the new SOUL.md is empty.", code=EXIT_USAGE)
    reply = _with_client(url, token, lambda client: client.soul(text))
    if text is None:
        typer.echo(reply["text"])
    else:
        typer.echo(f"SOUL.md updated ({reply['path']}); turns queued from now on start with it.")


class ExportKind(str, Enum):
    sft = "sft"
    dpo = "dpo"


class ExportFormat(str, Enum):
    openai = "openai"
    sharegpt = "sharegpt"


def _stream_export(chunks: Iterator[bytes], sink: BinaryIO) -> int:
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
            return _stream_export(chunks, sys.stdout.buffer)
        target = Path(output)
        partial = target.with_name(target.name + ".part")  # the file appears only once complete
        try:
            with partial.open("wb") as sink:
                records = _stream_export(chunks, sink)
            partial.replace(target)
        except OSError as exc:
            raise _fail(f"cannot write {output}: {exc}", code=EXIT_ERROR) from None
        finally:
            partial.unlink(missing_ok=True)
        return records


@app.command()
def export(
    kind: Annotated[ExportKind, typer.Argument(help="sft: one record per completed turn; dpo: preference pairs "
                                               "{prompt, chosen, rejected} from rated threads.")],
    fmt: Annotated[ExportFormat, typer.Option("--format", help="SFT record format: openai ({messages}) or sharegpt "
                                              "({conversations}); dpo ignores it.")] = ExportFormat.openai,
    since: Annotated[str | None, typer.Option("--since", metavar="YYYY-MM-DD",
                                              help="Only turns from this day on (UTC, inclusive).")] = None,
    until: Annotated[str | None, typer.Option("--until", metavar="YYYY-MM-DD",
                                              help="Only turns up to this day (UTC, inclusive).")] = None,
    channel: Annotated[str | None, typer.Option("--channel", help="Only this channel's turns.")] = None,
    min_rating: Annotated[int | None, typer.Option("--min-rating", min=1, max=5,
                                                   help="Only turns of threads rated at least this.")] = None,
    output: Annotated[str, typer.Option("--output", "-o", metavar="FILE",
                                        help="Write the JSONL here (- or none: standard output).")] = "-",
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Export training data as JSONL, streamed as the gateway sends it; prints the record count on stderr.
    A bad filter (e.g. an impossible date) exits 1 with the gateway's error."""
    params = {"format": fmt.value if kind is ExportKind.sft else None, "since": since, "until": until,
              "channel": channel, "min_rating": min_rating}
    records = _with_client(url, token, lambda client: _export_to(client, kind.value, params, output))
    where = "standard output" if output == "-" else output
    typer.echo(f"Wrote {records} {kind.value} record{'s' if records != 1 else ''} to {where}.", err=True)


backends_app = typer.Typer(no_args_is_help=False, help="The model backends: health, load and spend; enable, "
                           "disable, compare.")
app.add_typer(backends_app, name="backends")


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
                     for row in rows)


def _print_backends(listing: dict[str, Any]) -> None:
    rows = [["NAME", "TYPE", "HEALTH", "ENABLED", "IN-FLIGHT", "SUCCESS", "SPEND TODAY"]]
    for b in listing["backends"]:
        in_flight = f"{b['in_flight']}/{b['max_concurrent']}" if b.get("max_concurrent") else str(b["in_flight"])
        success = f"{b['success_rate']:.0%} of {b['requests']}" if b.get("requests") else "-"
        rows.append([b["name"], b["type"], b["health"], "yes" if b["enabled"] else "no", in_flight, success,
                     f"{b['spend_today_cents']:.2f}¢"])
    typer.echo(_table(rows))
    budget = listing["budget"]
    limit = budget.get("daily_budget_cents")
    of = f" of {limit:.2f}¢" if limit is not None else " (no daily budget)"
    typer.echo(f"\nSpent today ({budget['day']}): {budget['spent_today_cents']:.2f}¢{of}; "
               f"queued jobs: {listing.get('queued_jobs', 0)}")


def _with_client(url: str | None, token: str | None, call: Any) -> Any:
    with _client(url, token) as client:
        try:
            return call(client)
        except (GatewayError, GatewayUnreachable) as exc:
            raise _gateway_failure(exc) from None


@backends_app.callback(invoke_without_command=True)
def backends(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print the raw listing as JSON.")] = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Show every backend: type, health, enabled, in-flight jobs, success rate, spend today (cents)."""
    if ctx.invoked_subcommand is not None:
        return
    listing = _with_client(url, token, lambda client: client.backends())
    if as_json:
        typer.echo(json.dumps(listing, indent=2, ensure_ascii=False))
    else:
        _print_backends(listing)


def _toggle(name: str, enabled: bool, reason: str, url: str | None, token: str | None) -> None:
    listing = _with_client(url, token, lambda client: client.set_backend_enabled(name, enabled, reason))
    state = next((b for b in listing["backends"] if b["name"] == name.lower()), None)
    health = f" (health: {state['health']})" if state else ""
    typer.echo(f"Backend {name} {'enabled' if enabled else 'disabled'}{health}.")


@backends_app.command("enable")
def enable_backend(
    name: Annotated[str, typer.Argument(help="The backend to enable.")],
    reason: Annotated[str, typer.Option("--reason", help="Why (recorded).")] = "",
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Let the router send new jobs to a backend again."""
    _toggle(name, True, reason, url, token)


@backends_app.command("disable")
def disable_backend(
    name: Annotated[str, typer.Argument(help="The backend to disable.")],
    reason: Annotated[str, typer.Option("--reason", help="Why (recorded).")] = "",
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Stop sending new jobs to a backend (running ones finish)."""
    _toggle(name, False, reason, url, token)


def _print_comparison(reply: dict[str, Any]) -> None:
    for result in reply["results"]:
        where = f"{result['backend']} · {result['model']}"
        if result.get("error_code"):
            typer.echo(f"\n{where}: failed [{result['error_code']}] {result.get('error') or ''}".rstrip())
            continue
        took = f"{result['latency_ms'] / 1000:.1f} s" if result.get("latency_ms") is not None else "-"
        typer.echo(f"\n{where} ({took}, {result['prompt_tokens']} + {result['completion_tokens']} tokens, "
                   f"{result['cost_cents']:.4f}¢)")
        typer.echo(result.get("text") or "")


@backends_app.command("compare")
def compare_backends(
    prompt: Annotated[str, typer.Argument(help="The prompt to run on each backend.")],
    backend: Annotated[list[str] | None, typer.Option("--backend", "-b", help="A backend to compare "
                                                      "(repeatable; default: every enabled one).")] = None,
    max_tokens: Annotated[int, typer.Option("--max-tokens", min=1, max=4096, help="Output tokens at most.")] = 256,
    timeout: Annotated[float, typer.Option("--timeout", min=1, max=600, help="Seconds for the whole "
                                           "comparison.")] = 120.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the raw results as JSON.")] = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Run one prompt on several backends and show their answers side by side (text, time, tokens, cost).
    Exits 1 when no backend answered."""
    reply = _with_client(url, token, lambda client: client.compare(prompt, backend or [], max_tokens, timeout))
    if as_json:
        typer.echo(json.dumps(reply, indent=2, ensure_ascii=False))
    else:
        _print_comparison(reply)
    if not any(r.get("text") is not None and not r.get("error_code") for r in reply["results"]):
        raise typer.Exit(EXIT_ERROR)


dead_letters_app = typer.Typer(no_args_is_help=False, help="Messages the services could not process: list them, "
                               "replay one after fixing the cause.")
app.add_typer(dead_letters_app, name="dead-letters")


def _print_dead_letters(page: dict[str, Any]) -> None:
    if not page["dead_letters"]:
        typer.echo("No dead letters.")
        return
    rows = [["SEQ", "CONSUMER", "REASON", "SUBJECT", "WHEN", "REPLAYED"]]
    for d in page["dead_letters"]:
        replayed = "-" if not d["replayable"] else (d["replayed_at"] or "no")
        rows.append([str(d["dlq_sequence"]), d["consumer"], d["reason"], f"{d['subject']} #{d['stream_sequence']}",
                     d["dead_lettered_at"], replayed])
    typer.echo(_table(rows))
    if page.get("next_before") is not None:
        typer.echo(f"\nOlder ones: --before {page['next_before']}")


@dead_letters_app.callback(invoke_without_command=True)
def dead_letters(
    ctx: typer.Context,
    consumer: Annotated[str | None, typer.Option("--consumer", help="Only this consumer's (e.g. "
                                                 "orchestrator-commands).")] = None,
    reason: Annotated[str | None, typer.Option("--reason", help="Only this reason (invalid_json, "
                                               "validation_failed, max_deliveries, handler_error).")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=500, help="At most this many.")] = 50,
    before: Annotated[int | None, typer.Option("--before", min=1, help="Only older than this sequence.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the raw listing as JSON.")] = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """List dead letters, newest first: sequence (the id to replay), consumer, reason, where it was, when."""
    if ctx.invoked_subcommand is not None:
        return
    page = _with_client(url, token, lambda client: client.dead_letters(consumer, reason, limit, before))
    if as_json:
        typer.echo(json.dumps(page, indent=2, ensure_ascii=False))
    else:
        _print_dead_letters(page)


def _corrected_payload(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        payload = json.loads(Path(text[1:]).read_text(encoding="utf-8") if text.startswith("@") else text)
    except (OSError, ValueError) as exc:
        raise _fail(f"--payload is not readable JSON: {exc}", code=EXIT_USAGE) from None
    if not isinstance(payload, dict):
        raise _fail("--payload must be a JSON object.", code=EXIT_USAGE)
    return payload


@dead_letters_app.command("replay")
def replay_dead_letter(
    seq: Annotated[int, typer.Argument(min=1, help="The dead letter's sequence (first column of the list).")],
    payload: Annotated[str | None, typer.Option("--payload", help="A corrected message to publish instead: JSON "
                                                "text, or @FILE.")] = None,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Publish a dead letter again on its original subject (commands and execution requests only)."""
    corrected = _corrected_payload(payload)
    marker = _with_client(url, token, lambda client: client.replay_dead_letter(seq, corrected))
    what = "corrected payload" if marker["corrected"] else "original payload"
    typer.echo(f"Replayed dead letter {seq} ({what}) to {marker['subject']} as #{marker['stream_sequence']}.")


@app.command()
def up() -> None:
    """Start Hermes on this machine: NATS, every service and a local model; prints the web UI address."""
    try:
        local_stack = importlib.import_module("hermes_cli.up")  # written separately; imported only when used
    except ModuleNotFoundError as exc:
        if exc.name != "hermes_cli.up":
            raise
        raise _fail("`hermes up` is not available in this installation.") from None
    code = local_stack.run()
    raise typer.Exit(code if isinstance(code, int) else 0)


def main() -> None:
    """Console script ``hermes``."""
    app()


if __name__ == "__main__":
    main()
