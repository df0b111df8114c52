"""Messages to Telegram chats, sent once: :class:`Replies` sends and records each one, and the helpers here say
where a message belongs (a thread's origin chat; a chat's own aggregate for replies that belong to no thread).

Isolation by construction: every message about a thread goes to the chat in its ``thread_opened`` origin
(:func:`origin_chat`), never to the chat an update came from. Exactly once: every message Hermes sends is
recorded as a ``notification_sent`` with an id derived from its cause (the update's chat and message id, a button
press id, an event id), and a redelivered update or event looks for that record before sending.
"""

from __future__ import annotations

import structlog

from hermes_proto.bus import Delivery, EventStore
from hermes_proto.ids import utcnow

from hermes_notifier import chat, domain
from hermes_notifier.adapters import SendFailed, TelegramSender, ThreadLog
from hermes_notifier.chat import Keyboard
from hermes_notifier.metrics import MESSAGES_FAILED, MESSAGES_SENT

log = structlog.get_logger("hermes.notifier")

TELEGRAM_ORIGIN = "telegram_chat_id"
"""The key of a thread's ``origin`` that names the Telegram chat it came from."""


def chat_aggregate(chat_id: int | str) -> str:
    """The aggregate id under which replies that belong to no thread are recorded, e.g. ``telegram-chat-42``
    (``telegram-chat--100123`` for a group: the sign stays, so no two chats share one)."""
    return f"telegram-chat-{chat_id}"  # a group's -100123 gives telegram-chat--100123: a valid subject token


def origin_chat(origin: dict[str, str] | None) -> str | None:
    """The Telegram chat id (a string) in a thread's ``origin``; None for a thread from elsewhere."""
    return (origin or {}).get(TELEGRAM_ORIGIN)


class Replies:
    """Sends and records messages: every message is a ``notification_sent`` whose id derives from its cause, and
    a redelivered cause (``deliveries`` > 1) first looks for that record, so nothing is sent twice."""

    def __init__(self, sender: TelegramSender, thread_log: ThreadLog, store: EventStore) -> None:
        self.sender = sender
        self.thread_log = thread_log
        self.store = store

    async def say(
        self,
        chat_id: str,
        text: str,
        *,
        cause_id: str,
        aggregate_id: str,
        kind: str,
        delivery: Delivery,
        keyboard: Keyboard | None = None,
        correlation_id: str | None = None,
        edit_message_id: int | None = None,
        check_always: bool = True,
        rendered: bool = False,
    ) -> list[int]:
        """Send ``text`` (split at 4096, MarkdownV2, first line bold; ``keyboard`` on the last part) to
        ``chat_id`` — or, with ``edit_message_id``, put its first part into that message (a new message when it
        can no longer be edited) — and record it. Returns the message ids (empty when it was already sent or
        failed: a failure is recorded, not raised). The record is looked for first, unless ``check_always`` is
        false and this is a first delivery (for a chat's command replies: its records grow with every command,
        and only a redelivery can find one). ``rendered``: ``text`` is MarkdownV2 already, sent as one message (the
        caller keeps it within Telegram's limit)."""
        cause = domain.AlertCause(
            event_id=cause_id,
            aggregate_id=aggregate_id,
            correlation_id=correlation_id or cause_id,
            occurred_at=utcnow(),
        )
        if (check_always or delivery.deliveries > 1) and await self.thread_log.notification_recorded(
            aggregate_id, domain.sent_id(cause_id)
        ):
            return []
        parts = [text] if rendered else domain.split_text(text)
        ids: list[int] = []
        try:
            for index, part in enumerate(parts):
                await delivery.in_progress()
                markdown = part if rendered else chat.render(part, bold_first_line=index == 0)
                buttons = keyboard if index == len(parts) - 1 else None
                if (
                    index == 0
                    and edit_message_id is not None
                    and await self._edited(chat_id, edit_message_id, markdown, buttons, delivery)
                ):
                    ids.append(edit_message_id)
                else:
                    ids.append(
                        await self.sender.send(
                            chat_id, markdown, delivery.in_progress, parse_mode=chat.PARSE_MODE, keyboard=buttons
                        )
                    )
                MESSAGES_SENT.labels(domain.CHANNEL, kind).inc()
        except SendFailed as exc:
            MESSAGES_FAILED.labels(domain.CHANNEL, kind, exc.reason).inc()
            log.warning("reply_failed", kind=kind, recipient=chat_id, reason=exc.reason, error=exc.detail)
            await self.store.append([domain.notification_failed(cause, kind, chat_id, str(exc), utcnow())])
            return []
        await self.store.append([domain.notification_sent(cause, kind, chat_id, ids, utcnow())])
        return ids

    async def _edited(
        self, chat_id: str, message_id: int, rendered: str, buttons: Keyboard | None, delivery: Delivery
    ) -> bool:
        """Put ``rendered`` into message ``message_id``; False when Telegram refuses the edit (the message was
        deleted or is too old), so the caller sends a new one."""
        try:
            await self.sender.edit(
                chat_id,
                message_id,
                rendered,
                parse_mode=chat.PARSE_MODE,
                keyboard=buttons,
                on_wait=delivery.in_progress,
            )
        except SendFailed as exc:
            if exc.reason != "bad_request":
                raise
            log.info("edit_refused_sending_new", reason=exc.detail)
            return False
        return True
