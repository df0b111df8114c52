"""The learner's decision: which clarifying questions to ask after draft 1, ranked by expected value.

Pure and deterministic, no I/O: the same idea, draft, templates and statistics always give the same
questions with the same ids. What the idea says (type, clarity, open issues) comes from
:mod:`hermes_learner.ideas`. The constants are heuristics of Hermes's own (no external source), meant to
be tuned against measured answer rates and ratings; the borrowed formulas are the Beta-Binomial posterior
mean in :func:`answer_rate` (and its pseudo-count form in :func:`improvement`) and the UCB1 bonus of
:func:`exploration_bonus`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from hermes_proto.events import QUESTION_CATEGORIES, TEMPLATE_TIMINGS, Assumption, Question
from hermes_proto.ids import derived_id

from hermes_learner import triggers
from hermes_learner.classification import Classification
from hermes_learner.ideas import clarity, classify, quality_issues

# ---- types -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QuestionTemplate:
    """A clarifying question Hermes knows how to ask.

    ``category`` is one of ``QUESTION_CATEGORIES``; ``text`` may hold a ``{topic}`` slot (filled with
    the idea's gist); ``suggestions`` are 0-4 short answers for the UI; ``idea_types`` the types it
    applies to (empty = all); ``triggers`` regular expressions (case-insensitive, RE2 syntax:
    :mod:`hermes_learner.triggers`) that make it more relevant when they match the idea; ``prior_improvement`` in
    [0, 1] the expected improvement of the next draft when answered; ``time_cost_s`` the seconds a user needs to
    answer it (> 0); ``variations`` style (formal, casual, technical: ``hermes_proto.events.STYLES``) → the text in
    that register (may hold ``{topic}``);
    ``timing`` one of ``TEMPLATE_TIMINGS`` (first, any, last), where its question goes among those asked together;
    ``slot`` what its answer says about the user."""

    template_id: str
    category: str
    text: str
    suggestions: tuple[str, ...] = ()
    idea_types: tuple[str, ...] = ()
    triggers: tuple[str, ...] = ()
    prior_improvement: float = 0.5
    time_cost_s: float = 20.0
    variations: Mapping[str, str] = field(default_factory=dict, hash=False)  # a dict: hash the rest
    timing: str = "any"
    slot: str = ""
    """What its answer fills (:mod:`hermes_proto.facts`; ``hermes_learner.templates.slot_for``); empty: its id."""

    @property
    def fills(self) -> str:
        """The slot its answer fills."""
        return self.slot or self.template_id

    def text_for(self, style: str | None) -> str:
        """The question text for a user writing in ``style`` (its variation), else ``text``."""
        return self.variations.get(style, self.text) if style else self.text


@dataclass(frozen=True)
class TemplateStats:
    """Measured use of one template over finished threads (counts): how often it was asked, how often the
    user answered it, and the ratings (1-5) of the threads it was asked in (see :mod:`hermes_learner.readmodel`)."""

    times_asked: int = 0
    times_answered: int = 0
    rated_threads: int = 0
    rating_sum: int = 0
    answer_time_sum_s: float = 0.0
    """Seconds from the questions to their answers, summed over the answered askings."""
    clarity_gain_sum: float = 0.0
    """Clarity gained by adding each answer to the idea (:func:`clarity_gain`), summed over the answered askings."""

    def mean_rating(self) -> float | None:
        """Mean 1-5 rating of the threads this template was asked in (None before any rating)."""
        return self.rating_sum / self.rated_threads if self.rated_threads else None

    def answer_rate(self) -> float | None:
        """Measured answered / asked (None before any asking); the ranking uses the smoothed :func:`answer_rate`."""
        return min(self.times_answered, self.times_asked) / self.times_asked if self.times_asked else None

    def mean_answer_time_s(self) -> float | None:
        """Mean seconds a user took to answer it: its measured time cost (None before any answer)."""
        return self.answer_time_sum_s / self.times_answered if self.times_answered else None

    def mean_clarity_gain(self) -> float | None:
        """Mean :func:`clarity_gain` of its answers (clarity is on a 0..1 scale; None before any answer)."""
        return self.clarity_gain_sum / self.times_answered if self.times_answered else None


@dataclass(frozen=True)
class Policy:
    """Knobs of :func:`choose`. ``clarity_stop``: no questions at or above this clarity (seed rule 0.9);
    ``pattern_threshold``: see :func:`hermes_learner.ideas.classify`; ``min_value``: candidates worth less (improvement per
    minute of the user's time) are dropped; ``per_category``: at most this many questions per category;
    ``use_stats``: False ranks on priors only (learning disabled)."""

    clarity_stop: float = 0.9
    pattern_threshold: float = 1.0
    min_value: float = 0.3
    per_category: int = 2
    use_stats: bool = True
    exploration: float = 0.5
    """Weight of :func:`exploration_bonus` (0: pure exploitation); ignored without ``use_stats``."""


class Decision(NamedTuple):
    """What :func:`choose` decided; ``clarity`` in [0, 1]; ``reason`` is a sentence for humans."""

    questions: list[Question]
    idea_type: str
    clarity: float
    reason: str
    assumptions: list[Assumption] = []
    """Every learned fact the thread applies (by slot), whose questions are not asked."""
    skipped: list[str] = []
    """Question categories not asked because a skip_question pattern says the user leaves them unanswered (no longer
    decided: a slot the user leaves unanswered is a known fact, :data:`hermes_proto.facts.UNANSWERED`)."""


# ---- ranking -----------------------------------------------------------------------------------

PRIOR_ANSWER_RATE = 0.5
"""Assumed answer rate of a template never asked (Hermes's own guess)."""
PRIOR_STRENGTH = 4.0
"""Weight of that assumption, in pseudo-observations: 4 real askings weigh as much as the prior."""
ISSUE_BOOST, NO_ISSUE_FACTOR, TRIGGER_BOOST = 1.5, 0.5, 1.3
SAME_CATEGORY_DISCOUNT = 0.6
"""Each question already chosen in a category multiplies the next one's value by this (diversity)."""

_LEAD_IN = re.compile(
    r"^(?:(?:please|hey|hi|hermes)[,!]?\s+)*(?:(?:can|could|would) you\s+(?:please\s+)?|"
    r"help me(?: to)?\s+|i (?:want|need|would like|'d like) to\s+|how (?:do|can|should) i\s+|"
    r"let's\s+)?",
    re.IGNORECASE,
)
_TOPIC_WORDS = 8


def answer_rate(stats: TemplateStats | None) -> float:
    """Posterior mean answer rate of a template: (answered + k·r0) / (asked + k) with r0 =
    :data:`PRIOR_ANSWER_RATE` and k = :data:`PRIOR_STRENGTH` (the mean of a Beta(k·r0, k·(1-r0)) prior
    updated with binomial counts; Gelman et al., *Bayesian Data Analysis*, 3rd ed., §2.4). Few
    askings stay close to r0; many askings approach the measured rate."""
    asked = stats.times_asked if stats else 0
    answered = min(stats.times_answered, asked) if stats else 0
    return (answered + PRIOR_STRENGTH * PRIOR_ANSWER_RATE) / (asked + PRIOR_STRENGTH)


def improvement(template: QuestionTemplate, stats: TemplateStats | None) -> float:
    """Estimated improvement in [0, 1] from asking ``template``: the seeded ``prior_improvement`` shrunk toward
    the measured ratings of the threads it was asked in, (Σ (rating − 1) / 4 + k·prior) / (rated + k) with
    k = :data:`PRIOR_STRENGTH`, the same pseudo-count shrinkage as :func:`answer_rate` (a 1-5 rating mapped
    to [0, 1]). Unrated templates keep their prior."""
    rated = stats.rated_threads if stats else 0
    normalized_sum = (stats.rating_sum - rated) / 4.0 if stats else 0.0
    return (normalized_sum + PRIOR_STRENGTH * template.prior_improvement) / (rated + PRIOR_STRENGTH)


def expected_value(
    template: QuestionTemplate,
    idea: str,
    clarity_: float,
    issues: Sequence[str],
    stats: TemplateStats | None,
    triggered: bool | None = None,
) -> float:
    """Expected improvement per minute of the user's time:

    ``improvement × answer_rate × (1 − clarity) × category × trigger / (time_cost_s / 60)``

    where ``improvement`` is :func:`improvement` (prior shrunk toward measured ratings), ``(1 − clarity)`` is the room left for improvement, ``category`` is :data:`ISSUE_BOOST` when
    the template's category is an open quality issue and :data:`NO_ISSUE_FACTOR` otherwise, and
    ``trigger`` is :data:`TRIGGER_BOOST` when one of its trigger patterns matches the idea: ``triggered`` when the
    caller matched them already (off the event loop, :class:`hermes_learner.triggers.TriggerMatcher`), else
    :func:`hermes_learner.triggers.matches` here (RE2: linear in the idea's length)."""
    category = ISSUE_BOOST if template.category in issues else NO_ISSUE_FACTOR
    if triggered is None:
        triggered = triggers.matches(idea, template.triggers)
    trigger = TRIGGER_BOOST if triggered else 1.0
    value = (
        improvement(template, stats)
        * answer_rate(stats)
        * (1.0 - clarity_)
        * category
        * trigger
        / (max(template.time_cost_s, 1.0) / 60.0)
    )
    return round(value, 4)


def exploration_bonus(times_asked: int, total_asked: int, weight: float) -> float:
    """The factor ``1 + weight·√(ln(1 + N) / (1 + n))`` a template's value is multiplied by, where ``n`` is how
    often it was asked and ``N`` how often any template was: the UCB1 optimism bonus (Auer, Cesa-Bianchi and
    Fischer, "Finite-time Analysis of the Multiarmed Bandit Problem", Machine Learning 47, 2002) in
    multiplicative form, so a new template is tried before the measured ones crowd it out and the bonus fades as
    it is asked. Deterministic: the same history always gives the same choice."""
    return 1.0 + weight * math.sqrt(math.log(1 + max(total_asked, 0)) / (1 + max(times_asked, 0)))


TREND_WINDOW = 10
"""Askings per window of :func:`trend` (the last ten against the ten before; a heuristic of Hermes's own)."""
TREND_MARGIN = 0.15
"""Answer-rate difference between the windows that counts as a change rather than noise."""


def trend(answered: Sequence[bool], window: int = TREND_WINDOW, margin: float = TREND_MARGIN) -> str:
    """``improving``, ``declining`` or ``stable``: the answer rate of a template's last ``window`` askings
    (``answered``: oldest first, one flag per asking) against the ``window`` before them, differing by more
    than ``margin``; ``new`` with fewer than ``2·window`` askings."""
    if len(answered) < 2 * window:
        return "new"
    recent = sum(answered[-window:]) / window
    before = sum(answered[-2 * window : -window]) / window
    if recent - before > margin:
        return "improving"
    if before - recent > margin:
        return "declining"
    return "stable"


def clarity_gain(idea: str, answer: str) -> float:
    """How much clearer the idea reads with ``answer`` added: ``clarity(idea + answer) − clarity(idea)``
    (:func:`hermes_learner.ideas.clarity`, no draft), in [−1, 1], rounded to 4 decimals."""
    return round(clarity(f"{idea}\n{answer}") - clarity(idea), 4)


def topic(idea: str) -> str:
    """The idea's gist for a ``{topic}`` slot: lead-in phrases ("help me", "can you") dropped, at most
    8 words, in quotes; ``this`` for an empty idea."""
    words = _LEAD_IN.sub("", " ".join(idea.split())).rstrip(" .!?").split()
    if not words:
        return "this"
    gist = " ".join(words[:_TOPIC_WORDS]) + ("…" if len(words) > _TOPIC_WORDS else "")
    return f"“{gist}”"


def _pick(
    scored: list[tuple[float, QuestionTemplate]], limit: int, policy: Policy, bonus: Mapping[str, float] | None = None
) -> list[tuple[float, QuestionTemplate]]:
    """Greedy selection: repeatedly take the best value after the same-category discount (ranked with its
    exploration ``bonus`` factor, by template id), while that value WITHOUT the bonus is at least ``min_value``
    (exploration picks among questions worth asking, it never makes one worth asking); ties go to the smaller
    template id. The values returned carry no bonus."""
    chosen: list[tuple[float, QuestionTemplate]] = []
    per_category: dict[str, int] = {}
    remaining = [s for s in scored if s[0] >= policy.min_value]  # the discount only lowers a value
    while remaining and len(chosen) < limit:

        def effective(item: tuple[float, QuestionTemplate]) -> float:
            return item[0] * SAME_CATEGORY_DISCOUNT ** per_category.get(item[1].category, 0)

        open_ = [
            s
            for s in remaining
            if per_category.get(s[1].category, 0) < policy.per_category and effective(s) >= policy.min_value
        ]
        if not open_:
            break
        best = min(open_, key=lambda s: (-effective(s) * (bonus or {}).get(s[1].template_id, 1.0), s[1].template_id))
        remaining.remove(best)
        chosen.append((round(effective(best), 4), best[1]))
        per_category[best[1].category] = per_category.get(best[1].category, 0) + 1
    return chosen


def choose(
    idea: str,
    draft1: str,
    templates: Sequence[QuestionTemplate],
    stats: Mapping[str, TemplateStats],
    max_questions: int,
    *,
    draft_event_id: str,
    policy: Policy = Policy(),
    known: Mapping[str, Assumption | None] | None = None,
    classification: Classification | None = None,
    style: str | None = None,
    triggered: Collection[str] | None = None,
) -> Decision:
    """Which clarifying questions to ask after draft 1 (at most ``max_questions``), in :func:`by_timing` order.

    Candidates are the templates of a known category that apply to the idea's type, ranked by
    :func:`expected_value` (``stats`` by template id; ignored when ``policy.use_stats`` is false), at
    most ``policy.per_category`` per category, none below ``policy.min_value``. No questions when
    ``max_questions <= 0`` or the clarity reaches ``policy.clarity_stop``. Question ids are
    ``derived_id(draft_event_id, template_id)``, so deciding again yields the same ids.

    ``known``: slot → the learned fact the thread applies there (:func:`hermes_learner.preferences.known_slots` as
    an assumption), None for a slot the user leaves unanswered; no question whose slot (:attr:`QuestionTemplate.fills`)
    is known is asked, whatever other slots hold, and the facts are returned as the decision's ``assumptions``
    (in slot order).

    ``classification``: a model's reading of the idea (:mod:`hermes_learner.classification`); its idea type,
    clarity and issues replace the pattern rules' (:func:`classify`, :func:`clarity`, :func:`quality_issues`).

    ``style``: the value of the user's usable style preference (:func:`hermes_learner.preferences.usable_style`), or
    None; a question's text is then its template's variation in that style (:meth:`QuestionTemplate.text_for`). Only
    the wording changes: the template id, and so the statistics, stay the same.

    ``triggered``: the ids of the templates whose trigger patterns match the idea, when the caller matched them
    already (:class:`hermes_learner.triggers.TriggerMatcher`); None matches them here (:func:`expected_value`)."""
    idea_type = idea_type_of(idea, classification, policy)
    clarity_ = clarity(idea, draft1) if classification is None else classification.clarity
    known = known or {}
    assumed = [a for _, a in sorted(known.items()) if a is not None]
    if max_questions <= 0:
        return Decision([], idea_type, clarity_, "the thread allows no questions (max_questions = 0)", assumed)
    if clarity_ >= policy.clarity_stop:
        return Decision(
            [],
            idea_type,
            clarity_,
            f"clarity {clarity_:.2f} >= {policy.clarity_stop:.2f}: the idea is clear enough",
            assumed,
        )
    issues = quality_issues(idea) if classification is None else classification.issues
    total_asked = sum(s.times_asked for s in stats.values()) if policy.use_stats else 0

    candidates = [
        t
        for t in templates
        if t.category in QUESTION_CATEGORIES
        and t.fills not in known
        and (not t.idea_types or idea_type in t.idea_types)
    ]
    measured = {t.template_id: stats.get(t.template_id) if policy.use_stats else None for t in candidates}
    hit = {t.template_id: None if triggered is None else t.template_id in triggered for t in candidates}
    scored = [
        (expected_value(t, idea, clarity_, issues, measured[t.template_id], hit[t.template_id]), t) for t in candidates
    ]
    bonus = {
        t.template_id: exploration_bonus(m.times_asked if m else 0, total_asked, policy.exploration)
        for t in candidates
        if (m := measured[t.template_id]) is not None or policy.use_stats
    }
    chosen = _pick(scored, max_questions, policy, bonus if policy.use_stats else None)
    assuming = _settled_reason(known)
    if not chosen:
        return Decision(
            [],
            idea_type,
            clarity_,
            f"no question is worth the user's time (best value below {policy.min_value}){assuming}",
            assumed,
        )
    gist = topic(idea)
    questions = [
        Question(
            question_id=derived_id(draft_event_id, t.template_id),
            template_id=t.template_id,
            category=t.category,
            text=t.text_for(style).replace("{topic}", gist),
            suggestions=list(t.suggestions),
            expected_value=value,
            slot=t.fills,
        )
        for value, t in by_timing(chosen)
    ]
    reason = (
        f"{len(questions)} of {len(scored)} candidate questions for a {idea_type} idea with clarity "
        f"{clarity_:.2f}; open issues: {', '.join(issues) or 'none'}{assuming}"
    )
    return Decision(questions, idea_type, clarity_, reason, assumed)


def by_timing(chosen: Sequence[tuple[float, QuestionTemplate]]) -> list[tuple[float, QuestionTemplate]]:
    """``chosen`` in presentation order: the ``first`` templates, then ``any``, then ``last`` (an unknown timing
    counts as ``any``), each group in value order (the sort is stable). The timing is an order of Hermes's own
    (frame the request before the details, ask how success is judged once the rest is known), not a measured
    figure: it changes where a question is shown, never which questions are asked."""

    def rank(item: tuple[float, QuestionTemplate]) -> int:
        timing = item[1].timing if item[1].timing in TEMPLATE_TIMINGS else "any"
        return TEMPLATE_TIMINGS.index(timing)

    return sorted(chosen, key=rank)


def _settled_reason(known: Mapping[str, Assumption | None]) -> str:
    """The end of a decision's reason naming the slots settled by what was learned (empty: none)."""
    held = sorted(slot for slot, a in known.items() if a is not None)
    left = sorted(slot for slot, a in known.items() if a is None)
    parts = [f"; assumed from learned facts: {', '.join(held)}"] if held else []
    parts += [f"; not asked, the user leaves them unanswered: {', '.join(left)}"] if left else []
    return "".join(parts)


def idea_type_of(idea: str, classification: Classification | None, policy: Policy = Policy()) -> str:
    """The idea's type: the model's (``classification``) when there is one, else the keyword rules'
    (:func:`hermes_proto.ideas.classify` at ``policy.pattern_threshold``)."""
    return classification.idea_type if classification is not None else classify(idea, policy.pattern_threshold)
