"""Nothing lost, nothing doubled: orchestrator, router, learner and edge run as real processes against a
real nats-server and a slow loopback model; while ideas are in flight the edge (mid model call), the
orchestrator and then the NATS server itself are killed with SIGKILL and restarted. Every idea still
reaches its questions exactly once: one ``thread_opened``, one draft 1, one ``questions_proposed``."""

from __future__ import annotations

import asyncio
import signal
from collections import Counter

from conftest import thread_events, wait_until
from fakes.llm_servers import FakeOpenAIServer, Reply
from procs import ServiceProcess, model_env, service_processes

from hermes_proto.bus import EventStore
from hermes_proto.commands import SubmitIdea
from hermes_proto.ids import new_id, utcnow

IDEAS = [
    "plan a vegetable garden on my balcony",
    "write a speech for my sister's wedding",
    "organise a team offsite",
    "learn to bake sourdough bread",
]


def services(bus_env: dict[str, str], model: FakeOpenAIServer, logs) -> dict[str, ServiceProcess]:
    env = dict(
        bus_env,
        METRICS_PORT="0",
        HERMES_ANSWER_TIMEOUT_SECONDS="600",
        HERMES_EDGE_ACK_WAIT_S="3",
        HERMES_EDGE_HEARTBEAT_S="0.5",
        **model_env(model.port),
    )
    return service_processes(env, logs, ("orchestrator", "router", "learner", "edge"))


async def types_of(js, thread_id: str) -> Counter:
    return Counter(e.type_name() for e in await thread_events(js, thread_id))


async def test_kill_9_of_edge_orchestrator_and_nats_loses_and_doubles_nothing(
    nats_server, bus_env, js_client, tmp_path
):
    nc, js = js_client
    reply = Reply(chunks=["Start ", "small ", "and ", "grow."] * 3, chunk_delay_s=0.15)  # ~1.8 s per call
    async with FakeOpenAIServer(reply=reply, models=["fake"]) as model:
        procs = services(bus_env, model, tmp_path / "logs")
        for proc in procs.values():
            proc.start()
        try:
            store = EventStore(js, "test")
            threads = [new_id() for _ in IDEAS]
            for thread_id, idea in zip(threads, IDEAS, strict=True):
                await store.send(SubmitIdea(command_id=new_id(), issued_at=utcnow(), thread_id=thread_id, idea=idea))

            # 1. The edge dies in the middle of a model call; its request is redelivered to the new one.
            await wait_until(lambda: len(model.chat_requests()) >= 1, timeout_s=30)
            await asyncio.sleep(0.5)
            procs["edge"].kill()
            procs["edge"].start()

            # 2. The orchestrator dies with work in flight and rebuilds its position from its database.
            await wait_until(lambda: len(model.chat_requests()) >= 3, timeout_s=60)
            procs["orchestrator"].kill()
            await asyncio.sleep(1.0)
            procs["orchestrator"].start()

            # 3. The NATS server itself dies; every client reconnects, the streams come back from disk.
            await asyncio.sleep(1.0)
            await asyncio.to_thread(nats_server.restart, signal.SIGKILL)

            async def all_questioned() -> bool:
                counts = [await types_of(js, t) for t in threads]
                return all(c["questions_proposed"] >= 1 for c in counts)

            await wait_until(all_questioned, timeout_s=120, interval_s=1.0)
            await asyncio.sleep(2.0)  # give a late duplicate the chance to show up
            for thread_id in threads:
                counts = await types_of(js, thread_id)
                assert counts["thread_opened"] == 1, (thread_id, counts)
                assert counts["job_queued"] == 1 and counts["execution_completed"] == 1, (thread_id, counts)
                assert counts["draft_presented"] == 1 and counts["questions_proposed"] == 1, (thread_id, counts)
            assert all(p.alive() for p in procs.values()), {n: p.log_text()[-2000:] for n, p in procs.items()}
            # The kill really interrupted a call: one request was sent to the model more than once.
            assert len(model.chat_requests()) > len(IDEAS)
        finally:
            for proc in procs.values():
                proc.stop()
