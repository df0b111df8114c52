"""The user's own word on learned facts over the bus: ``hermes.query.preferences`` lists them and
``hermes.control.preference`` sets, corrects or forgets one (``SetPreference`` / ``CorrectPreference`` /
``ForgetPreference``; the gateway's ``/api/learn/preferences`` and ``/api/learn/feedback``, Telegram's ``/correct``).

A fact lives in scopes (:mod:`hermes_proto.facts`). A change that names no scope applies in every scope the user holds
the slot in (and, for a correction about a thread, every scope of that thread), so what the user says is what the next
draft applies, whichever scope would have won; forgetting the fact held everywhere forgets it in every scope.
"""

from __future__ import annotations

import asyncio

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
from hermes_proto.events import PREFERENCE_CATEGORIES, PreferenceForgotten, preference_id
from hermes_proto.facts import EVERYWHERE, category_of
from hermes_proto.facts import scopes as fact_scopes
from hermes_proto.ids import utcnow
from hermes_proto.projection import Projection
from hermes_proto.queries import (
    CorrectPreference,
    ErrorReply,
    ForgetPreference,
    PreferencesQuery,
    PreferencesReply,
    SetPreference,
)

from hermes_learner import normalize, preferences, queries
from hermes_learner.desk import APPLY_TIMEOUT_S, Desk, _envelope, _query, _respond
from hermes_learner.evidence import learned_event
from hermes_learner.policies import PreferencePolicy

log = structlog.get_logger("hermes.learner")

PREFERENCE_CHANGES = Counter(
    "hermes_learner_preference_changes_total",
    "Preference changes through hermes.control.preference; outcome: set, corrected, forgotten, or the refusal code",
    ["outcome"],
)
_preference_control = msgspec.json.Decoder(SetPreference | CorrectPreference | ForgetPreference)


def preference_problem(category: str, key: str) -> str | None:
    """Why ``category``/``key`` names no preference (None: it does): the category must be one of
    ``PREFERENCE_CATEGORIES`` and the key of depth and style is the category itself."""
    if category not in PREFERENCE_CATEGORIES:
        return f"category must be one of {', '.join(PREFERENCE_CATEGORIES)}"
    if category in ("depth", "style") and key != category:
        return f"the key of a {category} preference is {category!r}"
    if category in ("constraint", "fact") and key in ("depth", "style"):
        return f"{key!r} is a category of its own, not a {category}"
    return None


def stated(category: str, text: str, pref: preferences.Preference) -> tuple[str, str]:
    """``(value, wording)`` of what a user states for a preference: a depth or style word as it is (lowercase),
    any other value normalised as an answer is (:mod:`hermes_learner.normalize`, a restatement of a value already
    held counting for it), the user's words kept as typed (whitespace folded)."""
    if category in ("depth", "style"):
        return text.strip().lower(), text.strip().lower()
    normal = normalize.normalize(text)
    words = " ".join(text.split())
    return (normalize.settle(normal, pref.votes), words) if normal.kind != "empty" else (words, words)


def change_scopes(
    request: SetPreference | CorrectPreference,
    held: list[preferences.Preference],
    thread: object | None,
) -> list[str]:
    """The scopes a set or correction applies in: the one it names; with none named, everywhere, every scope the user
    holds that slot in and, for a correction about a thread of that user, every scope of the thread."""
    if request.scope:
        return [request.scope]
    found = {EVERYWHERE} | {p.scope for p in held}
    if thread is not None:
        found |= set(fact_scopes(idea_type=thread.idea_type, project=thread.project))  # type: ignore[attr-defined]
    return sorted(found)


class PreferenceDesk(Desk):
    """Answers preference queries and changes (``policy``: the learner's threshold and expiry). A set or a correction
    is appended as ``PreferenceLearned`` (evidence ``edit`` / ``correction``, source explicit) per scope it applies in
    (:func:`change_scopes`), a forget as ``PreferenceForgotten``; the reply (the preference the request names) comes
    once the projection applied them."""

    def __init__(
        self, nc: NATS, store: EventStore, engine: Engine, projection: Projection, policy: PreferencePolicy
    ) -> None:
        super().__init__(nc, store, engine, projection)
        self.policy = policy

    async def subscribe(self) -> None:
        await self._serve(subjects.QUERY_PREFERENCES, self.on_query)
        await self._serve(subjects.CONTROL_PREFERENCE, self.on_control)

    def _views(self, user_id: str | None) -> PreferencesReply:
        views = self._read(queries.preference_views, user_id, self.policy.threshold, utcnow())
        return PreferencesReply(preferences=views, confidence_threshold=self.policy.threshold)

    def _view(self, pid: str) -> PreferencesReply:
        view = self._read(queries.preference_view, pid, self.policy.threshold, utcnow())
        return PreferencesReply(preferences=[view] if view else [], confidence_threshold=self.policy.threshold)

    async def on_query(self, msg: Msg) -> None:
        query = await _query(msg, PreferencesQuery)
        if query is None:
            return
        if query.min_sequence:  # read-your-writes: bounded, then answered from where the read model is
            await self.projection.wait_for(query.min_sequence, timeout_s=APPLY_TIMEOUT_S)
        await _respond(msg, await asyncio.to_thread(self._views, query.user_id))

    async def on_control(self, msg: Msg) -> None:
        try:
            request = _preference_control.decode(msg.data or b"")
        except UNDECODABLE + (msgspec.ValidationError,) as exc:
            await self._refuse(msg, "bad_request", str(exc))
            return
        if isinstance(request, ForgetPreference):
            pid, events = request.preference_id, await asyncio.to_thread(self._forget, request)
            outcome = "forgotten"
        else:
            problem = preference_problem(request.category, request.key)
            if problem is not None:
                await self._refuse(msg, "bad_request", problem)
                return
            category = request.category if request.category in ("depth", "style") else category_of(request.key)
            pid = preference_id(request.user_id, category, request.key, request.scope)
            events = await asyncio.to_thread(self._read, self._changes, request, category)
            outcome = "set" if isinstance(request, SetPreference) else "corrected"
        if not events:
            await self._refuse(msg, "unknown_preference", f"no preference {pid}")
            return
        for event in events:
            await self._append(event)
        PREFERENCE_CHANGES.labels(outcome).inc()
        log.info("preference_changed", preference_id=pid, outcome=outcome, events=len(events))
        await _respond(msg, await asyncio.to_thread(self._view, pid))

    def _changes(self, session: Session, request: SetPreference | CorrectPreference, category: str) -> list[Event]:
        user, key = request.user_id, request.key
        held = [p for p in queries.load_preferences(session, user) if p.category == category and p.key == key]
        thread_id = request.thread_id if isinstance(request, CorrectPreference) else None
        thread = queries.load_thread(session, thread_id) if thread_id else None
        mine = {p.scope: p for p in held}
        evidence = "edit" if isinstance(request, SetPreference) else "correction"
        events: list[Event] = []
        for scope in change_scopes(request, held, thread if thread is not None and thread.user_id == user else None):
            pref = mine.get(scope) or preferences.Preference(user, category, key, scope=scope)
            value, wording = stated(category, request.value, pref)
            learned = preferences.learn(pref, evidence, value, utcnow(), self.policy.ttl, wording=wording)
            events.append(learned_event(learned, evidence, thread_id=thread_id))
        return events

    def _forget(self, request: ForgetPreference) -> list[Event]:
        """The ``PreferenceForgotten`` events of a forget: the preference named and, when it is the one held
        everywhere, the same slot's preference in every other scope (none for an unknown id)."""
        with Session(self.engine) as session:
            current = queries.load_preference(session, request.preference_id)
            if current is None:
                return []
            also = [
                p
                for p in queries.load_preferences(session, current.user_id)
                if not current.scope and (p.category, p.key) == (current.category, current.key) and p.scope
            ]
        return [
            PreferenceForgotten(
                **_envelope(p.preference_id),
                user_id=p.user_id,
                category=p.category,
                key=p.key,
                scope=p.scope,
                reason=request.reason,
            )
            for p in [current, *also]
        ]

    async def _refuse(self, msg: Msg, code: str, message: str) -> None:
        PREFERENCE_CHANGES.labels(code).inc()
        await _respond(msg, ErrorReply(code=code, message=message))
