"""Request/reply with bad arguments: every NATS query responder answers an ``ErrorReply`` at once (instead of staying
silent until the asker's timeout), and the gateway refuses out-of-range dates and sequences with a 4xx and a code
before asking anyone. The orchestrator, the learner and the gateway run as real processes on a real NATS server,
over real HTTP."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import msgspec
import nats
import pytest
from procs import ServiceProcess, service_processes, start_ready

from hermes_proto import subjects
from hermes_proto.queries import MAX_SEQUENCE, QUERY_THREADS
from hermes_proto.rpc import answering

from hermes_cli.natsserver import free_port

QUICK_S = 1.0
"""A refusal comes well within the gateway's query timeout (HERMES_QUERY_TIMEOUT_SECONDS, 3 s by default)."""
IDS = {"thread_id": "t1", "job_id": "j1", "session_id": "s1", "q": "garden"}
"""Fields the queries require, so a payload fails on the one argument a case makes bad."""


@dataclass
class Stack:
    procs: dict[str, ServiceProcess]
    url: str


@pytest.fixture
async def stack(bus_env: dict[str, str], tmp_path: Path) -> AsyncIterator[Stack]:
    port = free_port()
    env = dict(bus_env, HERMES_WEB_HOST="127.0.0.1", HERMES_WEB_PORT=str(port), METRICS_PORT="0")
    procs = service_processes(env, tmp_path / "logs", ("orchestrator", "learner", "gateway"))
    try:
        await asyncio.gather(*(start_ready(p) for p in procs.values()))
        yield Stack(procs, f"http://127.0.0.1:{port}")
    finally:
        await asyncio.gather(*(asyncio.to_thread(p.stop) for p in procs.values()))


async def ask(nc, subject: str, payload: bytes) -> tuple[dict, float]:
    started = time.monotonic()
    reply = await nc.request(subject, payload, timeout=5)
    return msgspec.json.decode(reply.data), time.monotonic() - started


BAD_REQUESTS = [
    (subjects.QUERY_THREAD, {**IDS, "min_sequence": 2**64}),
    (subjects.QUERY_THREAD, {**IDS, "min_sequence": -1}),
    (subjects.QUERY_THREAD, {**IDS, "min_sequence": MAX_SEQUENCE + 1}),
    (subjects.QUERY_THREAD, b"not json"),
    (subjects.QUERY_JOB, {"thread_id": 5, "job_id": "j1"}),
    (QUERY_THREADS, b"[]"),
    (subjects.QUERY_SESSIONS, {"limit": 10**30}),
    (subjects.QUERY_SESSION, {**IDS, "min_sequence": 2**64}),
    (subjects.QUERY_MEMORY, {**IDS, "min_sequence": -5}),
    (subjects.QUERY_EXPORT, {"until": "9999-12-31"}),
    (subjects.QUERY_EXPORT, {"since": "0001-01-01"}),
    (subjects.QUERY_EXPORT, {"format": "dpo", "until": "2026-02-30"}),
    (subjects.QUERY_EXPORT, {"after": "9999-12-31T23:59:59|x"}),
    (subjects.QUERY_EXPORT, {"after": "2026-01-01T00:00:00|x"}),  # no time zone: no cursor of ours
    (subjects.CONTROL_SOUL, {"text": 7}),
    (subjects.CONTROL_CONFIG, {"key": "hermes.max_questions", "value": 10**30}),
    (subjects.QUERY_TEMPLATES, b"{"),
    (subjects.CONTROL_TEMPLATE, {"op": "nonsense"}),
    (subjects.QUERY_PREFERENCES, {"user_id": ["x"]}),
    (subjects.CONTROL_PREFERENCE, b"\xff\xfe"),
    (subjects.QUERY_PATTERNS, {"user_id": "has space"}),
    (subjects.QUERY_OPTIMIZATIONS, {**IDS, "min_sequence": 2**64}),
]


async def test_every_responder_answers_bad_arguments_with_an_error_at_once(stack: Stack) -> None:
    nc = await nats.connect(stack.procs["gateway"].env["NATS_URL"])
    try:
        for subject, payload in BAD_REQUESTS:
            data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            reply, took = await ask(nc, subject, data)
            assert reply.get("error") is True and reply["code"] == "bad_request", (subject, payload, reply)
            assert took < QUICK_S, f"{subject} {payload!r} answered after {took:.2f} s"
        # Both services keep serving.
        health, _ = await ask(nc, subjects.QUERY_HEALTH, b"")
        templates, _ = await ask(nc, subjects.QUERY_TEMPLATES, b"{}")
        assert health["status"] == "ok" and templates["templates"]
        assert all(p.alive() for p in stack.procs.values())
    finally:
        await nc.close()


def error_code(response: httpx.Response) -> str:
    return response.json()["error"]["code"]


async def test_the_gateway_refuses_out_of_range_dates_and_sequences_quickly(stack: Stack) -> None:
    cases = [
        ("GET", "/api/export/sft?until=9999-12-31", {}, 400, "invalid_date"),
        ("GET", "/api/export/dpo?since=1999-12-31", {}, 400, "invalid_date"),
        ("GET", "/api/export/sft?since=2026-02-30", {}, 400, "invalid_date"),
        ("GET", "/api/threads/t1/events", {"Last-Event-ID": str(2**64)}, 400, "invalid_last_event_id"),
        ("GET", "/api/threads/t1/events", {"Last-Event-ID": str(2**63)}, 400, "invalid_last_event_id"),
        ("GET", "/api/threads/t1/events", {"Last-Event-ID": "-1"}, 400, "invalid_last_event_id"),
        ("GET", "/api/threads/t1/events", {"Last-Event-ID": "12abc"}, 400, "invalid_last_event_id"),
        ("GET", f"/api/threads/t1/status?min_sequence={2**64}", {}, 422, "validation_failed"),
        ("GET", f"/api/system/dead-letters?before={2**63}", {}, 422, "validation_failed"),
    ]
    async with httpx.AsyncClient(base_url=stack.url, timeout=10) as http:
        for method, path, headers, status, code in cases:
            started = time.monotonic()
            response = await http.request(method, path, headers=headers)
            took = time.monotonic() - started
            assert (response.status_code, error_code(response)) == (status, code), (path, response.text)
            assert took < QUICK_S, f"{path} took {took:.2f} s"
        # Everything still serves, and the bounds themselves are accepted.
        ok = await http.get("/api/export/sft?since=2000-01-01&until=2999-12-31")
        assert ok.status_code == 200 and ok.text == ""
        async with http.stream("GET", "/api/threads/t1/events", headers={"Last-Event-ID": str(2**63 - 1)}) as sse:
            assert sse.status_code == 200  # a thread that may yet appear: the stream opens
        assert (await http.get("/api/system/health")).status_code == 200


async def test_a_responder_that_raises_still_answers(nats_server) -> None:
    """:func:`hermes_proto.rpc.answering` on a real NATS server: an exception from the request's arguments is
    ``bad_request``, any other ``internal`` (naming only its type); a message without a reply subject is dropped."""

    async def overflow(msg) -> None:
        raise OverflowError("date value out of range")

    async def broken(msg) -> None:
        raise RuntimeError("secret internals")

    nc = await nats.connect(nats_server.url)
    try:
        await nc.subscribe("test.overflow", cb=answering("test", overflow))
        await nc.subscribe("test.broken", cb=answering("test", broken))
        await nc.publish("test.broken", b"")  # nobody to answer: nothing breaks
        bad, took = await ask(nc, "test.overflow", b"")
        assert (bad["code"], bad["message"], took < QUICK_S) == ("bad_request", "date value out of range", True)
        internal, _ = await ask(nc, "test.broken", b"")
        assert internal["code"] == "internal" and "secret" not in internal["message"]
        assert "RuntimeError" in internal["message"]
    finally:
        await nc.close()
