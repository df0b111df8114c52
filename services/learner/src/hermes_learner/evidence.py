"""What the learner learns about its user from each event of a thread, as pure functions: the facts answers, closes,
ratings and their comments show (:func:`preference_evidence`), those a model read from answers
(:func:`extracted_evidence`), each counted in every scope of the thread, and the ``PreferenceLearned`` event that
carries a fact's whole belief (:func:`learned_event`). Event ids derive from the cause, so deciding again (a
redelivery) appends the same events. No I/O.
"""

from __future__ import annotations

from collections.abc import Sequence

from hermes_proto.base import Event
from hermes_proto.events import (
    AnswersRecorded,
    PreferenceLearned,
    ThreadCompleted,
    ThreadFailed,
    ThreadRated,
    preference_id,
)
from hermes_proto.facts import UNANSWERED
from hermes_proto.facts import scopes as fact_scopes
from hermes_proto.ids import derived_id, new_id, utcnow

from hermes_learner import extraction, preferences, slots
from hermes_learner.convert import ThreadFacts, question_slot
from hermes_learner.policies import PreferencePolicy


def preference_evidence(
    event: AnswersRecorded | ThreadRated | ThreadCompleted | ThreadFailed,
    facts: ThreadFacts | None,
    held: Sequence[preferences.Preference],
    policy: PreferencePolicy,
) -> list[PreferenceLearned]:
    """The ``PreferenceLearned`` events one event of a thread gives (none for a cause already learned from, an
    unknown thread, or nothing to learn); ``held``: the thread's user's preferences. Each fact counts once per cause
    in every scope the thread is in (:func:`hermes_proto.facts.scopes`):

    - answers: what each answer says (:func:`answered`); an answer Hermes supplied itself (``Answer.assumed``) is no
      evidence about the user;
    - a close: each question still unanswered is its slot left :data:`~hermes_proto.facts.UNANSWERED` (none when
      Hermes answered some of the thread's questions itself);
    - a rating: for (4-5) or against (1-2) each fact the thread applied, and what its comment says about depth and
      style (:func:`hermes_learner.slots.read_comment`)."""
    if facts is None or event.event_id in facts.evidence:
        return []
    learner = _Evidence(event, facts, held, policy)
    if isinstance(event, AnswersRecorded):
        for o, question in answered(event, facts, held).values():
            learner.note("answer", o, question)
    elif isinstance(event, ThreadRated):
        for pid, value in facts.assumptions:
            pref = learner.mine.get(pid)
            if pref is not None and value in (pref.value, pref.wording()):
                learner.keep(
                    "rating", preferences.learn(pref, "rating", None, learner.now, policy.ttl, rating=event.rating)
                )
        for o in slots.read_comment(event.comment):
            learner.note("comment", o)
    elif not any(q.assumed for q in facts.questions):  # Hermes answered some itself: its silence says nothing
        left = (question_slot(q) for q in facts.questions if q.answer is None and not q.assumed)
        for slot in dict.fromkeys(left):
            if slot not in ("depth", "style"):
                learner.note("answer", slots.unanswered(slot))
    return learner.events()


def answered(
    event: AnswersRecorded, facts: ThreadFacts, held: Sequence[preferences.Preference]
) -> dict[tuple[str, str], tuple[preferences.Observation, str]]:
    """(category, key) → (what the user's answers say of it, the question that asked it or ""): each answer read on
    its question's slot (:func:`hermes_learner.slots.read_answer`), a value beating "unanswered" when another answer
    of the thread gave the slot one."""
    asked = {q.question_id: q for q in facts.questions}
    earlier = _earlier(held)
    shown: dict[tuple[str, str], tuple[preferences.Observation, str]] = {}
    for answer in event.answers:
        if answer.assumed:
            continue
        q = asked.get(answer.question_id)  # not known here: only what the rules recognise is read
        slot = question_slot(q) if q is not None else ""
        for o in slots.read_answer(answer.text, slot, earlier):
            if (o.category, o.key) not in shown or shown[(o.category, o.key)][0].value == UNANSWERED:
                shown[(o.category, o.key)] = (o, q.text if q is not None and o.key == slot else "")
    return shown


def extracted_evidence(
    answers: AnswersRecorded,
    outcome: Event,
    facts: ThreadFacts | None,
    held: Sequence[preferences.Preference],
    policy: PreferencePolicy,
    found: Sequence[extraction.Fact],
) -> list[PreferenceLearned]:
    """The ``PreferenceLearned`` events of the facts a model read from ``answers`` (its job's ``outcome`` is the
    cause): those of slots the rules left without a value in the same answers (:func:`extraction.usable`), each in
    every scope of the thread; none for a cause already learned from or an unknown thread."""
    if facts is None or outcome.event_id in facts.evidence:
        return []
    filled = {o.key for o, _ in answered(answers, facts, held).values() if o.value != UNANSWERED}
    learner = _Evidence(outcome, facts, held, policy)
    for fact in extraction.usable(found, filled):
        if fact.slot in ("depth", "style"):
            o: preferences.Observation | None = preferences.Observation(fact.slot, fact.slot, fact.value)
        else:
            o = slots.fact(fact.slot, fact.value, _earlier(held))
        if o is not None:
            learner.note("answer", o)
    return learner.events()


def _earlier(held: Sequence[preferences.Preference]) -> slots.Earlier:
    """Slot → the values the user's facts held everywhere voted for (what a new answer is settled against)."""
    return lambda slot: [v for p in held if p.slot == slot and not p.scope for v in p.votes]


class _Evidence:
    """The facts one cause changes, in every scope of its thread (one event per fact at the end)."""

    def __init__(
        self, cause: Event, facts: ThreadFacts, held: Sequence[preferences.Preference], policy: PreferencePolicy
    ) -> None:
        self.cause, self.facts, self.policy, self.now = cause, facts, policy, cause.occurred_at
        self.mine = {p.preference_id: p for p in held}
        self.within = fact_scopes(idea_type=facts.idea_type, project=facts.project)
        self.changes: list[tuple[str, preferences.Preference]] = []

    def keep(self, evidence: str, pref: preferences.Preference) -> None:
        self.mine[pref.preference_id] = pref
        self.changes.append((evidence, pref))

    def note(self, evidence: str, o: preferences.Observation, question: str = "") -> None:
        user = self.facts.user_id
        for scope in self.within:
            pid = preference_id(user, o.category, o.key, scope)
            pref = self.mine.get(pid) or preferences.Preference(user, o.category, o.key, scope=scope)
            wording = o.wording or None
            self.keep(
                evidence,
                preferences.learn(
                    pref, evidence, o.value, self.now, self.policy.ttl, wording=wording, question=question
                ),
            )

    def events(self) -> list[PreferenceLearned]:
        last = {p.preference_id: (evidence, p) for evidence, p in self.changes}  # one event per preference and cause
        return [
            learned_event(p, evidence, cause=self.cause, thread_id=self.cause.aggregate_id)
            for evidence, p in last.values()
        ]


def learned_event(
    pref: preferences.Preference, evidence: str, *, cause: Event | None = None, thread_id: str | None = None
) -> PreferenceLearned:
    """``pref`` as a :class:`PreferenceLearned`. With a ``cause`` (an answers or rating event) the id derives from
    it and the preference, so a redelivered cause appends the same event; without one (a user's request) it is
    new, and the event is its own cause."""
    event_id = derived_id(cause.event_id, "preference_learned", pref.preference_id) if cause else new_id()
    return PreferenceLearned(
        event_id=event_id,
        aggregate_id=pref.preference_id,
        occurred_at=utcnow(),
        correlation_id=cause.correlation_id if cause else event_id,
        causation_id=cause.event_id if cause else None,
        user_id=pref.user_id,
        category=pref.category,
        key=pref.key,
        value=pref.value,
        votes=dict(pref.votes),
        doubt=pref.doubt,
        confidence=pref.confidence(),
        stability=pref.stability(),
        observations=pref.observations,
        corrections=pref.corrections,
        source=preferences.SOURCES[evidence],
        evidence=evidence,
        thread_id=thread_id,
        expires_at=pref.expires_at,
        scope=pref.scope,
        wordings=dict(pref.wordings),
        question=pref.question,
    )
