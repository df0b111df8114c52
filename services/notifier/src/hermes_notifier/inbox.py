"""The ``notifier-inbox`` consumer's handler: one stored Telegram update at a time, one lane per chat, in order.

:class:`Inbox` checks the allow-list (a chat outside it gets one refusal, ever), parses the update with
:func:`hermes_notifier.chat.parse_message` / ``parse_button`` and hands the :class:`~hermes_notifier.chat.Intent`
to a :class:`~hermes_notifier.turn.Turn` (an agent run's approval buttons through
:class:`~hermes_notifier.approvals.Approvals`); it also asks the orchestrator, the router and the learner what a turn
needs (a thread, a chat's threads, the backends, a preference correction).
"""

from __future__ import annotations

from dataclasses import dataclass

import structlog
from nats.aio.client import Client as NATS

from hermes_proto import subjects
from hermes_proto.admission import QueueCap
from hermes_proto.bus import Delivery
from hermes_proto.ids import derived_id
from hermes_proto.inbox import TelegramUpdate, TgMessage
from hermes_proto.queries import (
    QUERY_THREADS,
    BackendsQuery,
    BackendsReply,
    CorrectPreference,
    PreferencesReply,
    ThreadListQuery,
    ThreadListReply,
    ThreadQuery,
    ThreadReply,
    ThreadView,
)
from hermes_proto.rpc import BadReply, ask
from hermes_proto.telemetry import bind_ids

from hermes_notifier import chat, domain
from hermes_notifier.approvals import Approvals
from hermes_notifier.live import LiveDrafts
from hermes_notifier.metrics import INBOUND_UPDATES
from hermes_notifier.replies import TELEGRAM_ORIGIN, Replies, chat_aggregate, origin_chat
from hermes_notifier.turn import Turn

log = structlog.get_logger("hermes.notifier")

QUERY_TIMEOUT_S = 5.0
"""Seconds to wait for the orchestrator or router to answer a chat's query (they answer from SQLite in a few
ms; the margin covers a busy machine) before the chat is told to try again."""


@dataclass(frozen=True)
class InboxSettings:
    """``allowed_chats``: chat ids (as strings) whose messages Hermes takes; ``web_base_url`` for links;
    ``bot_username``: this bot's name, to ignore commands addressed to another bot (None: unknown);
    ``queue_cap``: the queue cap a new idea must fit under."""

    allowed_chats: frozenset[str]
    web_base_url: str
    bot_username: str | None = None
    queue_cap: QueueCap = QueueCap(None)


class Inbox:
    """Handles one stored Telegram update (see the module docstring)."""

    def __init__(
        self,
        replies: Replies,
        nc: NATS,
        settings: InboxSettings,
        live: LiveDrafts | None,
        approvals: Approvals | None = None,
    ) -> None:
        self.replies = replies
        self.approvals = approvals
        self.thread_log = replies.thread_log
        self.store = replies.store
        self.nc = nc
        self.settings = settings
        self.live = live

    async def on_update(self, delivery: Delivery[TelegramUpdate]) -> None:
        update = delivery.message
        chat_id = update.chat_id()
        if chat_id is None:
            INBOUND_UPDATES.labels("ignore").inc()
            return
        chat_key = str(chat_id)
        bind_ids(correlation_id=f"telegram-{chat_key}-{update.update_id}", telegram_chat_id=chat_key)
        if chat_key not in self.settings.allowed_chats:
            await self._refuse(chat_key, delivery)
            return
        if update.callback_query is not None:
            intent = chat.parse_button(update.callback_query.data)
        elif update.message is not None:
            reply_to = update.message.reply_to_message
            intent = chat.parse_message(
                update.message.text, reply_to.text if from_bot(reply_to) else None, self.settings.bot_username
            )
        else:
            intent = chat.IGNORE
        INBOUND_UPDATES.labels(intent.kind).inc()
        log.info("telegram_update", update_id=update.update_id, intent=intent.kind, command=intent.name)
        await Turn(self, update, chat_key, delivery).handle(intent)

    async def _refuse(self, chat_key: str, delivery: Delivery) -> None:
        """One polite refusal per chat, ever (the record under the chat's aggregate says it was sent)."""
        INBOUND_UPDATES.labels("refused").inc()
        aggregate = chat_aggregate(chat_key)
        cause = derived_id("telegram_refusal", chat_key)
        if await self.thread_log.notification_recorded(aggregate, domain.sent_id(cause)):
            log.info("telegram_refused_again", telegram_chat_id=chat_key)
            return
        await self.replies.say(
            chat_key, chat.REFUSAL_TEXT, cause_id=cause, aggregate_id=aggregate, kind="refused", delivery=delivery
        )

    async def ask_thread(self, thread_id: str) -> ThreadView | None:
        reply = await ask(
            self.nc,
            "The orchestrator",
            subjects.QUERY_THREAD,
            ThreadQuery(thread_id=thread_id),
            ThreadReply,
            QUERY_TIMEOUT_S,
        )
        return reply.thread if reply.found else None

    async def chat_threads(self, chat_key: str, limit: int) -> list[ThreadView]:
        query = ThreadListQuery(limit=limit, origin={TELEGRAM_ORIGIN: chat_key})
        reply = await ask(self.nc, "The orchestrator", QUERY_THREADS, query, ThreadListReply, QUERY_TIMEOUT_S)
        # Filtered here too: an orchestrator that predates the filter would answer with every chat's threads.
        return [t for t in reply.threads if origin_chat(t.origin) == chat_key]

    async def backends(self) -> BackendsReply:
        return await ask(
            self.nc, "The backend-router", subjects.QUERY_BACKENDS, BackendsQuery(), BackendsReply, QUERY_TIMEOUT_S
        )

    async def correct(self, command: CorrectPreference) -> PreferencesReply:
        """Send ``command`` to the learner (``hermes.control.preference``); its reply holds the corrected
        preference as now held. Raises :class:`Refused` (``bad_request``), :class:`BusUnavailable`,
        :class:`BadReply` (also when the reply does not hold exactly one preference)."""
        reply = await ask(
            self.nc, "The learner", subjects.CONTROL_PREFERENCE, command, PreferencesReply, QUERY_TIMEOUT_S
        )
        if len(reply.preferences) != 1:
            raise BadReply(
                f"{subjects.CONTROL_PREFERENCE}: {len(reply.preferences)} preferences in the reply, expected 1",
                "The learner",
            )
        return reply


def from_bot(message: TgMessage | None) -> bool:
    """Whether ``message`` (the message a reply answers) was sent by a bot, such as Hermes's question messages."""
    return message is not None and message.sender is not None and message.sender.is_bot
