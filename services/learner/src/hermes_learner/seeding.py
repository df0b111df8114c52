"""The seeded question templates: written at every learner start-up from the code's
:data:`~hermes_learner.templates.SEED_TEMPLATES`, before the projection applies the log after its position.

A rebuild applies the seeds first and then the whole log, a running learner the log first and the newer seeds at its
next start: both end with the same rows, because a template changed through the log (``edited``) is left alone by
the seeds and the seeds never touch ``active``.
"""

from __future__ import annotations

import json
from typing import Any

from sqlmodel import Session

from hermes_learner.domain import QuestionTemplate
from hermes_learner.tables import QuestionTemplateRow


def seed_templates(session: Session, seeds: tuple[QuestionTemplate, ...]) -> None:
    """Insert or overwrite each seed's row (idempotent) and commit, except a seed changed through the API (``edited``:
    the log's edit wins); rows of other template ids are kept."""
    for t in seeds:
        row = session.get(QuestionTemplateRow, t.template_id)
        if row is not None and row.edited:
            continue
        row = row or QuestionTemplateRow(
            template_id=t.template_id,
            category=t.category,
            text=t.text,
            prior_improvement=0.0,
            time_cost_s=1.0,
            source="seed",
        )
        define(
            row,
            t.category,
            t.text,
            list(t.suggestions),
            list(t.idea_types),
            list(t.triggers),
            t.prior_improvement,
            t.time_cost_s,
            dict(t.variations),
            t.timing,
        )
        session.add(row)
    session.commit()


def define(
    row: Any,
    category: str,
    text: str,
    suggestions: list[str],
    idea_types: list[str],
    triggers: list[str],
    prior_improvement: float,
    time_cost_s: float,
    variations: dict[str, str],
    timing: str,
) -> None:
    """Set what defines a template on ``row`` (a ``question_templates`` row: the ORM's or a RowStore row)."""
    row.category, row.text = category, text
    row.variations_json, row.timing = json.dumps(variations, sort_keys=True), timing
    row.suggestions_json = json.dumps(suggestions)
    row.idea_types_json = json.dumps(idea_types)
    row.triggers_json = json.dumps(triggers)
    row.prior_improvement, row.time_cost_s = prior_improvement, time_cost_s
