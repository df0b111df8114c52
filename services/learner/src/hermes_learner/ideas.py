"""What an idea says about itself: its type, its clarity, and the question categories it leaves open.

The idea types and their keyword classification live in :mod:`hermes_proto.ideas` (the orchestrator reads them
too). Pure, deterministic, no I/O. The keyword rules, feature weights and saturation points are heuristics
of Hermes's own (no external source), meant to be tuned against measured answer rates.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from hermes_proto.events import QUESTION_CATEGORIES
from hermes_proto.ideas import IDEA_TYPES, classify, type_scores  # noqa: F401  (re-exported: the learner's names)


def _rx(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.IGNORECASE)


# ---- clarity -----------------------------------------------------------------------------------

_SPECIFICS = _rx(
    r"\d+(?:[.,]\d+)?|[$€£]|\b(jan(uary)?|feb(ruary)?|mar(ch)?|apr(il)?|may|june?|july?|aug(ust)?|sep(tember)?|"
    r"oct(ober)?|nov(ember)?|dec(ember)?|monday|tuesday|wednesday|thursday|friday|saturday|sunday|tomorrow|"
    r"tonight|weekend|minutes?|hours?|days?|weeks?|months?|years?|km|kg|metres?|meters?|m²|words?|pages?)\b"
)
_CONSTRAINTS = _rx(
    r"\b(budget|within|under|at most|at least|no more than|maximum|minimum|deadline|must|only|without|"
    r"limit\w*|cannot|can't|avoid|requires?|by (the end|next|tomorrow))\b"
)
_GOALS = _rx(
    r"\b(so that|in order to|goal|aim|success\w*|achieve|result in|outcome|measur\w*|target|"
    r"want to (be able|have|get|reach))\b"
)
_AUDIENCE = _rx(
    r"\b(for (my|our|the|a) \w+|for (beginners|kids|children|clients|customers|students)|audience|readers?|"
    r"users?|customers?|clients?|beginners?|team|family|kids|children|i am|i'm|i have|we have)\b"
)
_SCOPE = _rx(
    r"\b(first version|mvp|prototype|overview|in depth|in-depth|detailed|brief|short|one page|"
    r"\d+ (words|pages|steps|minutes)|step[- ]by[- ]step|just|phase|scope)\b"
)
_VAGUE = _rx(r"\b(something|stuff|things?|somehow|maybe|kind of|sort of|anything|whatever|etc)\b")
_HEDGES = _rx(r"\?|\b(it depends|depending on|could you (clarify|tell)|please (specify|clarify)|more details)\b")


@dataclass(frozen=True)
class Features:
    """Counts of what an idea states (regex matches): ``words``; ``specifics`` (numbers, units, dates,
    money); ``constraints``; ``goals`` (stated purpose or success); ``audience`` (who it is for, the
    user's situation); ``scope`` (size or depth markers); ``vague`` (filler words); and ``hedges`` in the
    draft (questions back to the user, "it depends")."""

    words: int
    specifics: int
    constraints: int
    goals: int
    audience: int
    scope: int
    vague: int
    hedges: int


def features(idea: str, draft1: str = "") -> Features:
    """Count the clarity features of ``idea`` (and the hedges of ``draft1``)."""

    def n(rx: re.Pattern[str], text: str) -> int:
        return sum(1 for _ in rx.finditer(text))

    return Features(
        words=len(idea.split()),
        specifics=n(_SPECIFICS, idea),
        constraints=n(_CONSTRAINTS, idea),
        goals=n(_GOALS, idea),
        audience=n(_AUDIENCE, idea),
        scope=n(_SCOPE, idea),
        vague=n(_VAGUE, idea),
        hedges=n(_HEDGES, draft1),
    )


def _sat(count: float, full: float) -> float:
    """``count`` saturating at ``full``: 0..1."""
    return min(1.0, count / full)


def clarity(idea: str, draft1: str = "") -> float:
    """How clear the idea is, in [0, 1] (a heuristic of Hermes's own, no external source).

    A weighted sum of saturating features: 0.15·length (30 words = full) + 0.20·specifics (3 = full)
    + 0.20·constraints (2) + 0.20·goals (2) + 0.15·audience (2) + 0.10·scope (1), minus 0.15·vague
    (2 filler words = full) and 0.10·hedging in draft 1 (3 question marks or "it depends" = full),
    clipped to [0, 1]. Rounded to 4 decimals so the value is stable across platforms."""
    f = features(idea, draft1)
    score = (
        0.15 * _sat(f.words, 30)
        + 0.20 * _sat(f.specifics, 3)
        + 0.20 * _sat(f.constraints, 2)
        + 0.20 * _sat(f.goals, 2)
        + 0.15 * _sat(f.audience, 2)
        + 0.10 * _sat(f.scope, 1)
        - 0.15 * _sat(f.vague, 2)
        - 0.10 * _sat(f.hedges, 3)
    )
    return round(min(1.0, max(0.0, score)), 4)


def quality_issues(idea: str) -> tuple[str, ...]:
    """The question categories the idea leaves open, in ``QUESTION_CATEGORIES`` order: ``intent``
    (filler words, or under 6 words with no stated goal), ``constraint`` (no limits and no specifics),
    ``success`` (no stated goal or success measure), ``context`` (no audience or situation),
    ``scope`` (no size or depth marker)."""
    f = features(idea)
    open_ = {
        "intent": f.vague > 0 or (f.words < 6 and f.goals == 0),
        "constraint": f.constraints == 0 and f.specifics == 0,
        "success": f.goals == 0,
        "context": f.audience == 0,
        "scope": f.scope == 0,
    }
    return tuple(c for c in QUESTION_CATEGORIES if open_[c])
