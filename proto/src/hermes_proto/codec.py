"""JSON encoding of every Hermes message, and decoding against the tagged unions.

Decoding never raises anything but :class:`DecodeError`; callers dead-letter on it.
Unknown fields are ignored (forward compatibility); an unknown ``type`` tag is an error.
"""

from __future__ import annotations

from typing import Any, Union

import msgspec

from hermes_proto.base import Command, Event
from hermes_proto.commands import ALL_COMMANDS
from hermes_proto.events import ALL_EVENTS
from hermes_proto.execution import ExecutionRequested, Heartbeat

_encoder = msgspec.json.Encoder()

EventUnion = Union[ALL_EVENTS]  # type: ignore[valid-type]
CommandUnion = Union[ALL_COMMANDS]  # type: ignore[valid-type]

_event_decoder = msgspec.json.Decoder(EventUnion)
_command_decoder = msgspec.json.Decoder(CommandUnion)
_exec_decoder = msgspec.json.Decoder(ExecutionRequested)
_heartbeat_decoder = msgspec.json.Decoder(Heartbeat)


class DecodeError(ValueError):
    """The payload is not valid JSON, has an unknown ``type``, or fails validation. ``reason`` is a
    short machine-readable code: ``invalid_json``, ``validation_failed``."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def encode(message: Any) -> bytes:
    """Encode any msgspec Struct (event, command, request) to JSON bytes."""
    return _encoder.encode(message)


def _decode(decoder: msgspec.json.Decoder, data: bytes) -> Any:
    try:
        return decoder.decode(data)
    except msgspec.ValidationError as exc:
        raise DecodeError("validation_failed", str(exc)) from None
    except msgspec.DecodeError as exc:
        raise DecodeError("invalid_json", str(exc)) from None


def decode_event(data: bytes) -> Event:
    """Decode one event; raises :class:`DecodeError`."""
    return _decode(_event_decoder, data)


def decode_command(data: bytes) -> Command:
    """Decode one command; raises :class:`DecodeError`."""
    return _decode(_command_decoder, data)


def decode_execution_request(data: bytes) -> ExecutionRequested:
    """Decode one execution request; raises :class:`DecodeError`."""
    return _decode(_exec_decoder, data)


def decode_heartbeat(data: bytes) -> Heartbeat:
    """Decode one edge heartbeat; raises :class:`DecodeError`."""
    return _decode(_heartbeat_decoder, data)
