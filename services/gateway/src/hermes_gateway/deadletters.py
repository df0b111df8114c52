"""The dead-letter archive (stream ``HERMES_DLQ``) as an operator sees it: records listed newest first and
replayed one at a time, read and written straight through JetStream.

Layout of the stream: :class:`~hermes_proto.deadletter.DeadLetter` records on ``hermes.dlq.<consumer>``
(three tokens) and :class:`~hermes_proto.deadletter.DeadLetterReplayed` markers on
``hermes.dlq.replayed.<dlq_sequence>`` (four tokens, so a filter on records never matches a marker).
A record's id is its ``HERMES_DLQ`` stream sequence.

What can be replayed: only records whose original stream is a work queue, ``HERMES_COMMANDS`` or
``HERMES_EXEC``. Their original message left the stream when it was dead-lettered, so re-publishing it
delivers it once more. A record of ``HERMES_EVENTS`` (a projection's undecodable event, a reactor's failure)
is refused with ``not_replayable``: the event is still in the log, and re-publishing it would append a
second copy that every projection applies again; fix the consumer and let it re-read the log instead. An
execution request dead-lettered for ``max_deliveries`` / ``handler_error`` is refused too: the edge recorded
``ExecutionFailed`` for it and the router already retried or abandoned the job.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from datetime import datetime
from typing import Any

import msgspec
import structlog
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StreamState
from nats.js.errors import APIError, NotFoundError, ServiceUnavailableError

from hermes_proto import subjects as subj
from hermes_proto.bus import MSG_ID
from hermes_proto.codec import UNDECODABLE, DecodeError, decode_command, decode_execution_request, encode
from hermes_proto.deadletter import DeadLetter, DeadLetterReplayed
from hermes_proto.ids import new_id, utcnow

from hermes_gateway.adapters import BUS_ERRORS, BusUnavailable
from hermes_gateway.envelope import ApiError
from hermes_gateway.observability import DEAD_LETTERS_REPLAYED

log = structlog.get_logger("hermes.gateway")

FETCH_BATCH = 256
FETCH_TIMEOUT_S = 2.0
MIN_WINDOW = 128
"""Sequences read per step when listing newest first (doubled each step, so a rare filter costs few steps)."""


class DeadLetterView(msgspec.Struct, kw_only=True):
    """One dead letter as listed. ``dlq_sequence``: its ``HERMES_DLQ`` sequence (the id to replay it with);
    ``stream``/``subject``/``stream_sequence``: where the message was; ``payload``: its body as UTF-8 text;
    ``replayable``: whether :func:`replay_decoder` allows a replay; ``replayed_at`` (UTC) and ``replay``
    (the marker) once replayed, else null."""

    dlq_sequence: int
    consumer: str
    stream: str
    subject: str
    stream_sequence: int
    deliveries: int
    headers: dict[str, str]
    payload: str
    reason: str
    detail: str
    dead_lettered_at: datetime
    replayable: bool
    replayed_at: datetime | None = None
    replay: DeadLetterReplayed | None = None


class DeadLetterPage(msgspec.Struct, kw_only=True):
    """Dead letters newest first; ``next_before``: pass it as ``before`` for the next (older) page, null
    when there is none."""

    dead_letters: list[DeadLetterView]
    next_before: int | None = None


REPLAY_DECODERS: dict[str, Callable[[bytes], Any]] = {
    subj.COMMANDS_STREAM: decode_command,
    subj.EXEC_STREAM: decode_execution_request,
}
"""The work-queue streams whose dead letters can be replayed, with the decoder their consumers use."""


SETTLED_REASONS = ("max_deliveries", "handler_error")
"""Reasons for which the edge already recorded the outcome (``ExecutionFailed(max_deliveries)``, see
``ConsumerSpec.on_give_up``): the router has retried or abandoned that job, so running the old request again
would execute it twice."""


def replay_decoder(record: DeadLetter) -> Callable[[bytes], Any] | None:
    """The decoder a replayed payload of ``record`` must pass, or None when ``record`` cannot be replayed
    (its stream is not a work queue, or it is an execution request whose outcome is already in the log; see
    the module docstring)."""
    if record.stream == subj.EXEC_STREAM and record.reason in SETTLED_REASONS:
        return None
    return REPLAY_DECODERS.get(record.stream)


def check_payload(record: DeadLetter, decode: Callable[[bytes], Any], payload: bytes) -> None:
    """Raise ``ApiError(422, "invalid_payload")`` unless ``payload`` decodes against ``proto/`` and belongs on
    ``record.subject`` (a command's own subject, an execution request's backend): a payload that would only
    be dead-lettered again is not published."""
    try:
        message = decode(payload)
    except DecodeError as exc:
        raise ApiError(
            422,
            "invalid_payload",
            f"The payload would be dead-lettered again: {exc.reason}.",
            details={"reason": exc.reason, "detail": exc.detail[:500]},
            user_action='Send the corrected message as {"payload": {...}}.',
        ) from None
    if record.stream == subj.EXEC_STREAM:
        target, fits = subj.exec_subject(message.backend), subj.exec_subject(message.backend) == record.subject
    else:  # the command's type (the thread token, if any, is the producer's)
        target = subj.command_subject(message)
        fits = subj.command_type_of(target) == subj.command_type_of(record.subject)
    if not fits:
        raise ApiError(
            422,
            "invalid_payload",
            f"The payload belongs on {target}, not on {record.subject}.",
            details={"subject": record.subject, "payload_subject": target},
        )


def replay_headers(original: dict[str, str], dlq_sequence: int) -> dict[str, str]:
    """The original headers without JetStream's own (``Nats-*``: message id, expectations), plus
    ``Nats-Msg-Id: replay-<dlq_sequence>`` so replaying one record twice is deduplicated."""
    headers = {key: value for key, value in original.items() if not key.lower().startswith("nats-")}
    headers[MSG_ID] = f"replay-{dlq_sequence}"
    return headers


def _decode_record(msg: Msg) -> DeadLetter | None:
    try:
        return msgspec.json.decode(msg.data, type=DeadLetter)
    except UNDECODABLE as exc:  # someone else's message on hermes.dlq.*: not ours to list
        log.warning("unreadable_dead_letter", seq=msg.metadata.sequence.stream, error=str(exc))
        return None


def _view(seq: int, record: DeadLetter, marker: DeadLetterReplayed | None) -> DeadLetterView:
    return DeadLetterView(
        dlq_sequence=seq,
        consumer=record.consumer,
        stream=record.stream,
        subject=record.subject,
        stream_sequence=record.stream_sequence,
        deliveries=record.deliveries,
        headers=record.headers,
        payload=record.payload,
        reason=record.reason,
        detail=record.detail,
        dead_lettered_at=record.dead_lettered_at,
        replayable=replay_decoder(record) is not None,
        replayed_at=marker.replayed_at if marker else None,
        replay=marker,
    )


class DeadLetterArchive:
    """Reads and replays ``HERMES_DLQ`` through ``js``. Every method raises :class:`BusUnavailable` when
    JetStream does not answer, and :class:`~hermes_gateway.envelope.ApiError` for what the operator asked
    wrongly (codes in each docstring)."""

    def __init__(self, js: JetStreamContext) -> None:
        self._js = js

    async def _state(self) -> StreamState:
        try:
            return (await self._js.stream_info(subj.DLQ_STREAM)).state
        except BUS_ERRORS as exc:
            raise BusUnavailable("JetStream", exc) from exc

    async def _read(self, filter_subject: str, first: int, last: int | None) -> list[Msg]:
        """The messages on ``filter_subject`` with ``first <= sequence <= last`` (``last`` None: to the end),
        in stream order, through a throw-away consumer. Its ``num_pending`` at creation says how many there
        are, so an empty range answers at once instead of waiting for a fetch to time out."""
        name = f"dlq-reader-{new_id()}"
        config = ConsumerConfig(
            name=name,
            ack_policy=AckPolicy.NONE,
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=first,
            filter_subject=filter_subject,
            inactive_threshold=10.0,
            mem_storage=True,
        )
        try:
            pending = (await self._js.add_consumer(subj.DLQ_STREAM, config)).num_pending or 0
            try:
                return await self._drain(name, pending, last) if pending else []
            finally:
                await self._forget(name)
        except BUS_ERRORS as exc:
            raise BusUnavailable("JetStream", exc) from exc

    async def _forget(self, name: str) -> None:
        try:
            await self._js.delete_consumer(subj.DLQ_STREAM, name)
        except BUS_ERRORS as exc:  # the server drops it after its inactive_threshold anyway
            log.debug("dlq_reader_not_deleted", consumer=name, error=repr(exc))

    async def _drain(self, name: str, pending: int, last: int | None) -> list[Msg]:
        sub = await self._js.pull_subscribe_bind(stream=subj.DLQ_STREAM, name=name)
        out: list[Msg] = []
        try:
            while pending:
                msgs = await sub.fetch(min(pending, FETCH_BATCH), timeout=FETCH_TIMEOUT_S)
                for msg in msgs:
                    if last is not None and msg.metadata.sequence.stream > last:
                        return out
                    out.append(msg)
                pending = msgs[-1].metadata.num_pending
        finally:
            await sub.unsubscribe()
        return out

    async def page(self, consumer: str | None, reason: str | None, before: int | None, limit: int) -> DeadLetterPage:
        """Up to ``limit`` records with a sequence below ``before`` (None: all), newest first, of ``consumer``
        and with ``reason`` when given, each with its replay marker if any. Reads backwards in windows that
        double, so a page costs a few reads however long the stream is."""
        state = await self._state()
        if not state.messages:
            return DeadLetterPage(dead_letters=[])
        filter_subject = subj.dlq_subject(consumer) if consumer else subj.DLQ_RECORDS
        high = state.last_seq if before is None else min(before - 1, state.last_seq)
        found: list[tuple[int, DeadLetter]] = []
        window = max(2 * limit, MIN_WINDOW)
        while high >= state.first_seq and len(found) <= limit:  # one more than the page: is there a next one?
            low = max(state.first_seq, high - window + 1)
            matches = [
                (msg.metadata.sequence.stream, record)
                for msg in await self._read(filter_subject, low, high)
                if (record := _decode_record(msg)) and (reason is None or record.reason == reason)
            ]
            found.extend(reversed(matches))
            high, window = low - 1, window * 2
        shown = found[:limit]
        markers = await self._markers(after=shown[-1][0]) if shown else {}
        return DeadLetterPage(
            dead_letters=[_view(seq, record, markers.get(seq)) for seq, record in shown],
            next_before=shown[-1][0] if len(found) > limit else None,
        )

    async def _markers(self, after: int) -> dict[int, DeadLetterReplayed]:
        """Replay markers written after sequence ``after`` (a marker always follows its record), by record."""
        markers: dict[int, DeadLetterReplayed] = {}
        for msg in await self._read(subj.DLQ_REPLAYED_ALL, after + 1, None):
            try:
                marker = msgspec.json.decode(msg.data, type=DeadLetterReplayed)
            except UNDECODABLE:
                continue
            markers.setdefault(marker.dlq_sequence, marker)
        return markers

    async def record(self, dlq_sequence: int) -> DeadLetter:
        """The record at ``dlq_sequence``. ``ApiError(404, "dead_letter_not_found")`` when there is no
        message there or it is not a record (a replay marker, say)."""
        try:
            raw = await self._js.get_msg(subj.DLQ_STREAM, dlq_sequence)
        except NotFoundError:
            raw = None
        except BUS_ERRORS as exc:
            raise BusUnavailable("JetStream", exc) from exc
        record = None
        if raw is not None and raw.subject and len(raw.subject.split(".")) == 3:
            try:
                record = msgspec.json.decode(raw.data or b"", type=DeadLetter)
            except UNDECODABLE:
                pass
        if record is None:
            raise ApiError(
                404,
                "dead_letter_not_found",
                f"No dead letter has sequence {dlq_sequence}.",
                details={"dlq_sequence": dlq_sequence},
                user_action="List them with GET /api/system/dead-letters.",
            )
        return record

    async def marker(self, dlq_sequence: int) -> DeadLetterReplayed | None:
        """The replay marker of record ``dlq_sequence``, or None when it was never replayed."""
        try:
            raw = await self._js.get_last_msg(subj.DLQ_STREAM, subj.dlq_replayed_subject(dlq_sequence))
        except NotFoundError:
            return None
        except BUS_ERRORS as exc:
            raise BusUnavailable("JetStream", exc) from exc
        return msgspec.json.decode(raw.data or b"", type=DeadLetterReplayed)

    async def replay(self, dlq_sequence: int, corrected: dict[str, Any] | None) -> DeadLetterReplayed:
        """Re-publish record ``dlq_sequence`` (its original payload, or ``corrected`` encoded as JSON) to its
        original subject and stream with :func:`replay_headers`, then append its marker. Errors (ApiError):
        404 ``dead_letter_not_found``; 409 ``not_replayable`` (an event of the log, see the module docstring),
        409 ``already_replayed`` (details: the marker); 422 ``invalid_payload`` (:func:`check_payload`).
        Replays that land are counted in ``hermes_dead_letters_replayed_total{consumer}``."""
        record = await self.record(dlq_sequence)
        decode = replay_decoder(record)
        if decode is None:
            why = (
                "its outcome (ExecutionFailed) is in the log and the job was retried or abandoned"
                if record.stream == subj.EXEC_STREAM
                else "the event is still in the log, and publishing it again would append a second copy"
            )
            raise ApiError(
                409,
                "not_replayable",
                f"A dead letter of {record.stream} cannot be replayed: {why}.",
                details={"stream": record.stream, "replayable_streams": sorted(REPLAY_DECODERS)},
                user_action=f"Fix the consumer {record.consumer}; it reads the log again from its position.",
            )
        previous = await self.marker(dlq_sequence)
        if previous is not None:
            raise ApiError(
                409,
                "already_replayed",
                f"Dead letter {dlq_sequence} was replayed at {previous.replayed_at.isoformat()}.",
                details=previous,
                user_action="If it failed again, replay its new dead letter instead.",
            )
        payload = msgspec.json.encode(corrected) if corrected is not None else base64.b64decode(record.payload_b64)
        check_payload(record, decode, payload)
        landed = await self._publish(record, payload, replay_headers(record.headers, dlq_sequence))
        marker = DeadLetterReplayed(
            dlq_sequence=dlq_sequence,
            consumer=record.consumer,
            stream=record.stream,
            subject=record.subject,
            stream_sequence=landed.seq,
            corrected=corrected is not None,
            replayed_at=utcnow(),
        )
        try:
            await self._js.publish(
                subj.dlq_replayed_subject(dlq_sequence),
                encode(marker),
                headers={MSG_ID: f"dlq-replayed-{dlq_sequence}"},
            )
        except BUS_ERRORS as exc:  # replayed but unmarked: a retry is deduplicated by Nats-Msg-Id, then marks it
            raise BusUnavailable("JetStream", exc) from exc
        if not landed.duplicate:
            DEAD_LETTERS_REPLAYED.labels(record.consumer).inc()
        log.info(
            "dead_letter_replayed",
            dlq_seq=dlq_sequence,
            consumer=record.consumer,
            subject=record.subject,
            seq=landed.seq,
            corrected=marker.corrected,
            duplicate=bool(landed.duplicate),
        )
        return marker

    async def _publish(self, record: DeadLetter, payload: bytes, headers: dict[str, str]) -> Any:
        try:
            return await self._js.publish(record.subject, payload, stream=record.stream, headers=headers)
        except ServiceUnavailableError as exc:
            raise BusUnavailable("JetStream", exc) from exc
        except APIError as exc:  # e.g. the subject no longer belongs to that stream
            raise ApiError(
                409,
                "not_replayable",
                f"JetStream refused the replay: {exc.description}.",
                details={"stream": record.stream, "subject": record.subject},
            ) from exc
        except BUS_ERRORS as exc:
            raise BusUnavailable("JetStream", exc) from exc
