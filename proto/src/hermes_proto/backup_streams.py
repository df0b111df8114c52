"""Streams in and out of a backup (:mod:`hermes_proto.backup`): every stored message with its stream sequence,
subject, raw header block and data; the stream's configuration and state; its durable consumers and how far each
had acknowledged (:mod:`hermes_proto.backup_replay` puts them back).

Everything goes through the JetStream API subjects (``$JS.API.*``) as raw JSON, so configurations are kept exactly as
the server reports them. Messages are read with ``STREAM.MSG.GET`` (headers as the stored bytes), up to the last
sequence the stream had when the dump started. Only the requests run on the event loop (a scheduled backup runs in
the notary's): encoding and writing the records happen in a worker thread, a window of messages at a time.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from nats.aio.client import Client as NATS

API = "$JS.API"
NO_MESSAGE, NO_STREAM = 10037, 10059
WINDOW = 128


class StreamError(Exception):
    """The server refused or answered something a dump or a restore cannot go on with. ``code``: ``nats_error``,
    ``sequence_mismatch``, ``unrestorable_message`` or ``state_mismatch``; ``err_code``: the server's, if any."""

    def __init__(self, code: str, detail: str, err_code: int | None = None) -> None:
        super().__init__(f"{code}: {detail}")
        self.code, self.detail, self.err_code = code, detail, err_code


@dataclass
class StreamDump:
    """What :func:`dump_stream` wrote: archived message count, first and last sequence of the stream's range
    (``first_seq`` > ``last_seq`` when it was empty), durable consumers."""

    name: str
    messages: int
    first_seq: int
    last_seq: int
    consumers: int


async def api(nc: NATS, subject: str, body: dict[str, Any] | None = None, timeout: float = 10.0) -> dict[str, Any]:
    """One JetStream API request (``timeout`` seconds); the JSON reply. Raises :class:`StreamError` (``nats_error``,
    with the server's ``err_code``) for an error reply, nats-py's errors for no reply."""
    reply = await nc.request(f"{API}.{subject}", json.dumps(body).encode() if body is not None else b"", timeout)
    data = json.loads(reply.data)
    if "error" in data:
        error = data["error"]
        raise StreamError("nats_error", f"{subject}: {error.get('description')}", error.get("err_code"))
    return data


async def dump_stream(nc: NATS, name: str, directory: Path) -> StreamDump | None:
    """Write ``stream.json`` (config, state, durable consumers with their ack floor) and ``messages.jsonl`` (one
    ``{"seq", "subject", "hdrs", "data", "time"}`` per message, ``hdrs``/``data`` base64, in sequence order) for
    stream ``name`` into ``directory``. Consumers are read before messages: at worst a restored consumer gets a
    message again, never misses one. Returns None when the stream does not exist."""
    consumers = await _durable_consumers(nc, name)
    try:
        info = await api(nc, f"STREAM.INFO.{name}")
    except StreamError as exc:
        if exc.err_code == NO_STREAM:
            return None
        raise
    state = info["state"]
    first, last = max(int(state.get("first_seq", 0)), 1), int(state.get("last_seq", 0))
    await asyncio.to_thread(directory.mkdir, parents=True, exist_ok=True)
    out = await asyncio.to_thread(open, directory / "messages.jsonl", "w", encoding="utf-8")
    count, batch = 0, []
    try:  # the requests on the loop; encoding and writing, a window at a time, in a thread
        async for message in _messages(nc, name, first, last, sparse=state.get("num_deleted", 0) > 4 * WINDOW):
            batch.append(message)
            if len(batch) >= WINDOW:
                count += await asyncio.to_thread(write_lines, out, batch)
                batch = []
        count += await asyncio.to_thread(write_lines, out, batch)
    finally:
        await asyncio.to_thread(out.close)
    doc = {"name": name, "config": info["config"], "first_seq": first, "last_seq": last, "consumers": consumers}
    text = json.dumps(doc, indent=1, sort_keys=True)
    await asyncio.to_thread((directory / "stream.json").write_text, text, encoding="utf-8")
    return StreamDump(name, count, first, last, len(consumers))


def write_lines(out: TextIO, messages: list[dict[str, Any]]) -> int:
    """Append ``messages`` to ``out`` as JSON lines (called in a worker thread); returns how many."""
    out.write("".join(json.dumps(message, separators=(",", ":")) + "\n" for message in messages))
    return len(messages)


async def _durable_consumers(nc: NATS, stream: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    offset = 0
    while True:
        try:
            page = await api(nc, f"CONSUMER.LIST.{stream}", {"offset": offset})
        except StreamError as exc:
            if exc.err_code == NO_STREAM:
                return []
            raise
        items = page.get("consumers") or []
        for item in items:
            if item["config"].get("durable_name"):
                acked = int((item.get("ack_floor") or {}).get("stream_seq", 0))
                found.append({"name": item["name"], "config": item["config"], "ack_floor": acked})
        offset += len(items)
        if not items or offset >= int(page.get("total", 0)):
            return sorted(found, key=lambda c: c["name"])


async def _messages(nc: NATS, stream: str, first: int, last: int, sparse: bool):  # noqa: ANN202
    """Stored messages with sequences first..last in order: windows of exact gets (a deleted sequence: skipped),
    or for a stream mostly made of gaps one ``next_by_subj`` get after another."""
    seq = first
    while seq <= last:
        if sparse:
            try:
                found = await api(nc, f"STREAM.MSG.GET.{stream}", {"seq": seq, "next_by_subj": ">"})
            except StreamError as exc:
                if exc.err_code == NO_MESSAGE:
                    return
                raise
            message = _record(found["message"])
            if message["seq"] > last:
                return
            yield message
            seq = message["seq"] + 1
            continue
        window = range(seq, min(seq + WINDOW, last + 1))
        got = await asyncio.gather(*(_get(nc, stream, n) for n in window))
        for message in got:
            if message is not None:
                yield message
        seq = window.stop


async def _get(nc: NATS, stream: str, seq: int) -> dict[str, Any] | None:
    try:
        return _record((await api(nc, f"STREAM.MSG.GET.{stream}", {"seq": seq}))["message"])
    except StreamError as exc:
        if exc.err_code == NO_MESSAGE:
            return None
        raise


def _record(message: dict[str, Any]) -> dict[str, Any]:
    return {
        "seq": int(message["seq"]),
        "subject": message["subject"],
        "hdrs": message.get("hdrs"),
        "data": message.get("data") or "",
        "time": message.get("time"),
    }


def read_messages(path: Path) -> Iterator[dict[str, Any]]:
    """The records of a ``messages.jsonl``, in file order."""
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                yield json.loads(line)
