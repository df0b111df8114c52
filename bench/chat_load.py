"""The client of bench/peers.py: one OpenAI ``POST /v1/chat/completions`` call, timed, over aiohttp.

The same :func:`new_session` settings and the same request body serve every side (Hermes, the LiteLLM proxy, the
backend called directly), so the only difference between two sides is the server. Times are
``time.perf_counter`` differences in milliseconds, taken in this (client) process."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import aiohttp
from system import MODEL


class ChatError(Exception):
    """A call that did not give a complete answer: ``HTTP <status>: <body>``, an error object inside the stream,
    an empty reply, or a stream without ``data: [DONE]``."""


@dataclass(frozen=True)
class ChatSample:
    """One answered call. ``latency_ms``: request sent → whole body read (non-streaming) or ``data: [DONE]``
    read (streaming); ``ttft_ms``: request sent → the first chunk whose ``delta.content`` is not empty (streaming
    only; a role-only first chunk does not count, whoever sends it)."""

    latency_ms: float
    ttft_ms: float | None = None


def request_body(prompt: str, stream: bool, max_tokens: int = 256) -> bytes:
    """The JSON body every side gets: one user message, ``max_tokens``; streaming asks for the usage chunk
    (``stream_options.include_usage``) as the Hermes edge does."""
    body: dict = {"model": MODEL, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens}
    if stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    return json.dumps(body).encode()


def new_session(pool: int, api_key: str) -> aiohttp.ClientSession:
    """An aiohttp session with at most ``pool`` connections, idle ones dropped after 2 s (before uvicorn's 5 s
    keep-alive timeout closes them server-side, which would fail a request sent on a closing connection), no
    client-side total timeout (the closed loop bounds each call), and ``Authorization: Bearer <api_key>`` (the
    LiteLLM master key; Hermes with auth off and the fake backend ignore it)."""
    connector = aiohttp.TCPConnector(limit=pool, limit_per_host=pool, keepalive_timeout=2.0)
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=None),
        headers={"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"},
    )


async def chat_call(session: aiohttp.ClientSession, url: str, body: bytes, stream: bool) -> ChatSample:
    """POST ``body`` to ``url`` and read the whole answer. Raises :class:`ChatError` unless it is HTTP 200 with a
    non-empty reply (``choices[0].message.content``, or content deltas ending in ``data: [DONE]``)."""
    start = time.perf_counter()
    async with session.post(url, data=body) as response:
        if response.status != 200:
            raise ChatError(f"HTTP {response.status}: {(await response.text())[:200]}")
        if not stream:
            raw = await response.read()
            latency = (time.perf_counter() - start) * 1000
            if not json.loads(raw)["choices"][0]["message"]["content"]:
                raise ChatError("empty reply")
            return ChatSample(latency)
        ttft = None
        async for line in response.content:
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if data == b"[DONE]":
                if ttft is None:
                    raise ChatError("stream without content")
                return ChatSample((time.perf_counter() - start) * 1000, ttft)
            chunk = json.loads(data)
            if "error" in chunk:
                raise ChatError(f"error in stream: {json.dumps(chunk['error'])[:200]}")
            if ttft is None and any((c.get("delta") or {}).get("content") for c in chunk.get("choices") or ()):
                ttft = (time.perf_counter() - start) * 1000
    raise ChatError("stream ended without data: [DONE]")
