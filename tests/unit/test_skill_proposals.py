"""Skill proposals without a bus: the status rule, the orchestrator's decisions (only a validated proposal can be
approved, only its owner decides, only an applied one rolls back) and the analysis that proposes a skill from
repeated agent runs (its files pass the library's own manifest parser)."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import reduce

import pytest

from hermes_proto import skill_proposals as sp
from hermes_proto.codec import decode_command, decode_event, encode
from hermes_proto.ids import new_id

from hermes_orchestrator import improver
from hermes_orchestrator.proposals import decide, evolve_proposal
from hermes_tools.skills.manifest import parse_manifest

T0 = datetime(2026, 12, 6, 7, 0, tzinfo=UTC)
FILES = {"hello/SKILL.md": "---\nname: hello\n---\n", "hello/run.py": "print('hi')\n"}


def env(name: str) -> dict:
    return {"event_id": new_id(), "aggregate_id": "p1", "occurred_at": T0, "correlation_id": name}


def proposed(**kw):
    cmd = sp.ProposeSkill(
        command_id=new_id(), issued_at=T0, proposal_id="p1", skill="hello", rationale="why", files=FILES, **kw
    )
    events, refused = decide(cmd, None, T0)
    assert refused is None
    return events


def decision(choice: str, user: str = "local") -> sp.DecideSkillProposal:
    return sp.DecideSkillProposal(command_id=new_id(), issued_at=T0, proposal_id="p1", decision=choice, user_id=user)


def test_only_a_validated_proposal_can_be_approved_by_its_owner() -> None:
    state = reduce(evolve_proposal, proposed(), None)
    assert state.status == "validating"
    assert decide(decision("approve"), state, T0) == ([], "not_awaiting_approval: validating")
    invalid = evolve_proposal(state, sp.SkillProposalValidated(**env("v"), ok=False))
    assert invalid.status == "invalid"
    assert decide(decision("approve"), invalid, T0)[1] == "not_awaiting_approval: invalid"  # never approvable

    state = reduce(evolve_proposal, proposed(), None)
    state = evolve_proposal(state, sp.SkillProposalValidated(**env("v"), ok=True))
    assert state.status == "awaiting_approval"
    assert decide(decision("approve", user="eve"), state, T0) == ([], "not_owner")
    events, _ = decide(decision("approve"), state, T0)
    assert [type(e) for e in events] == [sp.SkillProposalApproved]
    state = evolve_proposal(state, events[0])
    rollback = sp.RollbackSkillChange(command_id=new_id(), issued_at=T0, proposal_id="p1")
    assert decide(rollback, state, T0)[1] == "not_applied: approved"
    state = evolve_proposal(state, sp.SkillProposalApplied(**env("a"), commit="abc"))
    events, _ = decide(rollback, state, T0)
    assert isinstance(events[0], sp.SkillRollbackRequested) and events[0].commit == "abc"
    state = evolve_proposal(state, sp.SkillChangeRolledBack(**env("r"), commit="abc", revert_commit="def"))
    assert state.status == "rolled_back"


@pytest.mark.parametrize(
    "files",
    [{"other/run.py": "x"}, {"hello/../../etc/passwd": "x"}, {"/hello/run.py": "x"}, {"hello/.git/config": "x"}, {}],
)
def test_a_proposal_outside_its_skill_folder_is_refused(files) -> None:
    cmd = sp.ProposeSkill(
        command_id=new_id(), issued_at=T0, proposal_id="p2", skill="hello", rationale="why", files=files
    )
    events, refused = decide(cmd, None, T0)
    assert events == [] and refused is not None and refused.startswith("invalid_files")


def test_proposal_messages_round_trip() -> None:
    for e in proposed():
        assert decode_event(encode(e)) == e
    cmd = decision("reject")
    assert decode_command(encode(cmd)) == cmd


CODE = "import os\nprint(sorted(os.listdir('.')))\n"


def runs(n: int, code: str = CODE, outcome: str = "completed") -> list[improver.RunRecord]:
    return [
        improver.RunRecord(
            f"r{i}", f"list the files of the report folder {i}", "code", outcome, (("python", {"code": code}),)
        )
        for i in range(n)
    ]


def test_the_same_program_in_three_completed_runs_becomes_a_proposed_skill(tmp_path) -> None:
    assert improver.analyse(runs(2)) == []
    assert improver.analyse(runs(3, outcome="failed")) == []
    found = improver.analyse([*runs(3), *runs(2, code="print(1)")])
    assert len(found) == 1
    p = found[0]
    assert p.evidence == ["r0", "r1", "r2"] and "3 completed agent runs" in p.rationale
    assert p.files[f"{p.name}/run.py"].strip() == CODE.strip()
    for path, text in p.files.items():  # the manifest the library will parse
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text)
    manifest = parse_manifest(tmp_path / p.name)
    assert manifest.name == p.name and manifest.entry == "run.py"
    assert improver.analyse(runs(3), known_code=[CODE]) == []  # proposed before: not again
