"""Self-improvement's analysis: what the recent agent runs say the skills library lacks. Pure, no I/O.

From the runs of the last days (:class:`RunRecord`: task, outcome, the tool calls it made) it finds the **same
Python code run by the ``python`` tool in at least** :data:`MIN_REPEATS` **completed runs** (code compared after
stripping trailing spaces and blank lines): a repeated struggle the model solves by writing the same program each
time. Each becomes a proposed skill (:func:`skill_files`): ``run.py`` is that code, ``SKILL.md`` describes it from
the tasks, and ``tests/test_run.py`` runs ``run.py`` in-process (``runpy``) on an empty workspace and checks it
exits cleanly. It also counts failures by profile for the rationale. A code already in the library (its ``run.py``
text) is not proposed again."""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from hermes_proto.ids import derived_id

MIN_REPEATS = 3
MAX_CODE_CHARS = 20_000


@dataclass(frozen=True)
class RunRecord:
    """One agent run: ``outcome`` completed, failed or cancelled; ``calls`` (tool name, arguments) in order."""

    run_id: str
    task: str
    profile: str
    outcome: str
    calls: tuple[tuple[str, dict], ...] = ()


@dataclass(frozen=True)
class Proposal:
    """A skill to propose: ``name`` (``[a-z0-9_-]``), ``files`` (library paths → text), ``rationale``, ``evidence``
    (run ids)."""

    name: str
    files: dict[str, str]
    rationale: str
    evidence: list[str] = field(default_factory=list)


def normalise_code(code: str) -> str:
    return "\n".join(line.rstrip() for line in code.strip().splitlines() if line.strip())


def skill_name(tasks: Sequence[str], code: str) -> str:
    """``auto-<words>-<hash>``: up to three words shared by the tasks, then 6 hex characters of the code."""
    common = None
    for task in tasks:
        words = [w for w in re.findall(r"[a-z0-9]+", task.lower()) if len(w) > 3]
        common = words if common is None else [w for w in common if w in words]
    words = (common or ["task"])[:3]
    return "-".join(["auto", *words, derived_id(code)[:6]])[:40]


def skill_files(name: str, code: str, tasks: Sequence[str]) -> dict[str, str]:
    examples = "; ".join(sorted(set(t.strip().replace("\n", " ")[:80] for t in tasks))[:3])
    description = f"Runs the program agents wrote for tasks like: {examples}".replace('"', "'")[:480]
    manifest = (
        "---\n"
        f"name: {name}\n"
        f'description: "{description}"\n'
        "tags: [auto]\n"
        "version: 1\n"
        "entry: run.py\n"
        "---\n\n"
        f"# {name}\n\nProposed by Hermes's self-improvement loop from repeated agent runs.\n"
    )
    test = (
        "import io\n"
        "import os\n"
        "import runpy\n"
        "import sys\n"
        "import tempfile\n"
        "import unittest\n"
        "from contextlib import redirect_stdout\n\n"
        "HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))\n\n\n"
        "class RunTest(unittest.TestCase):\n"
        "    def test_runs_in_an_empty_workspace(self):\n"
        "        cwd = os.getcwd()\n"
        "        with tempfile.TemporaryDirectory() as folder:\n"
        "            os.chdir(folder)\n"
        "            sys.stdin = io.StringIO('{}')\n"
        "            out = io.StringIO()\n"
        "            try:\n"
        "                with redirect_stdout(out):\n"
        "                    runpy.run_path(os.path.join(HERE, 'run.py'), run_name='__main__')\n"
        "            except SystemExit as done:\n"
        "                self.assertIn(done.code, (0, None))\n"
        "            finally:\n"
        "                os.chdir(cwd)\n"
        "                sys.stdin = sys.__stdin__\n\n\n"
        "if __name__ == '__main__':\n"
        "    unittest.main()\n"
    )
    return {f"{name}/SKILL.md": manifest, f"{name}/run.py": code + "\n", f"{name}/tests/test_run.py": test}


def analyse(runs: Iterable[RunRecord], known_code: Iterable[str] = ()) -> list[Proposal]:
    """The skills the runs call for (see the module's docstring), most repeated first."""
    runs = list(runs)
    known = {normalise_code(c) for c in known_code}
    by_code: dict[str, list[RunRecord]] = defaultdict(list)
    original: dict[str, str] = {}
    for run in runs:
        if run.outcome != "completed":
            continue
        seen: set[str] = set()
        for name, arguments in run.calls:
            code = arguments.get("code") if name == "python" else None
            if isinstance(code, str) and 0 < len(code) <= MAX_CODE_CHARS:
                key = normalise_code(code)
                if key and key not in seen:
                    seen.add(key)
                    by_code[key].append(run)
                    original.setdefault(key, code.strip())
    failures = Counter(r.profile for r in runs if r.outcome == "failed")
    failed = ", ".join(f"{profile}: {n}" for profile, n in failures.most_common()) or "none"
    proposals = []
    for code, used in sorted(by_code.items(), key=lambda kv: -len(kv[1])):
        if len(used) < MIN_REPEATS or code in known:
            continue
        tasks = [r.task for r in used]
        name = skill_name(tasks, code)
        code = original[code]
        rationale = (
            f"{len(used)} completed agent runs wrote and ran the same Python program with the python tool "
            f"(tasks like {tasks[0][:100]!r}). As a skill the model calls it in one step instead of writing it "
            f"again, which saves the program's tokens on every run. Failed runs by profile in the window: {failed}."
        )
        proposals.append(Proposal(name, skill_files(name, code, tasks), rationale, [r.run_id for r in used][:50]))
    return proposals
