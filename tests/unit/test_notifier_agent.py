"""Agent runs in the notifier's pure parts: ``/do`` and approval buttons parsed, the approval message as Telegram
parses it, and what a run's end says (an answer, never a draft)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from fakes.telegram_api import TEXT_LIMIT, parse_markdown_v2

from hermes_proto.agents import AgentRunCancelled, AgentRunCompleted, AgentRunFailed, ApprovalRequested
from hermes_proto.events import JobFailed, ThreadCompleted, ThreadFailed
from hermes_proto.ids import derived_id

from hermes_notifier import chat, domain

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
RUN = derived_id("telegram_agent_run", "42", "7")
APPROVAL = derived_id(derived_id(RUN, "turn", "1", "call", "0"), "approval")


def env(**kw) -> dict:
    return dict(event_id=derived_id(*kw.values(), str(len(kw))), aggregate_id=RUN, occurred_at=NOW, correlation_id=RUN)


def request(arguments: dict, reason: str = "shell commands need approval") -> ApprovalRequested:
    return ApprovalRequested(
        **env(kind="approval"),
        approval_id=APPROVAL,
        call_id="call-0",
        name="shell",
        arguments=arguments,
        binding="b",
        user_id="telegram:42",
        reason=reason,
        expires_at=NOW + timedelta(minutes=15),
    )


def test_do_needs_a_task():
    assert chat.parse_message("/do summarise my notes", None) == chat.Intent("agent", text="summarise my notes")
    assert chat.parse_message("/do@hermes_test_bot  plan it ", None, "hermes_test_bot").text == "plan it"
    usage = chat.parse_message("/do   ", None)
    assert usage.kind == "usage" and usage.text == chat.DO_USAGE


def test_approval_buttons_fit_and_parse_back():
    keyboard = chat.approval_keyboard(APPROVAL)
    labels = [label for row in keyboard for label, _ in row]
    assert labels == ["Approve once", "Approve for run", "Reject"]
    for (_, data), choice in zip((b for row in keyboard for b in row), "orx", strict=True):
        assert len(data.encode()) <= chat.CALLBACK_DATA_MAX_BYTES
        assert chat.parse_button(data) == chat.Intent("approval", approval_id=APPROVAL, choice=choice)
    assert chat.parse_button(f"ap:{APPROVAL}:z").kind == "ignore"
    assert chat.parse_button("ap:bad.id:o").kind == "ignore"
    assert chat.approval_keyboard("x" * 80) == [], "an id that cannot fit gets no buttons"


def test_the_approval_message_shows_the_arguments_as_json_and_names_its_run():
    arguments = {"command": "grep -r '*_[x](y)`' ~/notes \\ done.", "note": "evil\u202etxt.exe"}
    text = chat.approval_message(request(arguments), "Summarise *my* notes", RUN, "http://hermes.test")
    plain, entities = parse_markdown_v2(text)  # raises, as Telegram would refuse it, when something is unescaped
    [pre] = [e for e in entities if e["type"] == "pre"]
    block = plain[pre["offset"] : pre["offset"] + pre["length"]]
    assert json.loads(block) == arguments
    assert "\u202e" not in plain and "\\u202e" in block, "an invisible override shows as its escape"
    assert plain.startswith("Approval needed: shell\n") and "Summarise *my* notes" in plain
    assert f"http://hermes.test/#agent/{RUN}" in plain
    assert chat.run_of_message(plain) == RUN

    closed = chat.approval_message(
        request(arguments), None, RUN, "http://hermes.test", chat.approval_closed_line("run", "shell", "telegram:42")
    )
    closed_plain = parse_markdown_v2(closed)[0]
    assert closed_plain.startswith("Approved for this run: shell (by telegram:42)")
    assert "web UI" not in closed_plain and chat.run_of_message(closed_plain) == RUN


def test_long_arguments_are_cut_so_the_message_fits():
    text = chat.approval_message(request({"content": "x" * 20000}, reason="r" * 2000), "t" * 500, RUN, "http://h")
    plain, _ = parse_markdown_v2(text)
    assert domain.utf16_len(plain) <= TEXT_LIMIT
    assert "(cut: " in plain and chat.run_of_message(plain) == RUN


def test_a_runs_end_says_its_answer_not_a_draft():
    answer = AgentRunCompleted(**env(kind="done"), answer="Three themes: *a*, b, c.", iterations=1, tool_calls=0)
    context = domain.ThreadContext(idea="Summarise notes", kind="agent", run_end=answer)
    completed = ThreadCompleted(**env(kind="completed"), final_draft_number=0, reason="answered")
    text = domain.compose(completed, context, "http://h", 8000).text
    assert text.startswith("Agent run finished: Summarise notes\n")
    assert "Answer after 1 turn, 0 tool calls" in text and text.endswith("Three themes: *a*, b, c.")
    assert "draft" not in text.lower() and f"http://h/#agent/{RUN}" in text
    assert "Three themes" not in domain.compose(completed, context, "http://h", 0).text, "0: no answer text"

    failed = AgentRunFailed(**env(kind="failed"), reason="timeout", message="wall time ended", partial="Half done")
    thread_failed = ThreadFailed(**env(kind="tf"), error_code="timeout", message="wall time ended")
    text = domain.compose(thread_failed, domain.ThreadContext(idea="t", kind="agent", run_end=failed), "h", 8000).text
    assert text.startswith("Agent run stopped: t") and "timeout (its time ran out)" in text and "Half done" in text

    cancelled = AgentRunCancelled(**env(kind="cancelled"), by="telegram:42")
    stopped = ThreadFailed(**env(kind="tc"), error_code="cancelled", message="cancelled by telegram:42")
    text = domain.compose(stopped, domain.ThreadContext(idea="t", kind="agent", run_end=cancelled), "h", 8000).text
    assert text.startswith("Agent run cancelled: t") and "Stopped by telegram:42." in text

    turn_failed = JobFailed(**env(kind="jf"), job_id="turn-1", error_code="timeout", message="slow")
    assert domain.compose(turn_failed, domain.ThreadContext(kind="agent"), "h", 8000) is None
