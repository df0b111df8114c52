"""Schedules: an aggregate (``aggregate_type`` ``schedule``, subjects ``hermes.evt.schedule.<id>.<type>``) that starts
a run (an idea, an agent task or a workflow) when it is due, and the one rule for when that is.

When: a cron expression in a time zone (``croniter``), a one-shot time, or a trigger: an external producer's event on
``hermes.inbox.event.>`` matching a subject pattern, a file created or changed in the project's workspace, a new
commit in a local git repository. Each firing has a **due key** (the due time for cron and one-shot, the trigger's
own id otherwise): a firing is recorded once per schedule and due key, so a restart, a redelivered command or a
trigger seen twice never starts a second run. A due time handled more than the grace after it (Hermes was down) is
recorded as missed (:class:`ScheduleMissed`) and the schedule's ``missed`` policy says whether the latest missed one
runs once (``run_once``) or not at all (``skip``). While a run is going, a due firing follows ``overlap``: ``skip``
(recorded as :class:`ScheduleSkipped`), ``queue`` (:class:`ScheduleQueued`, run when the current one ends) or
``allow``.

Commands carry no thread id, so they travel on ``hermes.cmd.<type>`` (the orchestrator's partition 0 owns every
schedule). The run's thread id is :func:`run_id_of` (schedule id, due key): a firing decided twice opens one thread.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal
from zoneinfo import ZoneInfo

import msgspec
from croniter import croniter

from hermes_proto.base import Command, Event
from hermes_proto.commands import CallbackUrl
from hermes_proto.events import WorkflowStep
from hermes_proto.ids import derived_id
from hermes_proto.subjects import INBOX_EVENTS_PREFIX

TIMED = ("cron", "at")
TRIGGERS = ("subject", "file", "git")
WHEN_KINDS = TIMED + TRIGGERS
ACTIONS = ("idea", "agent", "workflow")
DELIVERIES = ("telegram", "webhook", "inbox", "log")
MISSED_POLICIES = ("run_once", "skip")
OVERLAP_POLICIES = ("skip", "queue", "allow")
FIRE_REASONS = ("due", "catch_up", "trigger", "manual", "queued")
MAX_MISSED_LISTED = 1000
"""Missed due times computed after an outage are counted up to this many (a minutely cron down for a year is one
record with ``count`` 1000, not half a million)."""

_SECOND = timedelta(seconds=1)
PAYLOAD_MAX_CHARS = 8000
"""A trigger's event payload handed to the run (as untrusted data), cut to this many characters."""
ScheduleId = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=120)]


class When(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """When a schedule is due. ``kind`` ``cron``: ``cron`` (5 fields, or 6 with seconds) in ``timezone`` (IANA
    name); ``at``: the one-shot time ``at`` (aware); ``subject``: a NATS subject pattern under
    :data:`INBOX_EVENTS_PREFIX`; ``file``: a glob (``path``) relative to the project's workspace; ``git``: the
    absolute ``path`` of a local git repository (its ``HEAD``). :func:`problem` says what is wrong with one."""

    kind: Literal["cron", "at", "subject", "file", "git"]
    cron: Annotated[str, msgspec.Meta(max_length=200)] | None = None
    timezone: Annotated[str, msgspec.Meta(max_length=64)] = "UTC"
    at: datetime | None = None
    subject: Annotated[str, msgspec.Meta(max_length=256)] | None = None
    path: Annotated[str, msgspec.Meta(max_length=1024)] | None = None


class Action(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What a firing runs: ``idea`` (the draft flow on ``text``), ``agent`` (``text`` is the task; ``profile``
    None: picked from the task) or ``workflow`` (``steps``). ``project`` is the budget scope and workspace."""

    kind: Literal["idea", "agent", "workflow"]
    text: Annotated[str, msgspec.Meta(max_length=20000)] = ""
    profile: Annotated[str, msgspec.Meta(max_length=32)] | None = None
    project: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] = "default"
    steps: list[WorkflowStep] = []
    private: bool = False
    priority: Annotated[int, msgspec.Meta(ge=1, le=10)] = 5


class Delivery(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Where a run's result goes: ``telegram`` (``chat_id``), ``webhook`` (``url``, the notifier's callback
    delivery), ``inbox`` (the web UI: the schedule's runs) or ``log`` (nowhere but the log)."""

    to: Literal["telegram", "webhook", "inbox", "log"] = "inbox"
    chat_id: Annotated[str, msgspec.Meta(max_length=32)] | None = None
    url: CallbackUrl | None = None


class Definition(msgspec.Struct, frozen=True, kw_only=True):
    """Everything a schedule is: ``name``, ``when``, ``action``, ``deliver`` and its policies."""

    name: Name
    when: When
    action: Action
    deliver: Delivery = Delivery()
    missed: Literal["run_once", "skip"] = "skip"
    overlap: Literal["skip", "queue", "allow"] = "skip"


# ---- events ---------------------------------------------------------------------------------------------------


class _ScheduleEvent(Event, frozen=True, kw_only=True):
    aggregate_type = "schedule"


class ScheduleCreated(_ScheduleEvent, frozen=True, kw_only=True):
    """A schedule of ``user_id`` began; ``baseline`` is what a trigger had already seen (a git ``HEAD``)."""

    user_id: str
    definition: Definition
    channel: str = "api"
    baseline: str = ""


class ScheduleChanged(_ScheduleEvent, frozen=True, kw_only=True):
    """The whole new ``definition`` (what was not changed is repeated); ``baseline`` as in the creation."""

    user_id: str
    definition: Definition
    baseline: str = ""


class SchedulePaused(_ScheduleEvent, frozen=True, kw_only=True):
    user_id: str


class ScheduleResumed(_ScheduleEvent, frozen=True, kw_only=True):
    """Due times from here on count; those that passed while paused are neither run nor missed."""

    user_id: str


class ScheduleDeleted(_ScheduleEvent, frozen=True, kw_only=True):
    user_id: str


class ScheduleFired(_ScheduleEvent, frozen=True, kw_only=True):
    """A run started for ``due_key``: thread ``run_id``. ``due_at`` (None for a trigger), ``lateness_ms`` from
    due (or from the trigger's arrival) to this decision; ``detail`` names the trigger (subject, file, commit)."""

    due_key: str
    due_at: datetime | None = None
    run_id: str
    reason: Literal["due", "catch_up", "trigger", "manual", "queued"]
    lateness_ms: float = 0.0
    detail: str = ""
    payload: str = ""


class ScheduleMissed(_ScheduleEvent, frozen=True, kw_only=True):
    """``count`` due times passed unhandled (Hermes down), the first ``first_due_at``, the last ``due_key`` /
    ``due_at``; ``policy`` the schedule's ``missed`` policy (``run_once``: a :class:`ScheduleFired` follows)."""

    due_key: str
    due_at: datetime
    first_due_at: datetime
    count: int = 1
    policy: Literal["run_once", "skip"]


class ScheduleSkipped(_ScheduleEvent, frozen=True, kw_only=True):
    """A due firing not run because ``running`` (a run id) was still going and ``overlap`` is ``skip``."""

    due_key: str
    due_at: datetime | None = None
    running: str


class ScheduleQueued(_ScheduleEvent, frozen=True, kw_only=True):
    """A due firing waits for the current run to end (``overlap`` ``queue``)."""

    due_key: str
    due_at: datetime | None = None
    detail: str = ""
    payload: str = ""


class ScheduleRunCompleted(_ScheduleEvent, frozen=True, kw_only=True):
    """Run ``run_id`` completed after ``duration_ms``."""

    run_id: str
    duration_ms: float


class ScheduleRunFailed(_ScheduleEvent, frozen=True, kw_only=True):
    run_id: str
    duration_ms: float
    error_code: str
    message: str = ""


SCHEDULE_EVENTS: tuple[type[Event], ...] = (
    ScheduleCreated,
    ScheduleChanged,
    SchedulePaused,
    ScheduleResumed,
    ScheduleDeleted,
    ScheduleFired,
    ScheduleMissed,
    ScheduleSkipped,
    ScheduleQueued,
    ScheduleRunCompleted,
    ScheduleRunFailed,
)


# ---- commands -------------------------------------------------------------------------------------------------


class CreateSchedule(Command, frozen=True, kw_only=True):
    """Create schedule ``schedule_id`` (a subject token, chosen by the producer) of ``user_id``."""

    schedule_id: ScheduleId
    definition: Definition
    user_id: str = "local"
    channel: str = "api"


class ChangeSchedule(Command, frozen=True, kw_only=True):
    """Replace the definition of ``schedule_id`` (only its owner's change applies)."""

    schedule_id: ScheduleId
    definition: Definition
    user_id: str = "local"


class PauseSchedule(Command, frozen=True, kw_only=True):
    schedule_id: ScheduleId
    user_id: str = "local"


class ResumeSchedule(Command, frozen=True, kw_only=True):
    schedule_id: ScheduleId
    user_id: str = "local"


class DeleteSchedule(Command, frozen=True, kw_only=True):
    schedule_id: ScheduleId
    user_id: str = "local"


class FireSchedule(Command, frozen=True, kw_only=True):
    """Fire ``schedule_id`` for ``due_key``: the orchestrator's timer (``due``, ``catch_up`` with
    ``missed_count`` earlier due times since ``first_missed_at``), a trigger (``trigger``, ``detail`` says what,
    ``seen_at`` when it arrived, ``payload`` the event's data) or a person (``manual``, ``user_id``)."""

    schedule_id: ScheduleId
    due_key: Annotated[str, msgspec.Meta(min_length=1, max_length=300)]
    due_at: datetime | None = None
    reason: Literal["due", "catch_up", "trigger", "manual", "queued"] = "manual"
    detail: Annotated[str, msgspec.Meta(max_length=500)] = ""
    payload: Annotated[str, msgspec.Meta(max_length=PAYLOAD_MAX_CHARS)] = ""
    seen_at: datetime | None = None
    missed_count: Annotated[int, msgspec.Meta(ge=0)] = 0
    first_missed_at: datetime | None = None
    user_id: str = "local"


class CloseScheduleRun(Command, frozen=True, kw_only=True):
    """Run ``run_id`` of ``schedule_id`` ended (the orchestrator, on the thread's end): ``error_code`` None when it
    completed."""

    schedule_id: ScheduleId
    run_id: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    ended_at: datetime
    error_code: str | None = None
    message: str = ""


SCHEDULE_COMMANDS: tuple[type[Command], ...] = (
    CreateSchedule,
    ChangeSchedule,
    PauseSchedule,
    ResumeSchedule,
    DeleteSchedule,
    FireSchedule,
    CloseScheduleRun,
)


# ---- the rules --------------------------------------------------------------------------------------------------


def utc(ts: datetime) -> datetime:
    """``ts`` as aware UTC (a naive time is taken as UTC)."""
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def due_key(due_at: datetime) -> str:
    """The due key of a timed firing: its UTC time to the second, ISO 8601 (``2026-12-06T07:00:00Z``)."""
    return utc(due_at).strftime("%Y-%m-%dT%H:%M:%SZ")


def run_id_of(schedule_id: str, key: str) -> str:
    """The thread id of the run for ``key`` (deterministic: ``s-`` + 30 hex characters)."""
    return "s-" + derived_id(schedule_id, key)[:30]


def problem(definition: Definition, now: datetime | None = None) -> str | None:
    """What makes ``definition`` unusable (a sentence), or None. Checks the cron expression and time zone, a
    one-shot time in the past (when ``now`` is given), the trigger's subject or path, and the action's fields."""
    when, action, deliver = definition.when, definition.action, definition.deliver
    if when.kind == "cron":
        if not when.cron or not croniter.is_valid(when.cron):
            return f"invalid cron expression: {when.cron!r}"
        try:
            ZoneInfo(when.timezone)
        except Exception:  # ZoneInfoNotFoundError, ValueError for a malformed key
            return f"unknown time zone: {when.timezone!r}"
    elif when.kind == "at":
        if when.at is None:
            return "a one-shot schedule needs 'at'"
        if now is not None and utc(when.at) <= utc(now):
            return "'at' is in the past"
    elif when.kind == "subject":
        if not when.subject or not when.subject.startswith(INBOX_EVENTS_PREFIX) or " " in when.subject:
            return f"a subject trigger needs a subject pattern under {INBOX_EVENTS_PREFIX}"
    elif when.kind == "file":
        if not when.path or when.path.startswith("/") or ".." in when.path.split("/"):
            return "a file trigger needs a glob relative to the workspace, without '..'"
    elif when.kind == "git" and (not when.path or not when.path.startswith("/")):
        return "a git trigger needs the absolute path of a local repository"
    if action.kind in ("idea", "agent") and not action.text.strip():
        return f"an {action.kind} action needs its text"
    if action.kind == "workflow" and not action.steps:
        return "a workflow action needs steps"
    if deliver.to == "telegram" and not deliver.chat_id:
        return "telegram delivery needs chat_id"
    if deliver.to == "webhook" and not deliver.url:
        return "webhook delivery needs url"
    return None


def next_due(when: When, after: datetime) -> datetime | None:
    """The first due time strictly after ``after`` (aware UTC), or None (a trigger, a one-shot already past).
    Cron times are computed in the schedule's time zone (DST as ``croniter`` handles it: a time skipped by the
    spring change runs at the first valid minute after, a repeated one once)."""
    after = utc(after)
    if when.kind == "at":
        return utc(when.at) if when.at is not None and utc(when.at) > after else None
    if when.kind != "cron" or not when.cron:
        return None
    local = after.astimezone(ZoneInfo(when.timezone))
    return utc(croniter(when.cron, local).get_next(datetime))


class Dues(msgspec.Struct, frozen=True):
    """Due times in an interval: ``count`` of them (capped at :data:`MAX_MISSED_LISTED`), the ``first`` and the
    ``last``."""

    count: int
    first: datetime
    last: datetime


def dues_between(when: When, start: datetime, end: datetime, limit: int = MAX_MISSED_LISTED) -> Dues | None:
    """The due times in (``start``, ``end``] (None: there are none)."""
    first = next_due(when, start)
    if first is None or first > utc(end):
        return None
    if when.kind == "at":
        return Dues(1, first, first)
    local_end = utc(end).astimezone(ZoneInfo(when.timezone))
    last = (
        utc(croniter(when.cron, local_end).get_prev(datetime))
        if next_due(when, end - _SECOND) != utc(end)
        else utc(end)
    )
    count, at = 0, first
    while at is not None and at <= last and count < limit:
        count += 1
        at = next_due(when, at)
    return Dues(count, first, last)


def subject_matches(pattern: str, subject: str) -> bool:
    """Whether ``subject`` matches the NATS ``pattern`` (``*`` one token, ``>`` one or more trailing tokens)."""
    want, got = pattern.split("."), subject.split(".")
    for i, token in enumerate(want):
        if token == ">":
            return len(got) > i
        if i >= len(got) or (token != "*" and token != got[i]):
            return False
    return len(want) == len(got)
