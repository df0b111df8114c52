"""The backend-router as a real process on a real NATS JetStream server: a job waits while no backend is
eligible (e.g. the local model is still loading) and is routed as soon as one is; past its wait it is
abandoned with ``no_backend``. The test plays the edge's part on the bus: heartbeats on core NATS and probe
replies (``fakes.edge_beats``)."""

from __future__ import annotations

import asyncio

from conftest import thread_events, wait_until
from fakes.edge_beats import EdgeBeats
from procs import ServiceProcess

from hermes_proto import subjects
from hermes_proto.base import ChatMessage
from hermes_proto.bus import EventStore
from hermes_proto.codec import decode_execution_request
from hermes_proto.events import JobQueued
from hermes_proto.ids import new_id, utcnow


async def queue_job(js) -> JobQueued:
    thread_id = new_id()
    job = JobQueued(
        event_id=new_id(),
        aggregate_id=thread_id,
        occurred_at=utcnow(),
        correlation_id=new_id(),
        job_id=new_id(),
        kind="draft1",
        messages=[ChatMessage(role="user", content="hi")],
    )
    await EventStore(js, "test").append([job])
    return job


async def start_router(bus_env, tmp_path, wait_s: str) -> ServiceProcess:
    env = dict(
        bus_env,
        METRICS_PORT="0",
        BACKEND_TALOS_MODELS="smollm2",
        HERMES_NO_BACKEND_WAIT_SECONDS=wait_s,
        HERMES_UNHEALTHY_THRESHOLD="2",
    )
    router = ServiceProcess("router", "hermes_router", env, tmp_path / "logs").start()
    await wait_until(lambda: "router_started" in router.log_text(), timeout_s=20)
    return router


async def test_a_job_waits_for_an_unhealthy_backend_and_runs_when_it_recovers(js_client, bus_env, tmp_path):
    nc, js = js_client
    router = await start_router(bus_env, tmp_path, "60")
    try:
        async with EdgeBeats(nc, healthy=False) as beats:
            await asyncio.sleep(1.0)  # the router has seen the backend unhealthy by now
            job = await queue_job(js)
            await asyncio.sleep(3.0)
            events = await thread_events(js, job.aggregate_id)
            assert [e.type_name() for e in events] == ["job_queued", "job_deferred"]
            assert events[1].reason == "no_backend"
            assert (await js.stream_info(subjects.EXEC_STREAM)).state.messages == 0

            # A malformed heartbeat is counted and ignored; it neither crashes the router nor marks anything.
            await nc.publish(subjects.heartbeat_subject("talos"), b'{"backend": "talos", "healthy": "yes"}')
            await nc.publish(subjects.heartbeat_subject("talos"), b"\xff not json")
            beats.healthy = True
            sub = await js.pull_subscribe(subjects.exec_subject("talos"), durable="t-edge", stream=subjects.EXEC_STREAM)
            msgs = await sub.fetch(1, timeout=10)
            request = decode_execution_request(msgs[0].data)
            assert request.job_id == job.job_id and request.backend == "talos"
            assert "backend_selected" in [e.type_name() for e in await thread_events(js, job.aggregate_id)]
            assert router.alive() and "bad_heartbeat" in router.log_text()
    finally:
        router.stop()


async def test_a_job_fails_with_no_backend_once_its_wait_is_over(js_client, bus_env, tmp_path):
    nc, js = js_client
    router = await start_router(bus_env, tmp_path, "1.5")
    try:
        async with EdgeBeats(nc, healthy=False):
            await asyncio.sleep(1.0)
            job = await queue_job(js)

            async def abandoned() -> bool:
                return "execution_abandoned" in [e.type_name() for e in await thread_events(js, job.aggregate_id)]

            await wait_until(abandoned, timeout_s=15)
        events = await thread_events(js, job.aggregate_id)
        assert [e.type_name() for e in events] == ["job_queued", "job_deferred", "execution_abandoned"]
        assert events[1].reason == "no_backend" and "talos: unhealthy" in events[1].detail
        assert events[2].error_code == "no_backend"
        assert (await js.stream_info(subjects.EXEC_STREAM)).state.messages == 0
    finally:
        router.stop()


async def test_a_job_waits_while_no_edge_serves_the_backend_and_runs_as_one_appears(js_client, bus_env, tmp_path):
    nc, js = js_client
    router = await start_router(bus_env, tmp_path, "60")
    try:
        job = await queue_job(js)

        async def deferred() -> list:
            return [e for e in await thread_events(js, job.aggregate_id) if e.type_name() == "job_deferred"]

        [waiting] = await wait_until(deferred, timeout_s=10)
        assert waiting.reason == "no_backend" and "talos: no_edge" in waiting.detail, waiting
        assert (await js.stream_info(subjects.EXEC_STREAM)).state.messages == 0
        appeared = asyncio.get_running_loop().time()
        async with EdgeBeats(nc):  # an edge starts: its first heartbeat wakes the dispatcher
            sub = await js.pull_subscribe(subjects.exec_subject("talos"), durable="t-edge", stream=subjects.EXEC_STREAM)
            [msg] = await sub.fetch(1, timeout=10)
            assert decode_execution_request(msg.data).job_id == job.job_id
            assert asyncio.get_running_loop().time() - appeared < 4
    finally:
        router.stop()
