"""The learner's Prometheus metrics (the projection adds ``hermes_learner_events_applied_total`` and
``hermes_learner_projection_position``; the desks count their requests in :mod:`hermes_learner.desk`)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

QUESTIONS_PROPOSED = Counter("hermes_learner_questions_proposed_total", "Clarifying questions proposed", ["category"])
CLARITY = Histogram(
    "hermes_learner_clarity",
    "Estimated clarity (0..1) of ideas after draft 1",
    buckets=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0),
)
NO_QUESTIONS = Counter(
    "hermes_learner_threads_without_questions_total", "Threads for which the learner proposed no question", ["reason"]
)
IDEAS_CLASSIFIED = Counter("hermes_learner_ideas_classified_total", "Ideas classified after draft 1", ["idea_type"])
DRAFTS_SKIPPED = Counter("hermes_learner_drafts_skipped_total", "Drafts 1 the learner did not decide on", ["reason"])
CLASSIFICATIONS = Counter(
    "hermes_learner_classifications_total",
    "Ideas classified after draft 1: method llm or rules; outcome llm, disabled, invalid_output, "
    "job_failed, timeout, request_failed",
    ["method", "outcome"],
)
PREFERENCES_LEARNED = Counter(
    "hermes_learner_preferences_learned_total",
    "PreferenceLearned events appended; evidence: answer, rating, correction, edit",
    ["evidence"],
)
QUESTIONS_ASSUMED = Counter(
    "hermes_learner_questions_assumed_total",
    "Question categories not asked because learned preferences answer them",
    ["category"],
)
PATTERNS_VALIDATED = Counter(
    "hermes_learner_patterns_validated_total",
    "PatternValidated events appended (one per pattern a closed thread tested or seeded)",
    ["kind"],
)
EFFECTIVENESS_UPDATES = Counter(
    "hermes_learner_template_effectiveness_updates_total",
    "TemplateEffectivenessUpdated events appended; cause: thread_closed, thread_rated",
    ["cause"],
)
TEMPLATE_DRAFTS = Counter(
    "hermes_learner_template_drafts_total",
    "Templates drafted (status draft, source learned) from recurring free-text answers",
    ["category"],
)
PATTERNS_APPLIED = Counter(
    "hermes_learner_patterns_applied_total",
    "Learned patterns applied: a question category skipped or assumed after draft 1, or an "
    "open question settled by POST /api/threads/{id}/optimize",
    ["kind"],
)
THREAD_READS = Counter(
    "hermes_learner_thread_reads_total",
    "Threads a decision read: from memory (the view holds it) or from SQLite",
    ["source"],
)
