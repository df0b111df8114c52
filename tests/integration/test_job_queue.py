"""The durable job queue through the real bus: workflows as DAGs of dependent jobs, cancellation that reaches a
running model call, job timeouts, retries with exponential backoff and jitter, the queue cap (HTTP 429 and a
``queue_full`` event) and Talos downtime (jobs wait and then run in priority order).

The gateway, orchestrator, backend-router and talos-edge run as real processes against a real nats-server and
an OpenAI-compatible loopback model (tests/fakes/llm_servers.py), which records every call and every stream the
client hung up on."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import msgspec
import pytest
from conftest import stored_dead_letters, stored_events, thread_events, wait_until
from fakes.llm_servers import FakeOpenAIServer, Fault, Reply
from procs import ServiceProcess, model_env, service_processes, start_ready

from hermes_proto import subjects
from hermes_proto.ids import new_id
from hermes_proto.queries import QueueReply

from hermes_cli.natsserver import free_port
from hermes_orchestrator.domain import step_job_id
from hermes_router.domain import backoff_delay

FAILOVER_DELAY_S = 0.2
SLOW = Reply(chunks=[f"word{i} " for i in range(30)], chunk_delay_s=0.2)  # ~6 s per call


@dataclass
class Stack:
    nc: object
    js: object
    procs: dict[str, ServiceProcess]
    model: FakeOpenAIServer
    http: httpx.AsyncClient

    async def start(self, name: str) -> None:
        await start_ready(self.procs[name])

    async def events(self, thread_id: str) -> list:
        return await thread_events(self.js, thread_id)

    async def types(self, thread_id: str) -> list[str]:
        return [e.type_name() for e in await self.events(thread_id)]

    async def final(self, thread_id: str, timeout_s: float = 60) -> list:
        """The thread's events once it completed or failed."""

        async def ended():
            events = await self.events(thread_id)
            return events if any(e.type_name() in ("thread_completed", "thread_failed") for e in events) else None

        return await wait_until(ended, timeout_s=timeout_s, interval_s=0.2)

    async def submit(self, idea: str, **fields) -> str:
        reply = await self.http.post("/api/submit", json={"idea": idea, "max_questions": 0, **fields})
        assert reply.status_code == 202, reply.text
        return reply.json()["data"]["thread_id"]

    async def workflow(self, steps: list[dict], **fields) -> str:
        reply = await self.http.post("/api/workflows", json={"steps": steps, **fields})
        assert reply.status_code == 202, reply.text
        return reply.json()["data"]["thread_id"]


async def _stack(js_client, bus_env, tmp_path: Path, reply: Reply, **env: str) -> AsyncIterator[Stack]:
    nc, js = js_client
    model = await FakeOpenAIServer(reply=reply, models=["fake"]).start()
    port = free_port()
    full_env = dict(
        bus_env,
        **model_env(model.port),
        METRICS_PORT="0",
        HERMES_WEB_PORT=str(port),
        HERMES_MAX_QUESTIONS="0",
        HERMES_FAILOVER_DELAY_SECONDS=str(FAILOVER_DELAY_S),
        HERMES_EDGE_ACK_WAIT_S="3",
        HERMES_EDGE_HEARTBEAT_S="0.5",
        BACKEND_TALOS_HEALTH_CHECK_INTERVAL="1",
        HERMES_UNHEALTHY_THRESHOLD="2",
        **env,
    )
    procs = service_processes(full_env, tmp_path / "logs", ("orchestrator", "router", "edge", "gateway"))
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=15) as http:
        stack = Stack(nc, js, procs, model, http)
        try:
            await asyncio.gather(*(stack.start(name) for name in procs))
            yield stack
        finally:
            await asyncio.gather(*(asyncio.to_thread(p.stop) for p in procs.values()))
            await model.stop()


@pytest.fixture
async def stack(js_client, bus_env, tmp_path) -> AsyncIterator[Stack]:
    async for s in _stack(js_client, bus_env, tmp_path, Reply(text="a short result")):
        yield s


@pytest.fixture
async def slow_stack(js_client, bus_env, tmp_path) -> AsyncIterator[Stack]:
    async for s in _stack(js_client, bus_env, tmp_path, SLOW):
        yield s


def of(events: list, type_name: str) -> list:
    return [e for e in events if e.type_name() == type_name]


DIAMOND = [
    {"step_id": "outline", "prompt": "Outline a talk on soil health", "priority": 9},
    {"step_id": "intro", "prompt": "Write the introduction", "depends_on": ["outline"]},
    {"step_id": "body", "prompt": "Write the main part", "depends_on": ["outline"]},
    {"step_id": "close", "prompt": "Write the conclusion", "depends_on": ["intro", "body"]},
]


async def test_a_workflow_runs_each_step_after_its_dependencies_with_their_results(stack: Stack) -> None:
    thread_id = await stack.workflow(DIAMOND, title="soil talk")
    events = await stack.final(thread_id)
    completed = of(events, "thread_completed")
    assert [c.reason for c in completed] == ["workflow_completed"]
    started = {e.job_id: i for i, e in enumerate(events) if e.type_name() == "execution_started"}
    done = {e.job_id: i for i, e in enumerate(events) if e.type_name() == "execution_completed"}
    job = {s["step_id"]: step_job_id(thread_id, s["step_id"]) for s in DIAMOND}
    assert set(done) == set(job.values())
    for step in DIAMOND:
        for dep in step.get("depends_on", []):
            assert done[job[dep]] < started[job[step["step_id"]]], f"{step['step_id']} started before {dep} ended"
    # The last step's prompt carries the results of both steps it depends on.
    close_prompt = stack.model.chat_requests()[-1].body["messages"][-1]["content"]
    assert "Result of step intro" in close_prompt and "Result of step body" in close_prompt
    assert "a short result" in close_prompt and close_prompt.endswith("Write the conclusion")
    status = (await stack.http.get(f"/api/threads/{thread_id}/status")).json()["data"]
    assert status["kind"] == "workflow" and status["status"] == "completed"
    assert {s["step_id"]: s["status"] for s in status["steps"]} == {s["step_id"]: "completed" for s in DIAMOND}


async def test_a_cycle_is_refused_over_http_and_dead_lettered_on_the_bus(stack: Stack) -> None:
    cyclic = [
        {"step_id": "a", "prompt": "x", "depends_on": ["c"]},
        {"step_id": "b", "prompt": "y", "depends_on": ["a"]},
        {"step_id": "c", "prompt": "z", "depends_on": ["b"]},
        {"step_id": "d", "prompt": "free"},
    ]
    reply = await stack.http.post("/api/workflows", json={"steps": cyclic})
    assert reply.status_code == 400
    error = reply.json()["error"]
    assert error["code"] == "dependency_cycle" and "a, b, c" in error["message"]
    unknown = await stack.http.post(
        "/api/workflows", json={"steps": [{"step_id": "a", "prompt": "x", "depends_on": ["nope"]}]}
    )
    assert unknown.status_code == 400 and unknown.json()["error"]["code"] == "unknown_dependency"
    too_many = await stack.http.post(
        "/api/workflows", json={"steps": [{"step_id": f"s{i}", "prompt": "x"} for i in range(11)]}
    )
    assert too_many.status_code == 400 and too_many.json()["error"]["code"] == "too_many_steps"
    assert stack.model.chat_requests() == []
    # A producer publishing the same workflow on NATS gets a dead letter with the reason.
    body = {
        "type": "submit_workflow",
        "command_id": new_id(),
        "issued_at": "2026-11-23T10:00:00Z",
        "thread_id": new_id(),
        "steps": cyclic,
    }
    await stack.js.publish("hermes.cmd.submit_workflow", msgspec.json.encode(body))
    letters = await wait_until(lambda: stored_dead_letters(stack.js), timeout_s=20)
    assert letters[0].reason == "validation_failed" and "dependency_cycle" in letters[0].detail
    assert letters[0].subject == "hermes.cmd.submit_workflow"


async def test_a_failed_step_skips_its_dependents_and_independent_steps_still_run(stack: Stack) -> None:
    stack.model.set_fault(Fault.UNAUTHORIZED, times=1)  # the first call (outline, priority 9) fails for good
    steps = [*DIAMOND, {"step_id": "aside", "prompt": "List three soil facts", "priority": 1}]
    thread_id = await stack.workflow(steps)
    events = await stack.final(thread_id)
    failed = of(events, "thread_failed")
    assert [f.error_code for f in failed] == ["workflow_failed"]
    skipped = {e.step_id: e.reason for e in of(events, "job_skipped")}
    assert skipped == {"intro": "step outline failed", "body": "step outline failed", "close": "step intro skipped"}
    assert [e.job_id for e in of(events, "execution_completed")] == [step_job_id(thread_id, "aside")]
    assert len(stack.model.chat_requests()) == 2  # outline (refused) and aside: the skipped never ran


async def test_cancel_stops_the_running_model_call_at_the_edge(slow_stack: Stack) -> None:
    stack = slow_stack
    thread_id = await stack.submit("describe every planet in detail")
    started = await wait_until(lambda: _first(stack, thread_id, "execution_started"), timeout_s=30)
    await asyncio.sleep(0.6)  # a few chunks streamed
    reply = await stack.http.post(f"/api/threads/{thread_id}/jobs/{started.job_id}/cancel")
    assert reply.status_code == 202, reply.text
    events = await stack.final(thread_id, timeout_s=20)
    assert [(e.job_id, e.reason) for e in of(events, "job_cancelled")] == [(started.job_id, "user")]
    assert [f.error_code for f in of(events, "thread_failed")] == ["cancelled"]
    failed = await wait_until(lambda: _first(stack, thread_id, "execution_failed"), timeout_s=10)
    assert failed.error_code == "cancelled" and not failed.retryable
    assert failed.latency_ms < 5000  # stopped well before the ~6 s the full answer takes
    await wait_until(lambda: len(stack.model.aborted) == 1, timeout_s=10)  # the model server saw the hang-up
    assert of(await stack.events(thread_id), "execution_completed") == []

    async def job_status() -> str | None:
        reply = await stack.http.get(f"/api/threads/{thread_id}/status")
        jobs = reply.json()["data"]["jobs"] if reply.status_code == 200 else []
        return next((j["status"] for j in jobs if j["job_id"] == started.job_id and j["status"] == "cancelled"), None)

    await wait_until(job_status, timeout_s=10)  # the read model has caught up with the cancellation
    again = await stack.http.post(f"/api/threads/{thread_id}/jobs/{started.job_id}/cancel")
    assert again.status_code == 409 and again.json()["error"]["code"] == "job_not_cancellable"
    missing = await stack.http.post(f"/api/threads/{thread_id}/jobs/{new_id()}/cancel")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "job_not_found"


async def _first(stack: Stack, thread_id: str, type_name: str):
    found = of(await stack.events(thread_id), type_name)
    return found[0] if found else None


async def test_a_step_past_its_timeout_is_cancelled_and_fails(slow_stack: Stack) -> None:
    stack = slow_stack
    thread_id = await stack.workflow(
        [
            {"step_id": "long", "prompt": "write a novel", "timeout_s": 1.5},
            {"step_id": "after", "prompt": "summarise it", "depends_on": ["long"]},
        ]
    )
    events = await stack.final(thread_id, timeout_s=20)
    job_id = step_job_id(thread_id, "long")
    assert [(e.job_id, e.reason) for e in of(events, "job_cancelled")] == [(job_id, "timeout")]
    assert [(e.job_id, e.error_code) for e in of(events, "job_failed")] == [(job_id, "timeout")]
    assert [e.step_id for e in of(events, "job_skipped")] == ["after"]
    queued, cancelled = of(events, "job_queued")[0], of(events, "job_cancelled")[0]
    assert 1.5 <= (cancelled.occurred_at - queued.occurred_at).total_seconds() < 5
    await wait_until(lambda: len(stack.model.aborted) == 1, timeout_s=10)


async def test_retries_back_off_exponentially_with_jitter_up_to_max_retries(stack: Stack) -> None:
    stack.model.set_fault(Fault.SERVER_ERROR, times=2)
    thread_id = await stack.workflow([{"step_id": "flaky", "prompt": "try hard", "max_retries": 2}])
    events = await stack.final(thread_id)
    assert [c.reason for c in of(events, "thread_completed")] == ["workflow_completed"]
    job_id = step_job_id(thread_id, "flaky")
    failures, selections = of(events, "execution_failed"), of(events, "backend_selected")
    assert [s.attempt for s in selections] == [1, 2, 3] and len(failures) == 2
    for n, failure in enumerate(failures, start=1):
        gap = (selections[n].occurred_at - failure.occurred_at).total_seconds()
        expected = backoff_delay(job_id, n, FAILOVER_DELAY_S, 60.0)
        assert FAILOVER_DELAY_S * 2 ** (n - 1) / 2 <= expected <= FAILOVER_DELAY_S * 2 ** (n - 1)
        assert gap >= expected - 0.01, f"attempt {n + 1} came {gap:.3f} s after the failure, backoff {expected:.3f}"

    stack.model.set_fault(Fault.SERVER_ERROR, times=1)
    once = await stack.workflow([{"step_id": "fragile", "prompt": "no second chance", "max_retries": 0}])
    events = await stack.final(once)
    assert [e.error_code for e in of(events, "execution_abandoned")] == ["http_5xx"]
    assert len(of(events, "backend_selected")) == 1 and of(events, "thread_failed")


def test_backoff_grows_exponentially_is_jittered_and_capped() -> None:
    delays = [backoff_delay("job-1", n, 1.0, 30.0) for n in range(1, 9)]
    for n, delay in enumerate(delays, start=1):
        ceiling = min(30.0, 2.0 ** (n - 1))
        assert ceiling / 2 <= delay <= ceiling
    assert delays == [backoff_delay("job-1", n, 1.0, 30.0) for n in range(1, 9)]  # same after a restart
    spread = {round(backoff_delay(f"job-{i}", 3, 1.0, 30.0), 6) for i in range(50)}
    assert len(spread) > 40  # jobs failing together do not retry together


async def test_a_full_queue_refuses_with_429_and_records_queue_full(js_client, bus_env, tmp_path) -> None:
    async for stack in _stack(
        js_client, bus_env, tmp_path, SLOW, HERMES_MAX_QUEUED_JOBS="2", HERMES_QUEUE_FULL_RETRY_AFTER_SECONDS="7"
    ):
        first = await stack.submit("one")
        await stack.submit("two")
        await wait_until(lambda: _open_jobs(stack, 2), timeout_s=15)
        refused = await stack.http.post("/api/submit", json={"idea": "three", "max_questions": 0})
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == "7"
        error = refused.json()["error"]
        assert error["code"] == "queue_full" and error["details"] == {"queued": 2, "limit": 2, "retry_after": 7}
        two_steps = await stack.http.post("/api/workflows", json={"steps": [{"step_id": "a", "prompt": "x"}]})
        assert two_steps.status_code == 429
        refused = (await stack.http.get("/metrics")).text
        assert 'hermes_gateway_submissions_refused_total{reason="queue_full"} 2.0' in refused
        full = await stored_events(stack.js, "hermes.evt.system.queue.queue_full")
        assert len(full) == 1 and (full[0].queued, full[0].limit, full[0].retry_after_s) == (2, 2, 7.0)
        # Room again once a job ends (here: cancelled).
        job_id = (await stack.http.get(f"/api/threads/{first}/status")).json()["data"]["jobs"][0]["job_id"]
        assert (await stack.http.post(f"/api/threads/{first}/jobs/{job_id}/cancel")).status_code == 202
        await wait_until(lambda: _open_jobs(stack, 1), timeout_s=15)
        assert (await stack.http.post("/api/submit", json={"idea": "three", "max_questions": 0})).status_code == 202


async def _open_jobs(stack: Stack, n: int) -> bool:
    msg = await stack.nc.request(subjects.QUERY_QUEUE, b"{}", timeout=2)
    return msgspec.json.decode(msg.data, type=QueueReply).open_jobs == n


async def test_jobs_wait_while_talos_is_down_then_run_in_priority_order(stack: Stack) -> None:
    stack.procs["edge"].kill()
    await wait_until(lambda: _marked_unhealthy(stack.js), timeout_s=30)
    threads = {
        priority: await stack.submit(f"idea of priority {priority}", priority=priority) for priority in (2, 9, 5, 7)
    }
    await asyncio.sleep(3)  # down for a while: the jobs wait, none is abandoned
    for thread_id in threads.values():
        types = await stack.types(thread_id)
        assert "execution_abandoned" not in types and "backend_selected" not in types, types
        assert "job_deferred" in types
    await stack.start("edge")
    for thread_id in threads.values():
        completed = of(await stack.final(thread_id, timeout_s=60), "thread_completed")
        assert [c.reason for c in completed] == ["no_questions"]
    started = []
    for priority, tid in threads.items():
        started += [(e.occurred_at, priority) for e in of(await stack.events(tid), "execution_started")]
    started.sort()
    assert [priority for _, priority in started] == [9, 7, 5, 2]


async def _marked_unhealthy(js) -> bool:
    return bool(await stored_events(js, "hermes.evt.backend.talos.backend_marked_unhealthy"))


async def _hermes(stack: Stack, *args: str, stdin: str = "") -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "hermes_cli",
        *args,
        "--url",
        str(stack.http.base_url).rstrip("/"),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(stdin.encode()), timeout=30)
    return proc.returncode, out.decode()


async def test_the_cli_submits_a_workflow_shows_its_steps_and_cancels_it(slow_stack: Stack) -> None:
    stack = slow_stack
    spec = {
        "title": "two steps",
        "steps": [
            {"step_id": "draft", "prompt": "draft a poem"},
            {"step_id": "polish", "prompt": "polish it", "depends_on": ["draft"]},
        ],
    }
    code, out = await _hermes(stack, "workflow", "-", stdin=json.dumps(spec))
    assert code == 0, out
    thread_id = out.split("Workflow thread ", 1)[1].split(":", 1)[0]
    assert "steps draft, polish" in out
    await wait_until(lambda: _first(stack, thread_id, "execution_started"), timeout_s=30)
    code, out = await _hermes(stack, "cancel", thread_id)
    assert code == 0 and f"Cancelling job {step_job_id(thread_id, 'draft')}" in out, out
    await stack.final(thread_id, timeout_s=20)
    code, out = await _hermes(stack, "status", thread_id)
    assert code == 0, out
    assert "Step draft [cancelled: user]" in out and "Step polish (after draft) [skipped: step draft cancelled]" in out
    code, out = await _hermes(stack, "cancel", thread_id)
    assert code != 0 and "no open job" in out
