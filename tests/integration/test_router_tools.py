"""The backend-router passes a job's tools on: the ``ExecutionRequested`` it dispatches for a ``JobQueued`` with
``tools`` carries them unchanged (a real router process on a real JetStream server; the test plays the edge)."""

from __future__ import annotations

from conftest import wait_until
from fakes.edge_beats import EdgeBeats
from procs import ServiceProcess

from hermes_proto import subjects
from hermes_proto.base import ChatMessage
from hermes_proto.bus import EventStore
from hermes_proto.codec import decode_execution_request
from hermes_proto.events import JobQueued
from hermes_proto.ids import new_id, utcnow
from hermes_proto.tools import ToolSpec

TOOLS = [
    ToolSpec(
        name="read_file",
        description="Read a text file of the workspace.",
        parameters={"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]},
        read_only=True,
        permission="file_read",
    ),
    ToolSpec(name="docs__search", description="Search the docs.", permission="mcp", server="docs"),
]


async def test_the_execution_request_carries_the_jobs_tools(js_client, bus_env, tmp_path) -> None:
    nc, js = js_client
    env = dict(bus_env, METRICS_PORT="0", BACKEND_TALOS_MODELS="smollm2")
    router = ServiceProcess("router", "hermes_router", env, tmp_path / "logs").start()
    try:
        await wait_until(lambda: "router_started" in router.log_text(), timeout_s=20)
        async with EdgeBeats(nc):
            job = JobQueued(
                event_id=new_id(),
                aggregate_id=new_id(),
                occurred_at=utcnow(),
                correlation_id=new_id(),
                job_id=new_id(),
                kind="agent_turn",
                messages=[ChatMessage(role="user", content="What is in notes.md?")],
                tools=TOOLS,
            )
            await EventStore(js, "test").append([job])
            sub = await js.pull_subscribe(subjects.exec_subject("talos"), durable="t-edge", stream=subjects.EXEC_STREAM)
            [msg] = await sub.fetch(1, timeout=15)
        request = decode_execution_request(msg.data)
        assert request.job_id == job.job_id
        assert request.tools == TOOLS
    finally:
        router.stop()
