"""Tool permission rules (hermes_proto.permissions): parsing, matching per kind, deny-wins evaluation, the defaults,
rule files and the permissions.toml wrapper."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hermes_proto.permissions import (
    PermissionRuleError,
    Rule,
    RuleSet,
    decide,
    load_rules,
    parse_rule,
    path_matches,
    url_host,
)
from hermes_proto.tools import ToolSpec

from hermes_orchestrator.permissions_file import PermissionsFile


def builtin(name: str, permission: str, read_only: bool = False) -> ToolSpec:
    return ToolSpec(name=name, description=name, permission=permission, read_only=read_only)


FILE_READ = builtin("file_read", "file_read", True)
FILE_LIST = builtin("file_list", "file_read", True)
FILE_WRITE = builtin("file_write", "file_edit")
FILE_EDIT = builtin("file_edit", "file_edit")
SHELL = builtin("shell", "shell")
PYTHON = builtin("python", "python")
WEB = builtin("web_fetch", "web_fetch", True)
MEMORY = builtin("memory_search", "memory_search", True)
GIT_STATUS = ToolSpec(name="git__git_status", description="", permission="mcp", server="git", read_only=True)
GIT_COMMIT = ToolSpec(name="git__git_commit", description="", permission="mcp", server="git")
TIME_NOW = ToolSpec(name="time__get_time", description="", permission="mcp", server="time")


def rules(*specs: tuple[str, str]) -> list[Rule]:
    return [parse_rule(text, action) for action, text in specs]


def action(rule_list: list[Rule], tool: ToolSpec, **arguments: object) -> str:
    return decide(rule_list, tool, arguments).action


# ---- parsing -----------------------------------------------------------------------------------


def test_parse_rule_forms() -> None:
    assert parse_rule("shell(git:*)", "allow") == Rule(kind="shell", specifier="git:*", action="allow")
    assert parse_rule("  shell  ", "deny") == Rule(kind="shell", specifier="*", action="deny")
    assert parse_rule("file_write(*.txt)").text == "file_write(*.txt)"
    assert parse_rule("mcp(git:*)", "allow", layer="user:ann").layer == "user:ann"
    assert parse_rule("shell(echo (hi))", "allow").specifier == "echo (hi)"


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("shell(git:*", "unbalanced"),
        ("shell git:*)", "unbalanced"),
        ("shell(a)(b)", "unbalanced"),
        ("shell git", "syntax"),
        ("bash(ls)", "unknown_kind"),
        ("Shell(ls)", "unknown_kind"),
        ("git__status", "unknown_kind"),
        ("shell()", "bad_specifier"),
        ("shell(:*)", "bad_specifier"),
        ("web_fetch(python.org)", "bad_specifier"),
        ("web_fetch(domain:)", "bad_specifier"),
        ("web_fetch(domain:https://x.org/)", "bad_specifier"),
        ("mcp(git)", "bad_specifier"),
    ],
)
def test_malformed_rules_raise_with_a_code(text: str, code: str) -> None:
    with pytest.raises(PermissionRuleError) as info:
        parse_rule(text, "allow")
    assert info.value.code == code
    assert isinstance(info.value, ValueError)


def test_unknown_action_and_non_string() -> None:
    with pytest.raises(PermissionRuleError) as info:
        parse_rule("shell", "permit")
    assert info.value.code == "unknown_action"
    with pytest.raises(PermissionRuleError) as info:
        parse_rule(["shell"], "allow")  # type: ignore[arg-type]
    assert info.value.code == "bad_type"


# ---- deny wins ---------------------------------------------------------------------------------


def test_deny_wins_over_allow_and_ask_in_any_order_and_layer() -> None:
    allow = parse_rule("shell(git:*)", "allow", layer="project:p")
    deny = parse_rule("shell(git push:*)", "deny", layer="everyone")
    ask = parse_rule("shell", "ask", layer="user:ann")
    for order in ([allow, deny, ask], [deny, ask, allow], [ask, allow, deny]):
        verdict = decide(order, SHELL, {"command": "git push origin main"})
        assert (verdict.action, verdict.rule) == ("deny", "shell(git push:*)")
    assert decide([allow, ask], SHELL, {"command": "git status"}).action == "ask"
    assert decide([allow], SHELL, {"command": "git status"}).action == "allow"


def test_ruleset_layers_deny_in_user_layer_beats_project_allow() -> None:
    rule_set = load_rules(
        {
            "allow": ["file_read"],
            "users": {"ann": {"deny": ["web_fetch(domain:example.com)"]}},
            "projects": {"site": {"allow": ["web_fetch(domain:example.com)", "shell(npm run test:*)"]}},
        }
    )
    url = {"url": "https://www.example.com/x"}
    assert decide(rule_set.for_call("ann", "site"), WEB, url).action == "deny"
    assert decide(rule_set.for_call("bob", "site"), WEB, url).action == "allow"
    assert decide(rule_set.for_call("bob", "other"), WEB, url).action == "ask"  # the default
    assert decide(rule_set.for_call("bob", "site"), SHELL, {"command": "npm run test:unit"}).action == "ask"
    assert decide(rule_set.for_call("bob", "site"), SHELL, {"command": "npm run test --watch"}).action == "allow"
    assert [r.layer for r in rule_set.for_call("ann", "site")] == [
        "everyone",
        "user:ann",
        "project:site",
        "project:site",
    ]


def test_explicit_allow_beats_the_default_ask() -> None:
    assert action([], FILE_EDIT, path="a.md") == "ask"
    assert action(rules(("allow", "file_edit(*.md)")), FILE_EDIT, path="a.md") == "allow"
    assert action([], PYTHON, code="print(1)") == "ask"
    assert action(rules(("allow", "python(*)")), PYTHON, code="print(1)") == "allow"


def test_explicit_deny_and_ask_beat_the_default_allow() -> None:
    assert action([], FILE_READ, path=".env") == "allow"
    assert action(rules(("deny", "file_read(.env)")), FILE_READ, path="sub/.env") == "deny"
    assert action(rules(("ask", "memory_search")), MEMORY, query="x") == "ask"


# ---- shell -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("git", "allow"),
        ("git status", "allow"),
        ("  git   log  --oneline ", "allow"),
        ("gitx status", "ask"),
        ("git-lfs pull", "ask"),
        ("rm -rf /; git status", "ask"),
        ("git status && curl x | sh", "ask"),
        ("git status || true", "ask"),
        ("git log > ~/.bashrc", "ask"),
        ("git log < /etc/passwd", "ask"),
        ("git log $(curl x)", "ask"),
        ("git log `curl x`", "ask"),
        ("git status\ncurl x", "ask"),
        ("git status &", "ask"),
        ("echo git status", "ask"),
    ],
)
def test_shell_prefix_allow_refuses_metacharacters(command: str, expected: str) -> None:
    assert action(rules(("allow", "shell(git:*)")), SHELL, command=command) == expected


def test_shell_multiword_prefix_and_glob() -> None:
    rule_list = rules(("allow", "shell(npm run test:*)"), ("allow", "shell(ls *)"))
    assert action(rule_list, SHELL, command="npm run test") == "allow"
    assert action(rule_list, SHELL, command="npm run test -- --watch") == "allow"
    assert action(rule_list, SHELL, command="npm run testx") == "ask"
    assert action(rule_list, SHELL, command="npm run build") == "ask"
    assert action(rule_list, SHELL, command="ls -la notes") == "allow"
    assert action(rule_list, SHELL, command="ls -la; rm x") == "ask"


def test_shell_star_allows_everything_the_person_allowed() -> None:
    assert action(rules(("allow", "shell")), SHELL, command="a && b | c") == "allow"


def test_shell_deny_matches_any_part_of_a_chain() -> None:
    deny = rules(("allow", "shell"), ("deny", "shell(rm:*)"))
    for command in ("rm -rf /", "echo hi; rm -rf /", "ls && rm x", "cat a | rm b", "echo $(rm -rf /)", '"rm" -rf /'):
        assert action(deny, SHELL, command=command) == "deny", command
    assert action(deny, SHELL, command="echo rm") == "allow"
    assert action(deny, SHELL, command="rmdir x") == "allow"


def test_shell_without_command_only_matches_star() -> None:
    assert action(rules(("allow", "shell(git:*)")), SHELL) == "ask"
    assert action(rules(("deny", "shell")), SHELL) == "deny"


# ---- files -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "path", "expected"),
    [
        ("*.md", "a.md", True),
        ("*.md", "notes/a.md", True),  # no slash: the last component at any depth, like .gitignore
        ("*.md", "notes/a.txt", False),
        ("*.md", "a.md/b.txt", False),
        ("notes/*.md", "notes/a.md", True),
        ("notes/*.md", "notes/sub/a.md", False),  # * never crosses /
        ("notes/*.md", "other/notes/a.md", False),  # a slash anchors at the root
        ("notes/**", "notes", True),
        ("notes/**", "notes/sub/deep/a.md", True),
        ("notes/**", "notesx/a.md", False),
        ("notes/", "notes/a.md", True),
        ("**/*.md", "a.md", True),
        ("**/*.md", "x/y/a.md", True),
        ("docs/**/index.md", "docs/index.md", True),
        ("docs/**/index.md", "docs/a/b/index.md", True),
        ("docs/**/index.md", "docs/a/b/other.md", False),
        ("/top.md", "top.md", True),
        ("/top.md", "sub/top.md", False),
        ("a?.md", "ab.md", True),
        ("a?.md", "a/.md", False),
        ("[!x]*.md", "y.md", True),
        ("[!x]*.md", "x.md", False),
        ("[a-c].txt", "b.txt", True),
        ("*.MD", "a.md", False),  # case-sensitive
        ("*", "deep/down/file", True),
    ],
)
def test_path_globs(pattern: str, path: str, expected: bool) -> None:
    assert path_matches(pattern, path) is expected


def test_file_edit_md_rule_matches_notes_md_and_the_write_tool() -> None:
    rule_list = rules(("allow", "file_edit(*.md)"))
    assert action(rule_list, FILE_EDIT, path="notes/a.md") == "allow"
    assert action(rule_list, FILE_WRITE, path="notes/a.md") == "allow"  # the kind covers both tools
    assert action(rule_list, FILE_EDIT, path="notes/a.py") == "ask"


def test_tool_name_rule_governs_only_that_tool() -> None:
    rule_list = rules(("allow", "file_write(*.txt)"))
    assert action(rule_list, FILE_WRITE, path="out.txt") == "allow"
    assert action(rule_list, FILE_EDIT, path="out.txt") == "ask"
    listing = rules(("deny", "file_list(secret/**)"))
    assert action(listing, FILE_LIST, path="secret") == "deny"
    assert action(listing, FILE_READ, path="secret/a") == "allow"


def test_paths_are_normalised_before_matching() -> None:
    deny = rules(("deny", "file_read(secret/**)"))
    assert action(deny, FILE_READ, path="./secret/key") == "deny"
    assert action(deny, FILE_READ, path="notes/../secret/key") == "deny"
    assert action(deny, FILE_READ, path="notes//../secret") == "deny"


def test_outside_the_workspace_is_never_allowed_by_rules_or_defaults() -> None:
    allow = rules(("allow", "file_read"), ("allow", "file_edit(**)"))
    for path in ("/etc/passwd", "../x", "notes/../../x", "~/.ssh/id_rsa", ".."):
        assert action(allow, FILE_READ, path=path) == "ask", path
        assert action(allow, FILE_EDIT, path=path) == "ask", path
    assert action(rules(("deny", "file_read(id_rsa)")), FILE_READ, path="~/.ssh/id_rsa") == "deny"


# ---- web ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "url", "expected"),
    [
        ("web_fetch(domain:python.org)", "https://python.org/", "allow"),
        ("web_fetch(domain:python.org)", "https://docs.python.org/3/", "allow"),
        ("web_fetch(domain:python.org)", "https://DOCS.Python.org.:443/x", "allow"),
        ("web_fetch(domain:python.org)", "https://notpython.org/", "ask"),
        ("web_fetch(domain:python.org)", "https://python.org.evil.com/", "ask"),
        ("web_fetch(domain:python.org)", "https://python.org@evil.com/", "ask"),
        ("web_fetch(domain:python.org)", "https://evil.com\\@python.org/", "ask"),
        ("web_fetch(domain:docs.python.org)", "https://python.org/", "ask"),
        ("web_fetch(domain:*.example.com)", "https://a.b.example.com/", "allow"),
        ("web_fetch(domain:*.example.com)", "https://example.com/", "ask"),
        ("web_fetch(domain:*)", "https://anything.test/", "allow"),
        ("web_fetch(domain:python.org)", "not a url", "ask"),
    ],
)
def test_web_domains_and_subdomains(rule: str, url: str, expected: str) -> None:
    assert action(rules(("allow", rule)), WEB, url=url) == expected


def test_web_default_depends_on_known_domains() -> None:
    url = {"url": "https://docs.python.org/3/"}
    assert decide([], WEB, url).action == "ask"
    assert decide([], WEB, url, known_domains={"docs.python.org"}).action == "allow"
    assert decide([], WEB, url, known_domains={"python.org"}).action == "allow"
    assert decide([], WEB, url, known_domains={"example.com"}).action == "ask"
    assert decide(rules(("deny", "web_fetch(domain:python.org)")), WEB, url, {"python.org"}).action == "deny"


def test_url_host() -> None:
    assert url_host("https://user@Docs.Python.org:8080/x") == "docs.python.org"
    assert url_host("file:///etc/passwd") is None
    assert url_host("https://a b.com/") is None


# ---- mcp ---------------------------------------------------------------------------------------


def test_mcp_rules_by_server_and_tool() -> None:
    assert action(rules(("allow", "mcp(git:*)")), GIT_COMMIT, message="x") == "allow"
    assert action(rules(("allow", "mcp(git:*)")), TIME_NOW) == "ask"
    assert action(rules(("deny", "mcp(git:git_commit)")), GIT_COMMIT) == "deny"
    assert action(rules(("deny", "mcp(git:git_commit)")), GIT_STATUS) == "allow"
    assert action(rules(("deny", "mcp(*:*_commit)")), GIT_COMMIT) == "deny"
    assert action(rules(("deny", "mcp")), GIT_STATUS) == "deny"
    assert action(rules(("allow", "shell")), GIT_COMMIT) == "ask"  # a builtin kind never covers an MCP tool


def test_mcp_default_follows_the_read_only_hint() -> None:
    assert decide([], GIT_STATUS, {}).action == "allow"
    assert decide([], GIT_COMMIT, {}).action == "ask"
    unnamed = ToolSpec(name="git__git_log", description="", read_only=True)  # kind derived from the name
    assert decide([], unnamed, {}).action == "allow"


# ---- defaults ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tool", "arguments", "expected"),
    [
        (FILE_READ, {"path": "notes/a.md"}, "allow"),
        (FILE_LIST, {}, "allow"),
        (builtin("file_search", "file_read", True), {"path": ".", "pattern": "x"}, "allow"),
        (FILE_READ, {"path": "/etc/passwd"}, "ask"),
        (FILE_READ, {"path": ["a"]}, "ask"),
        (MEMORY, {"query": "x"}, "allow"),
        (FILE_WRITE, {"path": "a.md"}, "ask"),
        (FILE_EDIT, {"path": "a.md"}, "ask"),
        (SHELL, {"command": "ls"}, "ask"),
        (PYTHON, {"code": "1"}, "ask"),
        (WEB, {"url": "https://x.org"}, "ask"),
        (ToolSpec(name="mystery", description=""), {}, "ask"),
    ],
)
def test_defaults_for_every_kind(tool: ToolSpec, arguments: dict, expected: str) -> None:
    verdict = decide([], tool, arguments)
    assert verdict.action == expected
    assert verdict.rule is None and verdict.reason.startswith("default:")


def test_decision_names_rule_and_layer() -> None:
    verdict = decide([parse_rule("shell(git:*)", "allow", layer="user:ann")], SHELL, {"command": "git log"})
    assert verdict.rule == "shell(git:*)" and "user:ann" in verdict.reason


# ---- rule files --------------------------------------------------------------------------------


def test_load_rules_shapes() -> None:
    rule_set = load_rules(
        {"deny": ["shell(rm:*)"], "users": {"ann": {"allow": ["shell(git:*)"]}}, "projects": {"p": {"ask": ["mcp"]}}}
    )
    assert rule_set.everyone == (Rule(kind="shell", specifier="rm:*", action="deny", layer="everyone"),)
    assert [r.text for r in rule_set.for_call("ann", "p")] == ["shell(rm:*)", "shell(git:*)", "mcp(*)"]
    assert [r.text for r in rule_set.for_call(None, None)] == ["shell(rm:*)"]
    assert load_rules({}) == RuleSet()


@pytest.mark.parametrize(
    ("mapping", "code", "where"),
    [
        ({"alow": ["shell"]}, "unknown_key", "alow"),
        ({"allow": "shell"}, "bad_type", "allow"),
        ({"users": {"ann": {"allow": ["shell(git:*"]}}}, "unbalanced", "users.ann.allow[0]"),
        ({"users": {"ann": {"deny": ["shell", "bash"]}}}, "unknown_kind", "users.ann.deny[1]"),
        ({"projects": {"p": {"permit": []}}}, "unknown_key", "projects.p.permit"),
        ({"projects": {"p": ["shell"]}}, "bad_type", "projects.p"),
        ({"users": ["ann"]}, "bad_type", "users"),
        ({"allow": [3]}, "bad_type", "allow[0]"),
    ],
)
def test_load_rules_rejects_malformed_files(mapping: dict, code: str, where: str) -> None:
    with pytest.raises(PermissionRuleError) as info:
        load_rules(mapping)
    assert (info.value.code, info.value.where) == (code, where)


def test_permissions_file_missing_good_malformed_and_reloaded(tmp_path: Path) -> None:
    path = tmp_path / "permissions.toml"
    file = PermissionsFile(path)
    assert file.read() == (RuleSet(), None)

    path.write_text('allow = ["shell(git:*)"]\n[users.ann]\ndeny = ["shell"]\n')
    rule_set, error = file.read()
    assert error is None and [r.text for r in rule_set.for_call("ann", None)] == ["shell(git:*)", "shell(*)"]

    path.write_text('allow = ["shell(git:*"]\n')
    os.utime(path, ns=(1, 1))
    kept, error = file.read()
    assert kept == rule_set and error is not None and "unbalanced" in error and str(path) in error

    path.write_text("allow = [\n")
    os.utime(path, ns=(2, 2))
    kept, error = file.read()
    assert kept == rule_set and error is not None

    path.write_text('deny = ["python"]\n')
    os.utime(path, ns=(3, 3))
    fresh, error = file.read()
    assert error is None and [r.text for r in fresh.everyone] == ["python(*)"]

    path.unlink()
    assert file.read() == (RuleSet(), None)
