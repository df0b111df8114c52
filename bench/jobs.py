"""One measured job through the whole system, one direct call to the backend, and a closed-loop runner.

Times are ``time.perf_counter`` differences in milliseconds, taken in this (client) process."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
from system import MODEL


@dataclass
class JobSample:
    """One thread. ``submit_ms``: POST /api/submit round trip (until the 202); ``seen_ms``: 202 → the
    result observed (SSE ``draft_presented``, or the first status poll showing ``draft1``);
    ``readmodel_ms``: 202 → ``GET /status?min_sequence=<draft_presented seq>`` answered with ``draft1``
    (SSE mode only; includes that request's round trip); ``backend_ms``: the job's ``latency_ms`` as the edge
    measured it (request to last byte of the model's answer); ``first_token_ms``: the edge's request → first
    streamed token; ``token_seen_ms``: 202 → first ``token`` SSE event (None when the job's tokens had all
    been published before the SSE subscription existed: tokens are live-only)."""

    ok: bool
    thread_id: str = ""
    submit_ms: float = 0.0
    seen_ms: float = 0.0
    readmodel_ms: float | None = None
    backend_ms: float = 0.0
    first_token_ms: float | None = None
    token_seen_ms: float | None = None
    messages: list[dict[str, Any]] | None = None
    max_tokens: int = 256
    stages: dict[str, float] = field(default_factory=dict)

    @property
    def overhead_ms(self) -> float:
        return self.seen_ms - self.backend_ms

    @property
    def readmodel_overhead_ms(self) -> float | None:
        return None if self.readmodel_ms is None else self.readmodel_ms - self.backend_ms

    @property
    def e2e_ms(self) -> float:
        return self.submit_ms + self.seen_ms


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000


async def _submit(client: httpx.AsyncClient, idea: str) -> tuple[str, float, float, float]:
    """POST the idea; returns (thread id, round trip ms, perf_counter at the 202, wall-clock s at the 202)."""
    start = time.perf_counter()
    response = await client.post("/api/submit", json={"idea": idea, "channel": "api"})
    accepted, accepted_wall = time.perf_counter(), time.time()
    if response.status_code != 202:
        raise RuntimeError(f"submit {response.status_code}: {response.text[:200]}")
    return response.json()["data"]["thread_id"], (accepted - start) * 1000, accepted, accepted_wall


# Where a draft-1 job's time goes: consecutive points (event type, or the client's own clock) whose
# differences name the stage. Event times are each event's ``occurred_at`` (set by the emitting service);
# all processes share this machine's wall clock.
STAGES = (
    ("accepted", "thread_opened", "gw202_to_opened"),
    ("thread_opened", "job_queued", "orch_queue_job"),
    ("job_queued", "backend_selected", "router_select"),
    ("backend_selected", "execution_started", "exec_to_edge_start"),
    ("execution_started", "execution_completed", "edge_run"),
    ("execution_completed", "draft_presented", "orch_present"),
    ("draft_presented", "sse_arrival", "log_to_client_sse"),
)


def _stages(stamps: dict[str, float]) -> dict[str, float]:
    """Stage name → ms between its two points, for the points present."""
    return {name: (stamps[b] - stamps[a]) * 1000 for a, b, name in STAGES if a in stamps and b in stamps}


async def _sse_blocks(response: httpx.Response):
    """(event, id, data dict) per Server-Sent Event block; comments and pings skipped."""
    fields: dict[str, str] = {}
    async for line in response.aiter_lines():
        if line:
            name, _, value = line.partition(":")
            if name:
                fields[name] = value.removeprefix(" ")
            continue
        if "event" in fields and "data" in fields:
            yield fields["event"], fields.get("id"), json.loads(fields["data"])
        fields = {}


def _draft1_job(thread: dict[str, Any]) -> dict[str, Any]:
    return next(j for j in thread["jobs"] if j["kind"] == "draft1")


async def sse_job(client: httpx.AsyncClient, idea: str) -> JobSample:
    """Submit, follow ``/api/threads/{id}/events`` until ``draft_presented``, then one read-your-writes
    status request at that event's stream sequence (for the read model's visibility and ``latency_ms``)."""
    thread_id, submit_ms, accepted, accepted_wall = await _submit(client, idea)
    sample = JobSample(ok=False, thread_id=thread_id, submit_ms=submit_ms)
    sequence = None
    stamps = {"accepted": accepted_wall}
    async with client.stream("GET", f"/api/threads/{thread_id}/events") as response:
        async for event, event_id, data in _sse_blocks(response):
            if "occurred_at" in data:
                stamps[event] = datetime.fromisoformat(data["occurred_at"]).timestamp()
            if event == "token" and sample.token_seen_ms is None and not data.get("done"):
                sample.token_seen_ms = _ms(accepted)
            elif event == "job_queued":
                sample.messages, sample.max_tokens = data["messages"], data.get("max_tokens", 256)
            elif event == "execution_completed":
                sample.first_token_ms = data.get("first_token_ms")
            elif event == "draft_presented":
                sample.seen_ms, sequence = _ms(accepted), event_id
                stamps["sse_arrival"] = time.time()
                break
            elif event in {"job_failed", "thread_failed"}:
                raise RuntimeError(f"{event}: {data}")
    if sequence is None:
        raise RuntimeError("SSE ended without draft_presented")
    status = await client.get(f"/api/threads/{thread_id}/status", params={"min_sequence": sequence})
    thread = status.json()["data"]
    if not thread.get("draft1"):
        raise RuntimeError(f"read model lacks draft1 at sequence {sequence}")
    sample.readmodel_ms = _ms(accepted)
    sample.backend_ms = _draft1_job(thread)["latency_ms"]
    sample.stages = _stages(stamps)
    sample.ok = True
    return sample


async def thread_event_types(client: httpx.AsyncClient, thread_id: str) -> list[str]:
    """The thread's event types from the start of its log up to ``thread_completed``/``thread_failed``."""
    kinds: list[str] = []
    async with client.stream("GET", f"/api/threads/{thread_id}/events") as response:
        async for event, _, _ in _sse_blocks(response):
            if event != "token":
                kinds.append(event)
            if event in {"thread_completed", "thread_failed"}:
                break
    return kinds


async def poll_job(client: httpx.AsyncClient, idea: str, interval_s: float) -> JobSample:
    """Submit, then ``GET /status`` every ``interval_s`` until ``draft1`` is present (404 until the
    orchestrator's read model has the thread)."""
    thread_id, submit_ms, accepted, _ = await _submit(client, idea)
    while True:
        response = await client.get(f"/api/threads/{thread_id}/status")
        if response.status_code == 200:
            thread = response.json()["data"]
            if thread.get("draft1"):
                seen = _ms(accepted)
                job = _draft1_job(thread)
                return JobSample(
                    ok=True,
                    thread_id=thread_id,
                    submit_ms=submit_ms,
                    seen_ms=seen,
                    backend_ms=job["latency_ms"],
                    first_token_ms=job.get("first_token_ms"),
                )
            if thread["status"] == "failed":
                raise RuntimeError(f"thread failed: {thread}")
        elif response.status_code != 404:
            raise RuntimeError(f"status {response.status_code}: {response.text[:200]}")
        await asyncio.sleep(interval_s)


async def direct_call(
    client: httpx.AsyncClient, base_url: str, messages: list[dict[str, Any]], max_tokens: int
) -> float:
    """The edge's request (streaming chat completion with usage) straight to the backend; ms to ``[DONE]``."""
    start = time.perf_counter()
    body = {
        "model": MODEL,
        "messages": messages,
        "max_tokens": max_tokens,
        "temperature": 0.7,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    async with client.stream("POST", f"{base_url}/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if line.strip() == "data: [DONE]":
                return _ms(start)
    raise RuntimeError("stream ended without [DONE]")


def _describe(exc: Exception) -> str:
    """``Type: message`` plus the request for transport errors (whose message is often empty)."""
    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, httpx.RequestError):
        try:
            text += f" ({exc.request.method} {exc.request.url.path})"
        except RuntimeError:  # no request attached
            pass
    return text[:300]


async def closed_loop(
    n: int, concurrency: int, job: Callable[[int], Awaitable[Any]], timeout_s: float, duration_s: float | None = None
) -> tuple[list[Any], float]:
    """Run jobs 0..n-1 with ``concurrency`` workers, each starting its next job when the last ended; with
    ``duration_s``, instead keep starting jobs until that many seconds have passed (n is then ignored).
    Returns (results, or the exception text for a failed/timed-out job; wall seconds)."""
    indices = iter(range(n)) if duration_s is None else itertools.count()
    results: list[Any] = []
    stop_at = time.perf_counter() + duration_s if duration_s is not None else float("inf")

    async def worker() -> None:
        for i in indices:
            if time.perf_counter() >= stop_at:
                return
            try:
                results.append(await asyncio.wait_for(job(i), timeout_s))
            except Exception as exc:  # a failed job is a measured outcome, not a crash of the bench
                results.append(_describe(exc))

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return results, time.perf_counter() - start
