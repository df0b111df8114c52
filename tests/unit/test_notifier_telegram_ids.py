"""Where the notifier's Telegram messages belong (:mod:`hermes_notifier.replies`) and which replies answer one of
Hermes's messages (:func:`hermes_notifier.inbox.from_bot`): pure, no bus."""

from __future__ import annotations

from hermes_proto.inbox import TgChat, TgMessage, TgUser

from hermes_notifier.inbox import from_bot
from hermes_notifier.replies import TELEGRAM_ORIGIN, chat_aggregate, origin_chat


def test_a_chat_s_own_aggregate_keeps_a_group_s_sign() -> None:
    assert chat_aggregate(42) == chat_aggregate("42") == "telegram-chat-42"
    assert chat_aggregate(-100123) == "telegram-chat--100123"
    assert chat_aggregate(100123) != chat_aggregate(-100123)
    for chat_id in (42, -100123):  # a valid subject token: no dots, no wildcards, no spaces
        assert not set(chat_aggregate(chat_id)) & set(". *>")


def test_the_origin_chat_is_only_a_telegram_thread_s() -> None:
    assert TELEGRAM_ORIGIN == "telegram_chat_id"  # stored in ThreadOpened.origin: changing it orphans threads
    assert origin_chat({TELEGRAM_ORIGIN: "-100123", "telegram_message_id": "7"}) == "-100123"
    assert origin_chat({"session_key": "k"}) is None
    assert origin_chat({}) is None and origin_chat(None) is None


def test_only_a_bot_s_message_is_one_a_reply_can_answer() -> None:
    chat = TgChat(id=42)
    assert from_bot(TgMessage(message_id=1, chat=chat, sender=TgUser(id=9, is_bot=True)))
    assert not from_bot(TgMessage(message_id=1, chat=chat, sender=TgUser(id=7)))
    assert not from_bot(TgMessage(message_id=1, chat=chat))  # a channel post names no sender
    assert not from_bot(None)
