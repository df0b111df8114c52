"""Composition of the tool service: NATS, the MCP servers, the skills library, the executor, the ``tools-calls``
consumer (dispatched calls, the ends of runs, forgotten runs), the ``tools-skills`` consumer (skill proposals), the
responders, and the recovery of calls a crash left unfinished."""

from __future__ import annotations

import asyncio

import structlog

from hermes_proto import keyring, subjects
from hermes_proto.agents import AgentRunCancelled, AgentRunCompleted, AgentRunFailed, ToolCallDispatched
from hermes_proto.bus import ConsumerRunner, ConsumerSpec, EventStore, aggregate_lane, close, connect, ensure_streams
from hermes_proto.codec import decode_event
from hermes_proto.forgetting import PersonalDataForgotten
from hermes_proto.rpc import ask
from hermes_proto.service import stop_on_signals
from hermes_proto.sessions import MemoryQuery, MemoryReply
from hermes_proto.telemetry import configure_logging, configure_tracing, start_metrics_server

from hermes_tools.config import ToolSettings
from hermes_tools.executor import Executor
from hermes_tools.ledger import CallLedger
from hermes_tools.mcp_servers import McpServers
from hermes_tools.redact import Redactor
from hermes_tools.responders import Responders
from hermes_tools.sandbox import SandboxLimits, sandbox_available
from hermes_tools.service import ToolService
from hermes_tools.skills.repo import SkillsRepo
from hermes_tools.skills_library import SkillsLibrary
from hermes_tools.skills_service import SkillProposals

SERVICE = "tools"
DURABLE = "tools-calls"
CALL_EVENTS = (ToolCallDispatched, AgentRunCancelled, AgentRunFailed, AgentRunCompleted, PersonalDataForgotten)
"""What ``tools-calls`` takes (its subject filters; ``ConsumerRunner.subscribe`` updates an existing durable's)."""
log = structlog.get_logger("hermes.tools")


def limits_of(settings: ToolSettings) -> SandboxLimits:
    return SandboxLimits(
        cpu_seconds=settings.hermes_sandbox_cpu_seconds,
        memory_mb=settings.hermes_sandbox_memory_mb,
        max_processes=settings.hermes_sandbox_max_processes,
        max_output_bytes=settings.hermes_sandbox_output_bytes,
        wall_seconds=settings.hermes_sandbox_wall_seconds,
    )


async def run(settings: ToolSettings, stop: asyncio.Event | None = None) -> None:
    """Run until ``stop`` is set (or SIGINT/SIGTERM)."""
    configure_logging(SERVICE, settings.log_level, settings.log_file)
    configure_tracing(SERVICE)
    start_metrics_server(settings.metrics_port)
    stop = stop or stop_on_signals()
    refused = sandbox_available()
    if refused is not None:
        log.error("sandbox_unavailable", reason=refused, effect="file, shell and python tools are refused")

    nc = await connect(settings, SERVICE)
    js = nc.jetstream()
    await ensure_streams(js, settings)
    await keyring.start(js, settings.hermes_seal_personal_data)

    async def memory_search(query: str, limit: int, user_id: str) -> list[dict]:
        """The run's user's earlier turns (SQLite FTS5, the orchestrator's read model)."""
        q = MemoryQuery(q=query[:500] or "?", user_id=user_id, limit=max(1, min(limit, 100)))
        reply = await ask(nc, "The orchestrator", subjects.QUERY_MEMORY, q, MemoryReply, 5.0)
        return [
            {
                "job_id": h.job_id,
                "day": h.created_at.date().isoformat(),
                "prompt": h.prompt,
                "reply": h.reply,
                "snippet": h.snippet,
            }
            for h in reply.hits
        ]

    mcp = McpServers(settings.mcp_path())
    await mcp.start()
    skills: SkillsLibrary | None = SkillsLibrary(
        SkillsRepo(settings.skills_path()), settings.skills_db_path(), limits_of(settings)
    )
    try:
        await skills.start()
    except Exception as exc:  # git missing or broken: the other tools still serve
        log.error("skills_unavailable", path=str(settings.skills_path()), error=repr(exc))
        skills = None
    executor = Executor(
        settings.hermes_home,
        mcp,
        limits_of(settings),
        Redactor.from_env(),
        memory_search,
        settings.hermes_tool_output_limit_chars,
        settings.hermes_tool_timeout_seconds,
        skills,
    )
    ledger = CallLedger(settings.ledger_path())
    service = ToolService(EventStore(js, SERVICE), ledger, executor, settings.hermes_tools_max_concurrent)
    consumer = ConsumerRunner(
        nc,
        js,
        ConsumerSpec(
            stream=subjects.EVENTS_STREAM,
            durable=DURABLE,
            filter_subjects=[subjects.event_type_filter(t) for t in CALL_EVENTS],
            decode=decode_event,
            handler=service.on_event,
            lane=aggregate_lane,
        ),
        SERVICE,
    )
    await Responders(nc, settings.hermes_home, mcp, skills).subscribe()
    await service.recover()
    consumers = [consumer]
    if skills is not None:
        consumers.append(ConsumerRunner(nc, js, SkillProposals(skills, js, service.append).spec(), SERVICE))
    tasks = [
        *(asyncio.create_task(c.run(), name=c.spec.durable) for c in consumers),
        asyncio.create_task(mcp.watch(), name="mcp-watch"),
    ]
    log.info(
        "tools_started",
        nats=settings.nats_url,
        sandbox=refused or "ok",
        mcp_servers=len(mcp.states()),
        skills=len(skills.names()) if skills is not None else None,
    )
    await stop.wait()
    log.info("tools_stopping")
    for c in consumers:
        c.stop()
    await service.stop()
    for task in tasks:
        task.cancel()
    await asyncio.wait(tasks, timeout=5)
    await mcp.close()
    ledger.close()
    if skills is not None:
        skills.close()
    await close(nc)
