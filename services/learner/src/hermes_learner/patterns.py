"""What the learner learns about how a user answers: learned patterns, keyed by the user, the idea's type and a
question category, validated once per closed thread; and what they settle (questions not to ask, answers to assume).

Pure and deterministic, no I/O. Two kinds (:data:`~hermes_proto.events.PATTERN_KINDS`):

- ``skip_question``: "for ideas of type T this user leaves questions of category C unanswered". A closed thread of
  type T that asked C tests it: a success when none of those questions got a real answer (:func:`real_answer`).
- ``recurring_answer``: "for ideas of type T this user answers C the same way". Each thread of type T whose C
  questions got real answers tests it: a success when every such answer (:func:`normalize` d) is the value predicted
  before the thread, the most frequent answer so far. The first answer has nothing to be checked against: it only
  seeds the value counts (outcome ``seeded``).

Confidence is the posterior mean of the success rate under a uniform Beta(1, 1) prior after ``s`` successes in
``n`` validations, ``(s + 1) / (n + 2)``: Laplace's rule of succession (the Beta-Binomial update; Gelman et al.,
*Bayesian Data Analysis*, 3rd ed., §2.4). A pattern is applied only from ``confidence >= threshold`` (seed
``hermes.learning.pattern_validation_threshold`` 0.8) AND ``n >= min_validations`` (3): three confirmations and
no contradiction give exactly 4/5 = 0.8.

Hermes never learns from its own guesses: an answer it supplied (``Answer.assumed``, ``POST
/api/threads/{id}/optimize``) is no evidence, and a thread where it supplied one gives no ``skip_question`` evidence
either (Hermes, not the user, stopped waiting for the other answers).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from hermes_proto import facts
from hermes_proto.events import QUESTION_CATEGORIES, pattern_id
from hermes_proto.queries import Optimization

from hermes_learner import preferences

SKIP, RECURRING = "skip_question", "recurring_answer"
MAX_VALUE_CHARS = 120

NON_ANSWERS = re.compile(
    r"(i'?m )?(not sure|unsure)|no idea|(i )?(don'?t|do not) know|dunno|idk|n/?a|skip|pass|no answer|whatever|"
    r"(i )?(don'?t|do not) care|(it )?doesn'?t matter|no comment|[?.-]*"
)
"""Answers that answer nothing (matched against the whole :func:`normalize` d answer, so "I don't know the options
yet" is a real answer; an empty one matches too); a list of Hermes's own."""


def normalize(text: str) -> str:
    """``text`` as compared and stored: whitespace collapsed, end punctuation (``.!?,;:``) dropped, lowercase, at most
    :data:`MAX_VALUE_CHARS` characters."""
    return " ".join(text.split()).strip(" .!?,;:").lower()[:MAX_VALUE_CHARS]


def real_answer(text: str | None) -> bool:
    """Whether ``text`` answers its question: not None, not blank, and not a non-answer (:data:`NON_ANSWERS`:
    "not sure", "no idea", "I don't know", "n/a", "skip", "?", ...; case and end punctuation ignored)."""
    return text is not None and NON_ANSWERS.fullmatch(normalize(text)) is None


@dataclass(frozen=True)
class Asked:
    """One question a closed thread asked: its ``category``, the ``answer`` it got (None: none) and whether Hermes
    supplied that answer itself (``assumed``)."""

    category: str
    answer: str | None = None
    assumed: bool = False


@dataclass(frozen=True)
class Pattern:
    """One user's belief about ``kind`` for ideas of ``idea_type`` and questions of ``category`` (what
    :class:`~hermes_proto.events.PatternValidated` carries). ``values``: answers seen (recurring_answer)."""

    user_id: str
    kind: str
    idea_type: str
    category: str
    validation_count: int = 0
    success_count: int = 0
    values: Mapping[str, int] = field(default_factory=dict)

    @property
    def pattern_id(self) -> str:
        return pattern_id(self.user_id, self.kind, self.idea_type, self.category)

    def confidence(self) -> float:
        """``(success_count + 1) / (validation_count + 2)`` in (0, 1), 4 decimals: 0.5 before any validation."""
        return round((self.success_count + 1) / (self.validation_count + 2), 4)

    def value(self) -> str | None:
        """The most frequent answer (ties: the smaller one); None for skip_question or before any answer."""
        return leader(self.values)

    def usable(self, threshold: float, min_validations: int) -> bool:
        """Applied: ``confidence() >= threshold`` and at least ``min_validations`` validations (and, for
        recurring_answer, a value to assume)."""
        return (
            self.confidence() >= threshold
            and self.validation_count >= min_validations
            and (self.kind == SKIP or self.value() is not None)
        )

    def recommended_actions(self) -> list[str]:
        """``skip_category:<category>`` or ``assume:<category>=<value>`` (none before a value is known)."""
        if self.kind == SKIP:
            return [f"skip_category:{self.category}"]
        value = self.value()
        return [f"assume:{self.category}={value}"] if value is not None else []


def leader(values: Mapping[str, int]) -> str | None:
    """The most frequent value of ``values`` (ties go to the smaller value), or None when empty."""
    if not values:
        return None
    best = max(values.values())
    return min(v for v, n in values.items() if n == best)


# ---- learning ----------------------------------------------------------------------------------


def validate(pattern: Pattern, success: bool) -> Pattern:
    """``pattern`` after one validation (``success``: the thread confirmed it)."""
    return replace(
        pattern, validation_count=pattern.validation_count + 1, success_count=pattern.success_count + int(success)
    )


def answered(pattern: Pattern, answers: Sequence[str]) -> tuple[Pattern, str]:
    """A recurring_answer ``pattern`` after one thread's (normalized, non-empty) ``answers`` to its category, and the
    outcome: ``seeded`` with no value yet (the answers only start the counts), else ``success`` when every answer is
    the value held before the thread, ``failure`` otherwise. Each answer adds one to its value's count."""
    predicted = pattern.value()
    values = dict(pattern.values)
    for answer in answers:
        values[answer] = values.get(answer, 0) + 1
    if predicted is None:
        return replace(pattern, values=values), "seeded"
    success = all(a == predicted for a in answers)
    return replace(validate(pattern, success), values=values), "success" if success else "failure"


def observe(
    user_id: str, idea_type: str, asked: Sequence[Asked], held: Mapping[str, Pattern]
) -> list[tuple[Pattern, str]]:
    """The patterns one closed thread of ``user_id`` (ideas of ``idea_type``) changes, with their outcome, in
    category then kind order: per category it asked, its skip_question pattern (unless Hermes supplied an answer in
    this thread) and, when the user really answered, its recurring_answer pattern. ``held``: the user's patterns by
    id (a missing one starts empty). Answers Hermes supplied count as neither answered nor unanswered."""
    optimized = any(q.assumed for q in asked)
    changes: list[tuple[Pattern, str]] = []
    for category in QUESTION_CATEGORIES:
        mine = [q for q in asked if q.category == category and not q.assumed]
        if not mine:
            continue
        real = [normalize(q.answer) for q in mine if q.answer is not None and real_answer(q.answer)]
        if not optimized:
            skip = _held(held, user_id, SKIP, idea_type, category)
            changes.append((validate(skip, success=not real), "failure" if real else "success"))
        if real:
            changes.append(answered(_held(held, user_id, RECURRING, idea_type, category), real))
    return changes


def _held(held: Mapping[str, Pattern], user_id: str, kind: str, idea_type: str, category: str) -> Pattern:
    return held.get(pattern_id(user_id, kind, idea_type, category)) or Pattern(user_id, kind, idea_type, category)


# ---- using them --------------------------------------------------------------------------------


def optimizations(
    open_questions: Sequence[tuple[str, str, str]], known: Mapping[str, preferences.Preference]
) -> list[Optimization]:
    """What settles each of ``open_questions`` (``(question_id, category, slot)``, in order), one entry per question
    at most: the fact the thread applies in its slot (``known``: :func:`preferences.known_slots`), its value as the
    answer, or no answer (kind ``skip_question``) for a slot the user leaves unanswered."""
    found: list[Optimization] = []
    for question_id, category, slot in open_questions:
        held = known.get(slot)
        if held is None:
            continue
        skip = not facts.applies(held.value)
        found.append(
            Optimization(
                kind=SKIP if skip else "preference",
                question_id=question_id,
                category=category,
                answer=None if skip else held.wording(),
                source_id=held.preference_id,
                source_ids=[held.preference_id],
                confidence=held.confidence(),
                reason=(
                    f"the user leaves {slot} unanswered (learned fact)"
                    if skip
                    else f"answered from the user's learned fact {slot}={held.wording()!r}"
                    + (f" ({held.scope})" if held.scope else "")
                ),
            )
        )
    return found


def describe(p: Pattern) -> str:
    """A sentence saying what ``p`` learned and how well it held."""
    held = f"{p.success_count} of {p.validation_count} {p.idea_type} threads (learned pattern)"
    if p.kind == SKIP:
        return f"the user left {p.category} questions unanswered in {held}"
    return f"the user answered {p.category} questions {p.value()!r} in {held}"
