"""A proposal's verdict: static checks of the skills it touches, then their own tests in the sandbox.

A proposal is ``{path relative to the library root: new UTF-8 text, or None to delete}``; the skills it touches
are the top-level folders of its paths. Steps: refuse any path outside the library (a ``path_outside_repo``
finding, nothing else done); copy the library's working tree to a temporary folder and write the proposal over it;
parse each touched skill's manifest; :mod:`.checks` (ruff, bandit, Hermes's AST and shell checks) on its files;
then, per touched skill, its tests in the sandbox: the folder copied into a throw-away workspace and
``python -I -c <unittest.main(discover -s tests -v)>`` (the stdlib unittest even if the skill ships a
``unittest.py``) run there without network. Nothing of the proposal runs outside the sandbox.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import shutil
import sys
import tempfile
from pathlib import Path

import msgspec

from .checks import (
    Finding,
    ast_findings,
    bandit_findings,
    blocking,
    python_files,
    ruff_findings,
    shell_findings,
)
from .manifest import SkillError, parse_manifest
from .repo import SkillsRepo, check_relpath, write_tree
from .run import Sandbox

OUTPUT_TAIL = 4000
TEST_RUNNER = (
    "import os, sys, unittest\n"
    "sys.path.insert(0, os.getcwd())\n"
    "unittest.main(module=None, argv=['unittest', 'discover', '-s', 'tests', '-v'])\n"
)
_RAN = re.compile(r"^Ran (\d+) tests? in ", re.MULTILINE)
_SUMMARY = re.compile(r"^(?:OK|FAILED)(?: \((.*)\))?\s*$", re.MULTILINE)
_VERBOSE = re.compile(r" \.\.\. (ok|FAIL|ERROR|skipped|expected failure|unexpected success)", re.MULTILINE)


class TestResult(msgspec.Struct, frozen=True, kw_only=True):
    """The touched skills' tests together. ``ran``/``passed``/``failed`` (failures, errors and unexpected
    successes; a run that crashed or was killed counts at least one) are test counts; ``output``: the last 4000
    characters of the runs' output; ``duration_ms``: their wall time."""

    __test__ = False  # not a pytest class

    ran: int = 0
    passed: int = 0
    failed: int = 0
    output: str = ""
    duration_ms: int = 0


class Validation(msgspec.Struct, frozen=True, kw_only=True):
    """``ok``: no blocking finding (:func:`~.checks.blocking`: any ruff finding, any other medium or high), and
    every touched skill still present ran at least one test and none failed; ``skills``: the touched skills."""

    ok: bool
    findings: list[Finding]
    tests: TestResult
    skills: list[str] = msgspec.field(default_factory=list)


def _hermes(code: str, file: str, message: str, severity: str = "medium") -> Finding:
    return Finding(tool="hermes", code=code, severity=severity, file=file, line=0, message=message)  # type: ignore[arg-type]


def parse_unittest(output: str, exit_code: int) -> tuple[int, int, int]:
    """``(ran, passed, failed)`` from ``unittest -v``'s report (its stderr) and exit code (see :class:`TestResult`).
    A test's own output can imitate the report: the counts are the proposal's word, the static checks are not."""
    counts = {"failures": 0, "errors": 0, "skipped": 0, "expected failures": 0, "unexpected successes": 0}
    ran_match = [None, *_RAN.finditer(output)][-1]  # the last one: unittest's own summary comes last
    if ran_match:
        ran = int(ran_match.group(1))
        summary = _SUMMARY.search(output, ran_match.end())
        for part in (summary.group(1) or "").split(",") if summary else ():
            key, _, value = part.strip().partition("=")
            if key in counts and value.isdigit():
                counts[key] = int(value)
    else:  # killed before the summary: what the verbose lines say
        marks = _VERBOSE.findall(output)
        ran = len(marks)
        counts["failures"] = sum(m in ("FAIL", "ERROR", "unexpected success") for m in marks)
        counts["skipped"] = sum(m in ("skipped", "expected failure") for m in marks)
    failed = counts["failures"] + counts["errors"] + counts["unexpected successes"]
    if exit_code != 0 and not (ran == 0 and exit_code == 5):  # 5: no tests (Python >= 3.12)
        failed = max(failed, 1)
    passed = max(0, ran - failed - counts["skipped"] - counts["expected failures"])
    return ran, passed, failed


async def _run_tests(folder: Path, sandbox: Sandbox) -> tuple[TestResult, str]:
    with tempfile.TemporaryDirectory(prefix="hermes-skill-test-") as tmp:
        workspace = Path(tmp) / "ws"
        await asyncio.to_thread(shutil.copytree, folder, workspace, symlinks=True)
        result = await sandbox.run([sys.executable, "-I", "-c", TEST_RUNNER], workspace)
    report = result.stderr.decode("utf-8", "replace")  # unittest reports on stderr
    output = result.stdout.decode("utf-8", "replace") + report
    if result.timed_out:
        output += f"\n[killed: the wall time limit of {sandbox.limits.wall_seconds:g} s was reached]"
    ran, passed, failed = parse_unittest(report, result.exit_code)
    return TestResult(ran=ran, passed=passed, failed=failed, duration_ms=result.duration_ms), output


def _static(tree: Path, folders: list[Path]) -> list[Finding]:
    py = [f for folder in folders for f in python_files(folder)]
    sh = sorted(f for folder in folders for f in folder.rglob("*.sh") if f.is_file() and not f.is_symlink())
    return [*ruff_findings(tree, py), *bandit_findings(tree, py), *ast_findings(tree, py), *shell_findings(tree, sh)]


async def validate_proposal(files: dict[str, str | None], repo: SkillsRepo, sandbox_runner: Sandbox) -> Validation:
    """The verdict on ``files`` for the library ``repo`` (see the module doc; ``sandbox_runner``: the service's
    sandbox, its network setting ignored: tests run without network). Raises ``RuntimeError`` when ruff cannot
    run and the sandbox's ``ToolError("sandbox_unavailable")``; a bad proposal is a verdict, not an error."""
    sandbox = dataclasses.replace(sandbox_runner, network=False)
    findings: list[Finding] = []
    for rel in files:
        try:
            check_relpath(repo.path, rel)
        except SkillError as exc:
            findings.append(_hermes(exc.code, str(rel)[:200], exc.message, "high"))
    if not files:
        findings.append(_hermes("empty_proposal", "", "the proposal changes no file"))
    if findings:
        return Validation(ok=False, findings=findings, tests=TestResult())
    touched = sorted({rel.split("/", 1)[0] for rel in files if "/" in rel})
    with tempfile.TemporaryDirectory(prefix="hermes-skill-proposal-") as tmp:
        tree = Path(tmp) / "tree"
        await asyncio.to_thread(repo.snapshot, tree)
        try:
            await asyncio.to_thread(write_tree, tree, files)
        except SkillError as exc:  # e.g. a file where the library has a folder
            return Validation(ok=False, findings=[_hermes(exc.code, "", exc.message, "high")], tests=TestResult())
        present = [tree / name for name in touched if (tree / name).is_dir()]
        for folder in present:
            try:
                parse_manifest(folder)
            except SkillError as exc:
                findings.append(_hermes(exc.code, f"{folder.name}/SKILL.md", exc.message, "high"))
        findings += await asyncio.to_thread(_static, tree, present)
        results: list[TestResult] = []
        outputs: list[str] = []
        for folder in present:
            if not any((folder / "tests").glob("test_*.py")):
                findings.append(_hermes("tests_missing", f"{folder.name}/tests", "no tests/test_*.py to run"))
                continue
            result, output = await _run_tests(folder, sandbox)
            results.append(result)
            outputs.append(f"== {folder.name} ==\n{output}")
            if result.ran == 0:
                findings.append(_hermes("tests_missing", f"{folder.name}/tests", "the tests ran no test"))
            elif result.failed:
                message = f"{result.failed} of {result.ran} tests failed"
                findings.append(_hermes("tests_failed", f"{folder.name}/tests", message, "high"))
    tests = TestResult(
        ran=sum(r.ran for r in results),
        passed=sum(r.passed for r in results),
        failed=sum(r.failed for r in results),
        output="\n".join(outputs)[-OUTPUT_TAIL:],
        duration_ms=sum(r.duration_ms for r in results),
    )
    return Validation(ok=not blocking(findings), findings=findings, tests=tests, skills=touched)
