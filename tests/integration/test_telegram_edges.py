# ruff: noqa: F811  (the stack fixture is imported from test_telegram_channel and requested by name)
"""Telegram channel edge cases, through the real bus: a draft too long for one message, ``/done`` with only some
answers, flood control while draft 1 streams, malformed updates from ``getUpdates``, stale button data.

Same stack as tests/integration/test_telegram_channel.py (its ``stack`` fixture: orchestrator, learner, router, edge and
notifier as real processes, the loopback model server and the loopback Bot API the notifier long-polls). What a
user would see is read from the fake's chats and calls (texts after MarkdownV2 parsing); what Hermes did from
the log."""

from __future__ import annotations

import re

from conftest import stored_dead_letters, thread_events, wait_until
from fakes.llm_servers import Reply
from fakes.telegram_api import TEXT_LIMIT, ApiCall, parse_markdown_v2
from test_telegram_channel import CHAT_A, SPECIAL, Stack, _at_least, buttons, reply_to, stack  # noqa: F401 (fixture)

from hermes_proto import subjects

FLOOD_WAIT_S = 2
CLOCK_SLACK_S = 0.05
"""Tolerance when comparing the fake's receive times with a flood wait (both are this machine's monotonic
clock; the notifier starts its pause only after the 429 reached it, so a correct pause never comes out short)."""


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def long_draft() -> str:
    """About 12 600 characters in three sections, so splitting needs every kind of cut: paragraphs (~2 200
    characters in all), then ~4 700 characters of lines with no blank line between them, then ~5 700
    characters on one line. Full of MarkdownV2's reserved characters, with emoji (two UTF-16 units each, a ZWJ
    sequence and a flag among them)."""
    paragraphs = [f"Paragraph {n} 🌱: {SPECIAL} " + " ".join(f"p{n}w{i}!" for i in range(40)) for n in range(6)]
    lines = [f"- line {n}: water_{n} *twice* (a.m.) ~ #{n} 👩‍🌾 = {n}% | [x]" for n in range(80)]
    words = " ".join(f"w{i}.{{x}}_🇩🇪" if i % 50 == 0 else f"w{i}.{{x}}" for i in range(640))
    return "\n\n".join(paragraphs) + "\n\n" + "\n".join(lines) + "\n\n" + words


def chopped(text: str, size: int) -> list[str]:
    """``text`` as the model streams it: pieces of ``size`` characters (never mind word boundaries)."""
    return [text[i : i + size] for i in range(0, len(text), size)]


def plain(call: ApiCall) -> str:
    """The text of a sendMessage/editMessageText call as Telegram parses it."""
    return parse_markdown_v2(str(call.params["text"]))[0]


def edits_in(stack: Stack, chat: int) -> list[ApiCall]:
    return [c for c in stack.telegram.calls_to("editMessageText") if str(c.params.get("chat_id")) == str(chat)]


def streaming(call: ApiCall) -> bool:
    return plain(call).startswith("Draft 1 (writing")


async def events_of(stack: Stack, thread_id: str, type_name: str) -> list:
    return [e for e in await thread_events(stack.js, thread_id) if e.type_name() == type_name]


async def new_thread(stack: Stack, chat: int) -> str:
    async def first():
        threads = await stack.threads_of(chat)
        return threads[0] if threads else None

    return await wait_until(first, timeout_s=20)


async def test_a_draft_longer_than_one_message_arrives_whole_in_order(stack: Stack):
    """Draft 1 of ~12 500 characters: its first part goes into the "Got it" message, the rest follow as new
    messages in order, each at most 4096 UTF-16 units as parsed, and together they hold the draft exactly (only
    the whitespace at each cut is dropped; cuts fall on paragraph, then line, then word boundaries)."""
    telegram = stack.telegram
    draft = long_draft()
    stack.model.reply = Reply(chunks=chopped(draft, 100), chunk_delay_s=0.01)  # 125 chunks: under max_tokens
    telegram.push_text(CHAT_A, "Write me a long balcony garden handbook")
    ack = await stack.message(CHAT_A, lambda m: m["text"].startswith(("Got it", "Draft 1")))
    thread_id = await new_thread(stack, CHAT_A)

    async def draft_record():
        sent = [r for r in await events_of(stack, thread_id, "notification_sent") if r.kind == "draft_presented"]
        return sent[0] if sent else None

    record = await wait_until(draft_record, timeout_s=40)
    ids = [int(i) for i in record.external_id.split(",")]
    assert ids[0] == ack["message_id"] and len(ids) >= 4, ids
    in_chat = telegram.messages_to(CHAT_A)
    assert [m["message_id"] for m in in_chat][: len(ids)] == ids, "the parts follow the ack at once, in order"
    parts = [m["text"] for m in in_chat[: len(ids)]]
    assert parts[0].startswith("Draft 1\n\n") and parts[0] != "Draft 1", "the ack shows the draft itself"
    assert all(utf16_len(p) <= TEXT_LIMIT for p in parts), [utf16_len(p) for p in parts]

    footer = parts[-1].rsplit("\n", 1)[-1]
    assert footer.startswith("talos · fake · "), footer
    whole = f"Draft 1\n\n{draft.strip()}\n\n{footer}"
    cuts = re.fullmatch("(\n\n|\n| )".join(map(re.escape, parts)), whole)
    assert cuts is not None, "the parts, joined at whitespace, are the whole draft message"
    assert set(cuts.groups()) == {"\n\n", "\n", " "}, f"cuts at {cuts.groups()!r}"
    # Nothing Telegram refused on the way (an unescaped character, a part too long, a no-op edit while streaming).
    refused = [
        (c.method, c.status)
        for c in telegram.calls
        if c.method in ("sendMessage", "editMessageText")
        and str(c.params.get("chat_id")) == str(CHAT_A)
        and c.status != 200
    ]
    assert not refused, refused


async def test_done_with_one_answer_sends_it_and_closes_the_rest(stack: Stack):
    """``/done`` after answering one of several questions sends exactly that answer and draft 2 follows; a later
    reply to another question is told answers are closed and records nothing."""
    telegram = stack.telegram
    stack.model.reply = Reply(
        text="Grow herbs in three pots by the window and water them twice a week.", chunk_delay_s=0.02
    )
    telegram.push_text(CHAT_A, "help me plan a vegetable garden on my balcony")
    thread_id = await new_thread(stack, CHAT_A)
    proposed = (await wait_until(lambda: events_of(stack, thread_id, "questions_proposed"), timeout_s=40))[0]
    assert len(proposed.questions) >= 2, "the learner asks several questions of a vague idea"
    questions = await wait_until(lambda: _shown(stack, thread_id, len(proposed.questions)), timeout_s=20)

    answer = "Only this one: 2 people, *no* budget_cap (yet)!"
    reply_to(telegram, CHAT_A, questions[0], answer)
    await wait_until(lambda: events_of(stack, thread_id, "answer_collected"), timeout_s=20)
    telegram.push_text(CHAT_A, "/done")
    recorded = (await wait_until(lambda: events_of(stack, thread_id, "answers_recorded"), timeout_s=20))[0]
    assert [(a.question_id, a.text) for a in recorded.answers] == [(proposed.questions[0].question_id, answer)]
    await stack.message(CHAT_A, lambda m: m["text"].startswith("Thanks: 1 answer(s) sent"))
    drafts = await wait_until(lambda: _at_least(events_of(stack, thread_id, "draft_presented"), 2), timeout_s=40)
    assert [d.draft_number for d in drafts] == [1, 2]
    prompts = [str(r.body) for r in stack.model.requests if r.path.endswith("/chat/completions")]
    assert any("budget_cap" in p for p in prompts[1:]), "draft 2 was asked with the answer"

    reply_to(telegram, CHAT_A, questions[1], "A late answer to the second question")
    await stack.message(CHAT_A, lambda m: m["text"].startswith("Answers for this thread are closed"))
    collected = await events_of(stack, thread_id, "answer_collected")
    assert [(a.question_id, a.text) for a in collected] == [(proposed.questions[0].question_id, answer)]
    assert len(await events_of(stack, thread_id, "answers_recorded")) == 1


def _shown(stack: Stack, thread_id: str, count: int) -> list[dict] | None:
    """The question messages of ``thread_id``, once all ``count`` were sent."""
    shown = [m for m in stack.telegram.messages_to(CHAT_A) if f"· thread {thread_id}" in m["text"]]
    return shown if len(shown) >= count else None


async def test_flood_control_pauses_streaming_and_the_final_edit_waits_it_out(stack: Stack):
    """Telegram answers editMessageText with 429 retry_after=2 twice while draft 1 streams, then once more when
    the final draft is written: no streaming edit is tried in the chat until each wait is over, streaming goes
    on afterwards, and the final draft lands in the message after waiting out its own flood wait."""
    telegram = stack.telegram
    content = [f"Step {n}: sow_{n} [seeds] (row {n}). " for n in range(10)]
    # Empty chunks at the end: the text is complete some seconds before the model call ends, so the test can
    # ask for a flood wait on the final edit once the whole text has streamed.
    stack.model.reply = Reply(chunks=content + [""] * 4, chunk_delay_s=0.6)
    telegram.push_text(CHAT_A, "Plan a flood-proof garden")
    ack = await stack.message(CHAT_A, lambda m: m["text"].startswith("Got it"))
    await wait_until(
        lambda: any(c.status == 200 and streaming(c) for c in edits_in(stack, CHAT_A)) or None,
        timeout_s=20,
        interval_s=0.02,
    )
    telegram.fail_next(2, status=429, retry_after=FLOOD_WAIT_S, method="editMessageText")

    full = "".join(content).strip()
    await wait_until(
        lambda: any(c.status == 200 and streaming(c) and full in plain(c) for c in edits_in(stack, CHAT_A)) or None,
        timeout_s=30,
        interval_s=0.02,
    )
    assert [c.status for c in edits_in(stack, CHAT_A) if streaming(c)].count(429) == 2
    telegram.fail_next(1, status=429, retry_after=FLOOD_WAIT_S, method="editMessageText")
    final = await stack.message(
        CHAT_A, lambda m: m["message_id"] == ack["message_id"] and m["text"].startswith("Draft 1\n"), timeout_s=40
    )
    assert full in final["text"] and "talos · fake" in final["text"]

    edits = edits_in(stack, CHAT_A)
    assert all(str(c.params["message_id"]) == str(ack["message_id"]) for c in edits)
    streamed = [c for c in edits if streaming(c)]
    for flood in (c for c in streamed if c.status == 429):
        during = [
            c for c in streamed if flood.received_at < c.received_at < flood.received_at + FLOOD_WAIT_S - CLOCK_SLACK_S
        ]
        assert not during, f"{len(during)} streaming edit(s) tried within the flood wait"
    last_flood = max(c.received_at for c in streamed if c.status == 429)
    assert any(c.status == 200 and c.received_at > last_flood for c in streamed), "streaming went on after"
    written = [c for c in edits if not streaming(c)]
    assert [c.status for c in written] == [429, 200], "the final edit waited out its flood wait and succeeded"
    assert written[1].received_at - written[0].received_at >= FLOOD_WAIT_S - CLOCK_SLACK_S
    assert plain(written[1]) == final["text"]
    sent = [
        r
        for r in await events_of(stack, (await stack.threads_of(CHAT_A))[0], "notification_sent")
        if r.kind == "draft_presented"
    ]
    assert [r.external_id for r in sent] == [str(ack["message_id"])], "recorded once, in the ack message"


async def test_malformed_updates_do_not_stop_the_poller(stack: Stack):
    """Updates that are not Updates as documented are logged and dropped by the poller (they never reach the
    inbox, so nothing is dead-lettered for them), confirmed so Telegram stops sending them, and the messages
    around them are handled."""
    telegram = stack.telegram
    notifier = stack.procs["notifier"]
    stack.model.reply = Reply(text="Fine.", chunk_delay_s=0.0)
    bad = [telegram.push_update(message={"message_id": "x"})]  # no chat, and an id that is not a number
    await wait_until(lambda: notifier.log_text().count('"update_undecodable"') >= 1, timeout_s=20)
    telegram.push_text(CHAT_A, "/help")
    await stack.message(CHAT_A, lambda m: m["text"].startswith("Hermes\n"), timeout_s=20)

    # In one batch with good updates: a chat that is not an object, a message that is not one.
    bad.append(telegram.push_update(message={"message_id": 7, "chat": "nope", "text": "/status"}))
    telegram.push_text(CHAT_A, "/threads")
    bad.append(telegram.push_update(message="not an object"))
    # Decodable but from no chat (a button press without its message): nothing to answer, nothing to store.
    telegram.push_update(callback_query={"id": "77", "from": {"id": CHAT_A, "first_name": "T"}, "data": "d:x"})
    telegram.push_text(CHAT_A, "/status")
    # /threads and /status both answer "No threads in this chat yet" here.
    await wait_until(
        lambda: sum(t.startswith("No threads in this chat yet") for t in stack.texts(CHAT_A)) == 2 or None, timeout_s=20
    )

    # Confirmed: a later poll's offset is past them, and each was logged once (not polled again and again).
    last_bad = max(u["update_id"] for u in bad)
    await wait_until(
        lambda: any(int(c.params.get("offset") or 0) > last_bad for c in telegram.calls_to("getUpdates")) or None,
        timeout_s=20,
    )
    assert notifier.log_text().count('"update_undecodable"') == len(bad)
    assert notifier.alive()
    info = await stack.js.stream_info(subjects.INBOX_STREAM)
    assert info.state.last_seq == 3, "only the three good updates were stored"
    assert not [d for d in await stored_dead_letters(stack.js) if d.stream == subjects.INBOX_STREAM]


async def test_stale_button_data_is_refused_and_records_nothing(stack: Stack):
    """A press from an allowed chat with callback data naming a question or suggestion the thread does not
    offer (an old or hand-made button) gets a polite refusal and no ``answer_collected``."""
    telegram = stack.telegram
    stack.model.reply = Reply(text="Start with tomatoes and basil in deep pots.", chunk_delay_s=0.02)
    telegram.push_text(CHAT_A, "help me plan a vegetable garden on my balcony")
    thread_id = await new_thread(stack, CHAT_A)
    proposed = (await wait_until(lambda: events_of(stack, thread_id, "questions_proposed"), timeout_s=40))[0]
    shown = await wait_until(lambda: _shown(stack, thread_id, len(proposed.questions)), timeout_s=20)
    offered = len(proposed.questions[0].suggestions)

    telegram.push_callback(CHAT_A, f"a:{thread_id}:{len(proposed.questions)}:0", message_id=shown[0]["message_id"])
    telegram.push_callback(CHAT_A, f"a:{thread_id}:0:{offered}", message_id=shown[0]["message_id"])
    await stack.message(CHAT_A, lambda m: m["text"] == "That question is no longer open.")
    await stack.message(CHAT_A, lambda m: m["text"] == "That suggestion is not offered any more.")
    await wait_until(lambda: len(telegram.callback_answers) >= 2 or None, timeout_s=10)  # both presses handled
    assert not await events_of(stack, thread_id, "answer_collected")
    question = next(m for m in telegram.messages_to(CHAT_A) if m["message_id"] == shown[0]["message_id"])
    assert question["text"] == shown[0]["text"] and buttons(question) == buttons(shown[0]), "still open"
