"""mcp.toml (hermes_tools.mcp_config): parsing, validation errors that name the server and the field, and the
atomic add/remove rewrite read back by tomllib."""

from __future__ import annotations

import stat
import tomllib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hermes_proto.tools import mcp_tool_name, split_mcp_name

from hermes_tools.mcp_config import (
    McpConfigError,
    McpServerConfig,
    add_server,
    config_path,
    enabled_servers,
    load_config,
    parse_config,
    remove_server,
    render_config,
)

EXAMPLE = """
[servers.time]
command = ["python", "-m", "mcp_server_time"]
args = ["--local-timezone", "UTC"]
env = { TZ = "UTC", "odd key" = "v" }
cwd = "work"

[servers.shell-style]
command = "npx -y '@scope/server name'"

[servers.docs]
url = "https://mcp.example.com/mcp"
headers = { Authorization = "Bearer abc" }

[servers.off]
url = "http://127.0.0.1:9/mcp"
enabled = false
"""


def test_parses_stdio_and_http_servers(tmp_path: Path) -> None:
    servers = parse_config(EXAMPLE, base_dir=tmp_path)
    assert set(servers) == {"time", "shell-style", "docs", "off"}
    time = servers["time"]
    assert time.transport == "stdio"
    assert time.argv == ["python", "-m", "mcp_server_time", "--local-timezone", "UTC"]
    assert time.env == {"TZ": "UTC", "odd key": "v"}
    assert time.cwd == str(tmp_path / "work")  # relative to the file's directory
    assert servers["shell-style"].command == ("npx", "-y", "@scope/server name")  # split like a shell, none run
    docs = servers["docs"]
    assert (docs.transport, docs.url, docs.headers) == (
        "http",
        "https://mcp.example.com/mcp",
        {"Authorization": "Bearer abc"},
    )
    assert docs.enabled and not servers["off"].enabled


def test_enabled_servers_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "mcp.toml"
    assert load_config(path) == {} and enabled_servers(path) == {}
    path.write_text(EXAMPLE)
    assert set(enabled_servers(path)) == {"time", "shell-style", "docs"}


def test_config_path_follows_hermes_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HERMES_HOME", str(tmp_path))
    assert config_path() == tmp_path / "mcp.toml"
    assert config_path(tmp_path / "other") == tmp_path / "other" / "mcp.toml"


@pytest.mark.parametrize(
    ("text", "server", "field"),
    [
        ('[servers.my_server]\ncommand = ["x"]', "my_server", "name"),  # '_' would make '__' ambiguous
        (f'[servers.{"a" * 33}]\ncommand = ["x"]', "a" * 33, "name"),
        ('[servers."a.b"]\ncommand = ["x"]', "a.b", "name"),
        ('[servers.both]\ncommand = ["x"]\nurl = "http://h/mcp"', "both", "url"),
        ("[servers.neither]\nenabled = true", "neither", "command"),
        ("[servers.empty]\ncommand = []", "empty", "command"),
        ('[servers.blank]\ncommand = [""]', "blank", "command"),
        ("[servers.num]\ncommand = [1]", "num", "command"),
        ('[servers.typo]\ncommand = ["x"]\nargz = []', "typo", "argz"),
        ('[servers.args]\ncommand = ["x"]\nargs = "a b"', "args", "args"),
        ('[servers.env]\ncommand = ["x"]\nenv = { A = 1 }', "env", "env"),
        ('[servers.envkey]\ncommand = ["x"]\nenv = { "A=B" = "1" }', "envkey", "env.A=B"),
        ('[servers.nul]\ncommand = ["x"]\nargs = ["a\\u0000"]', "nul", "args"),
        ('[servers.cwd]\ncommand = ["x"]\ncwd = 3', "cwd", "cwd"),
        ('[servers.hdr]\ncommand = ["x"]\nheaders = { A = "b" }', "hdr", "headers"),
        ('[servers.ftp]\nurl = "ftp://h/mcp"', "ftp", "url"),
        ('[servers.nohost]\nurl = "http:///mcp"', "nohost", "url"),
        ('[servers.urlargs]\nurl = "http://h/mcp"\nargs = ["a"]', "urlargs", "args"),
        ('[servers.hname]\nurl = "http://h/mcp"\nheaders = { "Bad Name" = "v" }', "hname", "headers"),
        ('[servers.hval]\nurl = "http://h/mcp"\nheaders = { X = "a\\r\\nInjected: 1" }', "hval", "headers.X"),
        ('[servers.on]\nurl = "http://h/mcp"\nenabled = "yes"', "on", "enabled"),
        ('[servers]\nplain = "string"', "plain", "servers"),
    ],
)
def test_invalid_entries_name_the_server_and_field(text: str, server: str, field: str) -> None:
    with pytest.raises(McpConfigError) as caught:
        parse_config(text)
    error = caught.value
    assert isinstance(error, ValueError)
    assert (error.code, error.server, error.field) == ("mcp_config_invalid", server, field)
    assert repr(server) in str(error)


def test_file_level_errors() -> None:
    with pytest.raises(McpConfigError) as syntax:
        parse_config("[servers.x\ncommand = [")
    assert syntax.value.code == "mcp_config_syntax"
    with pytest.raises(McpConfigError) as top:
        parse_config('title = "x"')
    assert (top.value.code, top.value.field) == ("mcp_config_invalid", "title")
    with pytest.raises(McpConfigError) as table:
        parse_config('servers = "x"')
    assert (table.value.code, table.value.field) == ("mcp_config_invalid", "servers")


@given(
    server=st.from_regex(r"[A-Za-z0-9-]{1,32}", fullmatch=True),
    tool=st.from_regex(r"[A-Za-z0-9_-]{1,30}", fullmatch=True),
)
def test_valid_server_names_split_back_from_any_tool_name(server: str, tool: str) -> None:
    parse_config(f'[servers.{server}]\ncommand = ["x"]')  # accepted
    assert split_mcp_name(mcp_tool_name(server, tool)) == (server, tool)


def test_underscore_server_names_would_be_ambiguous() -> None:
    # why the rule exists: "a_" + "__" + "b" splits as ("a", "_b")
    assert split_mcp_name(mcp_tool_name("a_", "b")) != ("a_", "b")
    with pytest.raises(McpConfigError):
        parse_config('[servers.a_]\ncommand = ["x"]')


TRICKY = 'quote " backslash \\ tab \t newline \n cr \r bell \x07 del \x7f unicode é 🚀 "#[x]'


def test_add_and_remove_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "home" / "mcp.toml"  # the directory does not exist yet
    stdio = McpServerConfig(
        name="tricky",
        command=("/usr/bin/env", TRICKY),
        args=("--flag", TRICKY, ""),
        env={"PLAIN": "1", "with space": TRICKY, "é": "ü"},
        cwd=str(tmp_path / "dir with space"),
    )
    http = McpServerConfig(
        name="web-1",
        url="https://mcp.example.com/mcp?a=1&b=2",
        headers={"Authorization": 'Bearer "x"\\y'},
        enabled=False,
    )
    assert add_server(path, stdio) == {"tricky": stdio}
    assert add_server(path, http) == {"tricky": stdio, "web-1": http}
    assert load_config(path) == {"tricky": stdio, "web-1": http}
    tomllib.loads(path.read_text(encoding="utf-8"))  # plain TOML
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # headers and env may hold secrets
    assert [p.name for p in path.parent.iterdir()] == ["mcp.toml"]  # no temp file left behind

    with pytest.raises(McpConfigError) as taken:
        add_server(path, McpServerConfig(name="tricky", command=("other",)))
    assert (taken.value.code, taken.value.server) == ("mcp_server_exists", "tricky")
    replaced = McpServerConfig(name="tricky", command=("other",))
    add_server(path, replaced, replace=True)
    assert load_config(path)["tricky"] == replaced

    assert remove_server(path, "tricky") == {"web-1": http}
    assert load_config(path) == {"web-1": http}
    with pytest.raises(McpConfigError) as missing:
        remove_server(path, "tricky")
    assert (missing.value.code, missing.value.server) == ("mcp_server_not_found", "tricky")
    remove_server(path, "web-1")
    assert load_config(path) == {}


def test_invalid_additions_leave_the_file_alone(tmp_path: Path) -> None:
    path = tmp_path / "mcp.toml"
    path.write_text(EXAMPLE)
    before = path.read_bytes()
    for bad in (
        McpServerConfig(name="bad_name", command=("x",)),
        McpServerConfig(name="both", command=("x",), url="http://h/mcp"),
        McpServerConfig(name="neither"),
        McpServerConfig(name="hdr", url="http://h/mcp", headers={"X": "a\nb"}),
        McpServerConfig(name="env", command=("x",), env={"A=B": "1"}),
    ):
        with pytest.raises(McpConfigError) as caught:
            add_server(path, bad)
        assert caught.value.code == "mcp_config_invalid" and caught.value.server == bad.name
    assert path.read_bytes() == before


def test_a_broken_file_is_not_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "mcp.toml"
    path.write_text("[servers.x\n")
    with pytest.raises(McpConfigError) as caught:
        add_server(path, McpServerConfig(name="ok", command=("x",)))
    assert caught.value.code == "mcp_config_syntax"
    assert path.read_text() == "[servers.x\n"


text_values = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=40)


@given(
    args=st.lists(text_values, max_size=4),
    env=st.dictionaries(text_values.filter(lambda key: key != "" and "=" not in key), text_values, max_size=4),
)
def test_rendered_strings_parse_back_equal(args: list[str], env: dict[str, str]) -> None:
    server = McpServerConfig(name="s", command=("cmd",), args=tuple(args), env=env)
    assert parse_config(render_config({"s": server})) == {"s": server}
