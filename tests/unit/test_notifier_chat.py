"""The Telegram conversation's pure parts: what an inbound message or button asks for, and the texts sent."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from fakes.telegram_api import parse_markdown_v2

from hermes_proto.events import Assumption, Question, ThreadCompleted, preference_id
from hermes_proto.ids import derived_id
from hermes_proto.queries import (
    BackendsReply,
    BackendView,
    BudgetView,
    JobView,
    PreferenceView,
    QuestionView,
    ThreadView,
)

from hermes_notifier import chat, domain
from hermes_notifier.domain import split_text, utf16_len

THREAD = derived_id("telegram_thread", "42", "7")
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def questions(n: int = 3) -> list[Question]:
    return [
        Question(
            question_id=f"q{i}",
            template_id="t",
            category=cat,
            text=f"What about {cat}?",
            suggestions=[f"{cat} answer {j}" for j in range(3)],
        )
        for i, cat in zip(range(n), ("intent", "constraint", "scope"), strict=False)
    ]


@pytest.mark.parametrize(
    ("text", "kind", "value"),
    [
        ("Plan a balcony garden", "idea", "Plan a balcony garden"),
        ("/idea   Plan a garden\nwith herbs", "idea", "Plan a garden\nwith herbs"),
        ("/idea", "usage", None),
        ("/status", "command", "status"),
        ("/STATUS@hermes_test_bot abc", "command", "status"),
        ("/threads", "command", "threads"),
        ("/frobnicate", "usage", None),
        ("   ", "ignore", None),
        ("plan a \u202enedrag\u202c\u200f", "idea", "plan a nedrag"),  # no override reaches a thread
        ("/idea ＰＬＡＮ a garden", "idea", "PLAN a garden"),  # NFKC
        ("\u200b\u200d\ufeff", "usage", None),  # only invisible characters
        ("/idea \u200b", "usage", None),
    ],
)
def test_messages_become_intents(text, kind, value):
    intent = chat.parse_message(text, None, "hermes_test_bot")
    assert intent.kind == kind
    if kind == "idea":
        assert intent.text == value
    if kind == "command":
        assert intent.name == value


def test_a_command_for_another_bot_is_ignored():
    assert chat.parse_message("/status@other_bot", None, "hermes_test_bot").kind == "ignore"
    assert chat.parse_message("/status@Hermes_Test_Bot", None, "hermes_test_bot").kind == "command"


@pytest.mark.parametrize(("text", "rating", "thread"), [("/rate 4", 4, None), ("/rate 5 abc", 5, "abc")])
def test_rate_takes_one_to_five(text, rating, thread):
    intent = chat.parse_message(text, None)
    assert (intent.kind, intent.rating, intent.thread_id) == ("rate", rating, thread)


@pytest.mark.parametrize("text", ["/rate", "/rate 0", "/rate 6", "/rate five"])
def test_a_bad_rating_gets_usage(text):
    assert chat.parse_message(text, None).kind == "usage"


def test_a_reply_to_a_question_message_answers_that_question():
    qs = questions()
    text, _ = chat.question_message(THREAD, 1, qs)
    intent = chat.parse_message("On a budget of 50 euros", text)
    assert (intent.kind, intent.thread_id, intent.question, intent.text) == (
        "answer",
        THREAD,
        1,
        "On a budget of 50 euros",
    )
    # A reply to any other message is a new idea; a command in reply stays a command.
    assert chat.parse_message("Another idea", "Draft 1\n\nsome text").kind == "idea"
    assert chat.parse_message("/status", text).kind == "command"


def test_question_buttons_round_trip_and_fit_telegrams_limit():
    qs = questions()
    for index in range(len(qs)):
        _, keyboard = chat.question_message(THREAD, index, qs)
        datas = [data for row in keyboard for _, data in row]
        assert all(len(d.encode()) <= chat.CALLBACK_DATA_MAX_BYTES for d in datas)
        answers = [chat.parse_button(d) for d in datas if d.startswith("a:")]
        assert [(a.kind, a.thread_id, a.question, a.suggestion) for a in answers] == [
            ("answer", THREAD, index, j) for j in range(3)
        ]
        has_done = any(chat.parse_button(d).kind == "done" for d in datas)
        assert has_done == (index == len(qs) - 1)  # only the last question offers "done"
    rating = [chat.parse_button(d) for _, d in chat.rating_keyboard(THREAD)[0]]
    assert [(r.kind, r.rating) for r in rating] == [("rate", n) for n in range(1, 6)]


@pytest.mark.parametrize("data", [None, "", "x", "a:t:1", "a:t:x:1", "r:t:9", "r:t:0", "d", "zz:t"])
def test_foreign_button_data_is_ignored(data):
    assert chat.parse_button(data).kind == "ignore"


def test_too_long_thread_ids_get_no_buttons_rather_than_invalid_ones():
    long_id = "x" * 64
    _, keyboard = chat.question_message(long_id, 0, questions(1))
    assert keyboard == []
    assert chat.rating_keyboard(long_id) == []
    with pytest.raises(ValueError):
        chat.answer_button(long_id, 0, 0)


def test_render_escapes_every_reserved_character_and_bolds_the_first_line():
    special = "Cost: 5*3 = 15 (approx.) - see [notes]_v2_ ~old~ `code` > quote #tag +1 |x| {a} 1.5! \\ end"
    rendered = chat.render(f"Title_with.dots\n{special}")
    head, body = rendered.split("\n", 1)
    assert head.startswith("*") and head.endswith("*") and "\\_" in head and "\\." in head
    for char in "_*[]()~`>#+-=|{}.!":
        # every reserved character in the body is preceded by a backslash
        positions = [i for i, c in enumerate(body) if c == char]
        assert positions, char
        assert all(body[i - 1] == "\\" for i in positions), (char, body)
    assert chat.render("plain", bold_first_line=False) == "plain"


def thread_view(**kw) -> ThreadView:
    base = dict(
        thread_id=THREAD,
        idea="Plan a garden",
        channel="telegram",
        user_id="telegram:42",
        origin={"telegram_chat_id": "42"},
        status="awaiting_answers",
        created_at=NOW,
        updated_at=NOW,
        draft1="Draft text",
        questions=[
            QuestionView(question_id="q0", category="scope", text="?"),
            QuestionView(question_id="q1", category="scope", text="?", answer="yes"),
        ],
        jobs=[
            JobView(
                job_id="j1",
                thread_id=THREAD,
                kind="draft1",
                status="completed",
                backend="talos",
                model="smollm2",
                prompt_tokens=10,
                completion_tokens=32,
                latency_ms=1500.0,
                cost_cents=0.0125,
            )
        ],
    )
    base.update(kw)
    return ThreadView(**base)


def test_status_text_shows_state_jobs_cost_and_link():
    text = chat.status_text(thread_view(), "http://hermes.test")
    assert f"Thread {THREAD}: awaiting answers" in text
    assert "Questions: 1 of 2 answered" in text
    assert "draft1: completed on talos/smollm2, 42 tokens, 0.0125¢, 1.5 s" in text
    assert f"http://hermes.test/#thread={THREAD}" in text


def test_open_jobs_and_thread_list():
    running = thread_view(
        jobs=[
            JobView(job_id="j2", thread_id=THREAD, kind="draft2", status="running"),
            JobView(job_id="j1", thread_id=THREAD, kind="draft1", status="completed"),
        ]
    )
    assert chat.open_jobs(running) == ["j2"]
    assert "No threads" in chat.threads_text([])
    assert THREAD in chat.threads_text([running])


def test_budget_and_backends_texts():
    reply = BackendsReply(
        backends=[
            BackendView(
                name="talos",
                type="ollama",
                enabled=True,
                health="healthy",
                local=True,
                models=["smollm2"],
                scores={},
                in_flight=1,
                spend_today_cents=0.5,
            )
        ],
        budget=BudgetView(
            day="2026-11-23",
            spent_today_cents=12.5,
            daily_budget_cents=100.0,
            projects={"garden": 2.0},
            project_budgets_cents={"garden": 10.0},
        ),
        queued_jobs=3,
    )
    budget = chat.budget_text(reply)
    assert "12.5¢ of 100¢ ($1.00)" in budget and "garden: 2¢ of 10¢" in budget
    backends = chat.backends_text(reply)
    assert "talos (ollama): healthy, smollm2, 1 running" in backends and "Queued jobs: 3" in backends


def test_live_draft_keeps_the_head_of_a_long_draft():
    text = chat.live_draft_text("word " * 2000, 100)
    assert text.startswith("Draft 1 (writing…)") and text.endswith(" …") and len(text) < 140
    # Telegram counts UTF-16 units: a draft of emoji (two units each) is cut by units, not characters.
    emoji = chat.live_draft_text("😀" * 3000, 100)
    assert utf16_len(emoji) <= 100 + utf16_len("Draft 1 (writing…)\n\n …")


def test_a_heading_does_not_become_a_part_of_its_own():
    """A long text whose only blank line is under its heading is cut at a line or word boundary near the
    limit, not right after the heading."""
    draft = chat.draft_text(1, "\n".join(f"line {i} " + "x" * 60 for i in range(100)), "talos", "fake", 10, 1000, False)
    parts = split_text(draft)
    assert [utf16_len(p) <= 4096 for p in parts] == [True] * len(parts)
    assert utf16_len(parts[0]) > 2048 and parts[0].startswith("Draft 1\n\nline 0 ")
    words = split_text("Intro.\n\n" + " ".join(["word"] * 1500))
    assert utf16_len(words[0]) > 2048 and "".join(words).replace(" ", "") == "Intro.\n\n" + "word" * 1500


# ---- learned preferences: what was assumed, and /correct -------------------------------------------------

RESERVED = "_*[]()~`>#+-=|{}.!\\"
"""MarkdownV2's reserved characters (and the backslash that escapes them)."""


def assumption(key: str, value: str, confidence: float, category: str | None = None) -> Assumption:
    category = category or (key if key in ("depth", "style") else "constraint")
    return Assumption(
        preference_id=preference_id("telegram:42", category, key),
        category=category,
        key=key,
        value=value,
        confidence=confidence,
    )


def test_assumptions_read_as_one_line_with_how_to_correct_them():
    text = domain.assumptions_text([assumption("depth", "detailed", 0.8), assumption("budget", "under 500 euros", 0.9)])
    assert text == (
        "I assumed: Depth: detailed (80%), Budget: under 500 euros (90%).\n"
        "Wrong? /correct <key> <value> (key: depth, budget)"
    )
    assert domain.assumptions_text([]) == ""
    # A key /correct does not take, or a learned pattern's usual answer, is shown but not offered for correction.
    other = domain.assumptions_text([assumption("dietary_needs", "vegan", 0.756), usual_answer("intent", "fun")])
    assert other == "I assumed: Dietary needs: vegan (76%), Intent (your usual answer): fun (80%)."


def test_every_reserved_character_of_a_value_arrives_as_written():
    value = "5*3 = 15 (approx.) - [a]_b_ ~c~ `d` > #e +1 |f| {g} 1.5! \\ end"
    plain = domain.assumptions_text([assumption("budget", value, 0.75)])
    escaped = chat.render(plain, bold_first_line=False)
    for char in RESERVED.rstrip("\\"):
        positions = [i for i, c in enumerate(escaped) if c == char]
        assert positions and all(escaped[i - 1] == "\\" for i in positions), (char, escaped)
    assert "\\\\ end" in escaped  # the backslash itself is escaped
    parsed, entities = parse_markdown_v2(chat.render(plain))  # what Telegram shows: as written, first line bold
    assert parsed == plain and entities[0]["type"] == "bold"


def test_many_long_assumptions_stay_within_telegrams_limits():
    many = [assumption(f"key_{i}", "x" * 119 + "!", 0.9) for i in range(30)]
    text = domain.assumptions_text(many)
    assert text.count("(90%)") == domain.ASSUMPTIONS_SHOWN and "and 18 more." in text
    assert all(utf16_len(part) <= domain.TELEGRAM_TEXT_LIMIT for part in split_text(text))


def usual_answer(category: str, value: str) -> Assumption:
    return Assumption(
        source="pattern",
        pattern_id=derived_id("pattern", category),
        category=category,
        key=category,
        value=value,
        confidence=0.8,
    )


def test_assumptions_are_merged_once_per_preference_or_pattern():
    depth, budget = assumption("depth", "detailed", 0.8), assumption("budget", "cheap", 0.9)
    later_depth = assumption("depth", "overview", 0.76)
    intent, context = usual_answer("intent", "fun"), usual_answer("context", "at home")
    assert domain.merged_assumptions([depth, intent], [later_depth, budget, context, intent]) == [
        depth,
        intent,
        budget,
        context,
    ]


def completed(reason: str) -> ThreadCompleted:
    return ThreadCompleted(
        event_id="e1", aggregate_id=THREAD, occurred_at=NOW, correlation_id=THREAD, reason=reason, final_draft_number=1
    )


def test_a_telegram_thread_finished_without_questions_says_what_it_assumed():
    assumed = (assumption("style", "casual", 0.9),)
    telegram = domain.ThreadContext(idea="Plan a garden", origin={"telegram_chat_id": "42"}, assumptions=assumed)
    text = domain.compose(completed("no_questions"), telegram, "http://hermes.test", 0).text
    assert "I assumed: Style: casual (90%)." in text and "/correct <key> <value> (key: style)" in text
    # Asked threads showed them with their questions; a web thread's user corrects them in the web UI.
    assert "I assumed" not in domain.compose(completed("answered"), telegram, "http://hermes.test", 0).text
    web = domain.ThreadContext(idea="Plan a garden", origin={}, assumptions=assumed)
    assert "I assumed" not in domain.compose(completed("no_questions"), web, "http://hermes.test", 0).text


@pytest.mark.parametrize(
    ("text", "key", "value"),
    [
        ("/correct depth overview", "depth", "overview"),
        ("/correct Depth DETAILED", "depth", "detailed"),
        ("/correct@hermes_test_bot style technical", "style", "technical"),
        ("/correct budget   Under 300 €\n(approx.)", "budget", "Under 300 € (approx.)"),
        ("/correct audience my team", "audience", "my team"),
        ("/correct language plain English", "language", "plain English"),
        ("/correct location " + "é" * 120, "location", "é" * 120),
        ("/correct Tech_Stack Go and SQLite", "tech_stack", "Go and SQLite"),
    ],
)
def test_correct_takes_a_key_and_a_value(text, key, value):
    intent = chat.parse_message(text, None, "hermes_test_bot")
    assert (intent.kind, intent.key, intent.text) == ("correct", key, value)
    expected = key if key in ("depth", "style") else "fact" if key == "tech_stack" else "constraint"
    assert domain.correctable_category(key) == expected


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("/correct", "Send /correct <key> <value>"),
        ("/correct    ", "Send /correct <key> <value>"),
        ("/correct depth", "Say what depth should be"),
        ("/correct colour! red", "There is no preference called colour!"),
        ("/correct 2budget cheap", "There is no preference called 2budget"),
        ("/correct " + "k" * 33 + " x", "There is no preference called"),
        ("/correct depth super deep", "Depth is one of overview, detailed, comprehensive"),
        ("/correct style loud", "Style is one of formal, casual, technical"),
        ("/correct budget " + "x" * 121, "at most 120 characters"),
    ],
)
def test_a_bad_correction_gets_a_clear_usage(text, says):
    intent = chat.parse_message(text, None)
    assert intent.kind == "usage" and says in intent.text, intent.text


def test_help_lists_correct():
    assert "/correct <key> <value>" in chat.help_text()


def preference(value: str, confidence: float, applied: bool) -> PreferenceView:
    return PreferenceView(
        preference_id=preference_id("telegram:42", "depth", "depth"),
        user_id="telegram:42",
        category="depth",
        key="depth",
        value=value,
        confidence=confidence,
        stability=0.5,
        observations=4,
        corrections=1,
        source="explicit",
        evidence="correction",
        updated_at=NOW,
        applied=applied,
    )


def test_the_outcome_of_a_correction_says_what_is_held_now():
    flipped = chat.corrected_text(preference("overview", 0.65, False), "Overview", 0.75)
    assert flipped.startswith("Corrected: Depth is now overview\n") and "65%, below the 75%" in flipped
    assert "again to change it" not in flipped
    held = chat.corrected_text(preference("detailed", 0.53, False), "overview", 0.75)
    assert held.startswith("Noted: Depth stays detailed for now") and "Send the same correction again" in held
    sure = chat.corrected_text(preference("overview", 0.81, True), "overview", 0.75)
    assert "Confidence 81%: Hermes assumes it from your next idea." in sure
    assert chat.correction_refused_text("category must be one of depth").endswith("category must be one of depth")
