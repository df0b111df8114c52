"""A skill as a tool: its :class:`~hermes_proto.tools.ToolSpec` and one run in the sandbox.

How a run looks from inside: the project's workspace is the working directory (read-write, as for ``shell``);
the skill's files are in the sandbox's private ``/tmp/skill`` (a copy, written by a tiny bootstrap before it execs
the entry, so nothing of the library is mounted and nothing is added to the workspace); ``python run.py`` or
``sh run.sh`` reads the arguments, a JSON object, on stdin. No network unless the runner grants it.
"""

from __future__ import annotations

import base64
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema

from hermes_proto.tools import ToolSpec

from ..builtin import ToolOutput, _render
from ..errors import ToolError
from ..sandbox import SandboxLimits, SandboxResult, run_sandboxed
from .manifest import SkillManifest

TOOL_PREFIX = "skill__"
SKILL_DIR = "/tmp/skill"
MAX_SKILL_BYTES = 8 * 1024 * 1024
_SKIPPED = ("__pycache__", ".git")

# Runs first in the sandbox (python -I -S): writes the skill's files under /tmp/skill, puts the arguments on fd 0
# and execs the entry (the working directory stays the workspace). stdin: {"files", "entry", "arguments"}.
BOOTSTRAP = r"""
import base64, json, os, sys
spec = json.loads(sys.stdin.buffer.read())
root = "/tmp/skill"
for rel, data in spec["files"].items():
    path = os.path.join(root, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as out:
        out.write(base64.b64decode(data))
arguments = "/tmp/skill-arguments.json"
with open(arguments, "w", encoding="utf-8") as out:
    out.write(spec["arguments"])
fd = os.open(arguments, os.O_RDONLY)
os.dup2(fd, 0)
os.close(fd)
entry = os.path.join(root, spec["entry"])
argv = [sys.executable, entry] if entry.endswith(".py") else ["/bin/sh", entry]
os.execv(argv[0], argv)
"""


@dataclass(frozen=True)
class Sandbox:
    """The sandbox skills run in: :func:`~hermes_tools.sandbox.run_sandboxed` with the service's ``limits``
    (build it from the ``hermes_sandbox_*`` settings) and ``network`` (off unless granted)."""

    limits: SandboxLimits = field(default_factory=SandboxLimits)
    network: bool = False

    async def run(self, argv: list[str], workspace: Path, stdin: bytes | None = None) -> SandboxResult:
        """One sandboxed command (see :func:`~hermes_tools.sandbox.run_sandboxed`; raises its ToolErrors)."""
        return await run_sandboxed(argv, workspace, self.limits, network=self.network, stdin=stdin)


def tool_name(skill: str) -> str:
    """``skill__<name>``: the tool a skill is offered as."""
    return TOOL_PREFIX + skill


def skill_tool_spec(manifest: SkillManifest) -> ToolSpec:
    """The tool ``skill__<name>``: the manifest's description, ``inputs`` as its parameters, not read-only, no
    permission kind of its own (so the permission rules' default, ask, applies unless a rule names the tool)."""
    return ToolSpec(
        name=tool_name(manifest.name),
        description=manifest.description,
        parameters=dict(manifest.inputs),
        read_only=False,
    )


def skill_files(folder: Path) -> dict[str, bytes]:
    """Every regular file of ``folder`` by ``/``-separated relative path (``__pycache__`` skipped, symlinks not
    followed). Raises ``ToolError("skill_too_large")`` past 8 MiB in all."""
    files: dict[str, bytes] = {}
    total = 0
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if any(part in _SKIPPED for part in rel.parts) or path.is_symlink() or not path.is_file():
            continue
        data = path.read_bytes()
        total += len(data)
        if total > MAX_SKILL_BYTES:
            raise ToolError("skill_too_large", f"the skill {folder.name} holds more than {MAX_SKILL_BYTES} bytes")
        files[rel.as_posix()] = data
    return files


async def run_skill(
    manifest: SkillManifest, repo_path: Path, arguments: dict[str, Any], sandbox: Sandbox, workspace_dir: Path
) -> ToolOutput:
    """Run skill ``manifest.name`` of the library at ``repo_path`` in ``sandbox`` with ``arguments`` (checked
    against ``inputs``) on stdin and ``workspace_dir`` as the working directory. Returns what the ``shell`` tool
    returns: ``text`` = stdout, ``[stderr]``, kill notes and ``[exit code N]``; ``data`` = ``exit_code``,
    ``timed_out``, ``truncated``, ``duration_ms`` (not redacted or cut: the executor does that). Raises
    :class:`~hermes_tools.errors.ToolError`: ``invalid_arguments``, ``skill_missing`` (folder or entry gone),
    ``skill_too_large``, the sandbox's codes. A failing skill (non-zero exit) is an output, not an error."""
    if not isinstance(arguments, dict):
        raise ToolError("invalid_arguments", "the arguments must be a JSON object")
    schema = manifest.inputs
    validator = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(arguments))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "arguments"
        raise ToolError("invalid_arguments", f"{tool_name(manifest.name)}: {where}: {error.message[:300]}")
    folder = Path(repo_path) / manifest.name
    if not (folder / manifest.entry).is_file():
        raise ToolError("skill_missing", f"the skill {manifest.name} has no {manifest.entry} in the library")
    files = {rel: base64.b64encode(data).decode() for rel, data in skill_files(folder).items()}
    payload = {"files": files, "entry": manifest.entry, "arguments": json.dumps(arguments)}
    argv = [sys.executable, "-I", "-S", "-c", BOOTSTRAP]
    result = await sandbox.run(argv, Path(workspace_dir), stdin=json.dumps(payload).encode())
    text, data = _render(result, sandbox.limits)
    return ToolOutput(text=text, truncated=result.truncated, data=data)
