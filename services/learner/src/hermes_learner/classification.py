"""LLM classification of an idea after draft 1: the prompt the learner asks a model, and the parsing of its answer.

Pure, no I/O. The learner owns the idea types (:data:`hermes_learner.ideas.IDEA_TYPES`) and the issue categories
(:data:`hermes_proto.events.QUESTION_CATEGORIES`), so it writes the prompt; the orchestrator queues it as a
``classify`` job and a backend runs it like any other. An answer that does not parse (:func:`parse_classification`
returns None) makes the learner fall back to its pattern rules.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass

from hermes_proto.base import ChatMessage
from hermes_proto.events import QUESTION_CATEGORIES

from hermes_learner.ideas import IDEA_TYPES

MAX_TOKENS = 200
"""Output budget of a classification (tokens): the JSON answer is about 40."""
DRAFT_CHARS = 4000
"""Draft 1 is cut to this many characters in the prompt: the opening shows how the model read the idea."""

_ISSUES = {
    "intent": "it is unclear what the user actually wants",
    "constraint": "limits (budget, time, size, tools) are missing",
    "success": "it is unclear what a good result looks like",
    "context": "who it is for or the user's situation is missing",
    "scope": "the size or depth wanted is unclear",
}

SYSTEM = (
    "You classify a user's idea for an assistant that may ask clarifying questions. Reply with ONE JSON object "
    "and nothing else, exactly of this shape:\n"
    '{"idea_type": "<type>", "issues": ["<issue>", ...], "clarity": <number from 0 to 1>}\n'
    f"idea_type is one of: {', '.join(IDEA_TYPES)} (general when none fits).\n"
    "issues lists what the idea leaves open, any of:\n"
    + "".join(f"- {c}: {_ISSUES[c]}\n" for c in QUESTION_CATEGORIES)
    + "clarity is how clear the idea is as stated: 0 = hopelessly vague, 1 = nothing left to ask."
)


@dataclass(frozen=True)
class Classification:
    """A model's reading of an idea: ``idea_type`` one of ``IDEA_TYPES``; ``issues`` a subset of
    ``QUESTION_CATEGORIES`` in that order; ``clarity`` in [0, 1] (4 decimals)."""

    idea_type: str
    issues: tuple[str, ...]
    clarity: float


def classification_messages(idea: str, draft1: str) -> list[ChatMessage]:
    """The classify prompt: :data:`SYSTEM` (types, issue categories, the JSON shape), then the idea and the opening
    :data:`DRAFT_CHARS` characters of draft 1."""
    user = f"Idea:\n{idea.strip()}\n\nFirst draft written for it:\n{draft1.strip()[:DRAFT_CHARS]}"
    return [ChatMessage(role="system", content=SYSTEM), ChatMessage(role="user", content=user)]


_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.IGNORECASE | re.DOTALL)


def json_object(text: str) -> dict | None:
    """The JSON object in a model's answer (None: none): tolerates a code fence and prose around it (the first
    ``{`` to the last ``}`` is tried)."""
    fenced = _FENCE.search(text)
    body = fenced.group(1) if fenced else text
    start, end = body.find("{"), body.rfind("}")
    if start < 0 or end <= start:
        return None
    try:
        data = json.loads(body[start : end + 1])
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def parse_classification(text: str) -> Classification | None:
    """The :class:`Classification` in a model's answer, or None when there is none: no JSON object
    (:func:`json_object`), an unknown idea type or issue, a clarity that is not a number in [0, 1]. Tolerates case
    and spacing of the names, repeated issues."""
    data = json_object(text)
    if data is None:
        return None
    idea_type, issues, clarity = data.get("idea_type"), data.get("issues"), data.get("clarity")
    if not isinstance(idea_type, str) or idea_type.strip().lower() not in IDEA_TYPES:
        return None
    if not isinstance(issues, list) or not all(isinstance(i, str) for i in issues):
        return None
    named = {i.strip().lower() for i in issues}
    if not named <= set(QUESTION_CATEGORIES):
        return None
    if (
        isinstance(clarity, bool)
        or not isinstance(clarity, int | float)
        or not math.isfinite(clarity)
        or not 0.0 <= clarity <= 1.0
    ):
        return None
    return Classification(
        idea_type.strip().lower(), tuple(c for c in QUESTION_CATEGORIES if c in named), round(float(clarity), 4)
    )
