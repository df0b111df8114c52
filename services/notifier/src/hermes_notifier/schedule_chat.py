"""``/schedule`` in Telegram, the pure part: what the command's argument asks for and the texts of the replies.

- ``/schedule``: this chat's user's schedules (name, when, next due time, last outcome).
- ``/schedule <minute> <hour> <day> <month> <weekday> [tz=Area/City] <idea>``: a cron schedule of an idea whose
  drafts come to this chat (``/schedule agent <5 fields> ... <task>`` for an agent task).
- ``/schedule pause|resume|rm|run <id>``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from hermes_proto import schedules as sc
from hermes_proto.schedule_queries import ScheduleView

USAGE = (
    "Send /schedule <cron> <idea>, e.g. /schedule 0 7 * * 1-5 tz=Europe/Berlin what is on my plate today; "
    "/schedule agent <cron> <task> for an agent task; /schedule pause|resume|rm|run <id>; /schedule to list."
)
ACTIONS = ("pause", "resume", "rm", "run")
QUERY_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class ScheduleRequest:
    """``kind``: ``list``, ``create`` (``definition``) or one of :data:`ACTIONS` (``schedule_id``); ``usage``
    (``problem`` says what is wrong)."""

    kind: str
    definition: sc.Definition | None = None
    schedule_id: str = ""
    problem: str = ""


def parse(argument: str, chat_id: str) -> ScheduleRequest:
    """What ``/schedule <argument>`` asks for in chat ``chat_id`` (created schedules deliver to that chat)."""
    words = argument.split()
    if not words:
        return ScheduleRequest("list")
    if words[0].lower() in ACTIONS:
        if len(words) != 2:
            return ScheduleRequest("usage", problem=f"Say which schedule: /schedule {words[0].lower()} <id>.")
        return ScheduleRequest(words[0].lower(), schedule_id=words[1][:64])
    kind = "idea"
    if words[0].lower() == "agent":
        kind, words = "agent", words[1:]
    if len(words) < 6:
        return ScheduleRequest("usage", problem="A schedule needs five cron fields and then what to do.")
    cron, rest = " ".join(words[:5]), words[5:]
    timezone = "UTC"
    if rest and rest[0].lower().startswith("tz="):
        timezone, rest = rest[0][3:], rest[1:]
    text = " ".join(rest)
    if not text:
        return ScheduleRequest("usage", problem="Say what to do after the cron fields.")
    definition = sc.Definition(
        name=text[:120],
        when=sc.When(kind="cron", cron=cron, timezone=timezone[:64]),
        action=sc.Action(kind=kind, text=text[:20000]),
        deliver=sc.Delivery(to="telegram", chat_id=chat_id[:32]),
    )
    problem = sc.problem(definition)
    if problem is not None:
        return ScheduleRequest("usage", problem=f"That schedule does not work: {problem}.")
    return ScheduleRequest("create", definition=definition)


def _when(view: ScheduleView) -> str:
    w = view.definition.when
    if w.kind == "cron":
        return f"{w.cron} ({w.timezone})"
    return {"at": f"once at {w.at}", "subject": f"on {w.subject}", "file": f"on file {w.path}"}.get(
        w.kind, f"on commit in {w.path}"
    )


def list_text(views: list[ScheduleView]) -> str:
    if not views:
        return f"No schedules yet\n\n{USAGE}"
    lines = ["Your schedules", ""]
    for v in views:
        due = v.next_due_at.strftime("%Y-%m-%d %H:%M UTC") if v.next_due_at else "-"
        status = "" if v.status == "active" else f" [{v.status}]"
        last = f", last {v.last_outcome}" if v.last_outcome else ""
        lines.append(f"{v.definition.name}{status}\n  {_when(v)}, next {due}{last}\n  id {v.schedule_id}")
    return "\n".join(lines)


def created_text(schedule_id: str, definition: sc.Definition) -> str:
    due = sc.next_due(definition.when, datetime.now(UTC))
    when = due.strftime("%Y-%m-%d %H:%M UTC") if due else "-"
    return f"Scheduled: {definition.name}\n\nFirst run {when}; results come to this chat.\nid {schedule_id}"
