"""The learner's request/reply surface. Question templates: ``hermes.query.templates`` (every template with
its measured effectiveness) and ``hermes.control.template`` (add, edit, deactivate). Learned preferences:
``hermes.query.preferences`` and ``hermes.control.preference`` (set, correct, forget; :class:`PreferenceDesk`).
Learned patterns and what they settle: ``hermes.query.patterns`` and ``hermes.query.optimizations``
(:class:`PatternDesk`, read only).

A change is appended to the log as ``TemplateAdded`` / ``TemplateEdited`` / ``TemplateDeactivated`` and
answered once the learner's own projection applied it, so the reply (and every later question choice) shows it.
Requests that do not decode or fail a check get an :class:`~hermes_proto.queries.ErrorReply` (``bad_request``,
``invalid_trigger`` for a trigger pattern RE2 refuses, ``unknown_template``, ``template_exists``); nothing is
appended for them.
"""

from __future__ import annotations

import asyncio
import re
from typing import TypeVar

import msgspec
import structlog
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from prometheus_client import Counter
from sqlalchemy.engine import Engine
from sqlmodel import Session

from hermes_proto import subjects
from hermes_proto.base import Event
from hermes_proto.bus import EventStore
from hermes_proto.codec import UNDECODABLE
from hermes_proto.events import (
    QUESTION_CATEGORIES,
    STYLES,
    TEMPLATE_STATUSES,
    TEMPLATE_TIMINGS,
    TemplateAdded,
    TemplateDeactivated,
    TemplateEdited,
)
from hermes_proto.facts import scopes as fact_scopes
from hermes_proto.ids import new_id, utcnow
from hermes_proto.projection import Projection
from hermes_proto.queries import (
    DeactivateTemplate,
    ErrorReply,
    OptimizationsQuery,
    OptimizationsReply,
    PatternsQuery,
    PatternsReply,
    SaveTemplate,
    TemplatesQuery,
    TemplatesReply,
)
from hermes_proto.rpc import Responder, answering

from hermes_learner import patterns, preferences, queries, triggers
from hermes_learner.ideas import IDEA_TYPES
from hermes_learner.metrics import PATTERNS_APPLIED
from hermes_learner.policies import PatternPolicy, PreferencePolicy

log = structlog.get_logger("hermes.learner")
Q = TypeVar("Q")

TEMPLATE_CHANGES = Counter(
    "hermes_learner_template_changes_total",
    "Template changes through hermes.control.template; outcome: added, edited, deactivated, or the refusal code",
    ["outcome"],
)
APPLY_TIMEOUT_S = 2.0
"""Seconds to wait for the projection to apply an appended change before answering (it applies within ms; less
than the gateway's default query timeout of 3 s, so a slow apply still gets an answer)."""

QUEUE_GROUP = "learner"
_control = msgspec.json.Decoder(SaveTemplate | DeactivateTemplate)


def problems(request: SaveTemplate) -> str | None:
    """Why ``request`` cannot be saved (None: it can): a category, idea type, status, variation style or timing
    outside the known ones, a trigger RE2 refuses (:func:`hermes_learner.triggers.compile_trigger`), a ``{...}``
    slot other than ``{topic}`` in the text or a variation."""
    if request.template_id != request.template_id.strip():  # "$" in the id pattern lets a final newline by
        return "the template id must not end in whitespace"
    if request.category not in QUESTION_CATEGORIES:
        return f"category must be one of {', '.join(QUESTION_CATEGORIES)}"
    unknown = sorted(set(request.idea_types) - set(IDEA_TYPES))
    if unknown:
        return f"unknown idea type(s) {', '.join(unknown)}; known: {', '.join(IDEA_TYPES)}"
    if request.status not in TEMPLATE_STATUSES:
        return f"status must be one of {', '.join(TEMPLATE_STATUSES)}"
    trigger_problem = triggers.problem(request.triggers)
    if trigger_problem is not None:
        return trigger_problem
    unknown = sorted(set(request.variations) - set(STYLES))
    if unknown:
        return f"unknown style(s) {', '.join(unknown)} in variations; known: {', '.join(STYLES)}"
    if request.timing not in TEMPLATE_TIMINGS:
        return f"timing must be one of {', '.join(TEMPLATE_TIMINGS)}"
    for style, text in [("text", request.text), *sorted(request.variations.items())]:
        slots = set(re.findall(r"\{([^}]*)\}", text)) - {"topic"}
        if slots:
            where = "the text" if style == "text" else f"the {style} variation"
            return f"{where} may only hold the {{topic}} slot, not {', '.join(sorted(slots))}"
    return None


class Desk:
    """What both desks share: the connection, the learner's store, its read model (``engine``) and the projection
    that follows the log into it; :meth:`_append` appends one change and waits (bounded) until it is applied."""

    def __init__(self, nc: NATS, store: EventStore, engine: Engine, projection: Projection) -> None:
        self.nc = nc
        self.store = store
        self.engine = engine
        self.projection = projection

    def _read(self, fn, *args):  # noqa: ANN001, ANN202
        with Session(self.engine) as session:
            return fn(session, *args)

    async def _serve(self, subject: str, handler: Responder) -> None:
        """Answer ``subject`` in the learners' queue group (one learner answers each request, however many run: a
        change must be appended once); a request ``handler`` fails on still gets an ``ErrorReply``
        (:func:`~hermes_proto.rpc.answering`)."""
        await self.nc.subscribe(subject, queue=QUEUE_GROUP, cb=answering("learner", handler))

    async def _append(self, event: Event) -> None:
        [sequence] = await self.store.append([event])
        if not await self.projection.wait_for(sequence, timeout_s=APPLY_TIMEOUT_S):
            log.warning("change_not_applied_yet", aggregate_id=event.aggregate_id, sequence=sequence)


class TemplateDesk(Desk):
    """Answers template queries and changes for one learner (``projection`` is its read model's follower)."""

    async def subscribe(self) -> None:
        await self._serve(subjects.QUERY_TEMPLATES, self.on_query)
        await self._serve(subjects.CONTROL_TEMPLATE, self.on_control)

    async def on_query(self, msg: Msg) -> None:
        query = await _query(msg, TemplatesQuery)
        if query is None:
            return
        views = await asyncio.to_thread(self._read, queries.template_views, query.include_inactive)
        await _respond(msg, TemplatesReply(templates=views))

    async def on_control(self, msg: Msg) -> None:
        try:
            request = _control.decode(msg.data or b"")
        except UNDECODABLE + (msgspec.ValidationError,) as exc:
            await self._refuse(msg, "bad_request", str(exc))
            return
        current = await asyncio.to_thread(self._read, queries.template_view, request.template_id)
        if isinstance(request, DeactivateTemplate):
            if current is None:
                await self._refuse(msg, "unknown_template", f"no template {request.template_id}")
                return
            event: Event = TemplateDeactivated(**_envelope(request.template_id), reason=request.reason)
            outcome = "deactivated"
        else:
            refusal = await asyncio.to_thread(self._refusal, request, current is not None)  # compiles its triggers
            if refusal is not None:
                await self._refuse(msg, *refusal)
                return
            fields = msgspec.structs.asdict(request)
            for key in ("template_id", "create"):
                fields.pop(key)
            event = (
                TemplateAdded(**_envelope(request.template_id), **fields)
                if request.create
                else TemplateEdited(**_envelope(request.template_id), **fields)
            )
            outcome = "added" if request.create else "edited"
        await self._append(event)
        view = await asyncio.to_thread(self._read, queries.template_view, request.template_id)
        TEMPLATE_CHANGES.labels(outcome).inc()
        log.info("template_changed", template_id=request.template_id, outcome=outcome)
        await _respond(msg, TemplatesReply(templates=[view] if view is not None else []))

    @staticmethod
    def _refusal(request: SaveTemplate, exists: bool) -> tuple[str, str] | None:
        if request.create and exists:
            return "template_exists", f"template {request.template_id} exists; edit it instead"
        if not request.create and not exists:
            return "unknown_template", f"no template {request.template_id}"
        trigger_problem = triggers.problem(request.triggers)
        if trigger_problem is not None:
            return "invalid_trigger", trigger_problem
        problem = problems(request)
        return ("bad_request", problem) if problem else None

    async def _refuse(self, msg: Msg, code: str, message: str) -> None:
        TEMPLATE_CHANGES.labels(code).inc()
        await _respond(msg, ErrorReply(code=code, message=message))


def _envelope(template_id: str) -> dict:
    event_id = new_id()  # an operator's change: each request is a new fact
    return dict(event_id=event_id, aggregate_id=template_id, occurred_at=utcnow(), correlation_id=event_id)


async def _respond(msg: Msg, reply: object) -> None:
    if msg.reply:
        await msg.respond(msgspec.json.encode(reply))


async def _query(msg: Msg, query_type: type[Q]) -> Q | None:
    """The query ``msg`` carries (an empty body: ``query_type``'s defaults), or None once it was answered with
    ``bad_request`` because it does not decode."""
    try:
        return msgspec.json.decode(msg.data or b"{}", type=query_type)
    except UNDECODABLE + (msgspec.ValidationError,) as exc:
        await _respond(msg, ErrorReply(code="bad_request", message=str(exc)))
        return None


OPTIMIZATIONS = Counter(
    "hermes_learner_optimizations_total",
    "Open questions settled for POST /api/threads/{id}/optimize; kind: preference, recurring_answer, skip_question",
    ["kind"],
)


class PatternDesk(Desk):
    """Answers pattern queries (``hermes.query.patterns``) and, for a thread awaiting answers, which of its open
    questions what was learned settles (``hermes.query.optimizations``: the fact the thread applies in each
    question's slot, :func:`hermes_learner.patterns.optimizations`). Appends nothing; with learning disabled
    (``prefs.enabled`` false) nothing is ever settled."""

    def __init__(
        self,
        nc: NATS,
        store: EventStore,
        engine: Engine,
        projection: Projection,
        prefs: PreferencePolicy,
        policy: PatternPolicy,
    ) -> None:
        super().__init__(nc, store, engine, projection)
        self.prefs = prefs
        self.policy = policy

    async def subscribe(self) -> None:
        await self._serve(subjects.QUERY_PATTERNS, self.on_query)
        await self._serve(subjects.QUERY_OPTIMIZATIONS, self.on_optimize)

    async def on_query(self, msg: Msg) -> None:
        query = await _query(msg, PatternsQuery)
        if query is None:
            return
        if query.min_sequence:  # read-your-writes: bounded, then answered from where the read model is
            await self.projection.wait_for(query.min_sequence, timeout_s=APPLY_TIMEOUT_S)
        views = await asyncio.to_thread(
            self._read,
            queries.pattern_views,
            query.user_id,
            query.applied_only,
            self.policy.threshold,
            self.policy.min_validations,
        )
        await _respond(
            msg,
            PatternsReply(
                patterns=views, validation_threshold=self.policy.threshold, min_validations=self.policy.min_validations
            ),
        )

    async def on_optimize(self, msg: Msg) -> None:
        query = await _query(msg, OptimizationsQuery)
        if query is None:
            return
        if not self.prefs.enabled:
            await _respond(
                msg,
                OptimizationsReply(
                    thread_id=query.thread_id, found=True, learning_enabled=False, reason="learning disabled"
                ),
            )
            return
        if not await self.projection.wait_for(query.min_sequence, timeout_s=APPLY_TIMEOUT_S):
            log.warning("optimizing_on_a_lagging_read_model", thread_id=query.thread_id, wanted=query.min_sequence)
        reply = await asyncio.to_thread(self._read, self._optimizations, query.thread_id)
        for o in reply.optimizations:
            OPTIMIZATIONS.labels(o.kind).inc()
            if o.kind != "preference":
                PATTERNS_APPLIED.labels(o.kind).inc()
        log.info(
            "optimizations_found",
            thread_id=query.thread_id,
            settled=[f"{o.question_id}:{o.kind}" for o in reply.optimizations],
            reason=reply.reason,
        )
        await _respond(msg, reply)

    def _optimizations(self, session: Session, thread_id: str) -> OptimizationsReply:
        thread = queries.load_thread(session, thread_id)
        if thread is None or thread.idea_type is None:
            return OptimizationsReply(thread_id=thread_id, found=False, reason="the learner has no questions of it")
        open_ = queries.open_questions(session, thread_id)
        within = fact_scopes(idea_type=thread.idea_type, project=thread.project)
        known = preferences.known_slots(
            queries.load_preferences(session, thread.user_id), within, self.prefs.threshold, utcnow()
        )
        found = patterns.optimizations(open_, known)
        reason = "" if found else ("no open question" if not open_ else "nothing learned settles its open questions")
        return OptimizationsReply(thread_id=thread_id, found=True, optimizations=found, reason=reason)
