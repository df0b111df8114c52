"""Dead letters over HTTP: ``GET /api/system/dead-letters`` and ``POST /api/system/dead-letters/{seq}/replay``.

The gateway runs as a real process on a real nats-server; the records come from the real orchestrator's
consumers (its command consumer and its projection) dead-lettering malformed messages, or, where a test needs
hundreds of them, from ``hermes_proto.bus.publish_dead_letter`` (the function every consumer uses).
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import msgspec
from conftest import thread_events, wait_until
from nats.js.errors import NotFoundError
from test_cli_client import run_hermes
from test_gateway_api import (  # noqa: F401 (fixtures)
    Gateway,
    Stack,
    assert_error,
    command_tap,
    gateway,
    http,
    orchestrators_wound_down,
    read_commands,
    stack,
)

from hermes_proto import subjects
from hermes_proto.bus import MSG_ID, publish_dead_letter
from hermes_proto.commands import SubmitIdea
from hermes_proto.deadletter import DeadLetterReplayed
from hermes_proto.events import ThreadOpened
from hermes_proto.ids import new_id, utcnow

COMMANDS_CONSUMER = "orchestrator-commands"
PROJECTION_CONSUMER = "orchestrator-projection"


def submit_idea(thread_id: str, idea: str | None) -> dict[str, Any]:
    """A ``SubmitIdea`` as JSON builtins; ``idea`` None leaves the required field out."""
    body = msgspec.to_builtins(
        SubmitIdea(command_id=new_id(), issued_at=utcnow(), thread_id=thread_id, idea=idea or "x", channel="external")
    )
    if idea is None:
        del body["idea"]
    return body


async def publish_raw(js, subject: str, data: bytes, **headers: str) -> tuple[int, str]:
    """Publish ``data`` as an external producer would; returns (stream sequence, its Nats-Msg-Id)."""
    msg_id = new_id()
    ack = await js.publish(subject, data, headers={MSG_ID: msg_id, **headers})
    return ack.seq, msg_id


async def listing(gw: Gateway, client: httpx.AsyncClient, **params: Any) -> dict[str, Any]:
    response = await client.get(f"{gw.url}/api/system/dead-letters", params=params)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "success"
    return body["data"]


async def listed(gw: Gateway, client: httpx.AsyncClient, count: int, **params: Any) -> list[dict[str, Any]]:
    """The listing once it holds ``count`` records (the consumers dead-letter asynchronously)."""

    async def enough() -> list[dict[str, Any]] | None:
        records = (await listing(gw, client, **params))["dead_letters"]
        return records if len(records) >= count else None

    records = await wait_until(enough, timeout_s=30, interval_s=0.2)
    assert len(records) == count, records
    return records


async def replay(gw: Gateway, client: httpx.AsyncClient, dlq_seq: int, payload: Any = None) -> httpx.Response:
    body = None if payload is None else {"payload": payload}
    return await client.post(f"{gw.url}/api/system/dead-letters/{dlq_seq}/replay", json=body)


async def replays_counted(gw: Gateway, client: httpx.AsyncClient) -> dict[str, float]:
    families = await gw.metrics(client)
    return {
        s.labels["consumer"]: s.value
        for s in families.get("hermes_dead_letters_replayed", [])
        if s.name.endswith("_total")
    }


async def opened(js, thread_id: str) -> list[ThreadOpened]:
    return [e for e in await thread_events(js, thread_id) if isinstance(e, ThreadOpened)]


async def last_seq(js, stream: str) -> int:
    return (await js.stream_info(stream)).state.last_seq


# --------------------------------------------------------------------------- the gateway alone


async def test_an_empty_dead_letter_stream_answers_at_once_and_bad_queries_get_their_code(
    gateway: Gateway, http, js_client
) -> None:
    started = time.perf_counter()
    data = await listing(gateway, http)
    assert time.perf_counter() - started < 1.5  # no fetch waiting for its expiry (2 s)
    assert data == {"dead_letters": [], "next_before": None}
    assert (await listing(gateway, http, consumer="nobody", reason="invalid_json", before=7))["dead_letters"] == []

    url = f"{gateway.url}/api/system/dead-letters"
    for params in ({"limit": 0}, {"limit": 501}, {"limit": "many"}, {"before": 0}):
        assert_error(await http.get(url, params=params), 422, "validation_failed")
    for params in ({"consumer": "hermes.dlq.>"}, {"reason": "a b"}):
        assert_error(await http.get(url, params=params), 400, "invalid_id")
    assert_error(await replay(gateway, http, 999), 404, "dead_letter_not_found")
    assert_error(await http.post(f"{url}/abc/replay"), 422, "validation_failed")
    assert_error(await http.post(f"{url}/0/replay"), 422, "validation_failed")
    assert_error(await http.post(f"{url}/{2**63}/replay"), 422, "validation_failed")  # past a 64-bit sequence
    assert_error(await replay(gateway, http, 2**63 - 1), 404, "dead_letter_not_found")


async def test_paging_and_filters_reach_past_many_records(gateway: Gateway, http, js_client) -> None:
    """Three records of a rare consumer, then 300 of a busy one: the rare ones are found behind them, pages
    follow ``next_before`` without gaps or repeats, and the filters combine."""
    _, js = js_client

    async def dead_letter(consumer: str, seq: int, reason: str) -> None:
        await publish_dead_letter(
            js,
            "test",
            consumer,
            stream=subjects.COMMANDS_STREAM,
            subject="hermes.cmd.submit_idea",
            sequence=seq,
            deliveries=1,
            headers={},
            data=b"{" + str(seq).encode(),
            reason=reason,
            detail="test",
        )

    for seq in (1, 2, 3):
        await dead_letter("rare", seq, "invalid_json" if seq != 2 else "validation_failed")
    for seq in range(4, 304):
        await dead_letter("busy", seq, "invalid_json" if seq % 100 else "handler_error")

    rare = await listing(gateway, http, consumer="rare", limit=2)
    assert [r["stream_sequence"] for r in rare["dead_letters"]] == [3, 2]
    assert rare["next_before"] == rare["dead_letters"][-1]["dlq_sequence"]
    older = await listing(gateway, http, consumer="rare", limit=2, before=rare["next_before"])
    assert [r["stream_sequence"] for r in older["dead_letters"]] == [1]
    assert older["next_before"] is None
    assert [
        r["stream_sequence"]
        for r in (await listing(gateway, http, consumer="rare", reason="invalid_json"))["dead_letters"]
    ] == [3, 1]
    errors = (await listing(gateway, http, reason="handler_error"))["dead_letters"]
    assert [(r["consumer"], r["stream_sequence"]) for r in errors] == [("busy", 300), ("busy", 200), ("busy", 100)]

    pages, before = [], None
    while True:
        page = await listing(gateway, http, limit=70, **({"before": before} if before else {}))
        pages.append(page["dead_letters"])
        before = page["next_before"]
        if before is None:
            break
    assert [len(p) for p in pages] == [70, 70, 70, 70, 23]
    everything = [r["dlq_sequence"] for p in pages for r in p]
    assert everything == sorted(everything, reverse=True) and len(set(everything)) == 303
    assert [r["stream_sequence"] for p in pages for r in p] == list(range(303, 0, -1))
    assert len((await listing(gateway, http, limit=500))["dead_letters"]) == 303
    started = time.perf_counter()
    assert (await listing(gateway, http, consumer="nobody"))["dead_letters"] == []
    assert time.perf_counter() - started < 1.5  # no window waits for a fetch to expire (2 s)


async def test_nats_down_answers_503_in_the_envelope(gateway: Gateway, http, nats_server, js_client) -> None:
    nats_server.stop()
    try:
        body = assert_error(await http.get(f"{gateway.url}/api/system/dead-letters"), 503, "bus_unavailable")
        assert body["error"]["retry_after"]
        assert_error(await replay(gateway, http, 1), 503, "bus_unavailable")
    finally:
        nats_server.start()


async def test_the_cli_lists_and_replays(gateway: Gateway, http, js_client, tmp_path) -> None:
    """``hermes dead-letters`` and ``hermes dead-letters replay``; nothing consumes the commands here, so the
    replayed one stays in HERMES_COMMANDS to be read back."""
    _, js = js_client
    broken = submit_idea("cli-thread", idea=None)
    await publish_dead_letter(
        js,
        "test",
        COMMANDS_CONSUMER,
        stream=subjects.COMMANDS_STREAM,
        subject="hermes.cmd.submit_idea",
        sequence=41,
        deliveries=1,
        headers={MSG_ID: "original"},
        data=json.dumps(broken).encode(),
        reason="validation_failed",
        detail="Object missing required field `idea`",
    )
    [record] = (await listing(gateway, http))["dead_letters"]
    seq = str(record["dlq_sequence"])

    code, out, err = await run_hermes(
        "dead-letters", "--consumer", COMMANDS_CONSUMER, "--reason", "validation_failed", url=gateway.url
    )
    assert code == 0, err
    [row] = [line.split() for line in out.splitlines() if line.startswith(seq)]
    assert row[:4] == [seq, COMMANDS_CONSUMER, "validation_failed", "hermes.cmd.submit_idea"]
    assert row[-1] == "no"

    code, _, err = await run_hermes("dead-letters", "replay", seq, "--payload", "[1, 2]", url=gateway.url)
    assert code == 2 and "JSON object" in err
    assert await read_commands(js) == []

    fixed = tmp_path / "fixed.json"
    fixed.write_text(json.dumps({**broken, "idea": "fixed by hand"}))
    code, out, err = await run_hermes("dead-letters", "replay", seq, "--payload", f"@{fixed}", url=gateway.url)
    assert code == 0, err
    [(command, headers)] = await read_commands(js)
    assert (command.thread_id, command.idea) == ("cli-thread", "fixed by hand")
    assert headers[MSG_ID] == f"replay-{seq}"
    assert f"Replayed dead letter {seq} (corrected payload) to hermes.cmd.submit_idea as #1" in out

    code, out, err = await run_hermes("dead-letters", "replay", seq, url=gateway.url)
    assert code == 1 and "already_replayed" in err
    code, out, _ = await run_hermes("dead-letters", "--json", url=gateway.url)
    assert json.loads(out)["dead_letters"][0]["replay"]["stream_sequence"] == 1


# --------------------------------------------------------------------------- with the real orchestrator


async def test_malformed_commands_are_listed_and_a_corrected_one_opens_its_thread(
    stack: Stack, http, js_client
) -> None:
    nc, js = js_client
    thread_id = f"dlq-{new_id()[:12]}"
    broken = submit_idea(thread_id, idea=None)
    bad_json_seq, _ = await publish_raw(js, "hermes.cmd.submit_idea", b'{"type": "submit_idea", "thread')
    broken_seq, broken_msg_id = await publish_raw(
        js, "hermes.cmd.submit_idea", json.dumps(broken).encode(), **{"X-Producer": "fuzzer"}
    )

    newest, oldest = await listed(stack.gateway, http, 2)
    assert (oldest["reason"], oldest["stream_sequence"]) == ("invalid_json", bad_json_seq)
    assert oldest["payload"] == '{"type": "submit_idea", "thread'
    assert (newest["reason"], newest["stream_sequence"]) == ("validation_failed", broken_seq)
    assert "idea" in newest["detail"]
    assert json.loads(newest["payload"]) == broken
    for record in (newest, oldest):
        assert record["consumer"] == COMMANDS_CONSUMER
        assert (record["stream"], record["subject"]) == (subjects.COMMANDS_STREAM, "hermes.cmd.submit_idea")
        assert record["deliveries"] == 1 and record["replayable"] is True
        assert record["replayed_at"] is None and record["replay"] is None
    assert newest["dlq_sequence"] > oldest["dlq_sequence"]
    assert newest["headers"] == {MSG_ID: broken_msg_id, "X-Producer": "fuzzer"}
    assert await opened(js, thread_id) == []

    # Replaying as is would only dead-letter it again; a corrected payload must be a JSON object.
    body = assert_error(await replay(stack.gateway, http, oldest["dlq_sequence"]), 422, "invalid_payload")
    assert body["error"]["details"]["reason"] == "invalid_json"
    assert_error(await replay(stack.gateway, http, newest["dlq_sequence"]), 422, "invalid_payload")
    assert_error(
        await replay(stack.gateway, http, newest["dlq_sequence"], ["not", "an", "object"]), 422, "validation_failed"
    )
    assert_error(await replay(stack.gateway, http, newest["dlq_sequence"], "text"), 422, "validation_failed")
    elsewhere = {**broken, "type": "rate_thread", "rating": 3}
    assert_error(await replay(stack.gateway, http, newest["dlq_sequence"], elsewhere), 422, "invalid_payload")
    commands_before = await last_seq(js, subjects.COMMANDS_STREAM)
    assert await replays_counted(stack.gateway, http) == {}

    tap = await command_tap(nc)
    corrected = {**broken, "idea": "plan a balcony garden"}
    response = await replay(stack.gateway, http, newest["dlq_sequence"], corrected)
    assert response.status_code == 200, response.text
    marker = response.json()["data"]
    assert marker["dlq_sequence"] == newest["dlq_sequence"] and marker["corrected"] is True
    assert (marker["subject"], marker["stream"]) == ("hermes.cmd.submit_idea", subjects.COMMANDS_STREAM)
    assert marker["stream_sequence"] == commands_before + 1
    [(command, headers)] = await wait_until(lambda: tap.seen)
    assert command == msgspec.json.decode(json.dumps(corrected), type=SubmitIdea)
    assert headers == {
        MSG_ID: f"replay-{newest['dlq_sequence']}",
        "X-Producer": "fuzzer",
        "Nats-Expected-Stream": subjects.COMMANDS_STREAM,
    }  # only into the original stream

    [thread_opened] = await wait_until(lambda: opened(js, thread_id), timeout_s=20)
    assert thread_opened.idea == "plan a balcony garden"
    status = await http.get(f"{stack.url}/api/threads/{thread_id}/status")
    assert status.status_code == 200 and status.json()["data"]["thread_id"] == thread_id

    # The listing shows the replay; the other record is untouched; one replay counted.
    newest_now, oldest_now = (await listing(stack.gateway, http))["dead_letters"]
    assert newest_now["replayed_at"] == marker["replayed_at"]
    assert newest_now["replay"]["stream_sequence"] == marker["stream_sequence"]
    assert oldest_now["replayed_at"] is None
    assert await replays_counted(stack.gateway, http) == {COMMANDS_CONSUMER: 1.0}
    # No new dead letter: the replayed command was handled.
    assert len((await listing(stack.gateway, http))["dead_letters"]) == 2


async def test_a_double_click_replays_once(stack: Stack, http, js_client) -> None:
    _, js = js_client
    thread_id = f"dlq-{new_id()[:12]}"
    broken = submit_idea(thread_id, idea=None)
    await publish_raw(js, "hermes.cmd.submit_idea", json.dumps(broken).encode())
    [record] = await listed(stack.gateway, http, 1)
    commands_before = await last_seq(js, subjects.COMMANDS_STREAM)

    corrected = {**broken, "idea": "write a haiku"}
    first, second = await asyncio.gather(
        replay(stack.gateway, http, record["dlq_sequence"], corrected),
        replay(stack.gateway, http, record["dlq_sequence"], corrected),
    )
    statuses = sorted([first.status_code, second.status_code])
    assert statuses in ([200, 200], [200, 409]), (first.text, second.text)
    await wait_until(lambda: opened(js, thread_id), timeout_s=20)
    later = assert_error(await replay(stack.gateway, http, record["dlq_sequence"], corrected), 409, "already_replayed")
    assert later["error"]["details"]["dlq_sequence"] == record["dlq_sequence"]

    assert await last_seq(js, subjects.COMMANDS_STREAM) == commands_before + 1  # one publish reached the stream
    assert len(await opened(js, thread_id)) == 1
    assert await replays_counted(stack.gateway, http) == {COMMANDS_CONSUMER: 1.0}
    markers = (await js.stream_info(subjects.DLQ_STREAM, subjects_filter=subjects.DLQ_REPLAYED_ALL)).state
    assert markers.subjects == {subjects.dlq_replayed_subject(record["dlq_sequence"]): 1}
    replayed = await js.get_last_msg(subjects.DLQ_STREAM, subjects.dlq_replayed_subject(record["dlq_sequence"]))
    assert msgspec.json.decode(replayed.data, type=DeadLetterReplayed).corrected is True


async def test_dead_events_of_the_log_are_listed_but_not_replayed(stack: Stack, http, js_client) -> None:
    """The orchestrator's projection dead-letters an undecodable event. It stays in HERMES_EVENTS, so a replay
    would append a second copy: refused with 409 ``not_replayable``; a marker's sequence is not a record."""
    _, js = js_client
    events_seq, _ = await publish_raw(js, "hermes.evt.thread.t1.mystery_happened", b'{"type": "mystery_happened"}')
    command_seq, _ = await publish_raw(js, "hermes.cmd.submit_idea", b"not json")
    newest, oldest = await listed(stack.gateway, http, 2)
    [event_record] = [r for r in (newest, oldest) if r["consumer"] == PROJECTION_CONSUMER]
    assert (event_record["stream"], event_record["stream_sequence"]) == (subjects.EVENTS_STREAM, events_seq)
    assert event_record["subject"] == "hermes.evt.thread.t1.mystery_happened"
    assert event_record["reason"] == "validation_failed" and event_record["replayable"] is False

    assert [
        r["consumer"] for r in (await listing(stack.gateway, http, consumer=PROJECTION_CONSUMER))["dead_letters"]
    ] == [PROJECTION_CONSUMER]
    commands = (await listing(stack.gateway, http, consumer=COMMANDS_CONSUMER, reason="invalid_json"))["dead_letters"]
    assert [r["stream_sequence"] for r in commands] == [command_seq]
    assert (await listing(stack.gateway, http, consumer=COMMANDS_CONSUMER, reason="validation_failed")) == {
        "dead_letters": [],
        "next_before": None,
    }

    events_before = await last_seq(js, subjects.EVENTS_STREAM)
    body = assert_error(
        await replay(stack.gateway, http, event_record["dlq_sequence"], {"type": "thread_opened"}),
        409,
        "not_replayable",
    )
    assert body["error"]["details"]["stream"] == subjects.EVENTS_STREAM
    assert await last_seq(js, subjects.EVENTS_STREAM) == events_before
    try:
        await js.get_last_msg(subjects.DLQ_STREAM, subjects.dlq_replayed_subject(event_record["dlq_sequence"]))
        raise AssertionError("a refused replay left a marker")
    except NotFoundError:
        pass

    # A marker sits in the same stream; its sequence is not a dead letter.
    command_record = commands[0]
    corrected = submit_idea(f"dlq-{new_id()[:12]}", idea="fixed")
    marker = (await replay(stack.gateway, http, command_record["dlq_sequence"], corrected)).json()["data"]
    marker_seq = (await js.get_last_msg(subjects.DLQ_STREAM, subjects.dlq_replayed_subject(marker["dlq_sequence"]))).seq
    assert_error(await replay(stack.gateway, http, marker_seq), 404, "dead_letter_not_found")
    assert len((await listing(stack.gateway, http))["dead_letters"]) == 2  # markers are never listed


async def test_an_execution_request_the_edge_gave_up_on_is_not_replayed(gateway: Gateway, http, js_client) -> None:
    """The edge records ``ExecutionFailed(max_deliveries)`` before dead-lettering such a request, and the router
    retries or abandons the job: replaying the old request would run the job twice. An undecodable one may be
    replayed (corrected)."""
    _, js = js_client
    for seq, reason in ((7, "max_deliveries"), (8, "handler_error"), (9, "invalid_json")):
        await publish_dead_letter(
            js,
            "test",
            "edge-talos",
            stream=subjects.EXEC_STREAM,
            subject=subjects.exec_subject("talos"),
            sequence=seq,
            deliveries=6,
            headers={},
            data=b'{"type": "execution_requested"}',
            reason=reason,
            detail="test",
        )
    records = {r["reason"]: r for r in await listed(gateway, http, 3)}
    assert records["max_deliveries"]["replayable"] is False and records["handler_error"]["replayable"] is False
    assert records["invalid_json"]["replayable"] is True
    exec_before = await last_seq(js, subjects.EXEC_STREAM)
    body = assert_error(await replay(gateway, http, records["max_deliveries"]["dlq_sequence"]), 409, "not_replayable")
    assert "ExecutionFailed" in body["error"]["message"]
    assert await last_seq(js, subjects.EXEC_STREAM) == exec_before
