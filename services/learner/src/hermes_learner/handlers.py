"""The learner's reactor: after draft 1 of a thread, decide its clarifying questions and append ONE
``QuestionsProposed`` (possibly empty, which lets the orchestrator complete the thread on draft 1).

Metrics: ``hermes_learner_questions_proposed_total{category}``, ``hermes_learner_clarity`` (histogram, 0..1),
``hermes_learner_threads_without_questions_total{reason}``, ``hermes_learner_ideas_classified_total{idea_type}``,
``hermes_learner_drafts_skipped_total{reason}`` (unknown_thread, already_proposed, max_questions_zero,
thread_closed); the projection adds ``hermes_learner_events_applied_total`` and
``hermes_learner_projection_position``."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import structlog
from nats.js import JetStreamContext
from prometheus_client import Counter, Histogram
from sqlalchemy.engine import Engine
from sqlmodel import Session

from hermes_proto.base import Event
from hermes_proto.bus import Delivery, EventStore
from hermes_proto.events import DraftPresented, QuestionsProposed
from hermes_proto.ids import derived_id, utcnow
from hermes_proto.projection import Projection
from hermes_proto.telemetry import bind_ids

from hermes_learner import domain, readmodel

log = structlog.get_logger("hermes.learner")

QUESTIONS_PROPOSED = Counter("hermes_learner_questions_proposed_total", "Clarifying questions proposed",
                             ["category"])
CLARITY = Histogram("hermes_learner_clarity", "Estimated clarity (0..1) of ideas after draft 1",
                    buckets=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0))
NO_QUESTIONS = Counter("hermes_learner_threads_without_questions_total",
                       "Threads for which the learner proposed no question", ["reason"])
IDEAS_CLASSIFIED = Counter("hermes_learner_ideas_classified_total", "Ideas classified after draft 1", ["idea_type"])
DRAFTS_SKIPPED = Counter("hermes_learner_drafts_skipped_total",
                         "Drafts 1 the learner did not decide on", ["reason"])


@dataclass(frozen=True)
class ThreadSnapshot:
    """What one decision reads from the read model."""

    idea: str
    max_questions: int
    already_proposed: bool
    closed: bool
    templates: list[domain.QuestionTemplate]
    stats: dict[str, domain.TemplateStats]


class Learner:
    """Reacts to ``DraftPresented`` (draft 1 only). ``max_questions`` is the service-wide ceiling; each
    thread's own ``max_questions`` may lower it."""

    def __init__(self, js: JetStreamContext, engine: Engine, projection: Projection, policy: domain.Policy,
                 max_questions: int) -> None:
        self.engine = engine
        self.projection = projection
        self.policy = policy
        self.max_questions = max_questions
        self.store = EventStore(js, "learner")

    def _snapshot(self, thread_id: str) -> ThreadSnapshot | None:
        with Session(self.engine) as session:
            thread = readmodel.load_thread(session, thread_id)
            if thread is None:
                return None
            return ThreadSnapshot(idea=thread.idea, max_questions=thread.max_questions,
                                  already_proposed=thread.questions_event_id is not None, closed=thread.closed,
                                  templates=readmodel.load_templates(session), stats=readmodel.load_stats(session))

    async def on_event(self, delivery: Delivery[Event]) -> None:
        draft = delivery.message
        if not isinstance(draft, DraftPresented) or draft.draft_number != 1:
            return
        bind_ids(thread_id=draft.aggregate_id, correlation_id=draft.correlation_id)
        # The whole log as it is now, not only up to the draft: a redelivered draft (or a replayed consumer)
        # then sees the QuestionsProposed already appended after it, even outside JetStream's dedup window.
        await self.projection.catch_up(at_least=delivery.stream_sequence)
        snapshot = await asyncio.to_thread(self._snapshot, draft.aggregate_id)
        skip = self._skip_reason(snapshot)
        if skip is not None:
            DRAFTS_SKIPPED.labels(skip).inc()
            if skip == "max_questions_zero":
                NO_QUESTIONS.labels(skip).inc()
            log.info("draft_skipped", reason=skip)
            return
        assert snapshot is not None  # _skip_reason rules None out
        cap = min(snapshot.max_questions, self.max_questions)
        decision = domain.choose(snapshot.idea, draft.text, snapshot.templates, snapshot.stats, cap,
                                 draft_event_id=draft.event_id, policy=self.policy)
        await self.store.append([self._proposed(draft, decision)])
        self._observe(decision, cap)
        log.info("questions_proposed", idea_type=decision.idea_type, clarity=decision.clarity,
                 questions=[q.template_id for q in decision.questions], reason=decision.reason)

    @staticmethod
    def _skip_reason(snapshot: ThreadSnapshot | None) -> str | None:
        """Why no ``QuestionsProposed`` is appended at all: the thread is unknown, was already decided on
        (a redelivery or a replayed consumer), is already over, or allows no questions (the orchestrator
        completes such a thread on draft 1 by itself)."""
        if snapshot is None:
            return "unknown_thread"
        if snapshot.already_proposed:
            return "already_proposed"
        if snapshot.max_questions <= 0:
            return "max_questions_zero"
        if snapshot.closed:
            return "thread_closed"
        return None

    @staticmethod
    def _proposed(draft: DraftPresented, decision: domain.Decision) -> QuestionsProposed:
        return QuestionsProposed(event_id=derived_id(draft.event_id, "questions_proposed"),
                                 aggregate_id=draft.aggregate_id, occurred_at=utcnow(),
                                 correlation_id=draft.correlation_id, causation_id=draft.event_id,
                                 questions=decision.questions, idea_type=decision.idea_type,
                                 clarity=decision.clarity, reason=decision.reason)

    def _observe(self, decision: domain.Decision, cap: int) -> None:
        CLARITY.observe(decision.clarity)
        IDEAS_CLASSIFIED.labels(decision.idea_type).inc()
        for q in decision.questions:
            QUESTIONS_PROPOSED.labels(q.category).inc()
        if not decision.questions:
            reason = ("max_questions_zero" if cap <= 0 else
                      "clarity_stop" if decision.clarity >= self.policy.clarity_stop else "no_candidates")
            NO_QUESTIONS.labels(reason).inc()
