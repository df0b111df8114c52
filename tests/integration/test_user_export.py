"""The data-rights export through the whole system (``hermes up`` with auth on: users ann and bob, a guest, an admin;
the model a scripted OpenAI-compatible server on loopback).

ann makes real data: an agent run whose shell call she approves, an idea answered and rated, a chat session long enough
that its own reply must leave turns out, a chat decision the historian turns into project memory, a preference, a
schedule run once, a skill proposal; bob makes some of his own. ann's ``GET /api/me/export`` holds each of hers in its
section (the long session's older turns too) and nothing of bob's; the admin's ``GET /api/users/bob/export`` holds
bob's and nothing of ann's; the admin route is 403 ``admin_only`` for ann, a guest may not export at all, an unknown
user's export is empty, a malformed id 400. ``hermes export --user`` writes the same JSON (and ``export sft`` still
works); each export is counted on ``/metrics`` and logged with the user id, never the content."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from fakes.agent_model import MODEL, AgentModel, wait_for
from prometheus_client.parser import text_string_to_metric_families
from stack import HermesUp

ANN, BOB = "tok-ann-0123456789abcdef", "tok-bob-0123456789abcdef"
GUS, ROOT = "tok-gus-0123456789abcdef", "tok-root-0123456789abcdef"
SECTIONS = {
    "threads",
    "sessions",
    "preferences",
    "patterns",
    "memory_entries",
    "agent_runs",
    "approvals",
    "schedules",
    "skill_proposals",
}
LONG_TURNS = 7
LONG_CHARS = 90_000  # 7 such turns pass half the NATS max payload (1 MB): the session's reply must leave some out


@pytest.fixture(scope="module")
def model():
    server = AgentModel({"ANN-TASK": [[("shell", {"command": "echo ANN-TOOL-OUTPUT"})], "ANN-RUN-DONE {result}"]})
    yield server.start()
    server.stop()


@pytest.fixture(scope="module")
def up(tmp_path_factory, model):
    stack = HermesUp(
        tmp_path_factory.mktemp("user-export"),
        HERMES_LOCAL_MODEL="false",
        BACKEND_TALOS_TYPE="openai",
        BACKEND_TALOS_HOST="127.0.0.1",
        BACKEND_TALOS_PORT=str(model.port),
        BACKEND_TALOS_MODELS=MODEL,
        HERMES_ANSWER_TIMEOUT_SECONDS="600",
        HERMES_API_TOKENS=f"ann:user:{ANN},bob:user:{BOB},gus:guest:{GUS},root:admin:{ROOT}",
    ).start()
    with httpx.Client(timeout=15, headers={"Authorization": f"Bearer {ROOT}"}) as client:
        stack.wait_healthy(client)
    yield stack
    stack.stop()


def client(up: HermesUp, token: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=up.base_url, timeout=60, headers=headers)


def accepted(response: httpx.Response) -> dict:
    assert response.status_code in (200, 202), response.text
    return response.json()["data"] if "data" in response.json() else response.json()


def thread(c: httpx.Client, thread_id: str) -> dict:
    r = c.get(f"/api/threads/{thread_id}/status")
    return r.json()["data"] if r.status_code == 200 else {}


def chat(c: httpx.Client, session: str, text: str) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": text}]}
    r = c.post("/v1/chat/completions", json=body, headers={"X-Hermes-Session-Id": session})
    assert r.status_code == 200, r.text


def schedule(c: httpx.Client, name: str, text: str) -> str:
    at = (datetime.now(UTC) + timedelta(days=30)).isoformat()
    body = {"name": name, "when": {"kind": "at", "at": at}, "action": {"kind": "idea", "text": text}}
    return accepted(c.post("/api/schedules", json=body))["schedule_id"]


def make_anns_data(c: httpx.Client) -> dict:
    """Everything ann does; returns the ids to look for."""
    run_id = accepted(c.post("/api/agent/runs", json={"task": "ANN-TASK say hello", "profile": "code"}))["run_id"]
    pending = wait_for(lambda: c.get("/api/approvals", params={"status": "pending"}).json()["data"]["approvals"], 60)
    assert c.post(f"/api/approvals/{pending[0]['approval_id']}/approve", json={}).status_code == 202
    wait_for(lambda: c.get(f"/api/agent/runs/{run_id}").json()["data"]["status"] == "completed", 60)

    thread_id = accepted(
        c.post("/api/submit", json={"idea": "help me plan a vegetable garden on my balcony ANN-IDEA"})
    )["thread_id"]
    asked = wait_for(
        lambda: (t := thread(c, thread_id)).get("status") == "awaiting_answers" and t["questions"] and t, 60
    )
    question = asked["questions"][0]
    continued = c.post(f"/api/threads/{thread_id}/continue", json={"answers": {question["question_id"]: "ANN-ANSWER"}})
    accepted(continued)
    wait_for(lambda: thread(c, thread_id).get("status") == "completed", 60)
    accepted(c.post(f"/api/threads/{thread_id}/rate", json={"rating": 5, "comment": "ANN-COMMENT"}))
    wait_for(lambda: thread(c, thread_id).get("rating") == 5, 30)

    for n in range(1, LONG_TURNS + 1):
        chat(c, "ann-long", f"ANN-LONG-{n} " + "tomato " * (LONG_CHARS // 7))
    chat(c, "ann-decisions", "We decided to use ANN-DB PostgreSQL for the shop database.")
    accepted(c.post("/api/memory/consolidate", json={}))
    wait_for(lambda: c.get("/api/memory/entries").json()["data"]["entries"], 30)
    pref = {"category": "constraint", "key": "budget", "value": "ANN-PREF under 50 euros"}
    accepted(c.post("/api/learn/preferences", json=pref))
    schedule_id = schedule(c, "ANN-SCHEDULE", "ANN-SCHEDULED plan my week")
    wait_for(lambda: c.get(f"/api/schedules/{schedule_id}").status_code == 200, 20)
    accepted(c.post(f"/api/schedules/{schedule_id}/run"))
    wait_for(lambda: c.get(f"/api/schedules/{schedule_id}").json()["data"]["runs"], 30)
    files = {"anngreet/SKILL.md": "---\nname: anngreet\ndescription: Greets.\n---\n"}
    proposal = {"skill": "anngreet", "rationale": "ANN-SKILL-RATIONALE", "files": files}
    proposal_id = accepted(c.post("/api/skills/proposals", json=proposal))["proposal_id"]
    wait_for(lambda: c.get(f"/api/skills/proposals/{proposal_id}").status_code == 200, 20)
    return {"run_id": run_id, "thread_id": thread_id, "schedule_id": schedule_id, "proposal_id": proposal_id}


def make_bobs_data(c: httpx.Client) -> None:
    """Everything bob does, each waited for until it is settled and visible through its own route (his thread
    completed, his chat turn, his preference, his schedule): any export taken afterwards holds all of it, and two such
    exports agree on it (:func:`stable`)."""
    thread_id = accepted(c.post("/api/submit", json={"idea": "BOB-IDEA plan a secret garden"}))["thread_id"]
    asked = wait_for(
        lambda: (
            (t := thread(c, thread_id)).get("status") in ("awaiting_answers", "completed")
            and (t["status"] == "completed" or t["questions"])
            and t
        ),
        60,
    )
    if asked["status"] == "awaiting_answers":
        answers = {q["question_id"]: "BOB-ANSWER" for q in asked["questions"] if q.get("answer") is None}
        accepted(c.post(f"/api/threads/{thread_id}/continue", json={"answers": answers}))
    wait_for(lambda: thread(c, thread_id).get("status") == "completed", 60)

    chat(c, "bob-chat", "BOB-CHAT what should I plant?")
    wait_for(
        lambda: any(
            s["session_key"] == "bob-chat" and s["turn_count"] == 1
            for s in c.get("/api/sessions").json()["data"]["sessions"]
        ),
        30,
    )
    accepted(c.post("/api/learn/preferences", json={"category": "constraint", "key": "location", "value": "BOB-PREF"}))
    wait_for(
        lambda: "BOB-PREF" in [p["value"] for p in c.get("/api/learn/preferences").json()["data"]["preferences"]], 30
    )
    schedule_id = schedule(c, "BOB-SCHEDULE", "BOB-SCHEDULED water the plants")
    wait_for(lambda: c.get(f"/api/schedules/{schedule_id}").status_code == 200, 20)


def export(c: httpx.Client, path: str, user: str) -> dict:
    r = c.get(path)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    assert r.headers["content-disposition"] == f'attachment; filename="hermes-export-{user}.json"'
    document = r.json()
    assert set(document) == {"user_id", "exported_at", "format", "truncated", *SECTIONS}
    assert document["user_id"] == user and document["format"] == "hermes-export/1"
    assert datetime.fromisoformat(document["exported_at"]).utcoffset() == timedelta(0)
    for section in SECTIONS:  # every item is the user's
        assert all(item["user_id"] == user for item in document[section]), section
    return document


def without_time(document: dict) -> dict:
    return {k: v for k, v in document.items() if k != "exported_at"}


STABLE = {
    "threads": ("thread_id", "status", "idea", "draft1", "draft2", "rating", "rating_comment", "created_at"),
    "sessions": ("session_id", "session_key", "kind", "title", "turn_count", "created_at"),
    "schedules": ("schedule_id", "definition", "status", "created_at"),
    "agent_runs": ("run_id", "status", "created_at"),
    "approvals": ("approval_id", "status"),
    "skill_proposals": ("proposal_id", "skill", "rationale"),
}
"""What of a settled user's items two exports must agree on. Left out: what still moves once everything the user did
is settled (a session's ``updated_at``, a schedule's ``next_due_at``, a proposal's validation), what the learner
infers on its own time (observed and inferred preferences, patterns) and what the historian distills (memory)."""


def stable(document: dict) -> dict:
    """``document`` reduced to what two exports of a settled user must agree on (:data:`STABLE`; of the preferences,
    those the user stated: source explicit)."""
    kept = {section: [{k: item.get(k) for k in keys} for item in document[section]] for section, keys in STABLE.items()}
    stated = [p for p in document["preferences"] if p["source"] == "explicit"]
    kept["preferences"] = sorted((p["preference_id"], p["key"], p["value"]) for p in stated)
    return {"user_id": document["user_id"], "format": document["format"], **kept}


def test_each_user_gets_all_of_their_data_and_none_of_anyone_elses(up):
    with client(up, ANN) as ann, client(up, BOB) as bob, client(up, ROOT) as root, client(up, GUS) as gus:
        ids = make_anns_data(ann)
        make_bobs_data(bob)

        mine = export(ann, "/api/me/export", "ann")
        text = json.dumps(mine)
        assert "BOB-" not in text and mine["truncated"] == []

        idea = next(t for t in mine["threads"] if t["thread_id"] == ids["thread_id"])
        assert "ANN-IDEA" in idea["idea"] and idea["status"] == "completed" and idea["draft1"] and idea["draft2"]
        assert idea["rating"] == 5 and idea["rating_comment"] == "ANN-COMMENT" and idea["created_at"]
        assert "ANN-ANSWER" in [q["answer"] for q in idea["questions"]]

        long = next(s for s in mine["sessions"] if s["session_key"] == "ann-long")
        assert long["turn_count"] == LONG_TURNS and long["turns_omitted"] >= 1, {k: long[k] for k in ("turns_omitted",)}
        assert len(long["earlier_turns"]) == long["turns_omitted"]
        every_turn = [t["messages"] for t in long["earlier_turns"]] + [t["messages"] for t in long["turns"]]
        for n in range(1, LONG_TURNS + 1):
            assert sum(f"ANN-LONG-{n} " in json.dumps(messages) for messages in every_turn) == 1, n
        assert all(t["messages"][-1]["role"] == "assistant" for t in long["earlier_turns"])
        decided = next(s for s in mine["sessions"] if s["session_key"] == "ann-decisions")
        assert "ANN-DB" in json.dumps(decided["turns"][0]["messages"]) and decided["turns"][0]["reply"]

        assert "ANN-PREF under 50 euros" in [p["value"] for p in mine["preferences"]]
        assert any("ANN-DB" in e["text"] for e in mine["memory_entries"])
        run = next(r for r in mine["agent_runs"] if r["run_id"] == ids["run_id"])
        assert run["status"] == "completed" and "ANN-TOOL-OUTPUT" in json.dumps(run["steps"])
        assert [a["status"] for a in run["approvals"]] == ["granted"]
        assert run["approvals"][0]["approval_id"] in {a["approval_id"] for a in mine["approvals"]}
        planned = next(s for s in mine["schedules"] if s["schedule_id"] == ids["schedule_id"])
        assert planned["definition"]["name"] == "ANN-SCHEDULE" and planned["runs"]
        proposed = next(p for p in mine["skill_proposals"] if p["proposal_id"] == ids["proposal_id"])
        assert proposed["rationale"] == "ANN-SKILL-RATIONALE" and "anngreet/SKILL.md" in proposed["files"]
        assert isinstance(mine["patterns"], list)

        # The admin exports bob: his, and nothing of ann's.
        bobs = export(root, "/api/users/bob/export", "bob")
        text = json.dumps(bobs)
        assert "ANN-" not in text and bobs["truncated"] == []
        for marker in ("BOB-IDEA", "BOB-CHAT", "BOB-PREF", "BOB-SCHEDULE"):
            assert marker in text, marker
        bob_thread = next(t for t in bobs["threads"] if "BOB-IDEA" in t["idea"])
        assert bob_thread["status"] == "completed", bob_thread["status"]
        assert "BOB-PREF" in [p["value"] for p in bobs["preferences"]]
        assert stable(export(bob, "/api/me/export", "bob")) == stable(bobs)

        # Refusals, each with its code; an unknown user is an empty export.
        refused = ann.get("/api/users/bob/export")
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "admin_only"
        assert "BOB-" not in refused.text
        for path, code in (("/api/me/export", "read_only"), ("/api/users/ann/export", "admin_only")):
            r = gus.get(path)
            assert r.status_code == 403 and r.json()["error"]["code"] == code, r.text
        with client(up, None) as anonymous:
            r = anonymous.get("/api/me/export")
            assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
        nobody = export(root, "/api/users/nobody-at-all/export", "nobody-at-all")
        assert all(nobody[section] == [] for section in SECTIONS) and nobody["truncated"] == []
        r = root.get("/api/users/not%20an%20id/export")
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_id"

        # The CLI writes the document of the admin route, byte for byte but the time it was made.
        env = {k: v for k, v in os.environ.items() if k not in ("HERMES_TOKEN", "HERMES_HOME", "HERMES_URL")}
        env.update(HERMES_URL=up.base_url, HERMES_HOME=str(up.home / "cli-home"), HERMES_TOKEN=ROOT)
        target = up.home / "ann-export.json"

        def same() -> bool:
            out = hermes(env, "export", "--user", "ann", "--out", str(target))
            assert out.returncode == 0 and "Wrote the export of ann" in out.stderr, out.stderr
            http = export(root, "/api/users/ann/export", "ann")
            return without_time(json.loads(target.read_text())) == without_time(http)

        wait_for(same, 60, interval_s=1)  # the proposal's validation may still change it in between
        assert stable(json.loads(target.read_text()))["threads"] == stable(mine)["threads"]
        printed = hermes(env, "export", "--user", "bob")
        assert printed.returncode == 0 and json.loads(printed.stdout)["user_id"] == "bob"
        denied = hermes({**env, "HERMES_TOKEN": ANN}, "export", "--user", "bob")
        assert denied.returncode == 1 and "admin_only" in denied.stderr and denied.stdout == ""
        sft = hermes({**env, "HERMES_TOKEN": ANN}, "export", "sft", "-o", str(up.home / "ann-sft.jsonl"))
        assert sft.returncode == 0 and "sft record" in sft.stderr, sft.stderr

        # Counted, and logged with the user id but nothing of the content.
        metrics = httpx.get(f"{up.base_url}/metrics", timeout=10).text
        assert counted(metrics, "self", "complete") >= 2 and counted(metrics, "admin", "complete") >= 4
        assert counted(metrics, "self", "failed") == counted(metrics, "admin", "failed") == 0
    logged = [line for line in gateway_log(up) if line.get("event") == "user_export"]
    assert {(line["user_id"], line["scope"]) for line in logged} >= {("ann", "self"), ("bob", "admin")}
    assert all(line["requested_by"] == "root" for line in logged if line["scope"] == "admin")
    assert not any("ANN-" in json.dumps(line) or "BOB-" in json.dumps(line) for line in logged)


def hermes(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "hermes_cli", *args], env=env, capture_output=True, text=True, timeout=120
    )


def counted(metrics: str, scope: str, outcome: str) -> float:
    for family in text_string_to_metric_families(metrics):
        for sample in family.samples:
            if sample.name == "hermes_gateway_user_exports_total" and sample.labels == {
                "scope": scope,
                "outcome": outcome,
            }:
                return sample.value
    raise AssertionError(f"no hermes_gateway_user_exports_total{{scope={scope},outcome={outcome}}}")


def gateway_log(up: HermesUp) -> list[dict]:
    lines = []
    for raw in (up.home / "logs" / "gateway.log").read_text(errors="replace").splitlines():
        try:
            lines.append(json.loads(raw[raw.index("{") :]))
        except ValueError:
            continue
    return lines
