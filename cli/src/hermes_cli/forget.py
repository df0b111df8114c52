"""``hermes forget --user U [--yes] [--timeout S] [--json]``: destroy every data key of one user (crypto-shredding,
:mod:`hermes_proto.forgetting`), straight over NATS as the ``admin`` role (:mod:`hermes_cli.busadmin`).

It sends ``ForgetUser(user_id=U, requested_by="admin")`` on ``hermes.cmd.forget_user`` and follows ``HERMES_EVENTS``
from the log's end before the send until the orchestrator's ``PersonalDataForgotten`` caused by that command
arrives. Without ``--yes`` the operator confirms by typing the user id on a terminal.

Exit codes: 0 forgotten; 1 the typed user id did not match (nothing sent); 2 bad usage (a malformed user id, or no
terminal to confirm on and no ``--yes``); 3 NATS unreachable (or JetStream did not take the command); 4 no
``PersonalDataForgotten`` within ``--timeout`` seconds (the command was sent: the orchestrator may still apply it).
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
from dataclasses import dataclass
from typing import Annotated, Any

import typer

from hermes_cli.busadmin import NatsOption, with_bus
from hermes_cli.common import EXIT_ERROR, EXIT_UNREACHABLE, EXIT_USAGE, fail

EXIT_TIMEOUT = 4
DEFAULT_TIMEOUT_S = 30.0
USER_ID = re.compile(r"[A-Za-z0-9_:@.+-]{1,128}")
"""``hermes_proto.queries.USER_ID_PATTERN`` (the gateway's rule for a user id)."""


@dataclass(frozen=True)
class Outcome:
    """What one forget came to: ``sequence`` is the ``HERMES_EVENTS`` sequence of the ``PersonalDataForgotten``
    event (None: it did not arrive in time), ``key_ids`` the data keys it names."""

    user_id: str
    command_id: str
    sequence: int | None = None
    key_ids: tuple[str, ...] = ()


async def send_and_wait(js: Any, user_id: str, timeout_s: float) -> Outcome:
    """Send ``ForgetUser`` for ``user_id`` and wait up to ``timeout_s`` seconds for its ``PersonalDataForgotten``
    (``causation_id`` = the command id), following ``hermes.evt.privacy.*.personal_data_forgotten`` from the
    stream's last sequence before the send. Raises the bus's errors (``hermes_proto.rpc.BUS_ERRORS``)."""
    from nats.js.api import ConsumerConfig, DeliverPolicy

    from hermes_proto import subjects
    from hermes_proto.bus import EventStore, resume_after
    from hermes_proto.codec import DecodeError, decode_event
    from hermes_proto.forgetting import ForgetUser, PersonalDataForgotten
    from hermes_proto.ids import new_id, utcnow

    command_id = new_id()
    command = ForgetUser(command_id=command_id, issued_at=utcnow(), user_id=user_id, requested_by="admin")
    position = (await js.stream_info(subjects.EVENTS_STREAM)).state.last_seq
    found: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()

    async def on_msg(msg: Any) -> None:
        try:
            event = decode_event(msg.data)
        except DecodeError:
            return
        if type(event) is PersonalDataForgotten and event.causation_id == command_id and not found.done():
            found.set_result(Outcome(user_id, command_id, msg.metadata.sequence.stream, tuple(event.key_ids)))

    sub = await js.subscribe(
        subjects.event_type_filter(PersonalDataForgotten),
        stream=subjects.EVENTS_STREAM,
        cb=on_msg,
        ordered_consumer=True,
        idle_heartbeat=2.0,
        config=ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=position + 1),
    )
    resume_after(sub, position)
    try:
        await EventStore(js, "cli").send(command)
        try:
            return await asyncio.wait_for(found, timeout_s)
        except TimeoutError:
            return Outcome(user_id, command_id)
    finally:
        try:
            await sub.unsubscribe()
        except Exception:  # noqa: BLE001 - the connection closes next anyway
            pass


def _confirm(user_id: str) -> None:
    if not sys.stdin.isatty():
        raise fail(
            f"refusing to forget {user_id} without confirmation: standard input is not a terminal",
            "Pass --yes to confirm non-interactively.",
            EXIT_USAGE,
        )
    typer.echo(
        f"This destroys every data key of user {user_id}: their threads, sessions, preferences, memory and "
        "schedules become unreadable for good (backups cannot bring the keys back).",
        err=True,
    )
    try:
        typed = typer.prompt(f"Type the user id ({user_id}) to confirm", default="", show_default=False, err=True)
    except (typer.Abort, EOFError):
        typed = ""
    if typed.strip() != user_id:
        raise fail(
            f"not confirmed: you typed {typed.strip()!r}, not {user_id!r}; nothing was forgotten", code=EXIT_ERROR
        )


def forget(
    user: Annotated[str, typer.Option("--user", help="The user id whose data keys are destroyed.")],
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask to type the user id to confirm.")] = False,
    timeout: Annotated[
        float, typer.Option("--timeout", min=0.1, help="Seconds to wait for the orchestrator's confirmation.")
    ] = DEFAULT_TIMEOUT_S,
    as_json: Annotated[
        bool, typer.Option("--json", help='Print {"user_id", "keys_destroyed", "key_ids", "sequence", ...}.')
    ] = False,
    nats_url: NatsOption = None,
) -> None:
    """Forget a user for good: destroy their data keys (operator, over NATS as admin). Exit 0 forgotten, 1 not
    confirmed, 2 bad usage or no terminal without --yes, 3 NATS unreachable, 4 timed out waiting."""
    if not USER_ID.fullmatch(user):
        raise fail(
            f"--user {user!r} is not a user id (1-128 letters, digits or '_', ':', '@', '.', '+', '-')", code=EXIT_USAGE
        )
    if not yes:
        _confirm(user)
    from hermes_proto.rpc import BUS_ERRORS

    async def call(nc: Any, js: Any) -> Outcome:
        return await send_and_wait(js, user, timeout)

    try:
        outcome = asyncio.run(with_bus(nats_url, call))
    except BUS_ERRORS as exc:
        raise fail(
            f"JetStream did not take the command ({type(exc).__name__}: {exc}); nothing was forgotten",
            "Is Hermes running (hermes up)?",
            EXIT_UNREACHABLE,
        ) from None
    if outcome.sequence is None:
        if as_json:
            typer.echo(json.dumps({"user_id": user, "command_id": outcome.command_id, "status": "pending"}))
        raise fail(
            f"no confirmation within {timeout:g} s that {user} is forgotten (command {outcome.command_id} was sent)",
            "It stays in HERMES_COMMANDS: the orchestrator applies it once it runs (see its log).",
            EXIT_TIMEOUT,
        )
    if as_json:
        document = {
            "user_id": user,
            "keys_destroyed": len(outcome.key_ids),
            "key_ids": list(outcome.key_ids),
            "sequence": outcome.sequence,
            "command_id": outcome.command_id,
            "status": "forgotten",
        }
        typer.echo(json.dumps(document))
        return
    typer.echo(f"forgotten: user {user}, {len(outcome.key_ids)} data keys destroyed (sequence {outcome.sequence})")
