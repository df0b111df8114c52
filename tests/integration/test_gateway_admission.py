"""The queue cap reserves (``HERMES_MAX_QUEUED_JOBS``): the real gateway and the real orchestrator as processes on a
real nats-server, submissions over loopback HTTP. No backend-router runs, so every admitted job stays queued and
the cap is the only thing between a burst and the queue."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import msgspec
import pytest
from conftest import wait_until
from procs import ServiceProcess, service_processes, start_ready
from prometheus_client.parser import text_string_to_metric_families
from test_gateway_api import assert_error

from hermes_proto import subjects
from hermes_proto.queries import QueueReply

from hermes_cli.natsserver import free_port

CAP = 5
BURST = 40


@dataclass
class Stack:
    nc: object
    js: object
    procs: dict[str, ServiceProcess]
    http: httpx.AsyncClient

    async def submit(self, n: int) -> httpx.Response:
        return await self.http.post("/api/submit", json={"idea": f"idea number {n}", "max_questions": 0})

    async def open_jobs(self) -> int:
        msg = await self.nc.request(subjects.QUERY_QUEUE, b"{}", timeout=2)
        return msgspec.json.decode(msg.data, type=QueueReply).open_jobs

    async def commands_stored(self) -> int:
        return (await self.js.stream_info(subjects.COMMANDS_STREAM)).state.last_seq

    async def metric(self, name: str, **labels: str) -> float:
        text = (await self.http.get("/metrics")).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and sample.labels == labels:
                    return sample.value
        raise AssertionError(f"no {name}{labels}")


@pytest.fixture
async def stack(js_client, bus_env: dict[str, str], tmp_path: Path) -> AsyncIterator[Stack]:
    port = free_port()
    env = dict(
        bus_env,
        METRICS_PORT="0",
        HERMES_WEB_PORT=str(port),
        HERMES_MAX_QUEUED_JOBS=str(CAP),
        HERMES_QUEUE_FULL_RETRY_AFTER_SECONDS="7",
    )
    procs = service_processes(env, tmp_path / "logs", ("orchestrator", "gateway"))
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
        try:
            await asyncio.gather(*(start_ready(p) for p in procs.values()))
            yield Stack(js_client[0], js_client[1], procs, http)
        finally:
            await asyncio.gather(*(asyncio.to_thread(p.stop) for p in procs.values()))


async def test_a_burst_over_the_cap_admits_at_most_the_cap(stack: Stack) -> None:
    before = await stack.commands_stored()
    answers = await asyncio.gather(*(stack.submit(n) for n in range(BURST)))
    statuses = [a.status_code for a in answers]
    assert statuses.count(202) == CAP and statuses.count(429) == BURST - CAP, statuses
    for refused in (a for a in answers if a.status_code == 429):
        assert_error(refused, 429, "queue_full")
        assert refused.headers["retry-after"] == "7"
        assert refused.json()["error"]["details"]["queued"] >= CAP - 1
    assert await stack.commands_stored() == before + CAP  # nothing of a refused submission reached the bus
    await wait_until(lambda: _open_jobs_are(stack, CAP), timeout_s=15)

    # Once the orchestrator counts them, their reservations are gone and the count alone refuses.
    for body in ({"idea": "one more", "max_questions": 0}, None):
        path = "/api/submit" if body else "/api/workflows"
        refused = await stack.http.post(path, json=body or {"steps": [{"step_id": "a", "prompt": "x"}]})
        details = assert_error(refused, 429, "queue_full")["error"]["details"]
        assert details == {"queued": CAP, "limit": CAP, "retry_after": 7}
    assert await stack.metric("hermes_gateway_queue_reserved_jobs") == 0
    assert await stack.metric("hermes_gateway_submissions_refused_total", reason="queue_full") == BURST - CAP + 2


async def test_no_answer_from_the_orchestrator_refuses(stack: Stack) -> None:
    stack.procs["orchestrator"].stop()
    before = await stack.commands_stored()
    answers = await asyncio.gather(*(stack.submit(n) for n in range(5)))
    for answer in answers:
        assert_error(answer, 503, "queue_unknown")
        assert answer.headers["retry-after"] == "5"
    assert await stack.commands_stored() == before
    assert await stack.metric("hermes_gateway_submissions_refused_total", reason="queue_unknown") == 5

    await start_ready(stack.procs["orchestrator"])
    admitted = await wait_until(lambda: _admitted(stack), timeout_s=10, interval_s=0.3)
    assert admitted.json()["data"]["thread_id"]


async def _open_jobs_are(stack: Stack, n: int) -> bool:
    return await stack.open_jobs() == n


async def _admitted(stack: Stack) -> httpx.Response | None:
    response = await stack.submit(0)
    return response if response.status_code == 202 else None
