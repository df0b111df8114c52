"""Read-side contract: NATS request/reply queries answered from the orchestrator's read models.

Request ``hermes.query.thread`` with :class:`ThreadQuery` → :class:`ThreadReply`.
Request ``hermes.query.job`` with :class:`JobQuery` → :class:`JobReply`.
Request ``hermes.query.threads`` with :class:`ThreadListQuery` → :class:`ThreadListReply`.
Request ``hermes.query.queue`` (empty body) → :class:`QueueReply`.
Times are ISO-8601 UTC; latencies ms; tokens are model tokens.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec

from hermes_proto import threads
from hermes_proto.events import Assumption

MAX_SEQUENCE = 2**63 - 1
"""The largest stream sequence a query may name: JetStream counts in uint64 and SQLite stores int64, and no log
Hermes keeps comes near either. A query naming a larger one (or a negative one) does not decode (``bad_request``)."""
StreamSequence = Annotated[int, msgspec.Meta(ge=0, le=MAX_SEQUENCE)]
"""A ``HERMES_EVENTS`` sequence in a query (``min_sequence``): 0 to :data:`MAX_SEQUENCE`."""


class QuestionView(msgspec.Struct, kw_only=True):
    """A question of a thread: ``template_id`` the learner's template it came from, ``slot`` what its answer fills
    (:mod:`hermes_proto.facts`)."""

    question_id: str
    category: str
    text: str
    suggestions: list[str] = []
    answer: str | None = None
    template_id: str = ""
    slot: str = ""


OPEN_JOB_STATUSES = threads.OPEN_JOB_STATUSES
"""The :class:`JobView` statuses of a job that has not ended (it may still be cancelled)."""


class JobView(msgspec.Struct, kw_only=True):
    """``status``: queued, dispatched, running, retrying (an attempt failed; the router may fail over),
    completed, failed, cancelled. ``waiting_reason``: why the router holds a queued job (no_backend, saturated,
    over_budget, cooling_down); ``cost_cents``: recorded cost."""

    job_id: str
    thread_id: str
    kind: str
    status: str
    backend: str | None = None
    model: str | None = None
    selection_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: float | None = None
    first_token_ms: float | None = None
    text: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    waiting_reason: str | None = None
    attempts: int = 0
    cost_cents: float = 0.0
    queued_at: datetime | None = None
    finished_at: datetime | None = None
    step_id: str | None = None
    max_retries: int | None = None
    timeout_s: float | None = None
    deadline: datetime | None = None
    """When the job's timeout cancels it (``queued_at`` + ``timeout_s``), if it has one."""
    memories: list[str] = []
    """The job ids of the earlier turns its prompt was given as memory markers."""
    cancellable: bool = False
    """Set from ``status`` (:func:`hermes_proto.threads.cancellable`), whatever was sent: the job has not ended."""

    def __post_init__(self) -> None:
        self.cancellable = threads.cancellable(self.status)


class StepView(msgspec.Struct, kw_only=True):
    """A workflow step: ``status`` waiting (for its dependencies), queued, dispatched, running, retrying,
    completed, failed, cancelled or skipped (``reason`` says why)."""

    step_id: str
    job_id: str
    status: str
    depends_on: list[str] = []
    reason: str | None = None


class ThreadView(msgspec.Struct, kw_only=True):
    """``status``: a :data:`hermes_proto.threads.ThreadStatus` (drafting, awaiting_answers, refining, completed,
    failed; ``active`` for a chat session)."""

    thread_id: str
    idea: str
    channel: str
    user_id: str
    origin: dict[str, str]
    status: str
    idea_type: str | None = None
    clarity: float | None = None
    draft1: str | None = None
    draft2: str | None = None
    final_draft_number: int | None = None
    completion_reason: str | None = None
    rating: int | None = None
    """The user's 1-5 rating of the final draft, once rated."""
    rating_comment: str | None = None
    project: str = "default"
    private: bool = False
    priority: int = 5
    answer_deadline: datetime | None = None
    created_at: datetime
    updated_at: datetime
    questions: list[QuestionView] = []
    jobs: list[JobView] = []
    kind: str = "idea"
    """``idea`` or ``workflow`` (then ``steps`` lists its steps in submission order)."""
    workflow_deadline: datetime | None = None
    steps: list[StepView] = []
    assumptions: list[Assumption] = []
    """Every learned fact its drafts apply (draft 1's, and those the learner's proposal added, which make a draft
    2), so not asked about; correct one through ``POST /api/learn/feedback``."""
    answerable: bool = False
    """Answers are taken now. This and ``ratable`` / ``open`` are set from ``status`` by
    :mod:`hermes_proto.threads`, whatever was sent, so no reader spells a status."""
    ratable: bool = False
    open: bool = True

    def __post_init__(self) -> None:
        self.answerable = threads.answerable(self.status)
        self.ratable = threads.ratable(self.status)
        self.open = threads.is_open(self.status)


class ThreadQuery(msgspec.Struct, kw_only=True):
    thread_id: str
    min_sequence: StreamSequence = 0
    """Read-your-writes: wait (bounded) until the read model has applied this stream sequence."""


class ThreadReply(msgspec.Struct, kw_only=True):
    found: bool
    thread: ThreadView | None = None


class JobQuery(msgspec.Struct, kw_only=True):
    thread_id: str
    job_id: str


class JobReply(msgspec.Struct, kw_only=True):
    found: bool
    job: JobView | None = None


ORIGIN_KEY_PATTERN = r"^[a-z][a-z0-9_]{0,63}$"


class ThreadListQuery(msgspec.Struct, kw_only=True):
    """The newest ``limit`` threads; with ``origin``, only those whose origin holds every one of its pairs
    (e.g. ``{"telegram_chat_id": "42"}``: one chat's threads). Keys match :data:`ORIGIN_KEY_PATTERN`. With
    ``user_id``, only that user's threads (None: every user's). With ``ids_only``, the reply holds their ids alone
    (``thread_ids``; ``threads`` empty): small enough for 500 threads, e.g. to filter another service's list by
    ownership."""

    limit: int = 50
    origin: dict[Annotated[str, msgspec.Meta(pattern=ORIGIN_KEY_PATTERN)], str] = {}
    user_id: str | None = None
    ids_only: bool = False
    min_sequence: StreamSequence = 0


class ThreadListReply(msgspec.Struct, kw_only=True):
    threads: list[ThreadView]
    thread_ids: list[str] = []


QUERY_THREADS = "hermes.query.threads"


# ---- backends (answered by the backend-router) ---------------------------------------------------------
# Request ``hermes.query.backends`` with :class:`BackendsQuery` → :class:`BackendsReply`.
# Request ``hermes.query.selections`` with :class:`SelectionsQuery` → :class:`SelectionsReply`.
# Request ``hermes.control.backend`` with :class:`SetBackendEnabled` → :class:`BackendsReply` (or
# :class:`ErrorReply`). Request ``hermes.control.compare`` with :class:`CompareRequest` → :class:`CompareReply`
# (or :class:`ErrorReply`).


class ErrorReply(msgspec.Struct, kw_only=True):
    """A request the answering service refused: ``code`` is machine-readable (unknown_backend, over_budget,
    bad_request), ``message`` says why."""

    error: bool = True
    code: str
    message: str


class BackendView(msgspec.Struct, kw_only=True):
    """One backend as the router sees it. ``health``: healthy, degraded (failing, below the threshold),
    unhealthy or unknown (no signal yet);
    ``scores``: the selection score per criteria in [0, 1] from the configured priors and the measured
    success rate, latency and ratings; ``in_flight``: jobs dispatched and not finished; ``spend_today_cents``:
    recorded cost since 00:00 UTC; ``mean_latency_ms``: mean latency of completed calls (ms)."""

    name: str
    type: str
    enabled: bool
    health: str
    local: bool
    models: list[str]
    scores: dict[str, float]
    in_flight: int
    max_concurrent: int | None = None
    rate_limit_per_minute: int | None = None
    requests: int = 0
    failures: int = 0
    success_rate: float = 1.0
    mean_latency_ms: float | None = None
    mean_rating: float | None = None
    spend_today_cents: float = 0.0
    price_in_cents_per_mtok: float = 0.0
    price_out_cents_per_mtok: float = 0.0
    cooling_down_until: datetime | None = None
    unhealthy_reason: str | None = None


class BudgetView(msgspec.Struct, kw_only=True):
    """Spend against budgets (cents); None means no budget is set."""

    day: str
    spent_today_cents: float
    daily_budget_cents: float | None = None
    max_cost_per_job_cents: float | None = None
    min_remote_budget_cents: float | None = None
    projects: dict[str, float] = {}
    project_budgets_cents: dict[str, float] = {}


class BackendsQuery(msgspec.Struct, kw_only=True):
    pass


class BackendsReply(msgspec.Struct, kw_only=True):
    backends: list[BackendView]
    budget: BudgetView
    queued_jobs: int = 0


class SelectionView(msgspec.Struct, kw_only=True):
    """One :class:`hermes_proto.events.BackendSelected` decision, with every candidate and why it lost."""

    job_id: str
    thread_id: str
    attempt: int
    backend: str
    model: str
    strategy: str
    criteria: str
    reason: str
    job_type: str
    estimated_cost_cents: float
    selected_at: datetime
    candidates: list[dict[str, object]] = []
    failover_from: str | None = None


class SelectionsQuery(msgspec.Struct, kw_only=True):
    """Every attempt of ``job_id``, else the newest ``limit`` (1-500) selections; with ``thread_ids``, only those
    of these threads (None: every thread's; empty: none). The router knows no users: the asker names the threads
    a caller may see."""

    job_id: str | None = None
    limit: int = 50
    thread_ids: list[str] | None = None


class SelectionsReply(msgspec.Struct, kw_only=True):
    selections: list[SelectionView]


class SetBackendEnabled(msgspec.Struct, kw_only=True):
    backend: str
    enabled: bool
    reason: str = ""


class CompareRequest(msgspec.Struct, kw_only=True):
    """Run ``prompt`` once on each of ``backends`` (all enabled ones when empty); ``max_tokens`` bounds each
    output (tokens), ``timeout_s`` the whole comparison (seconds). Budgets apply."""

    prompt: str
    backends: list[str] = []
    max_tokens: int = 256
    timeout_s: float = 120.0


class CompareResult(msgspec.Struct, kw_only=True):
    """One backend's answer: ``latency_ms`` request to last byte; ``cost_cents`` from its price table entry;
    ``error_code``/``error`` when it failed or was refused."""

    backend: str
    model: str
    text: str | None = None
    latency_ms: float | None = None
    first_token_ms: float | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_cents: float = 0.0
    error_code: str | None = None
    error: str | None = None


class CompareReply(msgspec.Struct, kw_only=True):
    comparison_id: str
    results: list[CompareResult]


class QueueReply(msgspec.Struct, kw_only=True):
    """The open jobs (queued, dispatched, running or retrying) by status and by priority (1-10, as strings),
    and ``waiting_steps``: workflow steps planned but waiting for their dependencies (not yet queued)."""

    open_jobs: int
    by_status: dict[str, int] = {}
    by_priority: dict[str, int] = {}
    waiting_steps: int = 0


# ---- question templates (answered by the learner) -------------------------------------------------------
# Request ``hermes.query.templates`` with :class:`TemplatesQuery` → :class:`TemplatesReply`.
# Request ``hermes.control.template`` with :class:`SaveTemplate` or :class:`DeactivateTemplate` →
# :class:`TemplatesReply` holding the changed template (or :class:`ErrorReply`: ``bad_request``,
# ``unknown_template``, ``template_exists``).

TEMPLATE_ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
"""One subject token (no dots), so a template's events can be read by subject."""


class TemplateView(msgspec.Struct, kw_only=True):
    """A template and its measured effectiveness (from the threads it was asked in, counted when they end).

    ``times_asked``/``times_answered``: askings and answers; ``answer_rate``: answered / asked (None before
    any asking); ``mean_rating``: mean 1-5 rating of the rated threads it was asked in; ``mean_answer_time_s``:
    mean seconds from the question to its answer (the measured time cost); ``mean_clarity_gain``: mean change
    of the idea's clarity (0..1 scale) when its answer is added to the idea; ``trend``: ``improving``,
    ``stable``, ``declining`` (answer rate of its last askings against the ones before) or ``new`` (too few
    askings to tell); ``expected_improvement``: the improvement estimate the ranking uses now."""

    template_id: str
    category: str
    text: str
    suggestions: list[str] = []
    idea_types: list[str] = []
    triggers: list[str] = []
    prior_improvement: float
    time_cost_s: float
    status: str
    active: bool
    source: str
    variations: dict[str, str] = {}
    """Style (formal, casual, technical) → the question text in that register."""
    timing: str = "any"
    """``first``, ``any`` or ``last``: where its question goes among those asked together (Hermes's own order)."""
    times_asked: int = 0
    times_answered: int = 0
    answer_rate: float | None = None
    rated_threads: int = 0
    mean_rating: float | None = None
    mean_answer_time_s: float | None = None
    mean_clarity_gain: float | None = None
    trend: str = "new"
    expected_improvement: float


class TemplatesQuery(msgspec.Struct, kw_only=True):
    """``include_inactive``: also deactivated templates."""

    include_inactive: bool = False


class TemplatesReply(msgspec.Struct, kw_only=True):
    templates: list[TemplateView]


class SaveTemplate(msgspec.Struct, kw_only=True, tag_field="op", tag="save"):
    """Add a template (``create``: ``template_exists`` if the id is taken) or replace one's definition
    (``create`` false: ``unknown_template`` if it does not exist). Fields as
    :class:`hermes_proto.events.TemplateAdded`; checked by the learner (``bad_request``)."""

    template_id: Annotated[str, msgspec.Meta(pattern=TEMPLATE_ID_PATTERN)]
    create: bool
    category: str
    text: Annotated[str, msgspec.Meta(min_length=5, max_length=500)]
    suggestions: Annotated[
        list[Annotated[str, msgspec.Meta(min_length=1, max_length=60)]], msgspec.Meta(max_length=8)
    ] = []
    idea_types: list[str] = []
    triggers: Annotated[
        list[Annotated[str, msgspec.Meta(min_length=1, max_length=200)]], msgspec.Meta(max_length=10)
    ] = []
    prior_improvement: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)] = 0.5
    time_cost_s: Annotated[float, msgspec.Meta(gt=0.0, le=3600.0)] = 20.0
    status: str = "active"
    variations: dict[
        Literal["formal", "casual", "technical"], Annotated[str, msgspec.Meta(min_length=1, max_length=300)]
    ] = {}
    """Keys: :data:`hermes_proto.events.STYLES`; each text may hold ``{topic}``, like ``text``."""
    timing: Literal["first", "any", "last"] = "any"
    """One of :data:`hermes_proto.events.TEMPLATE_TIMINGS`."""


class DeactivateTemplate(msgspec.Struct, kw_only=True, tag_field="op", tag="deactivate"):
    template_id: Annotated[str, msgspec.Meta(pattern=TEMPLATE_ID_PATTERN)]
    reason: Annotated[str, msgspec.Meta(max_length=500)] = ""


# ---- learned preferences (answered by the learner) -------------------------------------------------------
# Request ``hermes.query.preferences`` with :class:`PreferencesQuery` → :class:`PreferencesReply`.
# Request ``hermes.control.preference`` with :class:`SetPreference`, :class:`CorrectPreference` or
# :class:`ForgetPreference` → :class:`PreferencesReply` holding the changed preference (none after a forget), or
# :class:`ErrorReply` (``bad_request``, ``unknown_preference``).

USER_ID_PATTERN = r"^[A-Za-z0-9_:@.+-]{1,128}$"
PREFERENCE_KEY_PATTERN = r"^[a-z][a-z0-9_]{0,31}$"
PREFERENCE_ID_PATTERN = r"^[0-9a-f]{32}$"
PREFERENCE_SCOPE_PATTERN = r"^(|type:[a-z]{1,32}|project:[A-Za-z0-9_.-]{1,64})$"
"""A fact's scope (:mod:`hermes_proto.facts`): empty (everywhere), ``type:<idea type>`` or ``project:<name>``."""


class PreferenceView(msgspec.Struct, kw_only=True):
    """A learned preference (a fact, :mod:`hermes_proto.facts`): ``category`` depth, style, constraint or fact,
    ``key`` (``depth``, ``style``, a constraint such as budget, or any slot such as ``tech_stack``), ``value``; ``confidence``/``stability`` in [0, 1]; ``observations`` pieces of evidence,
    ``corrections`` explicit corrections among them; ``usage`` drafts 1 it was applied to; ``source`` explicit,
    observed or inferred and ``evidence`` (answer, rating, correction, edit) of the last change; ``votes`` evidence
    weight per value seen; ``expires_at`` not applied after (UTC); ``applied``: confident enough and unexpired, so
    it is applied to the next draft 1 and answers its questions."""

    preference_id: str
    user_id: str
    category: str
    key: str
    value: str
    confidence: float
    stability: float
    observations: int
    corrections: int = 0
    usage: int = 0
    source: str
    evidence: str
    votes: dict[str, float] = {}
    expires_at: datetime | None = None
    updated_at: datetime
    scope: str = ""
    """Where it holds: everywhere (empty), ``type:<idea type>`` or ``project:<name>``."""
    normalized: str = ""
    """The normalised form of ``value`` (the user's own words) that the votes count (``votes`` keys)."""
    question: str = ""
    """The question it was first learned from, if any."""
    applied: bool


class PreferencesQuery(msgspec.Struct, kw_only=True):
    """``user_id``: that user's preferences only (None: every user's); ``min_sequence``: answered once the learner
    applied the log up to it (at most 2 s)."""

    user_id: str | None = None
    min_sequence: StreamSequence = 0


class PreferencesReply(msgspec.Struct, kw_only=True):
    preferences: list[PreferenceView]
    confidence_threshold: float = 0.75
    """The confidence from which a preference is applied (``HERMES_CONFIDENCE_THRESHOLD``)."""


class SetPreference(msgspec.Struct, kw_only=True, tag_field="op", tag="set"):
    """The user states a preference (an edit: its value becomes ``value`` with confidence 0.9, whatever was learned).
    ``category`` one of depth, style, constraint, fact; ``key`` is ``depth``/``style`` for those; ``scope`` empty
    (everywhere), ``type:<idea type>`` or ``project:<name>``."""

    user_id: Annotated[str, msgspec.Meta(pattern=USER_ID_PATTERN)] = "local"
    category: str
    key: Annotated[str, msgspec.Meta(pattern=PREFERENCE_KEY_PATTERN)]
    value: Annotated[str, msgspec.Meta(min_length=1, max_length=120)]
    scope: Annotated[str, msgspec.Meta(pattern=PREFERENCE_SCOPE_PATTERN)] = ""


class CorrectPreference(msgspec.Struct, kw_only=True, tag_field="op", tag="correct"):
    """Feedback: the user corrects (or confirms) a preference to ``value``; weighed against what was learned (see
    ``hermes_learner.preferences.learn``). ``thread_id``: the thread the feedback is about, if any."""

    user_id: Annotated[str, msgspec.Meta(pattern=USER_ID_PATTERN)] = "local"
    category: str
    key: Annotated[str, msgspec.Meta(pattern=PREFERENCE_KEY_PATTERN)]
    value: Annotated[str, msgspec.Meta(min_length=1, max_length=120)]
    thread_id: str | None = None
    scope: Annotated[str, msgspec.Meta(pattern=PREFERENCE_SCOPE_PATTERN)] = ""


class ForgetPreference(msgspec.Struct, kw_only=True, tag_field="op", tag="forget"):
    preference_id: Annotated[str, msgspec.Meta(pattern=PREFERENCE_ID_PATTERN)]
    reason: Annotated[str, msgspec.Meta(max_length=500)] = ""


# ---- learned patterns and optimisations (answered by the learner) ---------------------------------------
# Request ``hermes.query.patterns`` with :class:`PatternsQuery` → :class:`PatternsReply`.
# Request ``hermes.query.optimizations`` with :class:`OptimizationsQuery` → :class:`OptimizationsReply`.


class PatternView(msgspec.Struct, kw_only=True):
    """A learned pattern (see :class:`hermes_proto.events.PatternValidated`): ``kind`` skip_question or
    recurring_answer, triggered by ideas of ``idea_type`` and questions of ``category``; ``validation_count`` threads
    that tested it, ``success_count`` those that confirmed it, ``confidence`` in [0, 1]; ``values`` how often each
    answer was given and ``value`` the most frequent one (recurring_answer only); ``recommended_actions``;
    ``outcome`` of the last thread that changed it (``thread_id``); ``applied``: confident and tested enough now to
    be applied to the next decision."""

    pattern_id: str
    user_id: str
    kind: str
    idea_type: str
    category: str
    validation_count: int
    success_count: int
    confidence: float
    values: dict[str, int] = {}
    value: str | None = None
    recommended_actions: list[str] = []
    outcome: str
    thread_id: str
    updated_at: datetime
    applied: bool


class PatternsQuery(msgspec.Struct, kw_only=True):
    """``user_id``: that user's patterns only (None: every user's); ``applied_only``: only those applied now."""

    user_id: Annotated[str, msgspec.Meta(pattern=USER_ID_PATTERN)] | None = None
    applied_only: bool = False
    min_sequence: StreamSequence = 0


class PatternsReply(msgspec.Struct, kw_only=True):
    patterns: list[PatternView]
    validation_threshold: float = 0.8
    """The confidence from which a pattern is applied (``HERMES_PATTERN_VALIDATION_THRESHOLD``)."""
    min_validations: int = 3
    """The validations a pattern needs before it is applied (``HERMES_PATTERN_MIN_VALIDATIONS``)."""


OPTIMIZATION_KINDS = ("preference", "recurring_answer", "skip_question")


class Optimization(msgspec.Struct, kw_only=True):
    """One open question of a thread that what was learned settles: ``kind`` (:data:`OPTIMIZATION_KINDS`) says by
    what, ``answer`` the answer to send (None for ``skip_question``: it may stay unanswered), ``source_id`` the
    preference or pattern id (the first of ``source_ids`` when several preferences answer together),
    ``confidence`` in [0, 1] (the lowest of them), ``reason`` a sentence for humans."""

    kind: str
    question_id: str
    category: str
    answer: str | None = None
    source_id: str
    source_ids: list[str] = []
    confidence: float
    reason: str


class OptimizationsQuery(msgspec.Struct, kw_only=True):
    """Which open questions of ``thread_id`` the learner can settle. ``min_sequence``: read-your-writes, the learner
    first waits (bounded) until its read model applied that ``HERMES_EVENTS`` sequence."""

    thread_id: str
    min_sequence: StreamSequence = 0


class OptimizationsReply(msgspec.Struct, kw_only=True):
    """``found``: the learner knows the thread's questions; ``learning_enabled`` false: nothing is ever applied
    (``HERMES_LEARNING_ENABLED``); ``reason`` says why the list is empty, when it is."""

    thread_id: str
    found: bool
    learning_enabled: bool = True
    optimizations: list[Optimization] = []
    reason: str = ""
