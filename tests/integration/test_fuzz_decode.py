"""Every decode path a consumer uses, fed garbage: random bytes, JSON of the wrong shape, and valid messages
mutated (fields dropped or retyped, unknown or wrong ``type`` tags, odd schema versions, huge or negative
numbers, wrong nesting, truncated or corrupted bytes).

Properties (Hypothesis, derandomized, no example database):

* ``hermes_proto.codec.decode_event`` / ``decode_command`` / ``decode_execution_request`` /
  ``decode_heartbeat`` / ``decode_telegram_update`` / ``decode_dead_letter`` return a value of their type, which re-encodes to the same message, or raise
  :class:`~hermes_proto.codec.DecodeError` (``invalid_json`` or ``validation_failed``), never anything else:
  :class:`~hermes_proto.bus.ConsumerRunner` dead-letters on that error only, so any other exception leaves a
  message unsettled (redelivered, never dead-lettered) and :func:`~hermes_proto.projection.decode_batch`
  would stop a projection.
* The real orchestrator's ``hermes.query.*`` responders and the real backend-router's query/control
  responders answer what does not decode with ``ErrorReply(code="bad_request")``; both keep answering.
  Garbage heartbeats are counted by the router (``hermes_router_bad_heartbeats_total``) and never make a
  backend healthy.
* The gateway's reply decoding (``hermes_gateway.adapters.ask``) raises only ``BadReply`` / ``Refused`` on a
  bad reply, and its live thread feed skips undecodable events and token deltas.
* On the bus: garbage on ``hermes.cmd.*`` becomes ``DeadLetter`` records on ``HERMES_DLQ`` with the right
  reason and the exact bytes, and the consumer goes on handling valid messages.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import threading
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import httpx
import msgspec
import msgspec.inspect as mi
import nats
import pytest
from conftest import NatsServer, wait_until
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from procs import ServiceProcess
from prometheus_client.parser import text_string_to_metric_families

from hermes_proto import subjects
from hermes_proto.base import Command, Event
from hermes_proto.bus import ConsumerRunner, ConsumerSpec, Delivery, EventStore, RawMessage
from hermes_proto.codec import COMMAND_TYPES as ALL_COMMANDS
from hermes_proto.codec import EVENT_TYPES as ALL_EVENTS
from hermes_proto.codec import (
    DecodeError,
    command_thread_id,
    decode_command,
    decode_dead_letter,
    decode_event,
    decode_execution_request,
    decode_heartbeat,
    decode_telegram_update,
    encode,
)
from hermes_proto.commands import SubmitIdea
from hermes_proto.deadletter import DeadLetter
from hermes_proto.events import JobDeferred, ThreadCompleted
from hermes_proto.execution import ExecutionRequested, Heartbeat, TokenDelta
from hermes_proto.ids import new_id, utcnow
from hermes_proto.inbox import TelegramUpdate
from hermes_proto.projection import decode_batch
from hermes_proto.queries import (
    QUERY_THREADS,
    BackendsReply,
    CompareReply,
    CompareRequest,
    ErrorReply,
    JobQuery,
    JobReply,
    SelectionsQuery,
    SelectionsReply,
    SetBackendEnabled,
    ThreadListQuery,
    ThreadListReply,
    ThreadQuery,
    ThreadReply,
)

from hermes_cli.natsserver import free_port
from hermes_gateway.adapters import BadReply, Bus, Refused, ask
from hermes_gateway.feed import EventFeed
from hermes_gateway.live import ThreadFeed
from hermes_gateway.tokens import TokenBuffer

T = TypeVar("T")
FUZZ = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
REASONS = {"invalid_json", "validation_failed"}
SEALED_REASONS = REASONS | {"key_unavailable", "unsealable"}
"""An event decoder's: sealed-looking bytes (:mod:`hermes_proto.keyring`) without their key are key_unavailable,
or unsealable when cut."""
DEEP = 100_000  # nesting depth far past any recursion limit

DECODERS: list[tuple[Callable[[bytes], Any], type]] = [
    (decode_event, Event),
    (decode_command, Command),
    (decode_execution_request, ExecutionRequested),
    (decode_heartbeat, Heartbeat),
    (decode_telegram_update, TelegramUpdate),
    (decode_dead_letter, DeadLetter),
]
MESSAGE_TYPES: list[type[msgspec.Struct]] = [*ALL_EVENTS, *ALL_COMMANDS, ExecutionRequested, Heartbeat]


# --------------------------------------------------------------------------- valid messages, from the contract


def sample(t: mi.Type) -> Any:
    """A small valid JSON value of msgspec type ``t`` (its constraints respected); a struct gets its required
    fields and its tag."""
    if isinstance(t, mi.StructType):
        value = {f.encode_name: sample(f.type) for f in t.fields if f.required}
        return {t.tag_field: t.tag, **value} if t.tag_field else value
    if isinstance(t, mi.StrType):
        return "s1" if not t.min_length or t.min_length <= 2 else "s" * t.min_length
    if isinstance(t, (mi.IntType, mi.FloatType)):
        value = 1
        value = max(value, t.ge) if t.ge is not None else value
        value = max(value, t.gt + 1) if t.gt is not None else value
        value = min(value, t.le) if t.le is not None else value
        return value if isinstance(t, mi.IntType) else float(value)
    if isinstance(t, (mi.ListType, mi.SetType, mi.FrozenSetType, mi.VarTupleType)):
        # One item for a list of structs (a workflow needs a step, a chat a message); none for plain ones
        # (a step's depends_on must name existing steps).
        return [sample(t.item_type)] if isinstance(t.item_type, mi.StructType) else []
    if isinstance(t, mi.UnionType):
        return None if any(isinstance(u, mi.NoneType) for u in t.types) else sample(t.types[0])
    if isinstance(t, mi.LiteralType):
        return t.values[0]
    simple = {
        mi.BoolType: True,
        mi.NoneType: None,
        mi.DictType: {},
        mi.AnyType: "any",
        mi.DateTimeType: "2026-01-01T00:00:00Z",
        mi.BytesType: "",  # base64 of nothing
    }
    return simple[type(t)]


def valid_payload(message_type: type) -> dict[str, Any]:
    payload = sample(mi.type_info(message_type))
    assert isinstance(payload, dict)
    return payload


def field_names(message_type: type) -> list[str]:
    info = mi.type_info(message_type)
    assert isinstance(info, mi.StructType)
    return [f.encode_name for f in info.fields] + ([info.tag_field] if info.tag_field else [])


ALL_TAGS = sorted({t.type_name() for t in (*ALL_EVENTS, *ALL_COMMANDS)} | {"execution_requested"})


# --------------------------------------------------------------------------- garbage

HUGE = [2**63 - 1, 2**63, 2**64, -(2**63) - 1, 10**30, -(10**30), 2**200]
scalars = st.none() | st.booleans() | st.integers() | st.sampled_from(HUGE) | st.floats() | st.text(max_size=24)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)


def to_json(value: Any) -> bytes:
    """JSON text of ``value``; NaN and infinities become the non-standard tokens, which decoders must refuse."""
    return json.dumps(value, allow_nan=True).encode()


@st.composite
def corrupted(draw: st.DrawFn, data: bytes) -> bytes:
    """``data`` cut short, with one byte changed, or with bytes inserted (or left as it is)."""
    kind = draw(st.sampled_from(["keep", "keep", "truncate", "replace", "insert"]))
    if kind == "keep" or not data:
        return data
    at = draw(st.integers(0, len(data) - 1))
    if kind == "truncate":
        return data[:at]
    if kind == "replace":
        return data[:at] + bytes([draw(st.integers(0, 255))]) + data[at + 1 :]
    return data[:at] + draw(st.binary(min_size=1, max_size=4)) + data[at:]


@st.composite
def mutated(draw: st.DrawFn, types: list[type]) -> bytes:
    """A valid payload of one of ``types`` with one to four mutations, then possibly corrupted as bytes."""
    message_type = draw(st.sampled_from(types))
    payload: Any = valid_payload(message_type)
    keys = field_names(message_type)
    for _ in range(draw(st.integers(1, 4))):
        if not isinstance(payload, dict):
            break
        kind = draw(st.sampled_from(["drop", "retype", "retype", "extra", "tag", "version", "wrap"]))
        if kind == "drop" and payload:
            payload.pop(draw(st.sampled_from(sorted(payload))))
        elif kind == "retype":
            payload[draw(st.sampled_from(keys))] = draw(json_values)
        elif kind == "extra":
            payload[draw(st.text(max_size=12))] = draw(json_values)
        elif kind == "tag":
            payload["type"] = draw(st.sampled_from(ALL_TAGS) | st.text(max_size=16) | scalars)
        elif kind == "version":
            payload["schema_version"] = draw(st.integers(-2, 4) | st.sampled_from(HUGE) | scalars)
        else:
            payload = draw(st.sampled_from([[payload], {"payload": payload}, [payload, payload]]))
    return draw(corrupted(to_json(payload)))


def garbage(types: list[type]) -> st.SearchStrategy[bytes]:
    """Random bytes, JSON values of any shape, and mutated valid payloads of ``types``."""
    return st.one_of(st.binary(max_size=256), json_values.map(to_json), mutated(types), mutated(types))


def hostile_payloads(message_type: type) -> dict[str, bytes]:
    """Payloads that trip decoders in ways plain fuzzing finds only by luck, built on a valid payload of
    ``message_type``: nesting far past any recursion limit (alone, and in an unknown field), invalid UTF-8
    inside a string (a field's and an unknown one's), and JSON cut short right after a value of the wrong
    type (a typed decoder stops at the type error before it sees the JSON is broken)."""
    nested = b"[" * DEEP + b"]" * DEEP
    payload = valid_payload(message_type)
    valid = encode_dict(payload)
    first = next(key for key in [*payload, *field_names(message_type)] if key != "type")
    retyped = encode_dict({**payload, first: [42]})
    return {
        "deep array": nested,
        "deep object": b'{"a":' * DEEP + b"1" + b"}" * DEEP,
        "deep unknown field": valid[:-1] + b',"extra":' + nested + b"}",
        "invalid utf-8 in a field": valid.replace(b'"s1"', b'"s\xff1"', 1),
        "invalid utf-8 in an unknown field": valid[:-1] + b',"extra":"\xc3\x28"}',
        "cut after a type error": retyped[: retyped.index(b"[42]") + 4],
    }


def encode_dict(payload: dict[str, Any]) -> bytes:
    return msgspec.json.encode(payload)


# --------------------------------------------------------------------------- the codec


def check_decoder(decode: Callable[[bytes], Any], expected: type, data: bytes) -> None:
    """``decode(data)`` is an ``expected`` that re-encodes to itself, or raises DecodeError with a known
    reason; any other exception fails."""
    try:
        value = decode(data)
    except DecodeError as exc:
        assert exc.reason in SEALED_REASONS, exc
        return
    except Exception as exc:
        raise AssertionError(f"{decode.__name__} raised {exc!r} (not DecodeError) for {data[:300]!r}") from exc
    assert isinstance(value, expected), (decode.__name__, value)
    assert decode(encode(value)) == value, value


def test_every_valid_message_decodes_to_its_type() -> None:
    """The payloads the mutations start from are valid: each decodes to its own type with its own decoder."""
    families = {
        decode: types
        for decode, types in (
            (decode_event, ALL_EVENTS),
            (decode_command, ALL_COMMANDS),
            (decode_execution_request, (ExecutionRequested,)),
            (decode_heartbeat, (Heartbeat,)),
        )
    }
    for decode, types in families.items():
        for message_type in types:
            value = decode(encode_dict(valid_payload(message_type)))
            assert type(value) is message_type, (decode.__name__, value)


@FUZZ
@given(data=st.binary(max_size=512))
def test_random_bytes_never_raise_anything_but_decode_error(data: bytes) -> None:
    for decode, expected in DECODERS:
        check_decoder(decode, expected, data)


@FUZZ
@given(data=json_values.map(to_json))
def test_json_of_any_shape_never_raises_anything_but_decode_error(data: bytes) -> None:
    for decode, expected in DECODERS:
        check_decoder(decode, expected, data)


@FUZZ
@given(data=mutated(MESSAGE_TYPES))
def test_mutated_messages_decode_to_their_type_or_raise_decode_error(data: bytes) -> None:
    for decode, expected in DECODERS:
        check_decoder(decode, expected, data)


@FUZZ
@given(batch=st.lists(st.tuples(st.integers(1, 10**9), garbage(MESSAGE_TYPES)), max_size=6))
def test_a_projection_batch_splits_into_decoded_and_rejected(batch: list[tuple[int, bytes]]) -> None:
    """``decode_batch`` never raises: every message is decoded, or rejected with its DecodeError."""
    raws = [RawMessage(seq, "hermes.evt.thread.t.x", data) for seq, data in batch]
    try:
        decoded, rejected = decode_batch(raws)
    except Exception as exc:
        raise AssertionError(f"decode_batch raised {exc!r} for {batch!r}") from exc
    assert sorted([s for s, _ in decoded] + [r.sequence for r in rejected]) == sorted(s for s, _ in batch)
    assert all(isinstance(e, Event) for _, e in decoded)
    # every batch here is on one made-up subject: an event decoded off its own subject is refused as well
    assert all(
        isinstance(r.error, DecodeError) and r.error.reason in SEALED_REASONS | {"subject_mismatch"} for r in rejected
    )


@FUZZ
@given(data=st.one_of(st.binary(max_size=512), json_values.map(to_json), mutated(ALL_COMMANDS)))
def test_a_command_lane_is_its_thread_or_empty_and_never_raises(data: bytes) -> None:
    """``command_thread_id`` (the orchestrator's command lane key) never raises; for a command that decodes
    it is that command's thread, so one thread's commands always share a lane (and stay in order)."""
    try:
        lane = command_thread_id(data)
    except Exception as exc:
        raise AssertionError(f"command_thread_id raised {exc!r} for {data[:300]!r}") from exc
    assert isinstance(lane, str)
    try:
        command = decode_command(data)
    except DecodeError:
        return
    assert lane == expected_lane(command), (lane, command)


def expected_lane(command: object) -> str:
    """A thread's command: its thread; a schedule's: ``schedule:<id>``; else empty."""
    if getattr(command, "thread_id", None):
        return command.thread_id  # type: ignore[attr-defined]
    schedule_id = getattr(command, "schedule_id", None)
    if schedule_id:
        return f"schedule:{schedule_id}"
    proposal_id = getattr(command, "proposal_id", None)
    return f"proposal:{proposal_id}" if proposal_id else ""


def test_every_command_kind_has_its_thread_as_lane() -> None:
    for command_type in ALL_COMMANDS:
        payload = valid_payload(command_type)
        expected = payload.get("thread_id") or next(
            (f"{key.removesuffix('_id')}:{payload[key]}" for key in ("schedule_id", "proposal_id") if key in payload),
            "",
        )
        assert command_thread_id(encode_dict(payload)) == expected, command_type


def test_hostile_json_is_a_decode_error() -> None:
    """:func:`hostile_payloads` of every decoder's messages: a value, or DecodeError; nothing else (a
    RecursionError or UnicodeDecodeError would leave the message unsettled, never dead-lettered)."""
    failures = []
    base_types = {Event: ThreadCompleted, Command: SubmitIdea}
    for decode, expected in DECODERS:
        for name, data in hostile_payloads(base_types.get(expected, expected)).items():
            try:
                check_decoder(decode, expected, data)
            except AssertionError as exc:
                failures.append(f"{name}: {str(exc)[:160]}")
    assert not failures, "\n".join(failures)


# --------------------------------------------------------------------------- the services' responders


class BusThread:
    """A NATS connection on an event loop in a thread of its own, for synchronous Hypothesis tests."""

    def __init__(self, url: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="bus-thread", daemon=True)
        self.thread.start()
        self.nc = self.run(nats.connect(url))

    def run(self, coro: Coroutine[Any, Any, T], timeout_s: float = 30) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    def request(self, subject: str, data: bytes, timeout_s: float = 10) -> bytes:
        return self.run(self.nc.request(subject, data, timeout=timeout_s)).data

    def close(self) -> None:
        self.run(self.nc.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)


@dataclass
class Responders:
    bus: BusThread
    orchestrator: ServiceProcess
    router: ServiceProcess
    router_metrics_port: int

    def router_metric(self, name: str, **labels: str) -> float:
        text = httpx.get(f"http://127.0.0.1:{self.router_metrics_port}/metrics", timeout=5).text
        return sum(
            s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
        )


OFFLINE = "offline"
"""The router's only backend: disabled, its model server port closed, so a comparison never waits on it."""


@pytest.fixture(scope="module")
def responders(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Responders]:
    """The real orchestrator and backend-router, each a process, on a real nats-server of the module."""
    tmp = tmp_path_factory.mktemp("fuzz-decode")
    server = NatsServer(port=free_port(), store_dir=tmp / "jetstream")
    server.start()
    env = dict(
        os.environ,
        NATS_URL=server.url,
        HERMES_HOME=str(tmp / "home"),
        LOG_LEVEL="INFO",
        METRICS_PORT="0",
        HERMES_ANSWER_TIMEOUT_SECONDS="600",
    )
    metrics_port = free_port()
    router_env = dict(
        env,
        METRICS_PORT=str(metrics_port),
        HERMES_BACKENDS_ENABLED=OFFLINE,
        BACKEND_OFFLINE_TYPE="openai",
        BACKEND_OFFLINE_HOST="127.0.0.1",
        BACKEND_OFFLINE_PORT=str(free_port()),
        BACKEND_OFFLINE_ENABLED="false",
        BACKEND_OFFLINE_HEALTH_CHECK_INTERVAL="600",
    )
    orchestrator = ServiceProcess("orchestrator", "hermes_orchestrator", env, tmp / "logs").start()
    router = ServiceProcess("router", "hermes_router", router_env, tmp / "logs").start()
    bus = BusThread(server.url)

    def answers(subject: str) -> bool:
        assert orchestrator.alive() and router.alive(), orchestrator.log_text() + router.log_text()
        try:
            bus.request(subject, b"{}", timeout_s=0.5)
            return True
        except (nats.errors.NoRespondersError, nats.errors.TimeoutError):
            return False

    try:
        for subject in (subjects.QUERY_HEALTH, subjects.QUERY_BACKENDS):
            bus.run(wait_until(lambda s=subject: asyncio.to_thread(answers, s), timeout_s=60, interval_s=0.2), 70)
        yield Responders(bus, orchestrator, router, metrics_port)
        assert orchestrator.alive() and router.alive(), orchestrator.log_text()[-3000:] + router.log_text()[-3000:]
    finally:
        bus.close()
        with ThreadPoolExecutor() as pool:  # each takes a moment to wind down
            list(pool.map(ServiceProcess.stop, (orchestrator, router)))
        server.stop(signal.SIGKILL)


def decodes(data: bytes, query_type: type) -> Any:
    """``data`` as ``query_type`` (msgspec, the contract's own decoding), or None when it does not decode."""
    try:
        return msgspec.json.decode(data, type=query_type)
    except (msgspec.MsgspecError, UnicodeDecodeError, RecursionError):
        return None


ORCHESTRATOR_QUERIES: dict[str, tuple[type, type]] = {
    subjects.QUERY_THREAD: (ThreadQuery, ThreadReply),
    subjects.QUERY_JOB: (JobQuery, JobReply),
    QUERY_THREADS: (ThreadListQuery, ThreadListReply),
}


def check_orchestrator_reply(bus: BusThread, subject: str, data: bytes, timeout_s: float = 10) -> None:
    query_type, reply_type = ORCHESTRATOR_QUERIES[subject]
    query = decodes((data or b"{}") if subject == QUERY_THREADS else data, query_type)
    try:
        reply = bus.request(subject, data, timeout_s)
    except nats.errors.TimeoutError:
        raise AssertionError(f"{subject}: no reply to {data[:300]!r}") from None
    if query is not None:
        msgspec.json.decode(reply, type=reply_type)
        return
    error = decodes(reply, ErrorReply)  # the contract every responder answers a bad request with
    assert error is not None and error.error and error.code == "bad_request", (subject, data[:300], reply[:300])
    assert error.message, reply[:300]


@FUZZ
@given(subject=st.sampled_from(sorted(ORCHESTRATOR_QUERIES)), data=garbage([ThreadQuery, JobQuery, ThreadListQuery]))
def test_orchestrator_queries_answer_garbage_with_bad_request(
    responders: Responders, subject: str, data: bytes
) -> None:
    # A valid read-your-writes sequence past the log's end is waited for (2 s): right, but slow to fuzz.
    query = decodes(data, ThreadQuery) if subject == subjects.QUERY_THREAD else None
    assume(query is None or query.min_sequence <= 0)
    check_orchestrator_reply(responders.bus, subject, data)


ROUTER_QUERIES: dict[str, tuple[type | None, type]] = {
    subjects.QUERY_BACKENDS: (None, BackendsReply),
    subjects.QUERY_SELECTIONS: (SelectionsQuery, SelectionsReply),
    subjects.CONTROL_BACKEND: (SetBackendEnabled, BackendsReply),
    subjects.CONTROL_COMPARE: (CompareRequest, CompareReply),
}


def check_router_reply(bus: BusThread, subject: str, data: bytes, timeout_s: float = 10) -> None:
    query_type, reply_type = ROUTER_QUERIES[subject]
    query = (
        decodes((data or b"{}") if subject == subjects.QUERY_SELECTIONS else data, query_type) if query_type else True
    )
    try:
        reply = bus.request(subject, data, timeout_s)
    except nats.errors.TimeoutError:
        raise AssertionError(f"{subject}: no reply to {data[:300]!r}") from None
    refusal = decodes(reply, ErrorReply)
    if query is None:
        assert refusal is not None and refusal.code == "bad_request", (subject, data[:300], reply[:300])
    elif refusal is not None and refusal.error:
        # A well-formed request the router refuses: an unknown backend, an empty prompt. Never "internal".
        assert refusal.code in {"unknown_backend", "bad_request"}, (subject, data[:300], reply[:300])
    else:
        msgspec.json.decode(reply, type=reply_type)


@FUZZ
@given(
    subject=st.sampled_from(sorted(ROUTER_QUERIES)), data=garbage([SelectionsQuery, SetBackendEnabled, CompareRequest])
)
def test_router_queries_and_controls_answer_garbage_with_bad_request(
    responders: Responders, subject: str, data: bytes
) -> None:
    # Enabling the one real backend would let a fuzzed comparison wait for a model that is not there.
    command = decodes(data, SetBackendEnabled) if subject == subjects.CONTROL_BACKEND else None
    assume(command is None or command.backend.lower() != OFFLINE)
    check_router_reply(responders.bus, subject, data)


def test_hostile_json_gets_the_documented_error_reply_from_every_responder(responders: Responders) -> None:
    """:func:`hostile_payloads` get ``ErrorReply(code="bad_request")`` from the orchestrator and the router,
    not silence (the requester's timeout) or ``internal``."""
    failures = []
    for subject, (query_type, _) in {**ORCHESTRATOR_QUERIES, **ROUTER_QUERIES}.items():
        if query_type is None:
            continue
        check = check_orchestrator_reply if subject in ORCHESTRATOR_QUERIES else check_router_reply
        for name, data in hostile_payloads(query_type).items():
            try:
                check(responders.bus, subject, data, 2.0)  # a silent responder costs this timeout
            except AssertionError as exc:
                failures.append(f"{subject} {name}: {str(exc)[:160]}")
    assert not failures, "\n".join(failures)
    assert responders.orchestrator.alive() and responders.router.alive()


def test_garbage_heartbeats_are_counted_and_never_make_a_backend_healthy(responders: Responders) -> None:
    """Undecodable heartbeats on ``hermes.heartbeat.<backend>`` are each counted by reason and ignored; the
    router keeps answering."""
    bus = responders.bus
    before = {r: responders.router_metric("hermes_router_bad_heartbeats_total", reason=r) for r in REASONS}
    beat = encode(Heartbeat(backend=OFFLINE, models=["m"], in_flight=0, healthy=True, sent_at=utcnow()))
    bad = {
        "invalid_json": [b"", b"\xff", b"{", beat[:-1], beat.replace(b'"m"', b'"\xff"')],
        "validation_failed": [
            b"null",
            b"[" * DEEP,
            beat.replace(b'"healthy":true', b'"healthy":"yes"'),
            beat.replace(b'"in_flight":0', b'"in_flight":1e400'),
            beat.replace(b'"models":["m"]', b'"models":"m"'),
        ],
    }

    async def publish() -> None:
        for payloads in bad.values():
            for data in payloads:
                await bus.nc.publish(subjects.heartbeat_subject(OFFLINE), data)
        await bus.nc.flush()

    bus.run(publish())

    def counted() -> bool:
        return all(
            responders.router_metric("hermes_router_bad_heartbeats_total", reason=r) - before[r] >= len(bad[r])
            for r in REASONS
        )

    try:
        bus.run(wait_until(lambda: asyncio.to_thread(counted), timeout_s=8, interval_s=0.2), 20)
    except TimeoutError:
        pass  # the assertion below says what was not counted
    for reason in REASONS:
        added = responders.router_metric("hermes_router_bad_heartbeats_total", reason=reason) - before[reason]
        assert added == len(bad[reason]), (reason, added)
    assert health(bus) != "healthy"
    # The same heartbeat, well-formed, does count: so the garbage above was heard and ignored.
    bus.run(bus.nc.publish(subjects.heartbeat_subject(OFFLINE), beat))

    async def healthy() -> bool:
        return await asyncio.to_thread(health, bus) == "healthy"

    bus.run(wait_until(healthy, timeout_s=10), 15)
    assert responders.router.alive()


def health(bus: BusThread) -> str:
    backends = msgspec.json.decode(bus.request(subjects.QUERY_BACKENDS, b"{}"), type=BackendsReply)
    return next(b.health for b in backends.backends if b.name == OFFLINE)


# --------------------------------------------------------------------------- the gateway's decoding


@pytest.fixture(scope="module")
def reply_bus(responders: Responders) -> Iterator[tuple[BusThread, list[bytes]]]:
    """A responder on ``fuzz.reply`` that answers every request with the last payload put in the list."""
    bus, payload = responders.bus, [b""]

    async def respond(msg: Any) -> None:
        await msg.respond(payload[0])

    sub = bus.run(bus.nc.subscribe("fuzz.reply", cb=respond))
    yield bus, payload
    bus.run(sub.unsubscribe())


def check_ask(reply_bus: tuple[BusThread, list[bytes]], data: bytes) -> None:
    """``ask`` answered with ``data`` returns the reply type, or raises ``Refused`` (an ``ErrorReply``) or
    ``BadReply``: the gateway then answers in its envelope (4xx, 502), never a 500."""
    bus, payload = reply_bus
    payload[0] = data
    try:
        reply = bus.run(ask(bus.nc, "The fuzzer", "fuzz.reply", ThreadQuery(thread_id="t"), ThreadReply, 10))
    except (BadReply, Refused):
        return
    except Exception as exc:
        raise AssertionError(f"ask raised {exc!r} for the reply {data[:300]!r}") from exc
    assert isinstance(reply, ThreadReply)


@FUZZ
@given(data=garbage([ThreadReply, ErrorReply, ThreadListReply]))
def test_the_gateway_reads_a_bad_reply_as_bad_reply(reply_bus: tuple[BusThread, list[bytes]], data: bytes) -> None:
    check_ask(reply_bus, data)


def test_the_gateway_reads_a_hostile_reply_as_bad_reply(reply_bus: tuple[BusThread, list[bytes]]) -> None:
    reply = encode(ThreadReply(found=False))
    hostile = {
        **hostile_payloads(ThreadReply),
        "invalid utf-8 in an ErrorReply": b'{"error":true,"code":"\xff"}',
        "invalid utf-8 in an unknown field (ignored)": reply[:-1] + b',"x":"\xff"}',
    }
    for data in hostile.values():
        check_ask(reply_bus, data)


EVENT_GARBAGE = [
    b"",
    b"\xff",
    b"{",
    b"[]",
    b'{"type": 5',
    b'{"type": "launch_rockets", "event_id": "e"}',
    b'{"type": "job_deferred", "reason": 42}',
    b'{"type": "job_deferred", "reason": 42,',
    b'{"type": "job_deferred", "reason": "\xff"}',
    *hostile_payloads(JobDeferred).values(),
]
TOKEN_GARBAGE = [
    b"",
    b"\xff",
    b"{",
    b"null",
    b'{"job_id": "j", "seq": "0", "text": "x"}',
    b'{"seq": 1,',
    b'{"job_id": "j", "seq": 0, "text": "\xff"}',
    *hostile_payloads(TokenDelta).values(),
]


def decoded_or_none(decode: Callable[[bytes], T], data: bytes) -> T | None:
    try:
        return decode(data)
    except Exception:  # noqa: BLE001 - whatever the decoder raises, the feed must skip the message
        return None


async def test_the_live_feed_skips_what_does_not_decode(js_client) -> None:
    """A thread's SSE feed (``ThreadFeed``, on the gateway's one event feed and token subscription) skips the token
    deltas and events on the thread's subjects that do not decode, delivers those that do (an unknown field with
    invalid UTF-8 is ignored by decoding, so such a message is delivered), and ends at the terminal event."""
    nc, js = js_client
    thread_id = new_id()
    events, tokens = EventFeed(), TokenBuffer()
    await events.start(js)
    await tokens.start(nc)
    feed = ThreadFeed(Bus(nc=nc, js=js, store=EventStore(js, "test"), events=events, tokens=tokens), thread_id)
    await feed.open()
    try:
        for data in TOKEN_GARBAGE:
            await nc.publish(subjects.token_subject(thread_id, "j1"), data)
        await nc.flush()
        await asyncio.sleep(0.3)  # the tokens are queued before the events below
        for data in EVENT_GARBAGE:
            await js.publish(subjects.thread_event(thread_id, "job_deferred"), data)
        done = ThreadCompleted(
            event_id=new_id(),
            aggregate_id=thread_id,
            occurred_at=utcnow(),
            correlation_id="c",
            final_draft_number=1,
            reason="answered",
        )
        await EventStore(js, "test").append([done])

        async def collect() -> list:
            return [item async for item in feed.items()]

        items = await asyncio.wait_for(collect(), timeout=15)
    finally:
        await feed.close()
        await events.stop()
    tokens = [
        t
        for t in (decoded_or_none(lambda d: msgspec.json.decode(d, type=TokenDelta), d) for d in TOKEN_GARBAGE)
        if t is not None
    ]
    events = [e for e in (decoded_or_none(decode_event, d) for d in EVENT_GARBAGE) if e is not None]
    assert len(tokens) < len(TOKEN_GARBAGE) and len(events) < len(EVENT_GARBAGE)
    assert [i.event for i in items] == ["token"] * len(tokens) + [e.type_name() for e in events] + [
        "thread_completed"
    ], items
    assert [msgspec.json.decode(i.data, type=TokenDelta) for i in items[: len(tokens)]] == tokens
    assert [decode_event(i.data.encode()) for i in items[len(tokens) :]] == [*events, done]
    assert [i.terminal for i in items] == [False] * (len(items) - 1) + [True]


# --------------------------------------------------------------------------- the bus: dead letters

DURABLE = "fuzz-commands"
COMMAND_SUBJECT = "hermes.cmd.submit_idea"
_valid = encode(
    SubmitIdea(command_id="valid", issued_at=datetime(2026, 1, 1, tzinfo=UTC), thread_id="t", idea="a real idea")
)
POISON: list[tuple[bytes, set[str]]] = [
    (b"\xff\xfe not json", {"invalid_json"}),
    (b"", {"invalid_json"}),
    (b'{"type": "launch_rockets", "command_id": "c", "issued_at": "2026-01-01T00:00:00Z"}', {"validation_failed"}),
    (b'{"type": "submit_idea", "idea": 42}', {"validation_failed"}),
    (b"[1, 2, 3]", {"validation_failed"}),
    (_valid.replace(b'"priority":5', b'"priority":99'), {"validation_failed"}),
    # Valid JSON up to a type error, then cut off: not JSON at all.
    (b'{"type": "submit_idea", "idea": 42, "thread_id": "t', {"invalid_json"}),
    # Not UTF-8 inside a string.
    (_valid.replace(b'"a real idea"', b'"a real \xff idea"'), {"invalid_json"}),
    # Too deep to decode: refused as bad input, whichever the reason.
    (_valid[:-1] + b',"x":' + b"[" * DEEP + b"]" * DEEP + b"}", REASONS),
]


async def test_garbage_commands_are_dead_lettered_and_the_consumer_goes_on(js_client) -> None:
    """A ConsumerRunner on ``hermes.cmd.>`` with a handler that records what it gets (and refuses one idea):
    each poison message becomes exactly one ``DeadLetter`` (reason, subject, sequence, headers, exact bytes)
    and is acked; a handler that keeps failing ends in ``handler_error`` after ``max_deliver`` deliveries; a
    valid command published afterwards is handled once."""
    nc, js = js_client
    handled: list[tuple[SubmitIdea, int]] = []

    async def handler(delivery: Delivery[Any]) -> None:
        if getattr(delivery.message, "idea", "") == "refused":
            raise RuntimeError("this idea always fails")
        handled.append((delivery.message, delivery.deliveries))

    spec = ConsumerSpec(
        stream=subjects.COMMANDS_STREAM,
        durable=DURABLE,
        filter_subjects=[subjects.COMMANDS_ALL],
        decode=decode_command,
        handler=handler,
        max_deliver=2,
        backoff_s=[0.1],
        batch=16,
        fetch_expires_s=0.5,
    )
    runner = ConsumerRunner(nc, js, spec, "fuzz")
    task = asyncio.create_task(runner.run())
    try:
        sequences = {}
        for i, (data, _) in enumerate(POISON):
            ack = await js.publish(COMMAND_SUBJECT, data, headers={"X-Fuzz": str(i)})
            sequences[ack.seq] = i
        refused = SubmitIdea(command_id="refused", issued_at=utcnow(), thread_id="t2", idea="refused")
        refused_seq = (await js.publish(COMMAND_SUBJECT, encode(refused))).seq
        valid = SubmitIdea(command_id=new_id(), issued_at=utcnow(), thread_id="t3", idea="after the garbage")
        await js.publish(COMMAND_SUBJECT, encode(valid))

        await wait_until(lambda: handled, timeout_s=20)
        try:
            await wait_until(lambda: dead_letters(js, len(POISON) + 1), timeout_s=8)
        except TimeoutError:
            pass  # the assertions below say which ones are missing
        await asyncio.sleep(1.0)  # anything unsettled but not lost would be redelivered by now (backoff 0.1 s)
        assert not task.done(), task
        assert handled == [(valid, 1)], handled
        letters = await dead_letters(js, 0)
        lettered = {r.stream_sequence for r in letters}
        missing = [POISON[i][0][:80] for seq, i in sequences.items() if seq not in lettered]
        assert not missing, f"never dead-lettered: {missing}"
        assert len(letters) == len(POISON) + 1, [(r.stream_sequence, r.reason) for r in letters]
        info = await js.consumer_info(subjects.COMMANDS_STREAM, DURABLE)
        assert info.num_ack_pending == 0 and info.num_pending == 0, info
    finally:
        runner.stop()
        await asyncio.wait_for(task, timeout=10)

    by_seq = {r.stream_sequence: r for r in letters}
    for seq, i in sequences.items():
        data, reasons = POISON[i]
        record = by_seq[seq]
        assert record.reason in reasons, (data[:80], record.reason, record.detail)
        assert (record.consumer, record.stream, record.subject) == (DURABLE, subjects.COMMANDS_STREAM, COMMAND_SUBJECT)
        assert record.deliveries == 1 and record.headers.get("X-Fuzz") == str(i), record
        assert base64.b64decode(record.payload_b64) == data and record.detail
        assert record.dead_lettered_at.tzinfo is not None
    failed = by_seq[refused_seq]
    assert (failed.reason, failed.deliveries) == ("handler_error", 2) and "always fails" in failed.detail, failed
    assert msgspec.json.decode(base64.b64decode(failed.payload_b64), type=SubmitIdea) == refused


async def dead_letters(js, at_least: int) -> list[DeadLetter] | None:
    """The consumer's dead letters so far (read with an ordered consumer), once there are ``at_least``."""
    info = await js.stream_info(subjects.DLQ_STREAM)
    if info.state.messages < at_least:
        return None
    sub = await js.subscribe(subjects.dlq_subject(DURABLE), ordered_consumer=True)
    records: list[DeadLetter] = []
    try:
        while True:
            msg = await sub.next_msg(timeout=1.0)
            records.append(msgspec.json.decode(msg.data, type=DeadLetter))
            if msg.metadata.num_pending == 0:
                break
    except (TimeoutError, nats.errors.TimeoutError):
        pass
    finally:
        await sub.unsubscribe()
    return records if len(records) >= at_least else None
