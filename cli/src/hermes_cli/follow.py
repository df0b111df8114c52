"""Following a thread live: :class:`ThreadFollower` turns its Server-Sent Events into terminal output (a draft's
tokens as they stream, then what happened), and :func:`follow` runs it for ``submit`` and ``answer``."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO

import typer

from hermes_cli.client import SseEvent
from hermes_cli.common import fail


class WaitTimeout(Exception):
    """The thread did not get where it was followed to within the timeout (it goes on)."""


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
        self._write(final[len(shown) :] if final.startswith(shown) else f"\n[final text]\n{final}")
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
            self.stats[job_id] = {
                "tokens": data["prompt_tokens"] + data["completion_tokens"],
                "latency_ms": data["latency_ms"],
            }
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


def print_questions(thread_id: str, questions: list[dict[str, Any]]) -> None:
    """Print the questions (number, category, text, id, suggestions) and the ``hermes answer`` line to use."""
    typer.echo('\nQuestions (answer any of them; "" skips one):')
    for number, question in enumerate(questions, 1):
        typer.echo(f"  {number}. [{question['category']}] {question['text']}  (id: {question['question_id']})")
        if question.get("suggestions"):
            typer.echo(f"     suggestions: {' | '.join(question['suggestions'])}")
    placeholders = " ".join(f'"answer {n}"' for n in range(1, len(questions) + 1))
    typer.echo(f"\nAnswer with:\n  hermes answer {thread_id} {placeholders}")


def follow(
    events: Iterator[SseEvent], thread_id: str, follower: ThreadFollower, timeout_s: float, until_questions: bool
) -> None:
    """Run ``follower`` over ``events`` (see :meth:`ThreadFollower.follow`); exits 1 when waiting timed out (the
    thread goes on) or the thread failed."""
    try:
        follower.follow(events, timeout_s, until_questions)
    except WaitTimeout:
        raise fail(
            f"stopped waiting after {timeout_s:g} s; the thread goes on.", f"Check it with `hermes status {thread_id}`."
        ) from None
    if follower.failed:
        raise fail(f"thread {thread_id} failed: {follower.failed}")
