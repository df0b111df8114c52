"""Simulated users for measuring what Hermes learns (``bench/learning_eval.py``; checked by
``tests/unit/test_simulated_users.py``), and a faithful stand-in model.

A :class:`Profile` is a user's hidden, consistent way of wanting things: a depth (overview, detailed,
comprehensive), a style (formal, casual, technical) and 3-5 recurring constraints (budget, location, deadline,
audience, language). The simulated user answers only the questions that touch its profile (:meth:`Profile.answer`),
truthfully and always in the same words, ignores the others, and rates a result by the share of its profile facts
the text honours (:meth:`Profile.rating`).

:func:`faithful_reply` is the stand-in model: its draft restates the idea and every requirement line of its prompt
(``- ...`` lines: learned preferences, clarifications), so a fact reaches the draft exactly when Hermes put it into
the prompt. What is measured is Hermes's part — what it asks and what it tells the model — not a model's skill.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from typing import Any

DEPTHS = {
    "overview": "just a short overview please",
    "detailed": "detailed, step by step please",
    "comprehensive": "comprehensive, cover everything",
}
"""Depth → how the user says it (the learner reads the depth word)."""
STYLES = {
    "formal": "formal and professional please",
    "casual": "keep it casual",
    "technical": "technical, I know the field",
}
CONSTRAINTS: dict[str, tuple[tuple[str, str], ...]] = {
    # key → (how the user says it, the marker a text must contain to honour it)
    "budget": (
        ("budget under 500 euros", "500 euros"),
        ("at most $200 to spend", "$200"),
        ("spend no more than 80 pounds", "80 pounds"),
        ("a budget of 1500 dollars", "1500 dollars"),
    ),
    "location": (
        ("in Lisbon", "lisbon"),
        ("near Berlin", "berlin"),
        ("based in Toronto", "toronto"),
        ("in Osaka", "osaka"),
    ),
    "deadline": (
        ("by Friday", "friday"),
        ("by the end of March", "end of march"),
        ("within 2 weeks", "2 weeks"),
        ("by next month", "next month"),
    ),
    "audience": (
        ("for beginners", "beginners"),
        ("for my team", "my team"),
        ("for the kids", "the kids"),
        ("for our clients", "our clients"),
    ),
    "language": (
        ("written in Portuguese", "portuguese"),
        ("written in plain English", "plain english"),
        ("written in German", "german"),
    ),
}
"""Constraint key → the ways a user states it."""

IDEAS = (
    "help me plan a trip",
    "plan a birthday party",
    "plan a vegetable garden",
    "organise a weekend away",
    "help me plan a move to a new flat",
    "plan a picnic",
    "plan a family dinner",
    "plan a hiking day",
    "write a newsletter about our product",
    "write a short story for a contest",
    "write a speech for a wedding",
    "prepare a presentation about solar power",
    "learn to play the guitar",
    "learn basic Spanish",
    "start running three times a week",
    "build a website for a bakery",
    "write a script to rename photos",
    "build a small app to track expenses",
    "compare two laptops to buy",
    "choose between renting and buying",
    "research electric bikes",
    "understand how vaccines work",
    "plan a team offsite",
    "renovate the kitchen",
    "set up a home office",
    "cook healthier meals",
    "organise a book club",
    "plan a charity bake sale",
    "write a blog post about composting",
    "plan a camping trip",
    "teach my parents to use video calls",
    "make a monthly household routine",
    "plan a surprise party",
    "write a cover letter",
    "declutter the garage",
    "plan a city break",
    "learn to take better photos",
    "write a poem for an anniversary",
    "plan a small wedding",
    "set up a podcast",
)
"""Ideas the population draws from (none contains a profile marker)."""


@dataclass(frozen=True)
class Profile:
    """One simulated user: ``user_id`` (as submitted), ``depth``, ``style``, ``constraints`` (key → (said, marker))."""

    user_id: str
    depth: str
    style: str
    constraints: dict[str, tuple[str, str]] = field(default_factory=dict)

    def facts(self) -> dict[str, str]:
        """Fact name → the marker a text must contain (lowercase) to honour it: ``depth``, ``style``, each
        constraint key."""
        return {"depth": self.depth, "style": self.style} | {k: m for k, (_, m) in self.constraints.items()}

    def answer(self, category: str, text: str) -> str | None:
        """The user's answer to a question of ``category`` (``text`` its wording), or None when it does not touch
        the profile (ignored). Scope questions get the depth; context questions the style, and the audience when
        they ask who it is for; constraint questions every constraint (people list their limits when asked about
        limits). Intent and success questions are about the idea itself: ignored."""
        if category == "scope":
            return DEPTHS[self.depth]
        if category == "context":
            parts = [STYLES[self.style]]
            if "audience" in self.constraints and re.search(r"\bwho\b", text, re.IGNORECASE):
                parts.append(self.constraints["audience"][0])
            return "; ".join(parts)
        if category == "constraint" and self.constraints:
            return "; ".join(said for said, _ in self.constraints.values())
        return None

    def honoured(self, text: str) -> int:
        """How many profile facts ``text`` honours (its marker appears, case-insensitively, as whole words)."""
        return sum(1 for marker in self.facts().values() if _contains(text, marker))

    def rating(self, text: str) -> int:
        """1-5: 1 + 4 × the share of profile facts ``text`` honours, rounded half up."""
        return 1 + int(4 * self.honoured(text) / len(self.facts()) + 0.5)


def _contains(text: str, marker: str) -> bool:
    return re.search(rf"(?<![\w$]){re.escape(marker)}(?!\w)", text, re.IGNORECASE) is not None


def population(size: int, seed: int = 7) -> list[Profile]:
    """``size`` varied profiles, the same for the same ``seed``: depths and styles cycle so the first nine users
    hold every combination, each user holds 3-5 of the constraint keys, each stated in one of several wordings."""
    rng = random.Random(seed)
    depths, styles = list(DEPTHS), list(STYLES)
    profiles = []
    for i in range(size):
        keys = rng.sample(list(CONSTRAINTS), rng.choice((3, 4, 5)))
        profiles.append(
            Profile(
                user_id=f"sim-{i:02d}",
                depth=depths[i % 3],
                style=styles[(i // 3 + i) % 3],
                constraints={k: rng.choice(CONSTRAINTS[k]) for k in sorted(keys)},
            )
        )
    return profiles


def ideas_for(profile: Profile, count: int, seed: int = 7) -> list[str]:
    """``count`` ideas for ``profile`` in its own order (each idea once per cycle through :data:`IDEAS`)."""
    rng = random.Random(f"{seed}:{profile.user_id}")
    out: list[str] = []
    while len(out) < count:
        cycle = list(IDEAS)
        rng.shuffle(cycle)
        out.extend(cycle)
    return out[:count]


REQUIREMENT = re.compile(r"^\s*-\s+(.+)$", re.MULTILINE)


def faithful_reply(body: Any) -> str:
    """The stand-in model's draft for an OpenAI chat request ``body``: the idea (the user message's first line,
    after a ``My idea:`` label when there is one) and every ``- ...`` requirement line of every message, restated."""
    messages = body.get("messages") or []
    user = next((m.get("content") or "" for m in reversed(messages) if m.get("role") == "user"), "")
    idea = user.removeprefix("My idea:").strip().splitlines()[0] if user.strip() else ""
    lines = [m for msg in messages for m in REQUIREMENT.findall(msg.get("content") or "")]
    follows = " Following: " + "; ".join(dict.fromkeys(lines)) + "." if lines else ""
    return f"A plan for {idea}.{follows}"
