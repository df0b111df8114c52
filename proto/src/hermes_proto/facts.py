"""Learned facts about a user and which of them a thread applies: one rule for the orchestrator (the draft-1 prompt)
and the learner (which questions are settled, what draft 2 assumes).

A fact is a learned preference (:class:`~hermes_proto.events.PreferenceLearned`) of one user for one **slot**: what a
question asks (``depth``, ``style``, ``budget``, ``audience``, ``tech_stack``, a template's own id...). Its
``(category, key)`` is ``(slot, slot)`` for depth and style, ``("constraint", slot)`` for the five constraint keys
Hermes always knew, ``("fact", slot)`` for every other slot (:func:`category_of`). Each fact also has a **scope**:
:data:`EVERYWHERE`, one idea type (``type:<t>``) or one project (``project:<p>``). Every answer counts in each scope
its thread is in, so a user who answers differently per idea type holds an unsure belief everywhere and a sure one
per type, and a slot the user leaves unanswered is known too (value :data:`UNANSWERED`: it stops the question and
never reaches a prompt). Pure, no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import TypeVar

EVERYWHERE = ""
UNANSWERED = "(unanswered)"
"""The value of a slot whose question the user leaves unanswered: a known fact that settles the question and is
never written into a prompt."""
CONSTRAINT_KEYS = ("budget", "location", "deadline", "audience", "language")
"""The constraint slots of the first learner: their facts keep the category ``constraint``."""

T = TypeVar("T")


def category_of(slot: str) -> str:
    """The preference category of ``slot``: ``depth`` / ``style`` for those slots, ``constraint`` for
    :data:`CONSTRAINT_KEYS`, else ``fact``."""
    if slot in ("depth", "style"):
        return slot
    return "constraint" if slot in CONSTRAINT_KEYS else "fact"


def slot_of(category: str, key: str) -> str:
    """The slot a preference ``category``/``key`` fills (its key; depth and style are their own)."""
    return category if category in ("depth", "style") else key


def label(category: str, key: str) -> str:
    """How a prompt names the slot: ``Depth``, ``Budget``, ``Tech stack``; a learned template's slot
    (``learned-<category>-<phrase>``) by its phrase."""
    slot = slot_of(category, key)
    if slot.startswith("learned-"):
        slot = slot.split("-", 2)[-1]
    text = slot.replace("_", " ").replace("-", " ").strip()
    return text[:1].upper() + text[1:]


def type_scope(idea_type: str) -> str:
    return f"type:{idea_type}"


def project_scope(project: str) -> str:
    return f"project:{project}"


def scopes(*, idea_type: str | None, project: str) -> tuple[str, ...]:
    """The scopes a thread is in, most specific first: its project (unless ``default``), its idea type (when known),
    then :data:`EVERYWHERE`."""
    out = [project_scope(project)] if project and project != "default" else []
    out += [type_scope(idea_type)] if idea_type else []
    return (*out, EVERYWHERE)


GENERALISE_AFTER = 2
"""Idea types a fact held everywhere must have been seen to hold in (with the same value) before it is applied to an
idea of a type it was never seen in; a fact seen only in planning ideas stays a planning fact. Hermes's own
threshold (the smallest that tells "one context" from "more than one")."""


def resolve(
    beliefs: Iterable[T],
    within: Sequence[str],
    *,
    slot: Callable[[T], Hashable],
    scope: Callable[[T], str],
    value: Callable[[T], str],
    usable: Callable[[T], bool],
) -> dict[Hashable, T]:
    """Slot → the belief a thread in the scopes ``within`` (most specific first, :func:`scopes`) applies: the most
    specific usable one, unless a more specific belief of that slot holds another value (even an unsure one: the
    user said something else there, so the question is asked rather than the general value assumed). A belief held
    everywhere applies to an idea type with no belief of its own only when no type holds one of that slot (an
    explicit statement, nothing learned per type yet) or at least :data:`GENERALISE_AFTER` types hold its value.
    ``beliefs`` are all of the user's (of every scope: the types seen are counted among them); a slot with nothing
    to apply is absent."""
    rank = {s: i for i, s in enumerate(within)}
    by_slot: dict[Hashable, list[T]] = {}
    for b in beliefs:
        if value(b):
            by_slot.setdefault(slot(b), []).append(b)
    own_type = next((s for s in within if s.startswith("type:")), None)
    chosen: dict[Hashable, T] = {}
    for key, every in by_slot.items():
        held = sorted((b for b in every if scope(b) in rank), key=lambda b: rank[scope(b)])
        typed = [b for b in every if scope(b).startswith("type:")]
        for i, b in enumerate(held):
            if usable(b):
                general = scope(b) == EVERYWHERE and own_type is not None
                seen = {scope(t) for t in typed if value(t) == value(b)}
                unseen_type = general and not any(scope(t) == own_type for t in typed)
                if all(value(more) == value(b) for more in held[:i]) and not (
                    unseen_type and typed and len(seen) < GENERALISE_AFTER
                ):
                    chosen[key] = b
                break
    return chosen


def applies(value: str) -> bool:
    """Whether a fact's ``value`` goes into a prompt (every value but :data:`UNANSWERED`)."""
    return bool(value) and value != UNANSWERED
