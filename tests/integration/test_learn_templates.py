"""Question templates over the API (``/api/learn/templates``): the real gateway and the real learner as
processes on a real NATS server, over real HTTP. The learner's own answer on ``hermes.query.templates`` is
the source of truth the gateway's listing is checked against; its events are read back from the log."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import msgspec
import pytest
from conftest import stored_events, wait_until
from procs import ServiceProcess, service_processes, start_ready
from test_learner import open_and_present

from hermes_proto import subjects
from hermes_proto.bus import EventStore
from hermes_proto.codec import encode
from hermes_proto.events import (
    Answer,
    AnswersRecorded,
    QuestionsProposed,
    TemplateAdded,
    TemplateDeactivated,
    TemplateEdited,
    ThreadCompleted,
    ThreadRated,
)
from hermes_proto.ids import new_id, utcnow
from hermes_proto.queries import SaveTemplate, TemplatesQuery, TemplatesReply

from hermes_cli.natsserver import free_port
from hermes_learner.templates import SEED_TEMPLATES

SEEDS = {t.template_id: t for t in SEED_TEMPLATES}
NEW = {
    "template_id": "scope-pets",
    "category": "scope",
    "text": "Do you have pets that {topic} must suit?",
    "suggestions": ["A dog", "A cat", "No pets"],
    "idea_types": ["planning"],
    "triggers": [r"\b(pets?|dog|cat)\b"],
    "prior_improvement": 0.35,
    "time_cost_s": 12.5,
    "status": "active",
    "timing": "last",
    "variations": {"formal": "Do you have pets that {topic} ought to suit?", "casual": "Any pets to think of?"},
}


@dataclass
class Stack:
    learner: ServiceProcess
    gateway: ServiceProcess
    url: str

    @property
    def templates_url(self) -> str:
        return f"{self.url}/api/learn/templates"


@pytest.fixture
async def stack(bus_env: dict[str, str], tmp_path: Path) -> AsyncIterator[Stack]:
    port = free_port()
    env = dict(bus_env, HERMES_WEB_HOST="127.0.0.1", HERMES_WEB_PORT=str(port), METRICS_PORT="0")
    procs = service_processes(env, tmp_path / "logs", ("learner", "gateway"))
    url = f"http://127.0.0.1:{port}"
    try:
        await asyncio.gather(*(start_ready(p) for p in procs.values()))  # gateway_ready: it serves HTTP
        yield Stack(procs["learner"], procs["gateway"], url)
    finally:
        await asyncio.gather(*(asyncio.to_thread(p.stop) for p in procs.values()))


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=20) as client:
        yield client


def data_of(response: httpx.Response, status: int = 200):
    assert response.status_code == status, response.text
    body = response.json()
    assert body["status"] == "success" and set(body["meta"]) == {"timestamp", "request_id", "processing_time_ms"}
    return body["data"]


def error_of(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["status"] == "error" and body["error"]["code"] == code, body
    assert body["error"]["message"]
    return body["error"]


async def listed(stack: Stack, http: httpx.AsyncClient, include_inactive: bool = False) -> dict[str, dict]:
    params = {"include_inactive": "true"} if include_inactive else None
    data = data_of(await http.get(stack.templates_url, params=params))
    assert set(data) == {"templates"}
    by_id = {t["template_id"]: t for t in data["templates"]}
    assert len(by_id) == len(data["templates"])
    return by_id


async def learner_answer(nc, include_inactive: bool = False) -> dict[str, dict]:
    """What the learner itself answers on ``hermes.query.templates``, as JSON builtins."""
    reply = await nc.request(
        subjects.QUERY_TEMPLATES, encode(TemplatesQuery(include_inactive=include_inactive)), timeout=5
    )
    templates = msgspec.json.decode(reply.data, type=TemplatesReply).templates
    return {t.template_id: msgspec.to_builtins(t) for t in templates}


async def template_events(js, template_id: str) -> list:
    return await stored_events(js, f"hermes.evt.template.{template_id}.>")


def definition(view: dict) -> dict:
    return {k: view[k] for k in NEW if k != "template_id"}


# --------------------------------------------------------------------------- list


async def test_the_list_shows_every_seeded_template_with_fresh_statistics(stack: Stack, http, js_client) -> None:
    nc, _ = js_client
    templates = await listed(stack, http)
    assert set(templates) == set(SEEDS) and len(templates) == 19
    for template_id, view in templates.items():
        seed = SEEDS[template_id]
        assert (view["category"], view["text"], view["triggers"]) == (seed.category, seed.text, list(seed.triggers))
        assert view["suggestions"] == list(seed.suggestions) and view["idea_types"] == list(seed.idea_types)
        assert view["variations"] == seed.variations and view["timing"] == seed.timing
        assert view["source"] == "seed" and view["active"] is True and view["status"] == "active"
        assert (view["times_asked"], view["times_answered"], view["rated_threads"]) == (0, 0, 0)
        assert view["answer_rate"] is None and view["mean_rating"] is None and view["mean_answer_time_s"] is None
        assert view["mean_clarity_gain"] is None and view["trend"] == "new"
        assert view["expected_improvement"] == pytest.approx(view["prior_improvement"])
        assert view["prior_improvement"] == pytest.approx(seed.prior_improvement)
        assert view["time_cost_s"] == pytest.approx(seed.time_cost_s)
    assert templates == await learner_answer(nc)
    assert await listed(stack, http, include_inactive=True) == templates  # nothing deactivated yet


async def test_the_routes_are_described_with_the_contract_limits(stack: Stack, http) -> None:
    spec = (await http.get(f"{stack.url}/openapi.json")).json()
    paths = spec["paths"]
    assert set(paths["/api/learn/templates"]) == {"get", "post"}
    assert set(paths["/api/learn/templates/{template_id}"]) == {"patch", "delete"}
    assert {"201", "400", "409", "422", "503"} <= set(paths["/api/learn/templates"]["post"]["responses"])
    for method in ("patch", "delete"):
        assert {"200", "400", "404", "503"} <= set(paths["/api/learn/templates/{template_id}"][method]["responses"])
    data = paths["/api/learn/templates"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    view = data["properties"]["data"]["properties"]["templates"]["items"]["properties"]
    assert {"times_asked", "answer_rate", "mean_rating", "trend", "expected_improvement", "active"} <= set(view)
    # The body's limits are exactly SaveTemplate's (msgspec's own JSON Schema of the contract).
    contract = msgspec.json.schema(SaveTemplate)["$defs"]["SaveTemplate"]["properties"]
    body = spec["components"]["schemas"]["NewTemplate"]["properties"]
    assert {name: {k: v for k, v in field.items() if k != "title"} for name, field in body.items()} == {
        name: field for name, field in contract.items() if name not in ("op", "create")
    }


# --------------------------------------------------------------------------- add


async def test_an_added_template_is_listed_once_and_recorded(stack: Stack, http, js_client) -> None:
    nc, js = js_client
    added = data_of(await http.post(stack.templates_url, json=NEW), 201)
    assert added["template_id"] == NEW["template_id"] and definition(added) == definition(NEW)
    assert added["source"] == "user" and added["active"] is True and added["times_asked"] == 0
    assert added["expected_improvement"] == pytest.approx(NEW["prior_improvement"])

    templates = await listed(stack, http)
    assert set(templates) == set(SEEDS) | {NEW["template_id"]} and templates[NEW["template_id"]] == added
    assert templates == await learner_answer(nc)
    [event] = await template_events(js, NEW["template_id"])
    assert isinstance(event, TemplateAdded) and event.source == "user" and event.aggregate_id == NEW["template_id"]
    assert {k: getattr(event, k) for k in definition(NEW)} == definition(NEW)

    again = error_of(
        await http.post(stack.templates_url, json=dict(NEW, text="Another text, same id?")), 409, "template_exists"
    )
    assert again["details"] == {"from": "The learner"}
    seeded = error_of(
        await http.post(stack.templates_url, json=dict(NEW, template_id="intent-main-result")), 409, "template_exists"
    )
    assert seeded["message"]
    assert (await listed(stack, http))[NEW["template_id"]]["text"] == NEW["text"]
    assert len(await template_events(js, NEW["template_id"])) == 1


LEARNER_REFUSES = [
    {"category": "mood"},  # not one of the five categories
    {"status": "maybe"},  # not a template status
    {"idea_types": ["gardening"]},  # not an idea type the learner classifies into
    {"text": "Which {colour} do you like?"},  # a slot other than {topic}
]
OUTSIDE_LIMITS = [
    {"template_id": "Has Spaces"},
    {"template_id": "x" * 65},
    {"template_id": "trailing\n"},
    {"template_id": ""},
    {"text": "Why"},
    {"text": "x" * 501},
    {"text": 12345},
    {"suggestions": ["ok"] * 9},
    {"suggestions": [""]},
    {"suggestions": ["x" * 61]},
    {"triggers": ["a"] * 11},
    {"triggers": ["x" * 201]},
    {"prior_improvement": 1.5},
    {"prior_improvement": -0.1},
    {"time_cost_s": 0},
    {"time_cost_s": 3601},
    {"unknown_field": 1},
    {"category": None},
    {"variations": {"loud": "Pets?!"}},
    {"variations": {"casual": ""}},
    {"variations": {"casual": "x" * 301}},
    {"variations": ["Pets?"]},
    {"timing": "middle"},
]


async def test_the_learner_refuses_a_bad_definition(stack: Stack, http, js_client) -> None:
    _, js = js_client
    for change in LEARNER_REFUSES:
        body = dict(NEW, template_id="bad-one", **change)
        error = error_of(await http.post(stack.templates_url, json=body), 400, "bad_request")
        assert error["details"] == {"from": "The learner"}, change
    assert "bad-one" not in await listed(stack, http, include_inactive=True)
    assert await template_events(js, "bad-one") == []


REFUSED_TRIGGERS = ["(unclosed", r"(a)\1", "(?=plan)", "(?<!x)garden", r"\pL{200}"]
"""Not a regular expression, or not one RE2 runs in linear time (backreference, lookaround) or small enough."""


async def test_triggers_re2_refuses_are_invalid_trigger_and_nested_quantifiers_pass(
    stack: Stack, http, js_client
) -> None:
    _, js = js_client
    seed_events = len(await template_events(js, "intent-main-result"))
    for pattern in REFUSED_TRIGGERS:
        body = dict(NEW, template_id="bad-trigger", triggers=["garden", pattern])
        error = error_of(await http.post(stack.templates_url, json=body), 400, "invalid_trigger")
        assert pattern in error["message"] and error["details"] == {"from": "The learner"}
        edit = await http.patch(f"{stack.templates_url}/intent-main-result", json={"triggers": [pattern]})
        assert pattern in error_of(edit, 400, "invalid_trigger")["message"]
    assert await template_events(js, "bad-trigger") == []
    assert len(await template_events(js, "intent-main-result")) == seed_events
    # RE2 matches nested quantifiers in linear time: such a trigger is a trigger like any other.
    added = data_of(await http.post(stack.templates_url, json=dict(NEW, triggers=["^(a+)+$"])), 201)
    assert added["triggers"] == ["^(a+)+$"]


async def test_bodies_outside_the_contract_limits_never_reach_the_learner(stack: Stack, http, js_client) -> None:
    _, js = js_client
    for change in OUTSIDE_LIMITS:
        error = error_of(await http.post(stack.templates_url, json=dict(NEW, **change)), 422, "validation_failed")
        assert error["details"], change
    for required in ("template_id", "category", "text"):
        body = {k: v for k, v in NEW.items() if k != required}
        error_of(await http.post(stack.templates_url, json=body), 422, "validation_failed")
    response = await http.post(stack.templates_url, content=b"{not json", headers={"content-type": "application/json"})
    error_of(response, 400, "invalid_json")
    assert await stored_events(js, "hermes.evt.template.>") == []
    assert set(await listed(stack, http, include_inactive=True)) == set(SEEDS)
    # The limits are the contract's: the edges themselves are accepted.
    edges = dict(
        NEW,
        template_id="e" * 64,
        text="x" * 500,
        suggestions=["s" * 60] * 8,
        triggers=["t" * 200] * 10,
        prior_improvement=1.0,
        time_cost_s=3600,
        variations={"technical": "v" * 300},
    )
    assert data_of(await http.post(stack.templates_url, json=edges), 201)["template_id"] == "e" * 64


# --------------------------------------------------------------------------- edit and deactivate


async def test_edit_changes_only_the_given_fields_and_keeps_the_rest(stack: Stack, http, js_client) -> None:
    nc, js = js_client
    data_of(await http.post(stack.templates_url, json=NEW), 201)
    url = f"{stack.templates_url}/{NEW['template_id']}"
    edited = data_of(await http.patch(url, json={"text": "Which pets live with you?", "status": "draft"}))
    assert edited["text"] == "Which pets live with you?" and edited["status"] == "draft"
    assert definition(edited) == dict(definition(NEW), text="Which pets live with you?", status="draft")
    templates = await listed(stack, http, include_inactive=True)
    assert templates[NEW["template_id"]] == edited and templates == await learner_answer(nc, include_inactive=True)
    events = await template_events(js, NEW["template_id"])
    assert [type(e) for e in events] == [TemplateAdded, TemplateEdited]
    assert (events[1].text, events[1].status, events[1].suggestions) == (edited["text"], "draft", NEW["suggestions"])

    restyled = data_of(await http.patch(url, json={"variations": {"technical": "Which species?"}, "timing": "first"}))
    assert definition(restyled) == dict(definition(edited), variations={"technical": "Which species?"}, timing="first")
    error_of(await http.patch(url, json={"timing": "soon"}), 422, "validation_failed")
    edited = restyled
    assert [type(e) for e in await template_events(js, NEW["template_id"])] == [TemplateAdded] + [TemplateEdited] * 2

    # An empty edit changes nothing and records nothing.
    assert data_of(await http.patch(url, json={})) == edited
    assert len(await template_events(js, NEW["template_id"])) == 3
    # The learner still checks the merged definition.
    error_of(await http.patch(url, json={"category": "mood"}), 400, "bad_request")
    error_of(await http.patch(url, json={"text": None}), 422, "validation_failed")
    error_of(await http.patch(url, json={"template_id": "other"}), 422, "validation_failed")
    assert (await listed(stack, http, include_inactive=True))[NEW["template_id"]] == edited


async def test_deactivated_templates_are_listed_only_on_request_and_unknown_ones_are_404(
    stack: Stack, http, js_client
) -> None:
    nc, js = js_client
    error_of(
        await http.patch(f"{stack.templates_url}/no-such-template", json={"text": "Hello there?"}),
        404,
        "unknown_template",
    )
    error_of(await http.delete(f"{stack.templates_url}/no-such-template"), 404, "unknown_template")
    error_of(await http.patch(f"{stack.templates_url}/Bad%20Id", json={"text": "Hello there?"}), 400, "invalid_id")
    error_of(await http.delete(f"{stack.templates_url}/UPPER"), 400, "invalid_id")
    assert await stored_events(js, "hermes.evt.template.>") == []

    target = "constraint-must-avoid"
    gone = data_of(await http.request("DELETE", f"{stack.templates_url}/{target}", json={"reason": "too generic"}))
    assert gone["template_id"] == target and gone["active"] is False
    assert target not in await listed(stack, http) and len(await listed(stack, http)) == len(SEEDS) - 1
    everything = await listed(stack, http, include_inactive=True)
    assert everything[target] == gone and set(everything) == set(SEEDS)
    assert everything == await learner_answer(nc, include_inactive=True)
    assert [(type(e), e.reason) for e in await template_events(js, target)] == [(TemplateDeactivated, "too generic")]

    # The reason may come as a query parameter instead.
    data_of(await http.delete(f"{stack.templates_url}/scope-focus", params={"reason": "asked too often"}))
    [event] = await template_events(js, "scope-focus")
    assert isinstance(event, TemplateDeactivated) and event.reason == "asked too often"
    # A deactivated template comes back with an edit setting it active.
    back = data_of(await http.patch(f"{stack.templates_url}/{target}", json={"status": "active"}))
    assert back["active"] is True and target in await listed(stack, http)


# --------------------------------------------------------------------------- restart, learner down


async def test_the_list_survives_a_learner_restart_and_edited_seeds_stay_edited(stack: Stack, http, js_client) -> None:
    nc, _ = js_client
    seed_id = "intent-main-result"
    data_of(await http.post(stack.templates_url, json=NEW), 201)
    edited = data_of(await http.patch(f"{stack.templates_url}/{seed_id}", json={"text": "What do you want, really?"}))
    assert edited["text"] == "What do you want, really?" and edited["text"] != SEEDS[seed_id].text
    data_of(await http.delete(f"{stack.templates_url}/context-audience"))
    before = await listed(stack, http, include_inactive=True)

    assert stack.learner.stop() == 0, stack.learner.log_text()[-3000:]
    down = error_of(await http.get(stack.templates_url), 503, "bus_unavailable")
    assert down["retry_after"] and "learner" in down["message"].lower()
    error_of(await http.post(stack.templates_url, json=dict(NEW, template_id="while-down")), 503, "bus_unavailable")

    await start_ready(stack.learner)
    after = await listed(stack, http, include_inactive=True)
    assert after == before and after[seed_id]["text"] == "What do you want, really?"
    assert "while-down" not in after and after == await learner_answer(nc, include_inactive=True)


# --------------------------------------------------------------------------- learned: drafts and effectiveness

IDEA = "help me repaint my flat"
TYPED = "Only recycled materials, please"
EFFECTIVENESS = (
    "times_asked",
    "times_answered",
    "answer_rate",
    "rated_threads",
    "mean_rating",
    "mean_answer_time_s",
    "mean_clarity_gain",
    "trend",
    "expected_improvement",
)


def _then(thread_id: str) -> dict:
    return dict(event_id=new_id(), aggregate_id=thread_id, occurred_at=utcnow(), correlation_id=thread_id)


async def _asked(js, idea: str = IDEA) -> QuestionsProposed:
    """A new thread up to the learner's questions (appended as the orchestrator does)."""
    thread_id, _ = await open_and_present(EventStore(js, "test"), idea)

    async def proposed():
        found = await stored_events(js, subjects.thread_event(thread_id, QuestionsProposed))
        return found[0] if found else None

    return await wait_until(proposed, timeout_s=20)


async def _typed_and_closed(js, answer: str, rating: int | None = None) -> QuestionsProposed:
    """A thread whose every question gets the same typed ``answer``, then closes (and is rated)."""
    proposal = await _asked(js)
    thread_id = proposal.aggregate_id
    later = [
        AnswersRecorded(
            **_then(thread_id), answers=[Answer(question_id=q.question_id, text=answer) for q in proposal.questions]
        ),
        ThreadCompleted(**_then(thread_id), final_draft_number=2, reason="answered"),
    ]
    if rating is not None:
        later.append(ThreadRated(**_then(thread_id), rating=rating, draft_number=2))
    await EventStore(js, "test").append(later)
    return proposal


async def test_recurring_typed_answers_become_a_draft_asked_only_once_activated(stack: Stack, http, js_client) -> None:
    nc, js = js_client
    threads = [await _typed_and_closed(js, TYPED, rating=4 if n == 2 else None) for n in range(3)]
    in_all = set.intersection(*({q.category for q in t.questions} for t in threads))
    expected = {f"learned-{category}-only-recycled-materials" for category in in_all}
    assert expected

    async def drafted():
        found = await listed_with(stack, http, status="draft")
        return found if set(found) == expected else None

    drafts = await wait_until(drafted, timeout_s=20)
    assert drafts == {k: v for k, v in (await listed(stack, http)).items() if v["status"] == "draft"}
    assert not set(drafts) & set(await listed_with(stack, http, status="active"))
    error_of(await http.get(stack.templates_url, params={"status": "maybe"}), 422, "validation_failed")
    for template_id, view in drafts.items():
        assert (view["status"], view["source"], view["active"], view["times_asked"]) == ("draft", "learned", True, 0)
        assert view["text"] == "Does “only recycled materials” apply to {topic}?"
        assert view["suggestions"] == [TYPED] and view["idea_types"] == [threads[0].idea_type]
        [added] = await template_events(js, template_id)
        assert isinstance(added, TemplateAdded) and added.phrase == "only recycled materials"
        assert added.learned_from == sorted(t.aggregate_id for t in threads)
        assert added.causation_id is not None

    # Every template measured has its measurement in the log; the last one is what the learner answers now.
    rated = {q.template_id for q in threads[2].questions}

    async def rated_recorded():
        found = await stored_events(js, "hermes.evt.template.*.template_effectiveness_updated")
        done = {e.aggregate_id for e in found if e.cause == "thread_rated" and e.thread_id == threads[2].aggregate_id}
        return found if done == rated else None

    updates = await wait_until(rated_recorded, timeout_s=20)
    last = {e.aggregate_id: e for e in updates}
    assert set(last) == {q.template_id for t in threads for q in t.questions}
    views = await listed(stack, http, include_inactive=True)
    for template_id, update in last.items():
        assert {k: getattr(update, k) for k in EFFECTIVENESS} == {k: views[template_id][k] for k in EFFECTIVENESS}
    assert all(last[t].rated_threads == 1 and last[t].mean_rating == 4.0 for t in rated)

    # A draft is never asked; activated, it is.
    before = await _asked(js)
    assert not {q.template_id for q in before.questions} & set(drafts)
    chosen = sorted(drafts)[0]
    active = data_of(await http.patch(f"{stack.templates_url}/{chosen}", json={"status": "active"}))
    assert (active["status"], active["source"], active["active"]) == ("active", "learned", True)
    assert chosen in await listed_with(stack, http, status="active")
    after = await _asked(js)
    assert chosen in {q.template_id for q in after.questions}


async def listed_with(stack: Stack, http: httpx.AsyncClient, status: str) -> dict[str, dict]:
    data = data_of(await http.get(stack.templates_url, params={"status": status}))
    return {t["template_id"]: t for t in data["templates"]}
