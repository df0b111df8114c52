"""Backend selection as a pure function: score every registered backend for a job, reject those that
cannot take it, choose the best.

Score = Σ weight × attribute over quality, speed, cost (1 = free) and reliability (measured success rate,
1.0 before any measurement), with the weights of the seed's selection criteria.
"""

from __future__ import annotations

from dataclasses import dataclass

from hermes_proto.events import BackendCandidate

from hermes_router.config import BackendConfig

# Seed weights per criteria: (quality, speed, cost, reliability).
WEIGHTS: dict[str, tuple[float, float, float, float]] = {
    "quality_first": (0.5, 0.2, 0.1, 0.2),
    "speed_first": (0.2, 0.5, 0.1, 0.2),
    "cost_first": (0.2, 0.1, 0.5, 0.2),
}
PRIMARY_BONUS = 0.05
MAX_COST_PER_MTOK_CENTS = 10_000.0  # prices at or above this score 0 on cost


@dataclass(frozen=True)
class Health:
    """Latest known health of a backend: ``state`` is healthy, unhealthy or unknown (no heartbeat yet)."""

    state: str = "unknown"
    in_flight: int = 0
    success_rate: float = 1.0


@dataclass(frozen=True)
class Selection:
    chosen: BackendCandidate | None
    candidates: list[BackendCandidate]
    reason: str


def cost_score(cost_per_mtok_cents: float) -> float:
    return max(0.0, 1.0 - cost_per_mtok_cents / MAX_COST_PER_MTOK_CENTS)


def score(backend: BackendConfig, health: Health, criteria: str, primary: str | None) -> float:
    wq, ws, wc, wr = WEIGHTS.get(criteria, WEIGHTS["quality_first"])
    value = (wq * backend.quality + ws * backend.speed + wc * cost_score(backend.cost_per_mtok_cents)
             + wr * health.success_rate)
    if backend.name == primary:
        value += PRIMARY_BONUS
    return round(min(value, 1.0), 4)


def select(registry: dict[str, BackendConfig], health: dict[str, Health], criteria: str,
           primary: str | None = None) -> Selection:
    """Choose a backend. Disabled and unhealthy backends are rejected; a backend with no heartbeat yet
    (unknown) is still eligible — its requests wait in its work queue until its edge starts."""
    candidates: list[BackendCandidate] = []
    for name, backend in registry.items():
        h = health.get(name, Health())
        rejected = None
        if not backend.enabled:
            rejected = "disabled"
        elif h.state == "unhealthy":
            rejected = "unhealthy"
        candidates.append(BackendCandidate(backend=name, model=backend.default_model,
                                           score=score(backend, h, criteria, primary), rejected=rejected))
    eligible = sorted((c for c in candidates if c.rejected is None), key=lambda c: (-c.score, c.backend))
    if not eligible:
        return Selection(None, candidates, "no eligible backend")
    best = eligible[0]
    final = [c if c.rejected or c.backend == best.backend
             else BackendCandidate(backend=c.backend, model=c.model, score=c.score,
                                   rejected=f"lower score than {best.backend}")
             for c in candidates]
    state = health.get(best.backend, Health()).state
    reason = f"highest {criteria} score {best.score} among {len(eligible)} eligible (health: {state})"
    return Selection(best, final, reason)
