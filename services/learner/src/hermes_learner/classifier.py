"""The learner's side of LLM classification (``HERMES_CLASSIFICATION_ENABLE_LLM``): ask the orchestrator for a
``classify`` job after draft 1, read its outcome from the log, and hand the model's reading to the learner's
decision, or why there is none so the rules decide: the job failed, its answer did not parse, or no answer came
within the timeout. Whichever comes first decides; the decision's id derives from the draft, so there is one.

The learner never calls a model: the orchestrator queues the job, the backend-router routes it, an edge runs it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import nats.js.errors
import structlog
from nats.js import JetStreamContext
from prometheus_client import Counter

from hermes_proto import subjects
from hermes_proto.bus import EventStore
from hermes_proto.codec import DecodeError, decode_event
from hermes_proto.commands import RequestClassification
from hermes_proto.events import AnswersRecorded, DraftPresented, ExecutionAbandoned, ExecutionCompleted, JobFailed
from hermes_proto.ids import derived_id, utcnow
from hermes_proto.keyring import ready as keyring_ready

from hermes_learner import extraction
from hermes_learner.classification import MAX_TOKENS, Classification, classification_messages, parse_classification
from hermes_learner.timers import Timers

log = structlog.get_logger("hermes.learner")
EXTRACTIONS = Counter(
    "hermes_learner_extractions_total",
    "Model readings of answers (HERMES_CLASSIFICATION_ENABLE_LLM); outcome: llm, invalid_output, job_failed, ignored",
    ["outcome"],
)

# How an idea was classified: by the model, or by the rules and why.
LLM = "llm"
DISABLED = "disabled"
INVALID_OUTPUT = "invalid_output"
JOB_FAILED = "job_failed"
TIMEOUT = "timeout"
REQUEST_FAILED = "request_failed"
OUTCOMES = (LLM, DISABLED, INVALID_OUTPUT, JOB_FAILED, TIMEOUT, REQUEST_FAILED)

Learn = Callable[[AnswersRecorded, ExecutionCompleted, list[extraction.Fact]], Awaitable[None]]
"""``learn(answers, outcome, facts)``: count the facts a model read from ``answers`` (its job's ``outcome``)."""
Decide = Callable[[DraftPresented, Classification | None, str], Awaitable[None]]
"""``decide(draft, classification, outcome)``: the learner's decision on ``draft`` (``classification`` None: by
the rules, ``outcome`` says why)."""


def classification_job_id(draft_event_id: str) -> str:
    """The id of the classify job of the draft 1 ``draft_event_id``: derived, so the outcome is recognised."""
    return derived_id(draft_event_id, "classify")


def reason_suffix(outcome: str) -> str:
    """What ``QuestionsProposed.reason`` adds about the classification (empty with LLM classification off)."""
    if outcome == DISABLED:
        return ""
    if outcome == LLM:
        return "; classified by llm"
    why = {
        INVALID_OUTPUT: "llm output invalid",
        JOB_FAILED: "llm job failed",
        TIMEOUT: "llm timed out",
        REQUEST_FAILED: "llm request failed",
    }[outcome]
    return f"; classified by rules ({why})"


class LlmClassifier:
    """Requests classifications and reports their outcome to ``decide`` (once per draft from this process; the
    learner's read-model check makes any later report a no-op). ``timeout_s``: seconds from the request, kept by
    ``timers`` (one per draft, keyed by its event id)."""

    def __init__(
        self,
        js: JetStreamContext,
        store: EventStore,
        decide: Decide,
        timeout_s: float,
        timers: Timers,
        learn: Learn | None = None,
    ) -> None:
        self.js = js
        self.store = store
        self.decide = decide
        self.timeout_s = timeout_s
        self.timers = timers
        self.learn = learn

    async def extract(self, answers: AnswersRecorded, asked: list[tuple[str, str, str]]) -> None:
        """Ask for the model's reading of ``answers`` (``asked``: ``(slot, question, answer)`` of the user's own
        answers) as a ``classify`` job (command and job ids derived from the answers event, so a redelivery queues
        nothing new). No timer: the rules already learned from them; a job that fails or never ends adds nothing."""
        if not asked:
            return
        cmd = RequestClassification(
            command_id=derived_id(answers.event_id, "request_extraction"),
            issued_at=utcnow(),
            correlation_id=answers.correlation_id,
            thread_id=answers.aggregate_id,
            job_id=extraction.extraction_job_id(answers.event_id),
            messages=extraction.extraction_messages(asked),
            max_tokens=extraction.MAX_TOKENS,
            temperature=0.0,
        )
        try:
            await self.store.send(cmd)
        except Exception as exc:  # the rules have learned already: nothing is lost
            log.warning("extraction_request_failed", error=repr(exc))
            return
        log.info("extraction_requested", job_id=cmd.job_id)

    async def request(self, draft: DraftPresented, idea: str) -> None:
        """Arm the timeout and send ``RequestClassification`` (command id derived from the draft, so a redelivered
        draft queues nothing new). A send that fails lets the rules decide at once."""
        self._arm(draft)
        cmd = RequestClassification(
            command_id=derived_id(draft.event_id, "request_classification"),
            issued_at=utcnow(),
            correlation_id=draft.correlation_id,
            thread_id=draft.aggregate_id,
            job_id=classification_job_id(draft.event_id),
            messages=classification_messages(idea, draft.text),
            max_tokens=MAX_TOKENS,
            temperature=0.0,
        )
        try:
            await self.store.send(cmd)
        except Exception as exc:  # always keep moving: the rules decide now
            log.warning("classification_request_failed", error=repr(exc))
            self._disarm(draft.event_id)
            await self.decide(draft, None, REQUEST_FAILED)
            return
        log.info("classification_requested", job_id=cmd.job_id, timeout_s=self.timeout_s)

    async def on_outcome(self, event: ExecutionCompleted | ExecutionAbandoned | JobFailed) -> None:
        """React to the end of a job: when it is the classify job of its thread's draft 1, decide with the parsed
        answer (completed) or by the rules (failed, unparsable); when it is the extraction job of its thread's
        answers, count the facts the model read (:mod:`hermes_learner.extraction`). Any other job is ignored."""
        answers = await self._last(event.aggregate_id, AnswersRecorded)
        if isinstance(answers, AnswersRecorded) and event.job_id == extraction.extraction_job_id(answers.event_id):
            await self._extracted(answers, event)
            return
        draft = await self._draft1(event.aggregate_id)
        if draft is None or event.job_id != classification_job_id(draft.event_id):
            return
        self._disarm(draft.event_id)
        if isinstance(event, ExecutionCompleted):
            parsed = parse_classification(event.text)
            if parsed is None:
                log.info("classification_invalid", job_id=event.job_id, text=event.text[:200])
            await self.decide(draft, parsed, LLM if parsed else INVALID_OUTPUT)
        else:
            await self.decide(draft, None, JOB_FAILED)

    async def _extracted(
        self, answers: AnswersRecorded, event: ExecutionCompleted | ExecutionAbandoned | JobFailed
    ) -> None:
        if not isinstance(event, ExecutionCompleted) or self.learn is None:
            EXTRACTIONS.labels("job_failed" if not isinstance(event, ExecutionCompleted) else "ignored").inc()
            return
        found = extraction.parse_facts(event.text, [a.text for a in answers.answers if not a.assumed])
        if found is None:
            EXTRACTIONS.labels(INVALID_OUTPUT).inc()
            log.info("extraction_invalid", job_id=event.job_id, text=event.text[:200])
            return
        EXTRACTIONS.labels(LLM).inc()
        await self.learn(answers, event, found)

    async def _last(self, thread_id: str, event_type: type) -> object | None:
        """The thread's last event of ``event_type`` from the log (None: none, or undecodable)."""
        try:
            raw = await self.js.get_last_msg(subjects.EVENTS_STREAM, subjects.thread_event(thread_id, event_type))
            await keyring_ready((raw.data,))
            return decode_event(raw.data)
        except (nats.js.errors.NotFoundError, DecodeError):
            return None

    async def _draft1(self, thread_id: str) -> DraftPresented | None:
        """The thread's draft 1 from the log (its last ``DraftPresented``; None when there is none or it is a
        draft 2, by when the questions were long decided)."""
        event = await self._last(thread_id, DraftPresented)
        return event if isinstance(event, DraftPresented) and event.draft_number == 1 else None

    def _arm(self, draft: DraftPresented) -> None:
        self.timers.schedule(draft.event_id, self.timeout_s, lambda: self._timed_out(draft))

    def _disarm(self, draft_event_id: str) -> None:
        self.timers.disarm(draft_event_id)

    async def _timed_out(self, draft: DraftPresented) -> None:
        try:
            await self.decide(draft, None, TIMEOUT)
        except Exception as exc:  # a timer has no consumer to redeliver: the job's outcome may still decide
            log.warning("classification_timeout_decision_failed", error=repr(exc))
