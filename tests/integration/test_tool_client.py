"""The orchestrator asks the tool service for the registry over real NATS: while the tool service is still starting
(nobody answers yet) it asks again, so a run started right after `hermes up` still gets its tools."""

from __future__ import annotations

import asyncio
import time

import msgspec

from hermes_proto import subjects
from hermes_proto.tools import ToolSpec, ToolsReply

from hermes_orchestrator.agent_handlers import ToolClient

SPEC = ToolSpec(name="file_list", description="list", read_only=True, permission="file_read")


async def test_the_registry_is_asked_again_until_the_tool_service_answers(js_client):
    nc, _ = js_client

    async def start_late() -> None:
        await asyncio.sleep(1.5)

        async def answer(msg) -> None:
            await msg.respond(msgspec.json.encode(ToolsReply(tools=[SPEC])))

        await nc.subscribe(subjects.QUERY_TOOLS, cb=answer)

    late = asyncio.create_task(start_late())
    started = time.monotonic()
    tools = await ToolClient(nc, timeout_s=0.5, registry_wait_s=10).tools()
    await late
    assert [t.name for t in tools] == ["file_list"]
    assert 1.5 <= time.monotonic() - started < 6


async def test_a_tool_service_that_never_answers_gives_no_tools_after_the_wait(js_client):
    nc, _ = js_client
    started = time.monotonic()
    assert await ToolClient(nc, timeout_s=0.3, registry_wait_s=1.0).tools() == []
    assert time.monotonic() - started < 4
