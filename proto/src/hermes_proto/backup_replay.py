"""Restoring one stream from a backup (:mod:`hermes_proto.backup`): re-create it, publish every stored message again
so that it gets its original sequence, hold the place of deleted sequences with placeholders deleted afterwards, put
the stored configuration back and the durable consumers where they had acknowledged.

A stream is re-created with the smallest duplicate window (:data:`MIN_DUPLICATE_WINDOW_NS`) and, when its first
sequence is above 1, ``first_seq`` (nats-server 2.10+); its own configuration (duplicate window included) is put
back once every message is in. A consumer is created with its stored configuration, then the messages it had
acknowledged (those up to its ack floor that its filter selects) are fetched and acknowledged, so a service resumes
after them instead of reacting to the whole history again.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nats.aio.client import Client as NATS

from hermes_proto.backup_streams import StreamError, api, read_messages
from hermes_proto.schedules import subject_matches

MIN_DUPLICATE_WINDOW_NS = 100_000_000
"""The smallest duplicate window the server accepts (100 ms): the window a stream is re-created with while its
messages are published again, so that two stored messages sharing a ``Nats-Msg-Id`` are both kept."""
REPEAT_WAIT_S = 1.0
FILLER_TOKEN = "_hermes_restore_gap"
HDR_LINE = b"NATS/1.0\r\n"


@dataclass
class RestoredStream:
    """One restored stream: messages published, consumers re-created, anything only partly restored."""

    name: str
    messages: int
    consumers: int
    warnings: list[str] = field(default_factory=list)


def header_map(hdrs: str | None) -> dict[str, str] | None:
    """The stored header block (base64) as a dict that nats-py publishes as exactly those bytes; None without
    headers. Raises :class:`StreamError` (``unrestorable_message``) for a block that would not come out the same
    (a status line, a repeated key, padding)."""
    if not hdrs:
        return None
    raw = base64.b64decode(hdrs)
    if not raw.startswith(HDR_LINE) or not raw.endswith(b"\r\n\r\n"):
        raise StreamError("unrestorable_message", f"header block {raw[:40]!r} is not a plain NATS/1.0 block")
    headers: dict[str, str] = {}
    for line in raw[len(HDR_LINE) : -4].split(b"\r\n") if raw != HDR_LINE + b"\r\n" else []:
        key, sep, value = line.decode("utf-8", errors="surrogateescape").partition(":")
        if not sep or key in headers or not _utf8(line):
            raise StreamError("unrestorable_message", f"header line {line[:60]!r} cannot be published as stored")
        headers[key] = value.strip()
    encoded = HDR_LINE + b"".join(f"{k}: {v}\r\n".encode() for k, v in headers.items()) + b"\r\n"
    if encoded != raw:
        raise StreamError("unrestorable_message", f"header block {raw[:60]!r} would not be published as stored")
    return headers


def _utf8(line: bytes) -> bool:
    try:
        line.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def filler_subject(config: dict[str, Any]) -> str:
    """A concrete subject the stream stores (its first subject, wildcards replaced) for the placeholder messages
    that hold a deleted sequence's place while restoring."""
    subjects = config.get("subjects") or [config["name"]]
    return ".".join(FILLER_TOKEN if t in ("*", ">") else t for t in subjects[0].split("."))


class Republisher:
    """Publishes messages into one stream, pipelined, checking that each gets the sequence it is given (a stored
    message republished within the duplicate window of an earlier one with the same ``Nats-Msg-Id`` is sent alone
    and retried until the window passed)."""

    def __init__(self, nc: NATS, stream: str, batch: int = 256) -> None:
        self.js = nc.jetstream()
        self.stream = stream
        self.batch = batch
        self._pending: list[tuple[int, asyncio.Future[Any]]] = []
        self._recent: dict[str, float] = {}

    async def publish(self, seq: int, subject: str, data: bytes, headers: dict[str, str] | None) -> None:
        """Publish one message that must be stored as ``seq`` (checked when its acknowledgement arrives: at the
        latest by :meth:`flush`). Raises :class:`StreamError` (``sequence_mismatch``)."""
        msg_id = (headers or {}).get("Nats-Msg-Id")
        now = time.monotonic()
        if msg_id and now - self._recent.get(msg_id, -REPEAT_WAIT_S) < REPEAT_WAIT_S:
            await self.flush()
            deadline = now + 10 * REPEAT_WAIT_S
            while (ack := await self.js.publish(subject, data, headers=headers)).duplicate:
                if time.monotonic() > deadline:
                    raise StreamError("sequence_mismatch", f"{self.stream} #{seq}: still a duplicate of #{ack.seq}")
                await asyncio.sleep(0.05)
            self._check(seq, ack)
        else:
            self._pending.append((seq, await self.js.publish_async(subject, data, headers=headers)))
            if len(self._pending) >= self.batch:
                await self.flush()
        if msg_id:
            self._recent[msg_id] = time.monotonic()
            if len(self._recent) > 50_000:
                cutoff = time.monotonic() - REPEAT_WAIT_S
                self._recent = {k: t for k, t in self._recent.items() if t >= cutoff}

    async def flush(self) -> None:
        """Wait for every pipelined acknowledgement (30 s at most) and check each sequence."""
        pending, self._pending = self._pending, []
        acks = await asyncio.wait_for(asyncio.gather(*(f for _, f in pending)), timeout=30)
        for (seq, _), ack in zip(pending, acks, strict=True):
            self._check(seq, ack)

    def _check(self, seq: int, ack: Any) -> None:
        if ack.seq != seq or ack.duplicate:
            raise StreamError("sequence_mismatch", f"{self.stream}: message #{seq} was stored as #{ack.seq}")


@dataclass
class _Position:
    """A consumer to put back: how many archived messages it had acknowledged (from its start, up to its floor)."""

    config: dict[str, Any]
    floor: int
    start: int | None
    filters: list[str]
    count: int = 0

    @classmethod
    def of(cls, stored: dict[str, Any], last: int) -> _Position:
        config = _clean(stored["config"])
        policy = config.get("deliver_policy", "all")
        start = 0 if policy == "all" else int(config.get("opt_start_seq", 0)) if policy == "by_start_sequence" else None
        filters = config.get("filter_subjects") or ([config["filter_subject"]] if config.get("filter_subject") else [])
        return cls(config, min(int(stored.get("ack_floor", 0)), last), start, filters or [">"])

    def see(self, seq: int, subject: str) -> None:
        if (
            self.start is not None
            and self.start <= seq <= self.floor
            and any(subject_matches(f, subject) for f in self.filters)
        ):
            self.count += 1


def _clean(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` without the metadata the server keeps for itself (``_nats.*``)."""
    metadata = {k: v for k, v in (config.get("metadata") or {}).items() if not k.startswith("_nats.")}
    cleaned = {k: v for k, v in config.items() if k != "metadata"}
    return {**cleaned, "metadata": metadata} if metadata else cleaned


async def restore_stream(nc: NATS, directory: Path) -> RestoredStream:
    """Re-create the stream dumped in ``directory`` (``stream.json``, ``messages.jsonl``) on ``nc``'s server, where it
    must not exist yet. Raises :class:`StreamError`: ``sequence_mismatch`` when a message would get another
    sequence, ``unrestorable_message`` for a header block nats-py cannot publish as stored, ``state_mismatch`` when
    the result differs from the archive, ``nats_error`` when the server refuses."""
    doc = json.loads((directory / "stream.json").read_text(encoding="utf-8"))
    name, config = doc["name"], _clean(doc["config"])
    first, last = int(doc["first_seq"]), int(doc["last_seq"])
    create = {**config, "duplicate_window": MIN_DUPLICATE_WINDOW_NS}
    if first > 1:
        create["first_seq"] = first
    await api(nc, f"STREAM.CREATE.{name}", create)
    positions = [_Position.of(c, last) for c in doc["consumers"]]
    publisher, filler, fillers = Republisher(nc, name), filler_subject(config), []
    expected, count = first, 0
    for message in read_messages(directory / "messages.jsonl"):
        seq, subject = int(message["seq"]), message["subject"]
        if not expected <= seq <= last:
            raise StreamError("state_mismatch", f"{name}: message #{seq} out of order or past #{last}")
        headers = header_map(message.get("hdrs"))
        for gap in range(expected, seq):
            await publisher.publish(gap, filler, b"", None)
            fillers.append(gap)
        await publisher.publish(seq, subject, base64.b64decode(message["data"]), headers)
        for position in positions:
            position.see(seq, subject)
        expected, count = seq + 1, count + 1
    for gap in range(expected, last + 1):
        await publisher.publish(gap, filler, b"", None)
        fillers.append(gap)
    await publisher.flush()
    for at in range(0, len(fillers), 256):
        chunk = fillers[at : at + 256]
        await asyncio.gather(*(api(nc, f"STREAM.MSG.DELETE.{name}", {"seq": s, "no_erase": True}) for s in chunk))
    await api(nc, f"STREAM.UPDATE.{name}", config)
    state = (await api(nc, f"STREAM.INFO.{name}"))["state"]
    if int(state["messages"]) != count or int(state["last_seq"]) != max(last, first - 1):
        raise StreamError(
            "state_mismatch",
            f"{name}: {state['messages']} messages up to #{state['last_seq']}, the archive has {count} up to #{last}",
        )
    restored = RestoredStream(name, count, len(positions))
    for position in positions:
        await _put_back(nc, name, position, restored.warnings)
    return restored


async def _put_back(nc: NATS, stream: str, position: _Position, warnings: list[str]) -> None:
    name = position.config.get("durable_name") or position.config["name"]
    await api(nc, f"CONSUMER.CREATE.{stream}.{name}", {"stream_name": stream, "config": position.config})
    if position.config.get("deliver_subject") or position.start is None:
        if position.floor:
            warnings.append(f"{stream}/{name}: push or non-replaying consumer left at its configured start")
        return
    sub = await nc.jetstream().pull_subscribe_bind(durable=name, stream=stream)
    remaining = position.count
    try:
        while remaining > 0:
            msgs = await sub.fetch(min(remaining, 256), timeout=10)
            for msg in msgs:
                if msg.metadata.sequence.stream > position.floor:
                    raise StreamError(
                        "state_mismatch",
                        f"{stream}/{name}: got #{msg.metadata.sequence.stream} past its ack floor #{position.floor}",
                    )
                await msg.ack()
            remaining -= len(msgs)
        await nc.flush()
    finally:
        await sub.unsubscribe()
    deadline = time.monotonic() + 10
    while pending := int((await api(nc, f"CONSUMER.INFO.{stream}.{name}")).get("num_ack_pending", 0)):
        if time.monotonic() > deadline:  # acknowledgements are applied asynchronously: wait for them
            raise StreamError("state_mismatch", f"{stream}/{name}: {pending} acknowledgements still pending")
        await asyncio.sleep(0.05)
