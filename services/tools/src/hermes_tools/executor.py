"""Runs one dispatched call: a built-in tool (in the sandbox, :mod:`hermes_tools.builtin`), a skill of the library
(``skill__<name>``, in the sandbox, :mod:`hermes_tools.skills_library`) or an MCP server's
(:mod:`hermes_tools.mcp_servers`), then removes secrets from its output and cuts it past the limit (the whole output
kept in the workspace). Every failure becomes an :class:`Outcome` with an error code; nothing raises out."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from hermes_proto import agents as ag
from hermes_proto.tools import split_mcp_name

from hermes_tools.builtin import BUILTIN_SPECS, ToolContext, run_builtin
from hermes_tools.errors import ToolError
from hermes_tools.mcp_servers import McpServers
from hermes_tools.redact import Redactor, truncate
from hermes_tools.sandbox import SandboxLimits
from hermes_tools.skills_library import SkillsLibrary, is_skill_tool
from hermes_tools.workspace import workspace_dir, workspace_state

log = structlog.get_logger("hermes.tools")
MemorySearch = Callable[[str, int, str], Awaitable[list[dict[str, Any]]]]
"""``(query, limit, user_id) -> hits``: the run's user's earlier turns."""


@dataclass(frozen=True)
class Outcome:
    """What a call came to: ``output`` (redacted, cut), or ``error_code`` + ``output`` as the message."""

    output: str
    duration_ms: float
    is_error: bool = False
    truncated: bool = False
    full_output_path: str | None = None
    exit_code: int | None = None
    error_code: str | None = None

    @classmethod
    def failed(cls, code: str, message: str, started: float) -> Outcome:
        return cls(output=message, error_code=code, duration_ms=(time.perf_counter() - started) * 1000)


class Executor:
    """``home``: ``$HERMES_HOME`` (workspaces under ``workspace/<project>``); ``output_limit``: characters of output
    an event carries; ``timeout_s``: one MCP call's wall time; ``skills``: the skills library (None: no skills)."""

    def __init__(
        self,
        home: Path,
        mcp: McpServers | None,
        limits: SandboxLimits,
        redactor: Redactor,
        memory_search: MemorySearch | None = None,
        output_limit: int = 8000,
        timeout_s: float = 60.0,
        skills: SkillsLibrary | None = None,
    ) -> None:
        self.home = home
        self.mcp = mcp
        self.limits = limits
        self.redactor = redactor
        self.memory_search = memory_search
        self.output_limit = output_limit
        self.timeout_s = timeout_s
        self.skills = skills

    async def execute(self, d: ag.ToolCallDispatched) -> Outcome:
        outcome = await self._execute(d)
        if self.skills is not None and is_skill_tool(d.name):
            try:
                await self.skills.record(d.name, outcome.error_code, outcome.is_error, outcome.duration_ms)
            except Exception as exc:  # statistics must not lose the call's outcome
                log.warning("skill_stats_not_recorded", tool=d.name, error=repr(exc))
        return outcome

    async def _execute(self, d: ag.ToolCallDispatched) -> Outcome:
        started = time.perf_counter()
        try:
            workspace = workspace_dir(self.home, d.project)
            if d.workspace_state and await asyncio.to_thread(workspace_state, workspace) != d.workspace_state:
                raise ToolError(
                    "workspace_changed",
                    "the workspace changed after this call was approved; the approval does not cover it any more",
                )
            if is_skill_tool(d.name):  # before MCP names: skill__x has the shape of <server>__<tool>
                text, is_error, exit_code = await self._skill(d, workspace)
            elif split_mcp_name(d.name) is not None:
                text, is_error, exit_code = await self._mcp(d)
            elif d.name in BUILTIN_SPECS:
                text, is_error, exit_code = await self._builtin(d, workspace)
            else:
                raise ToolError("unknown_tool", f"no tool named {d.name!r}")
        except ToolError as exc:
            return Outcome.failed(exc.code, self.redactor.redact(exc.message), started)
        except Exception as exc:  # a tool's bug must not take the service down
            return Outcome.failed("tool_error", self.redactor.redact(f"{type(exc).__name__}: {exc}"), started)
        clean = self.redactor.redact(text)
        cut, truncated, path = truncate(clean, self.output_limit, workspace, d.call_id)
        return Outcome(
            output=cut,
            is_error=is_error,
            truncated=truncated,
            full_output_path=path,
            exit_code=exit_code,
            duration_ms=(time.perf_counter() - started) * 1000,
        )

    async def _mcp(self, d: ag.ToolCallDispatched) -> tuple[str, bool, int | None]:
        if self.mcp is None:
            raise ToolError("mcp_server_unavailable", "no MCP servers are configured")
        result = await self.mcp.call(d.name, dict(d.arguments), self.timeout_s)
        return result.text, result.is_error, None

    async def _skill(self, d: ag.ToolCallDispatched, workspace: Path) -> tuple[str, bool, int | None]:
        if self.skills is None:
            raise ToolError("unknown_tool", f"no tool named {d.name!r} (the skills library is not available)")
        output = await self.skills.run(d.name, dict(d.arguments), workspace, d.network)
        exit_code = output.data.get("exit_code") if isinstance(output.data, dict) else None
        return output.text, isinstance(exit_code, int) and exit_code != 0, exit_code

    async def _builtin(self, d: ag.ToolCallDispatched, workspace: Path) -> tuple[str, bool, int | None]:
        search = self.memory_search
        scoped = (lambda q, n: search(q, n, d.user_id)) if search is not None else None
        ctx = ToolContext(workspace=workspace, limits=self.limits, network=d.network, memory_search=scoped)
        output = await run_builtin(d.name, dict(d.arguments), ctx)
        exit_code = output.data.get("exit_code") if isinstance(output.data, dict) else None
        is_error = isinstance(exit_code, int) and exit_code != 0
        return output.text, is_error, exit_code
