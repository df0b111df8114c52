"""Telegram as a full channel, through the real bus: ideas, answers, ratings and commands from the phone.

The orchestrator, learner, backend-router, talos-edge and notifier run as real processes against a real
nats-server, an OpenAI-compatible loopback model (tests/fakes/llm_servers.py) and the loopback Bot API
(tests/fakes/telegram_api.py), which the notifier long-polls with ``getUpdates``. What a user would see is read
from the fake's chats (texts after MarkdownV2 parsing, buttons, edits); what Hermes did from the log."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import stored_events, thread_events, wait_until
from fakes.llm_servers import FakeOpenAIServer, Reply
from fakes.telegram_api import FakeTelegramServer, parse_markdown_v2
from procs import ServiceProcess, model_env, service_processes, start_ready

from hermes_proto import subjects
from hermes_proto.events import NotificationSent, ThreadOpened

from hermes_cli.natsserver import free_port

TOKEN = "555111:channel-test-SECRET"
CHAT_A, CHAT_B, STRANGER = 4101, 4202, 9909
SPECIAL = "Budget_v2 *bold* [link](x) ~strike~ `code` > #tag +1 -1 =2 |pipe| {a} 3.5! back\\slash"
WORDS = [f"word{i} " for i in range(12)] + [SPECIAL + " "] + [f"word{i} " for i in range(12, 24)]
"""Draft text as the model streams it: MarkdownV2's reserved characters must reach the chat as written."""


@dataclass
class Stack:
    js: object
    procs: dict[str, ServiceProcess]
    model: FakeOpenAIServer
    telegram: FakeTelegramServer

    async def start(self, name: str) -> None:
        await start_ready(self.procs[name])

    def texts(self, chat: int) -> list[str]:
        return [m["text"] for m in self.telegram.messages_to(chat)]

    async def message(self, chat: int, predicate, timeout_s: float = 30) -> dict:
        """The first message in ``chat`` (as edited so far) for which ``predicate(message)`` holds."""

        def found():
            return next((m for m in self.telegram.messages_to(chat) if predicate(m)), None)

        return await wait_until(found, timeout_s=timeout_s, interval_s=0.1)

    async def threads_of(self, chat: int) -> list[str]:
        opened = await stored_events(self.js, subjects.event_type_filter(ThreadOpened))
        return [e.aggregate_id for e in opened if e.origin.get("telegram_chat_id") == str(chat)]


@pytest.fixture
async def stack(js_client, bus_env, tmp_path: Path) -> AsyncIterator[Stack]:
    _, js = js_client
    model = await FakeOpenAIServer(reply=Reply(chunks=WORDS, chunk_delay_s=0.15), models=["fake"]).start()
    async with FakeTelegramServer(token=TOKEN) as telegram:
        env = dict(
            bus_env,
            **model_env(model.port),
            METRICS_PORT="0",
            HERMES_MAX_QUESTIONS="2",
            HERMES_ANSWER_TIMEOUT_SECONDS="300",
            HERMES_EDGE_HEARTBEAT_S="0.5",
            TELEGRAM_BOT_TOKEN=TOKEN,
            TELEGRAM_CHAT_ID=str(CHAT_A),
            TELEGRAM_ALLOWED_CHAT_IDS=f"{CHAT_A},{CHAT_B}",
            TELEGRAM_API_BASE_URL=telegram.api_base_url,
            TELEGRAM_POLL_TIMEOUT_S="2",
            TELEGRAM_STREAM_INTERVAL_S="0.3",
            TELEGRAM_RETRY_BACKOFF_S="0.2",
            HERMES_WEB_BASE_URL="http://hermes.test",
        )
        procs = service_processes(env, tmp_path / "logs", ("orchestrator", "learner", "router", "edge", "notifier"))
        stack = Stack(js, procs, model, telegram)
        try:
            await asyncio.gather(*(stack.start(name) for name in procs))
            yield stack
        finally:
            await asyncio.gather(*(asyncio.to_thread(p.stop) for p in procs.values()))
            await model.stop()


def reply_to(telegram: FakeTelegramServer, chat: int, question: dict, text: str) -> None:
    """The user replies to ``question`` (a message the bot sent) with ``text``."""
    update = telegram.push_text(chat, text)
    update["message"]["reply_to_message"] = question  # same tick as the push: no poll can see it without


def buttons(message: dict) -> list[tuple[str, str]]:
    rows = (message.get("reply_markup") or {}).get("inline_keyboard", [])
    return [(b["text"], b["callback_data"]) for row in rows for b in row]


async def test_an_idea_from_the_phone_streams_asks_and_refines(stack: Stack):
    telegram = stack.telegram
    idea = f"Plan a balcony garden. {SPECIAL}"
    telegram.push_text(CHAT_A, idea)

    ack = await stack.message(CHAT_A, lambda m: m["text"].startswith(("Got it", "Draft 1")))
    first_text = next(c.params["text"] for c in telegram.calls_to("sendMessage") if c.status == 200)
    assert first_text.startswith("*Got it") and idea not in first_text  # sent as escaped MarkdownV2 ...
    assert idea in parse_markdown_v2(first_text)[0]  # ... which Telegram parses back to the idea as written
    # Draft 1 streams into that message: several edits, each showing more, then the whole draft with its origin.
    final = await stack.message(
        CHAT_A, lambda m: m["message_id"] == ack["message_id"] and m["text"].startswith("Draft 1\n"), timeout_s=60
    )
    edits = [
        c
        for c in telegram.calls_to("editMessageText")
        if str(c.params.get("message_id")) == str(ack["message_id"]) and c.status == 200
    ]
    assert len(edits) >= 3, f"draft 1 should stream in place, got {len(edits)} edits"
    assert "".join(WORDS).strip() in final["text"] and "talos · fake" in final["text"]

    thread_id = (await stack.threads_of(CHAT_A))[0]
    # Questions arrive one message each, with suggestion buttons; the last has "done".
    questions = await wait_until(
        lambda: (
            [m for m in telegram.messages_to(CHAT_A) if "Question " in m["text"] and f"thread {thread_id}" in m["text"]]
            or None
        ),
        timeout_s=30,
    )
    proposed = [e for e in await thread_events(stack.js, thread_id) if e.type_name() == "questions_proposed"][0]
    await wait_until(
        lambda: len([m for m in telegram.messages_to(CHAT_A) if "Question " in m["text"]]) == len(proposed.questions),
        timeout_s=15,
    )
    questions = [m for m in telegram.messages_to(CHAT_A) if "Question " in m["text"]]
    first = questions[0]
    answer_buttons = [data for _, data in buttons(first) if data.startswith("a:")]
    chosen = proposed.questions[0].suggestions[0] if proposed.questions[0].suggestions else None

    # Answer the first by button (when it has suggestions), the rest in free text as replies.
    if answer_buttons:
        telegram.push_callback(CHAT_A, answer_buttons[0], message_id=first["message_id"])
    else:
        reply_to(telegram, CHAT_A, first, "For my family")
        chosen = "For my family"
    for index, question in enumerate(questions[1:], start=2):
        reply_to(telegram, CHAT_A, question, f"My answer {index}: under 50 euros, done by May!")

    events = await wait_until(lambda: _ended(stack.js, thread_id), timeout_s=90)
    kinds = [e.type_name() for e in events]
    collected = [e for e in events if e.type_name() == "answer_collected"]
    assert len(collected) == len(proposed.questions)
    recorded = next(e for e in events if e.type_name() == "answers_recorded")
    assert {a.text for a in recorded.answers} >= {chosen}
    completed = next(e for e in events if e.type_name() == "thread_completed")
    assert completed.reason == "answered" and completed.final_draft_number == 2 and "draft_presented" in kinds
    # Draft 2's prompt carried the answers (the model server saw them).
    prompts = [str(r.body) for r in stack.model.requests if r.path.endswith("/chat/completions")]
    assert any("under 50 euros" in p for p in prompts)
    assert telegram.callback_answers, "the button press was acknowledged"

    done = await stack.message(CHAT_A, lambda m: m["text"].startswith("Hermes finished your idea"))
    assert f"/#thread={thread_id}" in done["text"]
    rate = dict((label, data) for label, data in buttons(done)).get("5★")
    assert rate is not None, "the finished thread offers rating buttons"
    telegram.push_callback(CHAT_A, rate, message_id=done["message_id"])
    rated = await wait_until(lambda: _of(stack.js, thread_id, "thread_rated"), timeout_s=20)
    assert rated[0].rating == 5
    # Nothing of this thread reached the other chat.
    assert not telegram.messages_to(CHAT_B)


async def test_commands_answer_in_the_chat(stack: Stack):
    telegram = stack.telegram
    telegram.push_text(CHAT_B, "/status")
    await stack.message(CHAT_B, lambda m: m["text"].startswith("No threads in this chat yet"))
    telegram.push_text(CHAT_B, "/idea Write a haiku about autumn rain")
    thread_id = await wait_until(lambda: _first(stack.threads_of(CHAT_B)), timeout_s=20)
    telegram.push_text(CHAT_B, "/cancel")
    stopping = await stack.message(CHAT_B, lambda m: m["text"].startswith(("Stopping", "Nothing is running")))
    if stopping["text"].startswith("Stopping"):
        await wait_until(lambda: _of(stack.js, thread_id, "job_cancelled"), timeout_s=20)
    telegram.push_text(CHAT_B, "/status")
    status = await stack.message(CHAT_B, lambda m: m["text"].startswith(f"Thread {thread_id}"))
    assert "haiku" in status["text"] and f"/#thread={thread_id}" in status["text"]
    telegram.push_text(CHAT_A, "/idea A private plan for chat A only")
    other = await wait_until(lambda: _first(stack.threads_of(CHAT_A)), timeout_s=20)
    telegram.push_text(CHAT_B, "/threads")
    listed = await stack.message(CHAT_B, lambda m: m["text"].startswith("Your last"))
    assert thread_id in listed["text"] and other not in listed["text"] and "chat A" not in listed["text"]
    telegram.push_text(CHAT_B, "/backends")
    backends = await stack.message(CHAT_B, lambda m: m["text"].startswith("Backends"))
    assert "talos" in backends["text"]
    telegram.push_text(CHAT_B, "/budget")
    await stack.message(CHAT_B, lambda m: m["text"].startswith("Spend today"))
    telegram.push_text(CHAT_B, "/rate 9")
    await stack.message(CHAT_B, lambda m: "number from 1 to 5" in m["text"])
    telegram.push_text(CHAT_B, "/nonsense")
    await stack.message(CHAT_B, lambda m: m["text"].startswith("I don't know /nonsense"))
    # Chat B cannot touch chat A's threads, by command or with hand-made button data.
    telegram.push_text(CHAT_B, f"/status {other}")
    await stack.message(CHAT_B, lambda m: m["text"].startswith("That thread is not one of this chat's"))
    telegram.push_callback(CHAT_B, f"r:{other}:1")
    telegram.push_callback(CHAT_B, f"a:{other}:0:0")
    await wait_until(
        lambda: sum(m["text"].startswith("That thread is not") for m in telegram.messages_to(CHAT_B)) == 3 or None,
        timeout_s=20,
    )
    assert not [
        e for e in await thread_events(stack.js, other) if e.type_name() in ("thread_rated", "answer_collected")
    ]
    assert not any(thread_id in m["text"] for m in telegram.messages_to(CHAT_A))


async def test_a_stranger_gets_one_refusal_ever(stack: Stack):
    telegram = stack.telegram
    for text in ("hello", "/idea plan my week", "/status"):
        telegram.push_text(STRANGER, text)
    await stack.message(STRANGER, lambda m: "private" in m["text"])
    stack.procs["notifier"].kill()
    stack.procs["notifier"].proc.wait(10)
    await stack.start("notifier")
    telegram.push_text(STRANGER, "are you there?")
    await wait_until(lambda: _inbox_drained(stack.js, 4), timeout_s=20)  # all four updates handled
    assert len(telegram.messages_to(STRANGER)) == 1
    assert not await stack.threads_of(STRANGER)


async def test_two_chats_stay_apart_across_a_notifier_kill(stack: Stack):
    """Both chats send ideas at once; the notifier is SIGKILLed mid-way and restarted. Every message lands in
    the chat its thread came from, and no message is sent twice: each one Telegram got is exactly one recorded
    ``notification_sent`` (by chat and message id)."""
    telegram = stack.telegram
    for n in range(3):
        telegram.push_text(CHAT_A, f"Idea A{n}: a picnic menu for {n + 4} people")
        telegram.push_text(CHAT_B, f"Idea B{n}: a reading list on {['bees', 'rivers', 'clouds'][n]}")
    await wait_until(lambda: len(telegram.calls_to("editMessageText")) >= 2 or None, timeout_s=30)
    stack.procs["notifier"].kill()
    stack.procs["notifier"].proc.wait(10)
    await asyncio.sleep(1)
    await stack.start("notifier")

    threads = {
        chat: await wait_until(lambda c=chat: _at_least(stack.threads_of(c), 3), timeout_s=30)
        for chat in (CHAT_A, CHAT_B)
    }
    for chat, ids in threads.items():  # each thread gets to its questions (draft 1 shown, every question sent)
        for thread_id in ids:
            proposed = await wait_until(lambda t=thread_id: _of(stack.js, t, "questions_proposed"), timeout_s=120)
            await wait_until(
                lambda t=thread_id, c=chat, n=len(proposed[0].questions): len(_questions_shown(stack, c, t)) >= n,
                timeout_s=60,
            )
    await asyncio.sleep(1)  # a repeated message would come now
    records = await stored_events(stack.js, subjects.event_type_filter(NotificationSent))
    sent = Counter()
    for record in records:
        for message_id in (record.external_id or "").split(","):
            if message_id and record.channel == "telegram":
                sent[(record.recipient, int(message_id))] += 1
    for chat, ids in threads.items():
        other = CHAT_B if chat == CHAT_A else CHAT_A
        own_records = [r for r in records if r.aggregate_id in ids]
        assert own_records and all(r.recipient == str(chat) for r in own_records)
        texts = stack.texts(chat)
        assert all(f"thread {t}" not in text for text in texts for t in threads[other])
        for message in telegram.messages_to(chat):  # every message Telegram holds was recorded once
            assert sent[(str(chat), message["message_id"])] >= 1, message["text"]
        assert sum(1 for t in texts if t.startswith(("Got it", "Draft 1"))) == 3
        for thread_id in ids:  # exactly one message per question: none lost, none repeated by the restart
            proposed = await _of(stack.js, thread_id, "questions_proposed")
            assert len(_questions_shown(stack, chat, thread_id)) == len(proposed[0].questions) > 0


async def _inbox_drained(js, handled: int) -> bool:
    info = await js.consumer_info(subjects.INBOX_STREAM, "notifier-inbox")
    return info.delivered.stream_seq >= handled and info.num_pending == 0 and info.num_ack_pending == 0


async def _ended(js, thread_id: str):
    events = await thread_events(js, thread_id)
    return events if any(e.type_name() in ("thread_completed", "thread_failed") for e in events) else None


async def _of(js, thread_id: str, type_name: str):
    return [e for e in await thread_events(js, thread_id) if e.type_name() == type_name] or None


async def _first(awaitable):
    found = await awaitable
    return found[0] if found else None


async def _at_least(awaitable, n: int):
    found = await awaitable
    return found if len(found) >= n else None


def _questions_shown(stack: Stack, chat: int, thread_id: str) -> list[str]:
    return [text for text in stack.texts(chat) if f"· thread {thread_id}" in text]


async def test_webhook_mode_end_to_end(js_client, bus_env, tmp_path: Path):
    """TELEGRAM_UPDATES=webhook: the notifier registers the webhook (with its secret) on the Bot API; Telegram
    POSTs each update to the gateway's route, which stores it in HERMES_INBOX; the notifier answers in the chat."""
    secret = "webhook-secret_0123456789"
    async with FakeTelegramServer(token=TOKEN) as telegram:
        env = dict(
            bus_env,
            METRICS_PORT="0",
            HERMES_WEB_PORT=str(free_port()),
            TELEGRAM_BOT_TOKEN=TOKEN,
            TELEGRAM_CHAT_ID=str(CHAT_A),
            TELEGRAM_API_BASE_URL=telegram.api_base_url,
            TELEGRAM_UPDATES="webhook",
            TELEGRAM_WEBHOOK_URL="https://hermes.example.test/api/telegram/webhook",
            TELEGRAM_WEBHOOK_SECRET=secret,
        )
        procs = service_processes(env, tmp_path / "logs", ("gateway", "notifier"))
        stack = Stack(js_client[1], procs, None, telegram)  # type: ignore[arg-type]
        try:
            await asyncio.gather(*(stack.start(name) for name in procs))
            await wait_until(lambda: telegram.webhook_url or None, timeout_s=20)
            assert telegram.webhook_secret_token == secret
            telegram.webhook_delivery_url = f"http://127.0.0.1:{env['HERMES_WEB_PORT']}/api/telegram/webhook"
            telegram.push_text(CHAT_A, "/help")
            telegram.push_text(STRANGER, "/help")
            await stack.message(CHAT_A, lambda m: m["text"].startswith("Hermes\n"), timeout_s=20)
            await stack.message(STRANGER, lambda m: "private" in m["text"], timeout_s=20)
            assert not telegram.calls_to("getUpdates")  # no polling while the webhook is set
            assert {status for _, status in telegram.webhook_deliveries} == {200}
        finally:
            await asyncio.gather(*(asyncio.to_thread(p.stop) for p in procs.values()))


async def test_ideas_from_telegram_obey_the_queue_cap(stack: Stack):
    """With HERMES_MAX_QUEUED_JOBS=1 and one job running, a second idea from the phone is refused with a
    message (and the minute's QueueFull for the alert), as the gateway refuses with 429."""
    notifier = stack.procs["notifier"]
    notifier.stop()
    notifier.env = dict(notifier.env, HERMES_MAX_QUEUED_JOBS="1", HERMES_QUEUE_FULL_RETRY_AFTER_SECONDS="7")
    await stack.start("notifier")
    telegram = stack.telegram
    telegram.push_text(CHAT_A, "First idea: a reading list on bees")
    first = await wait_until(lambda: _first(stack.threads_of(CHAT_A)), timeout_s=20)
    await wait_until(lambda: _of(stack.js, first, "execution_started"), timeout_s=20)
    telegram.push_text(CHAT_A, "Second idea: a reading list on rivers")
    busy = await stack.message(CHAT_A, lambda m: m["text"].startswith("Hermes is busy"))
    assert "limit 1" in busy["text"] and "again in 7 s" in busy["text"]
    assert await stack.threads_of(CHAT_A) == [first]
    queue_full = await stored_events(stack.js, "hermes.evt.system.queue.queue_full")
    assert queue_full and queue_full[-1].limit == 1
