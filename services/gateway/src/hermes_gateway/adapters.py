"""The gateway's I/O over NATS: publishing commands, querying the orchestrator's read models, the
backend-router and the learner, reading stream states. Following a thread live is :mod:`hermes_gateway.live`.

Failures of the bus surface as :class:`BusUnavailable` (answered 503) or :class:`BadReply` (502); a
service that answers with the contract's ``ErrorReply`` raises :class:`Refused`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, TypeVar

import msgspec
import structlog
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from hermes_proto import subjects as subj
from hermes_proto.base import Command
from hermes_proto.bus import EventStore
from hermes_proto.queries import (
    QUERY_THREADS,
    BackendsQuery,
    BackendsReply,
    CompareReply,
    CompareRequest,
    CorrectPreference,
    DeactivateTemplate,
    ForgetPreference,
    JobQuery,
    JobReply,
    JobView,
    OptimizationsQuery,
    OptimizationsReply,
    PatternsQuery,
    PatternsReply,
    PreferencesQuery,
    PreferencesReply,
    PreferenceView,
    QueueReply,
    SaveTemplate,
    SelectionsQuery,
    SelectionsReply,
    SetBackendEnabled,
    SetPreference,
    TemplatesQuery,
    TemplatesReply,
    TemplateView,
    ThreadListQuery,
    ThreadListReply,
    ThreadQuery,
    ThreadReply,
    ThreadView,
)
from hermes_proto.rpc import BUS_ERRORS, BadReply, BusUnavailable, Empty, Refused, ask  # noqa: F401 (re-exported)
from hermes_proto.sessions import (
    ExportQuery,
    ExportReply,
    MemoryHit,
    MemoryQuery,
    MemoryReply,
    SessionQuery,
    SessionReply,
    SessionsQuery,
    SessionsReply,
    SessionView,
    SoulReply,
    SoulRequest,
)
from hermes_proto.userconfig import ChangeSetting, ConfigReply

from hermes_gateway.accepted import AcceptedThreads
from hermes_gateway.feed import EventFeed
from hermes_gateway.observability import COMMANDS_PUBLISHED
from hermes_gateway.tokens import TokenBuffer

log = structlog.get_logger("hermes.gateway")
R = TypeVar("R")

HERMES_STREAMS = (subj.EVENTS_STREAM, subj.COMMANDS_STREAM, subj.EXEC_STREAM, subj.DLQ_STREAM, subj.INBOX_STREAM)


@dataclass
class Bus:
    """The open NATS connection, its JetStream context, the event store and the live feeds, created by the
    lifespan."""

    nc: NATS
    js: JetStreamContext
    store: EventStore
    events: EventFeed
    """The one subscription to the threads' events, fanned out to the live views."""
    tokens: TokenBuffer | None = None
    """The one subscription to token deltas, fanned out to the live views, with the recent ones kept (None: no
    token deltas in live views)."""


class CommandPublisher:
    """Publishes commands to ``HERMES_COMMANDS`` (``Nats-Msg-Id`` = command id, ``traceparent`` from the
    current span) and counts them in ``hermes_gateway_commands_published_total{type}``; a submission that
    JetStream stored is remembered in ``accepted`` (when given) until the orchestrator shows its thread."""

    def __init__(self, bus: Bus, accepted: AcceptedThreads | None = None) -> None:
        self._store = bus.store
        self._accepted = accepted

    async def send(self, command: Command) -> int:
        """Publish ``command``; returns its stream sequence. Raises :class:`BusUnavailable` when JetStream
        does not acknowledge it."""
        try:
            seq = await self._store.send(command)
        except BUS_ERRORS as exc:
            raise BusUnavailable("JetStream", exc) from exc
        COMMANDS_PUBLISHED.labels(command.type_name()).inc()
        if self._accepted is not None:
            self._accepted.remember(command)
        return seq


class ReadModel:
    """The orchestrator's read models over NATS request/reply (``hermes.query.*``, msgspec JSON).
    Every call waits at most ``timeout_s`` seconds, then raises :class:`BusUnavailable`."""

    def __init__(self, bus: Bus, timeout_s: float) -> None:
        self._nc = bus.nc
        self._js = bus.js
        self._events = bus.events
        self._timeout_s = timeout_s

    def seen_position(self) -> int:
        """The last ``HERMES_EVENTS`` sequence this gateway's event feed delivered (no I/O): pass it as
        ``min_sequence`` to read a state that includes every event a client may have seen through this gateway (its
        SSE streams and chat turns show nothing newer). Behind :meth:`log_position` by what is in flight to the feed;
        with several gateways, an event one of them showed may still be in flight to another."""
        return self._events.position

    async def log_position(self) -> int:
        """The last sequence of ``HERMES_EVENTS`` now (one JetStream API request): pass it as ``min_sequence`` to
        validate a change against a state that includes everything in the log, whichever gateway showed it. Raises
        :class:`BusUnavailable`."""
        try:
            return (await self._js.stream_info(subj.EVENTS_STREAM)).state.last_seq
        except BUS_ERRORS as exc:
            raise BusUnavailable("JetStream", exc) from exc

    async def _ask(self, subject: str, query: msgspec.Struct, reply_type: type[R], timeout_s: float | None) -> R:
        return await ask(self._nc, "The orchestrator", subject, query, reply_type, timeout_s or self._timeout_s)

    async def thread(self, thread_id: str, min_sequence: int = 0, timeout_s: float | None = None) -> ThreadView | None:
        """The thread, or None when the orchestrator does not know it. ``min_sequence``: read-your-writes,
        the orchestrator first waits (bounded) until it has applied that ``HERMES_EVENTS`` sequence."""
        reply = await self._ask(
            subj.QUERY_THREAD, ThreadQuery(thread_id=thread_id, min_sequence=min_sequence), ThreadReply, timeout_s
        )
        return reply.thread if reply.found else None

    async def job(self, thread_id: str, job_id: str) -> JobView | None:
        """One job of a thread, or None when unknown."""
        reply = await self._ask(subj.QUERY_JOB, JobQuery(thread_id=thread_id, job_id=job_id), JobReply, None)
        return reply.job if reply.found else None

    async def threads(
        self, limit: int, user_id: str | None = None, origin: dict[str, str] | None = None
    ) -> list[ThreadView]:
        """The most recent threads, newest first, at most ``limit``; only ``user_id``'s and those whose origin holds
        every pair of ``origin`` when given."""
        reply = await self._ask(
            QUERY_THREADS, ThreadListQuery(limit=limit, user_id=user_id, origin=origin or {}), ThreadListReply, None
        )
        return reply.threads

    async def thread_ids(self, limit: int, user_id: str) -> list[str]:
        """The ids of ``user_id``'s newest ``limit`` (at most 500) threads, newest first, without the threads."""
        query = ThreadListQuery(limit=limit, user_id=user_id, ids_only=True)
        return (await self._ask(QUERY_THREADS, query, ThreadListReply, None)).thread_ids

    async def queue(self, timeout_s: float | None = None) -> QueueReply:
        """The orchestrator's open jobs by status and priority, and waiting workflow steps. Raises
        :class:`BusUnavailable` / :class:`BadReply`."""
        return await self._ask(subj.QUERY_QUEUE, Empty(), QueueReply, timeout_s)

    async def ping(self, timeout_s: float) -> float:
        """Round-trip a thread query for a random id; returns the latency in ms. ``found=false`` is a fine
        answer: it proves the orchestrator is answering. Raises :class:`BusUnavailable` / :class:`BadReply`."""
        started = time.perf_counter()
        await self._ask(subj.QUERY_THREAD, ThreadQuery(thread_id=f"health-{time.time_ns()}"), ThreadReply, timeout_s)
        return (time.perf_counter() - started) * 1000


class BackendsClient:
    """The backend-router's request/reply surface (``hermes.query.backends``, ``hermes.query.selections``,
    ``hermes.control.backend``, ``hermes.control.compare``; msgspec JSON). Reads and toggles wait at most
    ``timeout_s`` seconds; a comparison waits its own ``timeout_s`` plus :attr:`COMPARE_MARGIN_S`. Every call
    raises :class:`BusUnavailable` when the router does not answer, :class:`Refused` on its ``ErrorReply``
    (e.g. ``unknown_backend``) and :class:`BadReply` on anything else."""

    WHAT = "The backend-router"
    COMPARE_MARGIN_S = 5.0
    """Seconds on top of a comparison's own timeout: the router collects results for ``timeout_s``, and
    selecting, appending the selections and replying come on top of that."""

    def __init__(self, bus: Bus, timeout_s: float) -> None:
        self._nc = bus.nc
        self._timeout_s = timeout_s

    async def _ask(self, subject: str, query: msgspec.Struct, reply_type: type[R], timeout_s: float | None = None) -> R:
        return await ask(self._nc, self.WHAT, subject, query, reply_type, timeout_s or self._timeout_s)

    async def backends(self) -> BackendsReply:
        """Every registered backend (health, scores, in-flight jobs, spend today) and the budgets."""
        return await self._ask(subj.QUERY_BACKENDS, BackendsQuery(), BackendsReply)

    async def selections(self, job_id: str | None, limit: int, thread_ids: list[str] | None = None) -> SelectionsReply:
        """The router's selection decisions: all attempts of ``job_id`` in order, or the latest ``limit``; only
        those of ``thread_ids`` when given (None: every thread's)."""
        query = SelectionsQuery(job_id=job_id, limit=limit, thread_ids=thread_ids)
        return await self._ask(subj.QUERY_SELECTIONS, query, SelectionsReply)

    async def set_enabled(self, backend: str, enabled: bool, reason: str = "") -> BackendsReply:
        """Enable or disable ``backend`` at runtime (the router appends ``BackendEnabled``/``BackendDisabled``);
        returns the updated list. :class:`Refused` ``unknown_backend`` for a name the router does not know."""
        return await self._ask(
            subj.CONTROL_BACKEND, SetBackendEnabled(backend=backend, enabled=enabled, reason=reason), BackendsReply
        )

    async def compare(self, request: CompareRequest) -> CompareReply:
        """Run one prompt on several backends, side by side. :class:`Refused` ``unknown_backend`` or
        ``bad_request``."""
        return await self._ask(subj.CONTROL_COMPARE, request, CompareReply, request.timeout_s + self.COMPARE_MARGIN_S)


class LearnerClient:
    """The learner's request/reply surface for question templates (``hermes.query.templates``,
    ``hermes.control.template``), preferences (``hermes.query.preferences``, ``hermes.control.preference``) and
    learned patterns (``hermes.query.patterns``, ``hermes.query.optimizations``; msgspec JSON). Every call waits at most ``timeout_s`` seconds and raises
    :class:`BusUnavailable` when the learner does not answer, :class:`Refused` on its ``ErrorReply``
    (``bad_request``, ``unknown_template``, ``template_exists``) and :class:`BadReply` on anything else."""

    WHAT = "The learner"

    def __init__(self, bus: Bus, timeout_s: float) -> None:
        self._nc = bus.nc
        self._timeout_s = timeout_s

    async def _ask(self, subject: str, query: msgspec.Struct, reply_type: type[R]) -> R:
        return await ask(self._nc, self.WHAT, subject, query, reply_type, self._timeout_s)

    async def templates(self, include_inactive: bool = False) -> TemplatesReply:
        """Every template with its measured effectiveness (deactivated ones only with ``include_inactive``)."""
        return await self._ask(subj.QUERY_TEMPLATES, TemplatesQuery(include_inactive=include_inactive), TemplatesReply)

    async def template(self, template_id: str) -> TemplateView | None:
        """One template, active or not, or None when the learner has no template of that id."""
        reply = await self.templates(include_inactive=True)
        return next((t for t in reply.templates if t.template_id == template_id), None)

    async def save(self, command: SaveTemplate) -> TemplateView:
        """Add (``create``) or replace a template; returns it as the learner now has it (the learner answers
        after its read model applied ``TemplateAdded``/``TemplateEdited``). :class:`Refused`
        ``template_exists``, ``unknown_template`` or ``bad_request``."""
        return self._changed(await self._ask(subj.CONTROL_TEMPLATE, command, TemplatesReply))

    async def deactivate(self, command: DeactivateTemplate) -> TemplateView:
        """Stop asking a template (``TemplateDeactivated``); returns it, now inactive. :class:`Refused`
        ``unknown_template``."""
        return self._changed(await self._ask(subj.CONTROL_TEMPLATE, command, TemplatesReply))

    async def preferences(self, user_id: str | None = None) -> PreferencesReply:
        """Learned preferences (of ``user_id``, or of every user) with the confidence threshold in use."""
        return await self._ask(subj.QUERY_PREFERENCES, PreferencesQuery(user_id=user_id), PreferencesReply)

    async def preference(self, preference_id: str) -> PreferenceView | None:
        """One preference, or None when the learner has none of that id."""
        reply = await self.preferences()
        return next((p for p in reply.preferences if p.preference_id == preference_id), None)

    async def change_preference(self, command: SetPreference | CorrectPreference) -> PreferenceView:
        """Set or correct a preference; returns it as the learner now has it. :class:`Refused` ``bad_request``."""
        reply = await self._ask(subj.CONTROL_PREFERENCE, command, PreferencesReply)
        return self._only(subj.CONTROL_PREFERENCE, reply.preferences)

    async def forget_preference(self, command: ForgetPreference) -> None:
        """Forget a preference. :class:`Refused` ``unknown_preference``."""
        await self._ask(subj.CONTROL_PREFERENCE, command, PreferencesReply)

    async def patterns(self, user_id: str | None = None, applied_only: bool = False) -> PatternsReply:
        """Learned patterns (of ``user_id``, or of every user; only those applied now with ``applied_only``) with the
        validation threshold and minimum validations in use."""
        return await self._ask(
            subj.QUERY_PATTERNS, PatternsQuery(user_id=user_id, applied_only=applied_only), PatternsReply
        )

    async def optimizations(self, thread_id: str, min_sequence: int = 0) -> OptimizationsReply:
        """Which open questions of ``thread_id`` learned preferences and patterns settle (the learner first applies
        the log up to ``min_sequence``); appends nothing."""
        return await self._ask(
            subj.QUERY_OPTIMIZATIONS,
            OptimizationsQuery(thread_id=thread_id, min_sequence=min_sequence),
            OptimizationsReply,
        )

    def _changed(self, reply: TemplatesReply) -> TemplateView:
        return self._only(subj.CONTROL_TEMPLATE, reply.templates)

    def _only(self, subject: str, items: list[R]) -> R:
        # The contract: a control reply holds exactly the item it changed.
        if len(items) != 1:
            raise BadReply(f"{subject}: {len(items)} items in the reply, expected 1", self.WHAT)
        return items[0]


class SessionsClient:
    """Sessions, memory search, training exports, SOUL.md and the editable settings, as the orchestrator answers
    them (``hermes.query.sessions``, ``hermes.query.session``, ``hermes.query.memory``, ``hermes.query.export``,
    ``hermes.control.soul``, ``hermes.query.config``, ``hermes.control.config``; :mod:`hermes_proto.sessions`). Every call waits at most ``timeout_s`` seconds and raises
    :class:`BusUnavailable`, :class:`Refused` (``bad_request``) or :class:`BadReply`."""

    WHAT = "The orchestrator"

    def __init__(self, bus: Bus, timeout_s: float) -> None:
        self._nc = bus.nc
        self._timeout_s = timeout_s

    async def _ask(self, subject: str, query: msgspec.Struct, reply_type: type[R]) -> R:
        return await ask(self._nc, self.WHAT, subject, query, reply_type, self._timeout_s)

    async def sessions(self, query: SessionsQuery) -> list[SessionView]:
        """The most recently active sessions (without turns), newest first."""
        return (await self._ask(subj.QUERY_SESSIONS, query, SessionsReply)).sessions

    async def session(
        self, session_id: str, min_sequence: int = 0, last_turns: int | None = None
    ) -> SessionView | None:
        """One session with its turns (the last ``last_turns`` only, when given), or None when unknown
        (``min_sequence``: read-your-writes)."""
        reply = await self._ask(
            subj.QUERY_SESSION,
            SessionQuery(session_id=session_id, min_sequence=min_sequence, last_turns=last_turns),
            SessionReply,
        )
        return reply.session if reply.found else None

    async def memory(self, query: MemoryQuery) -> list[MemoryHit]:
        """Captured turns matching ``query.q`` (SQLite FTS5, best first)."""
        return (await self._ask(subj.QUERY_MEMORY, query, MemoryReply)).hits

    async def export(self, query: ExportQuery) -> ExportReply:
        """One page of a training export; :class:`Refused` ``bad_request`` on a bad date or cursor."""
        return await self._ask(subj.QUERY_EXPORT, query, ExportReply)

    async def config(self) -> ConfigReply:
        """Every user-editable setting as in force (:mod:`hermes_proto.userconfig`)."""
        return await self._ask(subj.QUERY_CONFIG, Empty(), ConfigReply)

    async def change_setting(self, change: ChangeSetting) -> ConfigReply:
        """Change one setting; the reply holds it as now in force. :class:`Refused` ``unknown_setting`` /
        ``bad_request``."""
        return await self._ask(subj.CONTROL_CONFIG, change, ConfigReply)

    async def soul(self, text: str | None = None) -> SoulReply:
        """SOUL.md as the orchestrator applies it; with ``text``, replace it first."""
        return await self._ask(subj.CONTROL_SOUL, SoulRequest(text=text), SoulReply)


async def stream_states(js: JetStreamContext) -> dict[str, dict[str, Any]]:
    """``{stream: {"messages", "last_seq", "consumers"}}`` for each Hermes stream, or ``{"error": ...}``
    for a stream JetStream cannot describe."""
    states: dict[str, dict[str, Any]] = {}
    for name in HERMES_STREAMS:
        try:
            info = await js.stream_info(name)
            states[name] = {
                "messages": info.state.messages,
                "last_seq": info.state.last_seq,
                "consumers": info.state.consumer_count,
            }
        except BUS_ERRORS as exc:
            states[name] = {"error": repr(exc)}
    return states
