"""An idea's type by keyword rules: the one classification both the orchestrator (which learned facts a draft-1
prompt applies, :mod:`hermes_proto.facts`) and the learner (which questions to ask) read.

Pure, deterministic, no I/O. The keyword rules and weights are heuristics of Hermes's own (no external source).
"""

from __future__ import annotations

import re

# ---- classification ----------------------------------------------------------------------------

#: Idea types; on equal scores the earlier one wins. ``general`` is the fallback.
IDEA_TYPES = ("planning", "coding", "creative", "writing", "learning", "research", "decision", "general")


def _rx(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.IGNORECASE)


# (pattern, weight): a matching pattern adds its weight once, however often it matches.
_TYPE_RULES: dict[str, tuple[tuple[re.Pattern[str], float], ...]] = {
    "planning": (
        (_rx(r"\bplan(s|ning)?\b"), 1.0),
        (_rx(r"\b(schedule|itinerary|organi[sz]e|prepare|roadmap|routine|timeline)\b"), 1.0),
        (_rx(r"\b(trip|travel|vacation|holiday|garden|wedding|party|event|moving|renovat\w*)\b"), 0.5),
    ),
    "coding": (
        (
            _rx(
                r"\b(code|coding|program\w*|script|debug|refactor|implement|function|api|python|"
                r"javascript|typescript|rust|sql)\b"
            ),
            1.0,
        ),
        (_rx(r"\b(app|website|bot|bug|deploy|database|backend|frontend)\b"), 0.75),
    ),
    "creative": (
        (_rx(r"\b(story|poem|song|lyrics|novel|logo|artwork|paint\w*|draw\w*|haiku|brainstorm)\b"), 1.0),
        (_rx(r"\b(creative|imagin\w*|invent\w*|design)\b"), 0.5),
    ),
    "writing": (
        (_rx(r"\b(write|writing|rewrite|edit|proofread)\b"), 1.0),
        (_rx(r"\b(essay|article|blog|post|email|letter|newsletter|speech|report)\b"), 0.75),
    ),
    "learning": (
        (_rx(r"\b(learn\w*|study|teach me|course|practi[cs]e|master)\b"), 1.0),
        (_rx(r"\b(beginner|tutorial|lesson|exam|language|skill)\b"), 0.5),
    ),
    "research": (
        (_rx(r"\b(research|investigate|find out|sources?|literature|evidence|analy[sz]e|survey)\b"), 1.0),
        (_rx(r"\b(compare|comparison|data|statistics|trends?|market)\b"), 0.5),
    ),
    "decision": (
        (_rx(r"\b(decide|decision|choose|should i|which one|pros and cons|vs\.?|versus)\b"), 1.0),
        (_rx(r"\b(options?|alternatives?|better|worth)\b"), 0.5),
    ),
}


def type_scores(idea: str) -> dict[str, float]:
    """The keyword score of every idea type except ``general`` (sum of matching rule weights)."""
    return {t: sum(w for rx, w in rules if rx.search(idea)) for t, rules in _TYPE_RULES.items()}


def classify(idea: str, threshold: float = 1.0) -> str:
    """The idea's type among :data:`IDEA_TYPES`: the best keyword score if it reaches ``threshold``
    (ties go to the earlier type), else ``general``."""
    scores = type_scores(idea)
    best = max(_TYPE_RULES, key=lambda t: (scores[t], -IDEA_TYPES.index(t)))
    return best if scores[best] >= threshold else "general"
