"""Only the run's user answers its approvals (the whole system with auth on, a scripted model, the real sandbox):
another user neither sees nor answers them (404, like an unknown id), a guest cannot answer (403), a bad token is
401, and approving one call's approval does not approve a call with other arguments."""

from __future__ import annotations

import httpx
import pytest
from fakes.agent_model import MODEL, AgentModel, wait_for
from stack import HermesUp

ANN, BOB, GUEST = "tok-ann-0123456789abcdef", "tok-bob-0123456789abcdef", "tok-guest-0123456789abcdef"


@pytest.fixture(scope="module")
def model():
    scripts = {
        "T-TWO": [
            [("shell", {"command": "echo one > one.txt"}), ("shell", {"command": "echo two > two.txt"})],
            "done: {result}",
        ]
    }
    server = AgentModel(scripts).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def up(tmp_path_factory, model):
    stack = HermesUp(
        tmp_path_factory.mktemp("auth"),
        HERMES_LOCAL_MODEL="false",
        BACKEND_TALOS_TYPE="openai",
        BACKEND_TALOS_HOST="127.0.0.1",
        BACKEND_TALOS_PORT=str(model.port),
        BACKEND_TALOS_MODELS=MODEL,
        HERMES_API_TOKENS=f"ann:user:{ANN},bob:user:{BOB},gus:guest:{GUEST}",
    ).start()
    with httpx.Client(timeout=15, headers={"Authorization": f"Bearer {ANN}"}) as client:
        stack.wait_healthy(client)
    yield stack
    stack.stop()


def client(token: str) -> httpx.Client:
    return httpx.Client(timeout=15, headers={"Authorization": f"Bearer {token}"})


def test_only_the_runs_user_sees_and_answers_and_one_approval_covers_one_call(up):
    workspace = up.home / "workspace" / "default"
    with client(ANN) as ann, client(BOB) as bob, client(GUEST) as guest, client("wrong") as stranger:
        r = ann.post(f"{up.base_url}/api/agent/runs", json={"task": "T-TWO write two files", "profile": "code"})
        assert r.status_code == 202, r.text
        run_id = r.json()["data"]["run_id"]

        def two_pending():
            found = ann.get(f"{up.base_url}/api/approvals", params={"status": "pending", "run_id": run_id})
            approvals = found.json()["data"]["approvals"] if found.status_code == 200 else []
            return approvals if len(approvals) == 2 else None

        approvals = wait_for(two_pending, 60)
        one = next(a for a in approvals if "one.txt" in a["arguments"]["command"])
        two = next(a for a in approvals if "two.txt" in a["arguments"]["command"])

        assert bob.get(f"{up.base_url}/api/approvals", params={"status": "pending"}).json()["data"]["approvals"] == []
        assert bob.get(f"{up.base_url}/api/agent/runs/{run_id}").status_code == 404
        r = bob.post(f"{up.base_url}/api/approvals/{one['approval_id']}/approve", json={})
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
        assert guest.post(f"{up.base_url}/api/approvals/{one['approval_id']}/approve", json={}).status_code == 403
        assert stranger.get(f"{up.base_url}/api/approvals").status_code == 401

        assert ann.post(f"{up.base_url}/api/approvals/{one['approval_id']}/approve", json={}).status_code == 202
        wait_for(lambda: (workspace / "one.txt").exists(), 30)
        view = ann.get(f"{up.base_url}/api/agent/runs/{run_id}").json()["data"]
        assert view["status"] == "awaiting_approval"  # the other call still waits: one approval, one call
        assert not (workspace / "two.txt").exists()
        assert (
            ann.post(
                f"{up.base_url}/api/approvals/{two['approval_id']}/reject", json={"comment": "one is enough"}
            ).status_code
            == 202
        )

        def ended():
            v = ann.get(f"{up.base_url}/api/agent/runs/{run_id}").json()["data"]
            return v if v["status"] in ("completed", "failed", "cancelled") else None

        view = wait_for(ended, 60)
    assert view["status"] == "completed"
    decided = {a["approval_id"]: (a["status"], a["decided_by"]) for a in view["approvals"]}
    assert decided == {one["approval_id"]: ("granted", "ann"), two["approval_id"]: ("denied", "ann")}
    assert not (workspace / "two.txt").exists()
