"""What the stream says the notary last did (read at start and after an unacknowledged append)."""

from __future__ import annotations

import msgspec
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from hermes_proto import subjects
from hermes_proto.integrity import (
    ATTESTATION_SUBJECT,
    CHECKPOINT_SUBJECT,
    HANDOFF_SUBJECT,
    CheckpointSigned,
    IdentityHandedOff,
    SoulAttested,
)


class LogHead(msgspec.Struct, kw_only=True):
    """What the stream says the notary last did: the last checkpoint (and its sequence), attestation, handoff."""

    checkpoint: CheckpointSigned | None = None
    checkpoint_seq: int = 0
    attestation: SoulAttested | None = None
    handoff: IdentityHandedOff | None = None
    current_key: str | None = None


async def read_head(js: JetStreamContext) -> LogHead:
    """The last checkpoint, attestation and handoff stored in ``HERMES_EVENTS`` and the key that signed last."""
    head = LogHead()
    latest: list[tuple[int, str]] = []
    for subject, kind in (
        (CHECKPOINT_SUBJECT, CheckpointSigned),
        (ATTESTATION_SUBJECT, SoulAttested),
        (HANDOFF_SUBJECT, IdentityHandedOff),
    ):
        try:
            raw = await js.get_last_msg(subjects.EVENTS_STREAM, subject)
        except NotFoundError:
            continue
        event = msgspec.json.decode(raw.data, type=kind)
        if isinstance(event, CheckpointSigned):
            head.checkpoint, head.checkpoint_seq = event, raw.seq
        elif isinstance(event, SoulAttested):
            head.attestation = event
        else:
            head.handoff = event
        latest.append((raw.seq, event.public_key))
    if latest:
        head.current_key = max(latest)[1]
    return head
