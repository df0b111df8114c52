"""The schedules' rules without a bus: definitions, due times in a time zone, exactly-once firing by due key, the
missed-run and overlap policies, and the fold the read model stores."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import reduce

import pytest

from hermes_proto import schedules as sc
from hermes_proto.codec import decode_command, decode_event, encode
from hermes_proto.ids import new_id

from hermes_orchestrator import schedule_decide
from hermes_orchestrator.schedule_state import ScheduleState, evolve_schedule

T0 = datetime(2026, 12, 6, 7, 0, tzinfo=UTC)


def definition(**kw) -> sc.Definition:
    base = {
        "name": "briefing",
        "when": sc.When(kind="cron", cron="*/5 * * * *"),
        "action": sc.Action(kind="idea", text="morning briefing"),
    }
    return sc.Definition(**{**base, **kw})


def create(d: sc.Definition | None = None, user: str = "ana") -> tuple[ScheduleState, list]:
    cmd = sc.CreateSchedule(
        command_id=new_id(), issued_at=T0, schedule_id="s1", definition=d or definition(), user_id=user
    )
    events = schedule_decide.manage(cmd, None, T0)
    return fold(events), events


def fold(events: list, state: ScheduleState | None = None) -> ScheduleState:
    result = reduce(evolve_schedule, events, state)
    assert result is not None
    return result


def fire_cmd(due: datetime | None, key: str | None = None, **kw) -> sc.FireSchedule:
    key = key or sc.due_key(due)  # type: ignore[arg-type]
    kw.setdefault("reason", "due")
    return sc.FireSchedule(
        command_id=new_id(), issued_at=due or T0, schedule_id="s1", due_key=key, due_at=due, user_id="ana", **kw
    )


# ---- definitions and due times ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("d", "fragment"),
    [
        (definition(when=sc.When(kind="cron", cron="61 * * * *")), "cron"),
        (definition(when=sc.When(kind="cron", cron="* * * * *", timezone="Mars/Olympus")), "time zone"),
        (definition(when=sc.When(kind="cron", cron="* * * * *", timezone="../../etc/passwd")), "time zone"),
        (definition(when=sc.When(kind="at", at=T0 - timedelta(seconds=1))), "past"),
        (definition(when=sc.When(kind="subject", subject="hermes.cmd.submit_idea")), "subject"),
        (definition(when=sc.When(kind="file", path="../secrets/*")), "glob"),
        (definition(when=sc.When(kind="git", path="relative/repo")), "absolute"),
        (definition(action=sc.Action(kind="idea", text="  ")), "text"),
        (definition(action=sc.Action(kind="workflow")), "steps"),
        (definition(deliver=sc.Delivery(to="telegram")), "chat_id"),
        (definition(deliver=sc.Delivery(to="webhook")), "url"),
    ],
)
def test_a_bad_definition_says_what_is_wrong(d: sc.Definition, fragment: str) -> None:
    problem = sc.problem(d, T0)
    assert problem is not None and fragment in problem


def test_a_good_definition_has_no_problem() -> None:
    assert sc.problem(definition(), T0) is None
    assert sc.problem(definition(when=sc.When(kind="subject", subject="hermes.inbox.event.github.*")), T0) is None


def test_cron_due_times_follow_the_time_zone_and_its_dst_change() -> None:
    when = sc.When(kind="cron", cron="30 2 * * *", timezone="Europe/Berlin")
    # 2026-03-29: clocks jump from 02:00 to 03:00 in Berlin; 02:30 does not exist that day
    due = sc.next_due(when, datetime(2026, 3, 28, 23, 0, tzinfo=UTC))
    assert due == datetime(2026, 3, 29, 1, 0, tzinfo=UTC)  # 03:00 CEST, the first valid minute after
    assert sc.next_due(when, due) == datetime(2026, 3, 30, 0, 30, tzinfo=UTC)  # 02:30 CEST
    winter = sc.next_due(when, datetime(2026, 12, 6, 0, 0, tzinfo=UTC))
    assert winter == datetime(2026, 12, 6, 1, 30, tzinfo=UTC)  # 02:30 CET


def test_dues_between_counts_first_and_last() -> None:
    when = sc.When(kind="cron", cron="*/5 * * * *")
    dues = sc.dues_between(when, T0, T0 + timedelta(minutes=60))
    assert dues == sc.Dues(12, T0 + timedelta(minutes=5), T0 + timedelta(minutes=60))
    assert sc.dues_between(when, T0, T0 + timedelta(minutes=4)) is None
    capped = sc.dues_between(when, T0, T0 + timedelta(days=30), limit=10)
    assert capped is not None and capped.count == 10 and capped.last == T0 + timedelta(days=30)


def test_a_one_shot_is_due_once() -> None:
    when = sc.When(kind="at", at=T0 + timedelta(hours=1))
    assert sc.next_due(when, T0) == T0 + timedelta(hours=1)
    assert sc.next_due(when, T0 + timedelta(hours=1)) is None


@pytest.mark.parametrize(
    ("pattern", "subject", "match"),
    [
        ("hermes.inbox.event.github.*", "hermes.inbox.event.github.push", True),
        ("hermes.inbox.event.github.*", "hermes.inbox.event.github.push.main", False),
        ("hermes.inbox.event.>", "hermes.inbox.event.a.b.c", True),
        ("hermes.inbox.event.>", "hermes.inbox.event", False),
        ("hermes.inbox.event.a", "hermes.inbox.event.b", False),
    ],
)
def test_subject_patterns_match_like_nats(pattern: str, subject: str, match: bool) -> None:
    assert sc.subject_matches(pattern, subject) is match


# ---- exactly once -----------------------------------------------------------------------------------------------


def test_a_due_time_fires_once_however_often_it_is_sent() -> None:
    state, _ = create()
    due = T0 + timedelta(minutes=5)
    first = schedule_decide.fire(fire_cmd(due), state, due + timedelta(milliseconds=40), grace_s=60)
    assert [type(e) for e in first] == [sc.ScheduleFired]
    fired = first[0]
    assert fired.run_id == sc.run_id_of("s1", sc.due_key(due)) and 30 <= fired.lateness_ms <= 50
    state = fold(first, state)
    assert schedule_decide.fire(fire_cmd(due), state, due + timedelta(seconds=1), grace_s=60) == []
    # an earlier due time (a stale timer) is handled too: every due time up to the last fired one is
    earlier = due - timedelta(minutes=5)
    assert schedule_decide.fire(fire_cmd(earlier), state, due, grace_s=60) == []


def test_a_trigger_key_fires_once() -> None:
    state, _ = create(definition(when=sc.When(kind="subject", subject="hermes.inbox.event.x")))
    cmd = fire_cmd(None, key="event:17", reason="trigger", detail="hermes.inbox.event.x")
    events = schedule_decide.fire(cmd, state, T0, grace_s=60)
    assert [type(e) for e in events] == [sc.ScheduleFired]
    state = fold(events, state)
    state = fold([sc.ScheduleRunCompleted(**_env("c"), run_id=events[0].run_id, duration_ms=5)], state)
    assert schedule_decide.fire(cmd, state, T0, grace_s=60) == []


def _env(name: str) -> dict:
    return {"event_id": new_id(), "aggregate_id": "s1", "occurred_at": T0, "correlation_id": name}


# ---- missed runs ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("policy", ["run_once", "skip"])
def test_missed_due_times_follow_the_policy(policy: str) -> None:
    state, _ = create(definition(missed=policy))
    dues = sc.dues_between(state.definition.when, T0, T0 + timedelta(hours=1))
    assert dues is not None
    cmd = fire_cmd(dues.last, reason="catch_up", missed_count=dues.count, first_missed_at=dues.first)
    events = schedule_decide.fire(cmd, state, T0 + timedelta(hours=1, seconds=30), grace_s=60)
    missed = events[0]
    assert isinstance(missed, sc.ScheduleMissed) and missed.count == 12 and missed.first_due_at == dues.first
    if policy == "skip":
        assert len(events) == 1
    else:
        assert isinstance(events[1], sc.ScheduleFired) and events[1].reason == "catch_up"
    state = fold(events, state)
    assert state.last_due_at == dues.last and state.failures_in_row == 1


def test_a_due_time_handled_after_the_grace_is_missed() -> None:
    state, _ = create()
    due = T0 + timedelta(minutes=5)
    late = schedule_decide.fire(fire_cmd(due), state, due + timedelta(seconds=61), grace_s=60)
    assert [type(e) for e in late] == [sc.ScheduleMissed]
    on_time = schedule_decide.fire(fire_cmd(due), state, due + timedelta(seconds=59), grace_s=60)
    assert [type(e) for e in on_time] == [sc.ScheduleFired]


# ---- overlap ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overlap", "expected"),
    [("skip", sc.ScheduleSkipped), ("queue", sc.ScheduleQueued), ("allow", sc.ScheduleFired)],
)
def test_a_firing_while_a_run_goes_follows_the_overlap_policy(overlap: str, expected: type) -> None:
    state, _ = create(definition(overlap=overlap))
    d1, d2 = T0 + timedelta(minutes=5), T0 + timedelta(minutes=10)
    state = fold(schedule_decide.fire(fire_cmd(d1), state, d1, 60), state)
    second = schedule_decide.fire(fire_cmd(d2), state, d2, 60)
    assert [type(e) for e in second] == [expected]
    state = fold(second, state)
    first_run = sc.run_id_of("s1", sc.due_key(d1))
    close = sc.CloseScheduleRun(
        command_id=new_id(), issued_at=d2, schedule_id="s1", run_id=first_run, ended_at=d2 + timedelta(seconds=30)
    )
    closed = schedule_decide.close_run(close, state, d2 + timedelta(seconds=31))
    assert isinstance(closed[0], sc.ScheduleRunCompleted) and closed[0].duration_ms == pytest.approx(330_000)
    if overlap == "queue":  # the queued firing starts when the run ends
        assert isinstance(closed[1], sc.ScheduleFired) and closed[1].reason == "queued"
        assert closed[1].due_key == sc.due_key(d2)
    else:
        assert len(closed) == 1
    state = fold(closed, state)
    assert schedule_decide.close_run(close, state, d2) == []  # closing twice records once


# ---- managing ---------------------------------------------------------------------------------------------------


def test_only_the_owner_changes_pauses_or_deletes() -> None:
    state, _ = create()
    for cmd_type in (sc.PauseSchedule, sc.DeleteSchedule):
        other = cmd_type(command_id=new_id(), issued_at=T0, schedule_id="s1", user_id="eve")
        assert schedule_decide.refusal(other, state, T0) == "not_owner"
        assert schedule_decide.manage(other, state, T0) == []
    pause = sc.PauseSchedule(command_id=new_id(), issued_at=T0, schedule_id="s1", user_id="ana")
    state = fold(schedule_decide.manage(pause, state, T0), state)
    assert state.status == "paused"
    due = T0 + timedelta(minutes=5)
    assert schedule_decide.fire(fire_cmd(due), state, due, 60) == []  # paused: nothing fires, nothing is missed
    resume = sc.ResumeSchedule(command_id=new_id(), issued_at=T0, schedule_id="s1", user_id="ana")
    state = fold(schedule_decide.manage(resume, state, T0 + timedelta(hours=2)), state)
    assert state.status == "active" and state.active_since == T0 + timedelta(hours=2)


def test_an_invalid_or_duplicate_creation_is_refused() -> None:
    state, _ = create()
    again = sc.CreateSchedule(command_id=new_id(), issued_at=T0, schedule_id="s1", definition=definition())
    assert schedule_decide.refusal(again, state, T0) == "schedule_exists"
    bad = sc.CreateSchedule(
        command_id=new_id(),
        issued_at=T0,
        schedule_id="s2",
        definition=definition(when=sc.When(kind="cron", cron="nope")),
    )
    assert schedule_decide.refusal(bad, None, T0) == "invalid_definition"


def test_schedule_messages_round_trip_through_the_codec() -> None:
    state, events = create()
    due = T0 + timedelta(minutes=5)
    events += schedule_decide.fire(fire_cmd(due, detail="x", payload='{"a": 1}'), state, due, 60)
    for e in events:
        assert decode_event(encode(e)) == e
    cmd = fire_cmd(due)
    assert decode_command(encode(cmd)) == cmd
