"""The middle of a Telegram thread's conversation (:class:`Conversation`): draft 1 written into the "drafting…"
message it streamed into, then what the thread assumed from learned preferences and the questions, one message
each with buttons. It handles ``draft_presented`` and ``questions_proposed`` from the ``notifier-events``
consumer, in the thread's lane, so in log order with its completion.
"""

from __future__ import annotations

from collections.abc import Sequence

from hermes_proto.bus import Delivery
from hermes_proto.events import Assumption, DraftPresented, NotificationSent, QuestionsProposed
from hermes_proto.ids import derived_id, utcnow

from hermes_notifier import chat, domain
from hermes_notifier.live import LiveDrafts
from hermes_notifier.replies import Replies, origin_chat

IDEA_RECEIVED, DRAFT_SHOWN, QUESTIONS_SHOWN = "idea_received", "draft_presented", "questions_proposed"
"""Record kinds: the "drafting…" acknowledgement of an idea (draft 1 is written into it), draft 1, a question."""
ASSUMPTIONS_SHOWN = "assumptions"
CONVERSATION_EVENTS = (DraftPresented, QuestionsProposed)
"""Events of a Telegram thread's conversation, handled by :class:`Conversation` on the ``notifier-events``
consumer (in the thread's lane, so in log order with its completion)."""


class Conversation:
    """The messages of a Telegram thread's middle: draft 1 (into the "drafting…" message, where it streamed)
    and the questions, one message each with buttons. Other threads are left to the plain notifications."""

    def __init__(
        self, replies: Replies, live: LiveDrafts | None, allowed_chats: frozenset[str], max_event_age_s: float
    ) -> None:
        self.replies = replies
        self.thread_log = replies.thread_log
        self.live = live
        self.allowed_chats = allowed_chats
        self.max_event_age_s = max_event_age_s

    async def on_event(self, event: DraftPresented | QuestionsProposed, delivery: Delivery) -> None:
        """Show the event in the thread's origin chat; nothing for a thread from elsewhere, a chat outside the
        allow-list (any producer may name a chat in ``origin``) or an event older than ``max_event_age_s``."""
        if not domain.addressable(event.aggregate_id) or domain.is_stale(event, utcnow(), self.max_event_age_s):
            return
        context = await self.thread_log.context(event.aggregate_id)
        chat_id = origin_chat(dict(context.origin))
        if chat_id is None or chat_id not in self.allowed_chats:
            return
        if isinstance(event, DraftPresented):
            await self._draft(event, chat_id, delivery)
        elif event.questions:  # without questions the completion message says what was assumed
            await self._assumptions(event, context.assumptions, chat_id, delivery)
            await self._questions(event, chat_id, delivery)

    async def _draft(self, event: DraftPresented, chat_id: str, delivery: Delivery) -> None:
        if event.draft_number != 1:
            return  # draft 2 comes with the thread's completion message
        if self.live is not None:
            await self.live.finish(event.aggregate_id)
        records = await self.thread_log.all(event.aggregate_id, NotificationSent)
        ack = next((r for r in records if r.kind == IDEA_RECEIVED and r.external_id), None)
        text = chat.draft_text(
            1,
            event.text,
            event.backend,
            event.model,
            event.prompt_tokens + event.completion_tokens,
            event.latency_ms,
            False,
        )
        await self.replies.say(
            chat_id,
            text,
            cause_id=event.event_id,
            aggregate_id=event.aggregate_id,
            kind=DRAFT_SHOWN,
            delivery=delivery,
            correlation_id=event.correlation_id,
            edit_message_id=int(ack.external_id.split(",")[0]) if ack else None,
        )

    async def _assumptions(
        self, event: QuestionsProposed, applied: Sequence[Assumption], chat_id: str, delivery: Delivery
    ) -> None:
        """One message before the questions: what draft 1 applied (``applied``) and what was not asked because a
        learned preference answers it, with how to correct them."""
        text = domain.assumptions_text(domain.merged_assumptions(applied, event.assumptions))
        if text:
            await self.replies.say(
                chat_id,
                text,
                cause_id=derived_id(event.event_id, ASSUMPTIONS_SHOWN),
                aggregate_id=event.aggregate_id,
                kind=ASSUMPTIONS_SHOWN,
                delivery=delivery,
                correlation_id=event.correlation_id,
            )

    async def _questions(self, event: QuestionsProposed, chat_id: str, delivery: Delivery) -> None:
        thread_id = event.aggregate_id
        for index in range(len(event.questions)):
            text, keyboard = chat.question_message(thread_id, index, event.questions)
            await self.replies.say(
                chat_id,
                text,
                cause_id=derived_id(event.event_id, "question", str(index)),
                aggregate_id=thread_id,
                kind=QUESTIONS_SHOWN,
                delivery=delivery,
                keyboard=keyboard,
                correlation_id=event.correlation_id,
            )
