"""Server-Sent Events as the gateway sends them on ``GET /api/threads/{id}/events``: ``event:`` the event type
(``token`` for a streamed delta), ``data:`` the event's JSON, ``id:`` its log sequence (none for tokens); a
comment (``: ...``) is a keep-alive, the first one carries ``retry:`` (the reconnection delay in milliseconds)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class SseEvent:
    """One Server-Sent Event. ``event`` is the event type (``token``, ``draft_presented``...), or ``comment``
    for a keep-alive; ``id`` the log sequence (None for tokens and comments); ``data`` the raw text; ``retry``
    the reconnection delay the server asked for (milliseconds), when this event carried one."""

    event: str
    data: str
    id: str | None = None
    retry: int | None = None

    def json(self) -> Any:
        return json.loads(self.data)


class SseDecoder:
    """Turns the lines of a ``text/event-stream`` body (line endings removed) into :class:`SseEvent` s, one
    :meth:`feed` at a time (the same decoder serves a sync and an async stream)."""

    def __init__(self) -> None:
        self._fields: dict[str, str] = {}
        self._data: list[str] = []
        self._comment = False

    def feed(self, line: str) -> SseEvent | None:
        """Take one line; returns the event a blank line completes (None otherwise)."""
        if line == "":
            fields, data, comment = self._fields, self._data, self._comment
            self._fields, self._data, self._comment = {}, [], False
            retry_text = fields.get("retry", "")
            retry = int(retry_text) if retry_text.isdigit() else None
            if data:
                return SseEvent(fields.get("event", "message"), "\n".join(data), fields.get("id"), retry)
            if comment or retry is not None:
                return SseEvent("comment", "", None, retry)
            return None
        if line.startswith(":"):
            self._comment = True
            return None
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            self._data.append(value)
        else:
            self._fields[name] = value
        return None


def parse_sse(lines: Iterable[str]) -> Iterator[SseEvent]:
    """Server-Sent Events from the lines of a ``text/event-stream`` body (line endings already removed)."""
    decoder = SseDecoder()
    for line in lines:
        event = decoder.feed(line)
        if event is not None:
            yield event


async def aparse_sse(lines: AsyncIterable[str]) -> AsyncIterator[SseEvent]:
    """:func:`parse_sse` for an async stream of lines."""
    decoder = SseDecoder()
    async for line in lines:
        event = decoder.feed(line)
        if event is not None:
            yield event
