"""The notifier as a real process on a real JetStream server, talking to a loopback Telegram Bot API.

The test plays the orchestrator and the backend-router on the wire (publishing the thread and budget events
they publish) and reads what the
notifier did from three places: the chats of the fake Bot API, the log (``notification_sent`` /
``notification_failed``, dead letters) and the Prometheus endpoint.
"""

from __future__ import annotations

import json
from datetime import timedelta

import httpx
import msgspec
import pytest
from conftest import open_event, wait_until
from fakes.telegram_api import FakeTelegramServer
from nats.js.errors import NotFoundError
from procs import ServiceProcess
from prometheus_client.parser import text_string_to_metric_families

from hermes_proto import subjects
from hermes_proto.bus import EventStore
from hermes_proto.codec import encode
from hermes_proto.events import (
    BudgetThresholdReached,
    DraftPresented,
    JobFailed,
    ThreadCompleted,
    ThreadFailed,
    ThreadOpened,
)
from hermes_proto.ids import derived_id, new_id, utcnow

from hermes_cli.natsserver import free_port

TOKEN = "987654:notifier-test-SECRET-token"
DEFAULT_CHAT = "777"
ORIGIN_CHATS = ("4242", "1001", "1002")  # chats threads come from (allowed); others get nothing
DURABLE = "notifier-events"
IDEA = "Plan a vegetable garden on my sunny balcony with tomatoes, basil and a small lemon tree"


@pytest.fixture
async def telegram():
    async with FakeTelegramServer(token=TOKEN) as server:
        yield server


@pytest.fixture
def notifier(bus_env, tmp_path, telegram):
    """Starts ``python -m hermes_notifier`` with the given variables over a Telegram-enabled default env."""
    started: list[ServiceProcess] = []

    def start(**env: str) -> tuple[ServiceProcess, int]:
        metrics_port = free_port()
        full = dict(
            bus_env,
            TELEGRAM_BOT_TOKEN=TOKEN,
            TELEGRAM_CHAT_ID=DEFAULT_CHAT,
            TELEGRAM_ALLOWED_CHAT_IDS=",".join((DEFAULT_CHAT, *ORIGIN_CHATS)),
            TELEGRAM_API_BASE_URL=telegram.api_base_url,
            TELEGRAM_RETRY_BACKOFF_S="0.2",
            HERMES_WEB_BASE_URL="http://hermes.test",
            METRICS_PORT=str(metrics_port),
        )
        full.update(env)
        proc = ServiceProcess(f"notifier{len(started)}", "hermes_notifier", full, tmp_path / "logs").start()
        started.append(proc)
        return proc, metrics_port

    yield start
    for proc in started:
        proc.stop()


# ---- wire helpers ----------------------------------------------------------------------------------


def envelope(thread_id: str, ago_s: float = 0.0) -> dict:
    return dict(
        event_id=new_id(),
        aggregate_id=thread_id,
        occurred_at=utcnow() - timedelta(seconds=ago_s),
        correlation_id=f"corr-{thread_id}",
    )


def opened(thread_id: str, idea: str = IDEA, **kw) -> ThreadOpened:
    return ThreadOpened(**envelope(thread_id), idea=idea, **kw)


def completed(thread_id: str, final: int = 1, reason: str = "no_questions", ago_s: float = 0.0) -> ThreadCompleted:
    return ThreadCompleted(**envelope(thread_id, ago_s), final_draft_number=final, reason=reason)


def draft(thread_id: str, number: int, text: str) -> DraftPresented:
    return DraftPresented(
        **envelope(thread_id), job_id=f"job-{number}", draft_number=number, text=text, backend="talos", model="m"
    )


def job_failed(thread_id: str, job_id: str = "job-1", cause: str | None = None) -> JobFailed:
    return JobFailed(
        **envelope(thread_id),
        causation_id=cause,
        job_id=job_id,
        error_code="connection_error",
        message="connection refused by the model server",
    )


def thread_failed(thread_id: str, cause: str | None = None) -> ThreadFailed:
    return ThreadFailed(
        **envelope(thread_id),
        causation_id=cause,
        error_code="timeout",
        message="draft 1 failed: the model took too long",
    )


def budget_reached(scope: str, name: str, spent: float, budget: float, threshold: float) -> BudgetThresholdReached:
    day = utcnow().date().isoformat()
    aggregate = f"{scope}-{name}-{day}"
    return BudgetThresholdReached(
        event_id=new_id(),
        aggregate_id=aggregate,
        occurred_at=utcnow(),
        correlation_id=aggregate,
        scope=scope,
        name=name,
        period=day,
        spent_cents=spent,
        budget_cents=budget,
        threshold=threshold,
    )


async def processed(js, seq: int) -> bool:
    """Whether the notifier's durable has acknowledged everything up to stream sequence ``seq``."""
    try:
        info = await js.consumer_info(subjects.EVENTS_STREAM, DURABLE)
    except NotFoundError:
        return False
    return info.ack_floor.stream_seq >= seq and info.num_ack_pending == 0


async def publish(js, *events) -> int:
    """Append ``events``; waits until the notifier has handled them; returns the last sequence."""
    seqs = await EventStore(js, "test").append(list(events))
    await wait_until(lambda: processed(js, seqs[-1]), timeout_s=20)
    return seqs[-1]


async def thread_log(js, thread_id: str, type_name: str | None = None) -> list:
    """Every event of one thread in log order (optionally of one type), read by subject."""
    events, seq = [], 1
    while True:
        try:
            raw = await js.get_msg(
                subjects.EVENTS_STREAM, seq=seq, subject=subjects.thread_events(thread_id), next=True
            )
        except NotFoundError:
            break
        events.append(await open_event(raw.data))
        seq = raw.seq + 1
    return [e for e in events if type_name is None or e.type_name() == type_name]


def metric(port: int, name: str, **labels: str) -> float:
    """The value of one sample on the notifier's /metrics (0 when absent)."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


def texts(server: FakeTelegramServer, chat: str) -> list[str]:
    return [m["text"] for m in server.messages_to(chat)]


# ---- tests -----------------------------------------------------------------------------------------


async def test_completed_threads_reach_their_chat_once(js_client, telegram, notifier):
    _, js = js_client
    proc, metrics_port = notifier()
    web, tg = new_id(), new_id()
    done = completed(web)
    await publish(
        js,
        opened(web, channel="web"),
        draft(web, 1, "Draft one: pots, soil, sun."),
        done,
        opened(tg, idea="Write a haiku about autumn leaves", channel="telegram", origin={"telegram_chat_id": "4242"}),
        completed(tg),
    )

    [to_default] = texts(telegram, DEFAULT_CHAT)
    assert "Plan a vegetable garden on my sunny balcony" in to_default
    assert "Draft one: pots, soil, sun." in to_default and f"http://hermes.test/#thread={web}" in to_default
    [to_origin] = texts(telegram, "4242")
    assert "haiku about autumn leaves" in to_origin and "haiku" not in to_default

    [sent] = await thread_log(js, web, "notification_sent")
    message_id = telegram.messages_to(DEFAULT_CHAT)[0]["message_id"]
    assert sent.event_id == derived_id(done.event_id, "notification_sent") and sent.cause_event_id == done.event_id
    assert (sent.kind, sent.channel, sent.recipient, sent.external_id) == (
        "thread_completed",
        "telegram",
        DEFAULT_CHAT,
        str(message_id),
    )
    assert sent.correlation_id == done.correlation_id
    [sent_tg] = await thread_log(js, tg, "notification_sent")
    assert sent_tg.recipient == "4242"

    # The same event again, as after a redelivery past JetStream's dedup window: nothing is sent twice.
    ack = await js.publish(subjects.event_subject(done), encode(done), headers={"Nats-Msg-Id": new_id()})
    await wait_until(lambda: processed(js, ack.seq), timeout_s=20)
    assert len(texts(telegram, DEFAULT_CHAT)) == 1 and len(telegram.calls_to("sendMessage")) == 2
    assert len(await thread_log(js, web, "notification_sent")) == 1
    assert (
        metric(
            metrics_port, "hermes_notifier_notifications_skipped_total", kind="thread_completed", reason="already_sent"
        )
        == 1
    )
    assert metric(metrics_port, "hermes_notifier_messages_sent_total", channel="telegram", kind="thread_completed") == 2
    assert TOKEN not in proc.log_text()

    # A thread whose origin names a chat outside the allow-list (any producer may write one): no message at all.
    stranger = new_id()
    last = await publish(
        js,
        opened(stranger, idea="Spam this chat", channel="telegram", origin={"telegram_chat_id": "31337"}),
        completed(stranger),
    )
    await wait_until(lambda: processed(js, last), timeout_s=20)
    assert not texts(telegram, "31337") and len(texts(telegram, DEFAULT_CHAT)) == 1
    assert (
        metric(
            metrics_port, "hermes_notifier_notifications_skipped_total", kind="thread_completed", reason="not_allowed"
        )
        == 1
    )


async def test_failures_long_draft_and_stale_event(js_client, telegram, notifier):
    _, js = js_client
    notifier()
    failing, failing_alone, long_one, old = new_id(), new_id(), new_id(), new_id()
    # One failure reported twice by the orchestrator (same cause): one message, about the job.
    cause = new_id()
    await publish(
        js, opened(failing), job_failed(failing, job_id="job-42", cause=cause), thread_failed(failing, cause=cause)
    )
    [failure] = texts(telegram, DEFAULT_CHAT)
    assert "a job failed" in failure and "job-42" in failure and "connection_error" in failure
    assert IDEA[:40] in failure
    assert len(await thread_log(js, failing, "notification_sent")) == 1
    # A thread failure with no announced job failure behind it gets its own message.
    await publish(
        js,
        opened(failing_alone, idea="translate my CV"),
        job_failed(failing_alone, cause=new_id()),
        thread_failed(failing_alone, cause=new_id()),
    )
    job_text, thread_text = texts(telegram, DEFAULT_CHAT)[1:]
    assert "a job failed" in job_text and "could not finish" in thread_text and "the model took too long" in thread_text

    paragraphs = [f"Step {i}: " + " ".join(f"word{i}x{j}" for j in range(60)) for i in range(12)]
    long_draft = "\n\n".join(paragraphs)
    assert len(long_draft) > 6000
    await publish(
        js,
        opened(long_one),
        draft(long_one, 1, "first"),
        draft(long_one, 2, long_draft),
        completed(long_one, final=2, reason="answered"),
    )
    parts = texts(telegram, DEFAULT_CHAT)[3:]
    assert len(parts) == 2 and all(len(p) <= 4096 for p in parts)
    assert parts[0].startswith("Hermes finished your idea") and "built on your answers" in parts[0]
    joined = "\n\n".join(parts)
    assert all(p in joined for p in paragraphs) and "first" not in joined.split("Draft 2:")[1]
    [sent] = await thread_log(js, long_one, "notification_sent")
    assert sent.external_id == ",".join(str(m["message_id"]) for m in telegram.messages_to(DEFAULT_CHAT)[3:])

    # An event from two days ago (a first start on an old log) is acknowledged without a message.
    await publish(js, opened(old), completed(old, ago_s=2 * 86400))
    assert len(texts(telegram, DEFAULT_CHAT)) == 5
    assert await thread_log(js, old, "notification_sent") == []


async def test_flood_wait_is_honoured_without_holding_other_threads(js_client, telegram, notifier):
    _, js = js_client
    first, second = new_id(), new_id()
    seqs = await EventStore(js, "test").append(
        [
            opened(first, idea="first idea", origin={"telegram_chat_id": "1001"}),
            opened(second, idea="second idea", origin={"telegram_chat_id": "1002"}),
            completed(first),
            completed(second),
        ]
    )
    telegram.fail_next(1, status=429, retry_after=2, method="sendMessage")
    # Both completions are in the log before the notifier starts, so they arrive in one batch.
    notifier()
    await wait_until(lambda: processed(js, seqs[-1]), timeout_s=20)

    assert len(texts(telegram, "1001")) == 1 and len(texts(telegram, "1002")) == 1
    calls = telegram.calls_to("sendMessage")
    assert [c.status for c in calls] == [429, 200, 200]
    limited = calls[0].params["chat_id"]
    retried = next(c for c in calls[1:] if c.params["chat_id"] == limited)
    other = next(c for c in calls[1:] if c.params["chat_id"] != limited)
    assert retried.received_at - calls[0].received_at >= 1.9  # retry_after honoured
    assert other.received_at - calls[0].received_at < 1.5  # the other chat did not wait for it
    for thread_id in (first, second):
        assert len(await thread_log(js, thread_id, "notification_sent")) == 1


async def test_send_failures_are_recorded_and_bad_input_is_dead_lettered(js_client, telegram, notifier):
    _, js = js_client
    # Its dead letters would raise a dead_letters alert in the same chat (tests/integration/test_notifier_alerts.py).
    proc, metrics_port = notifier(
        TELEGRAM_MAX_RETRY_AFTER_S="5", HERMES_NOTIFY_ALERT_TYPES="thread_finished,job_failure"
    )
    blocked, flooded, flaky, later = new_id(), new_id(), new_id(), new_id()

    telegram.fail_next(1, status=403, method="sendMessage")
    await publish(js, opened(blocked), completed(blocked))
    telegram.fail_next(1, status=429, retry_after=120, method="sendMessage")
    await publish(js, opened(flooded), job_failed(flooded))
    assert [c.status for c in telegram.calls_to("sendMessage")] == [403, 429]  # neither is worth retrying
    [forbidden] = await thread_log(js, blocked, "notification_failed")
    assert forbidden.recipient == DEFAULT_CHAT and forbidden.message.startswith("forbidden: ")
    [flood] = await thread_log(js, flooded, "notification_failed")
    assert flood.kind == "job_failed" and flood.message.startswith("flood_wait: ")
    assert texts(telegram, DEFAULT_CHAT) == []

    telegram.fail_next(2, status=502, method="sendMessage")
    await publish(js, opened(flaky), completed(flaky))
    assert [c.status for c in telegram.calls_to("sendMessage")][2:] == [502, 502, 200]
    assert len(texts(telegram, DEFAULT_CHAT)) == 1
    assert metric(metrics_port, "hermes_notifier_send_retries_total", channel="telegram", reason="network") == 2
    assert (
        metric(
            metrics_port,
            "hermes_notifier_messages_failed_total",
            channel="telegram",
            kind="thread_completed",
            reason="forbidden",
        )
        == 1
    )

    await js.publish(f"hermes.evt.thread.{later}.thread_completed", b"\xff not json")
    await js.publish(f"hermes.evt.thread.{later}.job_failed", b'{"type":"job_failed","aggregate_id":5}')
    dlq = await js.pull_subscribe(subjects.dlq_subject(DURABLE), durable="t-dlq", stream=subjects.DLQ_STREAM)
    letters = []
    while len(letters) < 2:
        letters += await dlq.fetch(2 - len(letters), timeout=10)
    assert sorted(msgspec.json.decode(m.data)["reason"] for m in letters) == ["invalid_json", "validation_failed"]
    await publish(js, opened(later, idea="still listening"), completed(later))
    assert "still listening" in texts(telegram, DEFAULT_CHAT)[-1]
    assert proc.alive() and TOKEN not in proc.log_text()


async def test_without_token_notifications_are_off(js_client, telegram, notifier):
    _, js = js_client
    proc, metrics_port = notifier(TELEGRAM_BOT_TOKEN="")
    one, two = new_id(), new_id()
    await publish(js, opened(one), completed(one), opened(two), job_failed(two), completed(two))

    assert telegram.calls == []
    for thread_id in (one, two):
        assert not [e for e in await thread_log(js, thread_id) if e.type_name().startswith("notification")]
    lines = [json.loads(line) for line in proc.log_text().splitlines() if line.startswith("{")]
    assert [line["event"] for line in lines].count("notifications_off") == 1
    assert (
        metric(metrics_port, "hermes_notifier_notifications_skipped_total", reason="off", kind="thread_completed") == 2
    )
    assert proc.stop() == 0  # SIGTERM: a clean shutdown


async def test_budget_alerts_reach_the_operator_chat_once(js_client, telegram, notifier):
    _, js = js_client
    _, metrics_port = notifier()
    daily = budget_reached("daily", "all", spent=0.0114, budget=0.03, threshold=0.3)
    alpha = budget_reached("project", "alpha", spent=123.4, budget=150, threshold=0.8)
    beta = budget_reached("project", "beta", spent=2, budget=2.5, threshold=0.8)
    # A thread from Telegram in the same batch: its chat is not where budget alerts go.
    tg = new_id()
    seq = await publish(js, opened(tg, origin={"telegram_chat_id": "4242"}), daily, alpha, completed(tg))

    calls = telegram.calls_to("sendMessage")
    assert len(calls) == 3 and len(texts(telegram, "4242")) == 1
    budget_texts = texts(telegram, DEFAULT_CHAT)
    assert sorted(budget_texts) == sorted(
        [
            f"Budget alert: daily spend 0.0114¢ reached 30% of the 0.03¢ budget ({daily.period})",
            f"Budget alert: project alpha spend 123¢ ($1.23) reached 80% of the 150¢ ($1.50) budget ({alpha.period})",
        ]
    )
    [sent] = await thread_log(js, daily.aggregate_id, "notification_sent")
    assert sent.event_id == derived_id(daily.event_id, "notification_sent") and sent.cause_event_id == daily.event_id
    assert (sent.aggregate_id, sent.kind, sent.recipient, sent.correlation_id) == (
        daily.aggregate_id,
        "budget_threshold",
        DEFAULT_CHAT,
        daily.correlation_id,
    )
    daily_message = next(m for m in telegram.messages_to(DEFAULT_CHAT) if "daily spend" in m["text"])
    assert sent.external_id == str(daily_message["message_id"])

    # The router appending the same event again: JetStream drops it (same event id), nothing is delivered.
    [again] = await EventStore(js, "test").append([daily])
    assert again < seq
    # A redelivery past the dedup window: "already sent?" finds the record under the budget's aggregate id.
    ack = await js.publish(subjects.event_subject(daily), encode(daily), headers={"Nats-Msg-Id": new_id()})
    await wait_until(lambda: processed(js, ack.seq), timeout_s=20)
    assert len(telegram.calls_to("sendMessage")) == 3
    assert len(await thread_log(js, daily.aggregate_id, "notification_sent")) == 1
    assert (
        metric(
            metrics_port, "hermes_notifier_notifications_skipped_total", kind="budget_threshold", reason="already_sent"
        )
        == 1
    )
    assert metric(metrics_port, "hermes_notifier_messages_sent_total", channel="telegram", kind="budget_threshold") == 2

    # A send that fails is recorded like the others, under the budget's aggregate id.
    telegram.fail_next(1, status=403, method="sendMessage")
    await publish(js, beta)
    [failed] = await thread_log(js, beta.aggregate_id, "notification_failed")
    assert (failed.kind, failed.recipient, failed.cause_event_id) == ("budget_threshold", DEFAULT_CHAT, beta.event_id)
    assert failed.message.startswith("forbidden: ")
    assert len(texts(telegram, DEFAULT_CHAT)) == 2


async def test_budget_alerts_can_be_switched_off(js_client, telegram, notifier):
    _, js = js_client
    _, metrics_port = notifier(HERMES_NOTIFY_BUDGET_ALERTS="false")
    daily = budget_reached("daily", "all", spent=0.03, budget=0.03, threshold=0.8)
    thread = new_id()
    # Waits (bounded) until the notifier has acknowledged all three: the alert was handled, not just pending.
    await publish(js, daily, opened(thread), completed(thread))

    [only] = texts(telegram, DEFAULT_CHAT)
    assert "Hermes finished your idea" in only and len(telegram.calls_to("sendMessage")) == 1
    assert await thread_log(js, daily.aggregate_id) == []
    assert (
        metric(metrics_port, "hermes_notifier_notifications_skipped_total", kind="budget_threshold", reason="disabled")
        == 1
    )
