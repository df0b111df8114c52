"""External producers: ``POST /api/external/submit`` and SubmitIdea on the bus, the result POSTed back to the
producer's callback URL, and the schema-version upcasting of SubmitIdea.

The real gateway, orchestrator and notifier run as processes on a real JetStream server; the producer's callback
endpoint is a loopback aiohttp server that can fail on purpose. The test plays talos-edge and the
backend-router on the wire (``ExecutionCompleted`` / ``ExecutionAbandoned`` for the orchestrator's
``JobQueued``, ids derived from their causes as those services derive them): every thread event after that
comes from the orchestrator, every callback and record from the notifier.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import msgspec
import pytest
from aiohttp import web
from conftest import open_command, open_event, wait_until
from fakes.loopback import LoopbackServer
from fakes.sink import Sink, internal_urls
from nats.js.errors import NotFoundError
from procs import ServiceProcess
from test_gateway_api import Gateway, start_gateway

from hermes_proto import subjects
from hermes_proto.bus import EventStore
from hermes_proto.codec import DecodeError, decode_command, decode_event, encode
from hermes_proto.commands import SubmitIdea
from hermes_proto.events import ExecutionAbandoned, ExecutionCompleted, JobQueued, ThreadCompleted, ThreadOpened
from hermes_proto.ids import derived_id, new_id, utcnow

NOTIFIER_DURABLE = "notifier-events"
SECRET = "s3cr3t-callback-token"
ATTEMPTS = 4  # HERMES_CALLBACK_ATTEMPTS of the notifier under test
BACKOFF_S = 0.3  # HERMES_CALLBACK_BACKOFF_S: waits 0.3, 0.6, 1.2 s


# --------------------------------------------------------------------------- the producer's callback endpoint


@dataclass
class Received:
    path: str
    query: str
    headers: dict[str, str]
    body: object
    status: int
    at: float


class CallbackReceiver(LoopbackServer):
    """Answers every POST with the next status queued for its path by :meth:`answer` (200 once none is left)
    and records it."""

    def __init__(self) -> None:
        super().__init__()
        self.received: list[Received] = []
        self._answers: dict[str, list[int]] = {}

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/{tail:.*}", self._post)

    def answer(self, path: str, *statuses: int) -> None:
        self._answers.setdefault(path, []).extend(statuses)

    def to(self, path: str) -> list[Received]:
        return [r for r in self.received if r.path == path]

    async def _post(self, request: web.Request) -> web.Response:
        queued = self._answers.get(request.path) or []
        status = queued.pop(0) if queued else 200
        body = json.loads(await request.read())
        self.received.append(
            Received(request.path, request.query_string, dict(request.headers), body, status, time.monotonic())
        )
        return web.json_response({"accepted": status < 300}, status=status)


# --------------------------------------------------------------------------- the stack


@dataclass
class Stack:
    gateway: Gateway
    notifier: ServiceProcess
    js: object
    receiver: CallbackReceiver
    sink: Sink  # on loopback, not allowed: must never be reached

    def callback_url(self, path: str) -> str:
        return f"{self.receiver.url}{path}?token={SECRET}"

    async def last(self, thread_id: str, event_type: type, timeout_s: float = 15.0):
        """The thread's latest event of ``event_type`` (waits for one)."""

        async def found():
            try:
                raw = await self.js.get_last_msg(subjects.EVENTS_STREAM, subjects.thread_event(thread_id, event_type))
            except NotFoundError:
                return None
            return await open_event(raw.data)

        return await wait_until(found, timeout_s)

    async def records(self, thread_id: str, event_type: str) -> list:
        """The thread's ``notification_sent`` / ``notification_failed`` records, in log order."""
        events, seq = [], 1
        while True:
            try:
                raw = await self.js.get_msg(
                    subjects.EVENTS_STREAM, seq=seq, subject=f"hermes.evt.thread.{thread_id}.{event_type}", next=True
                )
            except NotFoundError:
                return events
            events.append(await open_event(raw.data))
            seq = raw.seq + 1

    async def complete_draft(self, thread_id: str, text: str) -> None:
        """talos-edge's ``ExecutionCompleted`` for the thread's draft-1 job."""
        job: JobQueued = await self.last(thread_id, JobQueued)
        await EventStore(self.js, "test-edge").append(
            [
                ExecutionCompleted(
                    **_caused_by(job, derived_id(derived_id(job.event_id, "execution_requested"), "execution_outcome")),
                    job_id=job.job_id,
                    backend="talos",
                    model="smollm2",
                    text=text,
                    prompt_tokens=12,
                    completion_tokens=30,
                    latency_ms=800.0,
                )
            ]
        )

    async def abandon_draft(self, thread_id: str, message: str) -> None:
        """The backend-router's ``ExecutionAbandoned`` for the thread's draft-1 job."""
        job: JobQueued = await self.last(thread_id, JobQueued)
        await EventStore(self.js, "test-router").append(
            [
                ExecutionAbandoned(
                    **_caused_by(job, derived_id(job.event_id, "execution_abandoned")),
                    job_id=job.job_id,
                    error_code="no_backend",
                    message=message,
                    attempts=1,
                )
            ]
        )

    async def handled(self, seq: int) -> bool:
        info = await self.js.consumer_info(subjects.EVENTS_STREAM, NOTIFIER_DURABLE)
        return info.ack_floor.stream_seq >= seq and info.num_ack_pending == 0


def _caused_by(cause, event_id: str) -> dict:
    return dict(
        event_id=event_id,
        aggregate_id=cause.aggregate_id,
        occurred_at=utcnow(),
        correlation_id=cause.correlation_id,
        causation_id=cause.event_id,
    )


@pytest.fixture
async def stack(bus_env: dict[str, str], js_client, tmp_path: Path) -> AsyncIterator[Stack]:
    _, js = js_client
    logs = tmp_path / "logs"
    receiver = await CallbackReceiver().start()
    sink = await Sink().start()
    # The producer's receiver is on loopback: listed as the one trusted internal receiver, for both services.
    allow = {"HERMES_OUTBOUND_ALLOW": f"127.0.0.1:{receiver.port}"}
    orchestrator = ServiceProcess("orchestrator", "hermes_orchestrator", {**bus_env, "METRICS_PORT": "0"}, logs).start()
    notifier = ServiceProcess(
        "notifier",
        "hermes_notifier",
        {
            **bus_env,
            **allow,
            "METRICS_PORT": "0",
            "TELEGRAM_BOT_TOKEN": "",
            "HERMES_WEB_BASE_URL": "http://hermes.test",
            "HERMES_CALLBACK_ATTEMPTS": str(ATTEMPTS),
            "HERMES_CALLBACK_BACKOFF_S": str(BACKOFF_S),
        },
        logs,
    ).start()
    gateway = None
    try:
        gateway = await start_gateway(bus_env, logs, **allow)

        async def ready() -> bool:
            assert orchestrator.alive(), orchestrator.log_text()
            assert notifier.alive(), notifier.log_text()
            async with httpx.AsyncClient() as client:
                if (await client.get(f"{gateway.url}/api/system/health", timeout=5)).status_code != 200:
                    return False
            try:
                await js.consumer_info(subjects.EVENTS_STREAM, NOTIFIER_DURABLE)
            except NotFoundError:
                return False
            return True

        await wait_until(ready, timeout_s=40, interval_s=0.2)
        yield Stack(gateway, notifier, js, receiver, sink)
    finally:
        processes = [notifier, orchestrator] + ([gateway.process] if gateway is not None else [])
        await asyncio.gather(*(asyncio.to_thread(process.stop) for process in processes))
        await receiver.stop()
        await sink.stop()


async def external_submit(stack: Stack, **fields) -> httpx.Response:
    async with httpx.AsyncClient(timeout=20) as client:
        return await client.post(f"{stack.gateway.url}/api/external/submit", json=fields)


# --------------------------------------------------------------------------- schema versions (no server)


def v1_submit_idea(**origin: str) -> bytes:
    """A SubmitIdea as a version-1 producer wrote it: the callback address inside ``origin``."""
    return json.dumps(
        {
            "type": "submit_idea",
            "command_id": new_id(),
            "issued_at": "2026-01-05T10:00:00Z",
            "schema_version": 1,
            "correlation_id": None,
            "thread_id": new_id(),
            "idea": "summarise my meeting notes",
            "channel": "external",
            "user_id": "local",
            "origin": origin,
            "max_questions": 0,
            "project": "default",
            "private": False,
            "priority": 5,
        }
    ).encode()


def test_v1_submit_idea_is_upcast_and_unknowns_are_handled():
    command = decode_command(
        v1_submit_idea(callback_url="https://crm.test/hooks/hermes?k=1", source_app="crm", telegram_chat_id="42")
    )
    assert isinstance(command, SubmitIdea) and command.schema_version == 2
    assert (command.callback_url, command.source_app) == ("https://crm.test/hooks/hermes?k=1", "crm")
    assert command.origin == {"telegram_chat_id": "42"}  # moved out, the rest kept

    # The current version: one decode, origin left as it is, a newer producer's unknown field ignored.
    current = json.loads(encode(command))
    current["origin"] = {"callback_url": "kept as an origin entry"}
    current["added_by_a_newer_producer"] = {"any": ["thing"]}
    again = decode_command(json.dumps(current).encode())
    assert again.callback_url == command.callback_url and again.origin == {"callback_url": "kept as an origin entry"}

    # An event with an extra field decodes too.
    opened = ThreadOpened(event_id=new_id(), aggregate_id=new_id(), occurred_at=utcnow(), correlation_id="c", idea="x")
    assert decode_event(json.dumps({**json.loads(encode(opened)), "future_field": 1}).encode()) == opened

    # Unknown types, a v1 callback the contract rejects, an impossible version: DecodeError (dead-lettered).
    for bad in (
        b'{"type": "submit_idea_v9", "command_id": "c"}',
        v1_submit_idea(callback_url="ftp://crm.test/x"),
        json.dumps({**current, "schema_version": 0, "thread_id": 5}).encode(),
    ):
        with pytest.raises(DecodeError) as caught:
            decode_command(bad)
        assert caught.value.reason == "validation_failed"
    with pytest.raises(DecodeError) as caught:
        decode_event(b'{"type": "thread_teleported", "event_id": "e"}')
    assert caught.value.reason == "validation_failed"


# --------------------------------------------------------------------------- end to end


async def tap_submissions(nc) -> tuple[list[SubmitIdea], object]:
    """Every SubmitIdea published from now on (decoded, in a list that fills up) and the subscription."""
    published: list[SubmitIdea] = []

    async def record(msg) -> None:
        published.append(await open_command(msg.data))

    tap = await nc.subscribe(subjects.command_type_filter(SubmitIdea), cb=record)
    await nc.flush()
    return published, tap


async def refusals_publish_nothing(stack: Stack, js_client) -> None:
    """Bad submissions get the error envelope with a machine-readable code, and no command is published."""
    published, tap = await tap_submissions(js_client[0])
    good = dict(idea="Plan a garden", callback_url="https://crm.test/hook", source_app="crm")
    refusals = [
        ({"callback_url": "ftp://crm.test/hook"}, 400, "invalid_callback_url"),
        ({"callback_url": "not a url"}, 400, "invalid_callback_url"),
        ({"callback_url": "https://user:password@crm.test/hook"}, 400, "invalid_callback_url"),
        ({"callback_url": "http://crm.test:99999/hook"}, 400, "invalid_callback_url"),
        ({"callback_url": "https:///no-host"}, 400, "invalid_callback_url"),
        ({"callback_url": "https://crm.test/" + "x" * 2100}, 400, "invalid_callback_url"),
        ({"source_app": "crm app!"}, 400, "invalid_source_app"),
        ({"idea": "   "}, 400, "empty_idea"),
        ({"idea": "x" * 10_001}, 413, "idea_too_long"),
        ({"priority": 11}, 422, "validation_failed"),
        ({"callback_url": None}, 422, "validation_failed"),
    ]
    for change, status, code in refusals:
        response = await external_submit(stack, **{**good, **change})
        assert response.status_code == status, (change, response.text)
        body = response.json()
        assert body["status"] == "error" and body["error"]["code"] == code, (change, body)
    missing = await external_submit(stack, idea="Plan a garden", source_app="crm")
    assert missing.status_code == 422 and missing.json()["error"]["code"] == "validation_failed"

    accepted = await external_submit(stack, **good)
    assert accepted.status_code == 202
    await wait_until(lambda: published, timeout_s=10)
    await tap.unsubscribe()
    assert [(c.thread_id, c.channel, c.callback_url, c.source_app) for c in published] == [
        (accepted.json()["data"]["thread_id"], "external", "https://crm.test/hook", "crm")
    ]


async def publish_v1_submit(stack: Stack) -> str:
    """A SubmitIdea of schema version 1 published straight to NATS (callback inside ``origin``): the orchestrator
    opens the thread with the callback fields. Returns the thread id."""
    data = v1_submit_idea(callback_url=stack.callback_url("/v1"), source_app="legacy", telegram_chat_id="42")
    raw = msgspec.json.decode(data)
    await stack.js.publish(subjects.command_subject(SubmitIdea), data, headers={"Nats-Msg-Id": raw["command_id"]})
    opened: ThreadOpened = await stack.last(raw["thread_id"], ThreadOpened)
    assert (opened.callback_url, opened.source_app, opened.origin) == (
        stack.callback_url("/v1"),
        "legacy",
        {"telegram_chat_id": "42"},
    )
    return raw["thread_id"]


async def test_bad_input_is_refused_and_a_result_is_called_back_after_retries(stack: Stack, js_client):
    await refusals_publish_nothing(stack, js_client)
    stack.receiver.answer("/hooks/hermes", 500, 503)
    response = await external_submit(
        stack,
        idea="  Draft a reply to the supplier about the late delivery  ",
        callback_url=stack.callback_url("/hooks/hermes"),
        source_app="crm",
        project="alpha",
        priority=7,
        max_questions=0,
    )
    assert response.status_code == 202, response.text
    envelope = response.json()
    assert envelope["status"] == "success" and envelope["meta"]["request_id"]
    thread_id = envelope["data"]["thread_id"]
    assert envelope["data"]["status_url"] == f"/api/threads/{thread_id}/status"
    assert envelope["data"]["events_url"] == f"/api/threads/{thread_id}/events"

    opened: ThreadOpened = await stack.last(thread_id, ThreadOpened)
    assert (opened.channel, opened.source_app, opened.project, opened.priority, opened.max_questions) == (
        "external",
        "crm",
        "alpha",
        7,
        0,
    )
    assert opened.callback_url == stack.callback_url("/hooks/hermes") and opened.origin == {}
    assert opened.idea == "Draft a reply to the supplier about the late delivery"

    await stack.complete_draft(thread_id, "Dear supplier, the delivery is late; please ship by Friday.")
    done: ThreadCompleted = await stack.last(thread_id, ThreadCompleted)
    [sent] = await wait_until(lambda: stack.records(thread_id, "notification_sent"), timeout_s=20)

    calls = stack.receiver.to("/hooks/hermes")
    assert [c.status for c in calls] == [500, 503, 200]
    gaps = [later.at - earlier.at for earlier, later in zip(calls, calls[1:], strict=False)]
    assert gaps[0] >= BACKOFF_S * 0.9 and gaps[1] >= 2 * BACKOFF_S * 0.9  # exponential backoff
    assert all(c.body == calls[0].body for c in calls) and calls[-1].query == f"token={SECRET}"
    assert calls[-1].headers["Idempotency-Key"] == done.event_id
    assert calls[-1].body == {
        "thread_id": thread_id,
        "status": "completed",
        "source_app": "crm",
        "event_id": done.event_id,
        "occurred_at": calls[-1].body["occurred_at"],
        "final_draft_number": 1,
        "final_draft": "Dear supplier, the delivery is late; please ship by Friday.",
        "reason": "no_questions",
        "error": None,
        "thread_url": f"http://hermes.test/#thread={thread_id}",
    }

    assert sent.event_id == derived_id(done.event_id, "notification_sent", "webhook")
    assert (sent.channel, sent.kind, sent.cause_event_id, sent.correlation_id) == (
        "webhook",
        "thread_completed",
        done.event_id,
        done.correlation_id,
    )
    assert sent.recipient == f"127.0.0.1:{stack.receiver.port}/hooks/hermes"  # no token

    # The completion delivered again past JetStream's dedup window: the record stops a second POST.
    ack = await stack.js.publish(subjects.event_subject(done), encode(done), headers={"Nats-Msg-Id": new_id()})
    await wait_until(lambda: stack.handled(ack.seq), timeout_s=20)
    assert len(stack.receiver.to("/hooks/hermes")) == 3
    assert len(await stack.records(thread_id, "notification_sent")) == 1
    assert SECRET not in stack.notifier.log_text()


async def test_failures_given_up_calls_and_a_v1_producer(stack: Stack):
    v1_thread = await publish_v1_submit(stack)
    stack.receiver.answer("/gone", 410)
    stack.receiver.answer("/down", *[502] * ATTEMPTS)
    failing = (
        await external_submit(
            stack,
            idea="Translate my CV",
            callback_url=stack.callback_url("/failed"),
            source_app="hr.portal",
            max_questions=0,
        )
    ).json()["data"]["thread_id"]
    gone = (
        await external_submit(
            stack,
            idea="Plan a team offsite",
            callback_url=stack.callback_url("/gone"),
            source_app="crm",
            max_questions=0,
        )
    ).json()["data"]["thread_id"]
    down = (
        await external_submit(
            stack, idea="Name my bakery", callback_url=stack.callback_url("/down"), source_app="crm", max_questions=0
        )
    ).json()["data"]["thread_id"]

    await stack.abandon_draft(failing, "no backend is up")
    await stack.complete_draft(gone, "Offsite plan")
    await stack.complete_draft(down, "Bakery names")
    [failed_call] = await wait_until(lambda: stack.receiver.to("/failed"), timeout_s=20)
    assert failed_call.body["status"] == "failed" and failed_call.body["source_app"] == "hr.portal"
    assert failed_call.body["error"] == {"code": "no_backend", "message": "draft 1 failed: no backend is up"}
    assert failed_call.body["final_draft"] is None and failed_call.body["reason"] is None

    [gone_failed] = await wait_until(lambda: stack.records(gone, "notification_failed"), timeout_s=20)
    [down_failed] = await wait_until(lambda: stack.records(down, "notification_failed"), timeout_s=30)
    assert [c.status for c in stack.receiver.to("/gone")] == [410]  # a 4xx is not retried
    assert [c.status for c in stack.receiver.to("/down")] == [502] * ATTEMPTS  # then given up
    assert gone_failed.message.startswith("http_410: ") and down_failed.message.startswith("http_502: ")
    assert (down_failed.channel, down_failed.recipient) == ("webhook", f"127.0.0.1:{stack.receiver.port}/down")
    assert await stack.records(down, "notification_sent") == []
    assert SECRET not in stack.notifier.log_text()

    await stack.complete_draft(v1_thread, "Meeting summary")
    [call] = await wait_until(lambda: stack.receiver.to("/v1"), timeout_s=20)
    assert call.body["source_app"] == "legacy" and call.body["final_draft"] == "Meeting summary"
    assert call.query == f"token={SECRET}"


# --------------------------------------------------------------------------- internal addresses (SSRF)


async def test_internal_callback_addresses_are_refused_at_submission(stack: Stack, js_client):
    """Every spelling of a loopback, metadata or private address, and a name resolving to loopback: 400
    ``invalid_callback_url`` with the kind of address, nothing published, the sink never reached. The listed
    receiver (HERMES_OUTBOUND_ALLOW) is accepted, the same host on another port is not."""
    published, tap = await tap_submissions(js_client[0])
    refused = [*internal_urls(stack.sink.port), f"http://0177.0.0.1:{stack.sink.port}/hook"]
    for url in refused:
        response = await external_submit(stack, idea="Probe", callback_url=url, source_app="probe")
        assert response.status_code == 400, (url, response.text)
        error = response.json()["error"]
        assert error["code"] == "invalid_callback_url", (url, error)
        assert error["details"]["reason"] in ("loopback", "unspecified", "link_local", "private"), (url, error)
        assert "not a public one" in error["message"] and "/hook" not in error["message"]
    accepted = await external_submit(stack, idea="Probe", callback_url=stack.callback_url("/ok"), source_app="crm")
    assert accepted.status_code == 202, accepted.text
    await wait_until(lambda: published, timeout_s=10)
    await tap.unsubscribe()
    assert [c.callback_url for c in published] == [stack.callback_url("/ok")]
    assert stack.sink.connections == []


async def test_the_notifier_refuses_internal_addresses_that_bypassed_the_gateway(stack: Stack):
    """SubmitIdea commands published straight to the bus (no gateway check) with internal callback URLs: the
    notifier refuses each at delivery (one ``notification_failed`` ``refused_address``, no retry), never
    connects to the sink, and keeps delivering to the listed receiver."""
    urls = internal_urls(stack.sink.port)
    threads = []
    for url in urls:
        command = SubmitIdea(
            command_id=new_id(),
            issued_at=utcnow(),
            thread_id=new_id(),
            idea="Probe the callbacks",
            channel="external",
            max_questions=0,
            callback_url=url,
            source_app="probe",
        )
        await stack.js.publish(
            subjects.command_subject(command), encode(command), headers={"Nats-Msg-Id": command.command_id}
        )
        threads.append(command.thread_id)
    for thread_id in threads:
        await stack.complete_draft(thread_id, "A draft nobody internal may receive")
    for thread_id, url in zip(threads, urls, strict=True):
        [failed] = await wait_until(lambda t=thread_id: stack.records(t, "notification_failed"), timeout_s=20)
        assert failed.channel == "webhook" and failed.message.startswith("refused_address: "), (url, failed)
        assert await stack.records(thread_id, "notification_sent") == []
    assert stack.sink.connections == []
    assert stack.notifier.alive()
    log_text = stack.notifier.log_text()
    assert log_text.count("callback_retry") == 0 and log_text.count("refused_address") >= len(urls)

    allowed = await external_submit(
        stack, idea="Still delivered", callback_url=stack.callback_url("/after"), source_app="crm", max_questions=0
    )
    await stack.complete_draft(allowed.json()["data"]["thread_id"], "Delivered")
    await wait_until(lambda: stack.receiver.to("/after"), timeout_s=20)
