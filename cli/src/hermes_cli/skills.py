"""``hermes skills``: the skills library and the proposals that change it. ``hermes skills`` lists the skills with
their usage; ``proposals`` lists proposals (``--status``); ``show ID`` prints one with its findings, test results
and diff; ``propose FOLDER`` proposes a skill folder (``SKILL.md``, code, ``tests/``); ``approve``/``reject ID``
decide one that passed validation; ``rollback ID`` reverts an applied one; ``improve`` analyses recent runs now."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from hermes_cli.common import TokenOption, UrlOption, clip, fail, show, table, when, with_client

HELP = "Skills: the library agents call as tools, and the proposals (validated, then approved by you) that change it."


def _print_skills(data: dict[str, Any]) -> None:
    rows = [["SKILL", "USES", "SUCCESS", "MEAN MS", "DESCRIPTION"]]
    for s in data["skills"]:
        rate = f"{s['success_rate'] * 100:.0f}%" if s.get("success_rate") is not None else "-"
        mean = f"{s['mean_ms']:.0f}" if s.get("mean_ms") is not None else "-"
        rows.append([s["name"], str(s["uses"]), rate, mean, clip(s["description"], 60)])
    typer.echo(table(rows) if len(rows) > 1 else "No skills yet.")
    for folder, why in (data.get("invalid") or {}).items():
        typer.echo(f"not loaded: {folder}: {why}")


def skills(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print the raw library as JSON.")] = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """List the library's skills with uses, success rate and mean run time."""
    if ctx.invoked_subcommand is not None:
        return
    show(with_client(url, token, lambda client: client.request("GET", "/api/skills")), as_json, _print_skills)


def _print_proposals(data: dict[str, Any]) -> None:
    rows = [["ID", "SKILL", "STATUS", "SOURCE", "CREATED", "RATIONALE"]]
    for p in data["proposals"]:
        rows.append(
            [
                p["proposal_id"],
                p["skill"],
                p["status"],
                p["source"],
                when(p.get("created_at")),
                clip(p["rationale"], 60),
            ]
        )
    typer.echo(table(rows) if len(rows) > 1 else "No proposals.")


def proposals(
    status: Annotated[str | None, typer.Option("--status", help="Only these (e.g. awaiting_approval).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the raw proposals as JSON.")] = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """List skill proposals, newest first."""
    params = {"status": status} if status else None
    data = with_client(url, token, lambda client: client.request("GET", "/api/skills/proposals", params=params))
    show(data, as_json, _print_proposals)


def _print_proposal(p: dict[str, Any]) -> None:
    typer.echo(f"{p['proposal_id']}  {p['skill']}  {p['status']}  ({p['source']})\n\n{p['rationale']}\n")
    for f in p.get("findings") or []:
        typer.echo(f"finding: [{f.get('severity')}] {f.get('tool')} {f.get('code')} {f.get('file')}:{f.get('line')}")
        typer.echo(f"  {f.get('message')}")
    tests = p.get("tests") or {}
    if tests:
        typer.echo(f"tests: {tests.get('passed', 0)} passed, {tests.get('failed', 0)} failed of {tests.get('ran', 0)}")
    if p.get("diff"):
        typer.echo("\n" + p["diff"])


def show_proposal(
    proposal_id: Annotated[str, typer.Argument(help="The proposal (see `hermes skills proposals`).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the raw proposal as JSON.")] = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """A proposal with its validation findings, test results and diff."""
    data = with_client(url, token, lambda client: client.request("GET", f"/api/skills/proposals/{proposal_id}"))
    show(data, as_json, _print_proposal)


def propose(
    folder: Annotated[Path, typer.Argument(help="A skill folder: SKILL.md, run.py or run.sh, tests/.")],
    rationale: Annotated[str, typer.Option("--why", "-m", help="Why this skill (shown to whoever approves).")],
    fix: Annotated[bool, typer.Option("--fix", help="A fix to an existing skill.")] = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Propose a skill folder: it is validated, then waits for an approval."""
    if not folder.is_dir():
        raise fail(f"{folder} is not a folder", code=2)
    files = {
        f"{folder.name}/{p.relative_to(folder).as_posix()}": p.read_text()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
        and not any(part.startswith(".") or part == "__pycache__" for part in p.relative_to(folder).parts)
    }
    body = {"skill": folder.name, "rationale": rationale, "files": files, "kind": "fix_skill" if fix else "new_skill"}
    made = with_client(url, token, lambda client: client.request("POST", "/api/skills/proposals", json=body))
    typer.echo(f"Proposal {made['proposal_id']}: validating (see `hermes skills show {made['proposal_id']}`).")


def _decision(action: str, done: str):  # noqa: ANN202
    def command(
        proposal_id: Annotated[str, typer.Argument(help="The proposal.")],
        comment: Annotated[str, typer.Option("--comment", "-m", help="Why.")] = "",
        url: UrlOption = None,
        token: TokenOption = None,
    ) -> None:
        path = f"/api/skills/proposals/{proposal_id}/{action}"
        with_client(url, token, lambda client: client.request("POST", path, json={"comment": comment}))
        typer.echo(f"Proposal {proposal_id} {done}.")

    command.__doc__ = {
        "approve": "Approve a validated proposal: it is committed to the library and its tools reload.",
        "reject": "Reject a proposal (kept, with your comment as the reason).",
    }[action]
    return command


def rollback(
    proposal_id: Annotated[str, typer.Argument(help="An applied proposal.")],
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Revert an applied change (git revert in the library; the tools reload)."""
    with_client(url, token, lambda client: client.request("POST", f"/api/skills/proposals/{proposal_id}/rollback"))
    typer.echo(f"Rolling back proposal {proposal_id}.")


def improve(url: UrlOption = None, token: TokenOption = None) -> None:
    """Analyse your recent agent runs now for skills worth proposing."""
    with_client(url, token, lambda client: client.request("POST", "/api/skills/improve"))
    typer.echo("Analysing recent runs; proposals appear in `hermes skills proposals`.")


SKILL_COMMANDS = (
    ("list", skills),
    ("proposals", proposals),
    ("show", show_proposal),
    ("propose", propose),
    ("approve", _decision("approve", "approved")),
    ("reject", _decision("reject", "rejected")),
    ("rollback", rollback),
    ("improve", improve),
)
