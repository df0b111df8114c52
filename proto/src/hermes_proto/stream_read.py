"""Reading a whole stream once, in order, as stored (sequence, subject, headers, data): what ``hermes verify``
checks. An ephemeral ordered push consumer (~9 µs of client CPU per message, facts.md),
from ``start`` until the stream's last sequence at the time of the call."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy

from hermes_proto.bus import RawMessage

Sink = Callable[[RawMessage], Awaitable[None] | None]


async def read_stream(
    js: JetStreamContext, stream: str, sink: Sink, start: int = 1, idle_timeout_s: float = 10.0
) -> tuple[int, int]:
    """Hand every stored message of ``stream`` with a sequence >= ``start`` to ``sink`` in order; returns
    (messages read, the stream's last sequence when the read began). Raises TimeoutError when nothing arrives for
    ``idle_timeout_s`` seconds before the end (the server went away)."""
    info = await js.stream_info(stream)
    last, count = info.state.last_seq, 0
    if info.state.messages == 0 or last < start:
        return 0, last
    done = asyncio.Event()
    arrived = asyncio.Event()
    failure: list[BaseException] = []

    async def on_msg(msg) -> None:  # noqa: ANN001
        nonlocal count
        meta = msg.metadata
        if meta.sequence.stream > last or done.is_set():
            done.set()
            return
        try:
            result = sink(RawMessage(meta.sequence.stream, msg.subject, msg.data, msg.headers))
            if result is not None:
                await result
        except BaseException as exc:  # handed to the caller
            failure.append(exc)
            done.set()
            return
        count += 1
        arrived.set()
        if meta.sequence.stream >= last or meta.num_pending == 0:
            done.set()

    config = ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=start, mem_storage=True)
    subjects = info.config.subjects or []
    sub = await js.subscribe(
        subjects[0] if len(subjects) == 1 else ">",
        stream=stream,
        cb=on_msg,
        ordered_consumer=True,
        idle_heartbeat=2.0,
        config=config,
    )
    try:
        while not done.is_set():
            arrived.clear()
            try:
                await asyncio.wait_for(_first(done, arrived), timeout=idle_timeout_s)
            except TimeoutError as exc:
                raise TimeoutError(f"{stream}: nothing arrived for {idle_timeout_s} s after {count} messages") from exc
    finally:
        await sub.unsubscribe()
    if failure:
        raise failure[0]
    return count, last


async def _first(*events: asyncio.Event) -> None:
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
