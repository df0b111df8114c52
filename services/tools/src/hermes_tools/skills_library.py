"""The skills library as the tool service holds it: the valid skills at the repository's HEAD (each a tool
``skill__<name>`` of the registry), a skill's run in the sandbox, its usage statistics and the library's view
answered on ``hermes.query.skills``.

The registry is a snapshot taken by :meth:`SkillsLibrary.reload` (at start, after a commit, after a rollback);
git and SQLite run in worker threads, never on the event loop.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import structlog

from hermes_proto.skill_proposals import SkillsReply, SkillView
from hermes_proto.tools import ToolSpec

from hermes_tools.builtin import ToolOutput
from hermes_tools.errors import ToolError
from hermes_tools.metrics import SKILL_RUNS, SKILLS
from hermes_tools.sandbox import SandboxLimits
from hermes_tools.skills.manifest import SkillManifest
from hermes_tools.skills.repo import SkillsRepo
from hermes_tools.skills.run import TOOL_PREFIX, Sandbox, run_skill, skill_tool_spec
from hermes_tools.skills.stats import SkillStats

log = structlog.get_logger("hermes.tools.skills")
MAX_LOG = 200


def is_skill_tool(name: str) -> bool:
    """Whether ``name`` is a skill's tool name (``skill__<name>``)."""
    return name.startswith(TOOL_PREFIX) and len(name) > len(TOOL_PREFIX)


class SkillsLibrary:
    """``repo``: the git library; ``stats``: its usage statistics (``None``: not opened yet, see :meth:`start`);
    ``limits``: the sandbox's limits for a skill's run and a proposal's tests. ``head``: the commit of the loaded
    snapshot (``""`` before the first :meth:`reload`)."""

    def __init__(self, repo: SkillsRepo, stats_path: Path, limits: SandboxLimits) -> None:
        self.repo = repo
        self.stats_path = stats_path
        self.limits = limits
        self.stats: SkillStats | None = None
        self.head = ""
        self._skills: dict[str, SkillManifest] = {}
        self._invalid: dict[str, str] = {}

    @property
    def sandbox(self) -> Sandbox:
        """The sandbox for a proposal's tests (no network)."""
        return Sandbox(self.limits, network=False)

    async def start(self) -> None:
        """Create the repository if missing (git init and a first commit), open the statistics, load the
        registry. Raises ``SkillError("git_failed")`` (git missing or failing), ``OSError``, ``sqlite3.Error``."""
        await asyncio.to_thread(self.repo.ensure)
        self.stats = await asyncio.to_thread(SkillStats, self.stats_path)
        await self.reload()

    async def reload(self) -> list[str]:
        """Scan the working tree (HEAD) again; returns the valid skills' names (sorted)."""

        def scan() -> tuple[str, list[SkillManifest], dict[str, str]]:
            valid, invalid = self.repo.scan()
            return self.repo.head(), valid, {name: f"{e.code}: {e.message}" for name, e in invalid.items()}

        self.head, valid, self._invalid = await asyncio.to_thread(scan)
        self._skills = {m.name: m for m in valid}
        SKILLS.set(len(self._skills))
        log.info("skills_loaded", head=self.head[:12], skills=sorted(self._skills), invalid=sorted(self._invalid))
        return self.names()

    def names(self) -> list[str]:
        return sorted(self._skills)

    def specs(self) -> list[ToolSpec]:
        """One tool ``skill__<name>`` per valid skill, by name."""
        return [skill_tool_spec(self._skills[name]) for name in self.names()]

    async def run(self, tool: str, arguments: dict[str, Any], workspace: Path, network: bool) -> ToolOutput:
        """Run the skill of tool name ``tool`` in the sandbox (``network`` as the dispatch granted) with
        ``workspace`` as its working directory (:func:`~hermes_tools.skills.run.run_skill`). Raises
        ``ToolError("unknown_tool")`` when the loaded library has no such skill, and run_skill's ToolErrors."""
        manifest = self._skills.get(tool.removeprefix(TOOL_PREFIX)) if is_skill_tool(tool) else None
        if manifest is None:
            raise ToolError("unknown_tool", f"no skill named {tool.removeprefix(TOOL_PREFIX)!r} in the library")
        return await run_skill(manifest, self.repo.path, arguments, Sandbox(self.limits, network=network), workspace)

    async def record(self, tool: str, error_code: str | None, is_error: bool, duration_ms: float) -> None:
        """Count one run of ``tool``: ok when it completed without error (``hermes_skill_runs_total`` outcome
        ``ok``; ``error``: it ran and exited non-zero; ``failed``: refused or broke, e.g. ``unknown_tool``)."""
        name = tool.removeprefix(TOOL_PREFIX)
        outcome = "failed" if error_code is not None else "error" if is_error else "ok"
        SKILL_RUNS.labels(name, outcome).inc()
        if self.stats is not None and name in self._skills:
            await asyncio.to_thread(self.stats.record, name, outcome == "ok", duration_ms, 0)

    async def reply(self, log_limit: int) -> SkillsReply:
        """The library's view: the loaded skills with their statistics, the invalid folders, the newest
        ``log_limit`` commits (1..200)."""
        limit = max(1, min(int(log_limit), MAX_LOG))
        stats = await asyncio.to_thread(self.stats.stats) if self.stats is not None else {}
        history = await asyncio.to_thread(self.repo.log, limit)
        views = []
        for name in self.names():
            m, used = self._skills[name], stats.get(name, {})
            views.append(
                SkillView(
                    name=m.name,
                    tool=skill_tool_spec(m).name,
                    description=m.description,
                    tags=list(m.tags),
                    version=str(m.version),
                    inputs=dict(m.inputs),
                    uses=int(used.get("uses", 0)),
                    success_rate=used.get("success_rate"),
                    mean_ms=used.get("mean_ms"),
                    tokens_saved=int(used.get("tokens_saved", 0)),
                )
            )
        return SkillsReply(head=self.head, skills=views, invalid=dict(self._invalid), log=history)

    # ---- history look-ups (blocking: call from a worker thread) ----------------------------------------------

    def find_commit(self, text: str, subject_end: bool = False) -> str | None:
        """The newest commit of HEAD's history whose message holds ``text`` (a fixed string) or, with
        ``subject_end``, whose subject (first line) ends with it (a revert's subject quotes it inside ``"``), or
        None."""
        done = self.repo._git("log", "-F", f"--grep={text}", "--format=%H%x1f%s")
        for line in done.stdout.splitlines():
            sha, _, subject = line.partition("\x1f")
            if not subject_end or subject.rstrip().endswith(text):
                return sha
        return None

    def resolve(self, sha: str) -> str | None:
        """The full sha of commit ``sha`` (hex, 4-64 characters), None when it names no commit."""
        if not sha or len(sha) > 64 or any(c not in "0123456789abcdefABCDEF" for c in sha):
            return None
        done = self.repo._git("rev-parse", "--verify", "-q", f"{sha}^{{commit}}", check=False)
        return done.stdout.strip() if done.returncode == 0 else None

    def message(self, sha: str) -> str:
        """The full message of commit ``sha``."""
        return self.repo._git("log", "-n1", "--format=%B", sha).stdout.strip()

    def close(self) -> None:
        if self.stats is not None:
            self.stats.close()
