"""Forgetting through its two surfaces, on the whole system (``hermes up`` with auth on: users ann and bob, an admin;
the model a scripted OpenAI-compatible server on loopback).

ann and bob each submit an idea and chat. ``DELETE /api/me`` as ann needs ``{"confirm": "ann"}`` (400 without a body
or naming someone else), then answers 200 with the keys it destroyed; ann's export no longer holds her idea, bob's
still holds his. Only an admin may ``DELETE /api/users/bob`` (ann gets 403 ``admin_only``); the operator's ``hermes
forget --user bob --yes --json`` (over NATS as admin) exits 0 with the keys it destroyed."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import httpx
import pytest
from fakes.agent_model import MODEL, AgentModel, wait_for
from stack import HermesUp

ANN, BOB, ROOT = "tok-ann-0123456789abcdef", "tok-bob-0123456789abcdef", "tok-root-0123456789abcdef"
SETTLED = ("awaiting_answers", "completed")


@pytest.fixture(scope="module")
def model():
    server = AgentModel({})
    yield server.start()
    server.stop()


@pytest.fixture(scope="module")
def up(tmp_path_factory, model):
    stack = HermesUp(
        tmp_path_factory.mktemp("forget-surfaces"),
        HERMES_LOCAL_MODEL="false",
        BACKEND_TALOS_TYPE="openai",
        BACKEND_TALOS_HOST="127.0.0.1",
        BACKEND_TALOS_PORT=str(model.port),
        BACKEND_TALOS_MODELS=MODEL,
        HERMES_ANSWER_TIMEOUT_SECONDS="600",
        HERMES_API_TOKENS=f"ann:user:{ANN},bob:user:{BOB},root:admin:{ROOT}",
    ).start()
    with httpx.Client(timeout=15, headers={"Authorization": f"Bearer {ROOT}"}) as client:
        stack.wait_healthy(client)
    yield stack
    stack.stop()


def client(up: HermesUp, token: str) -> httpx.Client:
    return httpx.Client(base_url=up.base_url, timeout=60, headers={"Authorization": f"Bearer {token}"})


def make_data(c: httpx.Client, marker: str) -> str:
    """An idea (waited for until it asks or completes) and a chat turn, each carrying ``marker``; the thread id."""
    r = c.post("/api/submit", json={"idea": f"{marker}-IDEA help me plan a vegetable garden on my balcony"})
    assert r.status_code == 202, r.text
    thread_id = r.json()["data"]["thread_id"]

    def settled() -> bool:
        status = c.get(f"/api/threads/{thread_id}/status")
        return status.status_code == 200 and status.json()["data"]["status"] in SETTLED

    wait_for(settled, 60)
    body = {"model": MODEL, "messages": [{"role": "user", "content": f"{marker}-CHAT what should I plant?"}]}
    r = c.post("/v1/chat/completions", json=body, headers={"X-Hermes-Session-Id": f"{marker.lower()}-chat"})
    assert r.status_code == 200, r.text
    return thread_id


def export_text(c: httpx.Client, path: str) -> str:
    r = c.get(path)
    assert r.status_code == 200, r.text
    return r.text


def forget(c: httpx.Client, path: str, body: object | None) -> httpx.Response:
    return c.request("DELETE", path, json=body) if body is not None else c.request("DELETE", path)


@pytest.fixture(scope="module")
def data(up):
    with client(up, ANN) as ann, client(up, BOB) as bob:
        make_data(ann, "ANN")
        make_data(bob, "BOB")
        # Both are in the exports before anything is forgotten (the chat turn lands in its session shortly after).
        wait_for(lambda: "ANN-CHAT" in export_text(ann, "/api/me/export"), 30)
        wait_for(lambda: "BOB-CHAT" in export_text(bob, "/api/me/export"), 30)
        assert "ANN-IDEA" in export_text(ann, "/api/me/export")
        assert "BOB-IDEA" in export_text(bob, "/api/me/export")
    return up


def test_forgetting_yourself_needs_your_user_id_as_confirmation(data):
    with client(data, ANN) as ann:
        for body, code in (
            (None, "confirmation_required"),
            ({}, "confirmation_required"),
            ({"confirm": 42}, "confirmation_required"),
            ({"confirm": "bob"}, "confirmation_mismatch"),
            ({"confirm": "ANN"}, "confirmation_mismatch"),
        ):
            r = forget(ann, "/api/me", body)
            assert r.status_code == 400, r.text
            error = r.json()["error"]
            assert r.json()["status"] == "error" and error["code"] == code, r.text
        r = ann.request("DELETE", "/api/me", content=b"{", headers={"Content-Type": "application/json"})
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json", r.text
        assert "ANN-IDEA" in export_text(ann, "/api/me/export")  # nothing was forgotten


def test_only_an_admin_forgets_someone_else(data):
    with client(data, ANN) as ann:
        r = forget(ann, "/api/users/bob", {"confirm": "bob"})
        assert r.status_code == 403 and r.json()["error"]["code"] == "admin_only", r.text
    with client(data, ROOT) as root:
        r = forget(root, "/api/users/not%20an%20id", {"confirm": "not an id"})
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_id", r.text
        r = forget(root, "/api/users/bob", {"confirm": "ann"})
        assert r.status_code == 400 and r.json()["error"]["code"] == "confirmation_mismatch", r.text
    with client(data, BOB) as bob:
        assert "BOB-IDEA" in export_text(bob, "/api/me/export")


def test_forgetting_yourself_destroys_your_keys_and_nobody_elses(data):
    with client(data, ANN) as ann, client(data, BOB) as bob:
        r = forget(ann, "/api/me", {"confirm": "ann"})
        assert r.status_code == 200, r.text
        done = r.json()["data"]
        assert done["user_id"] == "ann" and done["keys_destroyed"] >= 1 and done["sequence"] > 0, done

        # The export reads read models that applied the log up to its request: ann's idea is gone from it.
        mine = export_text(ann, "/api/me/export")
        assert "ANN-IDEA" not in mine, json.dumps(json.loads(mine)["threads"])[:2000]
        theirs = export_text(bob, "/api/me/export")
        assert "BOB-IDEA" in theirs and "BOB-CHAT" in theirs


def test_the_operator_forgets_a_user_from_the_command_line(data):
    env = {k: v for k, v in os.environ.items() if k not in ("NATS_URL", "HERMES_HOME", "HERMES_URL", "HERMES_TOKEN")}
    env.update(HERMES_HOME=str(data.home), HERMES_NATS_PORT=data.env["HERMES_NATS_PORT"])
    out = subprocess.run(
        [sys.executable, "-m", "hermes_cli", "forget", "--user", "bob", "--yes", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, (out.returncode, out.stdout, out.stderr)
    done = json.loads(out.stdout)
    assert done["user_id"] == "bob" and done["keys_destroyed"] >= 1 and done["sequence"] > 0, done
    assert done["keys_destroyed"] == len(done["key_ids"]) and done["status"] == "forgotten"

    refused = subprocess.run(
        [sys.executable, "-m", "hermes_cli", "forget", "--user", "bob"],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 2 and "--yes" in refused.stderr, refused.stderr
    with client(data, BOB) as bob:
        assert "BOB-IDEA" not in export_text(bob, "/api/me/export")
