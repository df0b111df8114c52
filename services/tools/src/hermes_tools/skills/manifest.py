"""A skill's manifest: the front matter of ``<name>/SKILL.md``.

Layout of a skill folder::

    <name>/SKILL.md            front matter between two ``---`` lines, then free text (how to use it)
    <name>/run.py | run.sh     the entry: reads its arguments as a JSON object on stdin, prints its result
    <name>/tests/test_*.py     stdlib unittest, run in the sandbox with the folder as working directory

Front matter keys (YAML, parsed with PyYAML's safe loader, aliases refused; unknown keys refused): ``name``
(``[a-z0-9_-]{1,40}``, equal to the folder name), ``description`` (1-500 characters), ``inputs`` (a JSON Schema
``object`` for the tool's arguments; default no properties), ``tags`` (list of strings), ``version`` (int >= 1
or a semver string; default 1), ``entry`` (``run.py`` or ``run.sh``; default the one that exists).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import jsonschema
import msgspec
import yaml

MANIFEST = "SKILL.md"
ENTRIES = ("run.py", "run.sh")
NAME = re.compile(r"[a-z0-9_-]{1,40}")
SEMVER = re.compile(r"\d+\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?")
MAX_MANIFEST_BYTES = 64 * 1024
_KEYS = {"name", "description", "inputs", "tags", "version", "entry"}


class SkillError(Exception):
    """A refused skill or library operation. ``code``: ``manifest_missing``, ``manifest_invalid``,
    ``name_mismatch``, ``entry_missing``, ``path_outside_repo``, ``rollback_failed``, ``unknown_commit``,
    ``git_failed``; ``message``: one sentence naming the file or key at fault."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class SkillManifest(msgspec.Struct, frozen=True, kw_only=True):
    """A valid manifest. ``inputs``: JSON Schema of the arguments; ``version``: int or semver string;
    ``entry``: ``run.py`` or ``run.sh`` (exists in the folder)."""

    name: str
    description: str
    inputs: dict[str, Any] = msgspec.field(default_factory=lambda: {"type": "object", "properties": {}})
    tags: list[str] = msgspec.field(default_factory=list)
    version: int | str = 1
    entry: str = "run.py"


class _Loader(yaml.SafeLoader):
    """Safe loading without aliases (``*ref`` could make a tiny file expand into a huge structure)."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            raise SkillError("manifest_invalid", f"{MANIFEST}: YAML aliases are not allowed")
        return super().compose_node(parent, index)


def front_matter(text: str) -> dict[str, Any]:
    """The front matter of a ``SKILL.md`` text as a dict. Raises ``SkillError("manifest_invalid")`` when the
    text does not open with a ``---`` line closed by another, or the YAML between is not a mapping."""
    lines = text.splitlines()
    if not lines or lines[0].strip() != "---":
        raise SkillError("manifest_invalid", f"{MANIFEST} must open with a '---' line")
    try:
        end = next(i for i in range(1, len(lines)) if lines[i].strip() == "---")
    except StopIteration:
        raise SkillError("manifest_invalid", f"{MANIFEST}: the front matter has no closing '---' line") from None
    try:
        data = yaml.load("\n".join(lines[1:end]), Loader=_Loader)  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise SkillError("manifest_invalid", f"{MANIFEST}: bad YAML: {str(exc)[:300]}") from None
    if not isinstance(data, dict):
        raise SkillError("manifest_invalid", f"{MANIFEST}: the front matter must be a mapping of keys")
    return data


def _invalid(message: str) -> SkillError:
    return SkillError("manifest_invalid", f"{MANIFEST}: {message}")


def _check_fields(data: dict[str, Any]) -> None:
    unknown = sorted(str(k) for k in data if k not in _KEYS)
    if unknown:
        raise _invalid(f"unknown keys {unknown} (allowed: {sorted(_KEYS)})")
    name = data.get("name")
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise _invalid(f"name {name!r} must match [a-z0-9_-]{{1,40}}")
    description = data.get("description")
    if not isinstance(description, str) or not 1 <= len(description.strip()) <= 500:
        raise _invalid("description must be a string of 1-500 characters")
    tags = data.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) and t for t in tags):
        raise _invalid("tags must be a list of non-empty strings")
    version = data.get("version", 1)
    good_int = isinstance(version, int) and not isinstance(version, bool) and version >= 1
    if not good_int and not (isinstance(version, str) and SEMVER.fullmatch(version)):
        raise _invalid(f"version {version!r} must be an integer >= 1 or a semver string like 1.2.3")
    inputs = data.get("inputs", {"type": "object", "properties": {}})
    if not isinstance(inputs, dict) or inputs.get("type") != "object":
        raise _invalid('inputs must be a JSON Schema object ({"type": "object", ...})')
    try:
        jsonschema.validators.validator_for(inputs, default=jsonschema.Draft202012Validator).check_schema(inputs)
    except jsonschema.SchemaError as exc:
        raise _invalid(f"inputs is not a valid JSON Schema: {exc.message[:300]}") from None
    entry = data.get("entry")
    if entry is not None and entry not in ENTRIES:
        raise _invalid(f"entry {entry!r} must be one of {list(ENTRIES)}")


def parse_manifest(folder: Path) -> SkillManifest:
    """The manifest of the skill folder ``folder``. Raises :class:`SkillError`: ``manifest_missing`` (no
    ``SKILL.md``), ``manifest_invalid`` (front matter, a key or larger than 64 KiB), ``name_mismatch`` (``name``
    is not the folder's name), ``entry_missing`` (the entry named, or neither ``run.py`` nor ``run.sh``, is not
    a file of the folder; both present with no ``entry`` is ``manifest_invalid``)."""
    folder = Path(folder)
    path = folder / MANIFEST
    if not path.is_file():
        raise SkillError("manifest_missing", f"{folder.name}/{MANIFEST} does not exist")
    raw = path.read_bytes()
    if len(raw) > MAX_MANIFEST_BYTES:
        raise _invalid(f"larger than {MAX_MANIFEST_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _invalid("not UTF-8 text") from None
    data = front_matter(text)
    _check_fields(data)
    if data["name"] != folder.name:
        raise SkillError("name_mismatch", f"{MANIFEST} names {data['name']!r} but the folder is {folder.name!r}")
    entry = data.get("entry")
    if entry is None:
        present = [e for e in ENTRIES if (folder / e).is_file()]
        if len(present) > 1:
            raise _invalid("both run.py and run.sh exist: name the one to run with 'entry'")
        if not present:
            raise SkillError("entry_missing", f"{folder.name} has neither run.py nor run.sh")
        entry = present[0]
    elif not (folder / entry).is_file():
        raise SkillError("entry_missing", f"{folder.name}/{entry} (the manifest's entry) does not exist")
    return SkillManifest(
        name=data["name"],
        description=data["description"].strip(),
        inputs=data.get("inputs", {"type": "object", "properties": {}}),
        tags=list(data.get("tags", [])),
        version=data.get("version", 1),
        entry=entry,
    )
