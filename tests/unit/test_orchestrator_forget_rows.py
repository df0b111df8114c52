"""Forgetting in the orchestrator's read model and fold: after ``PersonalDataForgotten`` nothing of the forgotten
aggregates (and user) is left in any table, in memory, or in the bytes of the SQLite file; the other user's rows
are exactly what applying their events alone gives."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.engine import Engine

from hermes_proto import agents as ag
from hermes_proto import events as ev
from hermes_proto import project_memory as pm
from hermes_proto import schedules as sc
from hermes_proto import skill_proposals as sp
from hermes_proto.base import ChatMessage, Event
from hermes_proto.forgetting import PersonalDataForgotten
from hermes_proto.tools import ToolCall

from hermes_orchestrator import readmodel
from hermes_orchestrator.fold import ThreadFold
from hermes_orchestrator.forgetting import user_aggregates

NOW = datetime(2026, 12, 1, 9, 0, 0, tzinfo=UTC)
SECRET = {"a": "xylophonealpha", "b": "banjobravo"}
"""A word only each user's texts hold (what the file's bytes are searched for)."""


class _Log:
    """Events of one user with unique ids and increasing times."""

    def __init__(self, user: str) -> None:
        self.user, self.word, self.events, self.n = user, SECRET[user], [], 0

    def add(self, cls: type[Event], aggregate_id: str, **fields) -> None:
        self.n += 1
        self.events.append(
            cls(
                event_id=f"{self.user}-e{self.n}",
                aggregate_id=aggregate_id,
                occurred_at=NOW + timedelta(seconds=self.n),
                correlation_id=f"{self.user}-c",
                **fields,
            )
        )


def _ids(u: str) -> dict[str, str]:
    schedule = f"{u}-sched"
    return {
        "idea": f"{u}-idea",
        "chat": f"{u}-chat",
        "agent": f"{u}-agent",
        "flow": f"{u}-flow",
        "schedule": schedule,
        "run": sc.run_id_of(schedule, "k1"),
        "entry": f"{u}-entry",
        "proposal": f"{u}-prop",
        "pref": f"{u}-pref",
    }


def _life(u: str) -> tuple[list[Event], list[str]]:
    """Every kind of aggregate of user ``u`` (its texts hold ``SECRET[u]``) and their key ids."""
    log, i = _Log(u), _ids(u)
    w = log.word
    user = f"user-{u}"

    def turn(thread: str, job: str, kind: str, prompt: str, reply: str, **extra) -> None:
        messages = [ChatMessage(role="user", content=prompt)]
        log.add(ev.JobQueued, thread, job_id=job, kind=kind, messages=messages, **extra)
        log.add(ev.BackendSelected, thread, job_id=job, backend="talos", model="m", reason=f"fits {w}")
        log.add(
            ev.ExecutionCompleted,
            thread,
            job_id=job,
            backend="talos",
            model="m",
            text=reply,
            prompt_tokens=3,
            completion_tokens=4,
            latency_ms=5.0,
        )

    # an idea thread: questions, answers, two drafts
    log.add(ev.ThreadOpened, i["idea"], idea=f"my {w} garden", user_id=user, max_questions=2)
    question = ev.Question(question_id=f"{u}-q1", template_id="t", category="intent", text=f"why {w}?")
    log.add(ev.QuestionsProposed, i["idea"], questions=[question], idea_type="plan", clarity=0.4)
    turn(i["idea"], f"{u}-d1", "draft1", f"plan {w}", f"draft one {w}")
    log.add(
        ev.DraftPresented, i["idea"], job_id=f"{u}-d1", draft_number=1, text=f"draft one {w}", backend="t", model="m"
    )
    log.add(ev.AnswersRecorded, i["idea"], answers=[ev.Answer(question_id=f"{u}-q1", text=f"because {w}")])
    # a chat session's turn (a memory)
    log.add(ev.ThreadOpened, i["chat"], idea=f"hello {w}", user_id=user, kind="chat", origin={"session_key": u})
    turn(i["chat"], f"{u}-t1", "chat", f"my dog is {w}", f"nice dog {w}")
    # a workflow
    log.add(ev.ThreadOpened, i["flow"], idea=f"flow {w}", user_id=user, kind="workflow")
    log.add(ev.WorkflowPlanned, i["flow"], steps=[ev.WorkflowStep(step_id="s1", prompt=f"step {w}")])
    # an agent run: a turn calling a tool that needs an approval
    log.add(ev.ThreadOpened, i["agent"], idea=f"task {w}", user_id=user, kind="agent")
    log.add(ag.AgentRunStarted, i["agent"], task=f"task {w}", profile="coder", user_id=user)
    call = ToolCall(call_id=f"{u}-call", name="shell", arguments={"command": f"rm {w}"})
    log.add(
        ev.JobQueued, i["agent"], job_id=f"{u}-at1", kind="agent_turn", messages=[ChatMessage(role="user", content=w)]
    )
    log.add(ag.ModelTurnCompleted, i["agent"], job_id=f"{u}-at1", iteration=1, text=f"calling {w}", tool_calls=[call])
    log.add(
        ag.ToolCallRequested,
        i["agent"],
        call_id=call.call_id,
        job_id=f"{u}-at1",
        iteration=1,
        name="shell",
        arguments=call.arguments,
        decision="ask",
    )
    log.add(
        ag.ApprovalRequested,
        i["agent"],
        approval_id=f"{u}-appr",
        call_id=call.call_id,
        name="shell",
        arguments=call.arguments,
        binding="b",
        user_id=user,
        reason=f"asks {w}",
        expires_at=NOW + timedelta(hours=1),
    )
    # a schedule with a run (its own thread, still going)
    definition = sc.Definition(
        name=f"daily {w}", when=sc.When(kind="cron", cron="0 9 * * *"), action=sc.Action(kind="idea", text=f"do {w}")
    )
    log.add(sc.ScheduleCreated, i["schedule"], user_id=user, definition=definition)
    log.add(sc.ScheduleFired, i["schedule"], due_key="k1", run_id=i["run"], reason="manual", detail=f"fired {w}")
    log.add(ev.ThreadOpened, i["run"], idea=f"do {w}", user_id=user, origin={"schedule_id": i["schedule"]})
    # project memory, a skill proposal, a learned preference
    log.add(
        pm.MemoryEntryRecorded,
        i["entry"],
        entry_id=i["entry"],
        user_id=user,
        project="default",
        kind="decision",
        text=f"we use {w}",
        key=f"decision:{u}",
        source_session=i["chat"],
        relevance=0.8,
    )
    log.add(
        sp.SkillProposed,
        i["proposal"],
        user_id=user,
        skill=f"{u}skill",
        rationale=f"for {w}",
        files={f"{u}skill/run.py": f"print('{w}')"},
    )
    log.add(
        ev.PreferenceLearned,
        i["pref"],
        user_id=user,
        category="style",
        key="tone",
        value=f"{w} tone",
        votes={f"{w} tone": 1.0},
        confidence=0.9,
        stability=0.9,
        observations=3,
        source="answer",
        evidence=f"said {w}",
    )
    kinds = {
        "idea": "thread",
        "chat": "thread",
        "agent": "thread",
        "flow": "thread",
        "run": "thread",
        "schedule": "schedule",
        "entry": "memory_entry",
        "proposal": "skill_proposal",
        "pref": "preference",
    }
    return log.events, [f"{kind}.{i[name]}" for name, kind in kinds.items()]


def _forgotten(key_ids: list[str], user_id: str = "") -> PersonalDataForgotten:
    return PersonalDataForgotten(
        event_id=f"forget-{user_id}-{len(key_ids)}",
        aggregate_id="privacy-1",
        occurred_at=NOW + timedelta(hours=1),
        correlation_id="forget",
        user_id=user_id,
        key_ids=key_ids,
    )


def _engine(path: Path) -> Engine:
    return readmodel.make_engine(f"sqlite:///{path}")


def _build(path: Path, events: list[Event]) -> tuple[Engine, ThreadFold]:
    """A read model and a fold with ``events`` applied, as the projection applies them (fold first, then rows)."""
    engine = _engine(path)
    fold = ThreadFold.load(engine)
    fold.apply(list(enumerate(events, 1)), len(events))
    readmodel.apply_events(readmodel.row_store(engine), events, len(events))
    return engine, fold


def _tables(engine: Engine) -> dict[str, list[tuple]]:
    """Every row of every read-model table but the position, sorted."""
    with engine.connect() as conn:
        return {
            cls.__table__.name: sorted(map(tuple, conn.execute(select(cls.__table__))), key=repr)
            for cls in readmodel.ROWS
            if cls is not readmodel.Position
        }


def _fold_view(fold: ThreadFold) -> dict[str, object]:
    return {
        "states": sorted(fold.states),
        "closed": sorted(fold.closed),
        "schedules": sorted(fold.schedules),
        "schedule_runs": sorted(fold.schedule_runs.items()),
        "memory": sorted(fold.memory),
        "proposals": sorted(fold.proposals),
        "preferences": sorted((u, sorted(p)) for u, p in fold._preferences.items() if p),
        "preference_users": sorted(fold._preference_users.items()),
    }


def _file_bytes(path: Path, engine: Engine, checkpoint: bool = True) -> bytes:
    """The database file's bytes and its write-ahead log's (``checkpoint``: truncate the log first)."""
    if checkpoint:
        with engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").all()
    wal = path.with_name(path.name + "-wal")
    return path.read_bytes() + (wal.read_bytes() if wal.exists() else b"")


def test_forgetting_a_user_leaves_exactly_the_other_users_rows_and_state(tmp_path):
    a_events, a_keys = _life("a")
    b_events, _ = _life("b")
    mixed = [e for pair in zip(a_events, b_events, strict=True) for e in pair]
    path = tmp_path / "o.db"
    engine, fold = _build(path, mixed)
    tables = _tables(engine)
    assert all(tables[name] for name in tables if name != "user_settings"), "every table has rows before"
    assert SECRET["a"].encode() in _file_bytes(path, engine)
    assert set(user_aggregates(fold, "user-a")) == set(a_keys) - {"preference.a-pref"}  # the fold knows owners

    forget = _forgotten(a_keys, "user-a")
    fold.apply([(len(mixed) + 1, forget)], len(mixed) + 1)
    readmodel.apply_events(readmodel.row_store(engine), [forget], len(mixed) + 1)

    b_engine, b_fold = _build(tmp_path / "b.db", b_events)
    expected = _tables(b_engine)
    assert _tables(engine) == expected
    assert _fold_view(fold) == _fold_view(b_fold)
    assert SECRET["a"] not in repr(vars(fold))
    # as the forget's batch left the file (its checkpoint included), before a restart rebuilds the memory index
    assert SECRET["a"].encode() not in _file_bytes(path, engine, checkpoint=False).lower()
    engine.dispose()

    reopened = _engine(path)  # a fresh engine, nothing cached
    assert _tables(reopened) == expected
    loaded = ThreadFold.load(reopened)
    assert _fold_view(loaded) == _fold_view(ThreadFold.load(b_engine))
    assert "thread.b-idea" in user_aggregates(loaded, "user-b")  # a loaded thread knows its owner too
    with readmodel.row_store(reopened) as store:
        assert readmodel.load_position(store) == len(mixed) + 1
    data = _file_bytes(path, reopened).lower()
    assert SECRET["a"].encode() not in data and b"user-a" not in data
    assert SECRET["b"].encode() in data
    with reopened.connect() as conn:  # the memory index finds B's turn only
        hits = conn.exec_driver_sql("SELECT rowid FROM memory_fts WHERE memory_fts MATCH ?", (SECRET["a"],)).all()
        assert hits == []
        assert conn.exec_driver_sql("SELECT rowid FROM memory_fts WHERE memory_fts MATCH ?", (SECRET["b"],)).all()


def test_forgotten_rows_are_not_written_back_by_a_later_batch(tmp_path):
    """The store's cache holds the rows it deleted as absent: a later event of the same batch or the next one
    neither serves nor rewrites them."""
    a_events, a_keys = _life("a")
    engine, _ = _build(tmp_path / "o.db", a_events)
    store = readmodel.row_store(engine)
    readmodel.apply_events(store, a_events[:3], 3)  # the cache holds the thread's rows
    at = NOW + timedelta(hours=2)
    changed = ev.DraftPresented(  # changes the cached thread row in the forget's batch
        event_id="d2",
        aggregate_id="a-idea",
        occurred_at=at,
        correlation_id="c",
        job_id="j",
        draft_number=2,
        text="draft two",
        backend="t",
        model="m",
    )
    late = ev.ThreadRated(
        event_id="r", aggregate_id="a-idea", occurred_at=at, correlation_id="c", draft_number=1, rating=5
    )
    readmodel.apply_events(store, [changed, _forgotten(a_keys, "user-a"), late], 99)
    readmodel.apply_events(store, [late], 100)
    assert {name: rows for name, rows in _tables(engine).items() if rows} == {}


def test_retention_of_a_schedule_takes_its_runs_threads_and_nothing_else(tmp_path):
    a_events, _ = _life("a")
    path = tmp_path / "o.db"
    engine, fold = _build(path, a_events)
    before = _tables(engine)
    run = _ids("a")["run"]
    assert run in fold.schedule_runs and run in fold.states

    forget = _forgotten(["schedule.a-sched"])  # retention: no user
    fold.apply([(len(a_events) + 1, forget)], len(a_events) + 1)
    readmodel.apply_events(readmodel.row_store(engine), [forget])

    after = _tables(engine)
    assert after["schedules"] == [] and after["schedule_runs"] == []
    assert [r[0] for r in after["threads"]] == sorted(r[0] for r in before["threads"] if r[0] != run)
    assert "a-sched" not in fold.schedules and run not in fold.schedule_runs and run not in fold.states
    assert {"a-idea", "a-chat", "a-agent", "a-flow"} <= set(fold.states)
    for name in ("jobs", "memory_entries", "agent_runs", "approvals", "project_memory", "skill_proposals"):
        assert after[name] == before[name], name


def test_every_table_with_a_user_column_is_forgotten():
    """A new table holding ``user_id`` must say with which aggregate its rows go."""
    listed = {cls for specs in readmodel.FORGET_TABLES.values() for cls, _ in specs}
    owned = {cls for cls in readmodel.ROWS if "user_id" in cls.__columns__}
    assert owned <= listed
