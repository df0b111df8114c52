"""``hermes up`` supervises: real ``hermes up`` runs (NATS, the six services, an edge per backend, supervisord and
its event listener) in front of a loopback OpenAI-compatible model server (``HERMES_LOCAL_MODEL=false``).

- A service killed with SIGKILL is restarted while every other process keeps running; killed again right after its
  restart it is a failed start, retried after a backoff; a submission meanwhile is accepted (202: no queue cap, so
  nothing for the absent orchestrator to count; with one it would be refused 503 ``queue_unknown``) and reads as
  ``accepted`` at once, then completes. A service that keeps failing at start is given up (FATAL), logged and
  counted, and the rest keep serving. Exits and restarts are counted on the supervisor's ``/metrics``.
- nats-server killed with SIGKILL comes back on the same store (a thread from before is still there) and a new
  submission completes.
- The standard setup of a local Talos with a remote fallback, Talos down: ``hermes up`` runs an edge for each
  enabled backend, so draft 1 is written by the fallback.
- Each service's output is on the terminal, prefixed by its name, and in ``$HERMES_HOME/logs/<name>.log``; SIGINT
  leaves no process behind.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal

import httpx
import pytest
from conftest import wait_until
from fakes.llm_servers import FakeOpenAIServer, Reply
from prometheus_client.parser import text_string_to_metric_families
from stack import HermesUp, processes_with_home, sse_events

from hermes_cli.natsserver import free_port

pytestmark = pytest.mark.e2e

DRAFT = "Pots, soil and sun."


def up_env(model: FakeOpenAIServer, **extra: str) -> dict[str, str]:
    """No local model: talos is the loopback server; no questions, so a thread completes on draft 1."""
    return dict(
        HERMES_LOCAL_MODEL="false",
        BACKEND_TALOS_TYPE="openai",
        BACKEND_TALOS_HOST="127.0.0.1",
        BACKEND_TALOS_PORT=str(model.port),
        BACKEND_TALOS_MODELS="fake-model",
        HERMES_MAX_QUESTIONS="0",
        TELEGRAM_BOT_TOKEN="",
        **extra,
    )


def metric(text: str, name: str, **labels: str) -> float:
    return sum(
        s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == name and labels.items() <= s.labels.items()
    )


async def supervisor_metric(up: HermesUp, name: str, **labels: str) -> float:
    return metric(await asyncio.to_thread(up.supervisor_metrics), name, **labels)


async def submit(client: httpx.AsyncClient, idea: str) -> str:
    response = await client.post("/api/submit", json={"idea": idea})
    assert response.status_code == 202, response.text
    return response.json()["data"]["thread_id"]


async def completed(client: httpx.AsyncClient, thread_id: str, timeout_s: float = 90) -> dict:
    async def done() -> dict | None:
        response = await client.get(f"/api/threads/{thread_id}/status")
        if response.status_code != 200:
            return None
        view = response.json()["data"]
        assert view["status"] != "failed", view
        return view if view["status"] == "completed" else None

    return await wait_until(done, timeout_s=timeout_s, interval_s=0.5)


async def new_pid(up: HermesUp, program: str, old: int | None, timeout_s: float = 60) -> int:
    """The pid of ``program`` once one other than ``old`` runs."""
    return await wait_until(
        lambda: (pid := up.pids().get(program)) not in (None, old) and pid, timeout_s=timeout_s, interval_s=0.05
    )


async def stopped_cleanly(up: HermesUp, sig: int = signal.SIGINT) -> None:
    await asyncio.to_thread(up.stop, 40, sig)
    await wait_until(lambda: not processes_with_home(up.home), timeout_s=20)


async def test_a_killed_service_is_restarted_with_backoff_while_the_others_keep_running(tmp_path) -> None:
    async with FakeOpenAIServer(reply=Reply(text=DRAFT), models=["fake-model"]) as model:
        # The notifier cannot start (a bad setting): it is retried, then given up, and nothing else is touched.
        up = HermesUp(
            tmp_path,
            **up_env(
                model,
                TELEGRAM_UPDATES="bogus",
                HERMES_UP_START_SECONDS="20",
                HERMES_UP_START_RETRIES="2",
                HERMES_MAX_QUEUED_JOBS="0",
            ),
        ).start()
        try:
            async with httpx.AsyncClient(base_url=up.base_url, timeout=10) as client:
                await asyncio.to_thread(up.wait_healthy, httpx.Client(timeout=5), 180)
                await wait_until(
                    lambda: supervisor_metric(up, "hermes_supervisor_failed_total", service="notifier"),
                    timeout_s=120,
                    interval_s=1,
                )
                # The relay copies the supervisor's log line to up's output a moment after the metric moved.
                await wait_until(lambda: "service_failed" in up.log_text(), timeout_s=10, interval_s=0.2)
                assert "hermes_notifier" not in up.pids()
                assert (
                    await supervisor_metric(up, "hermes_supervisor_exits_total", service="notifier", phase="starting")
                    == 3
                )  # the first start and 2 retries

                # The orchestrator has been up its 20 s: killed, it is started again at once.
                await wait_until(
                    lambda: supervisor_metric(up, "hermes_supervisor_process_up", service="orchestrator"),
                    timeout_s=60,
                    interval_s=1,
                )
                before = up.pids()
                os.kill(before["hermes_orchestrator"], signal.SIGKILL)
                thread_id = await submit(client, "plan a balcony garden")  # its command waits in JetStream
                view = (await client.get(f"/api/threads/{thread_id}/status")).json()["data"]
                assert (view["status"], view["idea"], view["answerable"]) == (
                    "accepted",
                    "plan a balcony garden",
                    False,
                )
                restarted = await new_pid(up, "hermes_orchestrator", before["hermes_orchestrator"])
                # Killed again within its start window: a failed start, retried after a backoff of 1 s.
                os.kill(restarted, signal.SIGKILL)
                await new_pid(up, "hermes_orchestrator", restarted)
                backoff = re.compile(r'supervisor\s+\| .*"supervised": "orchestrator".*"retry_in_s": 1')
                await wait_until(lambda: backoff.search(up.log_text()), timeout_s=10)

                view = await completed(client, thread_id)
                assert view["draft1"] == DRAFT
                after = up.pids()
                unchanged = {k: v for k, v in before.items() if k != "hermes_orchestrator"}
                assert {k: after.get(k) for k in unchanged} == unchanged  # nothing else was restarted
                assert {"nats", "hermes_gateway", "hermes_router", "hermes_learner", "hermes_edge:talos"} <= set(after)
                metrics = await asyncio.to_thread(up.supervisor_metrics)
                assert metric(metrics, "hermes_supervisor_exits_total", service="orchestrator", phase="running") == 1
                assert metric(metrics, "hermes_supervisor_exits_total", service="orchestrator", phase="starting") == 1
                assert metric(metrics, "hermes_supervisor_restarts_total", service="orchestrator") == 2
                assert metric(metrics, "hermes_supervisor_restarts_total", service="gateway") == 0
            # Output: on the terminal with the name in front, and in the service's own log file.
            text = up.log_text()
            assert re.search(r"^\d\d:\d\d:\d\d orchestrator +\| \{.*\"orchestrator_started\"", text, re.M)
            assert text.count("Hermes is ready") == 1
            assert "orchestrator_started" in (up.home / "logs" / "orchestrator.log").read_text()
            assert "exited: orchestrator (terminated by SIGKILL" in (up.home / "logs" / "supervisord.log").read_text()
        finally:
            await stopped_cleanly(up)


async def test_a_killed_nats_server_comes_back_on_its_store_and_work_goes_on(tmp_path) -> None:
    async with FakeOpenAIServer(reply=Reply(text=DRAFT), models=["fake-model"]) as model:
        up = HermesUp(tmp_path, **up_env(model)).start()
        try:
            async with httpx.AsyncClient(base_url=up.base_url, timeout=10) as client:
                await asyncio.to_thread(up.wait_healthy, httpx.Client(timeout=5), 180)
                earlier = await submit(client, "before the crash")
                await completed(client, earlier)
                before = up.pids()
                os.kill(before["nats"], signal.SIGKILL)
                await new_pid(up, "nats", before["nats"])

                async def accepted() -> str | None:  # the services reconnect by themselves
                    response = await client.post("/api/submit", json={"idea": "after the crash"})
                    return response.json()["data"]["thread_id"] if response.status_code == 202 else None

                later = await wait_until(accepted, timeout_s=60, interval_s=0.5)
                assert (await completed(client, later))["draft1"] == DRAFT
            after = up.pids()
            assert {k: after.get(k) for k in before if k != "nats"} == {k: v for k, v in before.items() if k != "nats"}
            assert await supervisor_metric(up, "hermes_supervisor_restarts_total", service="nats") == 1
            # The same store: the new server has the earlier thread's events, which its SSE stream replays.
            cmdline = open(f"/proc/{after['nats']}/cmdline", "rb").read().split(b"\0")
            assert cmdline[cmdline.index(b"-sd") + 1].decode() == str(up.home / "nats")
            with httpx.Client(base_url=up.base_url, timeout=10) as sync_client:
                replay = await asyncio.to_thread(
                    sse_events, sync_client, f"/api/threads/{earlier}/events", {"thread_completed"}, 20
                )
            logged = [(kind, data) for kind, data in replay if kind != "token"]  # recent token deltas come first
            assert logged[0][0] == "thread_opened" and logged[0][1]["idea"] == "before the crash"
        finally:
            await stopped_cleanly(up, signal.SIGTERM)  # as a service manager stops it


async def test_talos_down_with_a_remote_fallback_draft_1_comes_from_the_fallback(tmp_path) -> None:
    async with FakeOpenAIServer(
        reply=Reply(text="From the remote API."), models=["remote-model"], api_key="sk-remote-fallback"
    ) as remote:
        up = HermesUp(
            tmp_path,
            HERMES_LOCAL_MODEL="false",
            HERMES_MAX_QUESTIONS="0",
            TELEGRAM_BOT_TOKEN="",
            HERMES_BACKENDS_ENABLED="talos,remote_api",
            HERMES_FALLBACK_BACKEND="remote_api",
            BACKEND_TALOS_TYPE="openai",
            BACKEND_TALOS_HOST="127.0.0.1",
            BACKEND_TALOS_PORT=str(free_port()),
            BACKEND_TALOS_MODELS="fake-model",
            BACKEND_REMOTE_API_TYPE="openai",
            BACKEND_REMOTE_API_HOST="127.0.0.1",
            BACKEND_REMOTE_API_PORT=str(remote.port),
            BACKEND_REMOTE_API_MODELS="remote-model",
            BACKEND_REMOTE_API_KEY="sk-remote-fallback",
        ).start()
        try:
            async with httpx.AsyncClient(base_url=up.base_url, timeout=10) as client:
                await asyncio.to_thread(up.wait_healthy, httpx.Client(timeout=5), 180)
                assert {"talos-edge", "remote_api-edge"} <= set(up.metrics_ports())
                view = await completed(client, await submit(client, "plan a balcony garden"))
            assert view["draft1"] == "From the remote API."
            assert [j["backend"] for j in view["jobs"] if j["status"] == "completed"] == ["remote_api"]
            assert {"hermes_edge:talos", "hermes_edge:remote_api"} <= set(up.pids())
        finally:
            await stopped_cleanly(up)
