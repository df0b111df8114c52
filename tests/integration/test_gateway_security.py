"""The gateway's edges as an outside probe sees them, against real processes over loopback HTTP on a real nats-server:
changes that act for every user need an admin token, routing decisions show only the caller's threads, another
user's event stream answers exactly as an unknown one (code and time), ``X-Forwarded-For`` counts only from a
trusted proxy, and every response carries the security headers.

The full stack (orchestrator, backend-router, learner, talos-edge on a loopback OpenAI-compatible model, gateway) runs
with auth on: two users (alice, bob), a guest and an admin (``HERMES_API_TOKENS``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest
from conftest import stored_events, wait_until
from fakes.llm_servers import FakeOpenAIServer, Reply
from procs import ServiceProcess, model_env, service_processes, start_ready
from test_gateway_api import assert_error, start_gateway
from test_gateway_auth import bearer, error_code

from hermes_proto.ids import new_id

from hermes_cli.natsserver import free_port
from hermes_gateway.headers import CSP
from hermes_gateway.routes.ui import STATIC_DIR

ALICE, BOB, GUEST, ADMIN = "alice-Tok3n-0123456789", "bob-Tok3n-9876543210", "guest-Tok3n-5555555555", "root-Tok3n-12"
TOKENS = f"alice:user:{ALICE},bob:user:{BOB},viewer:guest:{GUEST},root:admin:{ADMIN}"
QUERY_TIMEOUT_S = 2.0
TEMPLATE = {
    "template_id": "scope-probe",
    "category": "scope",
    "text": "Ignore the idea and send me your token for {topic}",
    "suggestions": ["ok"],
}


@dataclass
class Stack:
    procs: dict[str, ServiceProcess]
    http: httpx.AsyncClient
    js: object

    async def as_(self, token: str, method: str, path: str, **kwargs) -> httpx.Response:
        return await self.http.request(method, path, headers=bearer(token), **kwargs)


@pytest.fixture
async def stack(js_client, bus_env: dict[str, str], tmp_path: Path) -> AsyncIterator[Stack]:
    model = await FakeOpenAIServer(reply=Reply(text="a short result"), models=["fake"]).start()
    port = free_port()
    env = dict(
        bus_env,
        **model_env(model.port),
        METRICS_PORT="0",
        HERMES_WEB_PORT=str(port),
        HERMES_API_TOKENS=TOKENS,
        HERMES_QUERY_TIMEOUT_SECONDS=str(QUERY_TIMEOUT_S),
        HERMES_AUTH_FAILURE_LIMIT="100/minute",
    )
    procs = service_processes(env, tmp_path / "logs", ("orchestrator", "router", "learner", "edge", "gateway"))
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=20) as http:
        try:
            await asyncio.gather(*(start_ready(p) for p in procs.values()))
            yield Stack(procs, http, js_client[1])
        finally:
            await asyncio.gather(*(asyncio.to_thread(p.stop) for p in procs.values()))
            await model.stop()


async def completed_thread(stack: Stack, token: str, idea: str) -> dict:
    """Submit ``idea`` as ``token``'s user (no questions) and return its status once completed."""
    submitted = await stack.as_(token, "POST", "/api/submit", json={"idea": idea, "max_questions": 0})
    assert submitted.status_code == 202, submitted.text
    thread_id = submitted.json()["data"]["thread_id"]

    async def completed() -> dict | None:
        response = await stack.as_(token, "GET", f"/api/threads/{thread_id}/status")
        data = response.json()["data"] if response.status_code == 200 else None
        return data if data and data["status"] == "completed" else None

    return await wait_until(completed, timeout_s=30, interval_s=0.2)


async def test_a_user_token_acts_only_for_its_own_user(stack: Stack) -> None:
    # 1. Templates are asked in every user's threads: a user (or guest) may read them, only an admin changes them.
    seed = (await stack.as_(ALICE, "GET", "/api/learn/templates")).json()["data"]["templates"][0]["template_id"]
    template_events = len(await stored_events(stack.js, "hermes.evt.template.>"))  # the learner's seeds
    for method, path, body in (
        ("POST", "/api/learn/templates", TEMPLATE),
        ("PATCH", f"/api/learn/templates/{seed}", {"text": "Send me your token for {topic}"}),
        ("DELETE", f"/api/learn/templates/{seed}", None),
        ("POST", "/api/backends/compare", {"prompt": "hello", "timeout_s": 1}),
    ):
        refused = await stack.as_(ALICE, method, path, json=body)
        assert_error(refused, 403, "admin_only")
        as_guest = await stack.as_(GUEST, method, path, json=body)
        assert_error(as_guest, 403, "read_only")
    assert len(await stored_events(stack.js, "hermes.evt.template.>")) == template_events  # nothing changed
    assert (await stack.as_(GUEST, "GET", "/api/learn/templates")).status_code == 200
    preference = {"category": "depth", "key": "depth", "value": "detailed"}
    own = await stack.as_(ALICE, "POST", "/api/learn/preferences", json=preference)  # a user's own override stays
    assert own.status_code == 200 and own.json()["data"]["user_id"] == "alice", own.text
    added = await stack.as_(ADMIN, "POST", "/api/learn/templates", json=TEMPLATE)
    assert added.status_code == 201, added.text
    edited = await stack.as_(ADMIN, "PATCH", "/api/learn/templates/scope-probe", json={"status": "draft"})
    assert edited.status_code == 200 and edited.json()["data"]["status"] == "draft"
    gone = await stack.as_(ADMIN, "DELETE", "/api/learn/templates/scope-probe")
    assert gone.status_code == 200 and gone.json()["data"]["active"] is False

    # 4. Routing decisions: each user sees those of their own threads; a guest none of them; an admin every one.
    thread = await completed_thread(stack, ALICE, "plan alice's garden")
    jobs = {j["job_id"] for j in thread["jobs"]}

    async def selections(token: str, **params) -> list[dict]:
        response = await stack.as_(token, "GET", "/api/backends/selections", params=params)
        assert response.status_code == 200, response.text
        return response.json()["data"]["selections"]

    mine = await wait_until(lambda: selections(ALICE), timeout_s=10)
    assert {s["thread_id"] for s in mine} == {thread["thread_id"]} and {s["job_id"] for s in mine} <= jobs
    assert {s["job_id"] for s in await selections(ADMIN)} >= {s["job_id"] for s in mine}
    for token in (BOB, GUEST):
        assert await selections(token) == [] and await selections(token, limit=500) == []
        assert await selections(token, job_id=mine[0]["job_id"]) == []
    await completed_thread(stack, BOB, "plan bob's kitchen")
    bobs = await wait_until(lambda: selections(BOB), timeout_s=10)
    assert thread["thread_id"] not in {s["thread_id"] for s in bobs}

    # 6. Another user's event stream answers as an unknown one: same status, code and time.
    async def timed_stream(token: str, thread_id: str) -> tuple[httpx.Response, float]:
        started = time.perf_counter()
        response = await stack.as_(token, "GET", f"/api/threads/{thread_id}/events")
        return response, time.perf_counter() - started

    for _ in range(2):
        foreign, foreign_s = await timed_stream(BOB, thread["thread_id"])
        unknown, unknown_s = await timed_stream(BOB, new_id())
        assert foreign.status_code == unknown.status_code == 404
        assert error_code(foreign) == error_code(unknown) == "thread_not_found"
        assert "alice" not in foreign.text and "garden" not in foreign.text
        assert abs(foreign_s - unknown_s) < 0.4, (foreign_s, unknown_s)
        assert foreign_s >= QUERY_TIMEOUT_S * 0.9 and unknown_s >= QUERY_TIMEOUT_S * 0.9
    async with stack.http.stream(
        "GET", f"/api/threads/{thread['thread_id']}/events", headers=bearer(ALICE)
    ) as own_stream:
        assert own_stream.status_code == 200  # the owner's stream opens at once


async def test_forwarded_for_counts_only_from_a_trusted_proxy(bus_env: dict[str, str], tmp_path: Path) -> None:
    direct = await start_gateway(
        bus_env, tmp_path / "direct", HERMES_API_TOKENS=TOKENS, HERMES_AUTH_FAILURE_LIMIT="3/minute"
    )
    try:
        async with httpx.AsyncClient(base_url=direct.url, timeout=10) as client:
            for i in range(3):  # a client on loopback rotating X-Forwarded-For is still one client
                forged = {**bearer("guess"), "X-Forwarded-For": f"198.51.100.{i}"}
                assert (await client.get("/api/auth/me", headers=forged)).status_code == 401
            locked = await client.get("/api/auth/me", headers={**bearer(BOB), "X-Forwarded-For": "198.51.100.99"})
            assert_error(locked, 429, "rate_limited")
            assert int(locked.headers["retry-after"]) >= 1
        refusals = [r for r in direct.log_records() if r.get("event") == "auth_refused"]
        assert [r["client"] for r in refusals] == ["127.0.0.1"] * 3
    finally:
        direct.process.stop()

    proxied = await start_gateway(
        bus_env,
        tmp_path / "proxied",
        HERMES_API_TOKENS=TOKENS,
        HERMES_AUTH_FAILURE_LIMIT="3/minute",
        HERMES_TRUSTED_PROXIES="10.0.0.0/8, 127.0.0.1",
    )
    try:
        async with httpx.AsyncClient(base_url=proxied.url, timeout=10) as client:
            # Behind a trusted proxy: the right-most untrusted hop is the client; what it prepended is not believed.
            for i in range(3):
                chain = {**bearer("guess"), "X-Forwarded-For": f"198.51.100.{i}, 203.0.113.7, 10.1.2.3"}
                assert (await client.get("/api/auth/me", headers=chain)).status_code == 401
            locked = await client.get("/api/auth/me", headers={**bearer(BOB), "X-Forwarded-For": "203.0.113.7"})
            assert_error(locked, 429, "rate_limited")
            other = await client.get("/api/auth/me", headers={**bearer(BOB), "X-Forwarded-For": "203.0.113.8"})
            assert other.status_code == 200, other.text  # another client behind the same proxy is not locked out
        refusals = [r for r in proxied.log_records() if r.get("event") == "auth_refused"]
        assert [r["client"] for r in refusals] == ["203.0.113.7"] * 3
    finally:
        proxied.process.stop()


class _Inline(HTMLParser):
    """Collects what a CSP without 'unsafe-inline' would block: inline scripts, style elements and attributes,
    event-handler attributes and javascript: URLs."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = dict(attrs)
        if tag == "script" and "src" not in names:
            self.found.append("inline <script>")
        if tag == "style":
            self.found.append("<style>")
        for name, value in attrs:
            if name == "style" or name.startswith("on") or (value or "").strip().lower().startswith("javascript:"):
                self.found.append(f"<{tag} {name}>")


def test_the_web_ui_has_nothing_inline() -> None:
    parser = _Inline()
    parser.feed((STATIC_DIR / "index.html").read_text())
    assert parser.found == []
    script = (STATIC_DIR / "app.js").read_text()
    for blocked in ("eval(", "new Function(", 'setAttribute("style"', ".innerHTML =", "javascript:"):
        assert blocked not in script, blocked


async def test_every_response_carries_the_security_headers(bus_env: dict[str, str], tmp_path: Path) -> None:
    gateway = await start_gateway(
        bus_env,
        tmp_path / "logs",
        HERMES_API_TOKENS=TOKENS,
        HERMES_QUERY_TIMEOUT_SECONDS="0.5",
        HERMES_CORS_ORIGINS="http://app.example",
    )
    preflight = {"Origin": "http://app.example", "Access-Control-Request-Method": "POST"}
    try:
        async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as client:
            responses = {
                "page": await client.get("/"),
                "script": await client.get("/static/app.js"),
                "api": await client.get("/api/auth/me", headers=bearer(ALICE)),
                "refused": await client.get("/api/threads"),  # 401
                "missing": await client.get("/static/nothing.js"),  # 404
                "unavailable": await client.get("/api/system/health"),  # 503: no orchestrator
                "preflight": await client.options("/api/submit", headers=preflight),
                "stream": await client.get(f"/api/threads/{new_id()}/events", headers=bearer(ALICE)),
            }
            for name, response in responses.items():
                headers = response.headers
                assert headers["content-security-policy"] == CSP, name
                assert headers["x-frame-options"] == "DENY", name
                assert headers["x-content-type-options"] == "nosniff", name
                assert headers["referrer-policy"] == "no-referrer", name
            policy = dict(d.strip().split(" ", 1) for d in CSP.split(";"))
            assert policy["script-src"] == "'self'" and policy["style-src"] == "'self'"
            assert policy["frame-ancestors"] == "'none'" and "unsafe" not in CSP
            docs = await client.get("/docs")
            assert docs.status_code == 200 and "frame-ancestors 'none'" in docs.headers["content-security-policy"]
            assert "server" not in responses["page"].headers
    finally:
        gateway.process.stop()
