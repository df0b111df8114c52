"""Events of the Hermes log (stream ``HERMES_EVENTS``, subjects ``hermes.evt.<aggregate>.<id>.<type>``).

Thread events carry the thread id as ``aggregate_id``; jobs live inside their
thread, so one thread's whole story replays from ``hermes.evt.thread.<id>.>``.
Token counts are model tokens; latencies are milliseconds.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, ClassVar

import msgspec

from hermes_proto.base import ChatMessage, Event
from hermes_proto.ids import derived_id
from hermes_proto.tools import ToolCall, ToolSpec

QUESTION_CATEGORIES = ("intent", "constraint", "success", "context", "scope")
JOB_KINDS = ("draft1", "draft2", "classify")
"""``classify``: the learner's classification of an idea after draft 1 (``RequestClassification``); it presents
no draft and never changes its thread's status."""
JOB_TYPES = ("code", "analysis", "content", "research", "reasoning", "general")


class Question(msgspec.Struct, frozen=True, kw_only=True):
    """A clarifying question: ``category`` is one of :data:`QUESTION_CATEGORIES`."""

    question_id: str
    template_id: str
    category: str
    text: str
    suggestions: list[str] = []
    expected_value: float = 0.0
    slot: str = ""
    """What its answer fills (:mod:`hermes_proto.facts`): ``budget``, ``audience``, ``tech_stack``... (empty in
    events from before slots: the learner then takes its template's)."""


class Answer(msgspec.Struct, frozen=True, kw_only=True):
    """``text`` answers ``question_id``. ``assumed``: Hermes supplied it from what it learned (``POST
    /api/threads/{id}/optimize``), not the user, so the learner never takes it as evidence about the user."""

    question_id: str
    text: str
    assumed: bool = False


PREFERENCE_CATEGORIES = ("depth", "style", "constraint", "fact")
"""What the learner learns about a user: ``depth`` (key ``depth``: overview, detailed, comprehensive), ``style``
(key ``style``: formal, casual, technical), recurring ``constraint`` s (keys budget, location, deadline,
audience, language) and any other ``fact`` (key: the slot of the question it answers, :mod:`hermes_proto.facts`);
a constraint's or fact's value is the user's own words."""
PREFERENCE_SOURCES = ("explicit", "observed", "inferred")
"""Where a preference's evidence came from: the user said so (a correction or an edit), an answer to a question
showed it, or a rating of a draft that applied it."""


ASSUMPTION_SOURCES = ("preference", "pattern")


class Assumption(msgspec.Struct, frozen=True, kw_only=True):
    """What Hermes learned, used in place of asking; ``confidence`` in [0, 1] when it was used. ``source``
    (one of :data:`ASSUMPTION_SOURCES`): a learned ``preference`` (``preference_id``, see
    :class:`PreferenceLearned`; ``category``/``key``/``value`` as there) or a ``recurring_answer`` learned
    ``pattern`` (``pattern_id``, see :class:`PatternValidated`; ``category`` and ``key`` are the question category,
    ``value`` the answer assumed)."""

    preference_id: str | None = None
    category: str
    key: str
    value: str
    confidence: float
    source: str = "preference"
    pattern_id: str | None = None
    scope: str = ""
    """Where the fact holds: everywhere (empty), ``type:<idea type>`` or ``project:<name>``."""


class BackendCandidate(msgspec.Struct, frozen=True, kw_only=True):
    """A backend the router considered: ``score`` in [0, 1]; ``rejected`` says why it lost, or None."""

    backend: str
    model: str
    score: float
    rejected: str | None = None
    estimated_cost_cents: float = 0.0


class ThreadOpened(Event, frozen=True, kw_only=True):
    """A user submitted an idea. ``channel``: web, cli, api, telegram, external.
    ``origin`` holds reply addresses (e.g. ``{"telegram_chat_id": "42"}``); ``callback_url`` and
    ``source_app`` are an external producer's, copied from :class:`~hermes_proto.commands.SubmitIdea` (the
    notifier POSTs the result to ``callback_url`` when the thread completes or fails)."""

    idea: str
    channel: str = "api"
    user_id: str = "local"
    origin: dict[str, str] = {}
    max_questions: int = 5
    answer_timeout_s: float = 600.0
    project: str = "default"
    private: bool = False
    priority: int = 5
    kind: str = "idea"
    """``idea`` (draft 1, questions, draft 2) or ``workflow`` (the steps of a :class:`WorkflowPlanned`)."""
    callback_url: str | None = None
    source_app: str | None = None
    assumptions: list[Assumption] = []
    """The learned facts of ``user_id`` applied to the draft-1 prompt (per slot the most specific of the idea's
    project, keyword type and everywhere that is confident enough and unexpired, :mod:`hermes_proto.facts`; learning
    enabled); empty otherwise."""


class WorkflowStep(msgspec.Struct, frozen=True, kw_only=True):
    """One step of a workflow: a model call on ``prompt`` that starts only when every step named in
    ``depends_on`` completed; their results are given to it as context. ``step_id`` matches
    ``[A-Za-z0-9_-]{1,64}``. ``priority`` 1-10, ``max_retries`` (attempts after the first), ``timeout_s``
    (seconds from queued to result) and ``max_tokens`` default to the workflow's or the service's."""

    step_id: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
    prompt: Annotated[str, msgspec.Meta(min_length=1)]
    depends_on: list[str] = []
    priority: Annotated[int, msgspec.Meta(ge=1, le=10)] | None = None
    max_retries: Annotated[int, msgspec.Meta(ge=0, le=20)] | None = None
    timeout_s: Annotated[float, msgspec.Meta(gt=0)] | None = None
    max_tokens: Annotated[int, msgspec.Meta(ge=1, le=32768)] | None = None


class WorkflowError(ValueError):
    """A workflow's steps do not form a DAG: ``code`` is ``duplicate_step``, ``unknown_dependency``,
    ``dependency_cycle`` or ``no_steps``."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


def step_order(steps: list[WorkflowStep]) -> list[str]:
    """The step ids in a dependency order (Kahn's algorithm; ties keep submission order). Raises
    :class:`WorkflowError` when ids repeat, a dependency names no step, or the dependencies form a cycle
    (the detail names the steps on it)."""
    if not steps:
        raise WorkflowError("no_steps", "a workflow needs at least one step")
    ids = [s.step_id for s in steps]
    seen: set[str] = set()
    for step_id in ids:
        if step_id in seen:
            raise WorkflowError("duplicate_step", f"step id {step_id!r} appears twice")
        seen.add(step_id)
    for step in steps:
        for dep in step.depends_on:
            if dep not in seen:
                raise WorkflowError("unknown_dependency", f"step {step.step_id!r} depends on unknown step {dep!r}")
    waiting = {s.step_id: set(s.depends_on) for s in steps}
    order: list[str] = []
    while True:
        ready = [i for i in ids if i in waiting and not waiting[i]]
        if not ready:
            break
        for step_id in ready:
            del waiting[step_id]
            order.append(step_id)
        for deps in waiting.values():
            deps.difference_update(ready)
    if waiting:
        raise WorkflowError("dependency_cycle", "steps in or behind a cycle: " + ", ".join(sorted(waiting)))
    return order


class WorkflowPlanned(Event, frozen=True, kw_only=True):
    """A workflow thread's steps (a DAG, already checked by :func:`step_order`); ``timeout_s`` bounds the whole
    workflow (seconds from opening). Each step becomes a job (id ``derived_id(thread_id, "step", step_id)``)
    queued when its dependencies completed."""

    title: str = ""
    steps: list[WorkflowStep]
    timeout_s: float | None = None


class JobQueued(Event, frozen=True, kw_only=True):
    """A model call is wanted. ``kind``: draft1, draft2, step, classify, compare or chat; ``max_tokens`` bounds
    the output (tokens); ``priority`` 1 (lowest) to 10 dispatches first when backends are saturated.

    Routing needs (the backend-router reads them): ``job_type`` one of :data:`JOB_TYPES` (None: the router
    analyses the messages); ``private`` keeps the job on local backends; ``project`` is the budget scope;
    ``backend``/``model`` ask for one backend or model (None: the router chooses); ``requires`` lists
    capabilities the backend must declare (e.g. ``vision``); ``criteria`` overrides the default selection
    criteria (quality_first, speed_first, cost_first)."""

    job_id: str
    kind: str
    messages: list[ChatMessage]
    max_tokens: int = 256
    temperature: float = 0.7
    priority: int = 5
    job_type: str | None = None
    private: bool = False
    project: str = "default"
    backend: str | None = None
    model: str | None = None
    requires: list[str] = []
    criteria: str | None = None
    max_retries: int | None = None
    """Attempts after the first, with exponential backoff and jitter (None: the router's default)."""
    timeout_s: float | None = None
    """Seconds from queued to result; past it the orchestrator cancels the job (reason ``timeout``)."""
    step_id: str | None = None
    depends_on: list[str] = []
    """Job ids this job waited for (workflow steps); it is queued only once they all completed."""
    memories: list[str] = []
    """The memories its prompt was given: the job ids of the earlier turns injected as memory markers."""
    tools: list[ToolSpec] = []
    """Kind ``agent_turn``: the tools the model may call (passed to the provider unchanged)."""
    tool_choice: str | None = None
    """With ``tools``: ``auto`` (None: the same), ``required`` (the model must call a tool) or a tool's name."""


class JobCancelled(Event, frozen=True, kw_only=True):
    """``job_id`` stops: no backend is chosen for it any more and a running model call is stopped at its edge.
    ``reason``: ``user`` (the cancel API), ``timeout`` (its ``timeout_s`` elapsed), ``workflow_timeout``."""

    job_id: str
    reason: str
    message: str = ""


class JobSkipped(Event, frozen=True, kw_only=True):
    """A workflow step never runs because a step it depends on failed, was cancelled or was skipped;
    ``reason`` names that step and what happened to it."""

    job_id: str
    step_id: str
    reason: str


class BackendSelected(Event, frozen=True, kw_only=True):
    """The router chose ``backend``/``model`` for attempt ``attempt`` of ``job_id``; ``candidates`` lists every
    backend considered with its score and why it lost. ``strategy`` says what decided among the eligible:
    score, requested, job_type_route, round_robin, least_loaded, weighted or compare. The prices (cents per
    million tokens) are those in force at selection: :class:`CostRecorded` multiplies the measured tokens by
    them, so a replay computes the same cost whatever the price table says later.
    ``failover_from`` names the backend of the failed previous attempt."""

    job_id: str
    backend: str
    model: str
    reason: str
    criteria: str = "quality_first"
    candidates: list[BackendCandidate] = []
    attempt: int = 1
    strategy: str = "score"
    job_type: str = "general"
    project: str = "default"
    private: bool = False
    estimated_cost_cents: float = 0.0
    price_in_cents_per_mtok: float = 0.0
    price_out_cents_per_mtok: float = 0.0
    failover_from: str | None = None


class ExecutionStarted(Event, frozen=True, kw_only=True):
    job_id: str
    backend: str
    model: str
    attempt: int = 1


class ExecutionCompleted(Event, frozen=True, kw_only=True):
    """The edge's result: generated ``text``, tokens used, ``latency_ms`` (request to last byte),
    ``first_token_ms`` (request to first streamed token, when streamed)."""

    job_id: str
    backend: str
    model: str
    text: str
    prompt_tokens: int
    completion_tokens: int
    latency_ms: float
    first_token_ms: float | None = None
    finish_reason: str | None = None
    tool_calls: list[ToolCall] = []
    """The tool calls the model asked for (requests that offered ``tools``), as the provider returned them."""


class ExecutionFailed(Event, frozen=True, kw_only=True):
    """The edge could not get a result. ``retryable`` is False for errors retrying cannot fix (e.g. 401)."""

    job_id: str
    backend: str
    model: str
    error_code: str
    message: str
    retryable: bool = True
    latency_ms: float = 0.0
    retry_after_s: float | None = None
    """The provider's ``Retry-After`` on a 429 (seconds): the router cools the backend down that long."""


class JobDeferred(Event, frozen=True, kw_only=True):
    """The router cannot dispatch ``job_id`` yet; it waits. ``reason``: no_backend (none healthy and
    enabled), saturated (concurrency or rate limit), over_budget, cooling_down."""

    job_id: str
    reason: str
    detail: str = ""


class CostRecorded(Event, frozen=True, kw_only=True):
    """What a finished execution cost: ``cost_cents`` = (prompt_tokens × price in + completion_tokens ×
    price out) / 1,000,000, with the prices (cents per million tokens) of its :class:`BackendSelected`."""

    job_id: str
    backend: str
    model: str
    project: str = "default"
    prompt_tokens: int
    completion_tokens: int
    cost_cents: float


class ExecutionAbandoned(Event, frozen=True, kw_only=True):
    """The router gave up on ``job_id`` after ``attempts`` executions: the last failure was not retryable,
    failover attempts ran out, or no backend became eligible in time. ``error_code`` as in
    :class:`ExecutionFailed`, plus no_backend, no_capable_backend and over_budget."""

    job_id: str
    error_code: str
    message: str
    attempts: int = 0


class DraftPresented(Event, frozen=True, kw_only=True):
    """Draft ``draft_number`` (1 or 2) is ready for the user."""

    job_id: str
    draft_number: int
    text: str
    backend: str
    model: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: float = 0.0


class QuestionsProposed(Event, frozen=True, kw_only=True):
    """The learner's choice of clarifying questions for a thread after draft 1.

    ``idea_type`` is the classified type; ``clarity`` in [0, 1] is the estimated clarity of the idea."""

    questions: list[Question]
    idea_type: str
    clarity: float
    reason: str = ""
    assumptions: list[Assumption] = []
    """Every learned fact the thread applies (for the idea type decided here), whose questions are not asked: the
    orchestrator writes a draft 2 with those draft 1 lacked even when nobody answers; shown to the user, who can
    correct one through ``POST /api/learn/feedback``."""
    skipped_categories: list[str] = []
    """Question categories not asked because a ``skip_question`` pattern of the user says they are left
    unanswered for ideas of ``idea_type`` (its id: :func:`pattern_id`)."""


class AnswersRecorded(Event, frozen=True, kw_only=True):
    answers: list[Answer]


class AnswerCollected(Event, frozen=True, kw_only=True):
    """A channel that takes answers one question at a time (Telegram: a button press or a reply to the
    question's message) noted the user's answer to ``question_id`` (a later one for the same question replaces
    it). The notifier sends the collected answers to the orchestrator in one ``AnswerQuestions`` once every
    question has one, or when the user says they are done; the orchestrator does not read this event."""

    question_id: str
    text: str
    channel: str


class ThreadCompleted(Event, frozen=True, kw_only=True):
    """The thread is finished. ``reason``: answered, assumed (a draft 2 on learned facts, nobody answered),
    answer_timeout, no_questions, draft2_failed, draft2_cancelled, workflow_completed (``final_draft_number`` 0: a workflow has step results, no drafts)."""

    final_draft_number: int
    reason: str


class ThreadRated(Event, frozen=True, kw_only=True):
    """The user rated the thread's final draft (``draft_number``): ``rating`` 1 (useless) to 5 (just right),
    the design brief's 1-5 scale. A later rating of the same thread replaces the earlier one."""

    rating: Annotated[int, msgspec.Meta(ge=1, le=5)]
    draft_number: int
    comment: str = ""


class JobFailed(Event, frozen=True, kw_only=True):
    """``job_id`` ended without a result: ``error_code`` as in :class:`ExecutionAbandoned`, or ``cancelled`` /
    ``timeout`` after a :class:`JobCancelled`."""

    job_id: str
    error_code: str
    message: str


class ThreadFailed(Event, frozen=True, kw_only=True):
    error_code: str
    message: str


class NotificationSent(Event, frozen=True, kw_only=True):
    """The notifier delivered a message about ``cause_event_id`` on ``channel`` (e.g. telegram) to
    ``recipient`` (a chat id); ``kind``: thread_completed, job_failed, thread_failed, ..."""

    cause_event_id: str
    kind: str
    channel: str
    recipient: str
    external_id: str | None = None


class NotificationFailed(Event, frozen=True, kw_only=True):
    """Sending a notification failed after retries; ``message`` is the provider's error."""

    cause_event_id: str
    kind: str
    channel: str
    recipient: str
    message: str


class BackendEvent(Event, frozen=True, kw_only=True):
    """Base of events about one backend; ``aggregate_id`` is the backend name."""

    aggregate_type: ClassVar[str] = "backend"


class BackendMarkedUnhealthy(BackendEvent, frozen=True, kw_only=True):
    """``consecutive_failures`` health signals in a row failed (``HERMES_UNHEALTHY_THRESHOLD``): the router
    skips the backend until :class:`BackendRecovered`. ``reason``: the last failure."""

    consecutive_failures: int
    reason: str


class BackendRecovered(BackendEvent, frozen=True, kw_only=True):
    """A probe or heartbeat of an unhealthy backend succeeded: it is eligible again."""

    detail: str = ""


class BackendEnabled(BackendEvent, frozen=True, kw_only=True):
    """An operator enabled the backend at runtime (overrides ``BACKEND_<NAME>_ENABLED``)."""

    by: str = "api"


class BackendDisabled(BackendEvent, frozen=True, kw_only=True):
    """An operator disabled the backend at runtime: no new job is sent to it."""

    by: str = "api"
    reason: str = ""


class BudgetThresholdReached(Event, frozen=True, kw_only=True):
    """Spend in ``period`` reached ``threshold`` (fraction) of a budget. ``scope``: daily or project
    (``name`` is the project); ``aggregate_id`` is ``<scope>-<name>-<period>``, so each budget alerts once per
    period. Amounts in cents."""

    aggregate_type: ClassVar[str] = "budget"

    scope: str
    name: str
    period: str
    spent_cents: float
    budget_cents: float
    threshold: float


class QueueFull(Event, frozen=True, kw_only=True):
    """The gateway refused a submission: ``queued`` open jobs reached ``limit`` (``HERMES_MAX_QUEUED_JOBS``).
    ``aggregate_id`` is ``queue``; one event per minute at most (its id is derived from the minute), the
    notifier applies the alert cooldown. ``retry_after_s`` is what the refused caller was told (seconds)."""

    aggregate_type: ClassVar[str] = "system"

    queued: int
    limit: int
    retry_after_s: float


TEMPLATE_STATUSES = ("active", "draft")
"""``active`` templates may be asked; ``draft`` ones wait for a person to validate them (set them active)."""
STYLES = ("formal", "casual", "technical")
"""The values of a ``style`` preference (:data:`PREFERENCE_CATEGORIES`): the registers a template's ``variations``
may be written in."""
TEMPLATE_TIMINGS = ("first", "any", "last")
"""Where a template's question goes among the questions asked together: a presentation order of Hermes's own (what
is asked first frames the rest, e.g. the intent first and the success criteria last), not a measured figure."""


class TemplateEvent(Event, frozen=True, kw_only=True):
    """Base of events about one clarifying-question template; ``aggregate_id`` is the ``template_id``."""

    aggregate_type: ClassVar[str] = "template"


class TemplateDefinition(TemplateEvent, frozen=True, kw_only=True):
    """Base of the events that define a template. ``category`` is one of :data:`QUESTION_CATEGORIES`; ``text``
    may hold a ``{topic}`` slot; ``suggestions`` are short answers offered as buttons; ``idea_types`` the idea
    types it applies to (empty: all); ``triggers`` case-insensitive regular expressions that make it more
    relevant when they match the idea; ``prior_improvement`` in [0, 1] the expected improvement of the next
    draft when answered (before any measurement); ``time_cost_s`` the seconds a user needs to answer it;
    ``status`` one of :data:`TEMPLATE_STATUSES`; ``variations`` style (one of :data:`STYLES`) → the question text in
    that register (may hold ``{topic}`` too), asked instead of ``text`` of a user with a usable style preference;
    ``timing`` one of :data:`TEMPLATE_TIMINGS`. Events written before the last two existed decode with the defaults
    (no variations, ``any``)."""

    category: str
    text: str
    suggestions: list[str] = []
    idea_types: list[str] = []
    triggers: list[str] = []
    prior_improvement: float = 0.5
    time_cost_s: float = 20.0
    status: str = "active"
    variations: dict[str, str] = {}
    timing: str = "any"


TEMPLATE_SOURCES = ("seed", "user", "learned")
"""Where a template came from: Hermes's code, a person (the API), or the learner's drafting from recurring free-text
answers (``hermes_learner.drafting``; added with status ``draft``)."""


class TemplateAdded(TemplateDefinition, frozen=True, kw_only=True):
    """A template was added: through the API (``source`` ``user``) or drafted by the learner (``source``
    ``learned``, ``status`` ``draft``) from the free-text answers of the threads ``learned_from`` that share the
    normalized ``phrase``."""

    source: str = "user"
    phrase: str = ""
    learned_from: list[str] = []


class TemplateEdited(TemplateDefinition, frozen=True, kw_only=True):
    """A template's definition was replaced (a seeded template edited this way is no longer overwritten by the
    seeds at start-up). Its measured statistics are kept."""


class TemplateDeactivated(TemplateEvent, frozen=True, kw_only=True):
    """A template is no longer asked (its statistics are kept, and an edit setting it active brings it back)."""

    reason: str = ""


EFFECTIVENESS_CAUSES = ("thread_closed", "thread_rated")


class TemplateEffectivenessUpdated(TemplateEvent, frozen=True, kw_only=True):
    """The learner's whole measurement of one template after the thread ``thread_id`` closed or was rated (``cause``,
    one of :data:`EFFECTIVENESS_CAUSES`; the event's cause is that ``ThreadCompleted``/``ThreadFailed``/
    ``ThreadRated``): the numbers the question ranking uses from then on, as in
    :class:`hermes_proto.queries.TemplateView`. ``times_asked``/``times_answered`` askings and answers over closed
    threads; ``answer_rate`` answered / asked; ``rated_threads`` and ``mean_rating`` (1-5) of the threads it was asked
    in; ``mean_answer_time_s`` seconds to answer; ``mean_clarity_gain`` clarity change (0..1 scale) its answers
    bring; ``trend`` ``improving``/``stable``/``declining``/``new``; ``expected_improvement`` in [0, 1] the estimate
    the ranking uses. Means are None before any measurement. A record for people and other services: the learner's
    own statistics stay a projection of the thread events."""

    cause: str
    thread_id: str
    times_asked: int
    times_answered: int
    answer_rate: float | None = None
    rated_threads: int = 0
    mean_rating: float | None = None
    mean_answer_time_s: float | None = None
    mean_clarity_gain: float | None = None
    trend: str = "new"
    expected_improvement: float


TEMPLATE_EVENTS: tuple[type[Event], ...] = (
    TemplateAdded,
    TemplateEdited,
    TemplateDeactivated,
    TemplateEffectivenessUpdated,
)

PREFERENCE_EVIDENCE = ("answer", "rating", "correction", "edit", "comment", "choice")
"""What changed a preference: an answer to a question (or its absence: the value ``(unanswered)``), a rating of a
thread that applied it, a correction (``POST /api/learn/feedback``), an edit (``PATCH
/api/learn/preferences/{id}``), a rating's comment ("too long", "too formal"), the user's choice between two drafts
(a rating of draft 1 and draft 2 that differ)."""


class PreferenceEvent(Event, frozen=True, kw_only=True):
    """Base of events about one learned preference of one user. ``aggregate_id`` is the ``preference_id``,
    ``derived_id("preference", user_id, category, key[, scope])`` (:func:`preference_id`)."""

    aggregate_type: ClassVar[str] = "preference"

    user_id: str
    category: str
    key: str
    scope: str = ""
    """Where it holds (:mod:`hermes_proto.facts`): everywhere (empty), ``type:<idea type>`` or ``project:<name>``."""


class PreferenceLearned(PreferenceEvent, frozen=True, kw_only=True):
    """The learner's whole belief about one preference after new ``evidence`` (one of
    :data:`PREFERENCE_EVIDENCE`, from ``source`` in :data:`PREFERENCE_SOURCES`; ``thread_id`` the thread it came
    from, if any). ``votes``: evidence weight per value seen; ``value`` the best-supported one; ``confidence``
    and ``stability`` in [0, 1] (see ``hermes_learner.preferences``); ``observations`` pieces of evidence,
    ``corrections`` the explicit corrections among them; ``expires_at``: not applied after this time (UTC).
    Carrying the result, not only the evidence, lets every service project it without the learner's rules."""

    value: str
    votes: dict[str, float]
    doubt: float = 0.0
    """Evidence weight against every value (low ratings of drafts that applied it)."""
    confidence: float
    stability: float
    observations: int
    corrections: int = 0
    source: str
    evidence: str
    thread_id: str | None = None
    expires_at: datetime | None = None
    wordings: dict[str, str] = {}
    """Value → the user's latest words for it (``value`` is the normalised form votes are counted on); a value
    missing here is its own wording."""
    question: str = ""
    """The question whose answer this slot was first learned from (its text as asked), if any."""

    def wording(self) -> str:
        """What a prompt shows for ``value``: the user's words for it."""
        return self.wordings.get(self.value, self.value)


class PreferenceForgotten(PreferenceEvent, frozen=True, kw_only=True):
    """The user deleted the preference (``DELETE /api/learn/preferences/{id}``): it is no longer applied and its
    evidence is dropped; later evidence starts afresh."""

    reason: str = ""


PREFERENCE_EVENTS: tuple[type[Event], ...] = (PreferenceLearned, PreferenceForgotten)


def preference_id(user_id: str, category: str, key: str, scope: str = "") -> str:
    """The stable id (32 hex characters, one subject token) of ``user_id``'s preference ``category``/``key`` in
    ``scope`` (empty: everywhere, the id the preference had before scopes)."""
    return (
        derived_id("preference", user_id, category, key, scope)
        if scope
        else derived_id("preference", user_id, category, key)
    )


PATTERN_KINDS = ("skip_question", "recurring_answer")
"""What a learned pattern says about one user, one idea type and one question category: ``skip_question`` (the user
leaves questions of that category unanswered: do not ask them) or ``recurring_answer`` (the user answers them the
same way: assume that answer)."""
PATTERN_OUTCOMES = ("success", "failure", "seeded")
"""What one closed thread did to a pattern: confirmed it, contradicted it, or (a first ``recurring_answer``) gave the
value later answers are checked against, without testing anything yet."""


class PatternEvent(Event, frozen=True, kw_only=True):
    """Base of events about one learned pattern. ``aggregate_id`` is the ``pattern_id``,
    ``derived_id("pattern", user_id, kind, idea_type, category)`` (:func:`pattern_id`)."""

    aggregate_type: ClassVar[str] = "pattern"

    user_id: str
    kind: str
    idea_type: str
    category: str


class PatternValidated(PatternEvent, frozen=True, kw_only=True):
    """The learner's whole belief about one pattern after the closed thread ``thread_id`` (the event's cause is
    that thread's ``ThreadCompleted``/``ThreadFailed``): ``kind`` one of :data:`PATTERN_KINDS` with its trigger
    conditions ``idea_type`` and question ``category``; ``outcome`` (:data:`PATTERN_OUTCOMES`) what this thread did;
    ``validation_count`` threads that tested it, ``success_count`` those that confirmed it; ``confidence`` in
    [0, 1] = (success_count + 1) / (validation_count + 2) (see ``hermes_learner.patterns``); ``values`` how often
    each (normalized) answer was given (``recurring_answer`` only); ``recommended_actions`` what to do, e.g.
    ``skip_category:success`` or ``assume:constraint=keep it simple``; ``applied``: confident and tested enough at
    that moment (``HERMES_PATTERN_VALIDATION_THRESHOLD``, ``HERMES_PATTERN_MIN_VALIDATIONS``) to be applied."""

    outcome: str
    validation_count: int
    success_count: int
    confidence: float
    values: dict[str, int] = {}
    recommended_actions: list[str] = []
    thread_id: str
    applied: bool = False


PATTERN_EVENTS: tuple[type[Event], ...] = (PatternValidated,)


def pattern_id(user_id: str, kind: str, idea_type: str, category: str) -> str:
    """The stable id (32 hex characters, one subject token) of ``user_id``'s pattern ``kind`` for ideas of
    ``idea_type`` and questions of ``category``."""
    return derived_id("pattern", user_id, kind, idea_type, category)


THREAD_EVENTS: tuple[type[Event], ...] = (
    ThreadOpened,
    JobQueued,
    BackendSelected,
    ExecutionStarted,
    ExecutionCompleted,
    ExecutionFailed,
    DraftPresented,
    QuestionsProposed,
    AnswersRecorded,
    AnswerCollected,
    ThreadCompleted,
    ThreadRated,
    JobFailed,
    ThreadFailed,
    NotificationSent,
    NotificationFailed,
    JobDeferred,
    CostRecorded,
    ExecutionAbandoned,
    WorkflowPlanned,
    JobCancelled,
    JobSkipped,
)

BACKEND_EVENTS: tuple[type[Event], ...] = (BackendMarkedUnhealthy, BackendRecovered, BackendEnabled, BackendDisabled)


class SettingChanged(Event, frozen=True, kw_only=True):
    """A user changed an editable setting at runtime (``PATCH /api/config/{key}``; aggregate ``config``, id the
    setting's key): ``value`` as text (None: back to the deployment's value), ``by`` the user. Only settings whose
    registry entry is ``user_editable`` are ever changed (:mod:`hermes_proto.userconfig`); the last event per key
    wins, so a replay restores them."""

    aggregate_type: ClassVar[str] = "config"

    key: str
    value: str | None
    by: str = "local"


from hermes_proto.agents import AGENT_EVENTS  # noqa: E402 (agents.py imports the base types, not this module)
from hermes_proto.project_memory import MEMORY_EVENTS  # noqa: E402 (imports the base types, not this module)

ALL_EVENTS: tuple[type[Event], ...] = (
    THREAD_EVENTS
    + AGENT_EVENTS
    + BACKEND_EVENTS
    + TEMPLATE_EVENTS
    + PREFERENCE_EVENTS
    + PATTERN_EVENTS
    + MEMORY_EVENTS
    + (BudgetThresholdReached, QueueFull, SettingChanged)
)
