"""Permission rules for tool calls: which call runs at once (``allow``), which waits for a person (``ask``), which
never runs (``deny``). Shared by the orchestrator (which decides before a call is sent) and whatever shows the rules.

A rule is ``<kind>(<specifier>)`` or a bare ``<kind>`` (= ``<kind>(*)``). ``kind`` is a permission kind of
:class:`~hermes_proto.tools.ToolSpec` (:data:`KINDS`) or a built-in tool's name (:data:`BUILTIN_TOOLS`:
``file_write(*.txt)`` governs that tool only). The specifier is matched against a target taken from the call:

- ``shell``: the ``command``. ``git:*`` = the command's first word(s) are ``git`` (the prefix, then a space or the
  end); anything else is an :func:`fnmatch` glob on the whole command. An ``allow`` rule other than ``*`` never
  matches a command holding a shell metacharacter (:data:`SHELL_META`: ``; & | < > ` $(`` and newlines), so
  ``git status && curl x | sh`` falls to the default ``ask``; ``ask``/``deny`` rules also match any one of the
  command's parts between metacharacters (``echo; rm -rf /`` is denied by ``shell(rm:*)``). Deny rules on shell
  are best effort (``"r"m``, ``env rm`` and the like escape them), never a sandbox.
- file tools: the ``path`` argument, workspace-relative (default ``.``). Globs as in ``.gitignore``: ``*`` and ``?``
  never cross ``/``, ``**`` spans any number of directories (``notes/**`` also matches ``notes``), a pattern with
  no ``/`` matches the last path component at any depth (``*.md`` matches ``notes/a.md``), one with a ``/`` is
  anchored at the workspace root; matching is case-sensitive. A path outside the workspace (absolute, ``~``, or
  escaping with ``..``) matches no ``allow`` rule.
- ``web_fetch``: ``domain:<host>`` = the URL's host or any subdomain of it (``domain:python.org`` matches
  ``docs.python.org``); ``*`` may appear in the host (``domain:*.example.com``).
- ``mcp``: ``<server>:<tool>``, each a glob (``git:*`` = every tool of server ``git``).
- ``python``: a glob on the ``code``; ``memory_search``: a glob on the ``query`` (in practice ``*``).

:func:`decide` weighs every matching rule: **deny wins**, then ask, then allow, whatever layer the rule comes from;
with no matching rule the defaults apply (:func:`default_decision`). Rules are data a person writes (the
``permissions.toml`` of ``$HERMES_HOME``, an agent profile): nothing a model or a tool outputs may produce them.
Pure, no I/O.
"""

from __future__ import annotations

import posixpath
import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
from fnmatch import fnmatchcase
from typing import Any
from urllib.parse import urlsplit

import msgspec

from hermes_proto.tools import ToolSpec, split_mcp_name

ACTIONS = ("allow", "ask", "deny")
"""What a rule does, weakest first (a stronger matching rule wins)."""
KINDS = ("file_read", "file_edit", "shell", "python", "web_fetch", "memory_search", "mcp")
"""The permission kinds of :class:`~hermes_proto.tools.ToolSpec`."""
BUILTIN_TOOLS: dict[str, str] = {
    "file_read": "file_read",
    "file_list": "file_read",
    "file_search": "file_read",
    "file_write": "file_edit",
    "file_edit": "file_edit",
    "shell": "shell",
    "python": "python",
    "web_fetch": "web_fetch",
    "memory_search": "memory_search",
}
"""Built-in tool name → its permission kind. A rule named after a tool that is not also a kind governs that tool
only (``file_write(...)``); ``file_read``/``file_edit`` are kinds and govern every tool of the kind."""
FILE_KINDS = ("file_read", "file_edit")
TARGET_ARGUMENT = {"shell": "command", "python": "code", "web_fetch": "url", "memory_search": "query"}
"""Kind → the argument a specifier is matched against (file kinds: ``path``; mcp: the tool's name)."""
SHELL_META = re.compile(r"[;&|<>`\n\r]|\$\(")
"""Shell metacharacters that chain, pipe, redirect or substitute commands."""

_RULE = re.compile(r"\s*([A-Za-z0-9_]+)\s*(?:\((.*)\))?\s*", re.DOTALL)


class PermissionRuleError(ValueError):
    """A malformed rule or rule file. ``code``: ``empty``, ``unbalanced``, ``unknown_kind``, ``bad_specifier``,
    ``syntax``, ``unknown_action``, ``unknown_key`` or ``bad_type``; ``where``: its place in a rule file (``users.ann.allow[1]``),
    empty for a single rule."""

    def __init__(self, code: str, message: str, where: str = "") -> None:
        super().__init__(f"{where}: {message}" if where else message)
        self.code = code
        self.where = where


class Rule(msgspec.Struct, frozen=True, kw_only=True):
    """One rule: ``kind`` (a kind or a built-in tool name), ``specifier`` (``*`` for a bare kind), ``action``
    (:data:`ACTIONS`), ``layer`` (where it was written: ``everyone``, ``user:<id>``, ``project:<p>``,
    ``profile:<name>``; informative only)."""

    kind: str
    specifier: str
    action: str
    layer: str = ""

    @property
    def text(self) -> str:
        """The rule as written canonically: ``shell(git:*)``."""
        return f"{self.kind}({self.specifier})"

    @property
    def governs(self) -> str:
        """The permission kind whose matcher reads the specifier."""
        return self.kind if self.kind in KINDS else BUILTIN_TOOLS[self.kind]


class Decision(msgspec.Struct, frozen=True, kw_only=True):
    """The verdict on one call: ``action`` (:data:`ACTIONS`), ``rule`` (the text of the rule that decided, None when
    a default did), ``reason`` (one sentence for a person)."""

    action: str
    rule: str | None
    reason: str


class RuleSet(msgspec.Struct, frozen=True, kw_only=True):
    """The rules of a permissions file: ``everyone`` (top-level), ``users`` (user id → rules), ``projects``
    (project → rules)."""

    everyone: tuple[Rule, ...] = ()
    users: dict[str, tuple[Rule, ...]] = {}
    projects: dict[str, tuple[Rule, ...]] = {}

    def for_call(self, user_id: str | None, project: str | None) -> list[Rule]:
        """The rules in force for a call of ``user_id`` in ``project``: everyone's, the user's, the project's (in
        that order; the order only chooses which rule a decision names, since deny wins in any layer)."""
        rules = list(self.everyone)
        rules += self.users.get(user_id, ()) if user_id is not None else ()
        rules += self.projects.get(project, ()) if project is not None else ()
        return rules


# ---- parsing -----------------------------------------------------------------------------------


def parse_rule(text: str, action: str = "ask", *, layer: str = "") -> Rule:
    """A :class:`Rule` from ``shell(git:*)`` / ``web_fetch(domain:python.org)`` / ``shell``. Raises
    :class:`PermissionRuleError` for an empty rule, unbalanced parentheses, an unknown kind or action, or a specifier
    its kind cannot read (an empty one, ``web_fetch`` without ``domain:``, ``mcp`` without ``server:``)."""
    if not isinstance(text, str):
        raise PermissionRuleError("bad_type", f"a rule is a string, not {type(text).__name__}")
    if action not in ACTIONS:
        raise PermissionRuleError("unknown_action", f"unknown action {action!r} (one of {', '.join(ACTIONS)})")
    if not text.strip():
        raise PermissionRuleError("empty", "empty rule")
    match = _RULE.fullmatch(text)
    if match is None:
        code, why = ("syntax", "") if _balanced(text) else ("unbalanced", "unbalanced parentheses; ")
        raise PermissionRuleError(code, f"{text!r}: {why}expected kind or kind(specifier), e.g. shell(git:*)")
    if not _balanced(match.group(2) or ""):
        raise PermissionRuleError("unbalanced", f"{text!r}: unbalanced parentheses in the specifier")
    kind, spec = match.group(1), match.group(2)
    if kind not in KINDS and kind not in BUILTIN_TOOLS:
        known = ", ".join(sorted({*KINDS, *BUILTIN_TOOLS}))
        raise PermissionRuleError("unknown_kind", f"{text!r}: unknown kind {kind!r} (one of {known})")
    spec = "*" if spec is None else spec.strip()
    rule = Rule(kind=kind, specifier=spec, action=action, layer=layer)
    _check_specifier(rule, text)
    return rule


def _balanced(spec: str) -> bool:
    depth = 0
    for char in spec:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth < 0:
            return False
    return depth == 0


def _check_specifier(rule: Rule, text: str) -> None:
    spec, kind = rule.specifier, rule.governs

    def bad(why: str) -> PermissionRuleError:
        return PermissionRuleError("bad_specifier", f"{text!r}: {why}")

    if not spec:
        raise bad("empty specifier (write the bare kind, or kind(*), for every call)")
    if spec == "*":
        return
    if kind == "shell" and spec.endswith(":*") and not spec[:-2].strip():
        raise bad("empty command prefix before ':*'")
    if kind == "web_fetch":
        host = spec.removeprefix("domain:")
        if host == spec or not host or "/" in host or ":" in host:
            raise bad("expected domain:<host>, e.g. web_fetch(domain:docs.python.org)")
    if kind == "mcp":
        server, sep, tool = spec.partition(":")
        if not (sep and server and tool):
            raise bad("expected <server>:<tool>, e.g. mcp(git:*)")


def load_rules(mapping: Mapping[str, Any]) -> RuleSet:
    """A :class:`RuleSet` from a permissions file's TOML dict: top-level ``allow``/``ask``/``deny`` lists (everyone),
    ``[users.<user_id>]`` and ``[projects.<project>]`` tables of the same lists. Raises :class:`PermissionRuleError`
    (with ``where``) for a malformed rule, an unknown key (a misspelt ``alow`` would otherwise drop rules) or a value
    of the wrong type."""
    if not isinstance(mapping, Mapping):
        raise PermissionRuleError("bad_type", "the permissions file must be a table")
    for key in mapping:
        if key not in (*ACTIONS, "users", "projects"):
            raise PermissionRuleError("unknown_key", f"unknown key {key!r} (allow, ask, deny, users, projects)", key)
    everyone = _layer(mapping, "", "everyone", skip=("users", "projects"))
    scoped: dict[str, dict[str, tuple[Rule, ...]]] = {"users": {}, "projects": {}}
    for section, prefix in (("users", "user"), ("projects", "project")):
        tables = mapping.get(section, {})
        if not isinstance(tables, Mapping):
            raise PermissionRuleError("bad_type", f"[{section}] must be a table of tables", section)
        for name, table in tables.items():
            where = f"{section}.{name}"
            if not isinstance(table, Mapping):
                raise PermissionRuleError("bad_type", "must be a table with allow/ask/deny lists", where)
            scoped[section][str(name)] = _layer(table, f"{where}.", f"{prefix}:{name}")
    return RuleSet(everyone=everyone, users=scoped["users"], projects=scoped["projects"])


def _layer(table: Mapping[str, Any], where: str, layer: str, skip: Sequence[str] = ()) -> tuple[Rule, ...]:
    rules: list[Rule] = []
    for key, value in table.items():
        if key in skip:
            continue
        if key not in ACTIONS:
            raise PermissionRuleError("unknown_key", f"unknown key {key!r} (allow, ask, deny)", f"{where}{key}")
        if not isinstance(value, list):
            raise PermissionRuleError("bad_type", "must be a list of rule strings", f"{where}{key}")
        for i, text in enumerate(value):
            try:
                rules.append(parse_rule(text, key, layer=layer))
            except PermissionRuleError as exc:
                raise PermissionRuleError(exc.code, str(exc), f"{where}{key}[{i}]") from None
    return tuple(rules)


# ---- matching ----------------------------------------------------------------------------------


def kind_of(tool: ToolSpec) -> str:
    """The tool's permission kind: its declared ``permission``, else by name (built-in) or ``mcp`` (a server's tool);
    empty when unknown (the default then asks)."""
    if tool.permission:
        return tool.permission
    if tool.server is not None or split_mcp_name(tool.name):
        return "mcp"
    return BUILTIN_TOOLS.get(tool.name, "")


def matches(rule: Rule, tool: ToolSpec, arguments: Mapping[str, Any]) -> bool:
    """Whether ``rule`` applies to a call of ``tool`` with ``arguments`` (the module docstring says how)."""
    kind = kind_of(tool)
    if rule.kind != kind and not (rule.kind == tool.name and tool.server is None and rule.governs == kind):
        return False
    spec = rule.specifier
    lenient = rule.action != "allow"  # ask/deny rules catch more, allow rules fewer
    if kind in FILE_KINDS:
        path = _path_target(arguments)
        if path is None:
            return spec == "*"
        if _outside(path) and not lenient:
            return False
        return spec == "*" or path_matches(spec, path)
    if kind == "mcp":
        server, name = _mcp_target(tool)
        if spec == "*":
            return True
        want_server, _, want_tool = spec.partition(":")
        return fnmatchcase(server, want_server) and fnmatchcase(name, want_tool)
    target = arguments.get(TARGET_ARGUMENT.get(kind, ""))
    if spec == "*":
        return True
    if not isinstance(target, str):
        return False
    if kind == "shell":
        return shell_matches(spec, target, lenient=lenient)
    if kind == "web_fetch":
        host = url_host(target)
        return host is not None and host_matches(spec.removeprefix("domain:"), host)
    return fnmatchcase(target, spec)


def shell_matches(spec: str, command: str, *, lenient: bool = False) -> bool:
    """Whether a shell specifier (``git:*`` prefix or glob) matches ``command``. Strict (``lenient=False``, for allow
    rules): a command with a :data:`SHELL_META` character never matches. Lenient (ask/deny rules): the whole
    command or any one of its parts between metacharacters, also with its quotes removed, may match."""
    if spec == "*":
        return True
    if not lenient:
        return not SHELL_META.search(command) and _shell_one(spec, " ".join(command.split()))
    forms = {" ".join(command.split())}
    for part in SHELL_META.split(command):
        forms.add(" ".join(part.replace("(", " ").replace(")", " ").split()))
        try:
            forms.add(" ".join(shlex.split(part)))
        except ValueError:
            pass
    return any(form and _shell_one(spec, form) for form in forms)


def _shell_one(spec: str, command: str) -> bool:
    if spec.endswith(":*"):
        prefix = " ".join(spec[:-2].split())
        return command == prefix or command.startswith(prefix + " ")
    return fnmatchcase(command, spec)


def _path_target(arguments: Mapping[str, Any]) -> str | None:
    path = arguments.get("path", ".")
    if not isinstance(path, str):
        return None
    return posixpath.normpath(path) if path else "."


def _outside(path: str) -> bool:
    return path.startswith(("/", "~")) or path == ".." or path.startswith("../")


def path_inside(arguments: Mapping[str, Any]) -> bool:
    """Whether a file call's ``path`` (default ``.``) stays inside the workspace: relative, no ``~``, and not
    escaping with ``..`` once normalised."""
    path = _path_target(arguments)
    return path is not None and not _outside(path)


def path_matches(pattern: str, path: str) -> bool:
    """Whether the workspace-relative ``path`` matches the gitignore-style ``pattern`` (``*``/``?``/``[...]`` within
    one path component, ``**`` across components, a pattern without ``/`` matches the last component anywhere)."""
    return _path_regex(pattern).fullmatch(posixpath.normpath(path) if path else ".") is not None


def _path_regex(pattern: str) -> re.Pattern[str]:
    pattern = pattern.strip()
    if pattern.endswith("/"):
        pattern += "**"
    anchored = "/" in pattern.strip("/") or pattern.startswith("/")
    segments = [s for s in pattern.strip("/").split("/") if s]
    collapsed: list[str] = []
    for seg in segments:
        if not (seg == "**" and collapsed and collapsed[-1] == "**"):
            collapsed.append(seg)
    if not anchored and collapsed != ["**"]:
        collapsed.insert(0, "**")
    out: list[str] = []
    last = len(collapsed) - 1
    for i, seg in enumerate(collapsed):
        if seg == "**":
            if i == 0:
                out.append(".*" if i == last else "(?:.*/)?")
            else:
                out.append("(?:/.*)?" if i == last else "/(?:.*/)?")
        else:
            if i > 0 and collapsed[i - 1] != "**":
                out.append("/")
            out.append(_segment_regex(seg))
    return re.compile("".join(out), re.DOTALL)


def _segment_regex(seg: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(seg):
        char = seg[i]
        if char == "*":
            while i + 1 < len(seg) and seg[i + 1] == "*":
                i += 1
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[" and (end := _class_end(seg, i)) != -1:
            body = seg[i + 1 : end]
            negate = body.startswith("!")
            body = body[1:] if negate else body
            for special in ("\\", "^", "[", "]"):
                body = body.replace(special, "\\" + special)
            out.append(f"[^/{body}]" if negate else f"(?!/)[{body}]")
            i = end
        else:
            out.append(re.escape(char))
        i += 1
    return "".join(out)


def _class_end(seg: str, start: int) -> int:
    """Index of the ``]`` closing the ``[`` at ``start`` (a ``]`` first in the class, after ``!``, is literal)."""
    i = start + 1
    i += seg[i : i + 1] == "!"
    i += seg[i : i + 1] == "]"
    return seg.find("]", i)


def url_host(url: str) -> str | None:
    """The lower-case host of ``url`` (no port, no user info, no trailing dot); None when it has none."""
    try:
        parts = urlsplit(url.strip())
        host = parts.hostname
    except ValueError:
        return None
    if not host or any(c == "\\" or c.isspace() or ord(c) < 32 for c in parts.netloc):
        return None  # parsers disagree on such authorities: no host a rule could vouch for
    return host.rstrip(".").lower() or None


def host_matches(domain: str, host: str) -> bool:
    """Whether ``host`` is ``domain`` or a subdomain of it; ``domain`` may hold ``*`` globs (case-insensitive)."""
    domain, host = domain.rstrip(".").lower(), host.rstrip(".").lower()
    if "*" in domain or "?" in domain or "[" in domain:
        return fnmatchcase(host, domain) or fnmatchcase(host, "*." + domain)
    return host == domain or host.endswith("." + domain)


def _mcp_target(tool: ToolSpec) -> tuple[str, str]:
    split = split_mcp_name(tool.name)
    if tool.server is not None:
        return tool.server, split[1] if split and split[0] == tool.server else tool.name
    return split if split else ("", tool.name)


# ---- decisions ---------------------------------------------------------------------------------


def decide(
    rules: Iterable[Rule],
    tool: ToolSpec,
    arguments: Mapping[str, Any],
    known_domains: Iterable[str] = frozenset(),
) -> Decision:
    """The verdict on a call of ``tool`` with ``arguments`` under ``rules`` (e.g. :meth:`RuleSet.for_call` plus a
    profile's rules). Every matching rule counts: any ``deny`` wins, then ``ask``, then ``allow``; the decision names
    the first matching rule of the winning action. No matching rule: :func:`default_decision`. ``known_domains``:
    hosts a person allowed or approved in this run (a subdomain of one counts as known)."""
    matching = [r for r in rules if matches(r, tool, arguments)]
    for action in ("deny", "ask", "allow"):
        for rule in matching:
            if rule.action == action:
                where = f" ({rule.layer})" if rule.layer else ""
                return Decision(action=action, rule=rule.text, reason=f"{action} by rule {rule.text}{where}")
    return default_decision(tool, arguments, known_domains)


def default_decision(
    tool: ToolSpec, arguments: Mapping[str, Any], known_domains: Iterable[str] = frozenset()
) -> Decision:
    """The verdict when no rule matches: reading inside the workspace and ``memory_search`` → allow; ``file_edit``,
    ``shell``, ``python`` → ask; ``web_fetch`` → allow for a known host (or a subdomain of one), else ask; ``mcp`` →
    allow when the tool declares itself read-only, else ask; a file call outside the workspace or an unknown kind
    → ask."""
    kind = kind_of(tool)

    def verdict(action: str, reason: str) -> Decision:
        return Decision(action=action, rule=None, reason=f"default: {reason}")

    if kind == "file_read":
        if path_inside(arguments):
            return verdict("allow", "reading inside the workspace")
        return verdict("ask", "the path is outside the workspace")
    if kind == "memory_search":
        return verdict("allow", "searching memory changes nothing")
    if kind in ("file_edit", "shell", "python"):
        return verdict("ask", f"{kind} changes things")
    if kind == "web_fetch":
        url = arguments.get("url")
        host = url_host(url) if isinstance(url, str) else None
        if host is not None and any(host_matches(d, host) for d in known_domains if "*" not in d):
            return verdict("allow", f"{host} was already allowed in this run")
        return verdict("ask", f"{host or 'the URL'} is a new domain")
    if kind == "mcp":
        if tool.read_only:
            return verdict("allow", "the MCP tool declares itself read-only")
        return verdict("ask", "the MCP tool may change things")
    return verdict("ask", f"unknown permission kind {kind!r}")
