"""Composition of the notifier process: NATS, the Telegram sender, the callback sender, the ``notifier-events``
consumer and the ``notifier-dead-letters`` consumer."""

from __future__ import annotations

import asyncio
import warnings

import structlog
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from telegram.warnings import PTBDeprecationWarning

from hermes_proto import keyring, subjects
from hermes_proto.bus import ConsumerRunner, ConsumerSpec, EventStore, aggregate_lane, close, connect, ensure_streams
from hermes_proto.codec import decode_dead_letter, decode_event
from hermes_proto.service import stop_on_signals
from hermes_proto.telemetry import configure_logging, configure_tracing, start_metrics_server

from hermes_notifier.adapters import (
    CallbackPolicy,
    CallbackSender,
    DeadLetterArchive,
    RetryPolicy,
    TelegramSender,
    ThreadLog,
)
from hermes_notifier.approvals import APPROVAL_EVENTS
from hermes_notifier.channel import open_channel
from hermes_notifier.config import NotifierSettings
from hermes_notifier.conversation import CONVERSATION_EVENTS
from hermes_notifier.domain import DEAD_LETTER_CONSUMER, NOTIFY_EVENTS, AlertPolicy
from hermes_notifier.handlers import Notifier, Wording

SERVICE = "notifier"
DURABLE = "notifier-events"
BATCH = 8  # small: messages of one thread wait for each other, and a flood wait can last seconds
log = structlog.get_logger("hermes.notifier")


def ack_wait_s(settings: NotifierSettings) -> float:
    """Seconds JetStream waits for an ack: the longest gap between two progress signals, plus slack. The
    handler signals progress before every Telegram part, every callback and every wait between retries, so a
    gap is at most one wait plus one call: for Telegram the longest flood wait plus one call's connect, write,
    read and pool timeouts; for a callback the longest backoff plus one attempt."""
    telegram = settings.telegram_max_retry_after_s + 4 * settings.telegram_timeout_s
    callback = settings.hermes_callback_max_backoff_s + settings.hermes_callback_timeout_s
    return max(telegram, callback) + 10.0


def build_sender(settings: NotifierSettings) -> TelegramSender | None:
    token = settings.bot_token()
    if token is None:
        return None
    policy = RetryPolicy(
        attempts=max(1, settings.telegram_send_attempts),
        max_retry_after_s=settings.telegram_max_retry_after_s,
        backoff_s=settings.telegram_retry_backoff_s,
    )
    return TelegramSender(token, settings.telegram_api_base_url, policy, settings.telegram_timeout_s)


def build_callbacks(settings: NotifierSettings) -> CallbackSender:
    return CallbackSender(
        CallbackPolicy(
            attempts=settings.hermes_callback_attempts,
            backoff_s=settings.hermes_callback_backoff_s,
            max_backoff_s=settings.hermes_callback_max_backoff_s,
            timeout_s=settings.hermes_callback_timeout_s,
        ),
        settings.outbound_policy(),
    )


def alert_policy(settings: NotifierSettings) -> AlertPolicy:
    return AlertPolicy(
        enabled=settings.alert_types(),
        cooldown_s=settings.hermes_alert_cooldown_minutes * 60.0,
        cooldowns_s=settings.alert_cooldowns_s(),
        local_backend=settings.hermes_local_backend,
    )


def dead_letter_consumer(
    nc: NATS, js: JetStreamContext, notifier: Notifier, settings: NotifierSettings
) -> ConsumerRunner:
    """The ``notifier-dead-letters`` durable on the dead-letter records (never the replay markers): one lane,
    so each alert sees the record of the one before (the cooldown). A record it cannot decode is dead-lettered
    under its own name, which :meth:`Notifier.on_dead_letter` skips."""
    return ConsumerRunner(
        nc,
        js,
        ConsumerSpec(
            stream=subjects.DLQ_STREAM,
            durable=DEAD_LETTER_CONSUMER,
            filter_subjects=[subjects.DLQ_RECORDS],
            decode=decode_dead_letter,
            handler=notifier.on_dead_letter,
            ack_wait_s=ack_wait_s(settings),
            batch=BATCH,
        ),
        SERVICE,
    )


async def run(settings: NotifierSettings, stop: asyncio.Event | None = None) -> None:
    """Run until ``stop`` is set (or SIGINT/SIGTERM)."""
    configure_logging(SERVICE, settings.log_level, settings.log_file)
    configure_tracing(SERVICE)
    # PTB 22 warns on every flood wait about a future type of ``retry_after``; adapters read both types.
    warnings.filterwarnings("ignore", category=PTBDeprecationWarning, message=".*retry_after.*")
    start_metrics_server(settings.metrics_port)
    stop = stop or stop_on_signals()

    sender = build_sender(settings)
    if sender is None:
        log.warning(
            "notifications_off", reason="TELEGRAM_BOT_TOKEN is not set; no Telegram messages (callbacks still go out)"
        )
    else:
        await sender.start()
        log.info(
            "telegram_ready",
            api_base_url=settings.telegram_api_base_url or "python-telegram-bot default",
            default_chat_set=settings.telegram_chat_id is not None,
            budget_alerts=settings.hermes_notify_budget_alerts,
            alert_types=sorted(settings.alert_types()),
            alert_cooldown_minutes=settings.hermes_alert_cooldown_minutes,
            alert_cooldowns_s=settings.alert_cooldowns_s(),
        )
    callbacks = build_callbacks(settings)

    nc = await connect(settings, SERVICE)
    js = nc.jetstream()
    await ensure_streams(js, settings)
    await keyring.start(js, settings.hermes_seal_personal_data)
    thread_log, store = ThreadLog(js), EventStore(js, SERVICE)
    channel = None
    if sender is not None and settings.telegram_updates != "off":
        channel = await open_channel(settings, nc, js, sender, thread_log, store, SERVICE, ack_wait_s(settings))
    notifier = Notifier(
        sender,
        thread_log,
        store,
        Wording(settings.hermes_web_base_url, settings.telegram_draft_max_chars),
        settings.telegram_chat_id,
        settings.notifier_max_event_age_s,
        budget_alerts=settings.hermes_notify_budget_alerts,
        callbacks=callbacks,
        alerts=alert_policy(settings),
        conversation=channel.conversation if channel else None,
        dead_letters=DeadLetterArchive(js),
        allowed_chats=settings.allowed_chats(),
        approvals=channel.approvals if channel else None,
    )
    # One lane per aggregate (thread, budget, backend, queue): a thread's messages stay in log order, one chat's
    # flood wait or one slow callback holds no other thread. Alerts are consumed even when switched off, so the
    # switches never change the durable's filters (a skip is counted instead).
    consumer = ConsumerRunner(
        nc,
        js,
        ConsumerSpec(
            stream=subjects.EVENTS_STREAM,
            durable=DURABLE,
            filter_subjects=[
                subjects.event_type_filter(t) for t in NOTIFY_EVENTS + CONVERSATION_EVENTS + APPROVAL_EVENTS
            ],
            decode=decode_event,
            handler=notifier.on_event,
            ack_wait_s=ack_wait_s(settings),
            batch=BATCH,
            lane=aggregate_lane,
        ),
        SERVICE,
    )
    task = asyncio.create_task(consumer.run(), name="notifier-events")
    dead_letters = dead_letter_consumer(nc, js, notifier, settings)
    dead_letters_task = asyncio.create_task(dead_letters.run(), name=DEAD_LETTER_CONSUMER)
    log.info("notifier_started", nats=settings.nats_url, consumer=DURABLE, dead_letters=DEAD_LETTER_CONSUMER)

    await stop.wait()
    log.info("notifier_stopping")
    consumer.stop()
    dead_letters.stop()
    await asyncio.wait([task, dead_letters_task], timeout=5)
    if channel is not None:
        await channel.close()
    if sender is not None:
        await sender.close()
    await callbacks.close()
    await close(nc)
