# ruff: noqa: F811  (fixtures imported from test_gateway_api are requested by name)
"""The gateway's backend routes (``/api/backends``) and ``hermes backends`` over real HTTP, against the real
backend-router process on a real NATS server; comparisons run on one real talos-edge process whose model
server is a loopback OpenAI-compatible fake (an outside service speaking the real wire protocol).

The router knows two backends: ``talos`` (local, free) and ``remote`` (paid, 100 cents per million tokens;
no edge ever serves it, so its work waits in the queue and a comparison including it times out).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import msgspec
import pytest
from conftest import thread_events, wait_until
from fakes.edge_beats import EdgeBeats
from fakes.llm_servers import FakeOpenAIServer, Reply
from procs import ServiceProcess
from test_cli_client import run_hermes
from test_gateway_api import Gateway, assert_error, commands_published, http, read_commands, start_gateway  # noqa: F401

from hermes_proto import subjects
from hermes_proto.base import ChatMessage
from hermes_proto.bus import EventStore
from hermes_proto.codec import decode_event, encode
from hermes_proto.commands import SubmitIdea
from hermes_proto.events import BackendDisabled, BackendSelected, JobQueued
from hermes_proto.ids import new_id, utcnow
from hermes_proto.queries import BackendsQuery, BackendsReply

from hermes_cli.natsserver import free_port

CRITERIA = {"quality_first", "speed_first", "cost_first"}
TALOS_TEXT = "Hello from talos, the local model."
QUERY_TIMEOUT_S = "2"  # below a comparison's 3 s: its reply must come in on the comparison's own timeout


@dataclass
class Stack:
    router: ServiceProcess
    gateway: Gateway

    @property
    def url(self) -> str:
        return self.gateway.url


async def start_router(bus_env: dict[str, str], log_dir: Path) -> ServiceProcess:
    env = dict(
        bus_env,
        HERMES_BACKENDS_ENABLED="talos,remote",
        BACKEND_TALOS_MODELS="m1",
        BACKEND_REMOTE_TYPE="openai",
        BACKEND_REMOTE_HOST="127.0.0.1",
        BACKEND_REMOTE_PORT=str(free_port()),
        BACKEND_REMOTE_COST_PER_MTOK_CENTS="100",
        METRICS_PORT="0",
    )
    router = ServiceProcess("router", "hermes_router", env, log_dir).start()

    def started() -> bool:
        assert router.alive(), router.log_text()
        return "router_started" in router.log_text()

    await wait_until(started, timeout_s=30)
    return router


@pytest.fixture
async def stack(bus_env: dict[str, str], tmp_path: Path) -> AsyncIterator[Stack]:
    """The router and the gateway (started side by side), ready to answer."""
    log_dir = tmp_path / "logs"
    gateway_starting = asyncio.create_task(
        start_gateway(bus_env, log_dir, HERMES_QUERY_TIMEOUT_SECONDS=QUERY_TIMEOUT_S)
    )
    try:
        router = await start_router(bus_env, log_dir)
    except BaseException:
        (await gateway_starting).process.stop()
        raise
    gw = await gateway_starting
    try:
        yield Stack(router, gw)
    finally:
        await asyncio.gather(asyncio.to_thread(gw.process.stop), asyncio.to_thread(router.stop))


@pytest.fixture
async def talos_model() -> AsyncIterator[FakeOpenAIServer]:
    server = FakeOpenAIServer(reply=Reply(text=TALOS_TEXT, prompt_tokens=7), models=["m1"])
    yield await server.start()
    await server.stop()


@pytest.fixture
async def talos_edge(
    bus_env: dict[str, str], tmp_path: Path, talos_model: FakeOpenAIServer
) -> AsyncIterator[ServiceProcess]:
    """One real edge serving ``talos`` with the fake model server; half-second heartbeats."""
    env = dict(
        bus_env,
        HERMES_EDGE_BACKEND="talos",
        BACKEND_TALOS_TYPE="openai",
        BACKEND_TALOS_HOST="127.0.0.1",
        BACKEND_TALOS_PORT=str(talos_model.port),
        BACKEND_TALOS_MODELS="m1",
        METRICS_PORT="0",
        HERMES_EDGE_HEARTBEAT_S="0.5",
    )
    edge = ServiceProcess("edge-talos", "hermes_edge", env, tmp_path / "logs").start()
    yield edge
    await asyncio.to_thread(edge.stop)  # not blocking the loop: the fake model server keeps answering


@pytest.fixture
async def talos_beats(js_client) -> AsyncIterator[EdgeBeats]:
    """A live talos edge on the bus (heartbeats, probe replies) that runs nothing: dispatched jobs stay queued."""
    async with EdgeBeats(js_client[0], ["talos"], models=["m1"]) as beats:
        yield beats


@pytest.fixture
async def remote_beats(js_client) -> AsyncIterator[EdgeBeats]:
    """A live remote edge on the bus that runs nothing."""
    async with EdgeBeats(js_client[0], ["remote"], models=[]) as beats:
        yield beats


async def listing(stack: Stack, http: httpx.AsyncClient) -> dict:
    response = await http.get(f"{stack.url}/api/backends")
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "success"
    return response.json()["data"]


def by_name(data: dict) -> dict[str, dict]:
    return {b["name"]: b for b in data["backends"]}


async def ask_router(nc) -> BackendsReply:
    """The router's own answer (the source of truth for what the gateway shows)."""
    reply = await nc.request(subjects.QUERY_BACKENDS, encode(BackendsQuery()), timeout=5)
    return msgspec.json.decode(reply.data, type=BackendsReply)


async def queue_job(js, **fields) -> JobQueued:
    """A ``JobQueued`` as the orchestrator appends it, for a new thread."""
    job = JobQueued(
        event_id=new_id(),
        aggregate_id=new_id(),
        occurred_at=utcnow(),
        correlation_id=new_id(),
        job_id=new_id(),
        kind="draft1",
        messages=[ChatMessage(role="user", content="plan a garden")],
        **fields,
    )
    await EventStore(js, "test").append([job])
    return job


# --------------------------------------------------------------------------- list, enable, disable


async def test_the_list_shows_both_backends_with_scores_budget_and_runtime_toggles(
    stack: Stack, http, js_client
) -> None:
    nc, js = js_client
    data = await listing(stack, http)
    backends = by_name(data)
    assert set(backends) == {"talos", "remote"}
    talos, remote = backends["talos"], backends["remote"]
    assert (talos["type"], talos["local"], talos["models"], talos["max_concurrent"]) == ("openai", True, ["m1"], 1)
    assert (remote["type"], remote["local"], remote["price_in_cents_per_mtok"]) == ("openai", False, 100.0)
    for backend in (talos, remote):
        assert set(backend["scores"]) == CRITERIA
        assert all(0 <= s <= 1 for s in backend["scores"].values())
        assert (backend["enabled"], backend["in_flight"], backend["spend_today_cents"]) == (True, 0, 0.0)
        assert backend["health"] in ("unknown", "no_edge")  # no edge answers for either
    assert talos["scores"]["cost_first"] > remote["scores"]["cost_first"]  # free beats 100 cents per Mtok
    assert data["budget"]["day"] == datetime.now(UTC).date().isoformat()
    assert data["budget"]["spent_today_cents"] == 0 and data["queued_jobs"] == 0
    truth = await ask_router(nc)
    assert {b.name: b.scores for b in truth.backends} == {n: b["scores"] for n, b in backends.items()}

    response = await http.post(f"{stack.url}/api/backends/talos/disable", json={"reason": "maintenance"})
    assert response.status_code == 200, response.text
    assert {n: b["enabled"] for n, b in by_name(response.json()["data"]).items()} == {"talos": False, "remote": True}
    assert by_name(await listing(stack, http))["talos"]["enabled"] is False  # a second read sees it too
    disabled = decode_event(
        (await js.get_last_msg(subjects.EVENTS_STREAM, "hermes.evt.backend.talos.backend_disabled")).data
    )
    assert isinstance(disabled, BackendDisabled) and disabled.reason == "maintenance"

    response = await http.post(f"{stack.url}/api/backends/TALOS/enable")  # no body; names are case-insensitive
    assert response.status_code == 200, response.text
    assert by_name(response.json()["data"])["talos"]["enabled"] is True
    assert by_name(await listing(stack, http))["talos"]["enabled"] is True
    assert [b.enabled for b in (await ask_router(nc)).backends] == [True, True]

    body = assert_error(
        await http.post(f"{stack.url}/api/backends/nope/disable", json={"reason": "x"}), 404, "unknown_backend"
    )
    assert "talos" in body["error"]["message"] and "remote" in body["error"]["message"]
    assert_error(await http.post(f"{stack.url}/api/backends/nope/enable"), 404, "unknown_backend")
    assert_error(await http.post(f"{stack.url}/api/backends/a.b/enable"), 400, "invalid_id")
    assert_error(
        await http.post(f"{stack.url}/api/backends/talos/disable", json={"reason": 5}), 422, "validation_failed"
    )
    assert by_name(await listing(stack, http))["talos"]["enabled"] is True  # none of those changed anything


# --------------------------------------------------------------------------- selections


async def test_selections_show_every_candidate_and_why_it_lost(
    stack: Stack, http, js_client, talos_beats: EdgeBeats
) -> None:
    _, js = js_client

    async def talos_healthy() -> bool:
        return by_name(await listing(stack, http))["talos"]["health"] == "healthy"

    await wait_until(talos_healthy, timeout_s=15)
    job = await queue_job(js, private=True)  # remote is not local: it must lose with that reason

    async def selected() -> BackendSelected | None:
        found = [e for e in await thread_events(js, job.aggregate_id) if isinstance(e, BackendSelected)]
        return found[0] if found else None

    event = await wait_until(selected, timeout_s=15)

    async def recorded() -> list[dict] | None:  # the router's read model applies its own event just after
        response = await http.get(f"{stack.url}/api/backends/selections", params={"job_id": job.job_id})
        assert response.status_code == 200, response.text
        return response.json()["data"]["selections"] or None

    [selection] = await wait_until(recorded)
    assert (selection["job_id"], selection["thread_id"], selection["attempt"]) == (job.job_id, job.aggregate_id, 1)
    assert selection["backend"] == event.backend == "talos"
    assert (selection["model"], selection["reason"], selection["strategy"]) == (
        event.model,
        event.reason,
        event.strategy,
    )
    candidates = {c["backend"]: c for c in selection["candidates"]}
    assert set(candidates) == {"talos", "remote"}
    assert candidates["talos"]["rejected"] is None
    assert candidates["remote"]["rejected"] == "private job: not a local backend"
    assert {c.backend: (c.score, c.rejected) for c in event.candidates} == {
        name: (c["score"], c["rejected"]) for name, c in candidates.items()
    }

    latest = await http.get(f"{stack.url}/api/backends/selections", params={"limit": 1})
    assert [s["job_id"] for s in latest.json()["data"]["selections"]] == [job.job_id]
    none = await http.get(f"{stack.url}/api/backends/selections", params={"job_id": new_id()})
    assert none.json()["data"]["selections"] == []
    assert by_name(await listing(stack, http))["talos"]["in_flight"] == 1  # dispatched; no edge runs it
    assert_error(await http.get(f"{stack.url}/api/backends/selections", params={"limit": 0}), 422, "validation_failed")
    assert_error(await http.get(f"{stack.url}/api/backends/selections", params={"job_id": "a.>"}), 400, "invalid_id")


# --------------------------------------------------------------------------- compare


BAD_COMPARES = [
    {"prompt": ""},
    {"prompt": "   \n "},
    {"prompt": "x" * 20_001},
    {"prompt": 7},
    {},
    {"prompt": "hi", "max_tokens": 0},
    {"prompt": "hi", "max_tokens": 4097},
    {"prompt": "hi", "max_tokens": "64"},
    {"prompt": "hi", "timeout_s": 0.5},
    {"prompt": "hi", "timeout_s": 601},
    {"prompt": "hi", "backends": "talos"},
    {"prompt": "hi", "backends": ["a.b"]},
]


async def test_compare_runs_one_prompt_on_each_backend(
    stack: Stack, talos_edge: ServiceProcess, talos_model: FakeOpenAIServer, http, js_client, remote_beats: EdgeBeats
) -> None:
    _, js = js_client

    async def healthy() -> bool:
        assert talos_edge.alive(), talos_edge.log_text()
        backends = by_name(await listing(stack, http))
        return backends["talos"]["health"] == backends["remote"]["health"] == "healthy"

    await wait_until(healthy, timeout_s=20)
    started = time.monotonic()
    response = await http.post(
        f"{stack.url}/api/backends/compare",
        json={"prompt": "  Say hello ", "backends": ["talos", "remote"], "max_tokens": 64, "timeout_s": 3},
    )
    took = time.monotonic() - started
    assert response.status_code == 200, response.text
    reply = response.json()["data"]
    assert reply["comparison_id"]
    talos, remote = reply["results"]
    assert (talos["backend"], talos["model"], talos["text"], talos["error_code"]) == ("talos", "m1", TALOS_TEXT, None)
    assert talos["prompt_tokens"] == 7 and talos["completion_tokens"] == len(Reply(text=TALOS_TEXT).split())
    assert talos["latency_ms"] > 0 and talos["cost_cents"] == 0.0
    [request] = talos_model.chat_requests()
    assert request.body["messages"][-1]["content"] == "Say hello" and request.body["max_tokens"] == 64
    # remote's edge is live but runs nothing: it waited out the comparison's 3 s (longer than the gateway's own
    # query timeout).
    assert (remote["backend"], remote["text"], remote["error_code"]) == ("remote", None, "timeout")
    assert remote["error"] and took >= 3

    exec_before = (await js.stream_info(subjects.EXEC_STREAM)).state.last_seq
    for body in BAD_COMPARES:
        assert_error(await http.post(f"{stack.url}/api/backends/compare", json=body), 422, "validation_failed")
    body = assert_error(
        await http.post(
            f"{stack.url}/api/backends/compare", json={"prompt": "hi", "backends": ["talos", "nope"], "timeout_s": 3}
        ),
        404,
        "unknown_backend",
    )
    assert "nope" in body["error"]["message"]
    assert (await js.stream_info(subjects.EXEC_STREAM)).state.last_seq == exec_before  # nothing was run
    assert len(talos_model.chat_requests()) == 1

    code, out, err = await run_hermes(
        "backends", "compare", "Say hello", "--backend", "talos", "--timeout", "10", url=stack.url
    )
    assert code == 0, err
    assert "talos · m1" in out and TALOS_TEXT in out
    assert len(talos_model.chat_requests()) == 2


# --------------------------------------------------------------------------- CLI


async def test_the_cli_lists_and_toggles_backends(stack: Stack, http) -> None:
    (code, out, err), (json_code, json_out, _), (unknown_code, _, unknown_err) = await asyncio.gather(
        run_hermes("backends", url=stack.url),
        run_hermes("backends", "--json", url=stack.url),
        run_hermes("backends", "enable", "nope", url=stack.url),
    )
    assert code == 0, err
    header, *rows = [line for line in out.splitlines() if line.strip()][:3]
    assert header.split() == ["NAME", "TYPE", "HEALTH", "ENABLED", "IN-FLIGHT", "SUCCESS", "SPEND", "TODAY"]
    assert {row.split()[0] for row in rows} == {"talos", "remote"}
    assert "Spent today" in out
    assert json_code == 0
    raw = json.loads(json_out)
    assert set(raw) == {"backends", "budget", "queued_jobs"}
    assert {b["name"]: b["scores"] for b in raw["backends"]} == {
        n: b["scores"] for n, b in by_name(await listing(stack, http)).items()
    }
    assert unknown_code == 1 and "unknown_backend" in unknown_err

    code, out, err = await run_hermes("backends", "disable", "remote", "--reason", "too dear", url=stack.url)
    assert code == 0, err
    assert "Backend remote disabled" in out
    assert by_name(await listing(stack, http))["remote"]["enabled"] is False
    _, out, _ = await run_hermes("backends", url=stack.url)
    [remote_row] = [line for line in out.splitlines() if line.startswith("remote")]
    assert remote_row.split()[3] == "no"

    code, out, err = await run_hermes("backends", "enable", "remote", url=stack.url)
    assert code == 0 and "Backend remote enabled" in out, err
    assert by_name(await listing(stack, http))["remote"]["enabled"] is True


# --------------------------------------------------------------------------- without a router


async def test_backend_routes_answer_503_without_a_router_and_are_described(bus_env, tmp_path, http) -> None:
    gw = await start_gateway(bus_env, tmp_path / "logs")
    try:
        body = assert_error(await http.get(f"{gw.url}/api/backends"), 503, "bus_unavailable")
        assert "backend-router" in body["error"]["message"] and body["error"]["retry_after"] > 0
        assert_error(await http.get(f"{gw.url}/api/backends/selections"), 503, "bus_unavailable")
        assert_error(await http.post(f"{gw.url}/api/backends/talos/disable"), 503, "bus_unavailable")
        assert_error(
            await http.post(f"{gw.url}/api/backends/compare", json={"prompt": "hi", "timeout_s": 2}),
            503,
            "bus_unavailable",
        )

        spec = (await http.get(f"{gw.url}/openapi.json")).json()
        paths = spec["paths"]
        assert set(paths["/api/backends"]) == {"get"}
        assert set(paths["/api/backends/selections"]) == {"get"}
        for path in ("/api/backends/compare", "/api/backends/{name}/enable", "/api/backends/{name}/disable"):
            assert set(paths[path]) == {"post"}
            assert {"200", "404", "503"} <= set(paths[path]["post"]["responses"])
        listed = paths["/api/backends"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
        data = listed["properties"]["data"]
        assert set(data["properties"]) == {"backends", "budget", "queued_jobs"}
        assert {"health", "scores", "in_flight", "spend_today_cents"} <= set(
            data["properties"]["backends"]["items"]["properties"]
        )
        compare = spec["components"]["schemas"]["CompareBody"]["properties"]
        assert (compare["prompt"]["minLength"], compare["prompt"]["maxLength"]) == (1, 20_000)
        assert (compare["max_tokens"]["minimum"], compare["max_tokens"]["maximum"]) == (1, 4096)
        assert (compare["timeout_s"]["minimum"], compare["timeout_s"]["maximum"]) == (1, 600)
        assert "unknown_backend" in paths["/api/backends/{name}/enable"]["post"]["description"]
    finally:
        gw.process.stop()


# --------------------------------------------------------------------------- hermes submit options


async def test_submit_from_the_cli_carries_project_private_and_priority(bus_env, tmp_path, js_client) -> None:
    _, js = js_client
    gw = await start_gateway(bus_env, tmp_path / "logs")
    try:
        (code, out, err), (plain_code, _, _), (urgent_code, _, _), (bad_code, _, bad_err) = await asyncio.gather(
            run_hermes(
                "submit",
                "plan a garden",
                "--project",
                "garden-2",
                "--private",
                "--priority",
                "9",
                "--no-wait",
                url=gw.url,
            ),
            run_hermes("submit", "plain", "--no-wait", url=gw.url),
            run_hermes("submit", "too urgent", "--priority", "11", "--no-wait", url=gw.url),
            run_hermes("submit", "bad project", "--project", "a b", "--no-wait", url=gw.url),
        )
        assert (code, plain_code, urgent_code) == (0, 0, 2), err
        assert bad_code == 1 and "validation_failed" in bad_err
        assert await commands_published(js) == 2  # no orchestrator: both wait in the command queue
        commands = {c.idea: c for c, _ in await read_commands(js)}
        first, second = commands["plan a garden"], commands["plain"]
        assert isinstance(first, SubmitIdea) and f"Thread {first.thread_id}" in out
        assert (first.channel, first.project, first.private, first.priority) == ("cli", "garden-2", True, 9)
        assert (second.project, second.private, second.priority) == ("default", False, 5)
    finally:
        gw.process.stop()
