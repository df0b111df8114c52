"""Learned preferences over the real bus: the real gateway, orchestrator, learner, router and talos-edge as processes
on a real NATS server, the edge in front of a loopback OpenAI-compatible model server (which records every
prompt), driven over real HTTP the way a user would.

Proves: a preference the user keeps giving in answers is learned (``PreferenceLearned`` in the log), then applied to
the next draft-1 prompt and no longer asked about (shown as an assumption instead); a correction through
``/api/learn/feedback`` lowers it below the threshold so it is asked again; an edit applies at once; a delete
forgets; a rating credits the applied preferences; with learning disabled nothing of it happens and threads still
complete.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from conftest import stored_events, wait_until
from fakes.llm_servers import FakeOpenAIServer, Reply
from procs import ServiceProcess, model_env, service_processes, start_ready

from hermes_proto.events import preference_id

from hermes_cli.natsserver import free_port

ANSWERS = {
    "scope": "detailed, step by step please",
    "context": "keep it casual",
    "constraint": "budget under 500 euros; in Lisbon",
}
"""The simulated user's answer by question category (its profile); other questions get "not sure"."""
PROFILE_CATEGORIES = set(ANSWERS)
IDEAS = [
    "help me plan a trip",
    "help me plan a birthday party",
    "plan a garden",
    "help me plan a weekend away",
    "help me plan a move to a new flat",
    "help me plan a picnic",
    "help me plan a family dinner",
    "help me plan a hiking day",
]


def profile_answer(question: dict) -> str:
    return ANSWERS.get(question["category"], "not sure")


LEARNED = {
    ("depth", "depth"): "detailed",
    ("style", "style"): "casual",
    ("constraint", "budget"): "budget under 500 euros",
    ("constraint", "location"): "in Lisbon",
}


@dataclass
class Stack:
    procs: dict[str, ServiceProcess]
    model: FakeOpenAIServer
    url: str
    http: httpx.AsyncClient

    async def call(self, method: str, path: str, status: int = 200, **kwargs):
        response = await self.http.request(method, self.url + path, **kwargs)
        assert response.status_code == status, response.text
        return response.json()["data"] if response.json().get("status") == "success" else response.json()["error"]

    async def thread(self, thread_id: str) -> dict:
        return await self.call("GET", f"/api/threads/{thread_id}/status")

    async def asked(self, idea: str) -> dict:
        """Submit ``idea`` and return the thread once its questions were proposed (or it completed without)."""
        thread_id = (await self.call("POST", "/api/submit", 202, json={"idea": idea}))["thread_id"]

        async def decided():
            response = await self.http.get(f"{self.url}/api/threads/{thread_id}/status")
            if response.status_code == 404:  # not projected yet (a thread appears within a second)
                return None
            view = response.json()["data"]
            # awaiting_answers is projected from draft 1, its questions a moment later (idea_type marks them)
            return (
                view
                if view["status"] == "completed"
                or (view["status"] == "awaiting_answers" and view["idea_type"] is not None)
                else None
            )

        return await wait_until(decided, timeout_s=30, interval_s=0.2)

    async def completed(self, thread_id: str) -> dict:
        async def done():
            view = await self.thread(thread_id)
            return view if view["status"] == "completed" else None

        return await wait_until(done, timeout_s=30, interval_s=0.2)

    async def run_thread(self, idea: str, answer: Callable[[dict], str] = profile_answer) -> tuple[dict, str]:
        """Submit ``idea``, answer its questions as the simulated user (``answer``: a question's answer, "" leaves
        it open), wait for the end; returns (the thread when its questions were proposed, the system prompt of its
        draft 1)."""
        before = len(self.model.chat_requests())
        asked = await self.asked(idea)
        if asked["status"] == "awaiting_answers":
            answers = {q["question_id"]: answer(q) for q in asked["questions"]}
            await self.call("POST", f"/api/threads/{asked['thread_id']}/continue", 202, json={"answers": answers})
        await self.completed(asked["thread_id"])
        draft1 = self.model.chat_requests()[before]  # the first model call after the submit: draft 1
        return asked, draft1.body["messages"][0]["content"]

    async def preferences(self, scope: str = "") -> dict[tuple[str, str], dict]:
        """The user's preferences held in ``scope`` (default: everywhere), by (category, key)."""
        data = await self.call("GET", "/api/learn/preferences", params={"user_id": "local"})
        assert data["confidence_threshold"] == 0.75
        return {(p["category"], p["key"]): p for p in data["preferences"] if p["scope"] == scope}

    async def learned(self) -> dict[tuple[str, str], dict]:
        """The everywhere preferences of :data:`LEARNED` (the profile's; slots left unanswered are learned too)."""
        return {k: p for k, p in (await self.preferences()).items() if k in LEARNED}


async def make_stack(bus_env: dict[str, str], tmp_path: Path, **extra: str) -> AsyncIterator[Stack]:
    model = await FakeOpenAIServer(reply=Reply(text="A first draft of the plan."), models=["fake"]).start()
    port = free_port()
    env = dict(
        bus_env,
        **model_env(model.port),
        METRICS_PORT="0",
        HERMES_WEB_HOST="127.0.0.1",
        HERMES_WEB_PORT=str(port),
        HERMES_ANSWER_TIMEOUT_SECONDS="300",
        HERMES_EDGE_HEARTBEAT_S="0.5",
        **extra,
    )
    procs = service_processes(env, tmp_path / "logs", ("orchestrator", "learner", "router", "edge", "gateway"))
    async with httpx.AsyncClient(timeout=20) as http:
        try:
            await asyncio.gather(*(start_ready(p) for p in procs.values()))
            yield Stack(procs, model, f"http://127.0.0.1:{port}", http)
        finally:
            await asyncio.gather(*(asyncio.to_thread(p.stop) for p in procs.values()))
            await model.stop()


@pytest.fixture
async def stack(bus_env, tmp_path) -> AsyncIterator[Stack]:
    async for s in make_stack(bus_env, tmp_path):
        yield s


@pytest.fixture
async def unlearning(bus_env, tmp_path) -> AsyncIterator[Stack]:
    async for s in make_stack(bus_env, tmp_path, HERMES_LEARNING_ENABLED="false"):
        yield s


def categories(thread: dict) -> set[str]:
    return {q["category"] for q in thread["questions"]}


async def test_a_repeated_preference_stops_being_asked_and_shapes_draft_1(stack: Stack, js_client) -> None:
    _, js = js_client
    ideas = iter(IDEAS)
    first, first_prompt = await stack.run_thread(next(ideas))
    assert categories(first) >= PROFILE_CATEGORIES, first["questions"]  # the profile is asked about at first
    assert "earlier conversations" not in first_prompt and first["assumptions"] == []
    threads = 1
    while not all(p["applied"] for p in (await stack.learned()).values()) or len(await stack.learned()) < 4:
        assert threads < 6, await stack.preferences()
        await stack.run_thread(next(ideas))
        threads += 1
    assert threads == 3  # three consistent answers: confidence 3 / (3 + 1) = 0.75
    prefs = await stack.learned()
    assert {k: p["value"] for k, p in prefs.items()} == LEARNED
    assert prefs[("constraint", "budget")]["normalized"] == "<= 500 EUR"  # the words are kept, the votes normalised
    assert all(p["confidence"] == 0.75 and p["source"] == "observed" and p["observations"] == 3 for p in prefs.values())
    planning = await stack.preferences("type:planning")  # every answer counts for its idea type too
    assert {k: p["value"] for k, p in planning.items() if k in LEARNED} == LEARNED
    learned = await stored_events(js, f"hermes.evt.preference.{prefs[('depth', 'depth')]['preference_id']}.>")
    assert [e.type_name() for e in learned] == ["preference_learned"] * 3
    assert [e.confidence for e in learned] == [0.5, 0.6667, 0.75]

    # Learned: draft 1 applies the profile (the planning facts, the most specific), its questions are not asked.
    fourth, prompt = await stack.run_thread(next(ideas))
    assert not {q["slot"] for q in fourth["questions"]} & {"depth", "budget", "location"}, fourth["questions"]
    assert "- Depth: detailed" in prompt and "- Style: casual" in prompt
    assert "- Budget: budget under 500 euros" in prompt and "- Location: in Lisbon" in prompt
    assert {(a["category"], a["key"]): a["value"] for a in fourth["assumptions"]} == LEARNED
    assert {a["scope"] for a in fourth["assumptions"]} == {"type:planning"}
    assert all(p["usage"] == 1 for k, p in (await stack.preferences("type:planning")).items() if k in LEARNED)

    # A 5-star rating through the feedback route credits what the draft applied (its answers may have said more).
    votes = (await stack.preferences("type:planning"))[("depth", "depth")]["votes"]["detailed"]
    data = await stack.call("POST", "/api/learn/feedback", json={"thread_id": fourth["thread_id"], "rating": 5})
    assert data["rated"] is True

    async def credited():
        prefs = await stack.preferences("type:planning")
        return prefs if prefs[("depth", "depth")]["evidence"] == "rating" else None

    prefs = await wait_until(credited, timeout_s=15)
    assert prefs[("depth", "depth")]["confidence"] == round((votes + 0.5) / (votes + 1.5), 4)
    assert prefs[("depth", "depth")]["source"] == "inferred"

    # A correction about the thread lowers depth below the threshold in each of its scopes: depth is asked again.
    data = await stack.call(
        "POST",
        "/api/learn/feedback",
        json={
            "thread_id": fourth["thread_id"],
            "corrections": [{"category": "depth", "key": "depth", "value": "overview"}],
        },
    )
    [corrected] = data["preferences"]
    assert (corrected["value"], corrected["corrections"], corrected["applied"]) == ("overview", 1, False)
    assert corrected["confidence"] < 0.75
    assert (await stack.preferences("type:planning"))[("depth", "depth")]["corrections"] == 1
    fifth, prompt = await stack.run_thread(next(ideas))
    assert "depth" in {q["slot"] for q in fifth["questions"]} and "Depth:" not in prompt and "- Style: casual" in prompt

    # An edit applies at once; a delete of the fact held everywhere forgets it in every scope.
    depth_id = corrected["preference_id"]
    edited = await stack.call("PATCH", f"/api/learn/preferences/{depth_id}", json={"value": "comprehensive"})
    assert (edited["value"], edited["confidence"], edited["source"], edited["applied"]) == (
        "comprehensive",
        0.9,
        "explicit",
        True,
    )
    style_id = preference_id("local", "style", "style")
    assert (await stack.call("DELETE", f"/api/learn/preferences/{style_id}"))["forgotten"] is True
    await stack.call("DELETE", f"/api/learn/preferences/{style_id}", 404)
    assert ("style", "style") not in await stack.preferences("type:planning")
    sixth, prompt = await stack.run_thread(next(ideas))
    assert "Style:" not in prompt
    assert "- Depth: comprehensive" in prompt

    # A rating's comment is evidence about style: "too formal" asks for casual.
    await stack.call(
        "POST", f"/api/threads/{sixth['thread_id']}/rate", 202, json={"rating": 3, "comment": "Too formal for me"}
    )

    async def relearned():
        style = (await stack.learned()).get(("style", "style"))
        return style if style and style["evidence"] == "comment" else None

    style = await wait_until(relearned, timeout_s=15)
    assert (style["value"], style["source"]) == ("casual", "observed") and style["votes"]["casual"] >= 1
    # Learning on: the closed threads' templates have their effectiveness recorded (the counterpart of the test below).
    assert await stored_events(js, "hermes.evt.template.*.template_effectiveness_updated")


async def test_bad_preference_requests_get_clear_errors(stack: Stack) -> None:
    error = await stack.call("PATCH", "/api/learn/preferences/not-an-id", 400, json={"value": "x"})
    assert error["code"] == "invalid_id"
    error = await stack.call("PATCH", f"/api/learn/preferences/{'0' * 32}", 404, json={"value": "x"})
    assert error["code"] == "unknown_preference"
    error = await stack.call(
        "POST", "/api/learn/preferences", 400, json={"category": "depth", "key": "tone", "value": "detailed"}
    )
    assert error["code"] == "bad_request"
    error = await stack.call(
        "POST", "/api/learn/preferences", 422, json={"category": "mood", "key": "mood", "value": "happy"}
    )
    assert error["code"] == "validation_failed"
    assert (await stack.call("POST", "/api/learn/feedback", 422, json={}))["code"] == "validation_failed"
    error = await stack.call("POST", "/api/learn/feedback", 422, json={"rating": 4})
    assert error["code"] == "validation_failed"
    error = await stack.call("POST", "/api/learn/feedback", 404, json={"thread_id": "f" * 32, "rating": 4})
    assert error["code"] == "thread_not_found"
    assert await stack.preferences() == {}  # nothing was stored by any of them
    made = await stack.call(
        "POST", "/api/learn/preferences", json={"category": "constraint", "key": "budget", "value": "Under 80 Euros"}
    )
    assert (made["value"], made["applied"]) == ("Under 80 Euros", True)


async def test_with_learning_disabled_nothing_is_learned_and_threads_still_complete(
    unlearning: Stack, js_client
) -> None:
    _, js = js_client
    for idea in IDEAS[:4]:
        asked, prompt = await unlearning.run_thread(idea)
        assert categories(asked) & PROFILE_CATEGORIES and asked["assumptions"] == []
        assert "earlier conversations" not in prompt
    assert await unlearning.preferences() == {}
    # No effectiveness records and no drafts, although the same answers recurred in every thread.
    assert await stored_events(js, "hermes.evt.template.>") == []
