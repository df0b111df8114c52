"""The notifier's message handlers: an announced event (a thread's end or failure, a budget threshold, a backend
down, a full queue) or a dead-letter record in, one Telegram message (or a few parts) and, for a thread with a
callback URL, one HTTP POST out; each outcome recorded in the log as ``notification_sent`` /
``notification_failed``."""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import structlog

from hermes_proto.base import Event
from hermes_proto.bus import Delivery, EventStore
from hermes_proto.deadletter import DeadLetter
from hermes_proto.events import BudgetThresholdReached, JobFailed, NotificationSent, ThreadCompleted, ThreadFailed
from hermes_proto.ids import utcnow
from hermes_proto.telemetry import bind_ids

from hermes_notifier import chat, domain
from hermes_notifier.adapters import CallbackSender, DeadLetterArchive, SendFailed, TelegramSender, ThreadLog
from hermes_notifier.approvals import APPROVAL_EVENTS, Approvals
from hermes_notifier.conversation import CONVERSATION_EVENTS, Conversation
from hermes_notifier.metrics import MESSAGES_FAILED, MESSAGES_SENT, NOTIFICATIONS_SKIPPED
from hermes_notifier.replies import origin_chat

log = structlog.get_logger("hermes.notifier")

SENT_PARTS_REMEMBERED = 1000  # causes whose sent parts are kept in memory for a redelivery after a failed append


@dataclass(frozen=True)
class Wording:
    """How messages read: ``web_base_url`` for links; ``draft_max_chars`` of the final draft (0 = none)."""

    web_base_url: str
    draft_max_chars: int


class Notifier:
    """Handles ``thread_completed``, ``job_failed``, ``thread_failed``, ``budget_threshold_reached``,
    ``backend_marked_unhealthy`` and ``queue_full`` (:meth:`on_event`) and dead-letter records
    (:meth:`on_dead_letter`).

    Telegram: ``sender`` None means it is off (messages are acknowledged without a message). Each message is
    an alert of one type (:func:`domain.alert_type`: ``thread_finished``, ``job_failure``, ``budget_threshold``,
    ``talos_down``, ``backend_down``, ``queue_full``, ``dead_letters``); a type not in ``alerts.enabled`` is
    acknowledged without a message (reason ``disabled``), and so are budget events when ``budget_alerts`` is
    False. A thread's message goes to its Telegram chat or ``default_chat``, with a link to the thread in the web
    UI; budget, operator and dead-letter alerts always go to ``default_chat``. An alert is dropped (reason
    ``cooldown``) while the latest Telegram ``notification_sent`` of the same alert type under its aggregate id
    (the thread, the backend, ``queue``, the budget, ``dead-letters``) is younger than
    ``alerts.cooldown_for(kind)``: the log, not memory, holds the cooldown, so it outlives a restart, and
    records of other kinds under the same aggregate (e.g. a thread's questions) neither start nor end it.

    Dead letters (:meth:`on_dead_letter`): a record of ``HERMES_DLQ`` becomes a ``dead_letters`` alert
    (aggregate ``dead-letters``, cause id derived from its DLQ sequence) with the number of stored records
    (read from ``dead_letters``; None: left out). A record of the notifier's own dead-letter consumer is skipped
    (reason ``own``), so a record it cannot read never feeds an alert loop.

    Agent runs (threads of kind ``agent``): their ``thread_completed`` carries the run's answer
    (``agent_run_completed``) and their ``thread_failed`` why the run stopped, never a draft; a failed model turn
    (``job_failed``) is not announced, the run's end says it. Their approvals (``approval_*``) go to ``approvals``
    (None: Telegram takes no updates, so no buttons could be answered).

    Callbacks: when the ``thread_opened`` of a completed or failed thread has a ``callback_url``, ``callbacks``
    POSTs the result there (channel ``webhook``), whether Telegram is on or not.

    A redelivered event sends nothing twice: a recorded ``notification_sent`` (derived id, one per channel)
    skips it, and parts already sent by this process are not sent again. A ``thread_failed`` caused by the same
    failure as an announced ``job_failed`` is not announced again on Telegram. A send that fails after retries
    is recorded and acknowledged (never blocks the consumer); only a log error (reading context, appending the
    outcome) raises, so the message is retried."""

    def __init__(
        self,
        sender: TelegramSender | None,
        thread_log: ThreadLog,
        store: EventStore,
        wording: Wording,
        default_chat: str | None,
        max_event_age_s: float,
        budget_alerts: bool = True,
        callbacks: CallbackSender | None = None,
        alerts: domain.AlertPolicy = domain.AlertPolicy(),  # noqa: B008 (frozen: shared safely)
        conversation: Conversation | None = None,
        dead_letters: DeadLetterArchive | None = None,
        allowed_chats: frozenset[str] | None = None,
        approvals: Approvals | None = None,
    ) -> None:
        self.sender = sender
        self.thread_log = thread_log
        self.store = store
        self.wording = wording
        self.default_chat = default_chat
        self.max_event_age_s = max_event_age_s
        self.budget_alerts = budget_alerts
        self.callbacks = callbacks
        self.alerts = alerts
        self.dead_letters = dead_letters
        self.conversation = conversation
        self.approvals = approvals
        self.allowed_chats = allowed_chats
        self._sent_parts: OrderedDict[str, list[int]] = OrderedDict()

    async def on_event(self, delivery: Delivery[Event]) -> None:
        event = delivery.message
        if domain.about_thread(event):
            bind_ids(
                thread_id=event.aggregate_id, correlation_id=event.correlation_id, job_id=getattr(event, "job_id", None)
            )
        else:
            bind_ids(aggregate_id=event.aggregate_id, correlation_id=event.correlation_id)
        context = None
        if self.sender is None:
            self._skipped(domain.kind_of(event, self.alerts.local_backend), "off", quiet=True)
        elif isinstance(event, CONVERSATION_EVENTS):
            if self.conversation is not None:  # a Telegram thread's draft 1 and questions
                await self.conversation.on_event(event, delivery)
        elif isinstance(event, APPROVAL_EVENTS):
            if self.approvals is not None:  # a Telegram agent run's approvals, with buttons
                await self.approvals.on_event(event, delivery)
        elif isinstance(event, domain.ALERT_EVENTS):
            await self._alert(self.sender, event, delivery)
        else:
            context = await self._telegram(self.sender, event, delivery)
        if self.callbacks is not None and isinstance(event, domain.CALLBACK_EVENTS):
            await self._callback(self.callbacks, event, delivery, context)

    async def _telegram(
        self, sender: TelegramSender, event: Event, delivery: Delivery[Event]
    ) -> domain.ThreadContext | None:
        """Announce ``event`` on Telegram; returns the thread context when it was read (None if skipped)."""
        kind = domain.kind_of(event)
        skip = await self._skip_reason(event)
        if skip is not None:
            self._skipped(kind, skip)
            return None
        context = await self._context(event)
        notification = domain.compose(event, context, self.wording.web_base_url, self.wording.draft_max_chars)
        recipient = domain.choose_recipient(context.origin, self.default_chat)
        if notification is None or recipient is None:
            self._skipped(kind, "not_announced" if notification is None else "no_recipient")
            return context
        from_chat = origin_chat(dict(context.origin))
        if from_chat is not None and self.allowed_chats is not None and from_chat not in self.allowed_chats:
            self._skipped(kind, "not_allowed")  # any producer may name a chat in a thread's origin
            return context
        keyboard = None
        if isinstance(event, ThreadCompleted) and from_chat is not None and not context.agent_run:
            keyboard = chat.rating_keyboard(event.aggregate_id)  # a Telegram thread is rated from the phone
        await self._send_and_record(sender, event, notification, recipient, delivery, keyboard)
        return context

    async def on_dead_letter(self, delivery: Delivery[DeadLetter]) -> None:
        """Alert the operator that ``delivery``'s dead letter was stored, unless it is the notifier's own, or
        Telegram is off, or the alert is switched off, stale, already sent or cooling down."""
        record, kind = delivery.message, domain.DEAD_LETTERS
        cause = domain.dead_letter_cause(record, delivery.stream_sequence)
        bind_ids(aggregate_id=cause.aggregate_id, correlation_id=cause.correlation_id)
        if record.consumer == domain.DEAD_LETTER_CONSUMER:
            self._skipped(kind, "own")
            return
        if self.sender is None:
            self._skipped(kind, "off", quiet=True)
            return
        skip = await self._alert_skip_reason(cause, kind)
        if skip is not None:
            self._skipped(kind, skip)
            return
        stored = await self.dead_letters.count() if self.dead_letters is not None else None
        text = domain.dead_letter_text(record, stored, self.wording.web_base_url)
        await self._to_operator(self.sender, cause, domain.Notification(kind, text), delivery)

    async def _send_and_record(
        self,
        sender: TelegramSender,
        event: domain.Cause,
        notification: domain.Notification,
        recipient: str,
        delivery: Delivery[Any],
        keyboard: chat.Keyboard | None = None,
    ) -> None:
        outcome = await self._deliver(sender, event, notification, recipient, delivery, keyboard)
        await self.store.append([outcome])
        self._sent_parts.pop(event.event_id, None)

    async def _alert(self, sender: TelegramSender, event: Event, delivery: Delivery[Event]) -> None:
        """Send an operator alert to ``default_chat`` unless switched off, stale, already sent or cooling down."""
        kind = domain.kind_of(event, self.alerts.local_backend)
        skip = await self._alert_skip_reason(event, kind)
        if skip is not None:
            self._skipped(kind, skip)
            return
        text = domain.alert_text(event, self.wording.web_base_url)
        if text is None:
            self._skipped(kind, "not_announced")
            return
        await self._to_operator(sender, event, domain.Notification(kind, text), delivery)

    async def _to_operator(
        self, sender: TelegramSender, cause: domain.Cause, notification: domain.Notification, delivery: Delivery[Any]
    ) -> None:
        if self.default_chat is None:
            self._skipped(notification.kind, "no_recipient")
            return
        await self._send_and_record(sender, cause, notification, self.default_chat, delivery)

    async def _alert_skip_reason(self, cause: domain.Cause, kind: str) -> str | None:
        if not self.alerts.allows(kind):
            return "disabled"
        if domain.is_stale(cause, utcnow(), self.max_event_age_s):
            return "stale"
        if not domain.addressable(cause.aggregate_id):
            return None
        # The latest alert of this type under the aggregate: this very one (a redelivery) or the one to cool from.
        last = await self._latest_alert(cause.aggregate_id, kind)
        if last is not None and last.cause_event_id == cause.event_id:
            return "already_sent"
        if domain.in_cooldown(last, utcnow(), self.alerts.cooldown_for(kind)):
            return "cooldown"
        return None

    async def _latest_alert(self, aggregate_id: str, kind: str) -> NotificationSent | None:
        """The latest Telegram alert of ``kind``'s type under ``aggregate_id``. An operator aggregate holds
        almost only its own alerts, so its latest record answers; only when that is of another type are the
        aggregate's records read in order."""
        kind_type = domain.alert_type(kind)
        last = await self.thread_log.last(aggregate_id, NotificationSent)
        if last is None or kind_type is None:
            return None
        if domain.is_alert_of(last, kind_type):
            return last
        return domain.latest_alert(await self.thread_log.notifications(aggregate_id), kind_type)

    async def _callback(
        self,
        callbacks: CallbackSender,
        event: ThreadCompleted | ThreadFailed,
        delivery: Delivery[Event],
        context: domain.ThreadContext | None,
    ) -> None:
        """POST the thread's result to its ``callback_url`` (if it has one) and record the outcome."""
        if not domain.addressable(event.aggregate_id):
            return
        context = context or await self.thread_log.context(event.aggregate_id)
        if context.callback_url is None:
            return
        kind, channel = event.type_name(), domain.WEBHOOK
        if domain.is_stale(event, utcnow(), self.max_event_age_s):
            self._skipped(kind, "stale", channel)
            return
        if await self.thread_log.notification_recorded(event.aggregate_id, domain.sent_id(event.event_id, channel)):
            self._skipped(kind, "already_sent", channel)
            return
        recipient = domain.callback_recipient(context.callback_url)
        body = json.dumps(domain.callback_body(event, context, self.wording.web_base_url)).encode()
        await delivery.in_progress()
        try:
            status = await callbacks.post(context.callback_url, body, event.event_id, on_wait=delivery.in_progress)
        except SendFailed as exc:
            MESSAGES_FAILED.labels(channel, kind, exc.reason).inc()
            log.warning("callback_failed", kind=kind, recipient=recipient, reason=exc.reason, error=exc.detail)
            outcome: Event = domain.notification_failed(event, kind, recipient, str(exc), utcnow(), channel)
        else:
            MESSAGES_SENT.labels(channel, kind).inc()
            log.info("callback_sent", kind=kind, recipient=recipient, status=status)
            outcome = domain.notification_sent(event, kind, recipient, [], utcnow(), channel)
        await self.store.append([outcome])

    async def _context(self, event: Event) -> domain.ThreadContext:
        if domain.about_thread(event) and domain.addressable(event.aggregate_id):
            return await self.thread_log.context(event.aggregate_id)
        return domain.ThreadContext()  # a budget alert: no idea, no origin chat

    async def _skip_reason(self, event: Event) -> str | None:
        if not isinstance(event, domain.NOTIFY_EVENTS):
            return "not_announced"
        kind = domain.kind_of(event)
        if not self.alerts.allows(kind) or (isinstance(event, BudgetThresholdReached) and not self.budget_alerts):
            # The end of a thread that came from Telegram is the conversation's last message, not an alert.
            if not (domain.alert_type(kind) == "thread_finished" and await self._from_telegram(event)):
                return "disabled"
        if domain.is_stale(event, utcnow(), self.max_event_age_s):
            return "stale"
        if not domain.addressable(event.aggregate_id):
            return None
        # Records about any cause live under the cause's aggregate id as a thread event (see notification_sent):
        # a few per thread or budget, read once for "already sent?" and for the cooldown.
        records = await self.thread_log.notifications(event.aggregate_id)
        if any(record.event_id == domain.sent_id(event.event_id) for record in records):
            return "already_sent"
        if isinstance(event, ThreadFailed) and await self._covered(event):
            return "covered"
        kind_type = domain.alert_type(kind)
        last = domain.latest_alert(records, kind_type) if kind_type else None
        if domain.in_cooldown(last, utcnow(), self.alerts.cooldown_for(kind)):
            return "cooldown"
        return None

    async def _from_telegram(self, event: Event) -> bool:
        if not domain.addressable(event.aggregate_id):
            return False
        return origin_chat(dict((await self.thread_log.context(event.aggregate_id)).origin)) is not None

    async def _covered(self, event: ThreadFailed) -> bool:
        """Whether the job failure behind ``event`` was already announced (one handled earlier: same lane)."""
        job_failed = await self.thread_log.last(event.aggregate_id, JobFailed)
        if job_failed is None or not domain.covers(job_failed, event):
            return False
        return await self.thread_log.notification_recorded(event.aggregate_id, domain.sent_id(job_failed.event_id))

    def _skipped(self, kind: str, reason: str, channel: str = domain.CHANNEL, quiet: bool = False) -> None:
        NOTIFICATIONS_SKIPPED.labels(channel, kind, reason).inc()
        if not quiet:
            log.info("notification_skipped", kind=kind, reason=reason, channel=channel)

    async def _deliver(
        self,
        sender: TelegramSender,
        event: domain.Cause,
        notification: domain.Notification,
        recipient: str,
        delivery: Delivery[Any],
        keyboard: chat.Keyboard | None = None,
    ) -> Event:
        """Send every part not sent yet (MarkdownV2, the first line bold, ``keyboard`` under the last part);
        returns the outcome event to record."""
        kind = notification.kind
        parts = domain.split_text(notification.text)
        sent = self._remember(event.event_id)
        try:
            for index in range(len(sent), len(parts)):
                await delivery.in_progress()
                text = chat.render(parts[index], bold_first_line=index == 0)
                buttons = keyboard if index == len(parts) - 1 else None
                sent.append(
                    await sender.send(
                        recipient, text, delivery.in_progress, parse_mode=chat.PARSE_MODE, keyboard=buttons
                    )
                )
                MESSAGES_SENT.labels(domain.CHANNEL, kind).inc()
        except SendFailed as exc:
            self._sent_parts.pop(event.event_id, None)
            MESSAGES_FAILED.labels(domain.CHANNEL, kind, exc.reason).inc()
            partial = f" ({len(sent)} of {len(parts)} parts were sent)" if sent else ""
            log.warning(
                "notification_failed",
                kind=kind,
                recipient=recipient,
                reason=exc.reason,
                error=exc.detail,
                parts_sent=len(sent),
                parts=len(parts),
            )
            return domain.notification_failed(event, kind, recipient, f"{exc}{partial}", utcnow())
        log.info("notification_sent", kind=kind, recipient=recipient, parts=len(parts), message_ids=sent)
        return domain.notification_sent(event, kind, recipient, sent, utcnow())

    def _remember(self, cause_event_id: str) -> list[int]:
        sent = self._sent_parts.setdefault(cause_event_id, [])
        self._sent_parts.move_to_end(cause_event_id)
        while len(self._sent_parts) > SENT_PARTS_REMEMBERED:
            self._sent_parts.popitem(last=False)
        return sent
