"""Simulated users for measuring what Hermes learns (``bench/learning_eval.py``; checked by
``tests/unit/test_simulated_users.py``), and a faithful stand-in model. Two populations:

* ``classic`` (:func:`population`, :class:`Profile`): a user's hidden, consistent way of wanting things is a depth
  (overview, detailed, comprehensive), a style (formal, casual, technical) and 3-5 recurring constraints (budget,
  location, deadline, audience, language): the vocabulary the learner's code names. The simulated user answers only
  the questions that touch its profile (:meth:`Profile.answer`, by category), truthfully and always in the same
  words, ignores the others, and rates a result by the share of its profile facts the text honours
  (:meth:`Profile.rating`). Kept as it was: its curves are a regression check.
* ``open`` (:func:`open_population`, :class:`OpenProfile`): 4-6 facts per idea, at least half of them in slots and
  words the learner's code does not name (schedule "weekends only", length "two pages at most", a bare city name,
  a tech stack, a diet...). Each :class:`Fact` recognises the question it answers from the question's wording
  (a regex on its text, not its category), is said in one of 2-3 wordings of the same value (chosen per thread),
  and is honoured by a text that contains its ``marker``. Some facts depend on the user's own grouping of its ideas
  (:data:`IDEA_GROUPS`: writing, planning, tech, learning): the audience of a writing idea is "my readers", of a
  tech one "personal use". :meth:`OpenProfile.on` gives the user on one thread (an idea, a thread index) with the
  classic profile's interface.

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


# ---- the open population ---------------------------------------------------------------------------------------

GROUPS = ("writing", "planning", "tech", "learning")
"""The user's own grouping of its ideas (not the learner's idea types)."""
IDEA_GROUPS: dict[str, str] = {
    **dict.fromkeys(
        (
            "write a newsletter about our product",
            "write a short story for a contest",
            "write a speech for a wedding",
            "prepare a presentation about solar power",
            "write a blog post about composting",
            "write a cover letter",
            "write a poem for an anniversary",
        ),
        "writing",
    ),
    **dict.fromkeys(
        (
            "build a website for a bakery",
            "write a script to rename photos",
            "build a small app to track expenses",
            "set up a podcast",
        ),
        "tech",
    ),
    **dict.fromkeys(
        (
            "learn to play the guitar",
            "learn basic Spanish",
            "start running three times a week",
            "compare two laptops to buy",
            "choose between renting and buying",
            "research electric bikes",
            "understand how vaccines work",
            "teach my parents to use video calls",
            "learn to take better photos",
        ),
        "learning",
    ),
}
IDEA_GROUPS |= {idea: "planning" for idea in IDEAS if idea not in IDEA_GROUPS}
"""Each idea of :data:`IDEAS` → its group in :data:`GROUPS` (trips, parties, the home, meals: planning)."""

_MUST = r"must (?:avoid|skip|include)|has to have|hard requirements|exclusions?"
ASKS: dict[str, str] = {
    "schedule": r"how much time|how many hours|\bwhen\b",
    "deadline": r"\bwhen\b|\bdeadline\b",
    "situation": r"starting (?:point|from)|current state",
    "size": r"\bhow (?:big|large)\b|first version|\bscope\b",
    "register": _MUST + r"|\btone\b",
    "diet": _MUST + r"|\b(?:food|diet)\b",
    "tools": _MUST + r"|\btools?\b",
    "stack": _MUST + r"|\b(?:language|framework|platform|runtime|stack)\b",
    "hosting": _MUST + r"|\b(?:platform|runtime|host\w*|deploy\w*)\b",
    "audience": r"\bwho\b|\baudience\b|intended for",
    "length": r"\bhow long\b|\blength\b",
    "format": r"\bform\b|\bformat\b|look like",
    "experience": r"how much do you (?:already )?know|\bexpertise\b|\bexperience\b",
    "place": r"\bwhere(?:'s| will| does| is)\b|\b(?:location|site|place)\b",
    "budget": r"\bbudget\b|how much can you spend|\bafford\b|\bcost\b",
}
"""Fact key → how the user recognises a question asking it (a case-insensitive regex on the question's text, every
wording of it: "When do you need it, and how much time do you have?" asks the schedule and the deadline; "Is there
anything it must include, or must avoid?" the register, diet, tools, stack and hosting)."""

Value = tuple[tuple[str, ...], str]
"""One value of a fact: (its 2-3 wordings, the marker every wording contains as whole words)."""


def _v(marker: str, *said: str) -> Value:
    return said, marker


_ALL, _NOT_WRITING = GROUPS, ("planning", "tech", "learning")
OPEN_POOL: dict[str, dict[tuple[str, ...], tuple[Value, ...]]] = {
    "schedule": {
        _ALL: (
            _v("weekends", "weekends only", "only on weekends", "just at weekends"),
            _v("evenings", "evenings only", "only in the evenings", "just evenings after work"),
            _v("an hour a day", "an hour a day", "about an hour a day", "an hour a day at most"),
        )
    },
    "deadline": {
        _ALL: (
            _v("3 weeks", "in 3 weeks", "within 3 weeks", "3 weeks from now"),
            _v("summer", "before the summer", "by the summer", "before summer starts"),
            _v("the 15th", "by the 15th", "no later than the 15th", "the 15th at the latest"),
        )
    },
    "situation": {
        _ALL: (
            _v("from scratch", "from scratch", "starting from scratch", "from scratch, nothing exists yet"),
            _v("half done", "half done already", "it is half done already", "about half done"),
        )
    },
    "size": {
        _ALL: (
            _v("rough first cut", "a rough first cut", "just a rough first cut", "a rough first cut only"),
            _v("whole thing", "the whole thing, finished", "the whole thing in one go", "all of it, the whole thing"),
        )
    },
    "register": {
        ("writing",): (
            _v("friendly tone", "a friendly tone", "keep a friendly tone", "friendly tone throughout"),
            _v("playful", "playful", "a playful voice", "light and playful"),
        ),
        _NOT_WRITING: (
            _v("plain words", "plain words", "in plain words", "plain words, no jargon"),
            _v("short sentences", "short sentences", "in short sentences", "short sentences only"),
        ),
    },
    "length": {
        ("writing",): (
            _v("two pages", "two pages at most", "at most two pages", "no more than two pages"),
            _v("500 words", "under 500 words", "500 words or fewer", "no more than 500 words"),
            _v("single paragraph", "a single paragraph", "one single paragraph", "a single paragraph only"),
        )
    },
    "format": {
        ("writing",): (
            _v("markdown", "in Markdown", "Markdown please", "as Markdown"),
            _v("plain text draft", "a plain text draft", "as a plain text draft", "plain text draft please"),
        ),
        ("learning",): (
            _v("checklist", "a checklist", "as a checklist", "a simple checklist"),
            _v("weekly plan", "a weekly plan", "as a weekly plan", "one weekly plan"),
        ),
    },
    "audience": {
        ("writing",): (
            _v("readers", "my readers", "for my readers", "the readers of my blog"),
            _v("colleagues", "my colleagues", "for my colleagues", "colleagues at work"),
        ),
        ("tech",): (
            _v("personal use", "personal use", "my personal use", "personal use only"),
            _v("a few friends", "a few friends", "just a few friends", "a few friends of mine"),
        ),
    },
    "stack": {
        ("tech",): (
            _v("sqlite", "Go and SQLite", "Go with SQLite", "SQLite from Go"),
            _v("flask", "Python and Flask", "Flask on Python", "Python with Flask"),
            _v("mysql", "PHP and MySQL", "MySQL with PHP", "plain PHP on MySQL"),
        )
    },
    "hosting": {
        ("tech",): (
            _v("raspberry pi", "on a Raspberry Pi", "hosted on a Raspberry Pi", "a Raspberry Pi at home"),
            _v("vps", "a cheap VPS", "on a small VPS", "one VPS"),
        )
    },
    "tools": {
        ("tech", "learning"): (
            _v("free tools", "free tools only", "only free tools", "free tools, nothing paid"),
            _v("open source", "open source only", "only open source", "open source software only"),
        )
    },
    "experience": {
        ("learning",): (
            _v("total novice", "a total novice", "I'm a total novice", "total novice here"),
            _v("rusty basics", "rusty basics", "some rusty basics", "I have rusty basics"),
        )
    },
    "place": {
        ("planning",): (
            _v("porto", "Porto", "in Porto", "around Porto"),
            _v("leeds", "Leeds", "in Leeds", "near Leeds"),
            _v("graz", "Graz", "in Graz", "around Graz"),
            _v("ghent", "Ghent", "in Ghent", "near Ghent"),
        )
    },
    "diet": {
        ("planning",): (
            _v("vegetarian", "vegetarian food", "only vegetarian food", "vegetarian food, please"),
            _v("nuts", "no nuts", "nothing with nuts", "no nuts at all"),
            _v("gluten-free", "gluten-free", "gluten-free only", "everything gluten-free"),
        )
    },
    "budget": {
        ("planning",): (
            _v("300 euros", "300 euros tops", "no more than 300 euros", "300 euros at the very most"),
            _v("1000 pounds", "around 1000 pounds", "about 1000 pounds", "1000 pounds or so"),
        )
    },
}
"""Fact key → (the groups it applies to → the values a user may hold there). A key with two entries holds a value
per entry (``register``: one for writing, one for everything else); a key missing for a group does not apply to
its ideas (no tech stack for a picnic). Keys and wordings are the user's, mostly not the learner's vocabulary."""
SHARED = ("schedule", "deadline", "situation", "size")
"""Keys that hold the same value for every idea: a user holds 2-3 of them."""
ALWAYS = ("register",)
"""Keys every open user holds (one value for writing ideas, another for the rest)."""
NAMED = frozenset({"depth", "style", "budget", "location", "deadline", "audience", "language"})
"""The fact keys the learner's code names (the classic population's vocabulary)."""


@dataclass(frozen=True)
class Fact:
    """One thing an open user holds for an idea: its ``key`` (the user's name for it), ``asks`` (a regex on a
    question's text: the questions it answers), ``said`` (2-3 wordings of the same value) and ``marker`` (lowercase,
    in every wording as whole words: a text honours the fact when it contains it)."""

    key: str
    asks: str
    said: tuple[str, ...]
    marker: str

    def answers(self, question: str) -> bool:
        """Whether ``question`` (its text) asks this fact."""
        return re.search(self.asks, question, re.IGNORECASE) is not None

    def honoured_by(self, text: str) -> bool:
        """Whether ``text`` contains the marker (whole words, case-insensitively)."""
        return _contains(text, self.marker)


def group_of(idea: str) -> str:
    """The user's group of ``idea`` (:data:`IDEA_GROUPS`; ``planning`` for an idea outside :data:`IDEAS`)."""
    return IDEA_GROUPS.get(idea, "planning")


@dataclass(frozen=True)
class OpenProfile:
    """One open-population user: ``user_id`` (as submitted), ``seed`` (of its wordings per thread) and ``by_group``
    (group → the facts it holds for an idea of that group, 4-6, sorted by key)."""

    user_id: str
    seed: int
    by_group: dict[str, tuple[Fact, ...]]

    def facts_for(self, group: str) -> tuple[Fact, ...]:
        """The facts that apply to an idea of ``group``."""
        return self.by_group[group]

    def wording(self, fact: Fact, thread: int) -> str:
        """How the user says ``fact`` on its ``thread``-th thread (the same wording all through one thread)."""
        return random.Random(f"{self.seed}:{self.user_id}:{thread}:{fact.key}").choice(fact.said)

    def answer(self, text: str, idea: str, thread: int) -> str | None:
        """The answer to a question worded ``text`` on ``thread`` (about ``idea``): the facts of the idea's group it
        asks, ``"; "``-joined, or None when it asks none (ignored)."""
        said = [self.wording(f, thread) for f in self.facts_for(group_of(idea)) if f.answers(text)]
        return "; ".join(said) or None

    def honoured(self, text: str, idea: str) -> int:
        """How many of ``idea``'s facts ``text`` honours (marker as whole words, case-insensitively)."""
        return sum(1 for f in self.facts_for(group_of(idea)) if f.honoured_by(text))

    def rating(self, text: str, idea: str) -> int:
        """1-5: 1 + 4 × the share of ``idea``'s facts ``text`` honours, rounded half up."""
        return 1 + int(4 * self.honoured(text, idea) / len(self.facts_for(group_of(idea))) + 0.5)

    def on(self, idea: str, thread: int) -> OnIdea:
        """The user on one thread, with :class:`Profile`'s interface."""
        return OnIdea(self, idea, thread)


@dataclass(frozen=True)
class OnIdea:
    """An :class:`OpenProfile` on its ``thread``-th thread, about ``idea``: :class:`Profile`'s interface (``user_id``,
    ``facts()``, ``answer(category, text)``, ``honoured(text)``, ``rating(text)``) over that idea's facts."""

    profile: OpenProfile
    idea: str
    thread: int

    @property
    def user_id(self) -> str:
        return self.profile.user_id

    def facts(self) -> dict[str, str]:
        """Fact key → marker, for this idea's group."""
        return {f.key: f.marker for f in self.profile.facts_for(group_of(self.idea))}

    def answer(self, category: str, text: str) -> str | None:
        """The answer to the question worded ``text`` (``category`` is not used: the user reads the wording)."""
        return self.profile.answer(text, self.idea, self.thread)

    def honoured(self, text: str) -> int:
        return self.profile.honoured(text, self.idea)

    def rating(self, text: str) -> int:
        return self.profile.rating(text, self.idea)


def _family(key: str, group: str) -> tuple[str, ...] | None:
    return next((family for family in OPEN_POOL[key] if group in family), None)


def open_population(size: int, seed: int = 7) -> list[OpenProfile]:
    """``size`` open profiles, the same for the same ``seed``: each holds one value per key and group family of
    :data:`OPEN_POOL`, 2-3 :data:`SHARED` keys and :data:`ALWAYS` for every group, and per group more of the keys
    that apply there, up to 4-6 facts."""
    rng = random.Random(f"open:{seed}")
    profiles = []
    for i in range(size):
        values = {(k, family): rng.choice(vals) for k in sorted(OPEN_POOL) for family, vals in OPEN_POOL[k].items()}
        common = [*rng.sample(SHARED, rng.choice((2, 3))), *ALWAYS]
        by_group = {}
        for group in GROUPS:
            extra = [k for k in sorted(OPEN_POOL) if k not in SHARED + ALWAYS and _family(k, group)]
            keys = common + rng.sample(extra, min(len(extra), rng.choice((4, 5, 6)) - len(common)))
            by_group[group] = tuple(Fact(k, ASKS[k], *values[(k, _family(k, group))]) for k in sorted(keys))
        profiles.append(OpenProfile(user_id=f"open-{i:02d}", seed=seed, by_group=by_group))
    return profiles


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
