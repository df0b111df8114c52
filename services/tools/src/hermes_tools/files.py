"""The file tools' operations, run INSIDE the sandbox (``python -I -c <this file's source> <op>``, the request as
JSON on stdin, the reply as JSON on stdout): read, list, search, write and edit below ``/workspace``.

Why inside: the tool service runs as root next to its own secrets; here the operation runs as the sandbox user in
a mount namespace where only the workspace is writable and nothing secret is mounted, so even a path check that a
race defeated (a symlink swapped in by a running command) reaches nothing. The host checks the path first
(:func:`hermes_tools.workspace.resolve_inside`, for clear errors); this helper checks it again on what the sandbox
sees (realpath under ``/workspace``). Only the stdlib and ``wcmatch`` are imported: the package itself is not
mounted in the sandbox.

Reply: ``{"ok": true, "text": str, "data": {...}}`` or ``{"ok": false, "code": str, "message": str}``.
"""

from __future__ import annotations

import json
import os
import re
import stat
import sys
import tempfile
from datetime import UTC, datetime

ROOT = "/workspace"
MAX_TEXT_CHARS = 200_000  # of one reply's text; the caller cuts further for the model
MAX_SEARCH_FILE_BYTES = 5 * 1024 * 1024
SKIP_DIRS = frozenset({".git", ".hg", ".svn"})


class Refused(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def inside(rel: str) -> str:
    """The real path of ``rel`` below :data:`ROOT`; :class:`Refused` when it resolves outside."""
    real = os.path.realpath(os.path.join(ROOT, rel))
    if real != ROOT and not real.startswith(ROOT + "/"):
        raise Refused("path_outside_workspace", f"{rel!r} is outside the workspace")
    return real


def shown(real: str) -> str:
    return os.path.relpath(real, ROOT)


def is_binary(head: bytes) -> bool:
    return b"\x00" in head


def read_text(real: str, strict: bool = False) -> str:
    if not os.path.lexists(real):
        raise Refused("file_not_found", f"{shown(real)} does not exist")
    if os.path.isdir(real):
        raise Refused("is_a_directory", f"{shown(real)} is a directory")
    with open(real, "rb") as handle:
        data = handle.read()
    if is_binary(data[:8192]):
        raise Refused("binary_file", f"{shown(real)} is a binary file")
    try:
        return data.decode("utf-8", "strict" if strict else "replace")
    except UnicodeDecodeError:
        raise Refused("not_utf8", f"{shown(real)} is not UTF-8 text") from None


def op_read(req: dict) -> dict:
    real = inside(req["path"])
    offset = max(1, int(req.get("offset") or 1))
    limit = max(1, int(req.get("limit") or 2000))
    lines = read_text(real).splitlines(keepends=True)
    chosen = lines[offset - 1 : offset - 1 + limit]
    text, cut = "".join(chosen), False
    if len(text) > MAX_TEXT_CHARS:
        text, cut = text[:MAX_TEXT_CHARS], True
    end = offset - 1 + len(chosen)
    data = {"path": shown(real), "start_line": offset, "end_line": end, "total_lines": len(lines), "truncated": cut}
    return {"ok": True, "text": text, "data": data}


def entry_of(real: str, st: os.stat_result) -> dict:
    kind = "dir" if stat.S_ISDIR(st.st_mode) else "link" if stat.S_ISLNK(st.st_mode) else "file"
    mtime = datetime.fromtimestamp(st.st_mtime, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"path": shown(real), "type": kind, "size": 0 if kind == "dir" else st.st_size, "mtime": mtime}


def walk(top: str, recursive: bool):
    """``(real path, lstat)`` below ``top``, sorted, symlinks not followed, VCS directories not entered."""
    try:
        names = sorted(os.listdir(top))
    except OSError:
        return
    for name in names:
        path = os.path.join(top, name)
        try:
            st = os.lstat(path)
        except OSError:
            continue
        yield path, st
        if recursive and stat.S_ISDIR(st.st_mode) and name not in SKIP_DIRS:
            yield from walk(path, recursive)


def globber(pattern: str | None):
    if not pattern:
        return lambda rel: True
    from wcmatch import glob

    flags = glob.GLOBSTAR | glob.BRACE | glob.EXTGLOB | glob.DOTGLOB
    return lambda rel: glob.globmatch(rel, pattern, flags=flags)


def op_list(req: dict) -> dict:
    top = inside(req.get("path") or ".")
    if not os.path.isdir(top):
        raise Refused("not_a_directory", f"{shown(top)} is not a directory")
    matches = globber(req.get("glob"))
    most = int(req.get("max_entries") or 1000)
    entries, cut = [], False
    for real, st in walk(top, bool(req.get("recursive"))):
        if not matches(os.path.relpath(real, top)):
            continue
        if len(entries) >= most:
            cut = True
            break
        entries.append(entry_of(real, st))
    lines = [
        f"{e['type']:<4} {e['size']:>10} {e['mtime']} {e['path']}{'/' if e['type'] == 'dir' else ''}" for e in entries
    ]
    if cut:
        lines.append(f"[listing stopped at {most} entries]")
    text = "\n".join(lines) if lines else "(no entries)"
    return {"ok": True, "text": text, "data": {"entries": entries, "truncated": cut}}


def op_search(req: dict) -> dict:
    pattern = req["pattern"]
    flags = re.IGNORECASE if req.get("ignore_case") else 0
    try:
        regex = re.compile(re.escape(pattern) if req.get("literal") else pattern, flags)
    except re.error as exc:
        raise Refused("invalid_pattern", f"the pattern is not a valid regular expression: {exc}") from None
    from wcmatch import glob

    path_glob = req.get("path") or "**"
    gflags = glob.GLOBSTAR | glob.BRACE | glob.EXTGLOB
    most = int(req.get("max_matches") or 200)
    found: list[str] = []
    files, cut = set(), False
    for real, st in walk(ROOT, True):
        rel = shown(real)
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_SEARCH_FILE_BYTES:
            continue
        if not glob.globmatch(rel, path_glob, flags=gflags):
            continue
        try:
            with open(real, "rb") as handle:
                data = handle.read()
        except OSError:
            continue
        if is_binary(data[:8192]):
            continue
        for number, line in enumerate(data.decode("utf-8", "replace").splitlines(), start=1):
            if regex.search(line):
                if len(found) >= most:
                    cut = True
                    break
                found.append(f"{rel}:{number}: {line.strip()[:300]}")
                files.add(rel)
        if cut:
            break
    text = "\n".join(found) if found else "(no matches)"
    if cut:
        text += f"\n[search stopped at {most} matches]"
    return {"ok": True, "text": text, "data": {"matches": len(found), "files": len(files), "truncated": cut}}


def write_file(real: str, content: str) -> None:
    """Atomically: a temporary file in the same directory, renamed over the target (its mode kept)."""
    mode = os.stat(real).st_mode & 0o7777 if os.path.exists(real) else 0o644
    directory = os.path.dirname(real)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".hermes-write-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(content)
        os.chmod(tmp, mode)
        os.replace(tmp, real)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def op_write(req: dict) -> dict:
    real = inside(req["path"])
    if os.path.isdir(real):
        raise Refused("is_a_directory", f"{shown(real)} is a directory")
    parent = os.path.dirname(real)
    existed = os.path.exists(real)
    os.makedirs(parent, exist_ok=True)
    inside(shown(parent))  # created directories are below ROOT by construction; checked anyway
    content = req["content"]
    write_file(real, content)
    size = len(content.encode("utf-8"))
    data = {"path": shown(real), "bytes": size, "created": not existed}
    return {"ok": True, "text": f"wrote {size} bytes to {shown(real)}", "data": data}


def op_edit(req: dict) -> dict:
    real = inside(req["path"])
    old, new = req["old"], req["new"]
    text = read_text(real, strict=True)
    count = text.count(old)
    if count == 0:
        raise Refused("old_not_found", f"the text to replace was not found in {shown(real)}")
    if count > 1:
        raise Refused(
            "old_not_unique", f"the text to replace occurs {count} times in {shown(real)}; include more context"
        )
    at = text.index(old)
    line = text.count("\n", 0, at) + 1
    write_file(real, text[:at] + new + text[at + len(old) :])
    data = {"path": shown(real), "line": line, "replacements": 1}
    return {"ok": True, "text": f"replaced 1 occurrence in {shown(real)} at line {line}", "data": data}


OPERATIONS = {"read": op_read, "list": op_list, "search": op_search, "write": op_write, "edit": op_edit}


def main() -> None:
    try:
        reply = OPERATIONS[sys.argv[1]](json.loads(sys.stdin.buffer.read()))
    except Refused as exc:
        reply = {"ok": False, "code": exc.code, "message": exc.message}
    except PermissionError as exc:
        reply = {"ok": False, "code": "permission_denied", "message": f"permission denied: {exc.filename or ''}"}
    except FileNotFoundError as exc:
        reply = {"ok": False, "code": "file_not_found", "message": f"no such file: {exc.filename or ''}"}
    except OSError as exc:
        reply = {"ok": False, "code": "os_error", "message": f"{exc.strerror or exc}"}
    sys.stdout.buffer.write(json.dumps(reply, ensure_ascii=False).encode("utf-8", "replace"))


if __name__ == "__main__":
    main()
