"""The tool registry and the MCP servers: ``GET /api/tools``, ``GET /api/mcp/servers``, ``PUT
/api/mcp/servers/{name}``, ``DELETE /api/mcp/servers/{name}``. The tool service answers (core NATS); a change of
the servers is written to ``$HERMES_HOME/mcp.toml`` and takes effect without a restart. Only an admin (a person with
an admin token, or anyone while auth is off) changes servers: no tool and no model can."""

from __future__ import annotations

from typing import Any

import msgspec
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, StrictStr

from hermes_proto import subjects as subj
from hermes_proto.rpc import ask
from hermes_proto.tools import McpServerChange, McpServersReply, ToolsQuery, ToolsReply

from hermes_gateway.deps import AdminDep, BusDep, PrincipalDep
from hermes_gateway.envelope import ApiError, success

router = APIRouter(prefix="/api", tags=["tools"])
TIMEOUT_S = 5.0
NAME = r"^[A-Za-z0-9-]{1,32}$"


class McpServerIn(BaseModel):
    """One MCP server: ``command`` (+ ``args``, ``env``, ``cwd``) for stdio, or ``url`` (+ ``headers``) for
    streamable HTTP."""

    command: list[StrictStr] | StrictStr | None = None
    args: list[StrictStr] = []
    env: dict[StrictStr, StrictStr] = {}
    cwd: StrictStr | None = None
    url: StrictStr | None = Field(default=None, max_length=2048)
    headers: dict[StrictStr, StrictStr] = {}
    enabled: bool = True


@router.get("/tools")
async def list_tools(request: Request, bus: BusDep, principal: PrincipalDep) -> JSONResponse:
    """200 ``{"tools": [{"name", "description", "parameters", "read_only", "permission", "server"}], "sandbox"}``
    (``sandbox``: why the sandbox cannot start, or null)."""
    reply = await ask(bus.nc, "The tool service", subj.QUERY_TOOLS, ToolsQuery(), ToolsReply, TIMEOUT_S)
    return success(request, {"tools": msgspec.to_builtins(reply.tools), "sandbox": reply.sandbox})


async def _change(bus, change: McpServerChange) -> McpServersReply:  # noqa: ANN001
    reply = await ask(bus.nc, "The tool service", subj.CONTROL_MCP, change, McpServersReply, TIMEOUT_S)
    if reply.problem:
        raise ApiError(400, "invalid_mcp_server", reply.problem)
    return reply


@router.get("/mcp/servers")
async def list_servers(request: Request, bus: BusDep, admin: AdminDep) -> JSONResponse:
    """200 ``{"servers": {name: config}, "connected": {name: [tool names]}}``."""
    reply = await _change(bus, McpServerChange(name="", server=None))
    return success(request, {"servers": reply.servers, "connected": reply.connected})


@router.put("/mcp/servers/{name}")
async def put_server(name: str, body: McpServerIn, request: Request, bus: BusDep, admin: AdminDep) -> JSONResponse:
    """Add or replace server ``name`` ([A-Za-z0-9-]{1,32}). 200 as ``GET``; 400 ``invalid_mcp_server``."""
    if not _valid(name):
        raise ApiError(400, "invalid_mcp_server", "A server name is 1-32 letters, digits or '-'.")
    server: dict[str, Any] = body.model_dump(exclude_none=True, exclude_defaults=True)
    server.setdefault("enabled", body.enabled)
    reply = await _change(bus, McpServerChange(name=name, server=server))
    return success(request, {"servers": reply.servers, "connected": reply.connected})


@router.delete("/mcp/servers/{name}")
async def delete_server(name: str, request: Request, bus: BusDep, admin: AdminDep) -> JSONResponse:
    """Remove server ``name``: its tools leave the registry at once. 200 as ``GET``; 404 ``not_found``."""
    if not _valid(name):
        raise ApiError(404, "not_found", f"No MCP server {name!r}.")
    current = await _change(bus, McpServerChange(name="", server=None))
    if name not in current.servers:
        raise ApiError(404, "not_found", f"No MCP server {name!r}.")
    reply = await _change(bus, McpServerChange(name=name, server=None))
    return success(request, {"servers": reply.servers, "connected": reply.connected})


def _valid(name: str) -> bool:
    import re

    return re.fullmatch(NAME, name) is not None
