"""Draft 1 streamed into one Telegram message: the edge's token deltas (core NATS, ``hermes.tokens.<thread>.*``)
edit the "drafting…" message in place while the model writes.

Edits are throttled to one per ``interval_s`` per chat, however many drafts stream there (Telegram allows
about one message per second in a chat, an edit counts as one; "My bot is hitting limits",
https://core.telegram.org/bots/faq), and skipped when the text did not change. A streaming edit is tried once:
a network error only means the next tick shows more, and a flood wait pauses that chat's streaming edits for
its ``retry_after``. The final draft is written by the events consumer
(:class:`hermes_notifier.conversation.Conversation`), which first calls :meth:`LiveDrafts.finish`, so no streaming
edit lands after it. The stream lives in memory only: after a restart draft 1 simply arrives whole.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import msgspec
import structlog
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from hermes_proto import subjects
from hermes_proto.codec import UNDECODABLE
from hermes_proto.execution import TokenDelta

from hermes_notifier import chat
from hermes_notifier.adapters import SendFailed, TelegramSender
from hermes_notifier.metrics import STREAM_EDITS

log = structlog.get_logger("hermes.notifier")

LIVE_TEXT_UNITS = 3500
"""UTF-16 units of the draft's head shown while it streams (room for the header within Telegram's 4096); the whole
draft comes with the final edit."""
MAX_STREAM_S = 900.0
"""A stream nobody finishes (its draft never presented) stops by itself after this long (seconds): longer than
a draft takes on the slowest backend Hermes was run on (SmolLM2 on 2 cores: ~6 s for 256 tokens)."""


@dataclass
class _Stream:
    chat_id: str
    message_id: int
    job_id: str | None = None
    text: list[str] = field(default_factory=list)
    shown: str = ""  # the message text last written (MarkdownV2)
    done: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    subscription: Subscription | None = None
    task: asyncio.Task | None = None


class LiveDrafts:
    """Streams draft 1 of Telegram threads. ``interval_s``: the least time between two edits of one message
    (seconds)."""

    def __init__(self, nc: NATS, sender: TelegramSender, interval_s: float) -> None:
        self._nc = nc
        self._sender = sender
        self._interval_s = interval_s
        self._streams: dict[str, _Stream] = {}
        self._next_edit_at: dict[str, float] = {}  # per chat, monotonic seconds

    async def start(self, thread_id: str, chat_id: str, message_id: int) -> None:
        """Follow ``thread_id``'s first job's tokens into message ``message_id`` of ``chat_id``. Subscribe before
        the idea is submitted, so no early token is missed."""
        if thread_id in self._streams:
            return
        stream = _Stream(chat_id, message_id)
        self._streams[thread_id] = stream

        async def on_delta(msg: Msg) -> None:
            self._on_delta(stream, msg)

        stream.subscription = await self._nc.subscribe(subjects.thread_tokens(thread_id), cb=on_delta)
        stream.task = asyncio.create_task(self._pump(thread_id, stream), name=f"live-{thread_id}")

    async def finish(self, thread_id: str) -> None:
        """Stop streaming ``thread_id``; returns once no streaming edit is in flight, so the caller's edit is last."""
        stream = self._streams.pop(thread_id, None)
        if stream is None:
            return
        stream.done = True
        if stream.subscription is not None:
            await _quietly_unsubscribe(stream.subscription)
        async with stream.lock:  # an edit under way completes first
            if stream.task is not None:
                stream.task.cancel()

    async def close(self) -> None:
        for thread_id in list(self._streams):
            await self.finish(thread_id)

    def _on_delta(self, stream: _Stream, msg: Msg) -> None:
        try:
            delta = msgspec.json.decode(msg.data, type=TokenDelta)
        except UNDECODABLE + (msgspec.ValidationError,):
            return
        if stream.job_id is None:
            stream.job_id = delta.job_id  # draft 1 is the thread's first job; later jobs are not streamed here
        if delta.job_id == stream.job_id:
            stream.text.append(delta.text)

    async def _pump(self, thread_id: str, stream: _Stream) -> None:
        deadline = time.monotonic() + MAX_STREAM_S
        try:
            while not stream.done and time.monotonic() < deadline:
                await asyncio.sleep(self._interval_s)
                async with stream.lock:
                    if not stream.done:
                        await self._edit(stream)
        except asyncio.CancelledError:
            pass
        finally:
            if self._streams.get(thread_id) is stream and time.monotonic() >= deadline:
                self._streams.pop(thread_id, None)
                if stream.subscription is not None:
                    await _quietly_unsubscribe(stream.subscription)

    async def _edit(self, stream: _Stream) -> None:
        partial = "".join(stream.text)
        now = time.monotonic()
        if not partial.strip() or now < self._next_edit_at.get(stream.chat_id, 0.0):
            return
        # Compared as shown, not as streamed: past LIVE_TEXT_UNITS new tokens leave the shown head unchanged, and
        # Telegram refuses an edit to the same text ("message is not modified").
        text = chat.render(chat.live_draft_text(partial, LIVE_TEXT_UNITS))
        if text == stream.shown:
            return
        self._next_edit_at[stream.chat_id] = now + self._interval_s
        try:
            await self._sender.api(
                "editMessageText",
                chat_id=stream.chat_id,
                message_id=stream.message_id,
                text=text,
                parse_mode=chat.PARSE_MODE,
            )
        except SendFailed as exc:
            if exc.retry_after_s:
                self._next_edit_at[stream.chat_id] = time.monotonic() + exc.retry_after_s
            STREAM_EDITS.labels(exc.reason).inc()
            log.info("stream_edit_skipped", reason=exc.reason, error=exc.detail)
            return
        stream.shown = text
        STREAM_EDITS.labels("edited").inc()


async def _quietly_unsubscribe(subscription: Subscription) -> None:
    try:
        await subscription.unsubscribe()
    except Exception as exc:  # a closed connection: nothing left to stop
        log.debug("unsubscribe_failed", error=repr(exc))
