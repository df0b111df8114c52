"""Learned preferences in Telegram, through the real bus: a Telegram thread shows what it assumed instead of asking,
and ``/correct <key> <value>`` corrects it at the learner.

The stack of tests/integration/test_telegram_channel.py (orchestrator, learner, router, edge and notifier as real processes, a
loopback model and the loopback Bot API). The user's preferences are set the way ``POST /api/learn/preferences``
sets them: a ``SetPreference`` request to the learner on ``hermes.control.preference`` (confidence 0.9 at once).
"""

from __future__ import annotations

from conftest import stored_events, wait_until
from test_telegram_channel import CHAT_A, STRANGER, Stack, _inbox_drained, _of, stack  # noqa: F401 (fixture)

from hermes_proto import subjects
from hermes_proto.events import PreferenceLearned
from hermes_proto.queries import PreferencesQuery, PreferencesReply, PreferenceView, SetPreference
from hermes_proto.rpc import ask

from hermes_notifier.domain import percent

USER = f"telegram:{CHAT_A}"
"""The Hermes user of CHAT_A's messages (the fake Bot API's sender is the chat's own id)."""
BUDGET = "under 500 € (approx.) - flexible! [not] *firm*"
"""A constraint in the user's own words, full of MarkdownV2's reserved characters."""


async def set_preference(nc, category: str, key: str, value: str) -> PreferenceView:
    reply = await ask(
        nc,
        "The learner",
        subjects.CONTROL_PREFERENCE,
        SetPreference(user_id=USER, category=category, key=key, value=value),
        PreferencesReply,
        10,
    )
    return reply.preferences[0]


async def corrections_of(js, preference: PreferenceView) -> list[PreferenceLearned]:
    events = await stored_events(js, f"hermes.evt.preference.{preference.preference_id}.>")
    return [e for e in events if isinstance(e, PreferenceLearned) and e.evidence == "correction"]


async def test_a_telegram_thread_shows_its_assumptions_and_correct_changes_one(stack: Stack, js_client):  # noqa: F811
    nc, js = js_client
    depth = await set_preference(nc, "depth", "depth", "detailed")
    await set_preference(nc, "constraint", "budget", BUDGET)
    telegram = stack.telegram
    telegram.push_text(CHAT_A, "Plan a balcony garden")

    # Depth and the budget answer the scope and constraint questions: assumed, shown before the questions.
    assumed = await stack.message(CHAT_A, lambda m: m["text"].startswith("I assumed: "), timeout_s=60)
    assert "Depth: detailed (90%)" in assumed["text"] and f"Budget: {BUDGET} (90%)" in assumed["text"]
    assert assumed["text"].endswith("Wrong? /correct <key> <value> (key: budget, depth)")
    [thread_id] = await stack.threads_of(CHAT_A)
    [proposed] = await wait_until(lambda: _of(stack.js, thread_id, "questions_proposed"), timeout_s=30)
    assert {a.key for a in proposed.assumptions} == {"depth", "budget"}
    assert proposed.questions and not {q.slot for q in proposed.questions} & {"depth", "budget"}
    questions = await wait_until(
        lambda: [m for m in telegram.messages_to(CHAT_A) if "Question " in m["text"]] or None, timeout_s=30
    )
    assert assumed["message_id"] < questions[0]["message_id"]

    # /correct weighs the correction against the stated value: the learner holds less confidence in it.
    telegram.push_text(CHAT_A, "/correct depth overview")
    replied = await stack.message(CHAT_A, lambda m: m["text"].startswith(("Corrected: Depth", "Noted: Depth")))
    [correction] = await wait_until(lambda: corrections_of(js, depth), timeout_s=15)
    assert correction.user_id == USER and correction.confidence < depth.confidence
    assert correction.votes.get("overview", 0) > 0
    held = (
        await ask(nc, "The learner", subjects.QUERY_PREFERENCES, PreferencesQuery(user_id=USER), PreferencesReply, 10)
    ).preferences
    now = next(p for p in held if p.key == "depth")
    assert (now.value, now.confidence, now.corrections) == (correction.value, correction.confidence, 1)
    verb = "Corrected: Depth is now" if now.value == "overview" else "Noted: Depth stays"
    assert (
        replied["text"].startswith(f"{verb} {now.value}") and f"Confidence {percent(now.confidence)}" in replied["text"]
    )

    # Bad input gets a usage message; a chat that is not allowed corrects nothing.
    telegram.push_text(CHAT_A, "/correct mood! sunny")
    await stack.message(CHAT_A, lambda m: m["text"].startswith("There is no preference called mood!"))
    telegram.push_text(STRANGER, "/correct depth comprehensive")
    await stack.message(STRANGER, lambda m: "private" in m["text"])
    await wait_until(lambda: _inbox_drained(js, 4), timeout_s=20)
    assert len(await corrections_of(js, depth)) == 1
    assert len(telegram.messages_to(STRANGER)) == 1
