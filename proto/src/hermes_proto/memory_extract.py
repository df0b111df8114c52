"""Project memory, the extraction half: the :class:`Candidate` entries a historian finds in the turns of ended
sessions (:func:`candidates`), and the word rules they share with the consolidation (:mod:`hermes_proto.project_memory`).

Deterministic heuristics, no model and no I/O: the same turns always give the same candidates. Only user turns are
read (the assistant's words say nothing of what the user decided or prefers), without the ``<untrusted-data>`` they
quote (a trigger's payload, a tool's output: :func:`hermes_proto.tools.without_untrusted`); an assistant turn only marks where a
correction can begin. Not :mod:`hermes_proto.facts`: a fact fills a question's slot, a candidate is a sentence the
user said, with the subject key that finds its contradictions.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from typing import Literal

import msgspec

from hermes_proto.text import normalize_text
from hermes_proto.tools import without_untrusted

MemoryKind = Literal["decision", "pattern", "correction", "preference"]
KINDS: tuple[str, ...] = ("decision", "pattern", "correction", "preference")
KEY_PREFIX = {"decision": "decision", "pattern": "pattern", "correction": "correction", "preference": "prefer"}
"""The first part of a subject key per kind (``prefer:tabs``)."""
BASE_RELEVANCE = {"correction": 0.9, "decision": 0.8, "preference": 0.7, "pattern": 0.5}
HALF_LIFE_DAYS = 30.0
REPEAT_BOOST = 0.25
PATTERN_SIMILARITY = 0.6
"""Token Jaccard at or above which two user requests are the same request."""
PATTERN_SESSIONS = 3
"""Distinct sessions the same request must appear in to be a pattern."""
DUPLICATE_SIMILARITY = 0.8
"""Token Jaccard (:func:`similarity`) at or above which two statements are the same statement."""
MIN_REQUEST_WORDS = 2
"""Content words a user turn needs to count as a request for patterns ("thanks", "hello" do not)."""
KEY_WORDS = 3
MAX_TEXT = 2000
MAX_KEY = 200

STOPWORDS = frozenset(
    "a about actually after all also always am an and any are as at be been before but by can can't could decided decide "
    "decision did do does don't dont fine for from get go going good got had has have he her here his how i i'd "
    "i'll i'm i've if in into is it it's its just let let's lets like make me mean meant my never no nope not now "
    "of ok okay on one or our please prefer really right she should so some sure than thank thanks that that's the "
    "their them then there these they this those to too us use used using very want was we we'd we'll we're we've "
    "were what when where which who why will with won't would wrong yeah yes you you'd you'll you're your".split()
)
"""Words that say nothing of a statement's subject: articles, pronouns, auxiliaries, the trigger words themselves
and polarity (``always``/``never``, so "always use tabs" and "never use tabs" share the key ``prefer:tabs``)."""

_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)*")
_SENTENCE_BREAK = re.compile(r"(?<=[.!?])\s+|\n+")
_CUT = re.compile(r"[,;:()]|\b(?:over|than|instead|rather|versus|vs|but|because|since|whereas)\b", re.IGNORECASE)
_DECISION = re.compile(
    r"\b(?:we(?:'ve| have)? decided(?: on)?|let'?s go with|we'?ll use|we will use|decision\s*:)", re.IGNORECASE
)
_PREFERENCES = (
    re.compile(r"\bI(?:'d| would| really| much)? prefer\b", re.IGNORECASE),
    re.compile(r"\bI (?:really )?like\b", re.IGNORECASE),
    re.compile(r"^(?:please\s+|you should\s+|you must\s+|make sure (?:to|you)\s+)?(?:always|never)\b", re.IGNORECASE),
    re.compile(r"\bplease (?:don'?t|do not)\b", re.IGNORECASE),
    re.compile(r"\bI want (?P<rest>.+?) to be\b", re.IGNORECASE),
)
_CORRECTION = re.compile(
    r"^(?:no\s*[,.!:;-]|nope\b[,.!]?|actually\b[,.]?|that(?:'s| is) wrong\b[,.!:]?"
    r"|that(?:'s| is) not (?:right|correct|what i (?:meant|asked for))\b[,.!:]?|i meant\b)",
    re.IGNORECASE,
)
_NOT_BUT = re.compile(r"^not\s+[^,.;]+?,?\s+but\s+(?P<rest>.+)$", re.IGNORECASE)


class Turn(msgspec.Struct, frozen=True):
    """One message of a session: ``role`` ``user`` or ``assistant``, ``at`` when it was said (aware UTC)."""

    session_id: str
    role: Literal["user", "assistant"]
    text: str
    at: datetime
    project: str = "default"
    user_id: str = "local"


class Candidate(msgspec.Struct, frozen=True, kw_only=True):
    """A memory entry a session suggests: ``text`` the sentence (at most :data:`MAX_TEXT` characters), ``key`` its
    subject (:func:`subject_key`), ``relevance`` in [0, 1] (:func:`relevance`), ``at`` when it was said,
    ``repetitions`` how many statements (or, for a pattern, sessions) in the input said it; ``expires_at`` is never
    set by the heuristics (a caller may)."""

    kind: MemoryKind
    text: str
    key: str
    relevance: float
    source_session: str
    user_id: str
    project: str
    at: datetime
    repetitions: int = 1
    expires_at: datetime | None = None


def words(text: str) -> list[str]:
    """Lower-case words of ``text`` (letters and digits, inner apostrophes kept: ``don't``; ’ counts as ')."""
    return _WORD.findall(text.replace("\u2019", "'").casefold())


def content_words(text: str) -> list[str]:
    """:func:`words` of ``text`` without :data:`STOPWORDS`, in order."""
    return [w for w in words(text) if w not in STOPWORDS]


def jaccard(a: set[str] | frozenset[str], b: set[str] | frozenset[str]) -> float:
    """``|a ∩ b| / |a ∪ b|`` in [0, 1]; 0.0 when both are empty."""
    union = a | b
    return len(a & b) / len(union) if union else 0.0


def similarity(a: str, b: str) -> float:
    """Token Jaccard of two texts over all their :func:`words` (polarity words count: "always use tabs" and "never
    use tabs" are 0.5 alike, not duplicates)."""
    return jaccard(set(words(a)), set(words(b)))


def subject_key(kind: str, rest: str) -> str | None:
    """The subject key of a statement of ``kind`` whose words after the trigger are ``rest``: the rest is cut at the
    first ``, ; : ( )`` or contrast word (over, than, instead, rather, versus, vs, but, because, since, whereas),
    then its first :data:`KEY_WORDS` :func:`content_words` are joined with ``-`` after the kind's
    :data:`KEY_PREFIX`: "I prefer tabs over spaces" → ``prefer:tabs``, "we'll use Postgres for storage" →
    ``decision:postgres-storage``. None when no content word is left (nothing to remember)."""
    rest = rest.lstrip(" \t,;:.!-\u2014")
    cut = _CUT.search(rest)
    subject = content_words(rest[: cut.start()] if cut else rest)[:KEY_WORDS]
    return f"{KEY_PREFIX[kind]}:{'-'.join(subject)}"[:MAX_KEY] if subject else None


def relevance(kind: str, at: datetime, now: datetime, repetitions: int = 1) -> float:
    """``min(1, BASE_RELEVANCE[kind] × 0.5 ** (age_days / 30) × (1 + 0.25 × (repetitions − 1)))`` rounded to 4
    places: a correction counts most (0.9), then a decision (0.8), a preference (0.7), a pattern (0.5); its weight
    halves every :data:`HALF_LIFE_DAYS` of age (``now − at``, never negative)."""
    age_days = max(0.0, (now - at).total_seconds() / 86400)
    decay = 0.5 ** (age_days / HALF_LIFE_DAYS)
    return round(min(1.0, BASE_RELEVANCE[kind] * decay * (1 + REPEAT_BOOST * (max(1, repetitions) - 1))), 4)


def sentences(text: str) -> list[str]:
    """The sentences of ``text`` (normalised, :func:`hermes_proto.text.normalize_text`), split after ``.!?`` and at
    line breaks, trimmed, empty ones dropped."""
    return [s.strip() for s in _SENTENCE_BREAK.split(normalize_text(text)) if s.strip()]


def _statement(sentence: str) -> tuple[str, str] | None:
    """(kind, key) of a decision or preference sentence (a decision first), or None (a question never is one)."""
    if sentence.endswith("?"):
        return None
    if m := _DECISION.search(sentence):
        key = subject_key("decision", sentence[m.end() :])
        return ("decision", key) if key else None
    for trigger in _PREFERENCES:
        if m := trigger.search(sentence):
            key = subject_key("preference", m.group("rest") if "rest" in trigger.groupindex else sentence[m.end() :])
            return ("preference", key) if key else None
    return None


def _correction(said: list[str]) -> tuple[int, str, str] | None:
    """(sentences used, text, key) when the turn's first sentences ``said`` correct the assistant: it begins "no,",
    "nope", "actually", "that's wrong", "that's not right", "I meant" or "not X but Y"; the key is from what follows
    the trigger (Y for "not X but Y"), taken from the next sentence when the first holds nothing else ("No. Use
    tabs."). None when nothing follows ("No, thanks.") or it is a question."""
    if not said:
        return None
    m = _CORRECTION.match(said[0])
    if m is None and (m := _NOT_BUT.match(said[0])) is None:
        return None
    rest = m.group("rest") if "rest" in m.re.groupindex else said[0][m.end() :]
    used, key = 1, subject_key("correction", rest)
    if key is None and len(said) > 1:
        used, key = 2, subject_key("correction", said[1])
    text = " ".join(said[:used])
    return (used, text[:MAX_TEXT], key) if key and not text.endswith("?") else None


def _patterns(user_turns: list[Turn], now: datetime) -> list[Candidate]:
    """One candidate per request repeated in :data:`PATTERN_SESSIONS` distinct sessions (see :func:`candidates`)."""
    clusters: list[tuple[set[str], list[Turn]]] = []
    for turn in user_turns:
        tokens = set(content_words(turn.text))
        if len(tokens) < MIN_REQUEST_WORDS:
            continue
        cluster = next((c for c in clusters if jaccard(c[0], tokens) >= PATTERN_SIMILARITY), None)
        if cluster is None:
            clusters.append((tokens, [turn]))
        else:
            cluster[1].append(turn)
    found = []
    for _, members in clusters:
        sessions = {t.session_id for t in members}
        seed, latest = members[0], members[-1]
        said = sentences(seed.text)
        key = subject_key("pattern", said[0]) if said else None
        if len(sessions) >= PATTERN_SESSIONS and key:
            found.append(
                Candidate(
                    kind="pattern",
                    text=said[0][:MAX_TEXT],
                    key=key,
                    relevance=relevance("pattern", latest.at, now, len(sessions)),
                    source_session=latest.session_id,
                    user_id=seed.user_id,
                    project=seed.project,
                    at=latest.at,
                    repetitions=len(sessions),
                )
            )
    return found


def candidates(turns: Sequence[Turn], now: datetime | None = None) -> list[Candidate]:
    """The memory candidates in ``turns`` (any order, any sessions; ordered by ``at``, ties in input order), ordered
    by (at, session, kind, key). ``now`` (default: the newest turn's ``at``) is what ages are measured from.

    Per user turn, split into :func:`sentences`; questions (ending ``?``) are never statements:

    * **correction**: the turn follows an assistant turn of its session and begins "no,", "nope", "actually",
      "that's wrong", "that's not right", "I meant" or "not X but Y" (first one or two sentences, :func:`_correction`).
    * **decision**: a sentence with "we decided", "let's go with", "we'll use", "we will use" or "decision:".
    * **preference**: a sentence with "I prefer", "I like" (not "I'd like"), "please don't", "I want X to be", or
      beginning "always"/"never" (optionally after "please", "you should", "make sure to"; "I never got it" is not
      one). One sentence gives one candidate: correction, else decision, else preference.
    * **pattern**: per user and project, user turns with at least :data:`MIN_REQUEST_WORDS` content words are grouped
      greedily in time order (a turn joins the first group whose first turn's content words have Jaccard ≥ 0.6 with
      its own); a group spanning ≥ 3 distinct sessions is a pattern: the first turn's first sentence, from the
      latest turn's session.

    Keys: :func:`subject_key`; a statement without content words after its trigger is dropped. Per session, kind
    and key the latest statement wins (the user changed their mind within the session). ``repetitions``: statements
    in the input with the same user, project, kind and key and :func:`similarity` ≥ :data:`DUPLICATE_SIMILARITY` (sessions, for a pattern).
    ``relevance``: :func:`relevance`.
    """
    ordered = [t for _, t in sorted(enumerate(turns), key=lambda it: (it[1].at, it[0]))]
    if not ordered:
        return []
    ordered = [msgspec.structs.replace(t, text=without_untrusted(t.text)) if t.role == "user" else t for t in ordered]
    now = now or max(t.at for t in ordered)
    previous: dict[str, Turn] = {}
    said: list[tuple[Turn, str, str, str]] = []  # (turn, kind, text, key)
    for turn in ordered:
        before, previous[turn.session_id] = previous.get(turn.session_id), turn
        if turn.role != "user":
            continue
        parts, start = sentences(turn.text), 0
        if before is not None and before.role == "assistant" and (fix := _correction(parts)):
            start = fix[0]
            said.append((turn, "correction", fix[1], fix[2]))
        for sentence in parts[start:]:
            if found := _statement(sentence):
                said.append((turn, found[0], sentence[:MAX_TEXT], found[1]))
    latest: dict[tuple[str, str, str, str, str], tuple[Turn, str, str, str]] = {}
    for item in said:
        turn, kind, _, key = item
        latest[(turn.user_id, turn.project, turn.session_id, kind, key)] = item
    out = []
    for turn, kind, text, key in latest.values():
        repeats = sum(
            1
            for t, k, x, y in said
            if (t.user_id, t.project, k, y) == (turn.user_id, turn.project, kind, key)
            and similarity(x, text) >= DUPLICATE_SIMILARITY
        )
        out.append(
            Candidate(
                kind=kind,  # type: ignore[arg-type]
                text=text,
                key=key,
                relevance=relevance(kind, turn.at, now, repeats),
                source_session=turn.session_id,
                user_id=turn.user_id,
                project=turn.project,
                at=turn.at,
                repetitions=repeats,
            )
        )
    groups: dict[tuple[str, str], list[Turn]] = {}
    for turn in ordered:
        if turn.role == "user":
            groups.setdefault((turn.user_id, turn.project), []).append(turn)
    for user_turns in groups.values():
        out += _patterns(user_turns, now)
    return sorted(out, key=lambda c: (c.at, c.source_session, c.kind, c.key))
