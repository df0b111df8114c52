"""What the orchestrator takes from ``HERMES_COMMANDS``: each command decoded, and the idea of a ``SubmitIdea`` cleaned
by the one rule for typed text (:func:`hermes_proto.text.clean_text`). The gateway and the notifier clean ideas
before they publish; this covers producers that publish straight to the bus. An idea with nothing visible left is
dead-lettered (reason ``invalid_idea``, the detail says ``empty`` or ``invisible``) rather than opening a thread."""

from __future__ import annotations

import msgspec

from hermes_proto.base import Command
from hermes_proto.codec import DecodeError, decode_command
from hermes_proto.commands import SubmitIdea
from hermes_proto.text import TextRefused, clean_text


def decode(data: bytes) -> Command:
    """The command ``data`` holds, a ``SubmitIdea``'s idea cleaned. Raises :class:`~hermes_proto.codec.DecodeError`:
    ``invalid_json`` / ``validation_failed`` as :func:`~hermes_proto.codec.decode_command`, ``invalid_idea`` for an
    idea that is empty or only invisible characters."""
    command = decode_command(data)
    if not isinstance(command, SubmitIdea):
        return command
    try:
        idea = clean_text(command.idea, "idea")
    except TextRefused as refused:
        raise DecodeError("invalid_idea", f"{refused.reason}: {refused}") from None
    return command if idea == command.idea else msgspec.structs.replace(command, idea=idea)
