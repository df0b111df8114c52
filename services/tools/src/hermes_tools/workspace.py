"""A project's workspace: the one directory tools may change (``$HERMES_HOME/workspace/<project>``), paths inside
it and a cheap fingerprint of its files.

Inside the sandbox the workspace is mounted at :data:`SANDBOX_WORKSPACE`; an agent may give a path relative to the
workspace, absolute under the host workspace, or absolute under :data:`SANDBOX_WORKSPACE` (what it sees from
``shell``): all three name the same file.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from pathlib import Path

from .errors import ToolError

SANDBOX_WORKSPACE = "/workspace"
"""Where the sandbox mounts the workspace (read-write), and its working directory."""

PROJECT_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


def resolve_inside(workspace: Path, path: str) -> Path:
    """The real path (every symlink resolved, ``..`` applied after resolution, as the kernel would) that ``path``
    names in ``workspace``; the file need not exist. Raises ``ToolError("path_outside_workspace")`` when it
    lands outside (``../`` escapes, absolute paths elsewhere, symlinks pointing out) and
    ``ToolError("invalid_arguments")`` for an empty path or one with a NUL byte. Symlinks are resolved as the host
    sees them: a link to ``/workspace/x`` (the sandbox's view) is refused here, conservatively."""
    if not isinstance(path, str) or not path or "\x00" in path:
        raise ToolError("invalid_arguments", "a path must be a non-empty string without NUL bytes")
    root = Path(os.path.realpath(workspace))
    text = path
    if text == SANDBOX_WORKSPACE or text.startswith(SANDBOX_WORKSPACE + "/"):
        text = text[len(SANDBOX_WORKSPACE) :].lstrip("/") or "."
    candidate = Path(text) if os.path.isabs(text) else root / text
    real = Path(os.path.realpath(candidate))
    if real != root and root not in real.parents:
        raise ToolError("path_outside_workspace", f"{path!r} is outside the workspace")
    return real


def relative_inside(workspace: Path, path: str) -> str:
    """:func:`resolve_inside` as a path relative to the workspace (``.`` for the workspace itself)."""
    real = resolve_inside(workspace, path)
    return os.path.relpath(real, os.path.realpath(workspace))


def workspace_dir(home: Path, project: str) -> Path:
    """``<home>/workspace/<project>``, created (mode 0700 for new directories) if missing. ``project``:
    ``[A-Za-z0-9_-]{1,64}``, else ``ToolError("invalid_project")``."""
    if not isinstance(project, str) or not PROJECT_NAME.fullmatch(project):
        raise ToolError("invalid_project", f"project name {project!r} is not [A-Za-z0-9_-]{{1,64}}")
    path = Path(home) / "workspace" / project
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def workspace_state(workspace: Path) -> str:
    """SHA-256 hex over ``(relative path, size, mtime_ns)`` of every file, directory and symlink below
    ``workspace`` (symlinks are not followed; no content is read), in a stable order: what an approval binds to
    (:func:`hermes_proto.tools.call_binding`), so it lapses once any file changed. A missing workspace hashes
    as empty."""
    digest = hashlib.sha256()
    entries: list[tuple[str, int, int, str]] = []
    root = os.path.realpath(workspace)  # fwalk yields nothing for a top that is itself a symlink
    for top, dirs, files, dir_fd in os.fwalk(root, follow_symlinks=False):
        rel_top = os.path.relpath(top, root)
        for name in (*dirs, *files):
            try:
                st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            except FileNotFoundError:
                continue
            kind = "d" if stat.S_ISDIR(st.st_mode) else "l" if stat.S_ISLNK(st.st_mode) else "f"
            size = 0 if kind == "d" else st.st_size  # a directory's own size and mtime follow its entries
            mtime = 0 if kind == "d" else st.st_mtime_ns
            entries.append((os.path.normpath(os.path.join(rel_top, name)), size, mtime, kind))
    for rel, size, mtime, kind in sorted(entries):
        digest.update(f"{kind}\x00{rel}\x00{size}\x00{mtime}\n".encode("utf-8", "surrogateescape"))
    return digest.hexdigest()
