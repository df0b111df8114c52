"""One Telegram update's handling (:class:`Turn`): an idea, an answer, a rating, a preference correction, an agent
run (``/do <task>``), an approval's button or a command, for the chat it came from.

Every action on a thread (answer, rate, cancel, status) first checks that the thread's origin chat is the
update's chat (:meth:`Turn.own_thread`). ``/correct <key> <value>`` sends the learner the same
``CorrectPreference`` the gateway's feedback route sends, for the user who sent it (``telegram:<user id>``, the
user its ideas are submitted as). What may be done to a thread comes from :mod:`hermes_proto.threads`, through the
views' ``answerable`` / ``ratable`` flags and :func:`hermes_notifier.chat.answers_open`. An approval's button is
taken only from the chat its run came from (:meth:`~hermes_notifier.approvals.Approvals.owned_run`) and answers for
the run's user, the only one the orchestrator takes an answer from; ``/cancel`` stops an agent run with
``CancelAgentRun``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import structlog

from hermes_proto import schedules as sc
from hermes_proto import subjects
from hermes_proto.admission import check_queue
from hermes_proto.agents import CancelAgentRun, DecideApproval, StartAgentRun
from hermes_proto.base import Command
from hermes_proto.bus import Delivery
from hermes_proto.commands import AnswerQuestions, CancelJob, RateThread, SubmitIdea
from hermes_proto.events import Answer, AnswerCollected, Question, QuestionsProposed
from hermes_proto.ids import derived_id, utcnow
from hermes_proto.inbox import TelegramUpdate
from hermes_proto.queries import CorrectPreference, ThreadView
from hermes_proto.rpc import BadReply, BusUnavailable, Refused, ask
from hermes_proto.schedule_queries import ScheduleQuery, ScheduleReply, SchedulesQuery, SchedulesReply
from hermes_proto.telemetry import bind_ids

from hermes_notifier import chat, domain, schedule_chat
from hermes_notifier.adapters import SendFailed
from hermes_notifier.chat import Intent, Keyboard
from hermes_notifier.conversation import IDEA_RECEIVED
from hermes_notifier.metrics import INBOUND_UPDATES
from hermes_notifier.replies import TELEGRAM_ORIGIN, chat_aggregate, origin_chat

if TYPE_CHECKING:  # the inbox makes a turn per update; a turn uses the inbox's queries and replies
    from hermes_notifier.inbox import Inbox

log = structlog.get_logger("hermes.notifier")

AGENT_RUN_STARTED = "agent_run_started"
"""The record kind of ``/do``'s acknowledgement."""


class Turn:
    """One update's handling: its chat, the ids derived from it, and the reply helpers."""

    def __init__(self, inbox: Inbox, update: TelegramUpdate, chat_key: str, delivery: Delivery) -> None:
        self.inbox = inbox
        self.update = update
        self.chat = chat_key
        self.delivery = delivery
        query = update.callback_query
        # The cause of everything this update makes: its button press, else its message (chat + message id).
        self.cause = (
            derived_id("telegram_button", query.id)
            if query is not None
            else derived_id("telegram_message", chat_key, str(update.message.message_id))
        )
        self.notice: str | None = None
        """What the button press is answered with, when a handler says (else by the intent's kind)."""

    async def handle(self, intent: Intent) -> None:
        try:
            await self._dispatch(intent)
        except (BusUnavailable, BadReply, Refused) as exc:
            log.warning("telegram_query_failed", error=str(exc))
            await self.say(
                f"Hermes could not answer right now\n\n{exc.what} did not answer. Try again in a minute.",
                kind="unavailable",
            )
        finally:
            await self._answer_button(intent)

    async def _dispatch(self, intent: Intent) -> None:
        match intent.kind:
            case "idea":
                await self.submit_idea(intent.text)
            case "agent":
                await self.start_agent_run(intent.text)
            case "approval":
                await self.decide_approval(intent)
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
        notice = self.notice or {"answer": "Noted", "done": "Building draft 2", "rate": "Thanks for rating"}.get(
            intent.kind, "OK"
        )
        try:
            await self.inbox.replies.sender.answer_button(query.id, notice)
        except SendFailed as exc:  # the spinner on the button stops by itself; nothing else depends on it
            log.info("button_answer_failed", reason=exc.reason)

    async def say(
        self,
        text: str,
        *,
        kind: str,
        thread_id: str | None = None,
        keyboard: Keyboard | None = None,
        suffix: str = "reply",
        edit_message_id: int | None = None,
    ) -> list[int]:
        return await self.inbox.replies.say(
            self.chat,
            text,
            cause_id=derived_id(self.cause, suffix),
            kind=kind,
            delivery=self.delivery,
            aggregate_id=thread_id or chat_aggregate(self.chat),
            keyboard=keyboard,
            edit_message_id=edit_message_id,
            correlation_id=thread_id,
            check_always=thread_id is not None,
        )

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
            thread_id, domain.sent_id(self.cause)
        )  # a redelivery: its own job must not count against it
        refusal = (
            None
            if accepted_before
            else await check_queue(self.inbox.nc, self.inbox.store, self.inbox.settings.queue_cap, thread_id)
        )
        if refusal is not None:
            await self.say(
                f"Hermes is busy\n\nThe job queue is full ({refusal.queued} open jobs, limit "
                f"{refusal.limit}). Send the idea again in {refusal.retry_after_s} s.",
                kind="queue_full",
            )
            return
        ids = await self.inbox.replies.say(
            self.chat,
            chat.idea_received_text(idea),
            cause_id=self.cause,
            aggregate_id=thread_id,
            kind=IDEA_RECEIVED,
            delivery=self.delivery,
            correlation_id=thread_id,
        )
        if ids and self.inbox.live is not None:  # none: sent before this redelivery, or failed
            await self.inbox.live.start(thread_id, self.chat, ids[0])
        await self.inbox.store.send(
            SubmitIdea(
                command_id=derived_id(self.cause, "submit_idea"),
                issued_at=utcnow(),
                correlation_id=thread_id,
                thread_id=thread_id,
                idea=idea,
                channel="telegram",
                user_id=self.user_id(),
                origin={TELEGRAM_ORIGIN: self.chat, "telegram_message_id": str(message.message_id)},
            )
        )
        log.info("idea_submitted", thread_id=thread_id)

    # ---- agent runs --------------------------------------------------------------------------------------

    async def start_agent_run(self, task: str) -> None:
        """``/do <task>``: acknowledge with the run's id, then start the run (``StartAgentRun``; its profile picked
        from the task), answered in this chat: its approvals with buttons, then its answer."""
        message = self.update.message
        run_id = derived_id("telegram_agent_run", self.chat, str(message.message_id))
        bind_ids(thread_id=run_id)
        accepted_before = self.delivery.deliveries > 1 and await self.inbox.thread_log.notification_recorded(
            run_id, domain.sent_id(self.cause)
        )
        refusal = (
            None
            if accepted_before
            else await check_queue(self.inbox.nc, self.inbox.store, self.inbox.settings.queue_cap, run_id)
        )
        if refusal is not None:
            await self.say(
                f"Hermes is busy\n\nThe job queue is full ({refusal.queued} open jobs, limit "
                f"{refusal.limit}). Send the task again in {refusal.retry_after_s} s.",
                kind="queue_full",
            )
            return
        await self.inbox.replies.say(
            self.chat,
            chat.agent_started_text(task, run_id, self.inbox.settings.web_base_url),
            cause_id=self.cause,
            aggregate_id=run_id,
            kind=AGENT_RUN_STARTED,
            delivery=self.delivery,
            correlation_id=run_id,
        )
        await self.inbox.store.send(
            StartAgentRun(
                command_id=derived_id(self.cause, "start_agent_run"),
                issued_at=utcnow(),
                correlation_id=run_id,
                thread_id=run_id,
                task=task,
                channel="telegram",
                user_id=self.user_id(),
                origin={TELEGRAM_ORIGIN: self.chat, "telegram_message_id": str(message.message_id)},
            )
        )
        log.info("agent_run_requested", thread_id=run_id)

    async def decide_approval(self, intent: Intent) -> None:
        """A press on an approval's button: ``DecideApproval`` for the run's user, when the run (named by the
        message the button is on) is this chat's and the approval is still open. A press from another chat, or
        on a message that names no run of this chat, is refused and sends nothing; a closed approval is said to
        be closed (its message shows how it was answered)."""
        approvals = self.inbox.approvals
        query = self.update.callback_query
        message = query.message if query is not None else None
        approval_id, choice = intent.approval_id or "", intent.choice or ""
        run = await approvals.owned_run(chat.run_of_message(message.text), self.chat) if approvals and message else None
        request = await approvals.request(run.run_id, approval_id) if approvals and run else None
        if approvals is None or message is None or run is None or request is None:
            INBOUND_UPDATES.labels("foreign_approval").inc()
            log.warning("foreign_approval", approval_id=approval_id)
            self.notice = "Refused: this approval is not one of this chat's runs."
            return
        bind_ids(thread_id=run.run_id)
        closed = await approvals.closed(run, request)
        if closed is not None:
            self.notice = "This approval is closed already."
            await approvals.show(self.chat, message.message_id, request, run.context, closed, self.delivery)
            return
        decision, scope = chat.APPROVAL_CHOICES[choice]
        sent = chat.approval_closed_line(f"sent:{choice}", request.name)
        # The message first: the decision's event edits it again, and must come last.
        await approvals.show(self.chat, message.message_id, request, run.context, sent, self.delivery)
        await self.inbox.store.send(
            DecideApproval(
                command_id=derived_id(self.cause, "decide_approval"),
                issued_at=utcnow(),
                correlation_id=run.run_id,
                thread_id=run.run_id,
                approval_id=request.approval_id,
                decision=decision,
                scope=scope,
                user_id=request.user_id,  # the run's user: only they may answer, and this chat is theirs
                channel="telegram",
            )
        )
        log.info("approval_decided", approval_id=request.approval_id, decision=decision, scope=scope)
        self.notice = {"o": "Approved once", "r": "Approved for this run", "x": "Rejected"}[choice]

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
        await self.inbox.store.append(
            [
                AnswerCollected(
                    event_id=derived_id(self.cause, "answer_collected"),
                    aggregate_id=thread_id,
                    occurred_at=utcnow(),
                    correlation_id=thread_id,
                    causation_id=self.cause,
                    question_id=question.question_id,
                    text=text,
                    channel="telegram",
                )
            ]
        )
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
            await self.inbox.replies.sender.edit(
                self.chat,
                target.message_id,
                chat.render(body),
                parse_mode=chat.PARSE_MODE,
                on_wait=self.delivery.in_progress,
            )
        except SendFailed as exc:  # the answer is recorded; the message only shows it
            log.info("answered_edit_failed", reason=exc.reason)

    async def _awaiting_answers(self, thread_id: str) -> bool:
        """Whether the thread still takes answers (none sent yet, not finished); says so when not."""
        log_ = self.inbox.thread_log
        closing = [e for kind in chat.ANSWERS_CLOSED_BY if (e := await log_.last(thread_id, kind)) is not None]
        if chat.answers_open(closing):
            return True
        await self.say(
            "Answers for this thread are closed\n\nIts answers were already sent or it has finished; "
            "send a new idea to start again.",
            kind="usage",
            thread_id=thread_id,
            suffix="closed",
        )
        return False

    async def _collected(self, thread_id: str) -> dict[str, str]:
        """The latest collected answer per question id."""
        return {a.question_id: a.text for a in await self.inbox.thread_log.all(thread_id, AnswerCollected)}

    async def done(self, thread_id: str) -> None:
        if not await self.own_thread(thread_id) or not await self._awaiting_answers(thread_id):
            return
        collected = await self._collected(thread_id)
        if not collected:
            await self.say(
                "No answers yet\n\nTap a suggestion or reply to a question first; without answers "
                "Hermes finishes on draft 1 when the answer window closes.",
                kind="usage",
                thread_id=thread_id,
            )
            return
        await self._send_answers(thread_id, collected)

    async def _send_answers(self, thread_id: str, collected: dict[str, str]) -> None:
        command_id = derived_id(thread_id, "telegram_answers")  # one submission per thread
        await self.inbox.store.send(
            AnswerQuestions(
                command_id=command_id,
                issued_at=utcnow(),
                correlation_id=thread_id,
                thread_id=thread_id,
                answers=[Answer(question_id=q, text=t) for q, t in collected.items()],
            )
        )
        await self.inbox.replies.say(
            self.chat,
            f"Thanks: {len(collected)} answer(s) sent\n\nDraft 2 is on its way.",
            cause_id=command_id,
            aggregate_id=thread_id,
            kind="answers_sent",
            delivery=self.delivery,
            correlation_id=thread_id,
        )

    # ---- commands ----------------------------------------------------------------------------------------

    async def rate(self, intent: Intent) -> None:
        thread = await self._thread_or_latest(intent.thread_id, lambda t: t.ratable)
        if thread is None:
            await self.say("Nothing to rate yet\n\nA thread can be rated once it is finished.", kind="usage")
            return
        await self.inbox.store.send(
            RateThread(
                command_id=derived_id(self.cause, "rate"),
                issued_at=utcnow(),
                correlation_id=thread.thread_id,
                thread_id=thread.thread_id,
                rating=intent.rating or 0,
            )
        )
        await self.say(
            f"Rated {intent.rating}/5\n\nThanks: Hermes learns from every rating.",
            kind="rated",
            thread_id=thread.thread_id,
        )

    async def command(self, name: str, argument: str) -> None:
        match name:
            case "status":
                thread = await self._thread_or_latest(argument or None, lambda t: True)
                text = (
                    chat.status_text(thread, self.inbox.settings.web_base_url)
                    if thread is not None
                    else "No threads in this chat yet\n\nSend an idea to start one."
                )
                await self.say(text, kind="status")
            case "threads":
                await self.say(
                    chat.threads_text(await self.inbox.chat_threads(self.chat, chat.THREADS_LISTED)), kind="threads"
                )
            case "budget":
                await self.say(chat.budget_text(await self.inbox.backends()), kind="budget")
            case "backends":
                await self.say(chat.backends_text(await self.inbox.backends()), kind="backends")
            case "cancel":
                await self.cancel(argument or None)
            case "schedule":
                await self.schedule(argument)
            case "done":
                latest = await self._thread_or_latest(argument or None, lambda t: t.answerable)
                if latest is None:
                    await self.say("No thread is waiting for answers.", kind="usage")
                else:
                    await self.done(latest.thread_id)
            case _:  # help, start
                await self.say(chat.help_text(), kind="help")

    async def schedule(self, argument: str) -> None:
        """``/schedule``: list, create (delivered to this chat), pause, resume, delete or run one of this user's
        schedules (:mod:`hermes_notifier.schedule_chat`); another user's schedule is "not found"."""
        request = schedule_chat.parse(argument, self.chat)
        user = self.user_id()
        if request.kind == "usage":
            await self.say(f"{request.problem}\n\n{schedule_chat.USAGE}", kind="usage")
            return
        if request.kind == "list":
            listing = await ask(
                self.inbox.nc, "The orchestrator", subjects.QUERY_SCHEDULES, SchedulesQuery(user_id=user),
                SchedulesReply, schedule_chat.QUERY_TIMEOUT_S,
            )  # fmt: skip
            await self.say(schedule_chat.list_text(listing.schedules), kind="schedules")
            return
        envelope = {
            "command_id": derived_id(self.cause, "schedule"),
            "issued_at": utcnow(),
            "correlation_id": self.cause,
        }
        if request.kind == "create" and request.definition is not None:
            schedule_id = derived_id(self.cause, "schedule_id")[:24]
            await self.inbox.store.send(
                sc.CreateSchedule(
                    **envelope, schedule_id=schedule_id, definition=request.definition, user_id=user, channel="telegram"
                )
            )
            await self.say(schedule_chat.created_text(schedule_id, request.definition), kind="scheduled")
            return
        found = await ask(
            self.inbox.nc, "The orchestrator", subjects.QUERY_SCHEDULE,
            ScheduleQuery(schedule_id=request.schedule_id, user_id=user, runs_limit=1), ScheduleReply, schedule_chat.QUERY_TIMEOUT_S,
        )  # fmt: skip
        if not found.found or found.schedule is None or found.schedule.status == "deleted":
            await self.say(f"No schedule {request.schedule_id} of yours.", kind="usage")
            return
        sid = request.schedule_id
        command: Command = {
            "pause": lambda: sc.PauseSchedule(**envelope, schedule_id=sid, user_id=user),
            "resume": lambda: sc.ResumeSchedule(**envelope, schedule_id=sid, user_id=user),
            "rm": lambda: sc.DeleteSchedule(**envelope, schedule_id=sid, user_id=user),
            "run": lambda: sc.FireSchedule(
                **envelope, schedule_id=sid, due_key=f"manual:{envelope['command_id']}", reason="manual",
                seen_at=utcnow(), user_id=user,
            ),
        }[request.kind]()  # fmt: skip
        await self.inbox.store.send(command)
        done = {"pause": "paused", "resume": "resumed", "rm": "deleted", "run": "started now"}[request.kind]
        await self.say(f"Schedule {found.schedule.definition.name} {done}.", kind="schedule_changed")

    async def correct(self, intent: Intent) -> None:
        """Correct one of this user's learned preferences (``CorrectPreference``, weighed by the learner against
        what it learned) and say what it now holds, or why the learner refused. The learner appends a new fact
        per request, so a redelivered update whose reply is already recorded sends nothing again."""
        if self.delivery.deliveries > 1 and await self.inbox.thread_log.notification_recorded(
            chat_aggregate(self.chat), domain.sent_id(derived_id(self.cause, "reply"))
        ):
            return
        key = intent.key or ""
        command = CorrectPreference(
            user_id=self.user_id(), category=domain.correctable_category(key) or "fact", key=key, value=intent.text
        )
        try:
            reply = await self.inbox.correct(command)
        except Refused as exc:
            await self.say(chat.correction_refused_text(exc.message), kind="usage")
            return
        view = reply.preferences[0]
        log.info("preference_corrected", preference_id=view.preference_id, confidence=view.confidence)
        await self.say(chat.corrected_text(view, intent.text, reply.confidence_threshold), kind="corrected")

    async def cancel(self, thread_id: str | None) -> None:
        thread = await self._thread_or_latest(thread_id, lambda t: chat.cancellable_run(t) or bool(chat.open_jobs(t)))
        if thread is not None and chat.cancellable_run(thread):
            await self._cancel_run(thread)
            return
        jobs = chat.open_jobs(thread) if thread is not None else []
        if thread is None or not jobs:
            await self.say("Nothing is running in this chat.", kind="usage")
            return
        for job_id in jobs:
            await self.inbox.store.send(
                CancelJob(
                    command_id=derived_id(self.cause, "cancel", job_id),
                    issued_at=utcnow(),
                    correlation_id=thread.thread_id,
                    thread_id=thread.thread_id,
                    job_id=job_id,
                )
            )
        await self.say(
            f"Stopping {len(jobs)} job(s)\n\n{domain.excerpt(thread.idea, 120)}",
            kind="cancelled",
            thread_id=thread.thread_id,
        )

    async def _cancel_run(self, run: ThreadView) -> None:
        """Stop an agent run (``CancelAgentRun`` for the run's user): its turn and a running tool call stop."""
        await self.inbox.store.send(
            CancelAgentRun(
                command_id=derived_id(self.cause, "cancel_agent_run"),
                issued_at=utcnow(),
                correlation_id=run.thread_id,
                thread_id=run.thread_id,
                user_id=run.user_id,
            )
        )
        await self.say(
            f"Stopping the agent run\n\n{domain.excerpt(run.idea, 120)}", kind="cancelled", thread_id=run.thread_id
        )

    async def _thread_or_latest(self, thread_id: str | None, wanted: Callable[[ThreadView], bool]) -> ThreadView | None:
        """The named thread when it is this chat's, else the chat's newest thread; None unless ``wanted`` holds
        for it."""
        if thread_id is not None:
            if not await self.own_thread(thread_id):
                return None
            thread = await self.inbox.ask_thread(thread_id)
            return thread if thread is not None and wanted(thread) else None
        return next((t for t in await self.inbox.chat_threads(self.chat, chat.THREADS_LISTED) if wanted(t)), None)
