"""The learner's runtime policies, from its settings (:mod:`hermes_learner.config`): what its decisions are allowed to
use and from what confidence. Plain values, no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from hermes_learner import domain, patterns


@dataclass(frozen=True)
class PreferencePolicy:
    """``enabled``: learn and use preferences at all (``HERMES_LEARNING_ENABLED``); ``threshold``: confidence from
    which one is used (``HERMES_CONFIDENCE_THRESHOLD``); ``ttl``: how long evidence keeps one valid."""

    enabled: bool = True
    threshold: float = 0.75
    ttl: timedelta = timedelta(days=180)


@dataclass(frozen=True)
class PatternPolicy:
    """When a learned pattern is applied (learning itself follows :attr:`PreferencePolicy.enabled`): from
    ``threshold`` confidence (``HERMES_PATTERN_VALIDATION_THRESHOLD``) after at least ``min_validations`` validations
    (``HERMES_PATTERN_MIN_VALIDATIONS``)."""

    threshold: float = 0.8
    min_validations: int = 3

    def applies(self, pattern: patterns.Pattern) -> bool:
        return pattern.usable(self.threshold, self.min_validations)

    def usable(self, held: list[patterns.Pattern]) -> list[patterns.Pattern]:
        """The patterns of ``held`` applied now, in the order given."""
        return [p for p in held if self.applies(p)]


@dataclass(frozen=True)
class ClassificationPolicy:
    """``enable_llm``: classify ideas with a model call (``HERMES_CLASSIFICATION_ENABLE_LLM``) instead of the
    pattern rules, which still decide after ``timeout_s`` seconds without an answer
    (``HERMES_CLASSIFICATION_TIMEOUT_SECONDS``) or when the call fails or its answer does not parse."""

    enable_llm: bool = False
    timeout_s: float = 20.0


@dataclass(frozen=True)
class Policies:
    """Everything the learner's decisions are configured with: the question ranking (``questions``), the
    service-wide ceiling of questions per thread (``max_questions``; a thread's own may lower it), preferences,
    patterns and classification."""

    questions: domain.Policy = field(default_factory=domain.Policy)
    max_questions: int = 5
    prefs: PreferencePolicy = field(default_factory=PreferencePolicy)
    patterns: PatternPolicy = field(default_factory=PatternPolicy)
    classification: ClassificationPolicy = field(default_factory=ClassificationPolicy)
