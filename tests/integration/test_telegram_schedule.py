"""``/schedule`` in Telegram, through the real bus: the notifier (a real process against a real nats-server and the
loopback Bot API) turns it into schedule commands for the chat's user and answers with the list; the test plays the
orchestrator on the wire (it answers the schedule queries and reads the commands from ``HERMES_COMMANDS``)."""

from __future__ import annotations

from datetime import timedelta

import msgspec
from conftest import open_command, wait_until
from nats.js.errors import NotFoundError
from test_telegram_agent import CHAT_A, Bot, bot  # noqa: F401 (the same fixture)

from hermes_proto import schedules as sc
from hermes_proto import subjects
from hermes_proto.codec import encode
from hermes_proto.ids import utcnow
from hermes_proto.schedule_queries import ScheduleQuery, ScheduleReply, SchedulesQuery, SchedulesReply, ScheduleView


async def sent(js, command_type: type) -> list:
    found, seq = [], 1
    while True:
        try:
            raw = await js.get_msg(
                subjects.COMMANDS_STREAM, seq=seq, subject=f"hermes.cmd.{command_type.type_name()}", next=True
            )
        except NotFoundError:
            return found
        found.append(await open_command(raw.data))
        seq = raw.seq + 1


def view(schedule_id: str, user: str) -> ScheduleView:
    return ScheduleView(
        schedule_id=schedule_id,
        user_id=user,
        definition=sc.Definition(
            name="plan my day",
            when=sc.When(kind="cron", cron="0 7 * * 1-5", timezone="Europe/Berlin"),
            action=sc.Action(kind="idea", text="plan my day"),
        ),
        status="active",
        next_due_at=utcnow() + timedelta(hours=3),
        last_outcome="completed",
        created_at=utcnow(),
        updated_at=utcnow(),
    )


async def test_schedule_creates_lists_and_pauses_for_the_chats_user(bot: Bot):  # noqa: F811
    telegram, js, nc = bot.telegram, bot.js, bot.nc
    user = f"telegram:{CHAT_A}"
    asked: list = []

    async def schedules(msg) -> None:
        query = msgspec.json.decode(msg.data, type=SchedulesQuery)
        asked.append(query)
        await msg.respond(encode(SchedulesReply(schedules=[view("sched-1", user)])))

    async def one(msg) -> None:
        query = msgspec.json.decode(msg.data, type=ScheduleQuery)
        mine = query.schedule_id == "sched-1" and query.user_id == user
        await msg.respond(encode(ScheduleReply(found=mine, schedule=view("sched-1", user) if mine else None)))

    await nc.subscribe(subjects.QUERY_SCHEDULES, cb=schedules)
    await nc.subscribe(subjects.QUERY_SCHEDULE, cb=one)

    telegram.push_text(CHAT_A, "/schedule 0 7 * * 1-5 tz=Europe/Berlin plan my day")
    [created] = await wait_until(lambda: sent(js, sc.CreateSchedule), timeout_s=20)
    assert isinstance(created, sc.CreateSchedule) and created.user_id == user and created.channel == "telegram"
    d = created.definition
    assert (d.when.cron, d.when.timezone, d.action.kind, d.action.text) == (
        "0 7 * * 1-5",
        "Europe/Berlin",
        "idea",
        "plan my day",
    )
    assert (d.deliver.to, d.deliver.chat_id) == ("telegram", str(CHAT_A))
    await bot.message(
        CHAT_A, lambda m: m["text"].startswith("Scheduled: plan my day") and created.schedule_id in m["text"]
    )

    telegram.push_text(CHAT_A, "/schedule 61 7 * * * plan")
    await bot.message(CHAT_A, lambda m: "does not work" in m["text"] and "cron" in m["text"])
    assert len(await sent(js, sc.CreateSchedule)) == 1

    telegram.push_text(CHAT_A, "/schedule")
    listing = await bot.message(CHAT_A, lambda m: m["text"].startswith("Your schedules"))
    assert "plan my day" in listing["text"] and "0 7 * * 1-5 (Europe/Berlin)" in listing["text"]
    assert asked and asked[-1].user_id == user  # only this user's schedules are asked for

    telegram.push_text(CHAT_A, "/schedule pause sched-1")
    [paused] = await wait_until(lambda: sent(js, sc.PauseSchedule), timeout_s=20)
    assert (paused.schedule_id, paused.user_id) == ("sched-1", user)
    await bot.message(CHAT_A, lambda m: m["text"] == "Schedule plan my day paused.")

    telegram.push_text(CHAT_A, "/schedule rm someone-elses")
    await bot.message(CHAT_A, lambda m: m["text"].startswith("No schedule someone-elses"))
    assert await sent(js, sc.DeleteSchedule) == []
