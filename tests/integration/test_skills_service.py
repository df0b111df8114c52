"""The skills library inside the real tool service process, against a real NATS: proposals validated (ruff, bandit,
the skill's tests in the bubblewrap sandbox), an approved one committed to the git library under the service's
``HERMES_HOME`` and offered as ``skill__<name>`` without a restart, a dispatched call of it run in the sandbox,
``hermes.query.skills``, an approval delivered twice committed once, and a rollback. The test appends the
orchestrator's events itself (admin rights, no bus authorization), as other tool-service tests do.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import stored_events, thread_events, wait_until
from procs import ServiceProcess, start_ready

from hermes_proto import agents as ag
from hermes_proto import subjects
from hermes_proto.base import Event
from hermes_proto.bus import EventStore
from hermes_proto.codec import encode
from hermes_proto.ids import new_id, utcnow
from hermes_proto.rpc import ask
from hermes_proto.skill_proposals import (
    SkillChangeRolledBack,
    SkillProposalApplied,
    SkillProposalApproved,
    SkillProposalValidated,
    SkillProposed,
    SkillRollbackRequested,
    SkillsQuery,
    SkillsReply,
)
from hermes_proto.tools import ToolsQuery, ToolsReply

from hermes_cli.natsserver import free_port

pytestmark = pytest.mark.timeout(180)
QUERY_SKILLS = "hermes.query.skills"

MANIFEST = """---
name: greet
description: Greets someone by name.
inputs: {"type": "object", "properties": {"who": {"type": "string"}}, "required": ["who"]}
---
Pass {"who": "..."}; prints a greeting, the working directory and where it ran from.
"""
RUN = """import json
import os
import sys


def greet(who: str) -> str:
    return f"hello {who}"


if __name__ == "__main__":
    args = json.load(sys.stdin)
    print(json.dumps({"greeting": greet(args["who"]), "cwd": os.getcwd(), "entry": os.path.abspath(__file__)}))
"""
SHELL_RUN = RUN.replace("import json\n", "import json\nimport subprocess\n").replace(
    '    return f"hello {who}"',
    '    return subprocess.run("echo hello " + who, shell=True, capture_output=True, text=True).stdout.strip()',
)
TEST = """import unittest

import run


class GreetTest(unittest.TestCase):
    def test_greet(self):
        self.assertEqual(run.greet("ada"), "hello ada")
"""


def skill_files(run: str = RUN) -> dict[str, str | None]:
    return {"greet/SKILL.md": MANIFEST, "greet/run.py": run, "greet/tests/test_run.py": TEST}


class Tools:
    """The running tool service, its home and metrics port, and a test client (nc, js, store)."""

    def __init__(self, proc: ServiceProcess, home: Path, metrics_port: int, nc: Any, js: Any) -> None:
        self.proc, self.home, self.metrics_port, self.nc, self.js = proc, home, metrics_port, nc, js
        self.store = EventStore(js, "test")

    @property
    def library(self) -> Path:
        return self.home / "skills"

    def git(self, *args: str) -> str:
        done = subprocess.run(["git", "-C", str(self.library), *args], capture_output=True, text=True, check=True)
        return done.stdout.strip()

    def commits_of(self, proposal_id: str) -> list[str]:
        """The commits that applied ``proposal_id`` (their subject ends with the marker; a revert's quotes it)."""
        lines = self.git("log", "--format=%H %s").splitlines()
        return [line.split()[0] for line in lines if line.endswith(f"(proposal {proposal_id})")]

    async def tools(self) -> set[str]:
        reply = await ask(self.nc, "The tool service", subjects.QUERY_TOOLS, ToolsQuery(), ToolsReply, 5.0)
        return {t.name for t in reply.tools}

    async def skills(self) -> SkillsReply:
        return await ask(self.nc, "The tool service", QUERY_SKILLS, SkillsQuery(log_limit=10), SkillsReply, 5.0)

    async def events(self, proposal_id: str) -> list[Event]:
        return await stored_events(self.js, f"hermes.evt.skill_proposal.{proposal_id}.>")

    async def wait_for(self, proposal_id: str, kind: type, count: int = 1, timeout_s: float = 60.0) -> list:
        async def found() -> list | None:
            assert self.proc.alive(), self.proc.log_text()[-3000:]
            events = [e for e in await self.events(proposal_id) if isinstance(e, kind)]
            return events if len(events) >= count else None

        return await wait_until(found, timeout_s=timeout_s, interval_s=0.2)

    def metric(self, series: str) -> float:
        text = httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).text
        line = next((ln for ln in text.splitlines() if ln.startswith(series + " ")), None)
        return float(line.split()[-1]) if line else 0.0


def envelope(aggregate_id: str) -> dict[str, Any]:
    return dict(event_id=new_id(), aggregate_id=aggregate_id, occurred_at=utcnow(), correlation_id=aggregate_id)


def proposed(proposal_id: str, files: dict[str, str | None]) -> SkillProposed:
    return SkillProposed(
        **envelope(proposal_id),
        user_id="local",
        skill="greet",
        rationale="Greeting people is common.\nA second line the commit message leaves out.",
        files=files,
    )


@pytest.fixture
async def tools(bus_env: dict[str, str], js_client: tuple, tmp_path: Path) -> AsyncIterator[Tools]:
    port = free_port()
    env = {**bus_env, "METRICS_PORT": str(port), "HERMES_SANDBOX_WALL_SECONDS": "30"}
    proc = ServiceProcess("tools", "hermes_tools", env, tmp_path / "logs")
    await start_ready(proc)
    nc, js = js_client
    try:
        yield Tools(proc, Path(bus_env["HERMES_HOME"]), port, nc, js)
    finally:
        proc.stop()


async def test_a_proposal_that_runs_a_shell_is_refused(tools: Tools):
    proposal_id = "p-shell"
    await tools.store.append([proposed(proposal_id, skill_files(SHELL_RUN))])
    (verdict,) = await tools.wait_for(proposal_id, SkillProposalValidated)
    assert not verdict.ok
    (b602,) = [f for f in verdict.findings if f["code"] == "B602"]
    assert (b602["tool"], b602["severity"], b602["file"]) == ("bandit", "high", "greet/run.py")
    assert verdict.tests["passed"] == 1  # its test passes: the finding alone refuses it
    assert verdict.base == tools.git("rev-parse", "HEAD") and "+++ b/greet/run.py" in verdict.diff
    assert "skill__greet" not in await tools.tools() and not (tools.library / "greet").exists()
    assert tools.metric('hermes_skill_proposals_validated_total{outcome="invalid"}') == 1


async def test_a_skill_is_proposed_approved_run_and_rolled_back(tools: Tools):
    proposal_id = "p-greet"
    start = tools.git("rev-parse", "HEAD")  # the service created the library (git init, a first commit)
    assert tools.git("log", "--format=%s") == "Start the skills library"

    # proposed → validated: no finding, its one test passed in the sandbox; nothing committed yet
    await tools.store.append([proposed(proposal_id, skill_files())])
    (verdict,) = await tools.wait_for(proposal_id, SkillProposalValidated)
    assert verdict.ok and verdict.findings == [], verdict.findings
    assert (verdict.tests["ran"], verdict.tests["passed"], verdict.tests["failed"]) == (1, 1, 0)
    assert verdict.base == start and "+++ b/greet/SKILL.md" in verdict.diff
    assert tools.git("rev-parse", "HEAD") == start and "skill__greet" not in await tools.tools()

    # approved → one commit in the git library, the registry reloaded without a restart
    approved = SkillProposalApproved(**envelope(proposal_id), by="ada")
    await tools.store.append([approved])
    (applied,) = await tools.wait_for(proposal_id, SkillProposalApplied)
    assert applied.skills == ["greet"] and applied.causation_id == approved.event_id
    assert tools.git("rev-parse", "HEAD") == applied.commit != start
    assert tools.git("log", "-1", "--format=%s") == f"greet: Greeting people is common. (proposal {proposal_id})"
    assert tools.git("show", f"{applied.commit}:greet/run.py") == RUN.rstrip("\n")
    assert "skill__greet" in await tools.tools()

    # a dispatched call runs the skill in the sandbox (the workspace at /workspace, the skill's copy in /tmp/skill)
    run_id = new_id()
    dispatched = ag.ToolCallDispatched(
        **envelope(run_id), call_id="call-1", name="skill__greet", arguments={"who": "ada"}, project="proj"
    )
    await tools.store.append([dispatched])

    async def outcome() -> Event | None:
        ends = (ag.ToolCallCompleted, ag.ToolCallFailed)
        return next((e for e in await thread_events(tools.js, run_id) if isinstance(e, ends)), None)

    done = await wait_until(outcome, timeout_s=60, interval_s=0.2)
    assert isinstance(done, ag.ToolCallCompleted), done
    assert not done.is_error and done.exit_code == 0, done.output
    printed = json.loads(done.output.splitlines()[0])
    assert printed == {"greeting": "hello ada", "cwd": "/workspace", "entry": "/tmp/skill/run.py"}

    view = await tools.skills()
    assert view.head == applied.commit and view.log[0]["sha"] == applied.commit and view.invalid == {}
    (greet,) = view.skills
    assert (greet.name, greet.tool, greet.uses, greet.success_rate) == ("greet", "skill__greet", 1, 1.0)
    assert greet.inputs["required"] == ["who"] and greet.mean_ms is not None and greet.mean_ms > 0

    # the same approval delivered again (a new Nats-Msg-Id gets it past the duplicate window): no second commit,
    # the same SkillProposalApplied (its derived id is dropped as a duplicate)
    offset = tools.proc.log_size()
    subject = subjects.event_subject(approved)
    await tools.js.publish(subject, encode(approved), headers={"Nats-Msg-Id": new_id()})
    await wait_until(lambda: tools.proc.logged_since(offset, "skill_proposal_already_applied"), timeout_s=30)
    assert tools.commits_of(proposal_id) == [applied.commit]
    assert tools.git("rev-parse", "HEAD") == applied.commit
    assert len([e for e in await tools.events(proposal_id) if isinstance(e, SkillProposalApplied)]) == 1

    # rolled back: a revert commit, the tool leaves the registry, a call of it fails
    await tools.store.append([SkillRollbackRequested(**envelope(proposal_id), by="ada", commit=applied.commit)])
    (rolled,) = await tools.wait_for(proposal_id, SkillChangeRolledBack)
    assert (rolled.commit, rolled.skills) == (applied.commit, [])
    assert tools.git("rev-parse", "HEAD") == rolled.revert_commit != applied.commit
    assert f"This reverts commit {applied.commit}" in tools.git("log", "-1", "--format=%B")
    assert not (tools.library / "greet").exists()
    assert "skill__greet" not in await tools.tools()
    assert (await tools.skills()).skills == []

    # the approval delivered once more after the rollback: still no second commit, the skill stays rolled back
    offset = tools.proc.log_size()
    await tools.js.publish(subject, encode(approved), headers={"Nats-Msg-Id": new_id()})
    await wait_until(lambda: tools.proc.logged_since(offset, "skill_proposal_already_applied"), timeout_s=30)
    assert tools.commits_of(proposal_id) == [applied.commit]
    assert tools.git("rev-parse", "HEAD") == rolled.revert_commit and "skill__greet" not in await tools.tools()

    again = ag.ToolCallDispatched(
        **envelope(run_id), call_id="call-2", name="skill__greet", arguments={"who": "bob"}, project="proj"
    )
    await tools.store.append([again])

    async def refused() -> Event | None:
        return next(
            (e for e in await thread_events(tools.js, run_id) if isinstance(e, ag.ToolCallFailed)),
            None,
        )

    failed = await wait_until(refused, timeout_s=30, interval_s=0.2)
    assert failed.call_id == "call-2" and failed.error_code == "unknown_tool"

    await asyncio.sleep(0.5)  # let the last counters settle before reading them
    assert tools.metric('hermes_skill_proposals_validated_total{outcome="ok"}') == 1
    assert tools.metric('hermes_skill_changes_total{change="applied"}') == 1
    assert tools.metric('hermes_skill_changes_total{change="rolled_back"}') == 1
    assert tools.metric('hermes_skill_changes_total{change="failed"}') == 0
    assert tools.metric('hermes_skill_runs_total{outcome="ok",skill="greet"}') == 1
    assert tools.metric('hermes_skill_runs_total{outcome="failed",skill="greet"}') == 1
    assert tools.metric("hermes_skills") == 0
