"""The skills library: a git repository (``$HERMES_HOME/skills``) with one folder per skill at its root.

Every change is a commit (:meth:`SkillsRepo.apply`), every undo a revert commit (:meth:`SkillsRepo.rollback`), so
the history says who changed what. Git runs as the ``git`` binary with its own identity and no hooks, signing or
terminal prompts (``-c user.name=Hermes -c user.email=hermes@localhost ...``) and none of the caller's ``GIT_*``
variables, so it works without any global configuration. Methods are blocking (call them from a worker thread) and
serialized per instance.
"""

from __future__ import annotations

import difflib
import os
import re
import shutil
import subprocess
import threading
from pathlib import Path

from .manifest import SkillError, SkillManifest, parse_manifest

_GIT_CONFIG = (
    "user.name=Hermes",
    "user.email=hermes@localhost",
    "commit.gpgsign=false",
    "core.hooksPath=/dev/null",
    "core.autocrlf=false",
    "core.quotepath=false",
    "init.defaultBranch=main",
)
_SHA = re.compile(r"[0-9a-fA-F]{4,64}")
_GIT_TIMEOUT = 60.0


def check_relpath(root: Path, rel: str) -> Path:
    """The absolute path ``rel`` (relative, ``/``-separated) names under ``root``. Raises
    ``SkillError("path_outside_repo")`` for an empty or absolute path, NUL bytes, a ``..`` or ``.git`` component
    (any case), or a path that resolves (symlinks followed) outside ``root``."""
    if not isinstance(rel, str) or not rel or "\x00" in rel or "\\" in rel:
        raise SkillError("path_outside_repo", f"{rel!r} is not a relative path inside the skills library")
    parts = rel.split("/")
    if rel.startswith("/") or any(p in ("", ".", "..") for p in parts[:-1]) or parts[-1] in ("", ".", ".."):
        raise SkillError("path_outside_repo", f"{rel!r} is not a plain relative path inside the skills library")
    if any(p.casefold() == ".git" for p in parts):
        raise SkillError("path_outside_repo", f"{rel!r} touches the repository's .git")
    real_root = Path(os.path.realpath(root))
    real = Path(os.path.realpath(real_root / rel))
    if real_root not in real.parents:
        raise SkillError("path_outside_repo", f"{rel!r} resolves outside the skills library")
    return real_root / rel


def write_tree(root: Path, files: dict[str, str | None]) -> None:
    """Write (str: UTF-8 text) or delete (None; missing is fine) each of ``files`` under ``root``, creating parent
    folders and removing folders a deletion left empty. Every path is checked (:func:`check_relpath`) first."""
    paths = {rel: check_relpath(root, rel) for rel in files}
    real_root = Path(os.path.realpath(root))
    for rel, content in files.items():
        path = paths[rel]
        if content is None:
            if path.is_file() or path.is_symlink():
                path.unlink()
            parent = path.parent
            while parent != real_root and parent.is_dir() and not any(parent.iterdir()):
                parent.rmdir()
                parent = parent.parent
        else:
            if path.is_dir():
                raise SkillError("path_outside_repo", f"{rel!r} is a folder, not a file")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content, encoding="utf-8")


class SkillsRepo:
    """The git repository at ``path`` (created by :meth:`ensure`)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()

    def _git(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        config = [f"safe.directory={self.path}", *_GIT_CONFIG]
        argv = ["git", *(x for c in config for x in ("-c", c)), "-C", str(self.path), *args]
        env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
        env.update({"GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"})
        done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=_GIT_TIMEOUT, check=False)
        if check and done.returncode != 0:
            detail = (done.stderr or done.stdout).strip()[-500:]
            raise SkillError("git_failed", f"git {args[0]} failed (exit {done.returncode}): {detail}")
        return done

    def ensure(self) -> None:
        """Create the folder and the repository if missing, with a first commit (holding whatever files were
        already there; empty for a new folder). Idempotent."""
        with self._lock:
            self.path.mkdir(parents=True, exist_ok=True)
            if not (self.path / ".git").exists():
                self._git("init", "-q")
            if self._git("rev-parse", "--verify", "-q", "HEAD", check=False).returncode != 0:
                self._git("add", "-A")
                self._git("commit", "-q", "--allow-empty", "-m", "Start the skills library")

    def head(self) -> str:
        """The sha (40 hex) of HEAD."""
        return self._git("rev-parse", "HEAD").stdout.strip()

    def scan(self) -> tuple[list[SkillManifest], dict[str, SkillError]]:
        """Every top-level folder of the working tree (hidden ones skipped), sorted by name: the valid skills'
        manifests and, by folder name, why each other one is not a valid skill."""
        valid: list[SkillManifest] = []
        invalid: dict[str, SkillError] = {}
        with self._lock:
            for folder in sorted(p for p in self.path.iterdir() if p.is_dir() and not p.name.startswith(".")):
                try:
                    valid.append(parse_manifest(folder))
                except SkillError as exc:
                    invalid[folder.name] = exc
        return valid, invalid

    def skills(self) -> list[SkillManifest]:
        """The valid skills (see :meth:`scan` for the invalid ones)."""
        return self.scan()[0]

    def snapshot(self, dest: Path) -> None:
        """Copy the working tree (without ``.git``; symlinks kept as links) to the new folder ``dest``."""
        with self._lock:
            shutil.copytree(self.path, dest, symlinks=True, ignore=shutil.ignore_patterns(".git"))

    def apply(self, files: dict[str, str | None], message: str) -> str:
        """Write/delete ``files`` (paths relative to the root -> UTF-8 text, or None to delete), ``git add -A``
        and commit with ``message``; returns the new HEAD sha (HEAD unchanged when nothing changed). Raises
        ``SkillError("path_outside_repo")`` before touching anything when any path escapes the root or touches
        ``.git``; ``git_failed`` when git does."""
        if not message.strip():
            raise SkillError("git_failed", "a commit needs a message")
        with self._lock:
            write_tree(self.path, files)
            self._git("add", "-A")
            if self._git("diff", "--cached", "--quiet", check=False).returncode != 0:
                self._git("commit", "-q", "-m", message)
            return self.head()

    def diff(self, files: dict[str, str | None]) -> str:
        """The unified diff (``a/<path>``/``b/<path>``, ``/dev/null`` for a new or deleted file) from the current
        working tree to the tree :meth:`apply` would write; nothing is written. Raises like :meth:`apply`."""
        paths = {rel: check_relpath(self.path, rel) for rel in files}
        chunks: list[str] = []
        with self._lock:
            for rel in sorted(files):
                path, new = paths[rel], files[rel]
                old = path.read_text(encoding="utf-8", errors="replace") if path.is_file() else None
                if old == new:
                    continue
                before = "/dev/null" if old is None else f"a/{rel}"
                after = "/dev/null" if new is None else f"b/{rel}"
                lines = difflib.unified_diff(
                    (old or "").splitlines(keepends=True), (new or "").splitlines(keepends=True), before, after
                )
                chunks.append("".join(line if line.endswith("\n") else line + "\n" for line in lines))
        return "".join(chunks)

    def rollback(self, sha: str) -> str:
        """Undo commit ``sha`` with ``git revert --no-edit`` (a new commit); returns the new HEAD sha. Raises
        ``SkillError("unknown_commit")`` when ``sha`` names no commit, ``rollback_failed`` when the revert cannot
        apply (a conflict with later commits, nothing to undo); the revert is then aborted, the tree as before."""
        with self._lock:
            if not isinstance(sha, str) or not _SHA.fullmatch(sha):
                raise SkillError("unknown_commit", f"{sha!r} is not a commit sha")
            found = self._git("rev-parse", "--verify", "-q", f"{sha}^{{commit}}", check=False)
            if found.returncode != 0:
                raise SkillError("unknown_commit", f"no commit {sha} in the skills library")
            commit = found.stdout.strip()
            if self._git("rev-parse", "--verify", "-q", f"{commit}^", check=False).returncode != 0:
                raise SkillError("rollback_failed", "the library's first commit cannot be rolled back")
            done = self._git("revert", "--no-edit", commit, check=False)
            if done.returncode != 0:
                if self._git("revert", "--abort", check=False).returncode != 0:
                    self._git("reset", "-q", "--hard", "HEAD")
                detail = (done.stdout + done.stderr).strip()[-300:]
                raise SkillError("rollback_failed", f"reverting {commit[:12]} did not apply: {detail}")
            return self.head()

    def log(self, limit: int = 20) -> list[dict[str, str | int]]:
        """The last ``limit`` commits, newest first: ``{"sha": 40 hex, "message": full message (stripped),
        "time": committer time in Unix seconds}``."""
        out = self._git("log", f"-n{max(1, int(limit))}", "--format=%H%x1f%ct%x1f%B%x1e").stdout
        entries: list[dict[str, str | int]] = []
        for record in out.split("\x1e"):
            if record.strip():
                sha, when, message = record.lstrip("\n").split("\x1f", 2)
                entries.append({"sha": sha, "message": message.strip(), "time": int(when)})
        return entries
