"""The notifier's message handler: an announced event (a thread's end or failure, a budget threshold) in, one
Telegram message (or a few parts) out, and the outcome recorded in the log as ``notification_sent`` /
``notification_failed``."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import structlog

from hermes_proto.base import Event
from hermes_proto.bus import Delivery, EventStore
from hermes_proto.events import BudgetThresholdReached, JobFailed, ThreadFailed
from hermes_proto.ids import utcnow
from hermes_proto.telemetry import bind_ids

from hermes_notifier import domain
from hermes_notifier.adapters import SendFailed, TelegramSender, ThreadLog
from hermes_notifier.metrics import MESSAGES_FAILED, MESSAGES_SENT, NOTIFICATIONS_SKIPPED

log = structlog.get_logger("hermes.notifier")

SENT_PARTS_REMEMBERED = 1000  # causes whose sent parts are kept in memory for a redelivery after a failed append


@dataclass(frozen=True)
class Wording:
    """How messages read: ``web_base_url`` for links; ``draft_max_chars`` of the final draft (0 = none)."""

    web_base_url: str
    draft_max_chars: int


class Notifier:
    """Handles ``thread_completed``, ``job_failed``, ``thread_failed`` and ``budget_threshold_reached``.
    ``sender`` None means notifications are off: events are acknowledged untouched; ``budget_alerts`` False
    acknowledges budget events without a message (reason ``disabled``). A thread's message goes to its Telegram
    chat or ``default_chat``; a budget alert always to ``default_chat`` (the operator's). A redelivered event
    sends nothing twice: a recorded
    ``notification_sent`` (derived id) skips it, and parts already sent by this process are not sent again.
    A ``thread_failed`` caused by the same failure as an announced ``job_failed`` is not announced again.
    A send that fails after retries is recorded and acknowledged (never blocks the consumer); only a log
    error (reading context, appending the outcome) raises, so the message is retried."""

    def __init__(self, sender: TelegramSender | None, thread_log: ThreadLog, store: EventStore, wording: Wording,
                 default_chat: str | None, max_event_age_s: float, budget_alerts: bool = True) -> None:
        self.sender = sender
        self.thread_log = thread_log
        self.store = store
        self.wording = wording
        self.default_chat = default_chat
        self.max_event_age_s = max_event_age_s
        self.budget_alerts = budget_alerts
        self._sent_parts: OrderedDict[str, list[int]] = OrderedDict()

    async def on_event(self, delivery: Delivery[Event]) -> None:
        event = delivery.message
        if domain.about_thread(event):
            bind_ids(thread_id=event.aggregate_id, correlation_id=event.correlation_id,
                     job_id=getattr(event, "job_id", None))
        else:
            bind_ids(aggregate_id=event.aggregate_id, correlation_id=event.correlation_id)
        kind = domain.kind_of(event)
        if self.sender is None:
            NOTIFICATIONS_SKIPPED.labels(kind, "off").inc()
            return
        skip = await self._skip_reason(event)
        if skip is not None:
            self._skipped(kind, skip)
            return
        context = await self._context(event)
        notification = domain.compose(event, context, self.wording.web_base_url, self.wording.draft_max_chars)
        recipient = domain.choose_recipient(context.origin, self.default_chat)
        if notification is None or recipient is None:
            self._skipped(kind, "not_announced" if notification is None else "no_recipient")
            return
        outcome = await self._deliver(self.sender, event, notification, recipient, delivery)
        await self.store.append([outcome])
        self._sent_parts.pop(event.event_id, None)

    async def _context(self, event: Event) -> domain.ThreadContext:
        if domain.about_thread(event) and domain.addressable(event.aggregate_id):
            return await self.thread_log.context(event.aggregate_id)
        return domain.ThreadContext()  # a budget alert: no idea, no origin chat

    async def _skip_reason(self, event: Event) -> str | None:
        if not isinstance(event, domain.NOTIFY_EVENTS):
            return "not_announced"
        if isinstance(event, BudgetThresholdReached) and not self.budget_alerts:
            return "disabled"
        if domain.is_stale(event, utcnow(), self.max_event_age_s):
            return "stale"
        if not domain.addressable(event.aggregate_id):
            return None
        # Records about any cause live under the cause's aggregate id as a thread event (see notification_sent).
        if await self.thread_log.notification_recorded(event.aggregate_id, domain.sent_id(event.event_id)):
            return "already_sent"
        if isinstance(event, ThreadFailed) and await self._covered(event):
            return "covered"
        return None

    async def _covered(self, event: ThreadFailed) -> bool:
        """Whether the job failure behind ``event`` was already announced (one handled earlier: same lane)."""
        job_failed = await self.thread_log.last(event.aggregate_id, JobFailed)
        if job_failed is None or not domain.covers(job_failed, event):
            return False
        return await self.thread_log.notification_recorded(event.aggregate_id, domain.sent_id(job_failed.event_id))

    def _skipped(self, kind: str, reason: str) -> None:
        NOTIFICATIONS_SKIPPED.labels(kind, reason).inc()
        log.info("notification_skipped", kind=kind, reason=reason)

    async def _deliver(self, sender: TelegramSender, event: Event, notification: domain.Notification,
                       recipient: str, delivery: Delivery[Event]) -> Event:
        """Send every part not sent yet; returns the outcome event to record."""
        kind = notification.kind
        parts = domain.split_text(notification.text)
        sent = self._remember(event.event_id)
        try:
            for part in parts[len(sent):]:
                await delivery.in_progress()
                sent.append(await sender.send(recipient, part, on_wait=delivery.in_progress))
                MESSAGES_SENT.labels(domain.CHANNEL, kind).inc()
        except SendFailed as exc:
            self._sent_parts.pop(event.event_id, None)
            MESSAGES_FAILED.labels(domain.CHANNEL, kind, exc.reason).inc()
            partial = f" ({len(sent)} of {len(parts)} parts were sent)" if sent else ""
            log.warning("notification_failed", kind=kind, recipient=recipient, reason=exc.reason,
                        error=exc.detail, parts_sent=len(sent), parts=len(parts))
            return domain.notification_failed(event, kind, recipient, f"{exc}{partial}", utcnow())
        log.info("notification_sent", kind=kind, recipient=recipient, parts=len(parts), message_ids=sent)
        return domain.notification_sent(event, kind, recipient, sent, utcnow())

    def _remember(self, cause_event_id: str) -> list[int]:
        sent = self._sent_parts.setdefault(cause_event_id, [])
        self._sent_parts.move_to_end(cause_event_id)
        while len(self._sent_parts) > SENT_PARTS_REMEMBERED:
            self._sent_parts.popitem(last=False)
        return sent
