"""Forgetting: a user's data keys destroyed on request (``hermes forget``, ``DELETE /api/me``) or by age (retention).

:class:`ForgetUser` (a command, ``hermes.cmd.forget_user``) asks the orchestrator to destroy every data key owned
by ``user_id`` (:mod:`hermes_proto.keyring`); it then appends :class:`PersonalDataForgotten` naming the keys. Every
process that decodes that event drops the keys from memory, and every read model deletes the rows of the
aggregates it names (and of the user). The sealed events stay in the log, unreadable: the Merkle checkpoints, which
cover the sealed bytes, still verify. Retention appends the same event with ``reason`` ``retention:<kind>``.
"""

from __future__ import annotations

from typing import ClassVar

import msgspec

from hermes_proto.base import Command, Event
from hermes_proto.ids import derived_id

FORGET_REASON_REQUEST = "user_request"


class ForgetUser(Command, frozen=True, kw_only=True):
    """Destroy everything personal of ``user_id`` (``requested_by``: ``self`` from ``DELETE /api/me``, ``admin``
    from the CLI or the admin route)."""

    user_id: str
    requested_by: str = "self"


class PersonalDataForgotten(Event, frozen=True, kw_only=True):
    """The data keys ``key_ids`` (``<aggregate_type>.<aggregate_id>``) are destroyed: the events sealed under them
    can never be read again. ``user_id``: whose they were ("" for retention across users); ``reason``:
    ``user_request`` or ``retention:<aggregate_type>``. Subject ``hermes.evt.privacy.<id>.personal_data_forgotten``."""

    aggregate_type: ClassVar[str] = "privacy"

    user_id: str = ""
    key_ids: list[str] = []
    reason: str = FORGET_REASON_REQUEST


FORGETTING_EVENTS: tuple[type[Event], ...] = (PersonalDataForgotten,)
FORGETTING_COMMANDS: tuple[type[Command], ...] = (ForgetUser,)


def forgotten_aggregates(event: PersonalDataForgotten) -> dict[str, set[str]]:
    """``{aggregate_type: {aggregate_id, ...}}`` of the keys ``event`` names (what a read model deletes)."""
    by_type: dict[str, set[str]] = {}
    for key_id in event.key_ids:
        kind, _, aggregate_id = key_id.partition(".")
        if aggregate_id:
            by_type.setdefault(kind, set()).add(aggregate_id)
    return by_type


def forgotten_event_id(user_id: str, cause_id: str) -> str:
    """The event id of a forget caused by ``cause_id`` (the command's id: a redelivered command appends nothing new)."""
    return derived_id("personal_data_forgotten", user_id, cause_id)


class RetentionPolicy(msgspec.Struct, frozen=True):
    """Per aggregate type, the age (days) after which its data keys are destroyed; an absent type is kept."""

    days: dict[str, float] = {}

    @classmethod
    def parse(cls, text: str) -> RetentionPolicy:
        """``"thread=90,schedule=365"`` -> days per type; raises ValueError naming a bad item (unknown types are
        accepted: :data:`hermes_proto.keyring.PERSONAL` lists the sealed ones)."""
        days: dict[str, float] = {}
        for item in filter(None, (part.strip() for part in text.split(","))):
            kind, sep, value = item.partition("=")
            try:
                limit = float(value)
            except ValueError:
                limit = -1.0
            if not sep or not kind.strip() or limit <= 0:
                raise ValueError(f"retention item {item!r}: expected <aggregate_type>=<days> with days > 0")
            days[kind.strip()] = limit
        return cls(days)

    def expired(self, key_id: str, created_ms: int, now_ms: int) -> bool:
        """Whether the key ``key_id`` created at ``created_ms`` is past its type's limit at ``now_ms``."""
        limit = self.days.get(key_id.partition(".")[0])
        return limit is not None and now_ms - created_ms > limit * 86_400_000
