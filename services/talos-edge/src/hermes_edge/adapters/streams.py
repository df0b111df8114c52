"""Reading a streamed body as it arrives: its lines (Ollama's NDJSON) and its Server-Sent Events' data (the
OpenAI-compatible and Anthropic streams)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
from aiohttp.http_exceptions import LineTooLong

from hermes_edge.adapters.session import READ_BUFSIZE
from hermes_edge.domain import ErrorCode, ModelCallFailed


async def body_lines(response: aiohttp.ClientResponse) -> AsyncIterator[str]:
    """Each line of ``response``'s body as soon as it arrives, decoded as UTF-8 (invalid bytes replaced), without
    its line break (``\\n``, ``\\r\\n`` or ``\\r``); a last line without a break is yielded too. A line longer
    than twice :data:`~hermes_edge.adapters.session.READ_BUFSIZE` raises ``ModelCallFailed(malformed_response)``."""
    try:
        async for raw in response.content:  # up to and including b"\n" (or the end of the body)
            for line in raw.splitlines():
                yield line.decode("utf-8", errors="replace")
    except LineTooLong:
        raise ModelCallFailed(
            ErrorCode.MALFORMED_RESPONSE, f"a stream line longer than {2 * READ_BUFSIZE} bytes"
        ) from None


async def sse_data(response: aiohttp.ClientResponse) -> AsyncIterator[str]:
    """The ``data`` of each Server-Sent Event of ``response``, in order (multi-line data joined by newlines,
    per the WHATWG EventSource spec). Comments, ``event:``/``id:``/``retry:`` fields and blank keep-alives are
    skipped; a last event not closed by a blank line is still yielded."""
    data_lines: list[str] = []
    async for line in body_lines(response):
        if line.startswith("data:"):
            data_lines.append(line[5:].removeprefix(" "))
        elif not line.strip() and data_lines:
            yield "\n".join(data_lines)
            data_lines = []
    if data_lines:
        yield "\n".join(data_lines)
