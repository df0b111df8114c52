"""Inbound channel updates (stream ``HERMES_INBOX``, work queue): what users send Hermes through a chat app.

The notifier's poller (``getUpdates``) or the gateway's webhook route (Telegram pushes there) publishes each
Telegram ``Update`` JSON object as it came on ``hermes.inbox.telegram.<chat_id>`` (:func:`hermes_proto.subjects.telegram_inbox`) with ``Nats-Msg-Id``
``telegram-update-<update_id>``; the notifier's ``notifier-inbox`` consumer turns it into commands and
replies, one chat at a time in order (decoded by :func:`hermes_proto.codec.decode_telegram_update`). The poller confirms an update to Telegram only after JetStream stored it,
and the webhook answers 200 only then, so an update is never lost; a repeat within the dedup window is dropped
by JetStream, and a later one makes the same commands (their ids derive from the chat and message ids).

:class:`TelegramUpdate` is the subset of the Bot API's ``Update`` Hermes reads (``message``,
``edited_message`` is ignored, ``callback_query``); other fields are ignored. Field names follow the Bot API
(https://core.telegram.org/bots/api#update), ``from`` included.
"""

from __future__ import annotations

import msgspec

TELEGRAM_TEXT_MAX_CHARS = 4096
"""The Bot API's longest text message (UTF-16 units); a longer ``text`` cannot come from Telegram."""


class TgUser(msgspec.Struct, kw_only=True):
    id: int
    is_bot: bool = False
    first_name: str = ""
    username: str | None = None


class TgChat(msgspec.Struct, kw_only=True):
    """``type``: private, group, supergroup or channel."""

    id: int
    type: str = "private"


class TgMessage(msgspec.Struct, kw_only=True):
    """A chat message; ``date`` is Unix seconds; ``reply_to_message`` the message it answers, if any."""

    message_id: int
    chat: TgChat
    sender: TgUser | None = msgspec.field(default=None, name="from")
    date: int = 0
    text: str | None = None
    reply_to_message: TgMessage | None = None


class TgCallbackQuery(msgspec.Struct, kw_only=True):
    """A press on an inline keyboard button: ``data`` is the button's ``callback_data`` (1-64 bytes);
    ``message`` the bot's message the button belongs to."""

    id: str
    sender: TgUser = msgspec.field(name="from")
    data: str | None = None
    message: TgMessage | None = None


class TelegramUpdate(msgspec.Struct, kw_only=True):
    update_id: int
    message: TgMessage | None = None
    callback_query: TgCallbackQuery | None = None

    def chat_id(self) -> int | None:
        """The chat the update comes from (None for an update kind Hermes does not read)."""
        if self.message is not None:
            return self.message.chat.id
        if self.callback_query is not None and self.callback_query.message is not None:
            return self.callback_query.message.chat.id
        return None


def telegram_msg_id(update_id: int) -> str:
    """The ``Nats-Msg-Id`` of an update: JetStream drops a repeat within its dedup window."""
    return f"telegram-update-{update_id}"
