"""The seeded clarifying-question templates (upserted into ``question_templates`` at start-up).

Five categories (``hermes_proto.events.QUESTION_CATEGORIES``): intent, constraint, success, context,
scope. ``idea_types`` empty means "any type". ``prior_improvement`` (0..1) is the expected improvement of
the next draft when the question is answered, and ``time_cost_s`` the seconds a user needs to answer it;
both are Hermes's own starting guesses (no external source): short multiple-choice questions cost ~10 s,
open questions 20-30 s. Measured answer rates refine the estimate (see :mod:`hermes_learner.domain`).
A ``template_id`` is stable forever: statistics and question ids are keyed by it.

``variations`` word each question in the three preference styles (formal: polite and complete; casual: short and
friendly; technical: precise terms), asked instead of the text to a user with a usable style preference.
``timing`` places the question among those asked together: intent ones ``first`` (they frame the rest), success
ones ``last`` (how to judge a result is easiest once the rest is said), the others ``any``; a presentation order of
Hermes's own, not a measured figure.
"""

from __future__ import annotations

import re
from dataclasses import replace

from hermes_learner.domain import QuestionTemplate as T


def V(*, formal: str, casual: str, technical: str) -> dict[str, str]:  # noqa: N802 (reads like T in the table)
    """A seed's ``variations``: its text in each preference style."""
    return {"formal": formal, "casual": casual, "technical": technical}


SEED_TEMPLATES: tuple[T, ...] = (
    # ---- intent: what the user actually wants out of it ----------------------------------------
    T(
        "intent-main-result",
        "intent",
        "What result do you want from {topic}?",
        ("A step-by-step plan", "A short overview", "Something ready to use", "Options to choose from"),
        (),
        (r"\b(help|something|stuff|things?|some ?how|maybe|idea)\b",),
        0.7,
        20,
        timing="first",
        variations=V(
            formal="Could you tell me what result you would like to obtain from {topic}?",
            casual="What do you want to get out of {topic}?",
            technical="What deliverable should {topic} produce?",
        ),
    ),
    T(
        "intent-motivation",
        "intent",
        "Why does this matter to you right now: what problem should it solve?",
        ("Save time", "Learn something", "Earn money", "Just for fun"),
        (),
        (r"\b(want|wish|should|need)\b",),
        0.45,
        30,
        timing="first",
        variations=V(
            formal="Could you explain why this matters to you now, and which problem it should solve?",
            casual="Why now? What should it fix for you?",
            technical="What problem does this solve, and what makes it urgent now?",
        ),
    ),
    T(
        "intent-options",
        "intent",
        "Which options are you choosing between?",
        ("Two specific options", "Several options", "I don't know the options yet"),
        ("decision",),
        (r"\b(vs\.?|versus|or|choose|pick|which)\b",),
        0.75,
        20,
        timing="first",
        variations=V(
            formal="Which options are you considering choosing between?",
            casual="What are you picking between?",
            technical="Which alternatives are you evaluating?",
        ),
    ),
    T(
        "intent-code-task",
        "intent",
        "Is this new code, a change to existing code, or a bug to fix?",
        ("New project", "Change existing code", "Fix a bug", "Explain or review code"),
        ("coding",),
        (r"\b(fix|bug|error|refactor|build|implement)\b",),
        0.7,
        10,
        timing="first",
        variations=V(
            formal="Is this new code, a change to existing code, or the correction of a bug?",
            casual="New code, a change, or a bug fix?",
            technical="Greenfield implementation, modification of existing code, or bug fix?",
        ),
    ),
    # ---- constraint: the limits the answer must respect ------------------------------------------
    T(
        "constraint-budget",
        "constraint",
        "What budget do you have for {topic}?",
        ("No money at all", "A small budget", "A moderate budget", "Flexible"),
        ("planning", "decision", "creative", "general"),
        (r"\b(buy|cost|price|cheap|afford|garden|trip|travel|wedding|party|renovat\w*|equipment)\b",),
        0.55,
        15,
        timing="any",
        variations=V(
            formal="Could you tell me what budget you have available for {topic}?",
            casual="How much can you spend on {topic}?",
            technical="What is the budget ceiling for {topic}?",
        ),
    ),
    T(
        "constraint-time",
        "constraint",
        "By when do you need it, and how much time can you spend on it?",
        ("Today", "This week", "This month", "No deadline"),
        (),
        (r"\b(soon|quick(ly)?|fast|schedule|plan\w*|routine)\b",),
        0.55,
        15,
        timing="any",
        variations=V(
            formal="By when do you need it, and how much time are you able to devote to it?",
            casual="When do you need it, and how much time do you have?",
            technical="What is the deadline, and how many hours can you allocate?",
        ),
    ),
    T(
        "constraint-tech-stack",
        "constraint",
        "Which language, framework or platform must it use?",
        ("Python", "JavaScript / TypeScript", "No preference"),
        ("coding",),
        (r"\b(app|website|script|api|bot|program|service)\b",),
        0.8,
        15,
        timing="any",
        variations=V(
            formal="Which language, framework or platform is it required to use?",
            casual="Any language or framework it has to use?",
            technical="Which language, framework, runtime or platform is required?",
        ),
    ),
    T(
        "constraint-must-avoid",
        "constraint",
        "Is there anything it must include, or must avoid?",
        ("Nothing special", "Keep it simple", "No paid tools"),
        (),
        (),
        0.4,
        25,
        timing="any",
        variations=V(
            formal="Is there anything it must include, or anything it must avoid?",
            casual="Anything it has to have, or must skip?",
            technical="What are the hard requirements and exclusions?",
        ),
    ),
    # ---- success: how the user will judge the result --------------------------------------------
    T(
        "success-done-well",
        "success",
        "How will you know {topic} turned out well?",
        ("It works end to end", "Someone else approves it", "I learned the skill", "It stayed within budget"),
        (),
        (),
        0.6,
        25,
        timing="last",
        variations=V(
            formal="How will you judge whether {topic} has turned out well?",
            casual="How will you know {topic} went well?",
            technical="What are the acceptance criteria for {topic}?",
        ),
    ),
    T(
        "success-target",
        "success",
        "Is there a number you want to reach (words, users, kilograms, hours...)?",
        ("Yes, a specific number", "Roughly", "No target"),
        ("planning", "learning", "coding", "writing", "research"),
        (r"\b(grow|increase|improve|reduce|lose|gain|faster|more|better)\b",),
        0.5,
        20,
        timing="last",
        variations=V(
            formal="Is there a particular number you would like to reach (words, users, kilograms, hours...)?",
            casual="Got a number in mind (words, users, kilos, hours...)?",
            technical="What quantitative target applies (words, users, kilograms, hours...)?",
        ),
    ),
    T(
        "success-format",
        "success",
        "What form should the result take?",
        ("Bullet list", "Short essay", "Table", "Email or message"),
        ("writing", "research", "learning", "general"),
        (r"\b(summar\w*|explain|overview|report)\b",),
        0.55,
        10,
        timing="last",
        variations=V(
            formal="In what form would you like to receive the result?",
            casual="What should the result look like?",
            technical="What output format is required?",
        ),
    ),
    # ---- context: who and what surrounds the idea -----------------------------------------------
    T(
        "context-audience",
        "context",
        "Who is it for?",
        ("Just me", "My team or colleagues", "Customers or the public", "Children"),
        ("writing", "creative", "coding", "planning", "general"),
        (r"\b(write|post|email|speech|presentation|story|website|app|newsletter)\b",),
        0.65,
        10,
        timing="any",
        variations=V(
            formal="Could you tell me who it is intended for?",
            casual="Who's it for?",
            technical="Who is the target audience?",
        ),
    ),
    T(
        "context-experience",
        "context",
        "How much do you already know about this?",
        ("Complete beginner", "Some experience", "Experienced"),
        ("learning", "coding", "research", "planning"),
        (r"\b(learn\w*|start\w*|beginner|how to|teach)\b",),
        0.6,
        10,
        timing="any",
        variations=V(
            formal="How much do you already know about this subject?",
            casual="How much do you know about this already?",
            technical="What is your current level of expertise in this area?",
        ),
    ),
    T(
        "context-situation",
        "context",
        "What is your starting point for {topic}?",
        ("Starting from scratch", "Partly done", "Redoing something that exists"),
        (),
        (),
        0.5,
        30,
        timing="any",
        variations=V(
            formal="Could you describe your starting point for {topic}?",
            casual="Where are you starting from with {topic}?",
            technical="What is the current state of {topic}?",
        ),
    ),
    T(
        "context-place",
        "context",
        "Where will this happen (place, climate, space available)?",
        ("Indoors", "Outdoors", "A small space", "It varies"),
        ("planning", "creative"),
        (r"\b(garden|balcony|trip|travel|move|event|house|home|room|kitchen)\b",),
        0.55,
        15,
        timing="any",
        variations=V(
            formal="Where will this take place (location, climate, space available)?",
            casual="Where's this happening (place, weather, space)?",
            technical="What are the site conditions (location, climate, available space)?",
        ),
    ),
    # ---- scope: how big and how deep -----------------------------------------------------------
    T(
        "scope-size",
        "scope",
        "How big should this be: a quick first version or a complete solution?",
        ("Quick first version", "Something in between", "Complete and detailed"),
        (),
        (r"\b(app|system|business|platform|everything|complete|full|whole)\b",),
        0.55,
        10,
        timing="any",
        variations=V(
            formal="How large should this be: a quick first version or a complete solution?",
            casual="Quick first version or the full thing?",
            technical="What scope: a minimal first version or a complete solution?",
        ),
    ),
    T(
        "scope-focus",
        "scope",
        "Which part of {topic} matters most to start with?",
        (),
        (),
        (),
        0.45,
        20,
        timing="any",
        variations=V(
            formal="Which part of {topic} would you like to address first?",
            casual="What part of {topic} matters most to start?",
            technical="Which component of {topic} has the highest priority?",
        ),
    ),
    T(
        "scope-length",
        "scope",
        "How long should it be?",
        ("A paragraph", "About one page", "Several pages"),
        ("writing", "creative"),
        (r"\b(write|essay|article|post|story|poem|letter|speech)\b",),
        0.6,
        10,
        timing="any",
        variations=V(
            formal="What length would you like it to be?",
            casual="How long do you want it?",
            technical="What is the target length (words or pages)?",
        ),
    ),
    T(
        "scope-depth",
        "scope",
        "How deep should it go: an overview or an in-depth analysis?",
        ("A quick overview", "Moderate detail", "In depth"),
        ("research", "learning", "decision"),
        (r"\b(research|compare|analy[sz]\w*|understand)\b",),
        0.55,
        10,
        timing="any",
        variations=V(
            formal="Would you prefer an overview or an in-depth analysis?",
            casual="Quick overview or a deep dive?",
            technical="What level of depth: a summary or a detailed analysis?",
        ),
    ),
)


SEED_SLOTS: dict[str, str] = {
    "intent-main-result": "result",
    "intent-motivation": "motivation",
    "intent-options": "options",
    "intent-code-task": "code_task",
    "constraint-budget": "budget",
    "constraint-time": "timing",
    "constraint-tech-stack": "tech_stack",
    "constraint-must-avoid": "must_avoid",
    "success-done-well": "success",
    "success-target": "target",
    "success-format": "format",
    "context-audience": "audience",
    "context-experience": "experience",
    "context-situation": "situation",
    "context-place": "location",
    "scope-size": "depth",
    "scope-focus": "focus",
    "scope-length": "length",
    "scope-depth": "depth",
}
"""The slot each seed question fills (:mod:`hermes_proto.facts`): what its answer says about the user. Two
questions that ask the same thing share a slot (``scope-size`` and ``scope-depth`` both ask the depth)."""
_NOT_SLOT = re.compile(r"[^a-z0-9]+")


SEED_TEMPLATES = tuple(replace(t, slot=SEED_SLOTS[t.template_id]) for t in SEED_TEMPLATES)


def slot_for(template_id: str) -> str:
    """The slot a template fills: a seed's from :data:`SEED_SLOTS`; any other template (added by a user or drafted by
    the learner) fills its own, named after its id (lowercase letters, digits and ``_``, at most 32 characters,
    starting with a letter, as a preference key must)."""
    if template_id in SEED_SLOTS:
        return SEED_SLOTS[template_id]
    name = _NOT_SLOT.sub("_", template_id.lower()).strip("_")
    if not name[:1].isalpha():
        name = "q_" + name
    return name[:32].rstrip("_") or "q"
