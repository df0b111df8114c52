"""JSON encoding of every Hermes message, and decoding against the tagged unions.

Decoding never raises anything but :class:`DecodeError`; callers dead-letter on it. An unknown ``type`` tag is
an error (``validation_failed``); unknown fields are ignored (forward compatibility).

Schema versions. Every event and command carries ``schema_version``; a type's current version is the default of
that field (1 for every type but :class:`~hermes_proto.commands.SubmitIdea`, now 2). The rule:

* An additive change (a new field with a default) keeps the version: an older consumer ignores the new field, a
  newer one reads the default from an older payload.
* Any other change (a field moved, renamed, retyped, or its meaning changed) bumps that type's version and
  registers in :data:`UPCASTERS` a function turning a payload of version *v* (a JSON object as a dict) into
  version *v + 1*. A payload of an older version runs the chain up to the current version and is then decoded;
  every older version must stay decodable, so an upcaster is never removed.
* A payload without ``schema_version`` counts as current; one newer than known is decoded as the current version
  (its unknown fields ignored).

Current-version payloads take the fast path, one typed msgspec decode; only a payload whose decoded
``schema_version`` is older than its type's (or one that fails validation and says it is older) is decoded a
second time as a dict for upcasting.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Union

import msgspec

from hermes_proto.base import Command, Event
from hermes_proto.commands import ALL_COMMANDS, SubmitIdea
from hermes_proto.deadletter import DeadLetter
from hermes_proto.events import ALL_EVENTS
from hermes_proto.execution import ExecutionRequested, Heartbeat
from hermes_proto.forgetting import FORGETTING_COMMANDS, FORGETTING_EVENTS, PersonalDataForgotten
from hermes_proto.inbox import TelegramUpdate
from hermes_proto.integrity import INTEGRITY_EVENTS
from hermes_proto.keyring import MAGIC, SealError, active, sealed_header
from hermes_proto.schedules import SCHEDULE_COMMANDS, SCHEDULE_EVENTS
from hermes_proto.skill_proposals import PROPOSAL_COMMANDS, PROPOSAL_EVENTS

_encoder = msgspec.json.Encoder()

EVENT_TYPES: tuple[type[Event], ...] = (
    ALL_EVENTS + SCHEDULE_EVENTS + PROPOSAL_EVENTS + INTEGRITY_EVENTS + FORGETTING_EVENTS
)
"""Every event type the log holds (the schedules' own module imports the events, so they join here)."""
COMMAND_TYPES: tuple[type[Command], ...] = ALL_COMMANDS + SCHEDULE_COMMANDS + PROPOSAL_COMMANDS + FORGETTING_COMMANDS
"""Every command type."""
EventUnion = Union[EVENT_TYPES]  # type: ignore[valid-type]  # noqa: UP007 (a union of a tuple)
CommandUnion = Union[COMMAND_TYPES]  # type: ignore[valid-type]  # noqa: UP007

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]
"""Turns one payload of version *v* into version *v + 1* (``schema_version`` is set by the caller)."""


UNDECODABLE = (msgspec.DecodeError, UnicodeDecodeError, RecursionError)
"""What msgspec raises on bytes it cannot decode: its own errors, and UnicodeDecodeError (invalid UTF-8 inside a
string) or RecursionError (nesting past its depth limit)."""


class DecodeError(ValueError):
    """The payload is not valid JSON, has an unknown ``type``, or fails validation (also after upcasting).
    ``reason`` is a short machine-readable code: ``invalid_json``, ``validation_failed``, for a sealed payload
    ``forgotten`` (its key is destroyed: readers skip it), ``key_unavailable`` or ``unsealable`` (and a consumer's
    own checks after decoding, e.g. ``invalid_idea``)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def _submit_idea_v1(payload: dict[str, Any]) -> dict[str, Any]:
    """SubmitIdea 1 -> 2: ``callback_url`` and ``source_app`` move out of ``origin`` into fields of their own
    (a field the payload already sets wins)."""
    origin = payload.get("origin")
    if not isinstance(origin, dict):
        return payload  # not an object: validation reports it
    rest = dict(origin)
    moved = {key: rest.pop(key) for key in ("callback_url", "source_app") if key in rest}
    upcast = {**payload, "origin": rest}
    for key, value in moved.items():
        if upcast.get(key) is None:
            upcast[key] = value
    return upcast


UPCASTERS: dict[type[Event] | type[Command], dict[int, Upcaster]] = {
    SubmitIdea: {1: _submit_idea_v1},
}
"""Per message type, the upcaster from each older version to the next."""


def current_version(message_type: type[Event] | type[Command]) -> int:
    """The schema version ``message_type`` is encoded with (its ``schema_version`` default)."""
    return next(f.default for f in msgspec.structs.fields(message_type) if f.name == "schema_version")


class _Family:
    """The decoder of one tagged union and, per tag, the type, its current version and its upcasters."""

    def __init__(self, types: tuple[type, ...]) -> None:
        self.decoder = msgspec.json.Decoder(Union[types])  # type: ignore[valid-type]  # noqa: UP007
        self.current = {t: current_version(t) for t in types}
        self.by_tag = {t.type_name(): t for t in types}
        for message_type, version in self.current.items():
            missing = [v for v in range(1, version) if v not in UPCASTERS.get(message_type, {})]
            if missing:  # a bump without its upcaster would make stored messages undecodable
                raise RuntimeError(f"{message_type.__name__} has no upcaster from schema version(s) {missing}")

    def decode(self, data: bytes) -> Any:
        try:
            message = self.decoder.decode(data)
        except msgspec.ValidationError as exc:
            return self._upcast(data, str(exc))
        except UNDECODABLE as exc:
            raise DecodeError("invalid_json", str(exc)) from None
        if message.schema_version < self.current[type(message)]:
            return self._upcast(data, None)
        return message

    def _upcast(self, data: bytes, error: str | None) -> Any:
        """Decode ``data`` through the upcaster chain of its type; ``error``: why the typed decode failed (raised
        again when the payload is not of an older version)."""
        try:  # the typed decode may have stopped at a type error before the JSON breaks
            raw = msgspec.json.decode(data)
        except UNDECODABLE as exc:
            raise DecodeError("invalid_json", str(exc)) from None
        tag = raw.get("type") if isinstance(raw, dict) else None
        message_type = self.by_tag.get(tag) if isinstance(tag, str) else None
        version = raw.get("schema_version") if message_type is not None else None
        if message_type is None or type(version) is not int or not 1 <= version < self.current[message_type]:
            raise DecodeError("validation_failed", error or f"unknown schema_version {version!r}")
        for step in range(version, self.current[message_type]):
            raw = {**UPCASTERS[message_type][step](raw), "schema_version": step + 1}
        try:
            return self.decoder.decode(_encoder.encode(raw))
        except msgspec.ValidationError as exc:
            raise DecodeError("validation_failed", f"{exc} (upcast from schema version {version})") from None


_events = _Family(EVENT_TYPES)
_commands = _Family(COMMAND_TYPES)
_exec_decoder = msgspec.json.Decoder(ExecutionRequested)
_heartbeat_decoder = msgspec.json.Decoder(Heartbeat)
_dead_letter_decoder = msgspec.json.Decoder(DeadLetter)
_telegram_update_decoder = msgspec.json.Decoder(TelegramUpdate)


def encode(message: Any) -> bytes:
    """Encode any msgspec Struct (event, command, request) to JSON bytes."""
    return _encoder.encode(message)


def _decode(decoder: msgspec.json.Decoder, data: bytes) -> Any:
    try:
        return decoder.decode(data)
    except msgspec.ValidationError as exc:
        raise DecodeError("validation_failed", str(exc)) from None
    except UNDECODABLE as exc:
        raise DecodeError("invalid_json", str(exc)) from None


def decode_dead_letter(data: bytes) -> DeadLetter:
    """One ``HERMES_DLQ`` record; raises :class:`DecodeError`."""
    return _decode(_dead_letter_decoder, data)


def decode_telegram_update(data: bytes) -> TelegramUpdate:
    """One Telegram ``Update`` (:mod:`hermes_proto.inbox`); raises :class:`DecodeError`."""
    return _decode(_telegram_update_decoder, data)


def unseal(data: bytes) -> bytes:
    """``data`` itself, or the JSON inside it when it is sealed (:mod:`hermes_proto.keyring`), opened with the
    process's keyring; raises :class:`DecodeError` (``forgotten``, ``key_unavailable``, ``unsealable``)."""
    if data[:4] != MAGIC:
        return data
    keyring = active()
    if keyring is None:
        raise DecodeError("key_unavailable", "a sealed payload and no keyring in this process")
    try:
        return keyring.open(data)
    except SealError as exc:
        raise DecodeError(exc.reason, str(exc)) from None


def check_subject(event: Event, subject: str) -> None:
    """Raise :class:`DecodeError` (``subject_mismatch``) unless ``subject`` is ``event``'s own
    (``hermes.evt.<aggregate_type>.<aggregate_id>.<type>``): a role may append only on its granted subjects, so an
    event of another type smuggled onto one of them (a forged ``PersonalDataForgotten``) is refused by readers."""
    parts = subject.split(".")
    if len(parts) != 5 or parts[2] != event.aggregate_type or parts[4] != event.type_name():
        raise DecodeError("subject_mismatch", f"{event.type_name()} on {subject}")


def decode_event(data: bytes, subject: str | None = None) -> Event:
    """Decode one event, sealed or not (upcast from an older schema version); raises :class:`DecodeError`. With
    its stored ``subject`` the event must be on its own (:func:`check_subject`), and a
    :class:`~hermes_proto.forgetting.PersonalDataForgotten` then drops the keys it names from this process's keyring
    (without the subject nothing is dropped: a forged one on another subject must not)."""
    event = _events.decode(unseal(data))
    if subject is not None:
        check_subject(event, subject)
        if type(event) is PersonalDataForgotten:
            keyring = active()
            if keyring is not None:
                keyring.forget_loaded(event.key_ids, int(event.occurred_at.timestamp() * 1000))
    return event


def decode_command(data: bytes) -> Command:
    """Decode one command, sealed or not (upcast from an older schema version); raises :class:`DecodeError`."""
    return _commands.decode(unseal(data))


class _ThreadRef(msgspec.Struct):
    thread_id: Any = None
    schedule_id: Any = None
    proposal_id: Any = None


_thread_ref = msgspec.json.Decoder(_ThreadRef)


def command_thread_id(data: bytes) -> str:
    """The ``thread_id`` of an encoded command, read without decoding the rest (a few µs): the key that keeps one
    thread's commands in order while different threads' run concurrently. ``""`` when it has none or the bytes
    are not a JSON object (such a message is dead-lettered by the real decode). A schedule's command (no thread)
    gives ``schedule:<schedule_id>``, a skill proposal's ``proposal:<proposal_id>``. Never raises."""
    if data[:4] == MAGIC:  # sealed under its aggregate's key: the key id names it (a bad header: "")
        header = sealed_header(data)
        if header is None:
            return ""
        kind, _, aggregate_id = header[0].partition(".")
        return aggregate_id if kind == "thread" else f"{kind}:{aggregate_id}"
    try:
        ref = _thread_ref.decode(data)
    except (msgspec.DecodeError, RecursionError, UnicodeDecodeError):
        return ""
    if isinstance(ref.thread_id, str):
        return ref.thread_id
    if isinstance(ref.schedule_id, str):
        return f"schedule:{ref.schedule_id}"
    return f"proposal:{ref.proposal_id}" if isinstance(ref.proposal_id, str) else ""


def decode_execution_request(data: bytes) -> ExecutionRequested:
    """Decode one execution request, sealed or not; raises :class:`DecodeError`."""
    return _decode(_exec_decoder, unseal(data))


def decode_heartbeat(data: bytes) -> Heartbeat:
    """Decode one edge heartbeat; raises :class:`DecodeError`."""
    return _decode(_heartbeat_decoder, data)
