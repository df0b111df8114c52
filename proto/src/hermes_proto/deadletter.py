"""The dead-letter record (stream ``HERMES_DLQ``, subject ``hermes.dlq.<consumer>``)."""

from __future__ import annotations

from datetime import datetime

import msgspec


class DeadLetter(msgspec.Struct, frozen=True, kw_only=True):
    """A message a consumer could not process, kept with everything needed to replay it.

    ``reason``: ``invalid_json``, ``validation_failed``, ``max_deliveries``, ``handler_error``, ``invalid_idea`` (a
    ``SubmitIdea`` whose idea is empty or only invisible characters: :mod:`hermes_orchestrator.intake`);
    ``payload`` is the original body decoded as UTF-8 with replacement characters
    (``payload_b64`` keeps the exact bytes)."""

    consumer: str
    stream: str
    subject: str
    stream_sequence: int
    deliveries: int
    headers: dict[str, str]
    payload: str
    payload_b64: str
    reason: str
    detail: str
    dead_lettered_at: datetime


class DeadLetterReplayed(msgspec.Struct, frozen=True, kw_only=True):
    """An operator re-published the dead letter at ``HERMES_DLQ`` sequence ``dlq_sequence`` (stream
    ``HERMES_DLQ``, subject ``hermes.dlq.replayed.<dlq_sequence>``).

    ``stream``/``subject`` say where it went (the original ones) and ``stream_sequence`` where it landed;
    ``corrected`` is true when the operator replaced the payload; ``replayed_at`` is UTC."""

    dlq_sequence: int
    consumer: str
    stream: str
    subject: str
    stream_sequence: int
    corrected: bool
    replayed_at: datetime
