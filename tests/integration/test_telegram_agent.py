"""Agent runs from Telegram, through the real bus: ``/do <task>`` starts a run (``/cancel`` stops it), a tool call
waiting for approval is a message with buttons that only the run's own chat can answer, and the run's end brings its
answer.

The notifier runs as a real process against a real nats-server and the loopback Bot API (tests/fakes/telegram_api.py),
which it long-polls. The test plays the orchestrator on the wire: it appends the events a run's thread holds
(``thread_opened`` of kind ``agent``, ``approval_requested``, ``agent_run_completed`` ...) and reads the commands the
notifier sent (``start_agent_run``, ``decide_approval``) from ``HERMES_COMMANDS``, where nobody consumes them."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from conftest import open_command, wait_until
from fakes.telegram_api import FakeTelegramServer
from nats.js.errors import NotFoundError
from procs import ServiceProcess, start_ready

from hermes_proto import subjects
from hermes_proto.agents import (
    AgentRunCompleted,
    AgentRunFailed,
    AgentRunStarted,
    ApprovalGranted,
    ApprovalRequested,
    CancelAgentRun,
    DecideApproval,
    StartAgentRun,
)
from hermes_proto.bus import EventStore
from hermes_proto.codec import encode
from hermes_proto.events import JobFailed, ThreadCompleted, ThreadFailed, ThreadOpened
from hermes_proto.ids import derived_id, new_id, utcnow
from hermes_proto.queries import QUERY_THREADS, ThreadListReply, ThreadView

TOKEN = "555222:agent-test-SECRET"
CHAT_A, CHAT_B, STRANGER = 5101, 5202, 9919
RUN_USER = "telegram:777001"
"""The user a run belongs to (who sent ``/do`` in a group chat): not the id of whoever presses a button."""
SPECIAL = "notes_v2 *bold* [x](y) `tick` \\back ~ > # + - = | { } . !"


@dataclass
class Bot:
    nc: object
    js: object
    telegram: FakeTelegramServer
    notifier: ServiceProcess

    async def message(self, chat: int, predicate, timeout_s: float = 20) -> dict:
        def found():
            return next((m for m in self.telegram.messages_to(chat) if predicate(m)), None)

        return await wait_until(found, timeout_s=timeout_s, interval_s=0.05)

    def answers_to(self, query_id: str) -> list[str]:
        return [a.get("text", "") for a in self.telegram.callback_answers if a["callback_query_id"] == query_id]


@pytest.fixture
async def bot(js_client, bus_env, tmp_path: Path) -> AsyncIterator[Bot]:
    nc, js = js_client
    async with FakeTelegramServer(token=TOKEN) as telegram:
        env = dict(
            bus_env,
            METRICS_PORT="0",
            TELEGRAM_BOT_TOKEN=TOKEN,
            TELEGRAM_CHAT_ID=str(CHAT_A),
            TELEGRAM_ALLOWED_CHAT_IDS=f"{CHAT_A},{CHAT_B}",
            TELEGRAM_API_BASE_URL=telegram.api_base_url,
            TELEGRAM_POLL_TIMEOUT_S="1",
            TELEGRAM_RETRY_BACKOFF_S="0.2",
            HERMES_WEB_BASE_URL="http://hermes.test",
            HERMES_MAX_QUEUED_JOBS="0",  # no queue cap: no orchestrator answers the queue's depth here
        )
        notifier = ServiceProcess("notifier", "hermes_notifier", env, tmp_path / "logs")
        try:
            await start_ready(notifier)
            yield Bot(nc, js, telegram, notifier)
        finally:
            notifier.stop()


# ---- the orchestrator's side, on the wire ---------------------------------------------------------------------------


def env(run_id: str) -> dict:
    return dict(event_id=new_id(), aggregate_id=run_id, occurred_at=utcnow(), correlation_id=run_id)


def run_opened(run_id: str, task: str, chat: int = CHAT_A) -> list:
    return [
        ThreadOpened(
            **env(run_id),
            idea=task,
            channel="telegram",
            user_id=RUN_USER,
            origin={"telegram_chat_id": str(chat)},
            max_questions=0,
            kind="agent",
        ),
        AgentRunStarted(**env(run_id), task=task, profile="researcher", user_id=RUN_USER, tools=["shell"]),
    ]


async def append(js, *events) -> int:
    """Append ``events`` as the orchestrator would; returns the last one's stream sequence."""
    return (await EventStore(js, "test").append(list(events)))[-1]


async def commands(js, command_type: type) -> list:
    """Every command of ``command_type`` stored in HERMES_COMMANDS so far (read by subject, no consumer)."""
    found, seq = [], 1
    subject = f"hermes.cmd.{command_type.type_name()}.>"
    while True:
        try:
            raw = await js.get_msg(subjects.COMMANDS_STREAM, seq=seq, subject=subject, next=True)
        except NotFoundError:
            return found
        found.append(await open_command(raw.data))
        seq = raw.seq + 1


def buttons(message: dict) -> list[list[tuple[str, str]]]:
    rows = (message.get("reply_markup") or {}).get("inline_keyboard", [])
    return [[(b["text"], b["callback_data"]) for b in row] for row in rows]


# ---- tests ----------------------------------------------------------------------------------------------------------


async def test_do_starts_an_agent_run_answered_in_the_chat(bot: Bot):
    telegram = bot.telegram
    telegram.push_text(CHAT_A, "/do")
    usage = await bot.message(CHAT_A, lambda m: m["text"].startswith("Send /do followed by a task"))
    assert "/do <task>" in usage["text"], "the usage comes with the help"

    telegram.push_text(CHAT_A, "/do summarise notes")
    [started] = await wait_until(lambda: commands(bot.js, StartAgentRun), timeout_s=20)
    assert isinstance(started, StartAgentRun)
    assert started.task == "summarise notes" and started.profile is None and started.channel == "telegram"
    assert started.origin["telegram_chat_id"] == str(CHAT_A) and started.user_id == f"telegram:{CHAT_A}"
    ack = await bot.message(CHAT_A, lambda m: m["text"].startswith("Agent run started"))
    assert ack["text"].startswith("Agent run started (profile picked from the task)…")
    assert started.thread_id in ack["text"] and f"http://hermes.test/#agent/{started.thread_id}" in ack["text"]

    telegram.push_text(STRANGER, "/do delete everything")  # not an allowed chat: refused, nothing started
    await bot.message(STRANGER, lambda m: "private" in m["text"])
    assert len(await commands(bot.js, StartAgentRun)) == 1

    # /cancel stops the chat's running agent run (the test answers the chat's thread list as the orchestrator).
    view = ThreadView(
        thread_id=started.thread_id,
        idea=started.task,
        channel="telegram",
        user_id=started.user_id,
        origin=dict(started.origin),
        status="drafting",
        kind="agent",
        created_at=utcnow(),
        updated_at=utcnow(),
    )

    async def thread_list(msg) -> None:
        await msg.respond(encode(ThreadListReply(threads=[view])))

    await bot.nc.subscribe(QUERY_THREADS, cb=thread_list)
    telegram.push_text(CHAT_A, "/cancel")
    [cancelled] = await wait_until(lambda: commands(bot.js, CancelAgentRun), timeout_s=20)
    assert isinstance(cancelled, CancelAgentRun)
    assert (cancelled.thread_id, cancelled.user_id) == (started.thread_id, started.user_id)
    await bot.message(CHAT_A, lambda m: m["text"].startswith("Stopping the agent run"))


async def test_approval_buttons_answer_for_the_runs_user_from_its_own_chat_only(bot: Bot):
    telegram, js = bot.telegram, bot.js
    run_id, call_id = derived_id("run", new_id()), new_id()
    approval_id = derived_id(call_id, "approval")  # as the orchestrator derives it: 32 hex characters
    arguments = {"command": f"grep -r {SPECIAL} ~/notes", "timeout_s": 30}
    request = ApprovalRequested(
        **env(run_id),
        approval_id=approval_id,
        call_id=call_id,
        name="shell",
        arguments=arguments,
        binding="b" * 64,
        user_id=RUN_USER,
        reason="the rules ask before running shell commands",
        expires_at=utcnow() + timedelta(minutes=15),
    )
    await append(js, *run_opened(run_id, "Summarise my notes"), request)

    shown = await bot.message(CHAT_A, lambda m: m["text"].startswith("Approval needed: shell"))
    keyboard = buttons(shown)
    assert [label for row in keyboard for label, _ in row] == ["Approve once", "Approve for run", "Reject"]
    data = {label: d for row in keyboard for label, d in row}
    assert all(len(d.encode()) <= 64 for d in data.values())
    assert "the rules ask before running shell commands" in shown["text"] and "Summarise my notes" in shown["text"]
    pre = [e for e in shown.get("entities", []) if e["type"] == "pre"]
    assert len(pre) == 1 and pre[0].get("language") == "json"
    block = shown["text"][pre[0]["offset"] : pre[0]["offset"] + pre[0]["length"]]
    assert json.loads(block) == arguments, "the arguments arrive as written, as JSON"
    assert shown["text"].rstrip().endswith(f"Agent run {run_id}")

    # A press from another (allowed) chat, on a copy of the message: refused, no command.
    forged = dict(shown, chat={"id": CHAT_B, "type": "private"})
    query = {
        "id": "forged-1",
        "chat_instance": str(CHAT_B),
        "data": data["Approve once"],
        "from": {"id": CHAT_B, "is_bot": False, "first_name": "B"},
        "message": forged,
    }
    telegram.push_update(callback_query=query)
    refusal = await wait_until(lambda: bot.answers_to("forged-1"), timeout_s=20)
    assert refusal[0].startswith("Refused")
    assert not await commands(js, DecideApproval)

    # The owning chat's press: DecideApproval for the run's user (not the presser), the message loses its buttons.
    press = telegram.push_callback(CHAT_A, data["Approve once"], message_id=shown["message_id"])
    [decided] = await wait_until(lambda: commands(js, DecideApproval), timeout_s=20)
    assert isinstance(decided, DecideApproval)
    assert (decided.thread_id, decided.approval_id, decided.decision, decided.scope) == (
        run_id,
        approval_id,
        "approve",
        "once",
    )
    assert decided.user_id == RUN_USER and decided.channel == "telegram"
    assert await wait_until(lambda: bot.answers_to(press["callback_query"]["id"]), timeout_s=10) == ["Approved once"]
    sent = await bot.message(CHAT_A, lambda m: m["message_id"] == shown["message_id"] and m["text"].startswith("Sent"))
    assert not buttons(sent)

    # The orchestrator's grant closes the message; a later press (an old button) sends nothing and is told so.
    await append(
        js,
        ApprovalGranted(
            **env(run_id), approval_id=approval_id, call_id=call_id, binding="b" * 64, by=RUN_USER, channel="telegram"
        ),
    )
    await bot.message(
        CHAT_A, lambda m: m["message_id"] == shown["message_id"] and m["text"].startswith("Approved once: shell")
    )
    late = telegram.push_callback(CHAT_A, data["Reject"], message_id=shown["message_id"])
    closed = await wait_until(lambda: bot.answers_to(late["callback_query"]["id"]), timeout_s=20)
    assert "closed" in closed[0]
    assert len(await commands(js, DecideApproval)) == 1
    assert not telegram.messages_to(CHAT_B), "nothing of chat A's run reached chat B"


async def test_a_runs_end_brings_its_answer_or_why_it_stopped(bot: Bot):
    telegram, js = bot.telegram, bot.js
    answered, failed = derived_id("run", new_id()), derived_id("run", new_id())
    answer = f"Three themes in your notes. {SPECIAL}\n\n" + "\n\n".join(
        f"Theme {n}: " + " ".join(f"point{n}.{i}" for i in range(120)) for n in range(6)
    )  # about 7 000 characters: two messages
    await append(
        js,
        *run_opened(answered, "Summarise notes"),
        AgentRunCompleted(**env(answered), answer=answer, iterations=3, tool_calls=2),
        ThreadCompleted(**env(answered), final_draft_number=0, reason="answered"),
    )
    first = await bot.message(CHAT_A, lambda m: m["text"].startswith("Agent run finished: Summarise notes"))
    assert "Answer after 3 turns, 2 tool calls" in first["text"]
    assert f"http://hermes.test/#agent/{answered}" in first["text"]
    await wait_until(lambda: len(telegram.messages_to(CHAT_A)) >= 2 or None, timeout_s=10)
    parts = [m["text"] for m in telegram.messages_to(CHAT_A)]
    assert len(parts) == 2
    assert " ".join(" ".join(parts).split()).endswith(" ".join(answer.split())), "the whole answer, as written"
    assert "draft" not in " ".join(parts).lower()
    assert not buttons(telegram.messages_to(CHAT_A)[-1]), "no rating buttons under an agent's answer"

    last = await append(
        js,
        *run_opened(failed, "Sort my inbox", chat=CHAT_B),
        JobFailed(**env(failed), job_id="turn-2", error_code="timeout", message="the model took too long"),
        AgentRunFailed(
            **env(failed),
            reason="max_iterations",
            message="turn 8 of 8 still asked for 1 tool call(s)",
            iterations=8,
            partial="Half sorted.",
        ),
        ThreadFailed(**env(failed), error_code="max_iterations", message="turn 8 of 8 still asked for 1 tool call(s)"),
    )
    stopped = await bot.message(CHAT_B, lambda m: m["text"].startswith("Agent run stopped: Sort my inbox"))
    assert (
        "max_iterations" in stopped["text"] and "turn 8 of 8" in stopped["text"] and "Half sorted." in stopped["text"]
    )
    await wait_until(lambda: _handled(js, last), timeout_s=10)
    assert len(telegram.messages_to(CHAT_B)) == 1, "the failed turn is not announced on its own"


async def _handled(js, seq: int) -> bool:
    """Whether the notifier's ``notifier-events`` durable has acknowledged every event up to ``seq``."""
    info = await js.consumer_info(subjects.EVENTS_STREAM, "notifier-events")
    return info.ack_floor.stream_seq >= seq and info.num_ack_pending == 0
