"""Alerts of the notifier: ``thread_finished``, ``job_failure``, ``budget_threshold``, ``talos_down`` /
``backend_down``, ``queue_full`` and ``dead_letters``, each switchable (``HERMES_NOTIFY_ALERT_TYPES``) and quiet
for its own cooldown (``HERMES_ALERT_COOLDOWN_MINUTES``, ``HERMES_ALERT_COOLDOWNS``) that the log (the
notifier's own ``notification_sent`` records), not the process, remembers.

The notifier runs as a real process on a real JetStream server against the loopback Telegram Bot API of
tests/integration/test_notifier.py (inbound updates off, so nothing polls it); the test publishes what the orchestrator
(thread events), the backend-router (``BackendMarkedUnhealthy``, ``BudgetThresholdReached``), the gateway
(``QueueFull``) and any consumer giving up on a message (``DeadLetter`` records) publish.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from datetime import timedelta

import pytest
from conftest import stored_dead_letters, stored_messages, wait_until
from nats.js.errors import NotFoundError
from test_notifier import (  # noqa: F401  (fixtures)
    DEFAULT_CHAT,
    budget_reached,
    completed,
    job_failed,
    metric,
    notifier,
    opened,
    processed,
    publish,
    telegram,
    texts,
    thread_failed,
    thread_log,
)

from hermes_proto import subjects
from hermes_proto.bus import EventStore, publish_dead_letter
from hermes_proto.codec import encode
from hermes_proto.deadletter import DeadLetter, DeadLetterReplayed
from hermes_proto.events import BackendMarkedUnhealthy, NotificationSent, QueueFull
from hermes_proto.ids import derived_id, new_id, utcnow

SKIPPED = "hermes_notifier_notifications_skipped_total"
DLQ_DURABLE = "notifier-dead-letters"


@pytest.fixture
def alerter(notifier):
    """Starts the notifier (see test_notifier's fixture) with inbound Telegram updates off."""
    return lambda **env: notifier(**{"TELEGRAM_UPDATES": "off", **env})


def backend_down(backend: str = "talos", failures: int = 3) -> BackendMarkedUnhealthy:
    return BackendMarkedUnhealthy(
        event_id=new_id(),
        aggregate_id=backend,
        occurred_at=utcnow(),
        correlation_id=new_id(),
        consecutive_failures=failures,
        reason="probe: connection refused",
    )


def queue_full(minute: str, queued: int = 120) -> QueueFull:
    """As the gateway appends it: aggregate ``queue``, id derived from the minute."""
    return QueueFull(
        event_id=derived_id("queue_full", minute),
        aggregate_id="queue",
        occurred_at=utcnow(),
        correlation_id=new_id(),
        queued=queued,
        limit=120,
        retry_after_s=30.0,
    )


def dead_letter(consumer: str = "orchestrator-commands", ago_s: float = 0.0, seq: int = 1) -> DeadLetter:
    """A record as ``hermes_proto.bus.publish_dead_letter`` writes it for an undecodable command."""
    data = b"\xff not a command"
    return DeadLetter(
        consumer=consumer,
        stream=subjects.COMMANDS_STREAM,
        subject="hermes.cmd.submit_idea",
        stream_sequence=seq,
        deliveries=1,
        headers={},
        payload=data.decode(errors="replace"),
        payload_b64=base64.b64encode(data).decode(),
        reason="invalid_json",
        detail="JSON is malformed: invalid character (byte 0)",
        dead_lettered_at=utcnow() - timedelta(seconds=ago_s),
    )


async def store_dead_letter(js, record: DeadLetter) -> int:
    """Append ``record`` as ``publish_dead_letter`` does; returns its ``HERMES_DLQ`` sequence."""
    ack = await js.publish(
        subjects.dlq_subject(record.consumer),
        encode(record),
        headers={"Nats-Msg-Id": f"dlq-{record.stream}-{record.stream_sequence}-{record.consumer}"},
    )
    return ack.seq


async def dead_letters_handled(js, seq: int) -> bool:
    """Whether the notifier's dead-letter durable has settled everything up to ``HERMES_DLQ`` sequence ``seq``."""
    try:
        info = await js.consumer_info(subjects.DLQ_STREAM, DLQ_DURABLE)
    except NotFoundError:
        return False
    return info.delivered.stream_seq >= seq and info.num_pending == 0 and info.num_ack_pending == 0


async def sent_under(js, aggregate: str) -> list[NotificationSent]:
    return await thread_log(js, aggregate, "notification_sent")


# ---- operator alerts -------------------------------------------------------------------------------


async def test_alerts_reach_the_operator_once_per_cooldown(js_client, telegram, alerter):
    _, js = js_client
    _, metrics_port = alerter()
    talos, queue = backend_down("talos", failures=3), queue_full("2026-11-23T10:00")
    await publish(js, talos, queue)

    [talos_text, queue_text] = sorted(texts(telegram, DEFAULT_CHAT), key=lambda t: "queue" in t)
    assert talos_text.startswith("Hermes alert: backend talos is down (3 health checks failed in a row")
    assert "probe: connection refused" in talos_text and "http://hermes.test/api/backends" in talos_text
    assert queue_text.startswith("Hermes alert: the job queue is full (120 of 120 open jobs)")
    [sent] = await sent_under(js, "talos")
    assert (sent.kind, sent.channel, sent.recipient, sent.cause_event_id) == (
        "talos_down",
        "telegram",
        DEFAULT_CHAT,
        talos.event_id,
    )
    assert sent.event_id == derived_id(talos.event_id, "notification_sent")
    [sent_queue] = await sent_under(js, "queue")
    assert sent_queue.kind == "queue_full"

    # Within the cooldown (15 minutes by default) the next alert of each kind is dropped...
    await publish(js, backend_down("talos", failures=5), queue_full("2026-11-23T10:01"))
    # ...but another backend's outage is an alert of its own; a redelivery is never sent twice.
    remote = backend_down("remote_api")
    ack = await js.publish(subjects.event_subject(queue), encode(queue), headers={"Nats-Msg-Id": new_id()})
    await wait_until(lambda: processed(js, ack.seq), timeout_s=20)
    await publish(js, remote)

    later = texts(telegram, DEFAULT_CHAT)[2:]
    assert len(later) == 1 and later[0].startswith("Hermes alert: backend remote_api is down")
    assert [s.kind for s in await sent_under(js, "remote_api")] == ["backend_down"]
    assert len(await sent_under(js, "talos")) == 1
    assert len(await sent_under(js, "queue")) == 1
    assert metric(metrics_port, SKIPPED, kind="talos_down", reason="cooldown") == 1
    assert metric(metrics_port, SKIPPED, kind="queue_full", reason="cooldown") == 1
    assert metric(metrics_port, SKIPPED, kind="queue_full", reason="already_sent") == 1


async def test_cooldown_outlives_a_killed_notifier(js_client, telegram, alerter):
    _, js = js_client
    first, _ = alerter(HERMES_ALERT_COOLDOWN_MINUTES="15")
    await publish(js, backend_down())
    assert len(texts(telegram, DEFAULT_CHAT)) == 1
    first.kill()  # SIGKILL: nothing of its memory survives

    second, second_port = alerter(HERMES_ALERT_COOLDOWN_MINUTES="15")
    await publish(js, backend_down(failures=4))
    assert len(texts(telegram, DEFAULT_CHAT)) == 1
    assert metric(second_port, SKIPPED, kind="talos_down", reason="cooldown") == 1
    assert len(await sent_under(js, "talos")) == 1


async def test_alert_types_can_be_switched_off_and_a_cooldown_ends(js_client, telegram, alerter):
    _, js = js_client
    _, metrics_port = alerter(
        HERMES_NOTIFY_ALERT_TYPES="queue_full", HERMES_LOCAL_BACKEND="mac_mini", HERMES_ALERT_COOLDOWN_MINUTES="0.02"
    )
    await publish(js, backend_down("mac_mini"), backend_down("talos"), queue_full("2026-11-23T11:00"))

    [only] = texts(telegram, DEFAULT_CHAT)
    assert only.startswith("Hermes alert: the job queue is full")
    assert await thread_log(js, "mac_mini") == [] and await thread_log(js, "talos") == []
    assert metric(metrics_port, SKIPPED, kind="talos_down", reason="disabled") == 1  # the local backend's
    assert metric(metrics_port, SKIPPED, kind="backend_down", reason="disabled") == 1

    # A cooldown of 1.2 s, measured from the recorded send: the next alert is announced once it is over.
    [sent] = await sent_under(js, "queue")
    await wait_until(lambda: utcnow() - sent.occurred_at > timedelta(minutes=0.02), timeout_s=10)
    await publish(js, queue_full("2026-11-23T11:05", queued=130))
    assert len(texts(telegram, DEFAULT_CHAT)) == 2 and "(130 of 120 open jobs)" in texts(telegram, DEFAULT_CHAT)[1]
    assert metric(metrics_port, SKIPPED, kind="queue_full", reason="cooldown") == 0


# ---- thread, budget and dead-letter alerts ---------------------------------------------------------


async def test_each_alert_type_switches_on_and_off(js_client, telegram, alerter):
    _, js = js_client
    # Two notifiers in turn on one durable, with complementary switches: each type is seen on and off.
    first, first_port = alerter(HERMES_NOTIFY_ALERT_TYPES="job_failure, dead_letters")
    done, failing = new_id(), new_id()
    await publish(
        js,
        opened(done),
        completed(done),
        opened(failing),
        job_failed(failing, job_id="job-7"),
        budget_reached("daily", "all", spent=0.03, budget=0.03, threshold=0.8),
    )
    seq = await store_dead_letter(js, dead_letter())
    await wait_until(lambda: dead_letters_handled(js, seq), timeout_s=20)

    [job_text, dead_text] = texts(telegram, DEFAULT_CHAT)
    assert "a job failed" in job_text and "job-7" in job_text and f"http://hermes.test/#thread={failing}" in job_text
    assert dead_text.startswith("Hermes alert: messages are being dead-lettered")
    assert await sent_under(js, done) == []
    assert metric(first_port, SKIPPED, kind="thread_completed", reason="disabled") == 1
    assert metric(first_port, SKIPPED, kind="budget_threshold", reason="disabled") == 1
    assert first.stop() == 0

    second, second_port = alerter(HERMES_NOTIFY_ALERT_TYPES="thread_finished,budget_threshold")
    done_two, failing_two, broken = new_id(), new_id(), new_id()
    budget = budget_reached("project", "alpha", spent=120, budget=150, threshold=0.8)
    await publish(
        js,
        opened(done_two),
        completed(done_two),
        opened(failing_two),
        job_failed(failing_two),
        opened(broken),
        thread_failed(broken),
        budget,
    )
    seq = await store_dead_letter(js, dead_letter(seq=2))
    await wait_until(lambda: dead_letters_handled(js, seq), timeout_s=20)

    later = texts(telegram, DEFAULT_CHAT)[2:]
    assert len(later) == 3
    finished = next(t for t in later if t.startswith("Hermes finished your idea"))
    assert f"http://hermes.test/#thread={done_two}" in finished
    not_finished = next(t for t in later if t.startswith("Hermes could not finish your idea"))
    assert f"http://hermes.test/#thread={broken}" in not_finished
    assert any(t.startswith("Budget alert: project alpha spend") for t in later)
    assert await sent_under(js, failing_two) == [] and len(await stored_dead_letters(js)) == 2
    assert metric(second_port, SKIPPED, kind="job_failed", reason="disabled") == 1
    assert metric(second_port, SKIPPED, kind="dead_letters", reason="disabled") == 1


async def test_job_failures_cool_down_per_thread_across_a_kill_but_threads_always_finish(js_client, telegram, alerter):
    _, js = js_client
    # The general cooldown is off, so only the per-type one can hold the second job failure back.
    first, first_port = alerter(HERMES_ALERT_COOLDOWN_MINUTES="0", HERMES_ALERT_COOLDOWNS="job_failure=10")
    thread, other = new_id(), new_id()
    first_failure = job_failed(thread, job_id="job-1")
    await publish(js, opened(thread), first_failure)
    # Another message of the thread recorded after it (as the Telegram conversation records a question): the
    # cooldown looks for the latest job failure, not the latest record.
    question = NotificationSent(
        event_id=new_id(),
        aggregate_id=thread,
        occurred_at=utcnow(),
        correlation_id=thread,
        cause_event_id=new_id(),
        kind="question",
        channel="telegram",
        recipient=DEFAULT_CHAT,
        external_id="99",
    )
    await EventStore(js, "test").append([question])
    await publish(js, job_failed(thread, job_id="job-2"), opened(other), job_failed(other, job_id="job-3"))

    failures = texts(telegram, DEFAULT_CHAT)
    assert len(failures) == 2 and "job-1" in failures[0] and "job-3" in failures[1]  # one per thread
    assert [s.cause_event_id for s in await sent_under(js, thread)] == [first_failure.event_id, question.cause_event_id]
    assert metric(first_port, SKIPPED, kind="job_failed", reason="cooldown") == 1
    first.kill()

    second, second_port = alerter(HERMES_ALERT_COOLDOWN_MINUTES="0", HERMES_ALERT_COOLDOWNS="job_failure=10")
    await publish(js, job_failed(thread, job_id="job-4"))
    assert len(texts(telegram, DEFAULT_CHAT)) == 2
    assert metric(second_port, SKIPPED, kind="job_failed", reason="cooldown") == 1
    second.kill()

    # The defaults: 15 minutes for everything but thread_finished, which is never held back. A thread that
    # fails and, continued, completes twice gets all three messages.
    third, third_port = alerter()
    finishing = new_id()
    await publish(
        js,
        opened(finishing),
        job_failed(finishing, job_id="job-5"),
        job_failed(finishing, job_id="job-6"),
        thread_failed(finishing, cause=new_id()),
        completed(finishing, final=1),
        completed(finishing, final=2, reason="answered"),
    )
    ends = texts(telegram, DEFAULT_CHAT)[2:]
    assert len(ends) == 4 and "job-5" in ends[0]
    assert ends[1].startswith("Hermes could not finish your idea")
    assert [t.startswith("Hermes finished your idea") for t in ends[2:]] == [True, True]
    assert all(f"http://hermes.test/#thread={finishing}" in t for t in ends)
    assert metric(third_port, SKIPPED, kind="job_failed", reason="cooldown") == 1
    assert metric(third_port, SKIPPED, kind="thread_completed", reason="cooldown") == 0


async def test_dead_letters_alert_the_operator_once_per_cooldown(js_client, telegram, alerter):
    _, js = js_client
    first, metrics_port = alerter()
    await store_dead_letter(js, dead_letter(ago_s=2 * 86400, seq=10))  # older than a day
    await publish_dead_letter(
        js,
        "orchestrator",
        "orchestrator-commands",
        stream=subjects.COMMANDS_STREAM,
        subject="hermes.cmd.submit_idea",
        sequence=11,
        deliveries=1,
        headers={},
        data=b'{"type": "submit_idea"}',
        reason="validation_failed",
        detail="Object missing required field `idea`",
    )
    fresh_seq = (await js.stream_info(subjects.DLQ_STREAM)).state.last_seq
    await wait_until(lambda: dead_letters_handled(js, fresh_seq), timeout_s=20)

    [alert] = texts(telegram, DEFAULT_CHAT)
    assert alert == (
        "Hermes alert: messages are being dead-lettered: consumer orchestrator-commands could not "
        "process a hermes.cmd.submit_idea message (validation_failed: Object missing required field "
        "`idea`); 2 dead letters are stored. See http://hermes.test/api/system/dead-letters"
    )
    [sent] = await sent_under(js, "dead-letters")
    cause = derived_id("dlq", str(fresh_seq))
    assert (sent.kind, sent.recipient, sent.cause_event_id) == ("dead_letters", DEFAULT_CHAT, cause)
    assert sent.event_id == derived_id(cause, "notification_sent")
    assert metric(metrics_port, SKIPPED, kind="dead_letters", reason="stale") == 1

    # Within the cooldown another dead letter says nothing; a replay marker is no dead letter at all; a record
    # of the notifier's own dead-letter consumer (here: bytes on hermes.dlq.* that are no record) never alerts.
    await store_dead_letter(js, dead_letter(consumer="edge-talos", seq=12))
    marker = DeadLetterReplayed(
        dlq_sequence=fresh_seq,
        consumer="orchestrator-commands",
        stream=subjects.COMMANDS_STREAM,
        subject="hermes.cmd.submit_idea",
        stream_sequence=99,
        corrected=True,
        replayed_at=utcnow(),
    )
    await js.publish(subjects.dlq_replayed_subject(fresh_seq), encode(marker))
    await js.publish(subjects.dlq_subject("junk"), b"\xff not a dead letter")
    await wait_until(lambda: metric(metrics_port, SKIPPED, kind="dead_letters", reason="own") == 1, timeout_s=20)
    last_seq = (await js.stream_info(subjects.DLQ_STREAM)).state.last_seq
    await wait_until(lambda: dead_letters_handled(js, last_seq), timeout_s=20)

    assert len(texts(telegram, DEFAULT_CHAT)) == 1
    assert metric(metrics_port, SKIPPED, kind="dead_letters", reason="cooldown") == 1
    [own] = await stored_messages(js, subjects.dlq_subject(DLQ_DURABLE))  # the junk's record, no loop
    assert own.sequence == last_seq
    assert len(await sent_under(js, "dead-letters")) == 1

    # Every record delivered again (the durable lost, as after a restore): the alert already sent is not
    # sent twice, the others are still cooling down.
    first.kill()
    await js.delete_consumer(subjects.DLQ_STREAM, DLQ_DURABLE)
    _, second_port = alerter()
    await wait_until(lambda: dead_letters_handled(js, last_seq), timeout_s=20)
    assert len(texts(telegram, DEFAULT_CHAT)) == 1
    assert metric(second_port, SKIPPED, kind="dead_letters", reason="already_sent") == 1
    assert metric(second_port, SKIPPED, kind="dead_letters", reason="cooldown") == 1
    assert metric(second_port, SKIPPED, kind="dead_letters", reason="own") == 1


def test_bad_alert_settings_stop_the_notifier():
    known = "known: talos_down, backend_down, queue_full, job_failure, budget_threshold, dead_letters, thread_finished"
    for variable, value, expected in [
        (
            "HERMES_ALERT_COOLDOWNS",
            "job_failure=5,dead_letter=3",
            f"unknown alert type 'dead_letter' in cooldowns; {known}",
        ),
        ("HERMES_ALERT_COOLDOWNS", "talos_down=-1", "cooldown of talos_down must be a finite number of minutes >= 0"),
        ("HERMES_ALERT_COOLDOWNS", "queue_full=soon", "cooldown of queue_full is not a number of minutes"),
        ("HERMES_NOTIFY_ALERT_TYPES", "talos_down,thread_done", f"unknown alert type(s) thread_done; {known}, none"),
    ]:
        run = subprocess.run(
            [sys.executable, "-m", "hermes_notifier"],
            env={**os.environ, variable: value},
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert run.returncode != 0 and expected in run.stderr, run.stderr[-2000:]
