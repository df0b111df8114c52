"""Agent profiles: what one agent run may use (tools, model choice, limits) and how it is told to work.

Three built-in profiles ship as TOML files in ``hermes_orchestrator/agent_profiles`` (``code``, ``research``,
``fileops``); a person adds or overrides profiles with ``$HERMES_HOME/agents/<name>.toml`` (TOML only). A profile's
rules (``permissions``) are data a person writes, like ``permissions.toml``; nothing a model outputs changes them.
"""

from __future__ import annotations

import importlib.resources
import re
import tomllib
from collections.abc import Iterable, Mapping
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
import structlog

from hermes_proto.ideas import classify
from hermes_proto.permissions import ACTIONS, PermissionRuleError, Rule, parse_rule
from hermes_proto.tools import ToolSpec, split_mcp_name

log = structlog.get_logger("hermes.orchestrator")

BUILTIN_PACKAGE_DIR = "agent_profiles"
DEFAULT_PROFILE = "fileops"
"""The profile of a task nothing points elsewhere: the least privilege (reads the workspace, changes nothing,
never reaches the network), so a wrong pick costs an unhelpful answer, never a side effect."""

Name = Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9_-]{1,32}$")]
Pattern = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


class ProfilePermissions(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A profile's own rules (the syntax of :func:`hermes_proto.permissions.parse_rule`), checked on load."""

    allow: tuple[str, ...] = ()
    ask: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for action in ACTIONS:
            for text in getattr(self, action):
                try:
                    parse_rule(text, action)
                except PermissionRuleError as exc:
                    raise ValueError(f"permissions.{action}: {exc}") from None


class AgentProfile(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One agent profile. ``criteria`` (None: the router's default), ``backend``, ``model``: the model choice;
    ``tools``: names or globs granted (``file_*``; ``mcp:*`` every MCP tool, ``mcp:<server>`` one server's, or
    ``git__*``); ``max_iterations``: model turns per run (1..50); ``approval_required``: tools (names/globs) that
    always ask, on top of the rules; ``max_tokens`` per model call; ``temperature`` 0..2; ``timeout_s``: wall time
    of the whole run (seconds); ``max_cost_cents``: spend cap of the run (None: none); ``permissions``: extra rules
    of this profile (:func:`profile_rules`)."""

    name: Name
    description: str = ""
    system_prompt: Annotated[str, msgspec.Meta(min_length=1)]
    criteria: Literal["quality_first", "speed_first", "cost_first"] | None = None
    backend: str | None = None
    model: str | None = None
    tools: tuple[Pattern, ...] = ()
    max_iterations: Annotated[int, msgspec.Meta(ge=1, le=50)] = 8
    approval_required: tuple[Pattern, ...] = ()
    max_tokens: Annotated[int, msgspec.Meta(ge=1, le=200_000)] = 1024
    temperature: Annotated[float, msgspec.Meta(ge=0.0, le=2.0)] = 0.2
    timeout_s: Annotated[float, msgspec.Meta(gt=0, le=86_400)] = 300.0
    max_cost_cents: Annotated[float, msgspec.Meta(ge=0)] | None = None
    first_tool_choice: Annotated[str, msgspec.Meta(pattern=r"^(auto|required|[A-Za-z0-9_-]{1,64})$")] | None = None
    """Turn 1's ``tool_choice``: ``required`` makes the model start with a tool call (small local models otherwise
    tend to answer at once); later turns are ``auto``."""
    permissions: ProfilePermissions = ProfilePermissions()


class ProfileError(ValueError):
    """A profile file that cannot be used; the message names the file and the field (``$.max_iterations``)."""


def parse_profile(data: Mapping[str, Any], *, source: str, stem: str | None = None) -> AgentProfile:
    """An :class:`AgentProfile` from a TOML dict. ``stem``: the file's name without ``.toml``; ``name`` defaults
    to it and must equal it when given (the file name is what overrides a built-in). Raises :class:`ProfileError`."""
    data = dict(data)
    if stem is not None:
        data.setdefault("name", stem)
        if data["name"] != stem:
            raise ProfileError(f"{source}: name {data['name']!r} differs from the file name {stem!r}")
    try:
        return msgspec.convert(data, AgentProfile)
    except msgspec.ValidationError as exc:
        raise ProfileError(f"{source}: {exc}") from None


def _load_file(text: str, source: str, stem: str) -> AgentProfile | None:
    try:
        return parse_profile(tomllib.loads(text), source=source, stem=stem)
    except (tomllib.TOMLDecodeError, ProfileError) as exc:
        log.error("agent_profile_invalid", path=source, error=str(exc))
        return None


def builtin_profiles() -> dict[str, AgentProfile]:
    """The profiles shipped with the orchestrator (package data ``agent_profiles/*.toml``)."""
    out: dict[str, AgentProfile] = {}
    root = importlib.resources.files("hermes_orchestrator").joinpath(BUILTIN_PACKAGE_DIR)
    for entry in sorted(root.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".toml"):
            stem = entry.name.removesuffix(".toml")
            profile = _load_file(entry.read_text(encoding="utf-8"), f"{BUILTIN_PACKAGE_DIR}/{entry.name}", stem)
            if profile is not None:
                out[profile.name] = profile
    return out


def load_profiles(home: Path) -> dict[str, AgentProfile]:
    """Name → profile: the built-ins, then ``home/agents/*.toml`` (a file named like a built-in replaces it). A file
    that does not parse or validate is skipped with an error logged (``agent_profile_invalid``, naming the file and
    the field); this never raises for a bad file."""
    profiles = builtin_profiles()
    folder = home / "agents"
    try:
        paths = sorted(folder.glob("*.toml")) if folder.is_dir() else []
    except OSError as exc:
        log.error("agent_profiles_unreadable", path=str(folder), error=str(exc))
        paths = []
    for path in paths:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            log.error("agent_profile_invalid", path=str(path), error=str(exc))
            continue
        profile = _load_file(text, str(path), path.stem)
        if profile is not None:
            if profile.name in profiles:
                log.info("agent_profile_overridden", name=profile.name, path=str(path))
            profiles[profile.name] = profile
    return profiles


# ---- choosing a profile ------------------------------------------------------------------------

_FILES = re.compile(
    r"\b(files?|folders?|director(?:y|ies)|dirs?|notes?|markdown|workspace)\b|\.(?:md|txt|csv|json|toml)\b",
    re.IGNORECASE,
)
_WEB = re.compile(r"https?://|\b(web|website|online|internet|url|links?|web ?pages?|sites?)\b", re.IGNORECASE)


def pick_profile(task: str, profiles: Mapping[str, AgentProfile]) -> tuple[AgentProfile, str]:
    """``(profile, reason)`` for ``task``, in this order: a coding idea (:func:`hermes_proto.ideas.classify`) →
    ``code``; a task about files/folders/notes/markdown that names nothing on the web → ``fileops``; a research or
    learning idea, or one that names the web → ``research``; anything else → :data:`DEFAULT_PROFILE`. A chosen
    profile missing from ``profiles`` falls back to the default, then to the first by name. Raises ``ValueError``
    when ``profiles`` is empty."""
    if not profiles:
        raise ValueError("no agent profiles")
    kind = classify(task)
    files, web = bool(_FILES.search(task)), bool(_WEB.search(task))
    if kind == "coding":
        name, why = "code", "a coding task (write, run and test code)"
    elif files and not web:
        name, why = "fileops", "it is about files in the workspace"
    elif kind in ("research", "learning") or web:
        name, why = "research", f"a {kind} task" if kind in ("research", "learning") else "it needs the web"
    else:
        name, why = DEFAULT_PROFILE, "nothing points elsewhere, and it is the least privileged (read-only)"
    reason = f"idea type {kind}: {why}"
    if name not in profiles:
        fallback = DEFAULT_PROFILE if DEFAULT_PROFILE in profiles else min(profiles)
        reason += f"; profile {name!r} is missing, using {fallback!r}"
        name = fallback
    return profiles[name], f"profile {name}: {reason}"


# ---- tools and rules of a profile --------------------------------------------------------------


def tool_pattern_matches(pattern: str, tool: ToolSpec) -> bool:
    """Whether a profile's tool ``pattern`` names ``tool``: ``mcp:*`` / ``mcp:<server glob>`` for MCP tools;
    anything else an ``fnmatch`` glob on the tool's name, which reaches an MCP tool only when the pattern itself
    holds ``__`` (``git__*``), so ``file_*`` never grants a tool of an MCP server called ``file_x``."""
    split = split_mcp_name(tool.name)
    server = tool.server if tool.server is not None else (split[0] if split else None)
    if pattern.startswith("mcp:"):
        return server is not None and fnmatchcase(server, pattern.removeprefix("mcp:"))
    if server is not None and "__" not in pattern:
        return False
    return fnmatchcase(tool.name, pattern)


def granted_tools(profile: AgentProfile, registry: Iterable[ToolSpec]) -> list[ToolSpec]:
    """The tools of ``registry`` (in its order) that ``profile.tools`` grants."""
    return [tool for tool in registry if any(tool_pattern_matches(p, tool) for p in profile.tools)]


def requires_approval(profile: AgentProfile, tool: ToolSpec) -> bool:
    """Whether ``profile.approval_required`` names ``tool`` (then a rule's ``allow`` still asks; ``deny`` still
    denies)."""
    return any(tool_pattern_matches(p, tool) for p in profile.approval_required)


def profile_rules(profile: AgentProfile) -> list[Rule]:
    """The profile's ``permissions`` as rules (layer ``profile:<name>``), to add to the permissions file's."""
    layer = f"profile:{profile.name}"
    return [
        parse_rule(text, action, layer=layer) for action in ACTIONS for text in getattr(profile.permissions, action)
    ]
