"""Telegram as a channel: updates in (polled or pushed to the gateway's webhook), commands and replies out, and
the conversation of a thread that came from Telegram (draft 1 streamed in place, questions with buttons).

* :class:`Poller` long-polls ``getUpdates`` and stores each update in ``HERMES_INBOX``; the next poll confirms
  them to Telegram, so an update is confirmed only once JetStream holds it.
* :class:`Inbox` handles the ``notifier-inbox`` consumer (one lane per chat, in order): allow-list, then
  :func:`hermes_notifier.chat.parse_message` / ``parse_button`` and the command, query or reply that follows.
* :class:`Conversation` handles a Telegram thread's ``draft_presented`` and ``questions_proposed`` from the
  ``notifier-events`` consumer (with the questions, what the thread assumed from learned preferences).
* ``/correct <key> <value>`` sends the learner the same ``CorrectPreference`` the gateway's feedback route sends,
  for the user who sent it (``telegram:<user id>``, the user its ideas are submitted as).

Isolation by construction: every message about a thread goes to the chat in its ``thread_opened`` origin (never
to the chat an update came from), and every action on a thread (answer, rate, cancel, status) first checks that
the thread's origin chat is the update's chat. Exactly once: every message Hermes sends is recorded as a
``notification_sent`` with an id derived from its cause (the update's chat and message id, a button press id, an
event id), and a redelivered update or event looks for that record before sending.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import structlog
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from tenacity import AsyncRetrying, retry_if_exception_type, wait_exponential

from hermes_proto import subjects
from hermes_proto.admission import QueueCap, check_queue
from hermes_proto.bus import ConsumerRunner, ConsumerSpec, Delivery, EventStore, subject_lane
from hermes_proto.commands import AnswerQuestions, CancelJob, RateThread, SubmitIdea
from hermes_proto.events import (
    Answer,
    AnswerCollected,
    Assumption,
    DraftPresented,
    NotificationSent,
    Question,
    QuestionsProposed,
)
from hermes_proto.ids import derived_id, utcnow
from hermes_proto.codec import DecodeError, decode_telegram_update
from hermes_proto.inbox import TelegramUpdate, TgMessage, telegram_msg_id
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
from hermes_proto.rpc import BUS_ERRORS, BadReply, BusUnavailable, Refused, ask
from hermes_proto.telemetry import bind_ids

from hermes_notifier import chat, domain
from hermes_notifier.adapters import SendFailed, TelegramSender, ThreadLog
from hermes_notifier.chat import Intent, Keyboard
from hermes_notifier.config import NotifierSettings
from hermes_notifier.live import LiveDrafts
from hermes_notifier.metrics import INBOUND_UPDATES, MESSAGES_FAILED, MESSAGES_SENT, UPDATES_POLLED

log = structlog.get_logger("hermes.notifier")

ALLOWED_UPDATES = ["message", "callback_query"]
QUERY_TIMEOUT_S = 5.0
"""Seconds to wait for the orchestrator or router to answer a chat's query (they answer from SQLite in a few
ms; the margin covers a busy machine) before the chat is told to try again."""
IDEA_RECEIVED, DRAFT_SHOWN, QUESTIONS_SHOWN = "idea_received", "draft_presented", "questions_proposed"
ASSUMPTIONS_SHOWN = "assumptions"
TELEGRAM_ORIGIN = "telegram_chat_id"
CONVERSATION_EVENTS = (DraftPresented, QuestionsProposed)
"""Events of a Telegram thread's conversation, handled by :class:`Conversation` on the ``notifier-events``
consumer (in the thread's lane, so in log order with its completion)."""


def chat_aggregate(chat_id: int | str) -> str:
    """The aggregate id under which replies that belong to no thread are recorded, e.g. ``telegram-chat-42``
    (``telegram-chat--100123`` for a group: the sign stays, so no two chats share one)."""
    return f"telegram-chat-{chat_id}"  # a group's -100123 gives telegram-chat--100123: a valid subject token


def origin_chat(origin: dict[str, str] | None) -> str | None:
    return (origin or {}).get(TELEGRAM_ORIGIN)


class Poller:
    """Moves updates from ``getUpdates`` (long polling, ``timeout_s`` seconds) into ``HERMES_INBOX``. A failed
    poll or store waits with exponential backoff (``backoff_s`` doubled up to 30 s) and tries again forever."""

    def __init__(self, sender: TelegramSender, js: JetStreamContext, timeout_s: float, backoff_s: float) -> None:
        self._sender = sender
        self._js = js
        self._timeout_s = timeout_s
        self._backoff_s = backoff_s
        self._offset = 0
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        retrying = AsyncRetrying(wait=wait_exponential(multiplier=self._backoff_s, max=30.0), reraise=True,
                                 retry=retry_if_exception_type((SendFailed, *BUS_ERRORS)),
                                 before_sleep=lambda state: log.warning(
                                     "poll_failed", error=str(state.outcome.exception()),
                                     wait_s=state.upcoming_sleep))
        try:
            async for attempt in retrying.copy():
                with attempt:
                    await self._sender.api("deleteWebhook")  # getUpdates answers 409 while a webhook is set
            while not self._stopping.is_set():
                async for attempt in retrying.copy():  # a fresh backoff after each good poll
                    with attempt:
                        await self._poll_once()
        except asyncio.CancelledError:
            raise
        except Exception:  # not a Telegram or bus error: a bug; say so rather than stop polling quietly
            log.exception("poller_stopped")
            raise

    async def _poll_once(self) -> None:
        try:
            updates = await self._sender.api("getUpdates", timeout_s=self._timeout_s + 10, offset=self._offset,
                                             timeout=int(self._timeout_s), allowed_updates=ALLOWED_UPDATES)
        except SendFailed:
            UPDATES_POLLED.labels("error").inc()
            raise
        if not updates:
            UPDATES_POLLED.labels("empty").inc()
            return
        await self._store(updates)
        self._offset = max(int(u.get("update_id", 0)) for u in updates) + 1  # confirmed by the next poll
        UPDATES_POLLED.labels("updates").inc(len(updates))

    async def _store(self, updates: Sequence[dict]) -> None:
        futures = []
        for update in updates:
            data = json.dumps(update).encode()
            try:
                decoded = decode_telegram_update(data)
            except DecodeError as exc:  # not an Update as documented: kept out of the inbox, and logged
                log.warning("update_undecodable", reason=exc.reason, detail=exc.detail[:200])
                continue
            chat_id = decoded.chat_id()
            if chat_id is None:
                continue  # an update kind Hermes does not read (allowed_updates should keep them out)
            futures.append(await self._js.publish_async(subjects.telegram_inbox(chat_id), data,
                                                        headers={"Nats-Msg-Id": telegram_msg_id(decoded.update_id)}))
        await asyncio.wait_for(asyncio.gather(*futures), timeout=10)


@dataclass(frozen=True)
class InboxSettings:
    """``allowed_chats``: chat ids (as strings) whose messages Hermes takes; ``web_base_url`` for links;
    ``bot_username``: this bot's name, to ignore commands addressed to another bot (None: unknown);
    ``queue_cap``: the queue cap a new idea must fit under."""

    allowed_chats: frozenset[str]
    web_base_url: str
    bot_username: str | None = None
    queue_cap: QueueCap = QueueCap(None)


class Replies:
    """Sends and records messages: every message is a ``notification_sent`` whose id derives from its cause, and
    a redelivered cause (``deliveries`` > 1) first looks for that record, so nothing is sent twice."""

    def __init__(self, sender: TelegramSender, thread_log: ThreadLog, store: EventStore) -> None:
        self.sender = sender
        self.thread_log = thread_log
        self.store = store

    async def say(self, chat_id: str, text: str, *, cause_id: str, aggregate_id: str, kind: str,
                  delivery: Delivery, keyboard: Keyboard | None = None, correlation_id: str | None = None,
                  edit_message_id: int | None = None, check_always: bool = True) -> list[int]:
        """Send ``text`` (split at 4096, MarkdownV2, first line bold; ``keyboard`` on the last part) to
        ``chat_id`` — or, with ``edit_message_id``, put its first part into that message (a new message when it
        can no longer be edited) — and record it. Returns the message ids (empty when it was already sent or
        failed: a failure is recorded, not raised). The record is looked for first, unless ``check_always`` is
        false and this is a first delivery (for a chat's command replies: its records grow with every command,
        and only a redelivery can find one)."""
        cause = domain.AlertCause(event_id=cause_id, aggregate_id=aggregate_id,
                                  correlation_id=correlation_id or cause_id, occurred_at=utcnow())
        if ((check_always or delivery.deliveries > 1)
                and await self.thread_log.notification_recorded(aggregate_id, domain.sent_id(cause_id))):
            return []
        parts = domain.split_text(text)
        ids: list[int] = []
        try:
            for index, part in enumerate(parts):
                await delivery.in_progress()
                rendered = chat.render(part, bold_first_line=index == 0)
                buttons = keyboard if index == len(parts) - 1 else None
                if index == 0 and edit_message_id is not None and await self._edited(
                        chat_id, edit_message_id, rendered, buttons, delivery):
                    ids.append(edit_message_id)
                else:
                    ids.append(await self.sender.send(chat_id, rendered, delivery.in_progress,
                                                      parse_mode=chat.PARSE_MODE, keyboard=buttons))
                MESSAGES_SENT.labels(domain.CHANNEL, kind).inc()
        except SendFailed as exc:
            MESSAGES_FAILED.labels(domain.CHANNEL, kind, exc.reason).inc()
            log.warning("reply_failed", kind=kind, recipient=chat_id, reason=exc.reason, error=exc.detail)
            await self.store.append([domain.notification_failed(cause, kind, chat_id, str(exc), utcnow())])
            return []
        await self.store.append([domain.notification_sent(cause, kind, chat_id, ids, utcnow())])
        return ids


    async def _edited(self, chat_id: str, message_id: int, rendered: str, buttons: Keyboard | None,
                      delivery: Delivery) -> bool:
        """Put ``rendered`` into message ``message_id``; False when Telegram refuses the edit (the message was
        deleted or is too old), so the caller sends a new one."""
        try:
            await self.sender.edit(chat_id, message_id, rendered, parse_mode=chat.PARSE_MODE, keyboard=buttons,
                                   on_wait=delivery.in_progress)
        except SendFailed as exc:
            if exc.reason != "bad_request":
                raise
            log.info("edit_refused_sending_new", reason=exc.detail)
            return False
        return True


class Inbox:
    """Handles one stored Telegram update (see the module docstring)."""

    def __init__(self, replies: Replies, nc: NATS, settings: InboxSettings, live: LiveDrafts | None) -> None:
        self.replies = replies
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
            intent = chat.parse_message(update.message.text, reply_to.text if _from_bot(reply_to) else None,
                                        self.settings.bot_username)
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
        await self.replies.say(chat_key, chat.REFUSAL_TEXT, cause_id=cause, aggregate_id=aggregate,
                               kind="refused", delivery=delivery)

    async def ask_thread(self, thread_id: str) -> ThreadView | None:
        reply = await ask(self.nc, "The orchestrator", subjects.QUERY_THREAD, ThreadQuery(thread_id=thread_id),
                          ThreadReply, QUERY_TIMEOUT_S)
        return reply.thread if reply.found else None

    async def chat_threads(self, chat_key: str, limit: int) -> list[ThreadView]:
        query = ThreadListQuery(limit=limit, origin={TELEGRAM_ORIGIN: chat_key})
        reply = await ask(self.nc, "The orchestrator", QUERY_THREADS, query, ThreadListReply, QUERY_TIMEOUT_S)
        # Filtered here too: an orchestrator that predates the filter would answer with every chat's threads.
        return [t for t in reply.threads if origin_chat(t.origin) == chat_key]

    async def backends(self) -> BackendsReply:
        return await ask(self.nc, "The backend-router", subjects.QUERY_BACKENDS, BackendsQuery(), BackendsReply,
                         QUERY_TIMEOUT_S)

    async def correct(self, command: CorrectPreference) -> PreferencesReply:
        """Send ``command`` to the learner (``hermes.control.preference``); its reply holds the corrected
        preference as now held. Raises :class:`Refused` (``bad_request``), :class:`BusUnavailable`,
        :class:`BadReply` (also when the reply does not hold exactly one preference)."""
        reply = await ask(self.nc, "The learner", subjects.CONTROL_PREFERENCE, command, PreferencesReply,
                          QUERY_TIMEOUT_S)
        if len(reply.preferences) != 1:
            raise BadReply(f"{subjects.CONTROL_PREFERENCE}: {len(reply.preferences)} preferences in the reply, "
                           "expected 1", "The learner")
        return reply


def _from_bot(message: TgMessage | None) -> bool:
    return message is not None and message.sender is not None and message.sender.is_bot


class Turn:
    """One update's handling: its chat, the ids derived from it, and the reply helpers."""

    def __init__(self, inbox: Inbox, update: TelegramUpdate, chat_key: str, delivery: Delivery) -> None:
        self.inbox = inbox
        self.update = update
        self.chat = chat_key
        self.delivery = delivery
        query = update.callback_query
        # The cause of everything this update makes: its button press, else its message (chat + message id).
        self.cause = (derived_id("telegram_button", query.id) if query is not None
                      else derived_id("telegram_message", chat_key, str(update.message.message_id)))

    async def handle(self, intent: Intent) -> None:
        try:
            await self._dispatch(intent)
        except (BusUnavailable, BadReply, Refused) as exc:
            log.warning("telegram_query_failed", error=str(exc))
            await self.say(f"Hermes could not answer right now\n\n{exc.what} did not answer. Try again in a "
                           "minute.", kind="unavailable")
        finally:
            await self._answer_button(intent)

    async def _dispatch(self, intent: Intent) -> None:
        match intent.kind:
            case "idea":
                await self.submit_idea(intent.text)
            case "answer":
                await self.answer(intent)
            case "done":
                await self.done(intent.thread_id or "")
            case "rate":
                await self.rate(intent)
            case "correct":
                await self.correct(intent)
            case "command":
                await self.command(intent.name or "", intent.text)
            case "usage":
                await self.say(f"{intent.text}\n\n{chat.help_text()}", kind="usage")

    async def _answer_button(self, intent: Intent) -> None:
        query = self.update.callback_query
        if query is None:
            return
        notice = {"answer": "Noted", "done": "Building draft 2", "rate": "Thanks for rating"}.get(intent.kind, "OK")
        try:
            await self.inbox.replies.sender.answer_button(query.id, notice)
        except SendFailed as exc:  # the spinner on the button stops by itself; nothing else depends on it
            log.info("button_answer_failed", reason=exc.reason)

    async def say(self, text: str, *, kind: str, thread_id: str | None = None, keyboard: Keyboard | None = None,
                  suffix: str = "reply", edit_message_id: int | None = None) -> list[int]:
        return await self.inbox.replies.say(
            self.chat, text, cause_id=derived_id(self.cause, suffix), kind=kind, delivery=self.delivery,
            aggregate_id=thread_id or chat_aggregate(self.chat), keyboard=keyboard,
            edit_message_id=edit_message_id, correlation_id=thread_id, check_always=thread_id is not None)

    def user_id(self) -> str:
        """The Hermes user of this update: ``telegram:<sender's user id>`` (the chat id when Telegram names no
        sender), whose ideas, learned preferences and corrections belong together."""
        message = self.update.message
        sender = message.sender.id if message is not None and message.sender is not None else self.chat
        return f"telegram:{sender}"

    # ---- ideas -------------------------------------------------------------------------------------------

    async def submit_idea(self, idea: str) -> None:
        """Acknowledge at once ("drafting…", the message draft 1 will stream into), then submit the idea."""
        message = self.update.message
        thread_id = derived_id("telegram_thread", self.chat, str(message.message_id))
        bind_ids(thread_id=thread_id)
        accepted_before = self.delivery.deliveries > 1 and await self.inbox.thread_log.notification_recorded(
            thread_id, domain.sent_id(self.cause))  # a redelivery: its own job must not count against it
        refusal = None if accepted_before else await check_queue(
            self.inbox.nc, self.inbox.store, self.inbox.settings.queue_cap, thread_id)
        if refusal is not None:
            await self.say(f"Hermes is busy\n\nThe job queue is full ({refusal.queued} open jobs, limit "
                           f"{refusal.limit}). Send the idea again in {refusal.retry_after_s} s.", kind="queue_full")
            return
        ids = await self.inbox.replies.say(
            self.chat, chat.idea_received_text(idea), cause_id=self.cause, aggregate_id=thread_id,
            kind=IDEA_RECEIVED, delivery=self.delivery, correlation_id=thread_id)
        if ids and self.inbox.live is not None:  # none: sent before this redelivery, or failed
            await self.inbox.live.start(thread_id, self.chat, ids[0])
        await self.inbox.store.send(SubmitIdea(
            command_id=derived_id(self.cause, "submit_idea"), issued_at=utcnow(), correlation_id=thread_id,
            thread_id=thread_id, idea=idea, channel="telegram", user_id=self.user_id(),
            origin={TELEGRAM_ORIGIN: self.chat, "telegram_message_id": str(message.message_id)}))
        log.info("idea_submitted", thread_id=thread_id)

    # ---- answers -----------------------------------------------------------------------------------------

    async def own_thread(self, thread_id: str) -> bool:
        """Whether ``thread_id`` came from this chat; says so politely when not (and tells nothing about it)."""
        context = await self.inbox.thread_log.context(thread_id) if domain.addressable(thread_id) else None
        if context is not None and origin_chat(dict(context.origin)) == self.chat:
            return True
        INBOUND_UPDATES.labels("foreign_thread").inc()
        log.warning("foreign_thread", thread_id=thread_id)
        await self.say("That thread is not one of this chat's.", kind="usage")
        return False

    async def answer(self, intent: Intent) -> None:
        thread_id, index = intent.thread_id or "", intent.question or 0
        if not await self.own_thread(thread_id) or not await self._awaiting_answers(thread_id):
            return
        proposed = await self.inbox.thread_log.last(thread_id, QuestionsProposed)
        questions = proposed.questions if proposed else []
        if not 0 <= index < len(questions):
            await self.say("That question is no longer open.", kind="usage", thread_id=thread_id)
            return
        question = questions[index]
        if intent.suggestion is not None:
            if not 0 <= intent.suggestion < len(question.suggestions):
                await self.say("That suggestion is not offered any more.", kind="usage", thread_id=thread_id)
                return
            text = question.suggestions[intent.suggestion]
        else:
            text = intent.text
        await self.inbox.store.append([AnswerCollected(
            event_id=derived_id(self.cause, "answer_collected"), aggregate_id=thread_id, occurred_at=utcnow(),
            correlation_id=thread_id, causation_id=self.cause, question_id=question.question_id, text=text,
            channel="telegram")])
        await self._show_answered(thread_id, index, questions, text)
        collected = await self._collected(thread_id)
        if all(q.question_id in collected for q in questions):
            await self._send_answers(thread_id, collected)

    async def _show_answered(self, thread_id: str, index: int, questions: Sequence[Question], text: str) -> None:
        query, message = self.update.callback_query, self.update.message
        target = query.message if query is not None else (message.reply_to_message if message else None)
        if target is None:
            return
        body = chat.answered_text(questions[index].text, text, index, len(questions), thread_id)
        try:
            await self.inbox.replies.sender.edit(self.chat, target.message_id, chat.render(body),
                                                 parse_mode=chat.PARSE_MODE, on_wait=self.delivery.in_progress)
        except SendFailed as exc:  # the answer is recorded; the message only shows it
            log.info("answered_edit_failed", reason=exc.reason)

    async def _awaiting_answers(self, thread_id: str) -> bool:
        """Whether the thread still takes answers (none sent yet, not finished); says so when not."""
        log_ = self.inbox.thread_log
        closing = [e for kind in chat.ANSWERS_CLOSED_BY if (e := await log_.last(thread_id, kind)) is not None]
        if chat.answers_open(closing):
            return True
        await self.say("Answers for this thread are closed\n\nIts answers were already sent or it has finished; "
                       "send a new idea to start again.", kind="usage", thread_id=thread_id, suffix="closed")
        return False

    async def _collected(self, thread_id: str) -> dict[str, str]:
        """The latest collected answer per question id."""
        return {a.question_id: a.text for a in await self.inbox.thread_log.all(thread_id, AnswerCollected)}

    async def done(self, thread_id: str) -> None:
        if not await self.own_thread(thread_id) or not await self._awaiting_answers(thread_id):
            return
        collected = await self._collected(thread_id)
        if not collected:
            await self.say("No answers yet\n\nTap a suggestion or reply to a question first; without answers "
                           "Hermes finishes on draft 1 when the answer window closes.", kind="usage",
                           thread_id=thread_id)
            return
        await self._send_answers(thread_id, collected)

    async def _send_answers(self, thread_id: str, collected: dict[str, str]) -> None:
        command_id = derived_id(thread_id, "telegram_answers")  # one submission per thread
        await self.inbox.store.send(AnswerQuestions(
            command_id=command_id, issued_at=utcnow(), correlation_id=thread_id, thread_id=thread_id,
            answers=[Answer(question_id=q, text=t) for q, t in collected.items()]))
        await self.inbox.replies.say(
            self.chat, f"Thanks: {len(collected)} answer(s) sent\n\nDraft 2 is on its way.", cause_id=command_id,
            aggregate_id=thread_id, kind="answers_sent", delivery=self.delivery, correlation_id=thread_id)

    # ---- commands ----------------------------------------------------------------------------------------

    async def rate(self, intent: Intent) -> None:
        thread = await self._thread_or_latest(intent.thread_id, lambda t: t.ratable)
        if thread is None:
            await self.say("Nothing to rate yet\n\nA thread can be rated once it is finished.", kind="usage")
            return
        await self.inbox.store.send(RateThread(
            command_id=derived_id(self.cause, "rate"), issued_at=utcnow(), correlation_id=thread.thread_id,
            thread_id=thread.thread_id, rating=intent.rating or 0))
        await self.say(f"Rated {intent.rating}/5\n\nThanks: Hermes learns from every rating.", kind="rated",
                       thread_id=thread.thread_id)

    async def command(self, name: str, argument: str) -> None:
        match name:
            case "status":
                thread = await self._thread_or_latest(argument or None, lambda t: True)
                text = (chat.status_text(thread, self.inbox.settings.web_base_url) if thread is not None
                        else "No threads in this chat yet\n\nSend an idea to start one.")
                await self.say(text, kind="status")
            case "threads":
                await self.say(chat.threads_text(await self.inbox.chat_threads(self.chat, chat.THREADS_LISTED)),
                               kind="threads")
            case "budget":
                await self.say(chat.budget_text(await self.inbox.backends()), kind="budget")
            case "backends":
                await self.say(chat.backends_text(await self.inbox.backends()), kind="backends")
            case "cancel":
                await self.cancel(argument or None)
            case "done":
                latest = await self._thread_or_latest(argument or None, lambda t: t.answerable)
                if latest is None:
                    await self.say("No thread is waiting for answers.", kind="usage")
                else:
                    await self.done(latest.thread_id)
            case _:  # help, start
                await self.say(chat.help_text(), kind="help")

    async def correct(self, intent: Intent) -> None:
        """Correct one of this user's learned preferences (``CorrectPreference``, weighed by the learner against
        what it learned) and say what it now holds, or why the learner refused. The learner appends a new fact
        per request, so a redelivered update whose reply is already recorded sends nothing again."""
        if self.delivery.deliveries > 1 and await self.inbox.thread_log.notification_recorded(
                chat_aggregate(self.chat), domain.sent_id(derived_id(self.cause, "reply"))):
            return
        key = intent.key or ""
        command = CorrectPreference(user_id=self.user_id(), category=domain.CORRECTABLE_KEYS[key], key=key,
                                    value=intent.text)
        try:
            reply = await self.inbox.correct(command)
        except Refused as exc:
            await self.say(chat.correction_refused_text(exc.message), kind="usage")
            return
        view = reply.preferences[0]
        log.info("preference_corrected", preference_id=view.preference_id, confidence=view.confidence)
        await self.say(chat.corrected_text(view, intent.text, reply.confidence_threshold), kind="corrected")

    async def cancel(self, thread_id: str | None) -> None:
        thread = await self._thread_or_latest(thread_id, lambda t: bool(chat.open_jobs(t)))
        jobs = chat.open_jobs(thread) if thread is not None else []
        if thread is None or not jobs:
            await self.say("Nothing is running in this chat.", kind="usage")
            return
        for job_id in jobs:
            await self.inbox.store.send(CancelJob(
                command_id=derived_id(self.cause, "cancel", job_id), issued_at=utcnow(),
                correlation_id=thread.thread_id, thread_id=thread.thread_id, job_id=job_id))
        await self.say(f"Stopping {len(jobs)} job(s)\n\n{domain.excerpt(thread.idea, 120)}", kind="cancelled",
                       thread_id=thread.thread_id)

    async def _thread_or_latest(self, thread_id: str | None,
                                wanted: Callable[[ThreadView], bool]) -> ThreadView | None:
        """The named thread when it is this chat's, else the chat's newest thread; None unless ``wanted`` holds
        for it."""
        if thread_id is not None:
            if not await self.own_thread(thread_id):
                return None
            thread = await self.inbox.ask_thread(thread_id)
            return thread if thread is not None and wanted(thread) else None
        return next((t for t in await self.inbox.chat_threads(self.chat, chat.THREADS_LISTED) if wanted(t)), None)


class Conversation:
    """The messages of a Telegram thread's middle: draft 1 (into the "drafting…" message, where it streamed)
    and the questions, one message each with buttons. Other threads are left to the plain notifications."""

    def __init__(self, replies: Replies, live: LiveDrafts | None, allowed_chats: frozenset[str],
                 max_event_age_s: float) -> None:
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
        text = chat.draft_text(1, event.text, event.backend, event.model,
                               event.prompt_tokens + event.completion_tokens, event.latency_ms, False)
        await self.replies.say(chat_id, text, cause_id=event.event_id, aggregate_id=event.aggregate_id,
                               kind=DRAFT_SHOWN, delivery=delivery, correlation_id=event.correlation_id,
                               edit_message_id=int(ack.external_id.split(",")[0]) if ack else None)

    async def _assumptions(self, event: QuestionsProposed, applied: Sequence[Assumption], chat_id: str,
                           delivery: Delivery) -> None:
        """One message before the questions: what draft 1 applied (``applied``) and what was not asked because a
        learned preference answers it, with how to correct them."""
        text = domain.assumptions_text(domain.merged_assumptions(applied, event.assumptions))
        if text:
            await self.replies.say(chat_id, text, cause_id=derived_id(event.event_id, ASSUMPTIONS_SHOWN),
                                   aggregate_id=event.aggregate_id, kind=ASSUMPTIONS_SHOWN, delivery=delivery,
                                   correlation_id=event.correlation_id)

    async def _questions(self, event: QuestionsProposed, chat_id: str, delivery: Delivery) -> None:
        thread_id = event.aggregate_id
        for index in range(len(event.questions)):
            text, keyboard = chat.question_message(thread_id, index, event.questions)
            await self.replies.say(chat_id, text, cause_id=derived_id(event.event_id, "question", str(index)),
                                   aggregate_id=thread_id, kind=QUESTIONS_SHOWN, delivery=delivery,
                                   keyboard=keyboard, correlation_id=event.correlation_id)


INBOX_DURABLE = "notifier-inbox"
INBOX_BATCH = 4  # a fetched batch is finished before the next fetch: small, so one slow chat holds few others
INBOX_MAX_DELIVER = 10
INBOX_BACKOFF_S = [1.0, 2.0, 5.0, 10.0, 30.0, 60.0]
"""Retries of an update whose handling failed (NATS or JetStream away): about 5 minutes before it is
dead-lettered, so a short outage does not lose a user's message."""


@dataclass
class Channel:
    """The running inbound side: the inbox consumer, the poller (polling mode), the live drafts."""

    conversation: Conversation
    tasks: list[asyncio.Task]
    stoppers: list[Callable[[], None]]
    live: LiveDrafts

    async def close(self) -> None:
        for stop in self.stoppers:
            stop()
        for task in self.tasks[1:]:  # the poller may be inside a long poll; what it stored is safe
            task.cancel()
        await asyncio.wait(self.tasks, timeout=5)
        await self.live.close()


async def open_channel(settings: NotifierSettings, nc: NATS, js: JetStreamContext, sender: TelegramSender,
                       thread_log: ThreadLog, store: EventStore, service: str, ack_wait_s: float) -> Channel:
    """Start Telegram as a channel per ``settings`` (:class:`~hermes_notifier.config.NotifierSettings`):
    ``telegram_updates`` ``polling`` starts the :class:`Poller`, ``webhook`` registers the webhook with Telegram
    (retried in the background until it succeeds), ``off`` takes no updates; the inbox consumer runs in every
    mode, so updates stored while it was down are still handled."""
    live = LiveDrafts(nc, sender, settings.telegram_stream_interval_s)
    replies = Replies(sender, thread_log, store)
    username = await _bot_username(sender)
    cap = QueueCap(settings.hermes_max_queued_jobs, settings.hermes_queue_full_retry_after_seconds)
    inbox = Inbox(replies, nc, InboxSettings(settings.allowed_chats(), settings.hermes_web_base_url, username, cap),
                  live)
    consumer = ConsumerRunner(nc, js, ConsumerSpec(
        stream=subjects.INBOX_STREAM, durable=INBOX_DURABLE, filter_subjects=[subjects.TELEGRAM_INBOX_ALL],
        decode=decode_telegram_update, handler=inbox.on_update, batch=INBOX_BATCH, ack_wait_s=ack_wait_s,
        max_deliver=INBOX_MAX_DELIVER, backoff_s=INBOX_BACKOFF_S, lane=subject_lane), service)
    tasks = [asyncio.create_task(consumer.run(), name=INBOX_DURABLE)]
    stoppers = [consumer.stop]
    if settings.telegram_updates == "polling":
        poller = Poller(sender, js, settings.telegram_poll_timeout_s, settings.telegram_retry_backoff_s)
        tasks.append(asyncio.create_task(poller.run(), name="telegram-poller"))
        stoppers.append(poller.stop)
    elif settings.telegram_updates == "webhook":
        tasks.append(asyncio.create_task(_register_webhook(sender, settings), name="telegram-webhook"))
    log.info("telegram_channel_open", updates=settings.telegram_updates, allowed_chats=len(settings.allowed_chats()),
             bot_username=username)
    conversation = Conversation(replies, live, settings.allowed_chats(), settings.notifier_max_event_age_s)
    return Channel(conversation, tasks, stoppers, live)


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
    async for attempt in AsyncRetrying(wait=wait_exponential(multiplier=1, max=60), reraise=True,
                                       retry=retry_if_exception_type(SendFailed)):
        with attempt:
            await sender.api("setWebhook", url=settings.telegram_webhook_url, secret_token=secret,
                             allowed_updates=ALLOWED_UPDATES)
    log.info("telegram_webhook_set", url=settings.telegram_webhook_url)
