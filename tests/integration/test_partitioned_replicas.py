"""Scale-out by partition on a real nats-server with Hermes's subject mappings: two orchestrators and two routers,
each owning one partition of the threads. Every thread is decided by exactly one orchestrator (the one
``partition_of`` names, as the server's own ``partition()`` maps its commands) and placed by exactly one router;
killing one partition's orchestrator (SIGKILL) loses nothing: its commands wait in the stream and are decided when
it comes back."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import msgspec
import pytest
from conftest import stored_events, wait_until
from fakes.llm_servers import FakeOpenAIServer, Reply
from procs import ServiceProcess, model_env, start_ready

from hermes_proto import keyring, partitions, subjects
from hermes_proto.bus import EventStore, connect, ensure_streams
from hermes_proto.commands import SubmitIdea
from hermes_proto.events import ThreadCompleted
from hermes_proto.ids import new_id, utcnow
from hermes_proto.settings import BusSettings

from hermes_cli.natsserver import free_port, nats_server_args, wait_for_port

N = 2


@pytest.fixture
def mapped_nats(tmp_path: Path) -> Iterator[str]:
    """A nats-server whose configuration holds the mappings for :data:`N` partitions; yields its URL."""
    config = tmp_path / "nats.conf"
    config.write_text(partitions.server_config(N))
    port = free_port()
    proc = subprocess.Popen(
        nats_server_args(port, tmp_path / "js", config=config), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    wait_for_port(port)
    yield f"nats://127.0.0.1:{port}"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)


@pytest.fixture
async def bus(mapped_nats: str) -> AsyncIterator[tuple]:
    settings = BusSettings(nats_url=mapped_nats)
    nc = await connect(settings, "test")
    js = nc.jetstream()
    await ensure_streams(js, settings)
    await keyring.start(js)  # sealed events and commands open in this process too
    yield nc, js
    keyring.activate(None)
    await nc.close()


def submit(thread_id: str) -> SubmitIdea:
    return SubmitIdea(
        command_id=new_id(), issued_at=utcnow(), thread_id=thread_id, idea=f"plan {thread_id}", max_questions=0
    )


def logged(proc: ServiceProcess, event: str) -> set[str]:
    """Thread ids of ``proc``'s JSON log lines of ``event``."""
    found = set()
    for line in proc.log_text().splitlines():
        if f'"{event}"' in line:
            record = json.loads(line)
            if record.get("thread_id"):
                found.add(record["thread_id"])
    return found


async def test_each_thread_is_decided_by_one_partition_and_a_killed_one_loses_nothing(bus, mapped_nats, tmp_path):
    nc, js = bus
    model = await FakeOpenAIServer(reply=Reply(text="a draft"), models=["fake"]).start()
    procs: dict[str, ServiceProcess] = {}
    for p in range(N):
        for name, module in (("orchestrator", "hermes_orchestrator"), ("router", "hermes_router")):
            env = {
                **os.environ,
                **model_env(model.port),
                "NATS_URL": mapped_nats,
                "HERMES_HOME": str(tmp_path / f"{name}-{p}"),
                "METRICS_PORT": "0",
                "HERMES_PARTITIONS": str(N),
                "HERMES_PARTITION": str(p),
                "BACKEND_TALOS_MAX_CONCURRENT": "4",
            }
            procs[f"{name}-{p}"] = ServiceProcess(name, module, env, tmp_path / f"logs-{name}-{p}")
    edge_env = {
        **os.environ,
        **model_env(model.port),
        "NATS_URL": mapped_nats,
        "HERMES_HOME": str(tmp_path / "edge"),
        "METRICS_PORT": "0",
        "HERMES_EDGE_CONCURRENCY": "4",
        "HERMES_EDGE_HEARTBEAT_S": "0.5",
    }
    procs["edge"] = ServiceProcess("edge", "hermes_edge", edge_env, tmp_path / "logs-edge")
    try:
        await asyncio.gather(*(start_ready(p) for p in procs.values()))
        store = EventStore(js, "test")
        ids = [new_id() for _ in range(24)]
        owner = {t: partitions.partition_of(t, N) for t in ids}
        assert set(owner.values()) == set(range(N))  # both partitions have threads

        async def completed(thread_ids: list[str]) -> bool:
            events = await stored_events(js, subjects.event_type_filter(ThreadCompleted))
            return set(thread_ids) <= {e.aggregate_id for e in events}

        first, second = ids[:12], ids[12:]
        for t in first[:10]:
            await store.send(submit(t))
        for t in first[10:]:  # as an external producer may: no thread token; partition 0 forwards it
            cmd = submit(t)
            await js.publish(
                f"hermes.cmd.{cmd.type_name()}", msgspec.json.encode(cmd), headers={"Nats-Msg-Id": cmd.command_id}
            )
        await wait_until(lambda: completed(first), timeout_s=60, interval_s=0.3)

        procs["orchestrator-1"].proc.send_signal(signal.SIGKILL)
        procs["orchestrator-1"].proc.wait(timeout=10)
        for t in second:
            await store.send(submit(t))
        survivors = [t for t in second if owner[t] == 0]
        await wait_until(lambda: completed(survivors), timeout_s=60, interval_s=0.3)
        assert not await completed([t for t in second if owner[t] == 1])  # they wait for their partition
        await start_ready(procs["orchestrator-1"])
        await wait_until(lambda: completed(ids), timeout_s=60, interval_s=0.3)

        for p in range(N):
            decided = logged(procs[f"orchestrator-{p}"], "command_handled")
            placed = logged(procs[f"router-{p}"], "backend_selected")
            assert decided == {t for t in ids if owner[t] == p}, f"orchestrator {p}"
            assert placed == {t for t in ids if owner[t] == p}, f"router {p}"
        opened = await stored_events(js, "hermes.evt.thread.*.thread_opened")
        assert sorted(e.aggregate_id for e in opened) == sorted(ids)  # once each, none lost
        forwarded = [ln for ln in procs["orchestrator-0"].log_text().splitlines() if '"command_forwarded"' in ln]
        assert len(forwarded) == sum(1 for t in first[10:] if owner[t] == 1)
    finally:
        await asyncio.gather(*(asyncio.to_thread(p.stop) for p in procs.values() if p.proc is not None))
        await model.stop()
