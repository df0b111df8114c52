"""What the learner learns about its user: facts (preferences) read from answers, confirmed or doubted by ratings,
and corrected or set by the user; and which questions they make unnecessary.

Pure and deterministic, no I/O. A preference is ``(category, key, scope) → value`` (:mod:`hermes_proto.facts`): one
slot's value for one user, everywhere or in one idea type or project. ``depth/depth`` (overview, detailed,
comprehensive), ``style/style`` (formal, casual, technical), ``constraint/<key>`` (budget, location, deadline,
audience, language) and ``fact/<slot>`` for any other slot (:mod:`hermes_learner.slots` reads answers into them); the
value of a constraint or fact is the normalised form of the user's words (:mod:`hermes_learner.normalize`), which
the preference keeps too (``wordings``) because that is what a prompt shows.

Belief: each piece of evidence adds its weight to the votes of one value; the value held is the best-supported
one, and ``confidence = votes[value] / (Σ votes + doubt + PRIOR_MASS)``: the posterior mean of that value under a
Dirichlet prior with :data:`PRIOR_MASS` pseudo-observations on "something else" (the Dirichlet-multinomial update,
Gelman et al., *Bayesian Data Analysis*, 3rd ed., §3.4). With the default weights, three consistent answers give
0.75, the default ``confidence_threshold``. The weights are Hermes's own heuristics (no external source).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from hermes_proto import facts
from hermes_proto.events import Assumption, preference_id

PRIOR_MASS = 1.0
"""Pseudo-observations on "some other value": one answer alone gives confidence 0.5."""
WEIGHTS = {"answer": 1.0, "rating": 0.5, "correction": 3.0, "comment": 1.0}
"""Evidence weight by kind: an observed answer (or question left unanswered) 1, a rating of a draft that applied the
preference 0.5 (for it when rated 4-5, as doubt when rated 1-2), an explicit correction 3, a rating's comment that
names a depth or style ("too long", "too formal") 1."""
EDIT_WEIGHT = 9.0
"""Votes of a value the user set by hand (the other votes are dropped): confidence 0.9."""
CORRECTION_KEEP = 0.5
"""A correction to another value halves the votes of the value it contradicts (so it lowers the confidence and,
against a short history, flips the value)."""
SOURCES = {
    "answer": "observed",
    "rating": "inferred",
    "correction": "explicit",
    "edit": "explicit",
    "comment": "observed",
}

# ---- reading answers ---------------------------------------------------------------------------


def _rx(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.IGNORECASE)


DEPTH_RULES = (
    ("comprehensive", _rx(r"\b(comprehensive|exhaustive|everything|complete guide|all the details)\b")),
    ("detailed", _rx(r"\b(detailed|in[- ]depth|step[- ]by[- ]step|thorough|in detail)\b")),
    ("overview", _rx(r"\b(overview|brief|short|high[- ]level|summary|quick|just the gist)\b")),
)
STYLE_RULES = (
    ("formal", _rx(r"\b(formal|professional|businesslike)\b")),
    ("casual", _rx(r"\b(casual|informal|friendly|relaxed|conversational)\b")),
    ("technical", _rx(r"\b(technical|precise|with jargon|expert level)\b")),
)
CONSTRAINT_RULES = (
    ("budget", _rx(r"\b(budget|cost|costs|cheap|afford\w*|spend|euros?|dollars?|pounds?)\b|[$€£]\s*\d")),
    (
        "deadline",
        _rx(
            r"\b(deadline|by (the end of |next )?(monday|tuesday|wednesday|thursday|friday|saturday|"
            r"sunday|january|february|march|april|may|june|july|august|september|october|november|"
            r"december|tomorrow|tonight|week|month|year|\d)|within \d+|before|until|due)\b"
        ),
    ),
    # Before location: "written in German" is a language, not a place.
    (
        "language",
        _rx(
            r"\b(?:written|spoken|translated|write it|answer) in\s+(?:plain\s+)?[a-z]+|\bin (?:plain )?"
            r"(?:english|portuguese|german|french|spanish|italian|dutch|polish|japanese|chinese)\b|"
            r"\blanguage\b"
        ),
    ),
    # Case-sensitive only for the place name after the preposition ("in Lisbon", not "in time").
    (
        "location",
        re.compile(
            r"\b(?i:in|near|around|based in|live in|living in|located in)\s+[A-Z][\w-]+|"
            r"\b(?i:location|city|country|neighbou?rhood)\b"
        ),
    ),
    (
        "audience",
        _rx(
            r"\bfor (my|our|the|a)?\s*(team|kids|children|students|beginners|clients|customers|family|"
            r"boss|manager|colleagues|readers|audience|parents|friends)\b|\baudience\b"
        ),
    ),
)
_CLAUSES = re.compile(r"[;\n]+|,\s*|\.\s+|\s+and\s+(?=[a-z]+ )", re.IGNORECASE)
MAX_VALUE_CHARS = 120


@dataclass(frozen=True)
class Observation:
    """One preference an answer shows: ``category``/``key``/``value``."""

    category: str
    key: str
    value: str
    wording: str = ""
    """The user's words for ``value`` (empty: ``value`` itself)."""


def _value(clause: str) -> str:
    """A constraint's value as stored: the clause's words, lowercase, at most :data:`MAX_VALUE_CHARS`."""
    return " ".join(clause.split()).strip(" .!?").lower()[:MAX_VALUE_CHARS]


def observe(answer: str) -> list[Observation]:
    """The preferences one answer shows, at most one per (category, key): the first matching depth and style word
    in the text, and each clause (split at ``;``, ``,``, sentence ends and "and") naming a constraint key
    (:data:`CONSTRAINT_RULES`; the first key that matches a clause owns it), its value the clause itself. Case
    matters only for a location's place name (``in Lisbon``)."""
    found: dict[tuple[str, str], Observation] = {}
    for category, rules in (("depth", DEPTH_RULES), ("style", STYLE_RULES)):
        hits = [(m.start(), value) for value, rx in rules if (m := rx.search(answer))]
        if hits:
            found[(category, category)] = Observation(category, category, min(hits)[1])
    for clause in _CLAUSES.split(answer):
        if not clause or not clause.strip():
            continue
        for key, rx in CONSTRAINT_RULES:
            if rx.search(clause):
                found.setdefault(("constraint", key), Observation("constraint", key, _value(clause)))
                break
    return list(found.values())


# ---- belief ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Preference:
    """One user's belief about ``category``/``key`` (what :class:`~hermes_proto.events.PreferenceLearned` carries).
    ``votes``: evidence weight per value; ``doubt``: weight against any value."""

    user_id: str
    category: str
    key: str
    value: str = ""
    votes: Mapping[str, float] = field(default_factory=dict)
    doubt: float = 0.0
    observations: int = 0
    corrections: int = 0
    expires_at: datetime | None = None
    scope: str = facts.EVERYWHERE
    wordings: Mapping[str, str] = field(default_factory=dict)
    """Value → the user's latest words for it (a value missing here is its own wording)."""
    question: str = ""
    """The question it was first learned from, if any."""

    @property
    def preference_id(self) -> str:
        return preference_id(self.user_id, self.category, self.key, self.scope)

    @property
    def slot(self) -> str:
        return facts.slot_of(self.category, self.key)

    def wording(self) -> str:
        """What a prompt shows for the value held: the user's words for it."""
        return self.wordings.get(self.value, self.value)

    def confidence(self) -> float:
        """``votes[value] / (Σ votes + doubt + PRIOR_MASS)`` in [0, 1), 4 decimals (0 with no votes)."""
        total = sum(self.votes.values())
        if not self.value or total <= 0:
            return 0.0
        return round(self.votes.get(self.value, 0.0) / (total + self.doubt + PRIOR_MASS), 4)

    def stability(self) -> float:
        """The share of the votes that agree with the value held, in [0, 1], 4 decimals: 1 when all evidence
        agreed, lower when the user's answers varied."""
        total = sum(self.votes.values())
        return round(self.votes.get(self.value, 0.0) / total, 4) if total > 0 else 0.0

    def usable(self, threshold: float, now: datetime) -> bool:
        """Confident enough (``confidence() >= threshold``) and not expired at ``now``."""
        return self.confidence() >= threshold and (self.expires_at is None or now < self.expires_at)


def _leader(votes: Mapping[str, float], current: str) -> str:
    """The best-supported value; the current one keeps a tie, other ties go to the smaller value."""
    best = max(votes.values())
    if votes.get(current) == best:
        return current
    return min(v for v, w in votes.items() if w == best)


def learn(
    pref: Preference,
    evidence: str,
    value: str | None,
    now: datetime,
    ttl: timedelta,
    rating: int | None = None,
    *,
    wording: str | None = None,
    question: str = "",
) -> Preference:
    """``pref`` after one piece of ``evidence`` (``answer``, ``comment``, ``rating``, ``correction`` or ``edit``),
    valid until ``now + ttl``; ``wording``: the user's words for ``value`` (default: ``value``), ``question``: the
    question it answers (kept from the first evidence that names one).

    - ``answer`` / ``comment``: ``value`` gets :data:`WEIGHTS` ``[evidence]``;
    - ``correction``: ``value`` gets ``WEIGHTS["correction"]``, a contradicted value keeps :data:`CORRECTION_KEEP`
      of its votes, ``corrections`` + 1;
    - ``edit``: the votes become ``{value: EDIT_WEIGHT}`` and the doubt is cleared;
    - ``rating`` (1-5) of a thread that applied ``pref.value``: 4-5 add ``WEIGHTS["rating"]`` to it, 1-2 add
      that much doubt, 3 changes nothing but the expiry.

    Raises ValueError for an unknown ``evidence`` or a missing ``value``/``rating``."""
    votes = dict(pref.votes)
    doubt, corrections = pref.doubt, pref.corrections
    if evidence in ("answer", "comment", "correction", "edit") and not value:
        raise ValueError(f"{evidence} evidence needs a value")
    wordings = dict(pref.wordings)
    if value and wording and wording != value:
        wordings[value] = wording
    if evidence in ("answer", "comment"):
        votes[value] = votes.get(value, 0.0) + WEIGHTS[evidence]
    elif evidence == "correction":
        votes = {v: (w * CORRECTION_KEEP if v != value else w) for v, w in votes.items()}
        votes[value] = votes.get(value, 0.0) + WEIGHTS["correction"]
        corrections += 1
    elif evidence == "edit":
        votes, doubt = {value: EDIT_WEIGHT}, 0.0
        wordings = {value: wording} if wording and wording != value else {}
    elif evidence == "rating":
        if rating is None or not 1 <= rating <= 5 or not pref.value:
            raise ValueError("rating evidence needs a 1-5 rating of a held value")
        if rating >= 4:
            votes[pref.value] = votes.get(pref.value, 0.0) + WEIGHTS["rating"]
        elif rating <= 2:
            doubt += WEIGHTS["rating"]
    else:
        raise ValueError(f"unknown evidence {evidence!r}")
    return replace(
        pref,
        value=_leader(votes, pref.value),
        votes=votes,
        doubt=round(doubt, 4),
        observations=pref.observations + 1,
        corrections=corrections,
        expires_at=now + ttl,
        wordings={v: w for v, w in wordings.items() if v in votes},
        question=pref.question or question,
    )


# ---- using them --------------------------------------------------------------------------------


def known_slots(
    prefs: Iterable[Preference], within: Sequence[str], threshold: float, now: datetime
) -> dict[str, Preference]:
    """Slot → the user's preference a thread in the scopes ``within`` (most specific first,
    :func:`hermes_proto.facts.scopes`) applies: the most specific usable one (:meth:`Preference.usable`) that no more
    specific belief contradicts (:func:`hermes_proto.facts.resolve`). A slot known as
    :data:`~hermes_proto.facts.UNANSWERED` is in it too: its question is not asked, and nothing is assumed."""
    found = facts.resolve(
        (p for p in prefs if p.votes and (p.expires_at is None or now < p.expires_at)),
        within,
        slot=lambda p: p.slot,
        scope=lambda p: p.scope,
        value=lambda p: p.value,
        usable=lambda p: p.usable(threshold, now),
    )
    return {str(slot): p for slot, p in found.items()}


def assumptions(prefs: Iterable[Preference]) -> list[Assumption]:
    """``prefs`` as :class:`~hermes_proto.events.Assumption` s (in the order given; value: the user's words, scope
    kept), leaving out the slots known as unanswered (nothing to assume there)."""
    return [
        Assumption(
            preference_id=p.preference_id,
            category=p.category,
            key=p.key,
            value=p.wording(),
            confidence=p.confidence(),
            scope=p.scope,
        )
        for p in prefs
        if facts.applies(p.value)
    ]


def usable_style(prefs: Iterable[Preference], threshold: float, now: datetime) -> str | None:
    """The value of the user's ``style`` preference when it is usable at ``now`` (:meth:`Preference.usable`), else
    None: the register the questions are worded in (``hermes_learner.domain.choose``); the most specific one
    :func:`known_slots` would apply everywhere."""
    held = known_slots(prefs, (facts.EVERYWHERE,), threshold, now).get("style")
    return held.value if held is not None else None
