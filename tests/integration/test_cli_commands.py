"""The ``hermes`` commands list, search, export, sessions, session and soul, and its config (URL and token), run as
real subprocesses (``python -m hermes_cli``) with a temporary ``HERMES_HOME``.

Against the real stack of ``test_learn_preferences`` (gateway, orchestrator, learner, router, edge as processes on a
real NATS server, the edge in front of a loopback model), with the gateway's auth on: the token comes from
``$HERMES_HOME/cli.toml``. The precedence of options, environment and file is checked against a small loopback HTTP
server of the test's own that records the ``Authorization`` header of each request.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from conftest import wait_until
from test_learn_preferences import Stack, make_stack

from hermes_cli.natsserver import free_port

TOKEN = "tok-ann-5f1c9e0b7d2a4c68"  # the gateway's only token (user ann)
REPLY = "A first draft of the plan."  # what the loopback model answers (test_learn_preferences' stack)


def cli_env(home: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if k not in ("HERMES_URL", "HERMES_TOKEN", "HERMES_WEB_PORT", "HERMES_HOME")
    }
    return dict(env, HERMES_HOME=str(home), PYTHONUNBUFFERED="1", **extra)


async def hermes(
    env: dict[str, str], *args: str, stdin: bytes | None = None, timeout_s: float = 30
) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "hermes_cli",
        *args,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin), timeout_s)
    return proc.returncode, out.decode(), err.decode()


@pytest.fixture
async def authed(bus_env, tmp_path) -> AsyncIterator[Stack]:
    async for stack in make_stack(bus_env, tmp_path, HERMES_API_TOKENS=f"ann:admin:{TOKEN}"):
        stack.http.headers["Authorization"] = f"Bearer {TOKEN}"
        yield stack


async def _completed_thread(stack: Stack, idea: str) -> str:
    thread_id = (
        await stack.call("POST", "/api/submit", 202, json={"idea": idea, "max_questions": 0, "channel": "cli"})
    )["thread_id"]

    async def done():
        response = await stack.http.get(f"{stack.url}/api/threads/{thread_id}/status")
        return response.status_code == 200 and response.json()["data"]["status"] == "completed"

    await wait_until(done, timeout_s=30, interval_s=0.2)
    return thread_id


async def _chat_turn(stack: Stack, text: str) -> str:
    response = await stack.http.post(
        f"{stack.url}/v1/chat/completions",
        json={"model": "fake", "user": "cli-garden", "messages": [{"role": "user", "content": text}]},
    )
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == REPLY
    return response.headers["x-hermes-thread-id"]


async def test_cli_lists_searches_exports_and_shows_sessions(authed: Stack, tmp_path) -> None:
    stack = authed
    thread_id = await _completed_thread(stack, "plan a balcony garden with tomatoes and basil")
    session_id = await _chat_turn(stack, "my tomatoes have yellow leaves")

    async def listed():
        sessions = (await stack.call("GET", "/api/sessions", params={"channel": "api"}))["sessions"]
        return any(s["session_id"] == session_id and s["turn_count"] == 1 for s in sessions)

    await wait_until(listed, timeout_s=15, interval_s=0.2)
    http_export = await stack.http.get(f"{stack.url}/api/export/sft")
    assert http_export.status_code == 200, http_export.text

    home, nowhere = tmp_path / "cli-home", tmp_path / "cli-nowhere"
    home.mkdir()
    nowhere.mkdir()
    (home / "cli.toml").write_text(f'token = "{TOKEN}"\n', encoding="utf-8")
    env = cli_env(home, HERMES_URL=stack.url)
    soul_file = tmp_path / "SOUL.md"
    soul_file.write_text("You are Hermes, keeper of Ann's balcony.\n", encoding="utf-8")
    sft_file, bad_file = tmp_path / "sft.jsonl", tmp_path / "bad.jsonl"
    runs = await asyncio.gather(
        hermes(env, "list"),
        hermes(env, "list", "--status", "failed"),
        hermes(env, "list", "--status", "done"),
        hermes(env, "search", "yellow tomatoes"),
        hermes(env, "export", "sft", "-o", str(sft_file)),
        hermes(env, "export", "sft", "--format", "sharegpt", "--channel", "api"),
        hermes(env, "export", "sft", "--since", "2026-13-45", "-o", str(bad_file)),
        hermes(env, "sessions", "--channel", "api"),
        hermes(env, "session", session_id),
        hermes(env, "soul"),
        hermes(cli_env(home, HERMES_URL=stack.url, HERMES_TOKEN=""), "list"),  # empty: the file's token
        hermes(cli_env(nowhere, HERMES_URL=stack.url), "list"),
    )  # no cli.toml there: no token
    (listing, failed, unknown, search, export, share, bad, sessions, session, soul, blank, anonymous) = runs

    code, out, err = listing
    assert code == 0, err
    [row] = [line for line in out.splitlines() if line.startswith(thread_id)]
    assert row.split()[1] == "completed" and "plan a balcony garden with tomatoes" in row
    assert out.splitlines()[0].split() == ["ID", "STATUS", "CREATED", "(UTC)", "IDEA"]
    assert failed[0] == 0 and failed[1].strip() == "No threads."
    code, out, err = unknown  # the gateway knows the statuses and names them
    assert code == 1 and out == "" and "[validation_failed, HTTP 422]" in err
    assert "status: Input should be" in err and "'awaiting_answers'" in err

    code, out, err = search
    assert code == 0, err
    assert f"session {session_id} · api · " in out and "[tomatoes]" in out

    code, out, err = export
    assert code == 0, err
    body = sft_file.read_bytes()
    assert body == http_export.content  # byte for byte what the gateway streams
    records = [json.loads(line) for line in body.decode().splitlines()]
    assert len(records) >= 2 and f"Wrote {len(records)} sft records to {sft_file}." in err
    assert out == ""
    assert {"role": "user", "content": "my tomatoes have yellow leaves"} in records[-1]["messages"]
    assert all(r["messages"][-1] == {"role": "assistant", "content": REPLY} for r in records)
    assert not sft_file.with_name("sft.jsonl.part").exists()

    code, out, err = share
    assert code == 0, err
    [shared] = [json.loads(line) for line in out.splitlines()]  # only the api channel's one turn
    assert [c["from"] for c in shared["conversations"]][-2:] == ["human", "gpt"]
    assert "Wrote 1 sft record to standard output." in err

    code, out, err = bad
    assert code == 1 and "[invalid_date, HTTP 400]" in err and "2026-13-45" in err, (out, err)
    assert not bad_file.exists() and out == ""

    code, out, err = sessions
    assert code == 0, err
    [listed_session] = (await stack.call("GET", "/api/sessions", params={"channel": "api"}))["sessions"]
    assert out.splitlines()[1].split()[:6] == [session_id, "chat", "api", "ann", listed_session["status"], "1"]
    assert len(out.splitlines()) == 2  # the header and the one api session (the idea came from the cli)

    code, out, err = session
    assert code == 0, err
    turn = (await stack.call("GET", f"/api/sessions/{session_id}"))["turns"][0]
    assert f"Session {session_id}: chat on api" in out
    assert (
        f"talos · fake, {turn['prompt_tokens']} + {turn['completion_tokens']} tokens, "
        f"{turn['cost_cents']:.4f}¢, {turn['latency_ms']:.0f} ms"
    ) in out
    assert "> my tomatoes have yellow leaves" in out and out.rstrip().endswith(REPLY)

    code, out, err = soul
    assert code == 0, err
    assert out.rstrip("\n") == (await stack.call("GET", "/api/soul"))["text"].rstrip("\n")

    assert blank[0] == 0 and thread_id in blank[1], blank[2]

    code, out, err = anonymous
    assert code == 1 and "unauthorized" in err and "HTTP 401" in err, err
    assert "HERMES_TOKEN" in err and "cli.toml" in err

    code, out, err = await hermes(env, "soul", "--set", str(soul_file))
    assert code == 0, err
    assert "SOUL.md updated" in out
    # The orchestrator keeps SOUL.md without its trailing newline.
    assert (await stack.call("GET", "/api/soul"))["text"] == soul_file.read_text(encoding="utf-8").rstrip()
    code, out, err = await hermes(env, "soul", "--set", "-", stdin=b"You are Hermes, from stdin.")
    assert code == 0, err
    assert (await stack.call("GET", "/api/soul"))["text"] == "You are Hermes, from stdin."

    for _code, out, err in runs:
        assert TOKEN not in out and TOKEN not in err and "Traceback" not in err


class Recorder(BaseHTTPRequestHandler):
    """Answers every GET with an empty success (thread list or search hits; 401 for the token
    ``wrong-token-999``) and records ``(the search query or the path, its Authorization header)``."""

    seen: list[tuple[str, str | None]] = []

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        auth = self.headers.get("Authorization")
        url = urlsplit(self.path)
        self.seen.append((parse_qs(url.query).get("q", [url.path])[0], auth))
        data = {"hits": []} if url.path == "/api/memory/search" else {"threads": [], "count": 0}
        status, body = (
            (
                401,
                {
                    "status": "error",
                    "error": {"code": "unauthorized", "message": "Authentication required."},
                    "meta": {},
                },
            )
            if auth == "Bearer wrong-token-999"
            else (200, {"status": "success", "data": data, "meta": {}})
        )
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def recorder() -> Iterator[str]:
    Recorder.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


async def test_token_and_url_precedence_and_the_401_hint(recorder: str, tmp_path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    home = tmp_path / "home"
    home.mkdir()
    (home / "cli.toml").write_text(f'url = "{recorder}"\ntoken = "file-token-31337"\n', encoding="utf-8")
    empty = tmp_path / "empty"
    empty.mkdir()
    bad_home = tmp_path / "bad"
    bad_home.mkdir()
    (bad_home / "cli.toml").write_text('token = "unterminated\n', encoding="utf-8")
    cases = {  # name: (env, extra args, the Authorization header expected)
        "file": (cli_env(home), (), "Bearer file-token-31337"),  # url and token from the file
        "env": (cli_env(home, HERMES_TOKEN="env-token-4242"), (), "Bearer env-token-4242"),
        "option": (cli_env(home, HERMES_TOKEN="env-token-4242"), ("--token", "opt-token-777"), "Bearer opt-token-777"),
        "none": (cli_env(empty, HERMES_URL=recorder), (), None),  # no token anywhere: no header at all
        "url-option": (cli_env(home, HERMES_URL=dead), ("--url", recorder), "Bearer file-token-31337"),
    }
    runs = await asyncio.gather(
        *(hermes(env, "search", name, *args) for name, (env, args, _) in cases.items()),
        hermes(cli_env(home, HERMES_URL=dead), "list"),  # HERMES_URL wins over the file
        hermes(cli_env(home, HERMES_TOKEN="wrong-token-999"), "search", "wrong"),
        hermes(cli_env(bad_home), "list"),
    )
    assert sorted(Recorder.seen, key=str) == sorted(
        [(name, auth) for name, (_, _, auth) in cases.items()] + [("wrong", "Bearer wrong-token-999")], key=str
    )
    for name, (code, out, err) in zip(cases, runs, strict=False):
        assert code == 0, (name, err)
        assert out.strip() == f"Nothing in memory matches {name!r}."
    for _code, out, err in runs:
        assert not any(secret in out + err for secret in ("file-token", "env-token", "opt-token", "wrong-token"))
        assert "Traceback" not in err
    unreachable, unauthorized, broken = runs[len(cases) :]

    code, _, err = unreachable
    assert code == 3 and f"cannot reach the Hermes gateway at {dead}" in err

    code, out, err = unauthorized
    assert code == 1 and "unauthorized" in err and "HTTP 401" in err
    assert "HERMES_TOKEN" in err and "cli.toml" in err

    code, out, err = broken
    assert code == 2 and "cli.toml is not valid TOML" in err and "unterminated" not in err
