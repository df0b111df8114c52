"""The skills library in a backup (:mod:`hermes_proto.backup`): a ``git bundle`` of every ref, and the repository
re-created from it.

An archive is not trusted: its ``skills_head`` is accepted only as a commit id (40 or 64 hex digits) or a branch
name (:func:`valid_head`), the repository is re-created in a folder that must not exist yet (nothing of the archive
can be in it first: no ``.git/config``, no hooks) and every git command runs without the system's and the user's
git configuration, with ``core.fsmonitor`` unset and hooks off, so no command of the archive's choosing ever runs.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

GIT = [
    "git",
    "-c",
    "core.fsmonitor=",
    "-c",
    "core.hooksPath=/dev/null",
    "-c",
    "init.defaultBranch=main",
]
_SHA = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
_BRANCH = re.compile(r"refs/heads/[A-Za-z0-9_][A-Za-z0-9._-]*(/[A-Za-z0-9_][A-Za-z0-9._-]*)*")


def valid_head(head: str) -> bool:
    """Whether ``head`` can be a bundled repository's HEAD: a commit id (40 or 64 lowercase hex digits) or
    ``refs/heads/<name>`` (components of letters, digits, ``.``, ``_``, ``-``, none starting with ``.`` or ``-``,
    no ``..``, no ``.lock`` ending). Never something git could take for an option."""
    if _SHA.fullmatch(head):
        return True
    return bool(_BRANCH.fullmatch(head)) and ".." not in head and not head.endswith((".lock", "."))


def bundle_skills(home: Path, target: Path) -> str | None:
    """Write a git bundle of every ref of ``home/skills`` to ``target`` when it is a git repository with a commit;
    returns the ref HEAD points to (``refs/heads/main``, or a sha when detached), None when there is nothing to
    bundle. Raises ``OSError`` or ``subprocess.CalledProcessError`` when git fails."""
    repo = home / "skills"
    if not (repo / ".git").exists() or git(repo, "rev-parse", "--verify", "-q", "HEAD", check=False).returncode:
        return None
    git(repo, "bundle", "create", "-q", str(target), "--all")
    head = git(repo, "symbolic-ref", "-q", "HEAD", check=False)
    return head.stdout.strip() if head.returncode == 0 else git(repo, "rev-parse", "HEAD").stdout.strip()


def unbundle_skills(bundle: Path, repo: Path, head: str) -> None:
    """Re-create the skills repository at ``repo`` (a folder that must not exist yet: created here, empty) from
    ``bundle`` (every ref, HEAD at ``head``, the working tree checked out). Raises ``ValueError`` for a ``head``
    that :func:`valid_head` refuses, ``FileExistsError`` when ``repo`` exists, ``subprocess.CalledProcessError``
    when git fails (e.g. a bundle that does not verify)."""
    if not valid_head(head):
        raise ValueError(f"{head!r} is neither a commit id nor a branch")
    repo.mkdir(mode=0o755)
    git(repo, "init", "-q", "--template=")
    git(repo, "bundle", "verify", "-q", str(bundle))
    git(repo, "fetch", "-q", "--no-tags", "--update-head-ok", str(bundle), "+refs/*:refs/*")
    if head.startswith("refs/"):
        git(repo, "symbolic-ref", "HEAD", head)
        git(repo, "reset", "-q", "--hard")
    else:
        git(repo, "checkout", "-q", "--detach", head)


def git(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """``git -C repo args`` with fsmonitor and hooks off, neither system nor global configuration read (nor any
    ``GIT_*`` variable of the environment passed on), no prompt; output captured as text."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(
        {"GIT_TERMINAL_PROMPT": "0", "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": "/dev/null", "LC_ALL": "C"}
    )
    argv = [*GIT, "-c", f"safe.directory={repo}", "-C", str(repo), *args]
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120, check=check)
