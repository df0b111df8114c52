"""Backend selection as pure functions: analyse a job's needs, score every registered backend, reject those
that cannot take the job now (and say why), then choose among the eligible by score, job-type route or load
balancing. Nothing here does I/O; amounts are cents, latencies ms, prices cents per million tokens.

Score = Σ weight × attribute over quality, speed, cost and reliability, with the seed's weights per
selection criteria (quality_first 0.5/0.2/0.1/0.2, speed_first 0.2/0.5/0.1/0.2, cost_first 0.2/0.1/0.5/0.2),
where each attribute starts from configuration and moves with measurement:

* quality: the configured prior shrunk toward the mean user rating ((rating - 1) / 4) of drafts the backend
  wrote, with the weight of ``PRIOR_WEIGHT`` pseudo-observations (empirical-Bayes shrinkage);
* speed: the configured prior shrunk toward ``1 / (1 + mean_latency_ms / SPEED_REF_MS)`` the same way;
* reliability: Laplace's rule of succession, ``(successes + 1) / (calls + 2)``;
* cost: ``1 - min(1, mean price / MAX_PRICE)``, 1 for a free backend.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

import msgspec

from hermes_proto.backends import BackendConfig
from hermes_proto.base import ChatMessage
from hermes_proto.costs import cost_cents, estimate_prompt_tokens
from hermes_proto.events import BackendCandidate

# Seed weights per criteria: (quality, speed, cost, reliability).
WEIGHTS: dict[str, tuple[float, float, float, float]] = {
    "quality_first": (0.5, 0.2, 0.1, 0.2),
    "speed_first": (0.2, 0.5, 0.1, 0.2),
    "cost_first": (0.2, 0.1, 0.5, 0.2),
}
PRIMARY_BONUS = 0.05
FALLBACK_BONUS = 0.05  # on failover attempts only
PREFER_BONUS = 0.1  # prefer_local / prefer_free
NEED_SHIFT = 0.1  # weight moved toward what the job needs (see job_weights)
PRIOR_WEIGHT = 5.0  # pseudo-observations behind each configured prior
SPEED_REF_MS = 5000.0  # a backend answering in 5 s on average measures speed 0.5
MAX_PRICE = 10_000.0  # cents per million tokens at or above which cost scores 0

# Hermes' own keyword heuristic for a job's type; first match wins in this order.
_TYPE_PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    (
        "code",
        re.compile(
            r"\b(code|function|bug|python|javascript|typescript|rust|sql|api|script|compile|"
            r"refactor|class|regex|unit test)\b",
            re.I,
        ),
    ),
    ("reasoning", re.compile(r"\b(prove|proof|why|reason|logic|puzzle|calculate|math|derive|solve)\b", re.I)),
    ("research", re.compile(r"\b(research|sources?|literature|compare|survey|study|evidence|papers?)\b", re.I)),
    ("analysis", re.compile(r"\b(analy[sz]e|analysis|data|metrics|trend|evaluate|assess|review)\b", re.I)),
    ("content", re.compile(r"\b(write|blog|post|article|story|email|essay|copy|tweet|poem|newsletter)\b", re.I)),
]
QUALITY_TYPES = {"code", "reasoning", "analysis", "research"}


@dataclass(frozen=True)
class JobNeeds:
    """What a job asks of a backend. ``prompt_tokens`` is estimated (tokens), ``max_tokens`` bounds the output."""

    job_id: str
    kind: str
    job_type: str
    private: bool
    project: str
    priority: int
    prompt_tokens: int
    max_tokens: int
    backend: str | None = None
    model: str | None = None
    requires: tuple[str, ...] = ()
    criteria: str | None = None


def classify_job_type(messages: Sequence[ChatMessage]) -> str:
    """code, reasoning, research, analysis, content or general, from keywords of the user messages."""
    text = " ".join(m.content for m in messages if m.role == "user")[:4000]
    for name, pattern in _TYPE_PATTERNS:
        if pattern.search(text):
            return name
    return "general"


def analyse(
    job_id: str,
    kind: str,
    messages: Sequence[ChatMessage],
    *,
    job_type: str | None,
    private: bool,
    project: str,
    priority: int,
    max_tokens: int,
    backend: str | None = None,
    model: str | None = None,
    requires: Iterable[str] = (),
    criteria: str | None = None,
) -> JobNeeds:
    """The :class:`JobNeeds` of a queued job; ``job_type`` None is classified from the messages."""
    return JobNeeds(
        job_id=job_id,
        kind=kind,
        job_type=job_type or classify_job_type(messages),
        private=private,
        project=project,
        priority=priority,
        prompt_tokens=estimate_prompt_tokens(messages),
        max_tokens=max_tokens,
        backend=backend.lower() if backend else None,
        model=model,
        requires=tuple(requires),
        criteria=criteria,
    )


def job_weights(criteria: str, needs: JobNeeds) -> tuple[float, float, float, float]:
    """The criteria's seed weights, shifted by ``NEED_SHIFT`` toward speed for a first draft (the user waits
    for it) and toward quality for code, reasoning, analysis and research jobs, then normalised to sum 1."""
    wq, ws, wc, wr = WEIGHTS.get(criteria, WEIGHTS["quality_first"])
    if needs.kind == "draft1":
        ws += NEED_SHIFT
    if needs.job_type in QUALITY_TYPES:
        wq += NEED_SHIFT
    total = wq + ws + wc + wr
    return wq / total, ws / total, wc / total, wr / total


@dataclass(frozen=True)
class Stats:
    """Measured history of one backend: calls, successes, mean latency (ms), ratings (1-5)."""

    calls: int = 0
    successes: int = 0
    latency_ms_sum: float = 0.0
    latency_n: int = 0
    rating_sum: float = 0.0
    rating_n: int = 0

    @property
    def reliability(self) -> float:
        return (self.successes + 1) / (self.calls + 2)

    @property
    def mean_latency_ms(self) -> float | None:
        return self.latency_ms_sum / self.latency_n if self.latency_n else None

    @property
    def mean_rating(self) -> float | None:
        return self.rating_sum / self.rating_n if self.rating_n else None


def _shrink(prior: float, measured: float | None, n: int) -> float:
    if measured is None or n == 0:
        return prior
    return (PRIOR_WEIGHT * prior + n * measured) / (PRIOR_WEIGHT + n)


def attributes(backend: BackendConfig, stats: Stats, price_in: float, price_out: float) -> dict[str, float]:
    """quality, speed, cost, reliability in [0, 1] (see the module docstring for the formulas)."""
    rating = stats.mean_rating
    latency = stats.mean_latency_ms
    return {
        "quality": _shrink(backend.quality, None if rating is None else (rating - 1) / 4, stats.rating_n),
        "speed": _shrink(backend.speed, None if latency is None else 1 / (1 + latency / SPEED_REF_MS), stats.latency_n),
        "cost": 1.0 - min(1.0, (price_in + price_out) / 2 / MAX_PRICE),
        "reliability": stats.reliability,
    }


@dataclass(frozen=True)
class BackendState:
    """Everything the selection needs to know about one backend now.

    ``health``: healthy, degraded, unhealthy, unknown or ``no_edge`` (no live edge serves it); ``enabled``: configuration overridden by runtime
    enable/disable; ``in_flight``: dispatched, unfinished jobs; ``rate_ok``: a request now stays within
    ``RATE_LIMIT`` per minute; ``cooling_until``: a 429's Retry-After; ``served_models``: the models its edges
    announce (empty: unknown)."""

    config: BackendConfig
    stats: Stats = Stats()
    health: str = "unknown"
    enabled: bool = True
    in_flight: int = 0
    rate_ok: bool = True
    cooling_until: datetime | None = None
    price_in: float = 0.0
    price_out: float = 0.0
    served_models: tuple[str, ...] = ()

    @property
    def paid(self) -> bool:
        return self.price_in > 0 or self.price_out > 0


@dataclass(frozen=True)
class Budget:
    """Spend and limits in cents. ``reserved`` / ``project_reserved``: estimates of dispatched jobs whose cost
    is not recorded yet (in all / per project); limits None mean none."""

    spent_today: float = 0.0
    reserved: float = 0.0
    project_spent: dict[str, float] = field(default_factory=dict)
    project_reserved: dict[str, float] = field(default_factory=dict)
    daily: float | None = None
    projects: dict[str, float] = field(default_factory=dict)
    max_per_job: float | None = None
    min_remote: float | None = None

    def refusal(self, project: str, estimate: float, local: bool) -> str | None:
        """Why a job of ``estimate`` cents may not run on a paid backend now, or None."""
        if estimate <= 0:
            return None
        if self.max_per_job is not None and estimate > self.max_per_job:
            return f"over_budget: estimate {estimate:.4f}c > per-job max {self.max_per_job:g}c"
        if self.daily is not None:
            remaining = self.daily - self.spent_today - self.reserved
            if estimate > remaining:
                return f"over_budget: estimate {estimate:.4f}c > daily remaining {max(remaining, 0):.4f}c"
            if not local and self.min_remote is not None and remaining < self.min_remote:
                return f"over_budget: daily remaining {max(remaining, 0):.4f}c < minimum remote budget {self.min_remote:g}c"
        limit = self.projects.get(project)
        if limit is not None:
            remaining = limit - self.project_spent.get(project, 0.0) - self.project_reserved.get(project, 0.0)
            if estimate > remaining:
                return f"over_budget: estimate {estimate:.4f}c > project {project} remaining {max(remaining, 0):.4f}c"
        return None

    def reserve(self, project: str, cents: float) -> Budget:
        """This budget with ``cents`` more reserved (all and for ``project``): a job just dispatched."""
        per_project = dict(self.project_reserved)
        per_project[project] = per_project.get(project, 0.0) + cents
        return replace(self, reserved=self.reserved + cents, project_reserved=per_project)


@dataclass(frozen=True)
class Policy:
    criteria: str = "quality_first"
    primary: str | None = None
    fallback: str | None = None
    prefer_local: bool = False
    prefer_free: bool = False
    job_type_routes: dict[str, str] = field(default_factory=dict)
    balancing: str | None = None  # None: highest score decides


@dataclass(frozen=True)
class Selection:
    """``chosen`` (with ``model`` and ``estimated_cost_cents``) or None with ``wait_reason`` (no_backend,
    no_capable_backend, saturated, over_budget, cooling_down) and ``permanent`` True when no registered backend could ever take
    the job (so waiting is pointless)."""

    chosen: BackendCandidate | None
    candidates: list[BackendCandidate]
    reason: str
    strategy: str = "score"
    criteria: str = "quality_first"
    model: str = ""
    price_in: float = 0.0
    price_out: float = 0.0
    wait_reason: str | None = None
    permanent: bool = False


FAILED_EARLIER = "failed an earlier attempt of this job"
NO_EDGE = "no_edge"
"""The health of a backend no live edge process serves (``hermes_router.health``): work sent there would wait."""
NO_EDGE_REASON = f"{NO_EDGE}: no live edge serves this backend (no heartbeat or probe reply)"
# Rejections a later moment cannot lift (the job waits for nothing); everything else is transient.
PERMANENT_PREFIXES = ("not the requested backend", "private job", "missing capability", "does not serve")
WAIT_REASONS = (
    ("over_budget", "over_budget"),
    ("at concurrency limit", "saturated"),
    ("rate limit", "saturated"),
    ("cooling down", "cooling_down"),
)


def score(state: BackendState, weights: tuple[float, float, float, float], policy: Policy, failover: bool) -> float:
    attrs = attributes(state.config, state.stats, state.price_in, state.price_out)
    wq, ws, wc, wr = weights
    value = wq * attrs["quality"] + ws * attrs["speed"] + wc * attrs["cost"] + wr * attrs["reliability"]
    name = state.config.name
    if name == policy.primary:
        value += PRIMARY_BONUS
    if failover and name == policy.fallback:
        value += FALLBACK_BONUS
    if policy.prefer_local and state.config.is_local:
        value += PREFER_BONUS
    if policy.prefer_free and not state.paid:
        value += PREFER_BONUS
    return round(value, 4)


def model_for(state: BackendState, needs: JobNeeds) -> str:
    return needs.model or state.config.default_model


def estimate_cents(state: BackendState, needs: JobNeeds) -> float:
    """Worst-case cost: estimated prompt tokens and the whole ``max_tokens`` output at the backend's prices."""
    return cost_cents(needs.prompt_tokens, needs.max_tokens, state.price_in, state.price_out)


def rejection(state: BackendState, needs: JobNeeds, budget: Budget, now: datetime, excluded: set[str]) -> str | None:
    """Why ``state``'s backend cannot take the job now, or None. Permanent reasons come first."""
    cfg = state.config
    if needs.backend is not None and cfg.name != needs.backend:
        return "not the requested backend"
    if needs.private and not cfg.is_local:
        return "private job: not a local backend"
    missing = [c for c in needs.requires if c not in cfg.capabilities]
    if missing:
        return f"missing capability {', '.join(missing)}"
    models = cfg.models or list(state.served_models)
    if needs.model is not None and models and needs.model not in models:
        return f"does not serve model {needs.model}"
    if not state.enabled:
        return "disabled"
    if state.health == NO_EDGE:
        return NO_EDGE_REASON
    if state.health == "unhealthy":
        return "unhealthy"
    if cfg.name in excluded:
        return FAILED_EARLIER
    if state.cooling_until is not None and now < state.cooling_until:
        return f"cooling down until {state.cooling_until.isoformat(timespec='seconds')} (429 Retry-After)"
    if state.paid:
        refused = budget.refusal(needs.project, estimate_cents(state, needs), cfg.is_local)
        if refused:
            return refused
    limit = cfg.concurrency_limit
    if limit is not None and state.in_flight >= limit:
        return f"at concurrency limit {limit}"
    if not state.rate_ok:
        return f"rate limit {cfg.rate_limit}/min reached"
    return None


class Balancer:
    """Load balancing among eligible backends (in memory: a restart starts the rotation afresh).

    round_robin: in turn by name; least_loaded: fewest in-flight jobs, then score; weighted: smooth weighted
    round robin (the algorithm of nginx's upstream module) with ``weights`` (default 1), which gives every
    backend exactly its share over any window of Σweights picks."""

    def __init__(self, strategy: str, weights: dict[str, float] | None = None) -> None:
        self.strategy = strategy
        self.weights = weights or {}
        self._turn = 0
        self._current: dict[str, float] = {}

    def choose(self, eligible: list[BackendCandidate], states: dict[str, BackendState]) -> BackendCandidate:
        if self.strategy == "least_loaded":
            return min(eligible, key=lambda c: (states[c.backend].in_flight, -c.score, c.backend))
        if self.strategy == "weighted":
            return self._weighted(eligible)
        ordered = sorted(eligible, key=lambda c: c.backend)
        pick = ordered[self._turn % len(ordered)]
        self._turn += 1
        return pick

    def _weighted(self, eligible: list[BackendCandidate]) -> BackendCandidate:
        total = 0.0
        for c in eligible:
            w = self.weights.get(c.backend, 1.0)
            self._current[c.backend] = self._current.get(c.backend, 0.0) + w
            total += w
        pick = max(eligible, key=lambda c: (self._current[c.backend], c.backend))
        self._current[pick.backend] -= total
        return pick


def select(
    states: dict[str, BackendState],
    needs: JobNeeds,
    budget: Budget,
    policy: Policy,
    now: datetime,
    *,
    excluded: set[str] | None = None,
    attempt: int = 1,
    balancer: Balancer | None = None,
) -> Selection:
    """Choose a backend for ``needs`` (see the module docstring). Precedence among the eligible: the backend the
    job asked for; the job type's route (``HERMES_<TYPE>_JOBS_BACKEND``) when eligible; load balancing when
    enabled; else the highest score (ties by name). Backends in ``excluded`` (they failed this job) are
    skipped unless no other backend is eligible."""
    excluded = excluded or set()
    criteria = needs.criteria if needs.criteria in WEIGHTS else policy.criteria
    weights = job_weights(criteria, needs)
    candidates: list[BackendCandidate] = []
    for name, state in sorted(states.items()):
        candidates.append(
            BackendCandidate(
                backend=name,
                model=model_for(state, needs),
                score=score(state, weights, policy, attempt > 1),
                rejected=rejection(state, needs, budget, now, excluded),
                estimated_cost_cents=estimate_cents(state, needs),
            )
        )
    eligible = [c for c in candidates if c.rejected is None]
    if not eligible and any(c.rejected == FAILED_EARLIER for c in candidates):
        # next_best found no other backend: the one that failed may try again.
        return select(states, needs, budget, policy, now, attempt=attempt, balancer=balancer)
    if not eligible:
        return _no_choice(candidates, criteria)
    best = sorted(eligible, key=lambda c: (-c.score, c.backend))[0]
    strategy = "score"
    route = policy.job_type_routes.get(needs.job_type)
    if needs.backend is not None:
        strategy = "requested"
    elif route is not None and any(c.backend == route for c in eligible):
        best, strategy = next(c for c in eligible if c.backend == route), "job_type_route"
    elif balancer is not None and len(eligible) > 1:
        best, strategy = balancer.choose(eligible, states), balancer.strategy
    final = [
        c
        if c.rejected or c.backend == best.backend
        else msgspec.structs.replace(c, rejected=_lost(strategy, best.backend))
        for c in candidates
    ]
    state = states[best.backend]
    reason = (
        f"{strategy}: {best.backend} ({criteria} score {best.score}, health {state.health}) among "
        f"{len(eligible)} eligible; job type {needs.job_type}"
    )
    return Selection(best, final, reason, strategy, criteria, best.model, state.price_in, state.price_out)


def _lost(strategy: str, winner: str) -> str:
    if strategy == "score":
        return f"lower score than {winner}"
    return f"{strategy} chose {winner}"


def _no_choice(candidates: list[BackendCandidate], criteria: str) -> Selection:
    reasons = [c.rejected or "" for c in candidates]
    permanent = all(r.startswith(PERMANENT_PREFIXES) for r in reasons)
    wait = "no_backend"
    for prefix, code in WAIT_REASONS:
        if any(r.startswith(prefix) for r in reasons):
            wait = code
            break
    summary = "; ".join(f"{c.backend}: {c.rejected}" for c in candidates) or "no backend registered"
    return Selection(
        None,
        candidates,
        f"no eligible backend ({summary})",
        criteria=criteria,
        wait_reason="no_capable_backend" if permanent else wait,
        permanent=permanent,
    )


@dataclass(frozen=True)
class FailoverDecision:
    """After a failed attempt: ``retry`` at ``due_epoch_s`` (excluding ``excluded`` backends), or give up."""

    retry: bool
    due_epoch_s: float = 0.0
    excluded: frozenset[str] = frozenset()
    reason: str = ""


def backoff_delay(job_id: str, attempts: int, base_s: float, cap_s: float) -> float:
    """Seconds to wait before the next attempt after ``attempts`` executions failed: exponential backoff
    ``min(cap_s, base_s × 2^(attempts-1))`` with "equal jitter" (half of it fixed, half uniformly random), the
    scheme of M. Brooker, "Exponential Backoff And Jitter", AWS Architecture Blog, 2015. The random part is
    seeded by ``(job_id, attempts)``: spread across jobs, yet the same after a router restart or a replay."""
    ceiling = min(cap_s, base_s * 2 ** max(attempts - 1, 0))
    return ceiling / 2 + random.Random(f"{job_id}:{attempts}").uniform(0, ceiling / 2)


def decide_failover(
    *,
    retryable: bool,
    attempts: int,
    max_failover_attempts: int,
    failed_at_epoch_s: float,
    delay_s: float,
    retry_after_s: float | None,
    failed_backends: Iterable[str],
    strategy: str,
) -> FailoverDecision:
    """Retry a retryable failure while attempts remain (``1 + max_failover_attempts`` executions in all: the
    job's ``max_retries`` or ``HERMES_MAX_FAILOVER_ATTEMPTS``), after ``max(delay_s, retry_after_s)`` (``delay_s``
    from :func:`backoff_delay`); next_best excludes every backend that already failed the job, any_available
    excludes none (a cooling-down backend is still skipped by :func:`rejection`)."""
    if not retryable:
        return FailoverDecision(False, reason="not retryable")
    if attempts >= 1 + max_failover_attempts:
        return FailoverDecision(False, reason=f"{attempts} attempts made, {max_failover_attempts} retries allowed")
    wait = max(delay_s, retry_after_s or 0.0)
    excluded = frozenset(failed_backends) if strategy == "next_best" else frozenset()
    return FailoverDecision(True, failed_at_epoch_s + wait, excluded)
