"""One chat turn over the bus, as the OpenAI-compatible API and perception events run it: publish ``SubmitChat``,
follow the session thread for the turn's token deltas and its outcome (``ExecutionCompleted``, or ``JobFailed`` /
``JobCancelled``).

A turn runs through the whole harness (the orchestrator adds SOUL.md and memories, the router chooses the backend
within the budgets, an edge calls the model) and is captured in the log like any job.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

from hermes_proto.commands import SubmitChat
from hermes_proto.ids import derived_id

from hermes_gateway.adapters import Bus, CommandPublisher
from hermes_gateway.live import FeedItem, ThreadFeed


def session_thread_id(user_id: str, session_key: str) -> str:
    """The thread of ``user_id``'s session ``session_key``: derived, so the same key continues the same session
    and two users' equal keys never meet."""
    return derived_id("chat-session", user_id, session_key)


@dataclass(frozen=True)
class TurnResult:
    """A completed turn: the reply ``text``, who answered, tokens and the model call's latency (ms)."""

    session_id: str
    job_id: str
    text: str
    backend: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    latency_ms: float
    finish_reason: str


class TurnFailed(Exception):
    """The turn's job failed or was cancelled: ``code`` is its error code (no_backend, over_budget, timeout,
    cancelled...), ``message`` the reason."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class ChatTurn:
    """Run ``command`` and yield its reply: each streamed text piece (str), then one :class:`TurnResult`.

    Use as ``async with ChatTurn(...) as turn: async for piece in turn.replies(timeout_s)``. Entering registers a
    live view of the session on the gateway's feeds at their current position (no I/O), then publishes the
    command, so nothing of the turn is missed; raises :class:`~hermes_proto.rpc.BusUnavailable` when the bus does
    not answer."""

    def __init__(self, bus: Bus, commands: CommandPublisher, command: SubmitChat) -> None:
        self._bus, self._commands = bus, commands
        self.command = command
        self._feed: ThreadFeed | None = None

    async def __aenter__(self) -> ChatTurn:
        self._feed = ThreadFeed(self._bus, self.command.thread_id, start_after=None)
        await self._feed.open()
        try:
            await self._commands.send(self.command)
        except BaseException:
            await self._feed.close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._feed is not None:
            await self._feed.close()

    async def replies(self, timeout_s: float, streaming: bool = True) -> AsyncIterator[str | TurnResult]:
        """Text pieces as the model streams them, then the :class:`TurnResult`. Raises :class:`TurnFailed` (also
        ``retried_mid_stream`` when an attempt failed after streaming and the one that succeeded said something
        else; only when ``streaming``: a caller that waits for the whole reply gets the result), or ``TimeoutError`` when
        no outcome arrives within ``timeout_s`` seconds."""
        assert self._feed is not None
        job_id = self.command.job_id
        items = self._feed.items()
        streamed, last_seq, restarted = "", -1, False
        async with asyncio.timeout(timeout_s):
            async for item in items:
                outcome = _outcome(item, job_id, self.command.thread_id)
                if isinstance(outcome, tuple):
                    seq, text = outcome
                    # A retry or failover streams the job again from seq 0: what was sent cannot be taken back,
                    # so nothing more is streamed; the result below decides whether the reply still holds.
                    restarted = restarted or seq <= last_seq
                    last_seq = seq
                    if not restarted and text:
                        streamed += text
                        yield text
                elif isinstance(outcome, TurnResult):
                    if streaming and not outcome.text.startswith(streamed):
                        raise TurnFailed(
                            "retried_mid_stream",
                            "the backend failed mid-stream and another attempt answered differently; ask again",
                        )
                    # Token deltas travel on core NATS beside the log: any the result overtook come now.
                    if len(outcome.text) > len(streamed):
                        yield outcome.text[len(streamed) :]
                    yield outcome
                    return
        raise TurnFailed("interrupted", "the gateway stopped following the turn")


def _outcome(item: FeedItem, job_id: str, session_id: str) -> tuple[int, str] | TurnResult | None:
    """A token delta of the turn's job as ``(seq, text)``, its result, or None; raises :class:`TurnFailed`."""
    data = json.loads(item.data)
    if data.get("job_id") != job_id:
        return None
    if item.event == "token":
        return data["seq"], data["text"]
    if item.event == "execution_completed":
        return TurnResult(
            session_id=session_id,
            job_id=job_id,
            text=data["text"],
            backend=data["backend"],
            model=data["model"],
            prompt_tokens=data["prompt_tokens"],
            completion_tokens=data["completion_tokens"],
            latency_ms=data["latency_ms"],
            finish_reason=data.get("finish_reason") or "stop",
        )
    if item.event == "job_failed":
        raise TurnFailed(data["error_code"], data["message"])
    if item.event == "job_cancelled":
        raise TurnFailed(data.get("reason") or "cancelled", data.get("message") or "cancelled")
    return None
