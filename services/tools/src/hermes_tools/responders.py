"""What the tool service answers on core NATS: the registry (``hermes.query.tools``), a workspace's state hash
(``hermes.query.workspace``), the skills library (``hermes.query.skills``) and changes of the MCP servers
(``hermes.control.mcp``, from the gateway's admin API)."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from hermes_proto import subjects
from hermes_proto.queries import ErrorReply
from hermes_proto.rpc import answering
from hermes_proto.skill_proposals import SkillsQuery
from hermes_proto.tools import (
    McpServerChange,
    McpServersReply,
    ToolSpec,
    ToolsReply,
    WorkspaceQuery,
    WorkspaceReply,
)

from hermes_tools.builtin import BUILTIN_SPECS
from hermes_tools.mcp_config import McpConfigError, add_server, load_config, remove_server, server_from_table
from hermes_tools.mcp_servers import McpServers
from hermes_tools.metrics import REGISTRY_SIZE
from hermes_tools.sandbox import sandbox_available
from hermes_tools.skills_library import SkillsLibrary, is_skill_tool
from hermes_tools.workspace import workspace_dir, workspace_state

PROJECT = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
QUERY_SKILLS = subjects.QUERY_SKILLS


def registry(mcp: McpServers | None, skills: SkillsLibrary | None = None) -> list[ToolSpec]:
    """The built-in tools, then every live MCP server's, then the library's skills (``skill__<name>``; an MCP
    server named ``skill`` does not shadow them: its tools are left out)."""
    mcp_specs = [s for s in mcp.specs() if not is_skill_tool(s.name)] if mcp is not None else []
    skill_specs = skills.specs() if skills is not None else []
    REGISTRY_SIZE.labels("builtin").set(len(BUILTIN_SPECS))
    REGISTRY_SIZE.labels("mcp").set(len(mcp_specs))
    REGISTRY_SIZE.labels("skill").set(len(skill_specs))
    return [*BUILTIN_SPECS.values(), *mcp_specs, *skill_specs]


def _table(server) -> dict:  # noqa: ANN001
    table: dict = {"enabled": server.enabled}
    if server.url is not None:
        table["url"] = server.url
        if server.headers:
            table["headers"] = {k: "***" for k in server.headers}  # header values may hold tokens
    else:
        table["command"] = list(server.command)
        if server.args:
            table["args"] = list(server.args)
        if server.env:
            table["env"] = {k: "***" for k in server.env}
    return table


class Responders:
    """``skills``: the library (None: it could not start; ``hermes.query.skills`` answers ``skills_unavailable``)."""

    def __init__(self, nc: NATS, home: Path, mcp: McpServers, skills: SkillsLibrary | None = None) -> None:
        self.nc, self.home, self.mcp, self.skills = nc, home, mcp, skills

    async def subscribe(self) -> None:
        for subject, handler in (
            (subjects.QUERY_TOOLS, self._tools),
            (subjects.QUERY_WORKSPACE, self._workspace),
            (subjects.CONTROL_MCP, self._mcp_change),
            (QUERY_SKILLS, self._skills),
        ):
            await self.nc.subscribe(subject, queue="tools", cb=answering("tools", handler))

    async def _respond(self, msg: Msg, reply: object) -> None:
        if msg.reply:
            await msg.respond(msgspec.json.encode(reply))

    async def _tools(self, msg: Msg) -> None:
        await self._respond(msg, ToolsReply(tools=registry(self.mcp, self.skills), sandbox=sandbox_available()))

    async def _skills(self, msg: Msg) -> None:
        query = msgspec.json.decode(msg.data or b"{}", type=SkillsQuery)
        if self.skills is None:
            reply: object = ErrorReply(code="skills_unavailable", message="the skills library could not start")
        else:
            reply = await self.skills.reply(query.log_limit)
        await self._respond(msg, reply)

    async def _workspace(self, msg: Msg) -> None:
        query = msgspec.json.decode(msg.data or b"{}", type=WorkspaceQuery)
        if not PROJECT.match(query.project):
            await self._respond(msg, ErrorReply(code="bad_request", message="invalid project name"))
            return
        state = await asyncio.to_thread(lambda: workspace_state(workspace_dir(self.home, query.project)))
        await self._respond(msg, WorkspaceReply(project=query.project, state=state))

    async def _mcp_change(self, msg: Msg) -> None:
        change = msgspec.json.decode(msg.data or b"{}", type=McpServerChange)
        path = self.mcp.config_file
        error = None
        try:
            if change.name and change.server is not None:
                await asyncio.to_thread(
                    add_server, path, server_from_table(change.name, change.server, path.parent), True
                )
                await self.mcp.reload(wait_s=3.0)
            elif change.name:
                await asyncio.to_thread(remove_server, path, change.name)
                await self.mcp.reload(wait_s=0)
        except McpConfigError as exc:
            error = f"{exc.code}: {exc.message}"
        try:
            servers = await asyncio.to_thread(load_config, path) if path.exists() else {}
        except McpConfigError as exc:
            servers, error = {}, error or f"{exc.code}: {exc.message}"
        connected: dict[str, list[str]] = {}
        for spec in self.mcp.specs():
            connected.setdefault(spec.server or "", []).append(spec.name)
        await self._respond(
            msg,
            McpServersReply(
                servers={name: _table(s) for name, s in servers.items()}, connected=connected, problem=error
            ),
        )
