"""The router's request/reply surface on core NATS: backends (health, scores, in-flight, spend), selections,
runtime enable/disable, and the backend comparison (one prompt on several backends, side by side)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from typing import Any

import msgspec
import structlog
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from sqlmodel import Session, col, select

from hermes_proto import subjects
from hermes_proto.base import ChatMessage
from hermes_proto.codec import DecodeError, decode_event, encode
from hermes_proto.costs import cost_cents
from hermes_proto.events import BackendDisabled, BackendEnabled, BackendSelected, ExecutionCompleted, ExecutionFailed
from hermes_proto.execution import ExecutionRequested
from hermes_proto.ids import derived_id, new_id, utcnow
from hermes_proto.keyring import ready as keyring_ready
from hermes_proto.queries import (
    BackendsReply,
    BackendView,
    BudgetView,
    CompareReply,
    CompareRequest,
    CompareResult,
    ErrorReply,
    SelectionsQuery,
    SelectionsReply,
    SelectionView,
    SetBackendEnabled,
)
from hermes_proto.rpc import answering

from hermes_router import domain, readmodel
from hermes_router.handlers import Router

log = structlog.get_logger("hermes.router")


class QueryResponder:
    def __init__(self, nc: NATS, router: Router) -> None:
        self.nc = nc
        self.router = router

    async def subscribe(self) -> None:
        for subject, cb in (
            (subjects.QUERY_BACKENDS, self._backends),
            (subjects.QUERY_SELECTIONS, self._selections),
            (subjects.CONTROL_BACKEND, self._control),
            (subjects.CONTROL_COMPARE, self._compare),
        ):
            await self.nc.subscribe(subject, queue="backend-router", cb=self._guard(cb))

    def _guard(self, cb):  # noqa: ANN001, ANN202
        """``cb`` (a message → its reply) as a callback that answers; what it raises is answered as an ``ErrorReply``
        (:func:`~hermes_proto.rpc.answering`: ``bad_request`` for an undecodable request, else ``internal``)."""

        async def handle(msg: Msg) -> None:
            reply = await cb(msg)
            if msg.reply:
                await msg.respond(encode(reply))

        return answering("backend-router", handle)

    # ---- backends --------------------------------------------------------------------------------

    async def backends_reply(self) -> BackendsReply:
        router = self.router
        now = utcnow()
        snap = router.view.snapshot(now)
        states = router.backend_states(snap, now)
        spend = self._spend_by_backend(snap.day)
        neutral = domain.JobNeeds(
            job_id="",
            kind="chat",
            job_type="general",
            private=False,
            project="default",
            priority=5,
            prompt_tokens=0,
            max_tokens=0,
        )
        views = []
        for name, state in states.items():
            stats = state.stats
            row = snap.states.get(name)
            views.append(
                BackendView(
                    name=name,
                    type=state.config.type,
                    enabled=state.enabled,
                    health=state.health,
                    local=state.config.is_local,
                    models=list(state.config.models or state.served_models),
                    scores={
                        c: domain.score(state, domain.job_weights(c, neutral), router.policy, False)
                        for c in domain.WEIGHTS
                    },
                    in_flight=state.in_flight,
                    max_concurrent=state.config.concurrency_limit,
                    rate_limit_per_minute=state.config.rate_limit,
                    requests=stats.calls,
                    failures=stats.calls - stats.successes,
                    success_rate=round(stats.reliability, 4),
                    mean_latency_ms=None if stats.mean_latency_ms is None else round(stats.mean_latency_ms, 1),
                    mean_rating=stats.mean_rating,
                    spend_today_cents=round(spend.get(name, 0.0), 6),
                    price_in_cents_per_mtok=state.price_in,
                    price_out_cents_per_mtok=state.price_out,
                    cooling_down_until=state.cooling_until
                    if state.cooling_until and state.cooling_until > now
                    else None,
                    unhealthy_reason=row.unhealthy_reason if row is not None else None,
                )
            )
        s = router.settings
        budget = BudgetView(
            day=snap.day,
            spent_today_cents=round(snap.spent_today, 6),
            daily_budget_cents=s.hermes_daily_budget_cents,
            max_cost_per_job_cents=s.hermes_max_cost_per_job_cents,
            min_remote_budget_cents=s.hermes_min_remote_budget_cents,
            projects={p: round(c, 6) for p, c in snap.project_spent.items()},
            project_budgets_cents=s.project_budgets(),
        )
        return BackendsReply(backends=views, budget=budget, queued_jobs=len(snap.jobs))

    def _spend_by_backend(self, day: str) -> dict[str, float]:
        """Cents spent on ``day`` (UTC, ``YYYY-MM-DD``) per backend, from the in-memory view."""
        result: dict[str, float] = {}
        for (spent_day, _, backend), cents in self.router.view.spend.items():
            if spent_day == day:
                result[backend] = result.get(backend, 0.0) + cents
        return result

    async def _backends(self, msg: Msg) -> Any:
        return await self.backends_reply()

    # ---- selections ------------------------------------------------------------------------------

    async def _selections(self, msg: Msg) -> Any:
        query = msgspec.json.decode(msg.data or b"{}", type=SelectionsQuery)

        def read() -> list[SelectionView]:
            if query.thread_ids is not None and not query.thread_ids:
                return []
            with Session(self.router.engine) as s:
                stmt = select(readmodel.SelectionRow)
                if query.thread_ids is not None:
                    stmt = stmt.where(col(readmodel.SelectionRow.thread_id).in_(query.thread_ids))
                if query.job_id:
                    stmt = stmt.where(readmodel.SelectionRow.job_id == query.job_id).order_by(
                        col(readmodel.SelectionRow.attempt)
                    )
                else:
                    stmt = stmt.order_by(col(readmodel.SelectionRow.selected_at).desc())
                rows = s.exec(stmt.limit(max(1, min(query.limit, 500))))
                return [
                    SelectionView(
                        job_id=r.job_id,
                        thread_id=r.thread_id,
                        attempt=r.attempt,
                        backend=r.backend,
                        model=r.model,
                        strategy=r.strategy,
                        criteria=r.criteria,
                        reason=r.reason,
                        job_type=r.job_type,
                        estimated_cost_cents=r.estimated_cost_cents,
                        selected_at=readmodel.aware(r.selected_at),
                        candidates=json.loads(r.candidates_json),
                        failover_from=r.failover_from,
                    )
                    for r in rows
                ]

        return SelectionsReply(selections=await asyncio.to_thread(read))

    # ---- enable / disable ------------------------------------------------------------------------

    async def _control(self, msg: Msg) -> Any:
        cmd = msgspec.json.decode(msg.data, type=SetBackendEnabled)
        name = cmd.backend.lower()
        if name not in self.router.registry:
            return ErrorReply(
                code="unknown_backend",
                message=f"no backend {cmd.backend!r}; registered: {', '.join(self.router.registry)}",
            )
        env = dict(event_id=new_id(), aggregate_id=name, occurred_at=utcnow(), correlation_id=new_id())
        event = BackendEnabled(**env) if cmd.enabled else BackendDisabled(**env, reason=cmd.reason[:500])
        [seq] = await self.router.store.append([event])
        await self.router.projection.require(seq)
        log.info("backend_enabled" if cmd.enabled else "backend_disabled", backend=name, reason=cmd.reason[:200])
        self.router.wake.set()
        return await self.backends_reply()

    # ---- comparison ------------------------------------------------------------------------------

    async def _compare(self, msg: Msg) -> Any:
        request = msgspec.json.decode(msg.data, type=CompareRequest)
        router = self.router
        unknown = [b for b in request.backends if b.lower() not in router.registry]
        if unknown or not request.prompt.strip():
            return ErrorReply(
                code="unknown_backend" if unknown else "bad_request",
                message=f"unknown backends: {', '.join(unknown)}" if unknown else "empty prompt",
            )
        comparison_id = new_id()
        now = utcnow()
        snap = router.view.snapshot(now)
        states = router.backend_states(snap, now)
        budget = router.budget(snap)
        names = [b.lower() for b in request.backends] or [n for n, s in states.items() if s.enabled]
        messages = [ChatMessage(role="user", content=request.prompt)]
        results: dict[str, CompareResult] = {}
        pending: dict[str, tuple[str, BackendSelected]] = {}  # job_id -> (backend, selection)
        sub = await self.nc.subscribe(subjects.thread_events(comparison_id))
        try:
            for name in names:
                state = replace(states[name], in_flight=0, rate_ok=True)
                needs = domain.analyse(
                    new_id(),
                    "compare",
                    messages,
                    job_type=None,
                    private=False,
                    project="compare",
                    priority=5,
                    max_tokens=request.max_tokens,
                )
                refused = domain.rejection(state, needs, budget, now, set())
                model = domain.model_for(state, needs)
                if refused:
                    results[name] = CompareResult(backend=name, model=model, error_code="refused", error=refused)
                    continue
                selection = BackendSelected(
                    event_id=derived_id(needs.job_id, "backend_selected"),
                    aggregate_id=comparison_id,
                    occurred_at=now,
                    correlation_id=comparison_id,
                    job_id=needs.job_id,
                    backend=name,
                    model=model,
                    reason="backend comparison",
                    strategy="compare",
                    job_type=needs.job_type,
                    project="compare",
                    estimated_cost_cents=domain.estimate_cents(state, needs),
                    price_in_cents_per_mtok=state.price_in,
                    price_out_cents_per_mtok=state.price_out,
                )
                pending[needs.job_id] = (name, selection)
            if pending:
                await router.store.append([sel for _, sel in pending.values()])
                for job_id, (name, sel) in pending.items():
                    req = ExecutionRequested(
                        request_id=derived_id(job_id, "execution_requested"),
                        thread_id=comparison_id,
                        job_id=job_id,
                        backend=name,
                        model=sel.model,
                        messages=messages,
                        max_tokens=request.max_tokens,
                        temperature=0.7,
                        timeout_s=router.registry[name].timeout,
                        correlation_id=comparison_id,
                        requested_at=now,
                    )
                    await router.store.request_execution(
                        subjects.exec_subject(name), encode(req), req.request_id, req.thread_id
                    )
                await self._collect(sub, pending, results, request.timeout_s)
        finally:
            await sub.unsubscribe()
        for name, sel in pending.values():
            results.setdefault(
                name,
                CompareResult(
                    backend=name,
                    model=sel.model,
                    error_code="timeout",
                    error=f"no result within {request.timeout_s:g} s",
                ),
            )
        log.info("backends_compared", comparison_id=comparison_id, backends=names)
        return CompareReply(comparison_id=comparison_id, results=[results[n] for n in names if n in results])

    async def _collect(
        self,
        sub,
        pending: dict[str, tuple[str, BackendSelected]],  # noqa: ANN001
        results: dict[str, CompareResult],
        timeout_s: float,
    ) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        waiting = set(pending)
        while waiting and loop.time() < deadline:
            try:
                msg = await sub.next_msg(timeout=max(0.01, deadline - loop.time()))
                await keyring_ready((msg.data,))
                event = decode_event(msg.data)
            except (TimeoutError, DecodeError):
                continue
            except Exception:  # nats' own timeout type
                continue
            job_id = getattr(event, "job_id", None)
            if job_id not in waiting:
                continue
            name, sel = pending[job_id]
            if isinstance(event, ExecutionCompleted):
                results[name] = CompareResult(
                    backend=name,
                    model=event.model,
                    text=event.text,
                    latency_ms=event.latency_ms,
                    first_token_ms=event.first_token_ms,
                    prompt_tokens=event.prompt_tokens,
                    completion_tokens=event.completion_tokens,
                    cost_cents=cost_cents(
                        event.prompt_tokens,
                        event.completion_tokens,
                        sel.price_in_cents_per_mtok,
                        sel.price_out_cents_per_mtok,
                    ),
                )
                waiting.discard(job_id)
            elif isinstance(event, ExecutionFailed):
                results[name] = CompareResult(
                    backend=name,
                    model=event.model,
                    error_code=event.error_code,
                    error=event.message,
                    latency_ms=event.latency_ms,
                )
                waiting.discard(job_id)
