"""Project memory through the whole system (``hermes up``, real NATS, the model a scripted OpenAI-compatible server
on loopback that records every prompt): chat turns state a decision and preferences; the historian (run now through
the API) promotes them into entries; running it again adds nothing; a later contradiction supersedes the older
entry, kept as history; a new prompt of the project carries the live entries; an edit and a delete reach the next
prompt; a restarted orchestrator keeps it all (snapshot)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import httpx
import pytest
from fakes.agent_model import MODEL, AgentModel, wait_for
from stack import HermesUp


@pytest.fixture(scope="module")
def model():
    server = AgentModel({}).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def up(tmp_path_factory, model):
    stack = HermesUp(
        tmp_path_factory.mktemp("memory"),
        HERMES_LOCAL_MODEL="false",
        BACKEND_TALOS_TYPE="openai",
        BACKEND_TALOS_HOST="127.0.0.1",
        BACKEND_TALOS_PORT=str(model.port),
        BACKEND_TALOS_MODELS=MODEL,
        HERMES_MEMORY_TOKEN_BUDGET="400",
    ).start()
    with httpx.Client(timeout=15) as client:
        stack.wait_healthy(client)
    yield stack
    stack.stop()


@pytest.fixture
def client(up):
    with httpx.Client(base_url=up.base_url, timeout=30) as c:
        yield c


def chat(client: httpx.Client, session: str, text: str) -> None:
    body = {"model": MODEL, "user": session, "messages": [{"role": "user", "content": text}]}
    r = client.post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text


def entries(client: httpx.Client, history: bool = False) -> list[dict]:
    return client.get("/api/memory/entries", params={"history": str(history).lower()}).json()["data"]["entries"]


def consolidate(client: httpx.Client) -> None:
    assert client.post("/api/memory/consolidate", json={}).status_code == 202


def system_prompt(model: AgentModel, marker: str) -> str:
    for body in reversed(model.bodies):
        if any(marker in (m.get("content") or "") for m in body["messages"] if m["role"] == "user"):
            return body["messages"][0]["content"]
    raise AssertionError(f"no request with {marker!r}")


def test_the_historian_promotes_merges_supersedes_and_prompts_carry_it(client, up, model):
    chat(client, "s-one", "We decided to use PostgreSQL for the shop database.")
    chat(client, "s-one", "Always use tabs in the code.")
    chat(client, "s-two", "I prefer short answers with bullet points.")
    consolidate(client)
    found = wait_for(lambda: len(e := entries(client)) >= 3 and e, 30)
    kinds = {e["kind"]: e for e in found}
    assert {"decision", "preference"} <= set(kinds)
    assert "PostgreSQL" in kinds["decision"]["text"] and kinds["decision"]["source_session"]
    consolidate(client)  # the same threads again: nothing new
    wait_for(lambda: len(entries(client, history=True)) == len(found), 10)

    chat(client, "s-three", "Never use tabs in the code.")  # a contradiction of "Always use tabs"
    consolidate(client)
    history = wait_for(lambda: [e for e in entries(client, history=True) if e["status"] == "superseded"], 30)
    assert "Always use tabs" in history[0]["text"]
    live = entries(client)
    assert any("Never use tabs" in e["text"] for e in live) and not any("Always use tabs" in e["text"] for e in live)

    chat(client, "s-four", "What should the next step be? MARK-1")
    prompt = system_prompt(model, "MARK-1")
    assert "[decision] We decided to use PostgreSQL" in prompt and "Never use tabs" in prompt
    assert "Always use tabs" not in prompt

    decision = next(e for e in entries(client) if e["kind"] == "decision")
    edit = {"text": "We decided to use SQLite for the shop database.", "kind": "decision"}
    assert client.put(f"/api/memory/entries/{decision['entry_id']}", json=edit).status_code == 202
    prefs = [e for e in entries(client) if "bullet" in e["text"]]
    assert client.delete(f"/api/memory/entries/{prefs[0]['entry_id']}").status_code == 202
    wait_for(lambda: not any("bullet" in e["text"] for e in entries(client)), 10)
    chat(client, "s-five", "And then? MARK-2")
    prompt = system_prompt(model, "MARK-2")
    assert "SQLite" in prompt and "PostgreSQL" not in prompt and "bullet" not in prompt

    # the command line shows the same entries
    env = {k: v for k, v in os.environ.items() if k not in ("HERMES_TOKEN", "HERMES_HOME")}
    env.update(HERMES_URL=up.base_url, HERMES_HOME=str(up.home / "cli-home"))
    shown = subprocess.run(
        [sys.executable, "-m", "hermes_cli", "memory", "--history"], env=env, capture_output=True, text=True, timeout=60
    )
    assert shown.returncode == 0 and "SQLite" in shown.stdout and "superseded" in shown.stdout, shown.stderr

    # unknown entries are 404, a kind that does not exist 422
    assert client.delete("/api/memory/entries/nope").status_code == 404
    bad = client.put("/api/memory/entries/nope", json={"text": "x", "kind": "wish"})
    assert bad.status_code == 422

    # kill -9 of the orchestrator: the entries come back from the snapshot and still reach prompts
    old = up.pids()["hermes_orchestrator"]
    os.kill(old, signal.SIGKILL)
    wait_for(lambda: up.pids().get("hermes_orchestrator") not in (None, old), 60)
    wait_for(lambda: client.get("/api/system/health").status_code == 200, 60)
    chat(client, "s-six", "Anything else? MARK-3")
    assert "SQLite" in system_prompt(model, "MARK-3")
