"""The router's budget arithmetic (pure domain code): jobs dispatched in one round, or still running, hold
their estimates against the daily and the per-project budgets until their cost is recorded."""

from __future__ import annotations

from datetime import UTC, datetime

from hermes_proto.backends import load_backend
from hermes_proto.base import ChatMessage

from hermes_router import domain

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
PRICE = 10_000.0  # cents per million tokens, input and output
MAX_TOKENS = 500


def paid_backend() -> dict[str, domain.BackendState]:
    cfg = load_backend(
        "remote", {"BACKEND_REMOTE_TYPE": "openai", "BACKEND_REMOTE_HOST": "127.0.0.1", "BACKEND_REMOTE_MODELS": "big"}
    )
    return {"remote": domain.BackendState(config=cfg, health="healthy", price_in=PRICE, price_out=PRICE)}


def job(i: int, project: str) -> domain.JobNeeds:
    return domain.analyse(
        f"job-{i}",
        "draft1",
        [ChatMessage(role="user", content="plan a garden")],
        job_type="general",
        private=False,
        project=project,
        priority=5,
        max_tokens=MAX_TOKENS,
    )


def dispatch_all(budget: domain.Budget, project: str, n: int) -> tuple[int, list[str]]:
    """Place ``n`` jobs one after another as a round does (each dispatch reserves its estimate); returns how
    many were dispatched and the wait reasons of the others."""
    states, dispatched, waits = paid_backend(), 0, []
    for i in range(n):
        selection = domain.select(states, job(i, project), budget, domain.Policy(), NOW)
        if selection.chosen is None:
            waits.append(selection.wait_reason or "")
            continue
        dispatched += 1
        budget = budget.reserve(project, selection.chosen.estimated_cost_cents)
    return dispatched, waits


def test_a_project_budget_counts_jobs_already_dispatched() -> None:
    estimate = domain.estimate_cents(paid_backend()["remote"], job(0, "p"))
    assert 5 < estimate < 5.5  # (prompt estimate + 500) tokens at 1 cent per 100 tokens
    budget = domain.Budget(projects={"p": 12.0}, project_spent={"p": 1.0})
    dispatched, waits = dispatch_all(budget, "p", 5)
    assert dispatched == 2  # 11 cents remain: two estimates fit, a third would pass the limit
    assert waits == ["over_budget"] * 3
    # Another project is not charged for p's reservations.
    assert dispatch_all(budget.reserve("p", 11.0), "q", 2)[0] == 2


def test_the_daily_budget_counts_reservations_of_every_project() -> None:
    budget = domain.Budget(daily=12.0, reserved=0.0)
    assert dispatch_all(budget, "p", 5)[0] == 2
    refusal = budget.reserve("q", 10.0).refusal("p", 4.5, local=False)
    assert refusal is not None and refusal.startswith("over_budget: estimate 4.5000c > daily remaining 2.0000c")
