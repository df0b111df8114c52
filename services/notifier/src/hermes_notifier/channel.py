"""Telegram as a channel, wired: updates in (polled by :mod:`hermes_notifier.poller`, or pushed to the gateway's
webhook), the ``notifier-inbox`` consumer (:mod:`hermes_notifier.inbox`, :mod:`hermes_notifier.turn`), replies
out (:mod:`hermes_notifier.replies`) and a Telegram thread's conversation (:mod:`hermes_notifier.conversation`,
draft 1 streamed in place by :mod:`hermes_notifier.live`) and an agent run's approvals with buttons
(:mod:`hermes_notifier.approvals`). :func:`open_channel` starts it; :class:`Channel` stops it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

import structlog
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from tenacity import AsyncRetrying, retry_if_exception_type, wait_exponential

from hermes_proto import subjects
from hermes_proto.admission import QueueCap
from hermes_proto.bus import ConsumerRunner, ConsumerSpec, EventStore, subject_lane
from hermes_proto.codec import decode_telegram_update

from hermes_notifier.adapters import SendFailed, TelegramSender, ThreadLog
from hermes_notifier.approvals import Approvals
from hermes_notifier.config import NotifierSettings
from hermes_notifier.conversation import Conversation
from hermes_notifier.inbox import Inbox, InboxSettings
from hermes_notifier.live import LiveDrafts
from hermes_notifier.poller import ALLOWED_UPDATES, Poller
from hermes_notifier.replies import Replies

log = structlog.get_logger("hermes.notifier")

INBOX_DURABLE = "notifier-inbox"
INBOX_BATCH = 4  # a fetched batch is finished before the next fetch: small, so one slow chat holds few others
INBOX_MAX_DELIVER = 10
INBOX_BACKOFF_S = [1.0, 2.0, 5.0, 10.0, 30.0, 60.0]
"""Retries of an update whose handling failed (NATS or JetStream away): about 5 minutes before it is
dead-lettered, so a short outage does not lose a user's message."""


@dataclass
class Channel:
    """The running inbound side: the inbox consumer, the poller (polling mode), the live drafts, and the outbound
    parts that need it (a Telegram thread's conversation, an agent run's approvals with buttons)."""

    conversation: Conversation
    tasks: list[asyncio.Task]
    stoppers: list[Callable[[], None]]
    live: LiveDrafts
    approvals: Approvals

    async def close(self) -> None:
        for stop in self.stoppers:
            stop()
        for task in self.tasks[1:]:  # the poller may be inside a long poll; what it stored is safe
            task.cancel()
        await asyncio.wait(self.tasks, timeout=5)
        await self.live.close()


async def open_channel(
    settings: NotifierSettings,
    nc: NATS,
    js: JetStreamContext,
    sender: TelegramSender,
    thread_log: ThreadLog,
    store: EventStore,
    service: str,
    ack_wait_s: float,
) -> Channel:
    """Start Telegram as a channel per ``settings`` (:class:`~hermes_notifier.config.NotifierSettings`):
    ``telegram_updates`` ``polling`` starts the :class:`Poller`, ``webhook`` registers the webhook with Telegram
    (retried in the background until it succeeds), ``off`` takes no updates; the inbox consumer runs in every
    mode, so updates stored while it was down are still handled."""
    live = LiveDrafts(nc, sender, settings.telegram_stream_interval_s)
    replies = Replies(sender, thread_log, store)
    username = await _bot_username(sender)
    cap = QueueCap(settings.hermes_max_queued_jobs, settings.hermes_queue_full_retry_after_seconds)
    approvals = Approvals(
        replies, settings.allowed_chats(), settings.hermes_web_base_url, settings.notifier_max_event_age_s
    )
    inbox = Inbox(
        replies,
        nc,
        InboxSettings(settings.allowed_chats(), settings.hermes_web_base_url, username, cap),
        live,
        approvals,
    )
    consumer = ConsumerRunner(
        nc,
        js,
        ConsumerSpec(
            stream=subjects.INBOX_STREAM,
            durable=INBOX_DURABLE,
            filter_subjects=[subjects.TELEGRAM_INBOX_ALL],
            decode=decode_telegram_update,
            handler=inbox.on_update,
            batch=INBOX_BATCH,
            ack_wait_s=ack_wait_s,
            max_deliver=INBOX_MAX_DELIVER,
            backoff_s=INBOX_BACKOFF_S,
            lane=subject_lane,
        ),
        service,
    )
    tasks = [asyncio.create_task(consumer.run(), name=INBOX_DURABLE)]
    stoppers = [consumer.stop]
    if settings.telegram_updates == "polling":
        poller = Poller(sender, js, settings.telegram_poll_timeout_s, settings.telegram_retry_backoff_s)
        tasks.append(asyncio.create_task(poller.run(), name="telegram-poller"))
        stoppers.append(poller.stop)
    elif settings.telegram_updates == "webhook":
        tasks.append(asyncio.create_task(_register_webhook(sender, settings), name="telegram-webhook"))
    log.info(
        "telegram_channel_open",
        updates=settings.telegram_updates,
        allowed_chats=len(settings.allowed_chats()),
        bot_username=username,
    )
    conversation = Conversation(replies, live, settings.allowed_chats(), settings.notifier_max_event_age_s)
    return Channel(conversation, tasks, stoppers, live, approvals)


async def _bot_username(sender: TelegramSender) -> str | None:
    """This bot's username (``getMe``), or None when Telegram does not answer now: commands addressed to a
    named bot are then all taken as ours."""
    try:
        return (await sender.api("getMe")).get("username")
    except SendFailed as exc:
        log.warning("get_me_failed", reason=exc.reason)
        return None


async def _register_webhook(sender: TelegramSender, settings: NotifierSettings) -> None:
    secret = settings.telegram_webhook_secret.get_secret_value()
    async for attempt in AsyncRetrying(
        wait=wait_exponential(multiplier=1, max=60), reraise=True, retry=retry_if_exception_type(SendFailed)
    ):
        with attempt:
            await sender.api(
                "setWebhook", url=settings.telegram_webhook_url, secret_token=secret, allowed_updates=ALLOWED_UPDATES
            )
    log.info("telegram_webhook_set", url=settings.telegram_webhook_url)
