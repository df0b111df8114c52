"""The OpenAI-compatible API, sessions, SOUL.md, memory, perception events and training exports over the real bus.

The real gateway, orchestrator, learner, router and talos-edge run as processes on a real NATS server (the stack of
``test_learn_preferences``); the edge calls a loopback OpenAI-compatible model server that records every prompt.
The client is the official ``openai`` Python SDK, unchanged, pointed at the gateway's ``/v1``.
"""

from __future__ import annotations

import asyncio
import json

import httpx
import nats
import openai
import pytest
from conftest import stored_events, wait_until
from fakes.llm_servers import Reply
from procs import start_ready
from test_learn_preferences import Stack, stack  # noqa: F401 (the same fixture)

from hermes_proto.events import JobQueued

REPLY = "A first draft of the plan."  # what the loopback model answers (test_learn_preferences' stack)


def client(stack: Stack, **kw) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=stack.url + "/v1", api_key="not-checked-while-auth-is-off", max_retries=0, timeout=30, **kw
    )


async def test_models_completions_streaming_sessions_and_errors(stack: Stack, js_client) -> None:
    _, js = js_client
    api = client(stack)
    ids = [m.id for m in (await api.models.list()).data]
    assert ids[0] == "hermes" and "fake" in ids  # the edge's model, once its backend is healthy

    raw = await api.chat.completions.with_raw_response.create(
        model="fake",
        user="sess-1",
        max_tokens=40,
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "tomatoes on a balcony?"}],
    )
    done = raw.parse()
    session_id = raw.headers["x-hermes-thread-id"]
    assert raw.headers["x-hermes-session-id"] == "sess-1"  # the key, to send back
    assert done.object == "chat.completion" and done.choices[0].message.content == REPLY
    assert done.choices[0].finish_reason == "stop" and done.usage.completion_tokens > 0
    assert done.usage.total_tokens == done.usage.prompt_tokens + done.usage.completion_tokens
    sent = stack.model.chat_requests()[-1].body
    assert sent["max_tokens"] == 40
    assert [m["role"] for m in sent["messages"]] == ["system", "user"]
    assert sent["messages"][0]["content"].endswith("Be brief.")  # SOUL first, the caller's system prompt after

    chunks = [
        c
        async for c in await api.chat.completions.create(
            model="fake",
            user="sess-1",
            stream=True,
            stream_options={"include_usage": True},
            messages=[{"role": "user", "content": "and peppers?"}],
        )
    ]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == REPLY
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0  # include_usage's last chunk
    assert all(c.usage is None for c in chunks[:-1]) and len({c.created for c in chunks}) == 1

    session = await stack.call("GET", f"/api/sessions/{session_id}")
    assert session["session_key"] == "sess-1" and session["channel"] == "api" and session["kind"] == "chat"
    turns = session["turns"]
    assert [t["reply"] for t in turns] == [REPLY, REPLY] and [t["kind"] for t in turns] == ["chat", "chat"]
    assert all(t["backend"] == "talos" and t["model"] == "fake" and t["completion_tokens"] > 0 for t in turns)
    assert turns[1]["messages"][-1] == {"role": "user", "content": "and peppers?"}
    listed = await stack.call("GET", "/api/sessions", params={"channel": "api"})
    assert [s["session_id"] for s in listed["sessions"]] == [session_id] and listed["sessions"][0]["turn_count"] == 2

    other = await api.chat.completions.with_raw_response.create(
        model="fake", messages=[{"role": "user", "content": "hello"}]
    )
    assert other.headers["x-hermes-thread-id"] != session_id  # no session id: a session of its own
    again = await api.chat.completions.with_raw_response.create(  # ... whose new key continues it
        model="fake",
        messages=[{"role": "user", "content": "hello again"}],
        extra_headers={"X-Hermes-Session-Id": other.headers["x-hermes-session-id"]},
    )
    assert again.headers["x-hermes-thread-id"] == other.headers["x-hermes-thread-id"]

    with pytest.raises(openai.NotFoundError) as missing:
        await api.chat.completions.create(model="gpt-nothing", messages=[{"role": "user", "content": "hi"}])
    assert missing.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as bad:
        await api.chat.completions.create(model="fake", messages=[{"role": "tool", "content": "x"}])
    assert bad.value.code == "unsupported_role"
    async with httpx.AsyncClient() as http:
        garbage = await http.post(stack.url + "/v1/chat/completions", content=b"{not json")
    assert garbage.status_code == 400 and garbage.json()["error"]["code"] == "invalid_json"
    chats = [e for e in await stored_events(js, "hermes.evt.thread.>") if isinstance(e, JobQueued) and e.kind == "chat"]
    assert len(chats) == 4  # the refused requests queued nothing


async def test_soul_memory_perception_and_reproducible_exports(stack: Stack, js_client, tmp_path) -> None:
    _, js = js_client
    api = client(stack)
    soul = await stack.call("GET", "/api/soul")
    assert soul["path"].endswith("SOUL.md") and "Hermes" in soul["text"]
    await stack.call("PUT", "/api/soul", json={"text": "You are Hermes, keeper of Ann's garden."})

    await api.chat.completions.create(
        model="fake", user="garden", messages=[{"role": "user", "content": "my tomatoes have yellow leaves"}]
    )
    first = stack.model.chat_requests()[-1].body["messages"][0]["content"]
    assert first.startswith("You are Hermes, keeper of Ann's garden.") and "[memory" not in first

    hits = (await stack.call("GET", "/api/memory/search", params={"q": "yellow tomatoes"}))["hits"]
    assert len(hits) == 1 and "[tomatoes]" in hits[0]["snippet"] and hits[0]["reply"] == REPLY
    remembered = hits[0]["job_id"]

    # A new session about tomatoes is given the earlier turn as a memory marker, recorded on its job.
    raw = await api.chat.completions.with_raw_response.create(
        model="fake", user="garden-2", messages=[{"role": "user", "content": "what about watering tomatoes?"}]
    )
    system = stack.model.chat_requests()[-1].body["messages"][0]["content"]
    assert f"[memory {remembered} · " in system and "my tomatoes have yellow leaves" in system
    turn = (await stack.call("GET", f"/api/sessions/{raw.headers['x-hermes-thread-id']}"))["turns"][0]
    assert turn["memories"] == [remembered]

    # Perception: over HTTP and over NATS request/reply, one persistent session for the source.
    seen = await stack.call(
        "POST", "/api/perception/events", json={"type": "archon_entering", "source": "nexus", "room": "hall"}
    )
    assert seen["reply"] == REPLY
    nc = await nats.connect(stack.procs["gateway"].env["NATS_URL"])
    try:
        msg = await nc.request("hermes.perception.nexus", json.dumps({"type": "archon_leaving"}).encode(), timeout=30)
        bad = await nc.request("hermes.perception.nexus", b"[1, 2]", timeout=10)
    finally:
        await nc.close()
    answer = json.loads(msg.data)
    assert answer["status"] == "success" and answer["data"]["session_id"] == seen["session_id"]
    assert json.loads(bad.data)["error"]["code"] == "invalid_event"
    perceived = await stack.call("GET", f"/api/sessions/{seen['session_id']}")
    assert perceived["channel"] == "perception" and perceived["session_key"] == "perception:nexus"
    assert len(perceived["turns"]) == 2
    second = perceived["turns"][1]["messages"]
    assert "archon_entering" in second[1]["content"] and second[2] == {"role": "assistant", "content": REPLY}
    assert "archon_leaving" in second[-1]["content"]  # the earlier turn came along as history
    bad_http = await stack.http.post(stack.url + "/api/perception/events", json={"no": "type"})
    assert bad_http.status_code == 400 and bad_http.json()["error"]["code"] == "invalid_event"

    # Exports: one record per turn; the same bytes after the read model is rebuilt from the log alone.
    sft = await export(stack, "sft")
    records = [json.loads(line) for line in sft.splitlines()]
    assert len(records) == 4 and all(r["messages"][-1] == {"role": "assistant", "content": REPLY} for r in records)
    share = [json.loads(line) for line in (await export(stack, "sft", format="sharegpt")).splitlines()]
    assert [c["from"] for c in share[0]["conversations"]] == ["system", "human", "gpt"]
    only = await export(stack, "sft", channel="perception")
    assert len(only.splitlines()) == 2
    assert (await stack.http.get(stack.url + "/api/export/sft", params={"since": "2026-13-45"})).status_code == 400

    orchestrator = stack.procs["orchestrator"]
    await asyncio.to_thread(orchestrator.stop)
    home = orchestrator.env["HERMES_HOME"]
    for suffix in ("", "-wal", "-shm"):
        (tmp_path.__class__(home) / f"orchestrator.db{suffix}").unlink(missing_ok=True)
    await start_ready(orchestrator)
    assert await wait_until(lambda: _export_equal(stack, sft), timeout_s=20, interval_s=0.3)


async def _export_equal(stack: Stack, expected: str) -> bool:
    try:
        return await export(stack, "sft") == expected
    except AssertionError:
        return False


async def export(stack: Stack, kind: str, **params: str) -> str:
    response = await stack.http.get(f"{stack.url}/api/export/{kind}", params=params)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/x-ndjson")
    return response.text


async def test_the_hermes_model_runs_draft_questions_and_draft_2(stack: Stack) -> None:
    api = client(stack)
    first = await api.chat.completions.create(
        model="hermes", user="idea-1", messages=[{"role": "user", "content": "help me plan a garden"}]
    )
    text = first.choices[0].message.content
    assert text.startswith(REPLY) and "1. " in text and "answer in your next message" in text
    with pytest.raises(openai.BadRequestError) as unnumbered:
        await api.chat.completions.create(
            model="hermes", user="idea-1", messages=[{"role": "user", "content": "99. no such question"}]
        )
    assert unnumbered.value.code == "no_answers"  # refused at once, the thread still waits
    answered = await api.chat.completions.create(
        model="hermes",
        user="idea-1",
        messages=[
            {"role": "user", "content": "help me plan a garden"},
            {"role": "assistant", "content": text},
            {"role": "user", "content": "1. vegetables for my family"},
        ],
    )
    assert answered.choices[0].message.content == REPLY
    draft2_prompt = stack.model.chat_requests()[-1].body["messages"][1]["content"]
    assert "vegetables for my family" in draft2_prompt  # the answer reached draft 2's prompt


async def test_editable_settings_apply_to_the_next_turn(stack: Stack) -> None:
    listed = {s["key"]: s for s in (await stack.call("GET", "/api/config"))["settings"]}
    tokens = listed["hermes.draft.max_tokens"]
    assert tokens["env"] == "HERMES_DRAFT_MAX_TOKENS" and tokens["value"] == tokens["default"] and not tokens["changed"]
    assert all(s["user_editable"] for s in listed.values())
    assert not any(s["env"].endswith(("_KEY", "_API_TOKENS", "_BOT_TOKEN", "_SECRET")) for s in listed.values())

    changed = await stack.call("PATCH", "/api/config/hermes.draft.max_tokens", json={"value": 33})
    assert changed["value"] == 33 and changed["changed"]
    api = client(stack)
    await api.chat.completions.create(model="fake", messages=[{"role": "user", "content": "short please"}])
    assert stack.model.chat_requests()[-1].body["max_tokens"] == 33  # the turn used the user's value

    refused = await stack.call("PATCH", "/api/config/hermes.draft.max_tokens", 400, json={"value": 10**9})
    assert refused["code"] == "bad_request" and "between" in refused["message"]
    assert (await stack.call("PATCH", "/api/config/llm.api_key", 404, json={"value": "x"}))["code"] == "unknown_setting"
    back = await stack.call("PATCH", "/api/config/hermes.draft.max_tokens", json={"value": None})
    assert back["value"] == tokens["default"] and not back["changed"]


async def test_a_live_view_opened_late_still_gets_every_token(stack: Stack) -> None:
    """Token deltas travel on core NATS, which keeps nothing: the gateway keeps the running jobs' deltas, so a
    thread's SSE stream opened after draft 1 began streaming still starts at the first token, each once."""
    text = "one two three four five six seven eight nine ten"
    stack.model.reply = Reply(text=text, chunk_delay_s=0.1)
    nc = await nats.connect(stack.procs["gateway"].env["NATS_URL"])
    heard: list[int] = []
    try:
        thread_id = (await stack.call("POST", "/api/submit", 202, json={"idea": "plan a late view"}))["thread_id"]

        async def hear(msg) -> None:  # noqa: ANN001
            heard.append(json.loads(msg.data)["seq"])

        await nc.subscribe(f"hermes.tokens.{thread_id}.*", cb=hear)
        await wait_until(lambda: len(heard) >= 3, timeout_s=20)  # the stream is well under way
    finally:
        await nc.close()
    tokens, draft = [], None
    async with stack.http.stream("GET", f"{stack.url}/api/threads/{thread_id}/events", timeout=30) as response:
        kind = None
        async for line in response.aiter_lines():
            if line.startswith("event:"):
                kind = line.split(":", 1)[1].strip()
            elif line.startswith("data:") and kind == "token":
                tokens.append(json.loads(line[5:]))
            elif line.startswith("data:") and kind == "draft_presented":
                draft = json.loads(line[5:])
                break
    assert draft is not None and draft["text"] == text
    mine = [t for t in tokens if t["job_id"] == draft["job_id"]]
    assert [t["seq"] for t in mine] == list(range(len(mine))) and len(mine) >= len(text.split())
    assert "".join(t["text"] for t in mine) == text


TOKENS = "ann:user:ann-token-0123456789abcdef,bob:user:bob-token-0123456789abcdef,eve:guest:eve-token-0123456789ab"


@pytest.fixture
async def guarded(bus_env, tmp_path):
    from test_learn_preferences import make_stack

    async for s in make_stack(bus_env, tmp_path, HERMES_API_TOKENS=TOKENS):
        yield s


async def test_with_auth_sessions_belong_to_their_token(guarded: Stack) -> None:
    """The same session id sent by two tokens makes two sessions; neither can read the other's, and the OpenAI
    SDK sees OpenAI's errors for a wrong token and for a guest."""

    def as_(token: str) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=guarded.url + "/v1", api_key=token, max_retries=0, timeout=30)

    ask = {"model": "fake", "user": "shared-id", "messages": [{"role": "user", "content": "my secret garden plan"}]}
    ann = await as_("ann-token-0123456789abcdef").chat.completions.with_raw_response.create(**ask)
    bob = await as_("bob-token-0123456789abcdef").chat.completions.with_raw_response.create(**ask)
    ann_session, bob_session = ann.headers["x-hermes-thread-id"], bob.headers["x-hermes-thread-id"]
    assert ann_session != bob_session

    def get(path: str, token: str, **params):  # noqa: ANN202
        return guarded.http.get(guarded.url + path, params=params, headers={"Authorization": f"Bearer {token}"})

    assert (await get(f"/api/sessions/{ann_session}", "ann-token-0123456789abcdef")).status_code == 200
    denied = await get(f"/api/sessions/{ann_session}", "bob-token-0123456789abcdef")
    assert denied.status_code == 404 and "secret garden" not in denied.text
    listed = (await get("/api/sessions", "bob-token-0123456789abcdef")).json()["data"]["sessions"]
    assert [s["session_id"] for s in listed] == [bob_session]
    hits = (await get("/api/memory/search", "bob-token-0123456789abcdef", q="secret garden")).json()["data"]["hits"]
    assert {h["session_id"] for h in hits} == {bob_session}
    assert (await get("/api/export/sft", "eve-token-0123456789ab")).status_code == 403  # guests never export

    with pytest.raises(openai.AuthenticationError) as wrong:
        await as_("not-a-token").chat.completions.create(**ask)
    assert wrong.value.code == "unauthorized" and wrong.value.body["type"] == "authentication_error"
    with pytest.raises(openai.PermissionDeniedError) as guest:
        await as_("eve-token-0123456789ab").chat.completions.create(**ask)
    assert guest.value.code == "read_only"
    assert [m.id for m in (await as_("eve-token-0123456789ab").models.list()).data][0] == "hermes"  # reads are fine
