"""The skills library without the sandbox: manifests (every error code), the git repository for real (ensure,
apply, diff, rollback, log, refused paths) in ``tmp_path``, the static checks of shell scripts and Python, and the
usage statistics in a real SQLite file."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from hermes_tools.skills.checks import ast_findings, shell_findings
from hermes_tools.skills.manifest import SkillError, SkillManifest, parse_manifest
from hermes_tools.skills.repo import SkillsRepo
from hermes_tools.skills.stats import SkillStats
from hermes_tools.skills.validate import parse_unittest

MANIFEST = """---
name: {name}
description: Counts the words of a text.
inputs: {{"type": "object", "properties": {{"text": {{"type": "string"}}}}, "required": ["text"]}}
tags: [text, count]
version: 2
---
Give it a text, it answers the number of words.
"""
RUN = "import json\nimport sys\n\nprint(len(json.load(sys.stdin)['text'].split()))\n"


def make_skill(root: Path, name: str = "wc", manifest: str | None = None, entries=("run.py",)) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    if manifest is not False:
        (folder / "SKILL.md").write_text(manifest if manifest is not None else MANIFEST.format(name=name))
    for entry in entries:
        (folder / entry).write_text(RUN if entry.endswith(".py") else "echo hi\n")
    return folder


def skill_files(name: str = "wc", run: str = RUN) -> dict[str, str | None]:
    return {f"{name}/SKILL.md": MANIFEST.format(name=name), f"{name}/run.py": run}


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout


def refused_code(folder: Path) -> str:
    with pytest.raises(SkillError) as caught:
        parse_manifest(folder)
    return caught.value.code


# --- manifests ---------------------------------------------------------------------------------------------------


def test_a_manifest_is_parsed_with_its_defaults(tmp_path: Path):
    manifest = parse_manifest(make_skill(tmp_path))
    assert manifest == SkillManifest(
        name="wc",
        description="Counts the words of a text.",
        inputs={"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]},
        tags=["text", "count"],
        version=2,
        entry="run.py",
    )
    bare = make_skill(tmp_path, "bare", "---\nname: bare\ndescription: x\nversion: 1.2.3-rc.1\n---\n", ("run.sh",))
    assert parse_manifest(bare) == SkillManifest(
        name="bare", description="x", inputs={"type": "object", "properties": {}}, tags=[], version="1.2.3-rc.1",
        entry="run.sh",
    )  # fmt: skip


def test_a_folder_without_skill_md_is_manifest_missing(tmp_path: Path):
    assert refused_code(make_skill(tmp_path, manifest=False)) == "manifest_missing"


@pytest.mark.parametrize(
    "front",
    [
        "name: wc\ndescription: no opening line",  # no --- at all
        "---\nname: wc\ndescription: never closed\n",
        "---\nname: wc\ndescription: [unclosed\n---\n",  # bad YAML
        "---\n- a list\n---\n",
        "---\nname: WC!\ndescription: x\n---\n",
        "---\nname: wc\n---\n",  # no description
        f"---\nname: wc\ndescription: {'x' * 501}\n---\n",
        "---\nname: wc\ndescription: x\ninput: {}\n---\n",  # unknown key (a typo of inputs)
        "---\nname: wc\ndescription: x\nversion: 0\n---\n",
        "---\nname: wc\ndescription: x\nversion: 1.0\n---\n",  # a float, not semver
        "---\nname: wc\ndescription: x\ntags: text\n---\n",
        '---\nname: wc\ndescription: x\ninputs: {"type": "string"}\n---\n',
        '---\nname: wc\ndescription: x\ninputs: {"type": "object", "properties": 3}\n---\n',
        "---\nname: wc\ndescription: x\nentry: main.py\n---\n",
        "---\nname: wc\ndescription: &d x\ntags: [*d]\n---\n",  # aliases
    ],
)
def test_a_bad_front_matter_is_manifest_invalid(tmp_path: Path, front: str):
    assert refused_code(make_skill(tmp_path, manifest=front + "\nbody\n")) == "manifest_invalid"


def test_both_entries_without_entry_key_is_manifest_invalid(tmp_path: Path):
    assert refused_code(make_skill(tmp_path, entries=("run.py", "run.sh"))) == "manifest_invalid"
    named = make_skill(tmp_path, "two", "---\nname: two\ndescription: x\nentry: run.sh\n---\n", ("run.py", "run.sh"))
    assert parse_manifest(named).entry == "run.sh"


def test_a_name_other_than_the_folder_is_name_mismatch(tmp_path: Path):
    assert refused_code(make_skill(tmp_path, "wc", MANIFEST.format(name="words"))) == "name_mismatch"


def test_a_missing_entry_is_entry_missing(tmp_path: Path):
    assert refused_code(make_skill(tmp_path, entries=())) == "entry_missing"
    named = make_skill(tmp_path, "sh", "---\nname: sh\ndescription: x\nentry: run.sh\n---\n", ("run.py",))
    assert refused_code(named) == "entry_missing"


# --- the git repository ------------------------------------------------------------------------------------------


@pytest.fixture
def repo(tmp_path: Path, monkeypatch) -> SkillsRepo:
    """A fresh library with no global git configuration at all (an empty HOME)."""
    home = tmp_path / "empty-home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("GIT_DIR", str(tmp_path / "elsewhere"))  # a caller's GIT_* must not redirect git
    library = SkillsRepo(tmp_path / "home" / "skills")
    library.ensure()
    monkeypatch.delenv("GIT_DIR")
    return library


def test_ensure_makes_a_repository_with_one_commit_and_is_idempotent(repo: SkillsRepo, tmp_path: Path):
    assert (repo.path / ".git").is_dir() and not (tmp_path / "elsewhere").exists()
    head = repo.head()
    assert len(head) == 40 and git(repo.path, "rev-list", "--count", "HEAD").strip() == "1"
    assert git(repo.path, "log", "-1", "--format=%an <%ae>").strip() == "Hermes <hermes@localhost>"
    repo.ensure()
    assert repo.head() == head
    assert [e["sha"] for e in repo.log(10)] == [head]


def test_apply_writes_commits_and_deletes(repo: SkillsRepo):
    first = repo.head()
    sha = repo.apply({**skill_files(), "wc/tests/test_wc.py": "import unittest\n"}, "Add wc")
    assert sha != first and sha == repo.head() == git(repo.path, "rev-parse", "HEAD").strip()
    assert (repo.path / "wc" / "run.py").read_text() == RUN
    assert git(repo.path, "show", f"{sha}:wc/run.py") == RUN
    assert git(repo.path, "status", "--porcelain") == ""
    assert [m.name for m in repo.skills()] == ["wc"]
    assert repo.apply(skill_files(), "Nothing new") == sha  # no change, no commit
    deleted = repo.apply({"wc/tests/test_wc.py": None, "wc/absent.txt": None}, "Drop the test")
    assert deleted != sha and not (repo.path / "wc" / "tests").exists()  # the emptied folder is gone too
    assert "wc/tests/test_wc.py" not in git(repo.path, "ls-files")


def test_invalid_skills_are_reported_apart(repo: SkillsRepo):
    repo.apply({**skill_files(), "broken/SKILL.md": "no front matter\n", "lost/run.py": RUN}, "Mixed")
    valid, invalid = repo.scan()
    assert [m.name for m in valid] == ["wc"] and [m.name for m in repo.skills()] == ["wc"]
    assert {name: err.code for name, err in invalid.items()} == {
        "broken": "manifest_invalid",
        "lost": "manifest_missing",
    }


@pytest.mark.parametrize(
    "path",
    ["../outside.py", "/tmp/abs.py", "wc/../../outside.py", ".git/config", "wc/.GIT/hooks/x", "", "wc//x", "a\\..\\b"],
)
def test_paths_that_escape_the_repository_are_refused(repo: SkillsRepo, tmp_path: Path, path: str):
    head = repo.head()
    before = sorted(p.name for p in tmp_path.rglob("*"))
    for call in (
        lambda: repo.apply({"wc/ok.py": "x = 1\n", path: "pwned\n"}, "Escape"),
        lambda: repo.diff({path: "x"}),
    ):
        with pytest.raises(SkillError) as caught:
            call()
        assert caught.value.code == "path_outside_repo"
    assert repo.head() == head and not (repo.path / "wc").exists()  # nothing written, not even the good path
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_a_symlink_out_of_the_repository_is_refused(repo: SkillsRepo, tmp_path: Path):
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, repo.path / "link")
    with pytest.raises(SkillError) as caught:
        repo.apply({"link/evil.py": "x\n"}, "Through a link")
    assert caught.value.code == "path_outside_repo" and list(outside.iterdir()) == []


def test_diff_shows_the_change_without_writing(repo: SkillsRepo):
    repo.apply(skill_files(), "Add wc")
    head = repo.head()
    proposal = {
        "wc/run.py": RUN.replace("split()", "split(' ')"),
        "wc/README.md": "hello\n",
        "wc/SKILL.md": None,
        "wc/never.txt": None,
    }
    diff = repo.diff(proposal)
    assert "--- a/wc/run.py\n+++ b/wc/run.py\n" in diff
    assert (
        "-print(len(json.load(sys.stdin)['text'].split()))\n+print(len(json.load(sys.stdin)['text'].split(' ')))\n"
        in diff
    )
    assert "--- /dev/null\n+++ b/wc/README.md\n" in diff and "+hello\n" in diff
    assert "--- a/wc/SKILL.md\n+++ /dev/null\n" in diff and "-name: wc\n" in diff
    assert "never.txt" not in diff
    assert repo.diff({"wc/run.py": RUN}) == ""
    assert repo.head() == head and git(repo.path, "status", "--porcelain") == ""
    assert not (repo.path / "wc" / "README.md").exists() and (repo.path / "wc" / "SKILL.md").exists()


def test_rollback_reverts_a_commit(repo: SkillsRepo):
    added = repo.apply(skill_files(), "Add wc")
    changed = repo.apply({"wc/run.py": "print('v2')\n"}, "Change wc")
    reverted = repo.rollback(changed)
    assert reverted not in (added, changed) and repo.head() == reverted
    assert (repo.path / "wc" / "run.py").read_text() == RUN
    assert repo.log(1)[0]["message"].startswith('Revert "Change wc"')
    assert git(repo.path, "status", "--porcelain") == ""


def test_a_conflicting_rollback_fails_and_leaves_the_repository_clean(repo: SkillsRepo):
    repo.apply(skill_files(), "Add wc")
    v2 = repo.apply({"wc/run.py": "print('v2')\n"}, "v2")
    v3 = repo.apply({"wc/run.py": "print('v3')\n"}, "v3")
    with pytest.raises(SkillError) as caught:
        repo.rollback(v2)  # v3 changed the same line since
    assert caught.value.code == "rollback_failed"
    assert repo.head() == v3 and (repo.path / "wc" / "run.py").read_text() == "print('v3')\n"
    assert git(repo.path, "status", "--porcelain") == ""
    assert not (repo.path / ".git" / "REVERT_HEAD").exists()


def test_rollback_of_unknown_or_first_commits_is_refused(repo: SkillsRepo):
    first = repo.head()
    for sha, code in (("0" * 40, "unknown_commit"), ("--hard", "unknown_commit"), (first, "rollback_failed")):
        with pytest.raises(SkillError) as caught:
            repo.rollback(sha)
        assert caught.value.code == code, sha
    assert repo.head() == first


def test_log_lists_the_newest_first(repo: SkillsRepo):
    a = repo.apply(skill_files("a"), "Add a\n\nwith a body")
    b = repo.apply(skill_files("b"), "Add b")
    entries = repo.log(2)
    assert [e["sha"] for e in entries] == [b, a]
    assert entries[1]["message"] == "Add a\n\nwith a body"
    assert all(isinstance(e["time"], int) and abs(e["time"] - time.time()) < 600 for e in entries)
    assert len(repo.log(50)) == 3


# --- Hermes's own static checks (no sandbox) ---------------------------------------------------------------------


def test_the_shell_scan_flags_network_privilege_eval_and_rm_root(tmp_path: Path):
    script = tmp_path / "s" / "run.sh"
    script.parent.mkdir()
    script.write_text(
        "#!/bin/sh\n"
        "# curl in a comment is fine\n"
        "echo safe\n"
        "out=$(/usr/bin/curl -s http://x)\n"
        "wget -q http://x\n"
        "cat < /dev/tcp/10.0.0.1/80\n"
        "echo x | nc host 1\n"
        "sudo true\n"
        'eval "$1"\n'
        "rm -rf / \n"
        "rm -rf ./build\n"
    )
    found = {(f.line, f.code) for f in shell_findings(tmp_path, [script])}
    assert found == {
        (4, "network_call"),
        (5, "network_call"),
        (6, "network_call"),
        (7, "network_call"),
        (8, "privilege"),
        (9, "dynamic_code"),
        (10, "destructive"),
    }
    assert {f.file for f in shell_findings(tmp_path, [script])} == {"s/run.sh"}


def test_the_ast_check_flags_network_imports_and_paths_out_of_the_workspace(tmp_path: Path):
    code = tmp_path / "s" / "run.py"
    code.parent.mkdir()
    code.write_text(
        '"""Reads /etc/passwd? No: a docstring is not a path."""\n'
        "import json\n"
        "import urllib.parse\n"
        "from urllib import request\n"
        "import http.client as hc\n"
        "import importlib\n"
        "m = importlib.import_module('socket')\n"
        "open('/etc/hosts')\n"
        "open('data/../../x')\n"
        "open('notes.txt')\n"
        "'a/b'.split('/')\n"
        "p = json / '..'\n"
        "open(f'~/{m}')\n"
    )
    found = {(f.line, f.code, f.severity) for f in ast_findings(tmp_path, [code])}
    assert found == {
        (4, "network_call", "high"),
        (5, "network_call", "high"),
        (7, "network_call", "high"),
        (8, "path_outside_workspace", "medium"),
        (9, "path_outside_workspace", "medium"),
        (12, "path_outside_workspace", "medium"),
        (13, "path_outside_workspace", "medium"),
    }


def test_unittest_reports_are_counted():
    ok = "t (m.T.t) ... ok\nu (m.T.u) ... skipped 'x'\n\n---\nRan 2 tests in 0.001s\n\nOK (skipped=1)\n"
    assert parse_unittest(ok, 0) == (2, 1, 0)
    fake = "Ran 9 tests in 0.1s\n\nOK\n"  # a test printing a report of its own before the real one
    failed = fake + "Ran 4 tests in 0.1s\n\nFAILED (failures=1, errors=1, expected failures=1)\n"
    assert parse_unittest(failed, 1) == (4, 1, 2)
    assert parse_unittest("\n---\nRan 0 tests in 0.000s\n\nNO TESTS RAN\n", 5) == (0, 0, 0)
    killed = "a (m.T.a) ... ok\nb (m.T.b) ... FAIL\nc (m.T.c) ... "  # killed mid-run: no summary
    assert parse_unittest(killed, -9) == (2, 1, 1)
    assert parse_unittest("Traceback ...\nImportError\n", 1) == (0, 0, 1)


# --- usage statistics --------------------------------------------------------------------------------------------


def test_stats_aggregate_per_skill_and_persist(tmp_path: Path):
    path = tmp_path / "home" / "skills.db"
    stats = SkillStats(path)
    assert stats.stats() == {}
    stats.record("wc", True, 100, tokens_saved=500)
    stats.record("wc", False, 300, tokens_saved=0)
    stats.record("wc", True, 200, tokens_saved=250)
    stats.record("greet", True, 10, tokens_saved=-5)
    stats.close()
    reopened = SkillStats(path)
    assert reopened.stats() == {
        "greet": {"uses": 1, "success_rate": 1.0, "mean_ms": 10.0, "tokens_saved": 0},
        "wc": {"uses": 3, "success_rate": pytest.approx(2 / 3), "mean_ms": 200.0, "tokens_saved": 750},
    }
    reopened.forget("greet")
    assert list(reopened.stats()) == ["wc"]
    reopened.close()
