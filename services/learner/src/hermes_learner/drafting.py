"""Template drafts from recurring free-text answers: when users keep typing the same idea instead of picking a
suggestion, Hermes proposes a question that asks about it directly (a ``draft`` until a person activates it).

The rule (pure, deterministic; the constants are Hermes's own heuristics, no external source):

1. A **free-text answer** is a user's answer (not one Hermes assumed) to a question whose template offers no
   suggestions, or one that matches none of them (:func:`normalize` equality).
2. Its **phrases** are the runs of 2-3 consecutive words (lower case, letters and digits only) that neither start
   nor end with a :data:`STOPWORDS` word (:func:`phrases`).
3. A phrase **recurs** when the free-text answers of at least :data:`MIN_THREADS` different threads to questions of
   one category contain it; a recurring phrase inside a longer recurring phrase of that category is left out
   (``paid tools`` gives way to ``no paid tools``).
4. Each recurring phrase gives one :class:`Draft` with the stable id :func:`draft_id` (category and phrase), unless a
   template of that id exists already: the decision is idempotent and a replay drafts nothing twice.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from hermes_proto.ids import derived_id
from hermes_proto.queries import TEMPLATE_ID_PATTERN

MIN_THREADS = 3
"""Different threads whose free-text answers must share a phrase before it is drafted."""
PHRASE_WORDS = (2, 3)
"""Phrase lengths in words: one word is too vague to ask about, four rarely recur verbatim."""
MAX_SUGGESTIONS = 4
"""Suggestions of a draft (the UI shows 0-4)."""
SUGGESTION_CHARS = 60
"""Longest suggestion ``SaveTemplate`` accepts, so activating a draft through ``PATCH`` never fails on it."""
DRAFT_PRIOR_IMPROVEMENT = 0.5
"""A draft's ``prior_improvement``: the neutral middle of [0, 1] until it is measured."""
DRAFT_TIME_COST_S = 10.0
"""A draft's ``time_cost_s``: a question with ready answers, like the seeded multiple-choice ones (~10 s)."""
STOPWORDS = frozenset(
    "a an the and or but of to in on at by for from with as is are be it its this that these those i me my we our "
    "you your he she they them their so just very really some any also too please would like want".split()
)
"""Words a phrase may not start or end with: alone they carry no idea (``no``/``not`` are kept: they do)."""

_WORD = re.compile(r"[a-z0-9]+")
_TEMPLATE_ID = re.compile(TEMPLATE_ID_PATTERN)


@dataclass(frozen=True)
class FreeAnswer:
    """One user's answer to a question of ``category`` in thread ``thread_id`` (an idea of ``idea_type``)."""

    thread_id: str
    category: str
    idea_type: str
    text: str


@dataclass(frozen=True)
class Draft:
    """A template to propose: ``text`` asks about ``phrase`` (with the ``{topic}`` slot), ``suggestions`` are the
    recurring answers (most frequent first), ``idea_types`` those of the threads it came from (``thread_ids``)."""

    template_id: str
    category: str
    phrase: str
    text: str
    suggestions: tuple[str, ...]
    idea_types: tuple[str, ...]
    thread_ids: tuple[str, ...]


def normalize(text: str) -> str:
    """``text`` for comparison: lower case, whitespace collapsed, surrounding punctuation dropped."""
    return " ".join(text.casefold().split()).strip(" .,;:!?\"'")


def is_free_text(answer: str, suggestions: Sequence[str]) -> bool:
    """Whether ``answer`` is typed rather than picked: no suggestion (:func:`normalize`\\ d) equals it."""
    said = normalize(answer)
    return bool(said) and said not in {normalize(s) for s in suggestions}


def phrases(text: str) -> set[str]:
    """The 2-3 word phrases of ``text`` (rule 2), as space-joined lower-case words."""
    words = _WORD.findall(text.casefold())
    found = set()
    for size in PHRASE_WORDS:
        for start in range(len(words) - size + 1):
            run = words[start : start + size]
            if run[0] not in STOPWORDS and run[-1] not in STOPWORDS:
                found.add(" ".join(run))
    return found


def draft_id(category: str, phrase: str) -> str:
    """``learned-<category>-<phrase with dashes>`` (a valid template id; a hash of both past 64 characters)."""
    readable = f"learned-{category}-{phrase.replace(' ', '-')}"
    return readable if _TEMPLATE_ID.match(readable) else f"learned-{category}-{derived_id(category, phrase)[:16]}"


def _inside(short: str, long: str) -> bool:
    return short != long and f" {short} " in f" {long} "


def _suggestion(text: str) -> str:
    text = " ".join(text.split())
    if len(text) <= SUGGESTION_CHARS:
        return text
    return text[: SUGGESTION_CHARS - 1].rsplit(" ", 1)[0].rstrip(" ,;:") + "…"


def _draft(category: str, phrase: str, answers: list[FreeAnswer]) -> Draft:
    holding = [a for a in answers if phrase in phrases(a.text)]
    counts = Counter(normalize(a.text) for a in holding)
    first: dict[str, str] = {}
    for a in holding:
        first.setdefault(normalize(a.text), a.text)
    ranked = sorted(counts, key=lambda n: (-counts[n], n))[:MAX_SUGGESTIONS]
    return Draft(
        template_id=draft_id(category, phrase),
        category=category,
        phrase=phrase,
        text=f"Does “{phrase}” apply to {{topic}}?",
        suggestions=tuple(dict.fromkeys(_suggestion(first[n]) for n in ranked)),
        idea_types=tuple(sorted({a.idea_type for a in holding})),
        thread_ids=tuple(sorted({a.thread_id for a in holding})),
    )


def drafts(
    answers: Sequence[FreeAnswer],
    existing: Collection[str] = (),
    min_threads: int = MIN_THREADS,
    categories: Collection[str] | None = None,
) -> list[Draft]:
    """The drafts ``answers`` (free-text answers, rule 1) call for (rules 3-4), ordered by category, then most
    threads, then phrase; none whose id is in ``existing`` (the template ids the learner has). Only the categories
    in ``categories`` are looked at when given (those a just-closed thread answered)."""
    result: list[Draft] = []
    for category in sorted({a.category for a in answers}):
        if categories is not None and category not in categories:
            continue
        mine = [a for a in answers if a.category == category]
        threads: dict[str, set[str]] = {}
        for a in mine:
            for phrase in phrases(a.text):
                threads.setdefault(phrase, set()).add(a.thread_id)
        recurring = [p for p, ts in threads.items() if len(ts) >= min_threads]
        kept = [p for p in recurring if not any(_inside(p, other) for other in recurring)]
        kept.sort(key=lambda p: (-len(threads[p]), p))
        result += [_draft(category, p, mine) for p in kept if draft_id(category, p) not in existing]
    return result
