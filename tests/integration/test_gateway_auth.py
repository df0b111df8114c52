"""Auth and limits of the gateway, as a real ``python -m hermes_gateway`` over loopback HTTP on a real nats-server.

Where threads must exist, the real orchestrator runs as its own process (``python -m hermes_orchestrator``) and
consumes what the gateway publishes. Tokens (``HERMES_API_TOKENS``): two users, alice and bob, and a guest.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from conftest import wait_until
from procs import service_processes, start_ready
from pydantic import ValidationError
from test_gateway_api import start_gateway

from hermes_proto import subjects

from hermes_gateway.config import GatewaySettings

ALICE, BOB, GUEST = "alice-Tok3n-0123456789", "bob-Tok3n-9876543210", "guest-Tok3n-5555555555"
ADMIN = "root-Tok3n-1212121212"
TOKENS = f"alice:user:{ALICE}, bob:user:{BOB},viewer:guest:{GUEST},root:admin:{ADMIN}"
IDEA = "plan a vegetable garden on my balcony (alice's secret plan)"
ENVELOPE_KEYS = {"status", "error", "meta"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_unauthorized(response: httpx.Response, *leaks: str) -> None:
    """401 ``unauthorized`` with the Bearer challenge and nothing but the error envelope (no ``data``, none of
    ``leaks`` anywhere in the body)."""
    assert response.status_code == 401, response.text
    body = response.json()
    assert set(body) == ENVELOPE_KEYS and body["status"] == "error", body
    assert body["error"]["code"] == "unauthorized" and body["error"]["details"] is None, body
    assert response.headers["www-authenticate"] == "Bearer"
    for leak in leaks:
        assert leak not in response.text


def error_code(response: httpx.Response) -> str:
    body = response.json()
    assert set(body) == ENVELOPE_KEYS, body
    return body["error"]["code"]


async def get_with_cookie(url: str, path: str, session: str) -> httpx.Response:
    """GET ``path`` from a fresh client whose only cookie is ``hermes_session=session``."""
    async with httpx.AsyncClient(base_url=url, timeout=10, cookies={"hermes_session": session}) as client:
        return await client.get(path)


async def command_position(js) -> int:
    """The last sequence of HERMES_COMMANDS (a work queue: consumed commands leave, the sequence stays)."""
    return (await js.stream_info(subjects.COMMANDS_STREAM)).state.last_seq


async def test_tokens_guests_sessions_and_ownership(bus_env: dict[str, str], tmp_path: Path, js_client) -> None:
    _, js = js_client
    logs = tmp_path / "logs"
    orchestrator = service_processes({**bus_env, "METRICS_PORT": "0"}, logs, ["orchestrator"])["orchestrator"]
    await start_ready(orchestrator)
    # Room for the wrong tokens below: the per-address failure limit has its own test.
    gateway = await start_gateway(bus_env, logs, HERMES_API_TOKENS=TOKENS, HERMES_AUTH_FAILURE_LIMIT="100/minute")
    url = gateway.url
    try:
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            # alice submits, claiming to be someone else: the thread is hers all the same.
            submitted = await client.post(
                "/api/submit", json={"idea": IDEA, "user_id": "mallory"}, headers=bearer(ALICE)
            )
            assert submitted.status_code == 202, submitted.text
            thread_id = submitted.json()["data"]["thread_id"]

            async def alice_sees() -> dict | None:
                response = await client.get(f"/api/threads/{thread_id}/status", headers=bearer(ALICE))
                return response.json()["data"] if response.status_code == 200 else None

            thread = await wait_until(alice_sees, timeout_s=15)
            assert thread["user_id"] == "alice" and thread["idea"] == IDEA
            mine = (await client.get("/api/threads", headers=bearer(ALICE))).json()["data"]["threads"]
            assert [t["thread_id"] for t in mine] == [thread_id]

            # No token, a wrong token, a non-Bearer scheme: 401 and nothing of the thread.
            routes = [
                ("GET", "/api/threads"),
                ("GET", f"/api/threads/{thread_id}/status"),
                ("GET", f"/api/threads/{thread_id}/events"),
                ("GET", "/api/auth/me"),
                ("POST", "/api/submit"),
                ("GET", "/api/learn/preferences"),
            ]
            for headers in ({}, bearer("not-a-token"), bearer(ALICE + "x"), {"Authorization": f"Basic {ALICE}"}):
                for method, path in routes:
                    response = await client.request(method, path, headers=headers, json={"idea": "x"})
                    assert_unauthorized(response, thread_id, IDEA, "alice")

            # bob: alice's thread is exactly as unknown as a thread that never existed.
            unknown = await client.get("/api/threads/no-such-thread/status", headers=bearer(BOB))
            foreign = await client.get(f"/api/threads/{thread_id}/status", headers=bearer(BOB))
            assert foreign.status_code == unknown.status_code == 404
            assert error_code(foreign) == error_code(unknown) == "thread_not_found"
            assert IDEA not in foreign.text and "alice" not in foreign.text
            for method, path in [
                ("GET", f"/api/threads/{thread_id}/events"),
                ("POST", f"/api/threads/{thread_id}/continue"),
                ("POST", f"/api/threads/{thread_id}/rate"),
            ]:
                response = await client.request(
                    method, path, headers=bearer(BOB), json={"answers": {"q": "a"}, "rating": 5}
                )
                assert response.status_code == 404 and error_code(response) == "thread_not_found", response.text
            job_id = thread["jobs"][0]["job_id"] if thread["jobs"] else "no-job"
            job = await client.get(f"/api/threads/{thread_id}/jobs/{job_id}/result", headers=bearer(BOB))
            assert job.status_code == 404 and error_code(job) == "job_not_found"
            feedback = await client.post(
                "/api/learn/feedback", headers=bearer(BOB), json={"thread_id": thread_id, "rating": 4}
            )
            assert feedback.status_code == 404 and error_code(feedback) == "thread_not_found"
            listed = await client.get("/api/threads", headers=bearer(BOB))
            assert listed.status_code == 200 and listed.json()["data"]["threads"] == []
            assert thread_id not in listed.text

            # The guest reads but never writes, and nothing reaches the bus when it tries.
            before = await command_position(js)
            assert (await client.get("/api/threads", headers=bearer(GUEST))).status_code == 200
            me = (await client.get("/api/auth/me", headers=bearer(GUEST))).json()["data"]
            assert me == {"user_id": "viewer", "mode": "guest", "auth_enabled": True}
            for method, path in [
                ("POST", "/api/submit"),
                ("POST", "/api/workflows"),
                ("POST", f"/api/threads/{thread_id}/continue"),
                ("GET", "/api/export/all"),
                ("GET", "/api/config"),
                ("POST", "/api/learn/preferences"),
            ]:
                response = await client.request(method, path, headers=bearer(GUEST), json={"idea": IDEA})
                assert response.status_code == 403 and error_code(response) == "read_only", (path, response.text)
            assert await command_position(js) == before

            # Web session: login sets the cookie, it authenticates, logout ends it (a copy of it too).
            wrong = await client.post("/api/auth/login", json={"token": "guess"})
            assert_unauthorized(wrong)
            login = await client.post("/api/auth/login", json={"token": BOB})
            assert login.status_code == 200 and login.json()["data"] == {"user_id": "bob", "mode": "user"}
            cookie_header = login.headers["set-cookie"]
            attributes = {part.strip().split("=")[0].lower() for part in cookie_header.split(";")}
            assert {"httponly", "path", "max-age"} <= attributes and "secure" not in attributes, cookie_header
            assert "samesite=strict" in cookie_header.lower() and "path=/" in cookie_header.lower()
            assert BOB not in cookie_header
            cookie = client.cookies["hermes_session"]
            me = await client.get("/api/auth/me")
            assert me.status_code == 200 and me.json()["data"]["user_id"] == "bob", me.text
            assert (await client.get(f"/api/threads/{thread_id}/status")).status_code == 404
            tampered = cookie[:-2] + ("AA" if not cookie.endswith("AA") else "BB")
            forged = cookie.replace(cookie.split(".")[0], "eyJ1c2VyX2lkIjoiYWxpY2UifQ")  # alice's name, bob's signature
            for value in (tampered, forged):
                assert_unauthorized(await get_with_cookie(url, "/api/threads", value))
            logout = await client.post("/api/auth/logout")
            assert logout.status_code == 200 and "hermes_session" not in client.cookies
            assert_unauthorized(await client.get("/api/auth/me"))
            assert_unauthorized(await get_with_cookie(url, "/api/auth/me", cookie))  # a copy kept from before

            # Changes that act for every user need an admin token; a user may still read them.
            for method, path, body in (
                ("PUT", "/api/soul", {"text": "You are Alice's Hermes."}),
                ("PATCH", "/api/config/hermes.draft.max_tokens", {"value": 64}),
                ("GET", "/api/system/dead-letters", None),
                ("POST", "/api/backends/talos/disable", None),
            ):
                refused = await client.request(method, path, json=body, headers=bearer(ALICE))
                assert refused.status_code == 403 and error_code(refused) == "admin_only", (path, refused.text)
            assert (await client.get("/api/soul", headers=bearer(ALICE))).status_code == 200
            soul = await client.put("/api/soul", json={"text": "You are everyone's Hermes."}, headers=bearer(ADMIN))
            assert soul.status_code == 200 and soul.json()["data"]["text"] == "You are everyone's Hermes."
            assert (await client.get("/api/system/dead-letters", headers=bearer(ADMIN))).status_code == 200

            metrics = await client.get("/metrics")  # open by default
            assert metrics.status_code == 200
            for reason in ("missing", "invalid", "read_only"):
                line = f'hermes_gateway_auth_failures_total{{reason="{reason}"}}'
                assert any(row.startswith(line) and float(row.split()[-1]) > 0 for row in metrics.text.splitlines()), (
                    reason
                )
        log = gateway.process.log_text()
        assert '"user_id": "alice"' in log or '"user_id":"alice"' in log
        for secret in (ALICE, BOB, GUEST, cookie):
            assert secret not in log
    finally:
        gateway.process.stop()
        orchestrator.stop()


async def test_rate_limits(bus_env: dict[str, str], tmp_path: Path) -> None:
    gateway = await start_gateway(
        bus_env,
        tmp_path / "logs",
        HERMES_API_TOKENS=TOKENS,
        HERMES_RATE_LIMIT="5/minute",
        HERMES_AUTH_FAILURE_LIMIT="3/minute",
    )
    try:
        async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as client:
            for _ in range(5):
                assert (await client.get("/api/auth/me", headers=bearer(ALICE))).status_code == 200
            limited = await client.get("/api/auth/me", headers=bearer(ALICE))
            assert limited.status_code == 429 and error_code(limited) == "rate_limited", limited.text
            retry_after = int(limited.headers["retry-after"])
            assert 1 <= retry_after <= 60 and limited.json()["error"]["retry_after"] == retry_after
            # Per token: bob still has his own window.
            assert (await client.get("/api/auth/me", headers=bearer(BOB))).status_code == 200

            # Failed authentications per address: after 3, even a right token from here is refused for a while.
            for _ in range(3):
                assert_unauthorized(await client.get("/api/auth/me", headers=bearer("guess")))
            locked = await client.get("/api/auth/me", headers=bearer(BOB))
            assert locked.status_code == 429 and error_code(locked) == "rate_limited"
            assert int(locked.headers["retry-after"]) >= 1
            login = await client.post("/api/auth/login", json={"token": BOB})
            assert login.status_code == 429
            samples = (await client.get("/metrics")).text
            assert 'hermes_gateway_rate_limited_total{scope="token"} 1.0' in samples
            assert 'hermes_gateway_rate_limited_total{scope="auth_failure"} 2.0' in samples
    finally:
        gateway.process.stop()


async def test_body_size_limit(bus_env: dict[str, str], tmp_path: Path, js_client) -> None:
    _, js = js_client
    gateway = await start_gateway(bus_env, tmp_path / "logs", HERMES_API_TOKENS=TOKENS, HERMES_MAX_BODY_BYTES="1000")
    before = await command_position(js)
    try:
        async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as client:
            big = {"idea": "x" * 2000}
            response = await client.post("/api/submit", json=big, headers=bearer(ALICE))
            assert response.status_code == 413 and error_code(response) == "payload_too_large", response.text

            async def chunks():  # no Content-Length: sent chunked, counted as it arrives
                yield b'{"idea": "'
                for _ in range(20):
                    yield b"y" * 100
                yield b'"}'

            chunked = await client.post(
                "/api/submit", content=chunks(), headers={**bearer(ALICE), "Content-Type": "application/json"}
            )
            assert "content-length" not in chunked.request.headers
            assert chunked.status_code == 413 and error_code(chunked) == "payload_too_large", chunked.text
        assert await command_position(js) == before
    finally:
        gateway.process.stop()


async def test_cors_health_and_metrics_protection(bus_env: dict[str, str], tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    origin = "http://app.example"
    preflight = {
        "Origin": origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type",
    }

    default = await start_gateway(bus_env, logs, HERMES_API_TOKENS=TOKENS, HERMES_QUERY_TIMEOUT_SECONDS="0.5")
    try:
        async with httpx.AsyncClient(base_url=default.url, timeout=10) as client:
            for response in (
                await client.get("/api/auth/me", headers={**bearer(ALICE), "Origin": origin}),
                await client.options("/api/submit", headers=preflight),
            ):
                assert not any(h.lower().startswith("access-control-") for h in response.headers), response.headers
            assert (await client.get("/api/system/health")).status_code != 401  # open (503 here: no orchestrator)
            assert (await client.get("/metrics")).status_code == 200
    finally:
        default.process.stop()

    guarded = await start_gateway(
        bus_env,
        logs,
        HERMES_API_TOKENS=TOKENS,
        HERMES_CORS_ORIGINS=f"{origin}, http://b.example",
        HERMES_PROTECT_HEALTH="true",
        HERMES_METRICS_TOKEN="prometheus-scrape-token",
        HERMES_QUERY_TIMEOUT_SECONDS="0.5",
    )
    try:
        async with httpx.AsyncClient(base_url=guarded.url, timeout=10) as client:
            allowed = await client.get("/api/auth/me", headers={**bearer(ALICE), "Origin": origin})
            assert allowed.headers["access-control-allow-origin"] == origin
            assert allowed.headers["access-control-allow-credentials"] == "true"
            refused = await client.get("/api/auth/me", headers={"Origin": origin})  # a browser can read the 401
            assert refused.status_code == 401 and refused.headers["access-control-allow-origin"] == origin
            pre = await client.options("/api/submit", headers=preflight)
            assert pre.status_code == 200 and pre.headers["access-control-allow-origin"] == origin
            other = await client.get("/api/auth/me", headers={**bearer(ALICE), "Origin": "http://evil.example"})
            assert "access-control-allow-origin" not in other.headers

            assert_unauthorized(await client.get("/api/system/health"))
            assert_unauthorized(await client.get("/metrics"))
            assert (await client.get("/api/system/health", headers=bearer(GUEST))).status_code != 401
            assert (await client.get("/metrics", headers=bearer(ALICE))).status_code == 200
            scraped = await client.get("/metrics", headers=bearer("prometheus-scrape-token"))
            assert scraped.status_code == 200 and "hermes_gateway_auth_failures_total" in scraped.text
            assert_unauthorized(await client.get("/api/threads", headers=bearer("prometheus-scrape-token")))
            assert (await client.get("/")).status_code == 200  # the web app itself stays open
    finally:
        guarded.process.stop()


@pytest.mark.parametrize(
    "raw",
    [
        "alice:owner:sekrit-value",
        "no-colons-sekrit-value",
        "al ice:user:sekrit-value",
        "alice:user:",
        "a:user:sekrit-value,b:guest:sekrit-value",
    ],
)
def test_bad_token_syntax_is_a_settings_error_that_hides_the_value(raw: str, monkeypatch) -> None:
    monkeypatch.setenv("HERMES_API_TOKENS", raw)
    with pytest.raises(ValidationError) as caught:
        GatewaySettings()
    assert "HERMES_API_TOKENS".lower() in str(caught.value).lower()
    assert "sekrit" not in str(caught.value)


def test_blank_tokens_mean_auth_off(monkeypatch) -> None:
    monkeypatch.setenv("HERMES_API_TOKENS", "  ")
    assert GatewaySettings().api_tokens() == []
    monkeypatch.setenv("HERMES_API_TOKENS", "a:user:x:y:z")  # the token is everything after the second colon
    assert [tuple(t) for t in GatewaySettings().api_tokens()] == [("a", "user", "x:y:z")]
