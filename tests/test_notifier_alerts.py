"""Operator alerts of the notifier: ``talos_down`` / ``backend_down`` on ``BackendMarkedUnhealthy`` and
``queue_full`` on ``QueueFull``, to the operator's chat, each kind switchable and quiet for a cooldown that the
log (the notifier's own ``notification_sent`` records), not the process, remembers.

The notifier runs as a real process on a real JetStream server against the loopback Telegram Bot API of
tests/test_notifier.py; the test publishes what the backend-router (``BackendMarkedUnhealthy``) and the gateway
(``QueueFull``) publish.
"""

from __future__ import annotations

from datetime import timedelta

from conftest import wait_until
from hermes_proto import subjects
from hermes_proto.codec import encode
from hermes_proto.events import BackendMarkedUnhealthy, QueueFull
from hermes_proto.ids import derived_id, new_id, utcnow
from test_notifier import DEFAULT_CHAT, metric, notifier, processed, publish, telegram, texts, thread_log  # noqa: F401

SKIPPED = "hermes_notifier_notifications_skipped_total"


def backend_down(backend: str = "talos", failures: int = 3) -> BackendMarkedUnhealthy:
    return BackendMarkedUnhealthy(event_id=new_id(), aggregate_id=backend, occurred_at=utcnow(),
                                  correlation_id=new_id(), consecutive_failures=failures,
                                  reason="probe: connection refused")


def queue_full(minute: str, queued: int = 120) -> QueueFull:
    """As the gateway appends it: aggregate ``queue``, id derived from the minute."""
    return QueueFull(event_id=derived_id("queue_full", minute), aggregate_id="queue", occurred_at=utcnow(),
                     correlation_id=new_id(), queued=queued, limit=120, retry_after_s=30.0)


async def test_alerts_reach_the_operator_once_per_cooldown(js_client, telegram, notifier):
    _, js = js_client
    _, metrics_port = notifier()
    talos, queue = backend_down("talos", failures=3), queue_full("2026-11-23T10:00")
    await publish(js, talos, queue)

    [talos_text, queue_text] = sorted(texts(telegram, DEFAULT_CHAT), key=lambda t: "queue" in t)
    assert talos_text.startswith("Hermes alert: backend talos is down (3 health checks failed in a row")
    assert "probe: connection refused" in talos_text
    assert queue_text.startswith("Hermes alert: the job queue is full (120 of 120 open jobs)")
    [sent] = await thread_log(js, "talos", "notification_sent")
    assert (sent.kind, sent.channel, sent.recipient, sent.cause_event_id) == (
        "talos_down", "telegram", DEFAULT_CHAT, talos.event_id)
    assert sent.event_id == derived_id(talos.event_id, "notification_sent")
    [sent_queue] = await thread_log(js, "queue", "notification_sent")
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
    assert [s.kind for s in await thread_log(js, "remote_api", "notification_sent")] == ["backend_down"]
    assert len(await thread_log(js, "talos", "notification_sent")) == 1
    assert len(await thread_log(js, "queue", "notification_sent")) == 1
    assert metric(metrics_port, SKIPPED, kind="talos_down", reason="cooldown") == 1
    assert metric(metrics_port, SKIPPED, kind="queue_full", reason="cooldown") == 1
    assert metric(metrics_port, SKIPPED, kind="queue_full", reason="already_sent") == 1


async def test_cooldown_outlives_a_killed_notifier(js_client, telegram, notifier):
    _, js = js_client
    first, _ = notifier(HERMES_ALERT_COOLDOWN_MINUTES="15")
    await publish(js, backend_down())
    assert len(texts(telegram, DEFAULT_CHAT)) == 1
    first.kill()  # SIGKILL: nothing of its memory survives

    second, second_port = notifier(HERMES_ALERT_COOLDOWN_MINUTES="15")
    await publish(js, backend_down(failures=4))
    assert len(texts(telegram, DEFAULT_CHAT)) == 1
    assert metric(second_port, SKIPPED, kind="talos_down", reason="cooldown") == 1
    assert len(await thread_log(js, "talos", "notification_sent")) == 1


async def test_alert_types_can_be_switched_off_and_a_cooldown_ends(js_client, telegram, notifier):
    _, js = js_client
    _, metrics_port = notifier(HERMES_NOTIFY_ALERT_TYPES="queue_full", HERMES_LOCAL_BACKEND="mac_mini",
                               HERMES_ALERT_COOLDOWN_MINUTES="0.02")
    await publish(js, backend_down("mac_mini"), backend_down("talos"), queue_full("2026-11-23T11:00"))

    [only] = texts(telegram, DEFAULT_CHAT)
    assert only.startswith("Hermes alert: the job queue is full")
    assert await thread_log(js, "mac_mini") == [] and await thread_log(js, "talos") == []
    assert metric(metrics_port, SKIPPED, kind="talos_down", reason="disabled") == 1  # the local backend's
    assert metric(metrics_port, SKIPPED, kind="backend_down", reason="disabled") == 1

    # A cooldown of 1.2 s, measured from the recorded send: the next alert is announced once it is over.
    [sent] = await thread_log(js, "queue", "notification_sent")
    await wait_until(lambda: utcnow() - sent.occurred_at > timedelta(minutes=0.02), timeout_s=10)
    await publish(js, queue_full("2026-11-23T11:05", queued=130))
    assert len(texts(telegram, DEFAULT_CHAT)) == 2 and "(130 of 120 open jobs)" in texts(telegram, DEFAULT_CHAT)[1]
    assert metric(metrics_port, SKIPPED, kind="queue_full", reason="cooldown") == 0
