"""Races of the job queue, decided on real read models (SQLite files) fed the events in the orders a live system
can produce them: a cancellation overtaking a dispatch round, a cancelled call that still ran, a timeout racing
the router's abandonment, and a cancel command redelivered after only part of its events were stored."""

from __future__ import annotations

from datetime import datetime, timedelta
from functools import reduce
from pathlib import Path

from sqlmodel import Session

from hermes_proto.base import ChatMessage, Event
from hermes_proto.commands import CancelJob, SubmitIdea
from hermes_proto.events import (
    BackendSelected,
    ExecutionAbandoned,
    ExecutionCompleted,
    JobCancelled,
    JobQueued,
    ThreadOpened,
)
from hermes_proto.ids import new_id, utcnow

from hermes_orchestrator import domain, snapshot
from hermes_orchestrator import readmodel as orch
from hermes_router import readmodel as router
from hermes_router.handlers import read_snapshot

T0 = datetime(2026, 11, 23, 12, 0, tzinfo=utcnow().tzinfo)


def env(thread_id: str, seconds: float = 0, event_id: str | None = None) -> dict:
    return dict(
        event_id=event_id or new_id(),
        aggregate_id=thread_id,
        occurred_at=T0 + timedelta(seconds=seconds),
        correlation_id="c",
    )


def queued(thread_id: str, job_id: str) -> JobQueued:
    return JobQueued(
        **env(thread_id),
        job_id=job_id,
        kind="draft1",
        max_tokens=64,
        messages=[ChatMessage(role="user", content="plan a garden")],
    )


def apply_router(db: Path, events: list[Event]) -> router.RouterJobRow:
    engine = router.make_engine(f"sqlite:///{db}")
    router.apply_events(router.row_store(engine), enumerate(events, start=1), len(events))
    with Session(engine) as session:
        row = session.get(router.RouterJobRow, events[0].job_id)
        session.expunge(row)
    engine.dispose()
    return row


def test_a_round_that_read_the_job_before_its_cancellation_does_not_reopen_it(tmp_path: Path) -> None:
    thread_id, job_id = new_id(), new_id()
    selected = BackendSelected(
        **env(thread_id, 1),
        job_id=job_id,
        backend="talos",
        model="m",
        reason="score",
        price_in_cents_per_mtok=100.0,
        price_out_cents_per_mtok=200.0,
    )
    row = apply_router(
        tmp_path / "r.db",
        [queued(thread_id, job_id), JobCancelled(**env(thread_id, 0.5), job_id=job_id, reason="user"), selected],
    )
    assert (row.status, row.backend, row.attempts) == (router.CANCELLED, "talos", 1)  # where to send the stop


def test_a_cancelled_call_that_still_ran_is_costed_once(tmp_path: Path) -> None:
    thread_id, job_id = new_id(), new_id()
    db = tmp_path / "r.db"
    selected = BackendSelected(
        **env(thread_id, 1),
        job_id=job_id,
        backend="talos",
        model="m",
        reason="score",
        price_in_cents_per_mtok=100.0,
        price_out_cents_per_mtok=200.0,
    )
    done = ExecutionCompleted(
        **env(thread_id, 3),
        job_id=job_id,
        backend="talos",
        model="m",
        text="x",
        prompt_tokens=1000,
        completion_tokens=500,
        latency_ms=900.0,
    )
    row = apply_router(
        db,
        [
            queued(thread_id, job_id),
            selected,
            JobCancelled(**env(thread_id, 2), job_id=job_id, reason="user"),
            done,
            done,
        ],
    )
    assert (row.status, row.completion_event_id, row.completion_tokens) == (router.CANCELLED, done.event_id, 500)
    engine = router.make_engine(f"sqlite:///{db}")
    snapshot = read_snapshot(engine, T0)
    engine.dispose()
    assert [j.job_id for j in snapshot.uncosted] == [job_id]  # the next round records its CostRecorded
    assert snapshot.in_flight == {}  # and it holds no concurrency slot


def orchestrator_state(db: Path, events: list[Event], thread_id: str) -> domain.ThreadState:
    engine = orch.make_engine(f"sqlite:///{db}")
    orch.apply_events(orch.row_store(engine), events)
    with Session(engine) as session:
        state = snapshot.load_state(session, thread_id)
    engine.dispose()
    assert state is not None
    assert state == reduce(domain.evolve, events, None)  # the fold and the rows agree
    return state


def opened(thread_id: str) -> list[Event]:
    cmd = SubmitIdea(command_id=new_id(), issued_at=T0, thread_id=thread_id, idea="plan a garden")
    return domain.decide_submit(None, cmd, domain.Limits(job_timeout_s=60), T0)


def test_an_abandonment_arriving_after_the_timeout_fails_the_job_only_once(tmp_path: Path) -> None:
    thread_id = new_id()
    first = opened(thread_id)
    job = next(e for e in first if isinstance(e, JobQueued))
    state = orchestrator_state(tmp_path / "o.db", first, thread_id)
    timeout = CancelJob(command_id=new_id(), issued_at=T0, thread_id=thread_id, job_id=job.job_id, reason="timeout")
    ended = domain.decide_cancel(state, timeout, T0)
    assert [e.type_name() for e in ended] == ["job_cancelled", "job_failed", "thread_failed"]
    late = ExecutionAbandoned(**env(thread_id, 70), job_id=job.job_id, error_code="http_5xx", message="x")
    state = orchestrator_state(
        tmp_path / "o2.db", first + [e for e in ended if e.type_name() != "thread_failed"] + [late], thread_id
    )
    assert state.status == domain.DRAFTING and state.jobs[job.job_id].status == "failed"
    assert domain.react_execution_abandoned(state, late, T0) == []


def test_a_cancel_redelivered_after_a_partial_append_finishes_its_decision(tmp_path: Path) -> None:
    thread_id = new_id()
    first = opened(thread_id)
    job = next(e for e in first if isinstance(e, JobQueued))
    cancel = CancelJob(command_id=new_id(), issued_at=T0, thread_id=thread_id, job_id=job.job_id)
    decision = domain.decide_cancel(orchestrator_state(tmp_path / "a.db", first, thread_id), cancel, T0)
    assert [e.type_name() for e in decision] == ["job_cancelled", "thread_failed"]
    # Only JobCancelled was stored before the crash; the redelivered command completes the decision, same ids.
    partial = orchestrator_state(tmp_path / "b.db", first + decision[:1], thread_id)
    again = domain.decide_cancel(partial, cancel, T0)
    assert [e.event_id for e in again] == [e.event_id for e in decision]
    # Another user's cancel of the already cancelled job changes nothing.
    other = CancelJob(command_id=new_id(), issued_at=T0, thread_id=thread_id, job_id=job.job_id)
    assert domain.decide_cancel(partial, other, T0) == []
    assert isinstance(first[0], ThreadOpened)
