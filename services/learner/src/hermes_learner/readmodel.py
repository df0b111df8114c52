"""The learner's read-model projection: each event of the log applied to the rows of :mod:`hermes_learner.tables`,
held by a :class:`hermes_proto.rowstore.RowStore` and written once per batch with the batch's last stream sequence
as the position (one transaction: a kill -9 neither skips nor repeats an event). No ORM on this path.

Every projected value comes from an event (timestamps included), so replaying the log into an empty database
rebuilds identical rows. Each ``apply`` is idempotent on its own as well.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from functools import singledispatch
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.engine import Engine

from hermes_proto import events as ev
from hermes_proto import rowstore
from hermes_proto.base import Event
from hermes_proto.forgetting import PersonalDataForgotten
from hermes_proto.projection import RawMessage, Rejected, decode_batch
from hermes_proto.rowstore import RowStore

from hermes_learner import domain
from hermes_learner.convert import question_order, utc
from hermes_learner.forgetting import forget_rows
from hermes_learner.seeding import define
from hermes_learner.tables import (
    PROJECTION,
    ROWS,
    VIEW_ROWS,
    EffectivenessCause,
    PatternEvidence,
    Position,
    Preference,
    PreferenceEvidence,
    Question,
    Stats,
    Template,
    Thread,
)
from hermes_learner.tables import Pattern as PatternRow
from hermes_learner.templates import slot_for


def row_store(engine: Engine) -> RowStore:
    """The store the projection writes through; changes to :data:`~hermes_learner.tables.VIEW_ROWS` are reported
    after each commit (the decisions' in-memory view follows them)."""
    return RowStore(engine, ROWS, tracked=VIEW_ROWS)


def load_position(store: RowStore) -> int:
    """The last stream sequence applied (0: nothing yet); call inside a batch."""
    return rowstore.load_position(store, Position, PROJECTION)


def save_position(store: RowStore, sequence: int) -> None:
    rowstore.save_position(store, Position, PROJECTION, sequence)


class Batch:
    """One batch being applied: the store, the threads whose rows it inserted (``opened``), the questions it
    added per thread (not written yet, so a query of the batch's connection does not see them), and whether it
    deleted rows in bulk (``forgot``: a ``PersonalDataForgotten``)."""

    _QUESTION_IDS = select(Question.__table__.c.question_id).where(Question.__table__.c.thread_id == bindparam("t"))

    def __init__(self, store: RowStore) -> None:
        self.store = store
        self.opened: set[str] = set()
        self.added: dict[str, list[str]] = {}
        self.forgot = False

    def questions(self, thread_id: str) -> list[Any]:
        """The thread's question rows (written before this batch or added in it), in the order proposed."""
        ids = set(self.store.connection.execute(self._QUESTION_IDS, {"t": thread_id}).scalars())
        ids.update(self.added.get(thread_id, ()))
        found = (self.store.get(Question, qid) for qid in ids)
        return sorted((q for q in found if q is not None), key=question_order)


def apply_events(store: RowStore, events: Iterable[Event], sequence: int | None = None) -> Batch:
    """Apply ``events`` in order and, when ``sequence`` is given, save it as the position: one batch, one
    transaction; returns the applied batch. Raises what the database raises (nothing of the batch is written
    then)."""
    with store:
        batch = Batch(store)
        for event in events:
            apply(event, batch)
        if sequence is not None:
            save_position(store, sequence)
    return batch


def apply_batch(
    target: Engine | RowStore, batch: list[RawMessage], decoded: list[tuple[int, Event]] | None = None
) -> list[Rejected]:
    """Apply a batch of the log to ``target`` (an engine: through a new store; the projection passes its own) and save
    its last sequence as the position, in one transaction (``decoded``: its decodable events, when the caller decoded
    it already). Returns the undecodable events it skipped (none when given ``decoded``). See
    :class:`hermes_proto.projection.Projection`."""
    rejected: list[Rejected] = []
    if decoded is None:
        decoded, rejected = decode_batch(batch)
    store = target if isinstance(target, RowStore) else row_store(target)
    apply_events(store, (event for _, event in decoded), batch[-1][0])
    return rejected


def _stats(store: RowStore, template_id: str, at: datetime) -> Any:
    row = store.get(Stats, template_id)
    if row is None:
        row = Stats(template_id=template_id, updated_at=at)
        store.add(row)
    return row


def _count(store: RowStore, question: Any, at: datetime) -> None:
    row = _stats(store, question.template_id, at)
    answered = question.answered_at is not None
    row.times_asked += 1
    row.times_answered += int(answered)
    if answered:
        row.answer_time_sum_s += question.answer_time_s or 0.0
        row.clarity_gain_sum += question.clarity_gain or 0.0
    question.closed_at = at
    row.updated_at = at


@singledispatch
def apply(event: Event, batch: Batch) -> None:
    """Apply one event to the rows (events this projection does not use are ignored)."""


@apply.register
def _(e: ev.ThreadOpened, batch: Batch) -> None:
    store = batch.store
    applied = [{"preference_id": a.preference_id, "value": a.value} for a in e.assumptions]
    if not store.insert_absent(
        Thread(
            thread_id=e.aggregate_id,
            idea=e.idea,
            max_questions=e.max_questions,
            correlation_id=e.correlation_id,
            opened_at=utc(e.occurred_at),
            user_id=e.user_id,
            assumptions_json=json.dumps(applied),
            project=e.project,
        )
    ):
        return
    batch.opened.add(e.aggregate_id)
    for a in e.assumptions:
        row = store.get(Preference, a.preference_id)
        if row is not None:
            row.usage += 1


@apply.register
def _(e: ev.PreferenceLearned, batch: Batch) -> None:
    store = batch.store
    row = store.get(Preference, e.aggregate_id)
    if row is None:
        row = Preference(
            preference_id=e.aggregate_id,
            user_id=e.user_id,
            category=e.category,
            key=e.key,
            scope=e.scope,
            value=e.value,
            confidence=e.confidence,
            stability=e.stability,
            observations=e.observations,
            source=e.source,
            evidence=e.evidence,
            updated_at=utc(e.occurred_at),
        )
        store.add(row)
    row.value, row.votes_json, row.doubt = e.value, json.dumps(e.votes, sort_keys=True), e.doubt
    row.confidence, row.stability = e.confidence, e.stability
    row.observations, row.corrections = e.observations, e.corrections
    row.source, row.evidence, row.thread_id = e.source, e.evidence, e.thread_id
    row.expires_at = utc(e.expires_at) if e.expires_at is not None else None
    row.updated_at = utc(e.occurred_at)
    row.scope, row.wordings_json, row.question = e.scope, json.dumps(e.wordings, sort_keys=True), e.question
    store.insert_absent(
        PreferenceEvidence(cause_id=e.causation_id or e.event_id, preference_id=e.aggregate_id, thread_id=e.thread_id)
    )


@apply.register
def _(e: ev.PatternValidated, batch: Batch) -> None:
    store = batch.store
    row = store.get(PatternRow, e.aggregate_id)
    if row is None:
        row = PatternRow(
            pattern_id=e.aggregate_id, user_id=e.user_id, kind=e.kind, idea_type=e.idea_type, category=e.category
        )
        store.add(row)
    row.validation_count, row.success_count, row.confidence = e.validation_count, e.success_count, e.confidence
    row.values_json = json.dumps(e.values, sort_keys=True)
    row.recommended_actions_json = json.dumps(e.recommended_actions)
    row.outcome, row.thread_id, row.updated_at = e.outcome, e.thread_id, utc(e.occurred_at)
    store.insert_absent(PatternEvidence(thread_id=e.thread_id, pattern_id=e.aggregate_id))


@apply.register
def _(e: ev.PreferenceForgotten, batch: Batch) -> None:
    row = batch.store.get(Preference, e.aggregate_id)
    if row is not None:
        batch.store.delete(row)


@apply.register
def _(e: PersonalDataForgotten, batch: Batch) -> None:
    forget_rows(batch.store, e)
    batch.forgot = True


@apply.register
def _(e: ev.QuestionsProposed, batch: Batch) -> None:
    store = batch.store
    thread = store.get(Thread, e.aggregate_id)
    if thread is not None and thread.questions_event_id is None:
        thread.questions_event_id, thread.proposed_at = e.event_id, utc(e.occurred_at)
        thread.idea_type, thread.clarity = e.idea_type, e.clarity
        applied = json.loads(thread.assumptions_json)
        known = {(a["preference_id"], a["value"]) for a in applied}
        applied += [
            {"preference_id": a.preference_id, "value": a.value}
            for a in e.assumptions
            if a.preference_id is not None and (a.preference_id, a.value) not in known
        ]
        thread.assumptions_json = json.dumps(applied)
    for position, q in enumerate(e.questions):
        if store.insert_absent(
            Question(
                question_id=q.question_id,
                thread_id=e.aggregate_id,
                position=position,
                template_id=q.template_id,
                category=q.category,
                slot=q.slot or slot_for(q.template_id),
                text=q.text,
            )
        ):
            batch.added.setdefault(e.aggregate_id, []).append(q.question_id)


@apply.register
def _(e: ev.AnswersRecorded, batch: Batch) -> None:
    store = batch.store
    thread = store.get(Thread, e.aggregate_id)
    for a in e.answers:
        question = store.get(Question, a.question_id)
        # An answer after the thread closed (never sent by the orchestrator) would count in the trend only.
        if question is None or question.answer is not None or question.closed_at is not None or not a.text.strip():
            continue
        question.answer = a.text.strip()
        if a.assumed:
            question.assumed = True
        else:
            question.answered_at = utc(e.occurred_at)
            if thread is not None and thread.proposed_at is not None:
                question.answer_time_s = max(0.0, (question.answered_at - utc(thread.proposed_at)).total_seconds())
                question.clarity_gain = domain.clarity_gain(thread.idea, a.text)


@apply.register
def _(e: ev.TemplateAdded, batch: Batch) -> None:
    store = batch.store
    row = store.get(Template, e.aggregate_id)
    if row is not None and (row.source != "seed" or row.edited):
        return  # an id is added once; the control responder refuses a taken one
    # A seed of the same id (one a later version of the code brought) gives way to the user's template, so a
    # rebuild, where the seeds come first, ends with the same row.
    if row is None:
        row = Template(template_id=e.aggregate_id, prior_improvement=0.0, time_cost_s=1.0)
        store.add(row)
    row.status, row.source, row.edited = e.status, e.source, True
    define(
        row,
        e.category,
        e.text,
        list(e.suggestions),
        list(e.idea_types),
        list(e.triggers),
        e.prior_improvement,
        e.time_cost_s,
        dict(e.variations),
        e.timing,
    )


@apply.register
def _(e: ev.TemplateEdited, batch: Batch) -> None:
    row = batch.store.get(Template, e.aggregate_id)
    if row is None:
        return
    define(
        row,
        e.category,
        e.text,
        list(e.suggestions),
        list(e.idea_types),
        list(e.triggers),
        e.prior_improvement,
        e.time_cost_s,
        dict(e.variations),
        e.timing,
    )
    row.status, row.active, row.edited = e.status, True, True


@apply.register
def _(e: ev.TemplateEffectivenessUpdated, batch: Batch) -> None:
    batch.store.insert_absent(
        EffectivenessCause(
            cause_id=e.causation_id or e.event_id, template_id=e.aggregate_id, thread_id=e.thread_id, cause=e.cause
        )
    )


@apply.register
def _(e: ev.TemplateDeactivated, batch: Batch) -> None:
    row = batch.store.get(Template, e.aggregate_id)
    if row is not None:
        row.active = False  # only that: the seeds never touch ``active``, so a seed's text still follows the code


def _close(e: Event, batch: Batch) -> None:
    """The thread is over: count its questions into ``template_stats`` (once; a repeated close is a no-op)."""
    thread = batch.store.get(Thread, e.aggregate_id)
    if thread is None or thread.closed:
        return
    thread.closed, thread.closed_at = True, utc(e.occurred_at)
    for q in batch.questions(e.aggregate_id):
        if not q.assumed:
            _count(batch.store, q, utc(e.occurred_at))


apply.register(ev.ThreadCompleted, _close)
apply.register(ev.ThreadFailed, _close)


@apply.register
def _(e: ev.ThreadRated, batch: Batch) -> None:
    """Credit the thread's 1-5 rating to every template asked in it; a re-rating replaces the earlier one
    (the difference is applied), so each thread counts once per template."""
    thread = batch.store.get(Thread, e.aggregate_id)
    if thread is None:
        return
    previous, thread.rating = thread.rating, e.rating
    for template_id in sorted({q.template_id for q in batch.questions(e.aggregate_id)}):
        row = _stats(batch.store, template_id, utc(e.occurred_at))
        row.rated_threads += int(previous is None)
        row.rating_sum += e.rating - (previous or 0)
        row.updated_at = utc(e.occurred_at)
