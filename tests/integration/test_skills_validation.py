"""Skill proposals validated for real: ruff, bandit and Hermes's checks on the proposed files, the skill's own
unittest run in the bubblewrap sandbox (no mocks), and a skill run as a tool in the sandbox.

Layout per test: ``<tmp>/home/skills`` is the library (a git repository), ``<tmp>/home/workspace/proj`` the
project's workspace. Like ``test_sandbox.py``, a sandbox that cannot start here is a failure, not a skip.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from hermes_tools.errors import ToolError
from hermes_tools.sandbox import SandboxLimits, sandbox_available
from hermes_tools.skills.checks import Finding
from hermes_tools.skills.manifest import parse_manifest
from hermes_tools.skills.repo import SkillsRepo
from hermes_tools.skills.run import Sandbox, run_skill, skill_tool_spec
from hermes_tools.skills.validate import Validation, validate_proposal
from hermes_tools.workspace import workspace_dir

MANIFEST = """---
name: {name}
description: Greets someone by name.
inputs: {{"type": "object", "properties": {{"who": {{"type": "string"}}}}, "required": ["who"]}}
tags: [demo]
version: 1
---
Pass {{"who": "..."}}; prints a greeting.
"""
RUN = """import json
import sys


def greet(who: str) -> str:
    return f"hello {who}"


if __name__ == "__main__":
    print(greet(json.load(sys.stdin)["who"]))
"""
TEST = """import unittest

import run


class GreetTest(unittest.TestCase):
    def test_greet(self):
        self.assertEqual(run.greet("ada"), "hello ada")
"""


def skill(name: str = "greet", run: str = RUN, test: str | None = TEST, **extra: str) -> dict[str, str | None]:
    files: dict[str, str | None] = {f"{name}/SKILL.md": MANIFEST.format(name=name), f"{name}/run.py": run}
    if test is not None:
        files[f"{name}/tests/test_{name}.py"] = test
    files.update({f"{name}/{path}": text for path, text in extra.items()})
    return files


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    return home


@pytest.fixture
def repo(home: Path) -> SkillsRepo:
    library = SkillsRepo(home / "skills")
    library.ensure()
    return library


@pytest.fixture
def sandbox() -> Sandbox:
    return Sandbox(SandboxLimits(wall_seconds=20))


def blocking(v: Validation) -> set[tuple[str, str, str]]:
    return {(f.tool, f.code, f.severity) for f in v.findings if f.tool == "ruff" or f.severity != "low"}


def test_the_sandbox_is_available():
    """bubblewrap is a dependency of the tool service: a sandbox that cannot start here is a failure, not a skip."""
    assert sandbox_available() is None


async def test_a_clean_skill_with_a_passing_test_validates(repo: SkillsRepo, sandbox: Sandbox):
    head = repo.head()
    v = await validate_proposal(skill(), repo, sandbox)
    assert v.findings == [] and v.ok, v
    assert (v.tests.ran, v.tests.passed, v.tests.failed) == (1, 1, 0)
    assert "test_greet (test_greet.GreetTest.test_greet) ... ok" in v.tests.output
    assert v.skills == ["greet"] and 0 < v.tests.duration_ms < 20_000
    assert repo.head() == head and not (repo.path / "greet").exists()  # validating changes nothing


async def test_shell_execution_is_refused(repo: SkillsRepo, sandbox: Sandbox):
    run = RUN.replace("import json\n", "import json\nimport subprocess\n").replace(
        '    return f"hello {who}"',
        '    return subprocess.run("echo hello " + who, shell=True, capture_output=True, text=True).stdout.strip()',
    )
    v = await validate_proposal(skill(run=run), repo, sandbox)
    assert not v.ok
    assert blocking(v) == {("bandit", "B602", "high")}, v.findings
    (finding,) = [f for f in v.findings if f.code == "B602"]
    assert finding.file == "greet/run.py" and finding.line == 7


async def test_eval_is_refused(repo: SkillsRepo, sandbox: Sandbox):
    run = RUN.replace('    return f"hello {who}"', "    return eval(\"f'hello {who}'\")")
    v = await validate_proposal(skill(run=run), repo, sandbox)
    assert not v.ok and v.tests.failed == 0  # its test passes: the finding alone refuses it
    assert blocking(v) == {("bandit", "B307", "high")}, v.findings


async def test_a_network_import_is_refused(repo: SkillsRepo, sandbox: Sandbox):
    run = RUN.replace("import sys\n", "import sys\nimport socket\n").replace(
        '    return f"hello {who}"', '    return f"hello {who} from {socket.gethostname()}"'
    )
    test = TEST.replace('"hello ada"', '"hello ada from sandbox"')  # the sandbox's hostname
    v = await validate_proposal(skill(run=run, test=test), repo, sandbox)
    assert not v.ok and v.tests.passed == 1
    assert blocking(v) == {("hermes", "network_call", "high")}, v.findings
    assert [(f.file, f.line) for f in v.findings if f.code == "network_call"] == [("greet/run.py", 3)]


async def test_a_hard_coded_password_is_refused(repo: SkillsRepo, sandbox: Sandbox):
    run = RUN.replace("import sys\n", 'import sys\n\npassword = "hunter2-correct-horse"  # nosec B105\n')
    v = await validate_proposal(skill(run=run), repo, sandbox)
    assert not v.ok and v.tests.passed == 1
    assert blocking(v) == {("bandit", "B105", "medium")}, v.findings
    assert "hunter2" not in repr(v.findings)  # a verdict may be logged: it must not repeat the secret


async def test_a_failing_test_is_refused(repo: SkillsRepo, sandbox: Sandbox):
    test = TEST + '\n    def test_shout(self):\n        self.assertEqual(run.greet("ada"), "HELLO ADA")\n'
    v = await validate_proposal(skill(test=test), repo, sandbox)
    assert not v.ok
    assert (v.tests.ran, v.tests.passed, v.tests.failed) == (2, 1, 1)
    assert blocking(v) == {("hermes", "tests_failed", "high")}, v.findings
    assert "FAIL: test_shout" in v.tests.output and "FAILED (failures=1)" in v.tests.output


async def test_a_ruff_error_is_refused(repo: SkillsRepo, sandbox: Sandbox):
    run = "import os  # noqa: F401\n" + RUN  # noqa comments are ignored
    v = await validate_proposal(skill(run=run, **{"ruff.toml": "lint.ignore = ['F']\n"}), repo, sandbox)
    assert not v.ok and v.tests.passed == 1
    assert blocking(v) == {("ruff", "F401", "medium")}, v.findings
    assert [(f.file, f.line) for f in v.findings] == [("greet/run.py", 1)]


async def test_a_skill_without_tests_is_refused(repo: SkillsRepo, sandbox: Sandbox):
    v = await validate_proposal(skill(test=None), repo, sandbox)
    assert not v.ok and v.tests.ran == 0
    assert blocking(v) == {("hermes", "tests_missing", "medium")}, v.findings
    empty = await validate_proposal(skill(test="# no test case here\n"), repo, sandbox)
    assert not empty.ok and empty.tests.ran == 0
    assert blocking(empty) == {("hermes", "tests_missing", "medium")}, empty.findings


async def test_a_bad_manifest_and_escaping_paths_are_findings(repo: SkillsRepo, sandbox: Sandbox, home: Path):
    files = skill()
    files["greet/SKILL.md"] = MANIFEST.format(name="hello")
    v = await validate_proposal(files, repo, sandbox)
    assert not v.ok and ("hermes", "name_mismatch", "high") in blocking(v)
    escape = await validate_proposal({**skill(), "../evil.py": "print(1)\n"}, repo, sandbox)
    assert not escape.ok and escape.findings == [
        Finding(tool="hermes", code="path_outside_repo", severity="high", file="../evil.py", line=0,
                message=escape.findings[0].message)
    ]  # fmt: skip
    assert escape.tests.ran == 0 and not (home / "evil.py").exists()


async def test_a_proposal_writing_outside_its_workspace_has_no_effect(
    repo: SkillsRepo, sandbox: Sandbox, home: Path, tmp_path: Path
):
    repo.apply(skill(), "Add greet")
    head = repo.head()
    marker = f"escape-{uuid.uuid4().hex}"
    targets = [
        str(repo.path / "greet" / "run.py"),  # the library itself
        str(repo.path / marker),
        str(home / marker),
        str(tmp_path / marker),
        f"/tmp/{marker}",
        f"../{marker}",
        f"../../{marker}",
    ]
    test = TEST + (
        "\n    def test_escape(self):\n"
        f"        for target in {targets!r}:\n"
        "            try:\n"
        "                with open(target, 'w') as out:\n"
        "                    out.write('pwned')\n"
        "            except OSError:\n"
        "                pass\n"
        "        print('attempted', flush=True)\n"
    )
    v = await validate_proposal(skill(test=test), repo, sandbox)
    assert "attempted" in v.tests.output and v.tests.ran == 2  # the code did run, in the sandbox
    assert not v.ok and ("hermes", "path_outside_workspace", "medium") in blocking(v), v.findings
    assert (repo.path / "greet" / "run.py").read_text() == RUN and repo.head() == head
    for path in (repo.path / marker, home / marker, tmp_path / marker, Path(f"/tmp/{marker}")):
        assert not path.exists(), path
    assert not list(Path("/tmp").glob(f"*/{marker}")) and not list(tmp_path.rglob(marker))


async def test_run_skill_runs_the_entry_in_the_sandbox(repo: SkillsRepo, sandbox: Sandbox, home: Path):
    run = RUN.replace(
        '    print(greet(json.load(sys.stdin)["who"]))',
        '    print(greet(json.load(sys.stdin)["who"]))\n'
        "    import os\n"
        "    print(os.getcwd(), os.getuid())\n"
        '    open("greeting.txt", "w").write("written in the workspace")\n'
        "    sys.exit(3)",
    )
    repo.apply(skill(run=run), "Add greet")
    (manifest,) = repo.skills()
    spec = skill_tool_spec(manifest)
    assert (spec.name, spec.description, spec.read_only) == ("skill__greet", "Greets someone by name.", False)
    assert spec.parameters == manifest.inputs
    ws = workspace_dir(home, "proj")
    out = await run_skill(manifest, repo.path, {"who": "ada"}, sandbox, ws)
    lines = out.text.splitlines()
    assert lines[0] == "hello ada" and lines[1].startswith("/workspace ") and lines[-1] == "[exit code 3]", out
    assert lines[1] != "/workspace 0"  # not root inside
    assert out.data["exit_code"] == 3 and not out.data["timed_out"]
    assert (ws / "greeting.txt").read_text() == "written in the workspace"
    assert sorted(p.name for p in ws.iterdir()) == ["greeting.txt"]  # the skill's copy is not left in the workspace
    with pytest.raises(ToolError) as caught:
        await run_skill(manifest, repo.path, {"who": 7}, sandbox, ws)
    assert caught.value.code == "invalid_arguments"


async def test_a_shell_skill_reads_its_arguments_on_stdin(repo: SkillsRepo, sandbox: Sandbox, home: Path):
    files = {
        "echoer/SKILL.md": "---\nname: echoer\ndescription: Echoes its arguments.\n---\n",
        "echoer/run.sh": 'read -r line\necho "got: $line"\necho "in: $(pwd)"\n',
    }
    repo.apply(files, "Add echoer")
    manifest = parse_manifest(repo.path / "echoer")
    assert manifest.entry == "run.sh"
    out = await run_skill(manifest, repo.path, {"x": 1}, sandbox, workspace_dir(home, "proj"))
    assert out.text.splitlines() == ['got: {"x": 1}', "in: /workspace", "[exit code 0]"], out.text
