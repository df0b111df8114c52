"""The gateway's one event feed, fanned out to its live views (``hermes_gateway.feed``, ``hermes_gateway.live``), over
a real gateway process, a real nats-server and real HTTP.

Live views cost no JetStream consumer and no API request; a view starting before what the feed holds reads the log
first and then goes live without losing or repeating an event; the feed outlives a nats-server restart; reads that
follow what a client saw on the stream wait for the feed's position, not the log's end.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
from conftest import wait_until
from test_gateway_api import (  # noqa: F401 (fixtures)
    Gateway,
    Stack,
    drafting_thread,
    gateway,
    http,
    open_sse,
    stack,
    start_gateway,
    submit,
    thread_log,
)

from hermes_proto import subjects
from hermes_proto.bus import EventStore
from hermes_proto.events import JobDeferred, ThreadCompleted, ThreadOpened
from hermes_proto.ids import new_id, utcnow
from hermes_proto.keyring import KEYS_STREAM


def opened(thread_id: str) -> ThreadOpened:
    return ThreadOpened(
        event_id=new_id(), aggregate_id=thread_id, occurred_at=utcnow(), correlation_id="c", idea="watch me"
    )


def deferred(thread_id: str, reason: str) -> JobDeferred:
    return JobDeferred(
        event_id=new_id(), aggregate_id=thread_id, occurred_at=utcnow(), correlation_id="c", job_id="j1", reason=reason
    )


def completed(thread_id: str) -> ThreadCompleted:
    return ThreadCompleted(
        event_id=new_id(),
        aggregate_id=thread_id,
        occurred_at=utcnow(),
        correlation_id="c",
        final_draft_number=1,
        reason="no_questions",
    )


async def js_api_tap(nc) -> dict[str, int]:  # noqa: ANN001 (a nats client)
    """Counts of JetStream API requests by kind (``CONSUMER.CREATE``, ``STREAM.INFO``, ``STREAM.MSG``...) from now;
    not the data keys' loads (one direct get per thread and process, :mod:`hermes_proto.keyring`), which the
    live views do not cause."""
    counts: dict[str, int] = {}

    async def count(msg) -> None:  # noqa: ANN001
        if KEYS_STREAM in msg.subject:
            return
        kind = ".".join(msg.subject.split(".")[2:4])
        counts[kind] = counts.get(kind, 0) + 1

    await nc.subscribe("$JS.API.>", cb=count)
    await nc.flush()
    return counts


async def metric(gw: Gateway, client: httpx.AsyncClient, name: str) -> float:
    return (await gw.metrics(client))[name][0].value


async def views_are(gw: Gateway, client: httpx.AsyncClient, expected: int) -> bool:
    return await metric(gw, client, "hermes_gateway_live_views") == expected


async def test_live_views_create_no_consumer_and_ask_jetstream_nothing(gateway: Gateway, http, js_client) -> None:
    """Two SSE streams of a thread submitted here, from its start, and the submission itself: the events come from
    the gateway's one feed; no consumer is created, no stream state or message is asked for."""
    nc, js = js_client
    api = await js_api_tap(nc)
    thread_id = await submit(gateway, http, "watch me twice")
    streams = [open_sse(http, f"{gateway.url}/api/threads/{thread_id}/events") for _ in range(2)]
    await wait_until(lambda: views_are(gateway, http, 2), timeout_s=10)
    store = EventStore(js, "test")
    await store.append([opened(thread_id)])
    await store.append([deferred(thread_id, "saturated"), completed(thread_id)])
    for sse, task in streams:
        await asyncio.wait_for(task, timeout=15)
        assert sse.types() == ["thread_opened", "job_deferred", "thread_completed"]
    await nc.flush()
    await asyncio.sleep(0.2)
    assert api == {}, api
    log = [seq for seq, _ in await thread_log(js, thread_id)]  # the test's own requests start here
    for sse, _ in streams:
        assert [int(e["id"]) for e in sse.events] == log
    await wait_until(lambda: views_are(gateway, http, 0), timeout_s=10)
    assert await metric(gateway, http, "hermes_gateway_feed_catch_up_reads") == 0


async def test_a_view_from_before_the_gateway_started_reads_the_log_then_goes_live(
    bus_env, js_client, http, tmp_path: Path
) -> None:
    """Events appended before the gateway started are not in its feed: a view from the thread's start (or from a
    Last-Event-ID among them) reads them from the log, then takes the live ones, each exactly once, in log order."""
    _, js = js_client
    store = EventStore(js, "test")
    thread_id, other = new_id(), new_id()
    await store.append([opened(thread_id)])
    await store.append([opened(other)])
    await store.append([deferred(thread_id, "saturated"), deferred(thread_id, "cooling_down")])
    gw = await start_gateway(bus_env, tmp_path / "logs")
    try:
        sse, task = open_sse(http, f"{gw.url}/api/threads/{thread_id}/events")
        await wait_until(lambda: len(sse.events) >= 3, timeout_s=10)
        old = [seq for seq, _ in await thread_log(js, thread_id)]
        resumed, resumed_task = open_sse(
            http, f"{gw.url}/api/threads/{thread_id}/events", headers={"Last-Event-ID": str(old[0])}
        )
        await wait_until(lambda: len(resumed.events) >= 2, timeout_s=10)
        reads = await metric(gw, http, "hermes_gateway_feed_catch_up_reads")
        assert reads >= 3  # two events read (plus one past the last), and the same again from old[0]
        await store.append([deferred(thread_id, "over_budget")])
        await store.append([opened(other)])
        await store.append([completed(thread_id)])
        await asyncio.wait_for(asyncio.gather(task, resumed_task), timeout=15)
        log = [seq for seq, _ in await thread_log(js, thread_id)]
        assert len(log) == 5
        assert [int(e["id"]) for e in sse.events] == log
        assert [int(e["id"]) for e in resumed.events] == log[1:]
        assert [json.loads(e["data"]).get("reason") for e in sse.events[1:]] == [
            "saturated",
            "cooling_down",
            "over_budget",
            "no_questions",
        ]
        # The live part came from the feed: no more reads of the log than for the old part.
        assert await metric(gw, http, "hermes_gateway_feed_catch_up_reads") == reads
        assert (await js.stream_info(subjects.EVENTS_STREAM)).state.consumer_count == 1
    finally:
        gw.process.stop()


async def test_the_feed_outlives_a_nats_restart(gateway: Gateway, http, nats_server, js_client) -> None:
    """nats-server restarts (the gateway's in-memory consumer is gone): while it is down a live view answers 503
    ``bus_unavailable``; then the feed is recreated from where it was, so events appended while it was away and after
    reach a view."""
    nc, js = js_client
    thread_id = await submit(gateway, http, "survive a restart")
    nats_server.stop()

    async def refused() -> bool:
        response = await http.get(f"{gateway.url}/api/threads/{thread_id}/events")
        return response.status_code == 503 and response.json()["error"]["code"] == "bus_unavailable"

    await wait_until(refused, timeout_s=10)
    nats_server.start()
    await wait_until(lambda: nc.is_connected, timeout_s=20)
    store = EventStore(js, "test")
    first = opened(thread_id)

    async def appended() -> bool:  # JetStream takes a moment to answer again (a repeat is deduplicated)
        try:
            await store.append([first])
            return True
        except Exception:  # noqa: BLE001 - whatever the client raises until JetStream is back
            return False

    await wait_until(appended, timeout_s=60)  # before the gateway's feed is back, most likely
    sse, task = open_sse(http, f"{gateway.url}/api/threads/{thread_id}/events")
    await wait_until(lambda: len(sse.events) >= 1, timeout_s=20)
    await store.append([completed(thread_id)])
    await asyncio.wait_for(task, timeout=20)
    assert sse.types() == ["thread_opened", "thread_completed"]
    assert [int(e["id"]) for e in sse.events] == [seq for seq, _ in await thread_log(js, thread_id)]


async def test_a_read_after_the_stream_includes_what_the_stream_showed(stack: Stack, http, js_client) -> None:
    """Status without ``min_sequence`` right after SSE showed ``draft_presented``: the orchestrator first applies
    everything this gateway's feed delivered, so the draft is there; the stream made no consumer."""
    nc, _ = js_client
    thread_id, job = await drafting_thread(stack, http, "read what I saw", max_questions=0)
    sse, task = open_sse(http, f"{stack.url}/api/threads/{thread_id}/events")
    await wait_until(lambda: "job_queued" in sse.types(), timeout_s=10)
    api = await js_api_tap(nc)
    await stack.peers.complete(job, "Seen, then read.")
    await wait_until(lambda: "draft_presented" in sse.types(), timeout_s=10)
    response = await http.get(f"{stack.url}/api/threads/{thread_id}/status")
    assert response.status_code == 200, response.text
    assert response.json()["data"]["draft1"] == "Seen, then read."
    assert "CONSUMER.CREATE" not in api
    await asyncio.wait_for(task, timeout=15)
