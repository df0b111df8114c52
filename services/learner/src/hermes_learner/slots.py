"""Reading what a user said into facts: an answer fills the slot of the question it answers, whatever its wording; a
rating's comment says something about depth or style.

Pure and deterministic, no I/O. An answer to a question of slot ``S`` (:func:`read_answer`) is split into clauses
(``;``, ``,``, sentence ends, "and" before a new phrase):

- a clause that names another constraint slot (:data:`~hermes_learner.preferences.CONSTRAINT_RULES`: "in Lisbon",
  "by Friday") goes to that slot;
- a clause that only states a depth or style ("keep it casual", "detailed": :func:`statement`) is that preference;
  a depth or style word inside a clause about something else ("short sentences") is not;
- every other clause is about ``S``: ``S`` gets them, each normalised on its own (:mod:`hermes_learner.normalize`;
  a restatement of an earlier value, in more words or with other extras, counts for it: :func:`restated`), or,
  when no clause was about it, the value
  :data:`~hermes_proto.facts.UNANSWERED` (the user was asked and said nothing about it). A question that asks the
  depth (or style) takes the first depth word anywhere in its answer, else the answer's own words.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence

from hermes_proto import facts

from hermes_learner import normalize
from hermes_learner.patterns import real_answer
from hermes_learner.preferences import _CLAUSES, CONSTRAINT_RULES, DEPTH_RULES, STYLE_RULES, Observation

Earlier = Callable[[str], Iterable[str]]
"""Slot → the values the user already holds for it (the normalised keys their answers voted for)."""


def _rx(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.IGNORECASE)


def _first(text: str, rules: Iterable[tuple[str, re.Pattern[str]]]) -> str | None:
    hits = [(m.start(), value) for value, rx in rules if (m := rx.search(text))]
    return min(hits)[1] if hits else None


FRAMING = frozenset({"keep", "make", "be", "cover", "very", "rather", "quite", "bit", "little", "more", "less"})
"""Words that may frame a depth or style statement ("keep it casual", "cover everything") without making it about
anything else (Hermes's own list)."""


def statement(clause: str, rules: tuple[tuple[str, re.Pattern[str]], ...]) -> str | None:
    """The depth or style value ``clause`` states, when stating it is all the clause does: a rule matches and, with
    every match removed, only filler (:mod:`hermes_learner.normalize`) and :data:`FRAMING` words remain. "keep it
    casual" states casual; "plain words or short sentences" is about something else."""
    value = _first(clause, rules)
    if value is None:
        return None
    rest = clause
    for _, rx in rules:
        rest = rx.sub(" ", rest)
    left = normalize.normalize(rest)
    return value if left.kind == "empty" or set(left.key.split()) <= FRAMING else None


def _constraint(clause: str) -> str | None:
    return next((k for k, rx in CONSTRAINT_RULES if rx.search(clause)), None)


def fact(slot: str, text: str | Sequence[str], earlier: Earlier) -> Observation | None:
    """``text`` (one piece, or clauses each normalised on their own) as the value of ``slot``: the clauses' keys
    (each settled against the parts of the user's earlier values, :func:`hermes_learner.normalize.settle`) sorted and
    joined by " + ", the words as said; None when nothing is left of it."""
    clauses = [text] if isinstance(text, str) else list(text)
    parts = {p for e in earlier(slot) for p in e.split(" + ")}
    keys: set[str] = set()
    for clause in clauses:
        normal = normalize.normalize(clause)
        if normal.kind == "empty":  # only filler words ("just me"): the words themselves, lowercase
            words = " ".join(w for w in normal.wording.lower().split() if any(c.isalnum() for c in w))
            keys.update([words] if words else [])
        else:
            keys.add(normalize.settle(normal, parts))
    wording = ", ".join(" ".join(c.split()).strip(" ,;.") for c in clauses if c.strip())
    if not keys:
        return None
    earlier_value = restated(keys, earlier(slot))
    if earlier_value is not None and not set(earlier_value.split(" + ")) <= keys:
        wording = ""  # says only part of the earlier value: its fuller words stay what a prompt shows
    value = earlier_value or " + ".join(sorted(keys))
    return Observation(facts.category_of(slot), slot, value[: normalize.LIMIT], wording)


def restated(parts: set[str], earlier: Iterable[str]) -> str | None:
    """The earlier value (of the same user and slot) an answer of these clause ``parts`` restates, or None: one whose
    parts contain these, or are contained in them, or share at least half of the larger of the two ("all of it, the
    whole thing" and "the whole thing, finished" say one fact with different extras). The most shared parts win,
    then the closest size, then the smaller value. Hermes's own rule, the clause-level counterpart of
    :func:`hermes_learner.normalize.settle`."""
    best: tuple[int, int, str] | None = None
    for key in earlier:
        if key == facts.UNANSWERED:
            continue
        theirs = set(key.split(" + "))
        shared = len(theirs & parts)
        if shared and (theirs <= parts or parts <= theirs or 2 * shared >= max(len(theirs), len(parts))):
            score = (shared, -abs(len(theirs) - len(parts)), key)
            if best is None or score[:2] > best[:2] or (score[:2] == best[:2] and key < best[2]):
                best = score
    return best[2] if best is not None else None


def unanswered(slot: str) -> Observation:
    """``slot`` asked about and not answered."""
    return Observation(facts.category_of(slot), slot, facts.UNANSWERED)


def read_answer(answer: str, slot: str, earlier: Earlier = lambda _: ()) -> list[Observation]:
    """The facts one answer to a question of ``slot`` shows, at most one per slot (see the module docstring); with no
    ``slot`` (a question the learner does not know) only what the rules recognise. A non-answer ("not sure", "no
    idea": :func:`hermes_learner.patterns.real_answer`) leaves the slot unanswered."""
    if not real_answer(answer):
        return [unanswered(slot)] if slot else []
    found: dict[str, Observation] = {}
    if slot in ("depth", "style"):  # the question asks it: its word anywhere answers it
        rules = DEPTH_RULES if slot == "depth" else STYLE_RULES
        if (value := _first(answer, rules)) is not None:
            found[slot] = Observation(slot, slot, value)
    own: list[str] = []
    for clause in (c.strip() for c in _CLAUSES.split(answer) if c and c.strip()):
        key = _constraint(clause)
        if key is not None and key != slot:
            if key not in found and (o := fact(key, clause, earlier)) is not None:
                found[key] = o
            continue
        stated = {
            c: v for c, rules in (("depth", DEPTH_RULES), ("style", STYLE_RULES)) if (v := statement(clause, rules))
        }
        if stated and key is None:
            for category, value in stated.items():
                found.setdefault(category, Observation(category, category, value))
            continue
        own.append(clause)
    if slot and slot not in found:
        found[slot] = (fact(slot, own, earlier) if own else None) or unanswered(slot)
    return list(found.values())


COMMENT_RULES: tuple[tuple[str, str, re.Pattern[str]], ...] = (
    ("depth", "overview", _rx(r"\btoo (long|detailed|wordy|verbose|much)\b|\b(shorter|more concise|tl;?dr)\b")),
    ("depth", "detailed", _rx(r"\btoo (short|brief|shallow|vague)\b|\b(more detail|longer|more depth)\b")),
    ("style", "casual", _rx(r"\btoo (formal|stiff|technical)\b|\b(less formal|simpler words|plainer)\b")),
    ("style", "formal", _rx(r"\btoo (casual|informal|chatty|sloppy)\b|\bmore (formal|professional)\b")),
    ("style", "technical", _rx(r"\b(not technical enough|too simplistic|more technical|more precise)\b")),
)
"""What a rating's comment says about depth and style: the value the user asks for instead (e.g. "too long" →
overview). Hermes's own reading of common complaints, no external source; the first rule of a category wins."""


def read_comment(comment: str) -> list[Observation]:
    """The depth and style a rating's ``comment`` asks for (at most one each, :data:`COMMENT_RULES`)."""
    found: dict[str, Observation] = {}
    for category, value, rx in COMMENT_RULES:
        if category not in found and rx.search(comment):
            found[category] = Observation(category, category, value)
    return list(found.values())
