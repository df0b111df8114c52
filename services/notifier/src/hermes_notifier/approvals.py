"""Agent runs' approvals in Telegram (:class:`Approvals`): a tool call that waits for a person is shown in the chat
the run came from, with buttons ("Approve once", "Approve for run", "Reject"), and the message shows how it was
answered once it is (here, in the web UI, or nobody in time).

It handles ``approval_requested`` / ``_granted`` / ``_denied`` / ``_expired`` from the ``notifier-events`` consumer
(in the run's lane, so in log order), and gives :class:`~hermes_notifier.turn.Turn` what a button press needs: the
request, whether it is still open, and the message to edit. Only a run whose ``thread_opened`` names a Telegram chat
(``origin.telegram_chat_id``) on the allow-list is shown; a run from elsewhere is answered where it came from.

The buttons' ``callback_data`` is ``ap:<approval_id>:<o|r|x>`` (:data:`~hermes_notifier.chat.APPROVAL_CHOICES`); the
run is named by the message's last line (``Agent run <run_id>``), and a press is taken only when that run's origin
chat is the chat the press came from and the run's log holds that approval.
"""

from __future__ import annotations

from dataclasses import dataclass

import structlog

from hermes_proto.agents import (
    ApprovalDenied,
    ApprovalExpired,
    ApprovalGranted,
    ApprovalRequested,
)
from hermes_proto.bus import Delivery
from hermes_proto.ids import derived_id, utcnow

from hermes_notifier import chat, domain
from hermes_notifier.adapters import SendFailed
from hermes_notifier.replies import Replies, origin_chat

log = structlog.get_logger("hermes.notifier")

APPROVAL_SHOWN = "approval_requested"
"""The record kind of an approval message."""
APPROVAL_EVENTS = (ApprovalRequested, ApprovalGranted, ApprovalDenied, ApprovalExpired)
"""Events of an agent run handled by :class:`Approvals` on the ``notifier-events`` consumer."""
Decision = ApprovalGranted | ApprovalDenied | ApprovalExpired


def approval_cause(approval_id: str) -> str:
    """The cause id of an approval's message (its ``notification_sent`` id derives from it): one per approval."""
    return derived_id(approval_id, "telegram_approval")


def closed_line(decision: Decision, tool: str) -> str:
    """The first line of an approval message once ``decision`` answered it."""
    match decision:
        case ApprovalGranted():
            return chat.approval_closed_line(decision.scope, tool, f"{decision.by} via {decision.channel}")
        case ApprovalDenied():
            return chat.approval_closed_line("rejected", tool, f"{decision.by} via {decision.channel}")
    return chat.approval_closed_line("expired", tool)


@dataclass(frozen=True)
class OwnedRun:
    """An agent run of this chat: its id and context (task, user, how it ended)."""

    run_id: str
    context: domain.ThreadContext


class Approvals:
    """Shows approval requests of Telegram runs with buttons and keeps their messages up to date."""

    def __init__(
        self, replies: Replies, allowed_chats: frozenset[str], web_base_url: str, max_event_age_s: float
    ) -> None:
        self.replies = replies
        self.thread_log = replies.thread_log
        self.allowed_chats = allowed_chats
        self.web_base_url = web_base_url
        self.max_event_age_s = max_event_age_s

    async def on_event(self, event: ApprovalRequested | Decision, delivery: Delivery) -> None:
        """Show a request in its run's chat; edit its message when it is answered or expires. Nothing for a run
        from elsewhere, a chat outside the allow-list (any producer may name a chat in ``origin``) or an event older
        than ``max_event_age_s``."""
        run_id = event.aggregate_id
        if not domain.addressable(run_id) or domain.is_stale(event, utcnow(), self.max_event_age_s):
            return
        context = await self.thread_log.context(run_id)
        chat_id = origin_chat(dict(context.origin))
        if not context.agent_run or chat_id is None or chat_id not in self.allowed_chats:
            return
        if isinstance(event, ApprovalRequested):
            await self._ask(event, context, chat_id, delivery)
            return
        request = await self.request(run_id, event.approval_id)
        message_id = await self.message_of(run_id, event.approval_id)
        if request is not None and message_id is not None:
            await self.show(chat_id, message_id, request, context, closed_line(event, request.name), delivery)

    async def _ask(
        self, event: ApprovalRequested, context: domain.ThreadContext, chat_id: str, delivery: Delivery
    ) -> None:
        if context.run_end is not None or event.expires_at <= utcnow():
            log.info("approval_not_shown", approval_id=event.approval_id, reason="closed")
            return
        await self.replies.say(
            chat_id,
            chat.approval_message(event, context.idea, event.aggregate_id, self.web_base_url),
            cause_id=approval_cause(event.approval_id),
            aggregate_id=event.aggregate_id,
            kind=APPROVAL_SHOWN,
            delivery=delivery,
            keyboard=chat.approval_keyboard(event.approval_id),
            correlation_id=event.correlation_id,
            rendered=True,
        )

    async def owned_run(self, run_id: str | None, chat_id: str) -> OwnedRun | None:
        """The agent run ``run_id`` when its origin chat is ``chat_id``; else None."""
        if run_id is None or not domain.addressable(run_id):
            return None
        context = await self.thread_log.context(run_id)
        if not context.agent_run or origin_chat(dict(context.origin)) != chat_id:
            return None
        return OwnedRun(run_id, context)

    async def request(self, run_id: str, approval_id: str) -> ApprovalRequested | None:
        """The run's request ``approval_id`` (None: the run has none of that id)."""
        found = [r for r in await self.thread_log.all(run_id, ApprovalRequested) if r.approval_id == approval_id]
        return found[-1] if found else None

    async def closed(self, run: OwnedRun, request: ApprovalRequested) -> str | None:
        """The first line of ``request``'s message when it can no longer be answered (answered, expired, its run
        ended); None while it is open. The orchestrator ignores a late answer anyway; this tells the person."""
        for decision_type in (ApprovalGranted, ApprovalDenied, ApprovalExpired):
            for decision in await self.thread_log.all(run.run_id, decision_type):
                if decision.approval_id == request.approval_id:
                    return closed_line(decision, request.name)
        if request.expires_at <= utcnow():
            return chat.approval_closed_line("expired", request.name)
        if run.context.run_end is not None:
            return chat.approval_closed_line("ended", request.name)
        return None

    async def message_of(self, run_id: str, approval_id: str) -> int | None:
        """The Telegram message that shows approval ``approval_id`` (None: none was sent)."""
        wanted = domain.sent_id(approval_cause(approval_id))
        for record in await self.thread_log.notifications(run_id):
            if record.event_id == wanted and record.external_id:
                return int(record.external_id.split(",")[0])
        return None

    async def show(
        self,
        chat_id: str,
        message_id: int,
        request: ApprovalRequested,
        context: domain.ThreadContext,
        first_line: str,
        delivery: Delivery,
    ) -> None:
        """Put the answered state (``first_line``) into the approval's message, without buttons. A failed edit is
        logged: the message only shows what the log already holds."""
        text = chat.approval_message(request, context.idea, request.aggregate_id, self.web_base_url, first_line)
        try:
            await self.replies.sender.edit(
                chat_id, message_id, text, parse_mode=chat.PARSE_MODE, on_wait=delivery.in_progress, clear_keyboard=True
            )
        except SendFailed as exc:
            log.info("approval_edit_failed", approval_id=request.approval_id, reason=exc.reason)
