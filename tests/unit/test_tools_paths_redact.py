"""The tool service's pure parts, no sandbox: paths inside a workspace (:mod:`hermes_tools.workspace`), the
workspace fingerprint an approval binds to, secret redaction and output truncation (:mod:`hermes_tools.redact`),
and the built-in tools' argument schemas (:mod:`hermes_tools.builtin`)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from hermes_proto.tools import call_binding

from hermes_tools.builtin import BUILTIN_SPECS, ToolContext, run_builtin, validate_arguments
from hermes_tools.errors import ToolError
from hermes_tools.redact import REDACTED, Redactor, truncate
from hermes_tools.workspace import relative_inside, resolve_inside, workspace_dir, workspace_state


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A Hermes home with a secret next to the workspace and a workspace with a file, a subdirectory and links."""
    (tmp_path / "secret.txt").write_text("top secret\n")
    ws = workspace_dir(tmp_path, "proj")
    (ws / "a.txt").write_text("a\n")
    (ws / "sub").mkdir()
    (ws / "sub" / "b.txt").write_text("b\n")
    (ws / "to_secret").symlink_to(tmp_path / "secret.txt")
    (ws / "to_etc").symlink_to("/etc")
    (ws / "to_sub").symlink_to("sub")
    (ws / "up").symlink_to("..")
    return tmp_path


def ws_of(home: Path) -> Path:
    return home / "workspace" / "proj"


# --- paths -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("a.txt", "a.txt"),
        ("./sub/b.txt", "sub/b.txt"),
        ("sub/../a.txt", "a.txt"),
        ("sub/new/deeper.txt", "sub/new/deeper.txt"),  # need not exist
        ("to_sub/b.txt", "sub/b.txt"),  # a link that stays inside
        ("/workspace/sub/b.txt", "sub/b.txt"),  # the path the agent sees in the sandbox
        ("/workspace", "."),
        (".", "."),
    ],
)
def test_paths_inside_the_workspace_resolve(home: Path, path: str, expected: str):
    ws = ws_of(home)
    assert relative_inside(ws, path) == expected
    root = Path(os.path.realpath(ws))
    assert resolve_inside(ws, path) == (root if expected == "." else root / expected)


def test_an_absolute_host_path_inside_the_workspace_is_accepted(home: Path):
    ws = ws_of(home)
    assert relative_inside(ws, str(ws / "sub" / "b.txt")) == "sub/b.txt"


@pytest.mark.parametrize(
    "path",
    [
        "../secret.txt",
        "sub/../../secret.txt",
        "../../../../../../etc/passwd",
        "/etc/passwd",
        "/workspace/../etc/passwd",
        "to_secret",  # a link to a file outside
        "to_etc/passwd",  # a link to a directory outside
        "to_etc",
        "up/secret.txt",  # a link to the workspace's parent
        "to_sub/../../secret.txt",  # .. applied after the link is resolved
    ],
)
def test_escapes_are_refused(home: Path, path: str):
    with pytest.raises(ToolError) as refused:
        resolve_inside(ws_of(home), path)
    assert refused.value.code == "path_outside_workspace"
    assert path in refused.value.message


@pytest.mark.parametrize("path", ["", "a\x00b"])
def test_empty_and_nul_paths_are_invalid(home: Path, path: str):
    with pytest.raises(ToolError) as refused:
        resolve_inside(ws_of(home), path)
    assert refused.value.code == "invalid_arguments"


def test_workspace_dir_creates_and_validates(tmp_path: Path):
    ws = workspace_dir(tmp_path, "My_project-1")
    assert ws == tmp_path / "workspace" / "My_project-1" and ws.is_dir()
    assert workspace_dir(tmp_path, "My_project-1") == ws  # idempotent
    for bad in ("", "../x", "a/b", "a b", "x" * 65, ".", "é"):
        with pytest.raises(ToolError) as refused:
            workspace_dir(tmp_path, bad)
        assert refused.value.code == "invalid_project"
    assert sorted(p.name for p in (tmp_path / "workspace").iterdir()) == ["My_project-1"]


def test_workspace_state_changes_with_any_file_change(home: Path):
    ws = ws_of(home)
    first = workspace_state(ws)
    assert first == workspace_state(ws)  # stable when nothing changed
    assert len(first) == 64
    states = {first}

    (ws / "a.txt").write_text("A\n")  # same size, new mtime
    os.utime(ws / "a.txt", ns=(time.time_ns(), time.time_ns() + 10_000_000))
    states.add(workspace_state(ws))
    (ws / "sub" / "b.txt").write_text("bigger\n")  # new size
    states.add(workspace_state(ws))
    (ws / "new.txt").write_text("")  # a new file
    states.add(workspace_state(ws))
    (ws / "sub" / "b.txt").rename(ws / "sub" / "c.txt")  # a rename
    states.add(workspace_state(ws))
    (ws / "empty_dir").mkdir()  # a new directory
    states.add(workspace_state(ws))
    (ws / "to_etc").unlink()
    (ws / "to_etc").symlink_to("/usr")  # a link pointed elsewhere
    states.add(workspace_state(ws))
    assert len(states) == 7

    # What an approval binds to: the same call on a changed workspace is another binding.
    assert call_binding("shell", {"command": "make"}, first) != call_binding(
        "shell", {"command": "make"}, workspace_state(ws)
    )


def test_workspace_state_reads_no_content(home: Path):
    ws = ws_of(home)
    locked = ws / "locked.bin"
    locked.write_bytes(b"x" * 10)
    before = workspace_state(ws)
    stat = locked.stat()
    locked.write_bytes(b"y" * 10)  # same size ...
    os.utime(locked, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # ... and the old mtime: only content differs
    assert workspace_state(ws) == before


# --- redaction -------------------------------------------------------------------------------------------------

FAKE = {
    "OPENAI_API_KEY": "sk-test-0123456789abcdefghij",
    "TELEGRAM_BOT_TOKEN": "123456789:AAFakeFakeFakeFakeFakeFakeFakeFake12",
    "TELEGRAM_WEBHOOK_SECRET": "hook-secret-value",
    "DB_PASSWORD": "pa55word-longer",
    "HERMES_API_TOKENS": "tok-one-aaaaaaaa,tok-two-bbbbbbbb",
    "HERMES_SESSION_SECRET": "session-secret-xyz",
    "SHORT_TOKEN": "abc",  # too short to redact safely
    "NATS_NKEY_SEED_FILE": "/run/secrets/nats.seed",  # where a secret is, not a secret
    "SOME_SEED_LIKE": "SUAMLK2ZNL35WSMW37E7UD4VZ7ELPKW7DHC3BWBSD2GCZ7IUQQXZIORRBU",
    "HOME": "/root",
    "PATH": "/usr/bin:/bin",
}


def test_env_secrets_are_redacted():
    redactor = Redactor.from_env(FAKE)
    text = "\n".join(f"{k}={v}" for k, v in FAKE.items())
    out = redactor.redact(text)
    for name in (
        "OPENAI_API_KEY",
        "TELEGRAM_BOT_TOKEN",
        "TELEGRAM_WEBHOOK_SECRET",
        "DB_PASSWORD",
        "HERMES_SESSION_SECRET",
    ):
        assert FAKE[name] not in out
        assert f"{name}={REDACTED}" in out
    assert "tok-one-aaaaaaaa" not in out and "tok-two-bbbbbbbb" not in out  # each item of a token list
    assert "SUAMLK2ZNL35" not in out  # a NATS seed by its form, whatever the name
    assert "SHORT_TOKEN=abc" in out  # short values stay
    assert "NATS_NKEY_SEED_FILE=/run/secrets/nats.seed" in out
    assert "HOME=/root" in out and "PATH=/usr/bin:/bin" in out
    assert "tok-one-aaaaaaaa" not in redactor.redact("the token tok-one-aaaaaaaa leaked")


@pytest.mark.parametrize(
    "secret",
    [
        "sk-proj-abcdefghijklmnopqrstuvwxyz012345",
        "sk-ant-api03-abcdefghijklmnopqrstuv",
        "ghp_abcdefghijklmnopqrstuvwxyz0123456789",
        "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz0123456789",
        "xoxb-1234567890-abcdefghijklmnop",
        "xoxp-1234567890-abcdefghijklmnop",
        "AKIAIOSFODNN7EXAMPLE",
        "Bearer abcdefghijklmnopqrstuvwxyz.0123456789",
        "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsawX",
        "SUAMLK2ZNL35WSMW37E7UD4VZ7ELPKW7DHC3BWBSD2GCZ7IUQQXZIORRBU",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
        "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA\nabcdef\n-----END RSA PRIVATE KEY-----",
        "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----",
    ],
)
def test_secret_formats_are_redacted_without_env(secret: str):
    out = Redactor().redact(f"before {secret} after")
    assert secret not in out
    assert out.startswith("before ") and out.endswith(" after") and REDACTED in out


def test_ordinary_text_is_left_alone():
    text = "sk-short ghp_x AKIA123 ok: 12:34 Bearer x the skeleton key task-12345 SUPPORT"
    assert Redactor.from_env({}).redact(text) == text


# --- truncation ------------------------------------------------------------------------------------------------


def test_short_output_is_untouched(tmp_path: Path):
    assert truncate("hello", 100, tmp_path, "call") == ("hello", False, None)
    assert not (tmp_path / ".hermes").exists()


def test_long_output_keeps_head_and_tail_and_spills_the_whole(tmp_path: Path):
    text = "".join(f"line {i}\n" for i in range(10_000))
    out, cut, where = truncate(text, 1000, tmp_path, "shell-abc/../x")
    assert cut and where is not None and "/" not in Path(where).name and ".." not in where
    assert where.startswith(".hermes/outputs/")
    assert (tmp_path / where).read_text() == text  # the whole text, in the workspace
    assert out.startswith("line 0\nline 1\n") and out.endswith("line 9999\n")
    omitted = len(text) - 1000
    assert f"[... {omitted} characters truncated; full output in {where}]" in out
    assert len(out) < 1000 + 120


def test_spill_never_follows_a_planted_symlink(tmp_path: Path):
    ws, outside = tmp_path / "ws", tmp_path / "outside"
    ws.mkdir()
    outside.mkdir()
    (ws / ".hermes").symlink_to(outside)  # what a sandboxed command could plant
    out, cut, where = truncate("x" * 5000, 100, ws, "call")
    assert cut and where is None
    assert "could not be kept" in out
    assert list(outside.iterdir()) == []
    (ws / ".hermes").unlink()
    (ws / ".hermes" / "outputs").mkdir(parents=True)
    (ws / ".hermes" / "outputs" / "call.txt").symlink_to(outside / "target.txt")  # a link as the file itself
    out, cut, where = truncate("y" * 5000, 100, ws, "call")
    assert where == ".hermes/outputs/call.txt" and not (outside / "target.txt").exists()
    assert (ws / where).read_text() == "y" * 5000 and not (ws / where).is_symlink()


# --- specs and arguments ---------------------------------------------------------------------------------------


def test_builtin_specs_are_complete():
    assert set(BUILTIN_SPECS) == {
        "file_read",
        "file_list",
        "file_search",
        "file_write",
        "file_edit",
        "shell",
        "python",
        "web_fetch",
        "memory_search",
    }
    kinds = {"file_read", "file_edit", "shell", "python", "web_fetch", "memory_search"}
    for name, spec in BUILTIN_SPECS.items():
        assert spec.name == name and spec.permission in kinds and spec.server is None
        assert spec.parameters["type"] == "object" and spec.parameters["additionalProperties"] is False
        assert spec.openai()["function"]["parameters"] is spec.parameters
    assert [n for n, s in BUILTIN_SPECS.items() if s.read_only] == [
        "file_read",
        "file_list",
        "file_search",
        "web_fetch",
        "memory_search",
    ]


@pytest.mark.parametrize(
    ("name", "arguments", "fragment"),
    [
        ("file_read", {}, "'path' is a required property"),
        ("file_read", {"path": 3}, "path"),
        ("file_read", {"path": "a", "offset": 0}, "offset"),
        ("file_edit", {"path": "a", "old": "", "new": "x"}, "old"),
        ("shell", {"command": "ls", "extra": 1}, "extra"),
        ("shell", {"_raw": "{not json"}, "command"),
        ("memory_search", {"query": "x", "limit": 500}, "limit"),
        ("web_fetch", {"url": ""}, "url"),
        ("python", ["print(1)"], "JSON object"),
    ],
)
def test_bad_arguments_are_refused(name: str, arguments, fragment: str):
    with pytest.raises(ToolError) as refused:
        validate_arguments(name, arguments)
    assert refused.value.code == "invalid_arguments"
    assert fragment in refused.value.message


def test_unknown_tool():
    with pytest.raises(ToolError) as refused:
        validate_arguments("rm_rf", {})
    assert refused.value.code == "unknown_tool"


async def test_memory_search_calls_the_injected_search(tmp_path: Path):
    asked: list[tuple[str, int]] = []

    async def search(query: str, limit: int) -> list[dict]:
        asked.append((query, limit))
        return [{"text": "likes tea", "score": 0.9}, {"content": "lives in Lyon"}, {"id": 3}]

    ctx = ToolContext(workspace=tmp_path, memory_search=search)
    out = await run_builtin("memory_search", {"query": "drinks", "limit": 3}, ctx)
    assert asked == [("drinks", 3)]
    assert out.text == '1. likes tea\n2. lives in Lyon\n3. {"id": 3}'
    assert out.data["results"][0]["score"] == 0.9 and not out.truncated

    with pytest.raises(ToolError) as refused:
        await run_builtin("memory_search", {"query": "x"}, ToolContext(workspace=tmp_path))
    assert refused.value.code == "memory_unavailable"


async def test_outputs_are_redacted(tmp_path: Path):
    async def search(query: str, limit: int) -> list[dict]:
        return [{"text": "the key is sk-proj-abcdefghijklmnopqrstuvwxyz and hunter2hunter2"}]

    redactor = Redactor(["hunter2hunter2"])
    ctx = ToolContext(workspace=tmp_path, memory_search=search, redactor=redactor)
    out = await run_builtin("memory_search", {"query": "key"}, ctx)
    assert out.text == f"1. the key is {REDACTED} and {REDACTED}"
