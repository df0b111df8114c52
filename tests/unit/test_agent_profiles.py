"""Agent profiles (hermes_orchestrator.profiles): the built-ins, loading and overriding from $HERMES_HOME/agents,
skipping malformed files, picking a profile for a task, granted tools and profile rules."""

from __future__ import annotations

import importlib.resources
from pathlib import Path

import pytest
import structlog

from hermes_proto.permissions import decide
from hermes_proto.tools import ToolSpec

from hermes_orchestrator.profiles import (
    DEFAULT_PROFILE,
    AgentProfile,
    ProfileError,
    builtin_profiles,
    granted_tools,
    load_profiles,
    parse_profile,
    pick_profile,
    profile_rules,
    requires_approval,
)

KINDS = {
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
REGISTRY = [ToolSpec(name=n, description=n, permission=k) for n, k in KINDS.items()] + [
    ToolSpec(name="git__git_status", description="", permission="mcp", server="git", read_only=True),
    ToolSpec(name="git__git_commit", description="", permission="mcp", server="git"),
    ToolSpec(name="file_srv__read", description="", permission="mcp", server="file_srv"),
]


def names(tools: list[ToolSpec]) -> list[str]:
    return [t.name for t in tools]


def test_builtin_profiles_are_package_data_and_valid() -> None:
    folder = importlib.resources.files("hermes_orchestrator").joinpath("agent_profiles")
    assert sorted(e.name for e in folder.iterdir() if e.name.endswith(".toml")) == [
        "code.toml",
        "fileops.toml",
        "research.toml",
    ]
    profiles = builtin_profiles()
    assert sorted(profiles) == ["code", "fileops", "research"]
    for profile in profiles.values():
        prompt = profile.system_prompt.lower()
        assert "untrusted" in prompt and "never instructions" in prompt, profile.name
        assert 1 <= profile.max_iterations <= 50 and profile.description


def test_builtin_tool_grants() -> None:
    profiles = builtin_profiles()
    assert names(granted_tools(profiles["code"], REGISTRY)) == [
        "file_read",
        "file_list",
        "file_search",
        "file_write",
        "file_edit",
        "shell",
        "python",
    ]
    assert names(granted_tools(profiles["research"], REGISTRY)) == ["file_write", "web_fetch", "memory_search"]
    assert names(granted_tools(profiles["fileops"], REGISTRY)) == ["file_read", "file_list", "file_search"]


def test_research_profile_rules_deny_scripts() -> None:
    research = builtin_profiles()["research"]
    rules = profile_rules(research)
    write = REGISTRY[3]
    assert {r.layer for r in rules} == {"profile:research"}
    assert decide(rules, write, {"path": "notes/run.sh"}).action == "deny"
    assert decide(rules, write, {"path": "notes/topic.md"}).action == "ask"


def test_tool_globs_and_mcp_patterns() -> None:
    base = {"name": "x", "system_prompt": "p"}
    files = parse_profile({**base, "tools": ["file_*"]}, source="t")
    assert names(granted_tools(files, REGISTRY)) == [
        "file_read",
        "file_list",
        "file_search",
        "file_write",
        "file_edit",
    ]  # and not the MCP tool file_srv__read
    every_mcp = parse_profile({**base, "tools": ["mcp:*"]}, source="t")
    assert names(granted_tools(every_mcp, REGISTRY)) == ["git__git_status", "git__git_commit", "file_srv__read"]
    one_server = parse_profile({**base, "tools": ["mcp:git"]}, source="t")
    assert names(granted_tools(one_server, REGISTRY)) == ["git__git_status", "git__git_commit"]
    dunder = parse_profile({**base, "tools": ["git__*_status"]}, source="t")
    assert names(granted_tools(dunder, REGISTRY)) == ["git__git_status"]


def test_approval_required() -> None:
    profile = parse_profile({"name": "x", "system_prompt": "p", "approval_required": ["shell", "mcp:git"]}, source="t")
    assert requires_approval(profile, REGISTRY[5])
    assert requires_approval(profile, REGISTRY[-2])
    assert not requires_approval(profile, REGISTRY[0])


def test_defaults_and_validation() -> None:
    profile = parse_profile({"system_prompt": "p"}, source="t", stem="mine")
    assert profile == AgentProfile(name="mine", system_prompt="p")
    assert profile.max_iterations == 8 and profile.criteria is None and profile.max_cost_cents is None


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({"max_iterations": 0}, "$.max_iterations"),
        ({"max_iterations": 51}, "$.max_iterations"),
        ({"temperature": 2.5}, "$.temperature"),
        ({"temperature": -0.1}, "$.temperature"),
        ({"name": "Bad Name"}, "$.name"),
        ({"name": "x" * 33}, "$.name"),
        ({"criteria": "fastest"}, "$.criteria"),
        ({"tools": "shell"}, "$.tools"),
        ({"max_tokens": 0}, "$.max_tokens"),
        ({"timeout_s": 0}, "$.timeout_s"),
        ({"max_cost_cents": -1}, "$.max_cost_cents"),
        ({"system_prompt": ""}, "$.system_prompt"),
        ({"tool": ["shell"]}, "unknown field `tool`"),
        ({"permissions": {"allow": ["shell(git:*"]}}, "unbalanced"),
        ({"permissions": {"alow": []}}, "unknown field `alow`"),
    ],
)
def test_invalid_profiles_name_the_field(data: dict, fragment: str) -> None:
    with pytest.raises(ProfileError) as info:
        parse_profile({"name": "x", "system_prompt": "p", **data}, source="agents/x.toml")
    assert fragment in str(info.value) and "agents/x.toml" in str(info.value)


def test_name_must_match_the_file_name() -> None:
    with pytest.raises(ProfileError, match="differs from the file name"):
        parse_profile({"name": "code", "system_prompt": "p"}, source="agents/other.toml", stem="other")


def write(home: Path, name: str, text: str) -> Path:
    path = home / "agents" / f"{name}.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_load_profiles_without_agents_folder_gives_builtins(tmp_path: Path) -> None:
    assert load_profiles(tmp_path) == builtin_profiles()


def test_user_file_overrides_builtin_and_adds_new(tmp_path: Path) -> None:
    write(tmp_path, "code", 'system_prompt = "my code prompt"\ntools = ["file_read"]\nmax_iterations = 3\n')
    write(tmp_path, "notes", 'name = "notes"\nsystem_prompt = "keep notes"\ntools = ["file_*"]\n')
    profiles = load_profiles(tmp_path)
    assert sorted(profiles) == ["code", "fileops", "notes", "research"]
    assert profiles["code"].system_prompt == "my code prompt" and profiles["code"].max_iterations == 3
    assert profiles["research"] == builtin_profiles()["research"]


def test_malformed_user_files_are_skipped_and_logged(tmp_path: Path) -> None:
    bad_toml = write(tmp_path, "broken", "system_prompt = \n")
    bad_value = write(tmp_path, "code", 'system_prompt = "p"\nmax_iterations = 99\n')
    write(tmp_path, "good", 'system_prompt = "p"\n')
    with structlog.testing.capture_logs() as logs:
        profiles = load_profiles(tmp_path)
    assert "broken" not in profiles and "good" in profiles
    assert profiles["code"] == builtin_profiles()["code"]  # the bad override is skipped, the built-in stays
    errors = [e for e in logs if e["event"] == "agent_profile_invalid"]
    assert sorted(e["path"] for e in errors) == sorted([str(bad_toml), str(bad_value)])
    assert any("$.max_iterations" in e["error"] for e in errors)


@pytest.mark.parametrize(
    ("task", "expected"),
    [
        ("write a python script that parses my logs and add tests", "code"),
        ("debug the failing function in app.py", "code"),
        ("research the best lightweight static site generators and cite sources", "research"),
        ("I want to learn Spanish grammar", "research"),
        ("summarise https://example.com/post for me", "research"),
        ("list the markdown files in my notes folder", "fileops"),
        ("which directory holds the tax documents?", "fileops"),
        ("research what my notes folder says about taxes", "fileops"),  # files beat research without the web
        ("research the notes at https://example.com/notes", "research"),
        ("what is the capital of France", DEFAULT_PROFILE),
    ],
)
def test_pick_profile(task: str, expected: str) -> None:
    profile, reason = pick_profile(task, builtin_profiles())
    assert profile.name == expected, reason
    assert reason.startswith(f"profile {expected}: idea type ")


def test_pick_profile_reason_says_why() -> None:
    profiles = builtin_profiles()
    assert "about files" in pick_profile("list the files in my notes folder", profiles)[1]
    assert "least privileged" in pick_profile("what is the capital of France", profiles)[1]


def test_pick_profile_falls_back_when_the_choice_is_missing() -> None:
    only = {"fileops": builtin_profiles()["fileops"]}
    profile, reason = pick_profile("write a python script", only)
    assert profile.name == "fileops" and "'code' is missing" in reason
    with pytest.raises(ValueError):
        pick_profile("anything", {})
