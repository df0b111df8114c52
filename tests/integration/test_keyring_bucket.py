"""The data keys' bucket on a real JetStream server: sealed appends, one key per aggregate across processes, erase
that leaves no key bytes in the server's files, no new personal data for a forgotten thread, and a new generation
for an aggregate learned again."""

from __future__ import annotations

import base64
import signal
from datetime import UTC, datetime

from conftest import NatsServer, stored_messages

from hermes_proto import keyring, subjects
from hermes_proto.bus import EventStore
from hermes_proto.codec import DecodeError, decode_event
from hermes_proto.events import ExecutionCompleted, PreferenceLearned, ThreadOpened
from hermes_proto.keyring import Keyring, key_id_of

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
SECRET = "the combination of my grandmother's safe is 4711"


def opened(thread_id: str) -> ThreadOpened:
    return ThreadOpened(
        event_id=f"o-{thread_id}",
        aggregate_id=thread_id,
        occurred_at=NOW,
        correlation_id="c",
        idea=SECRET,
        user_id="alice",
    )


def completed(thread_id: str, n: int) -> ExecutionCompleted:
    return ExecutionCompleted(
        event_id=f"x-{thread_id}-{n}",
        aggregate_id=thread_id,
        occurred_at=NOW,
        correlation_id="c",
        job_id=f"j{n}",
        backend="talos",
        model="m",
        text=f"{SECRET} (answer {n})",
        prompt_tokens=1,
        completion_tokens=1,
        latency_ms=1.0,
    )


def preference(n: int) -> PreferenceLearned:
    return PreferenceLearned(
        event_id=f"p-{n}",
        aggregate_id="pref1",
        occurred_at=NOW,
        correlation_id="c",
        user_id="alice",
        category="style",
        key="tone",
        value=f"{SECRET} {n}",
        votes={f"{SECRET} {n}": 1.0},
        confidence=0.9,
        stability=0.5,
        observations=3,
        source="explicit",
        evidence="said so",
    )


async def _open(js_ring: Keyring, data: bytes):
    await js_ring.ready((data,))
    keyring.activate(js_ring)
    return decode_event(data)


async def test_sealed_appends_erase_and_generations(js_client, nats_server: NatsServer) -> None:
    _, js = js_client
    store = EventStore(js, "test")
    await store.append([opened("t1"), completed("t1", 1)])
    raw = await stored_messages(js, subjects.thread_events("t1"))
    assert len(raw) == 2 and all(SECRET.encode() not in m.data for m in raw)

    other = await Keyring.connect(js)  # another process: loads the key from the bucket
    assert (await _open(other, raw[0].data)).idea == SECRET
    entry = other.known(key_id_of("thread", "t1"))
    assert entry is not None and entry.owner == "alice"
    key_b64 = base64.b64encode(entry.key)

    erasing = await Keyring.connect(js)
    assert await erasing.erase(js, [key_id_of("thread", "t1")]) == [key_id_of("thread", "t1")]
    fresh = await Keyring.connect(js)
    keyring.activate(fresh)
    for m in raw:
        await fresh.ready((m.data,))
        try:
            decode_event(m.data)
        except DecodeError as exc:
            assert exc.reason == "forgotten"
        else:
            raise AssertionError("a forgotten thread's event decoded")

    # An in-flight result for the forgotten thread is not appended (its event carries no owner).
    keyring.activate(await Keyring.connect(js))
    assert await EventStore(js, "test").append([completed("t1", 2)]) == [0]
    assert len(await stored_messages(js, subjects.thread_events("t1"))) == 2

    # A preference learned again after its key was destroyed gets a new generation; the old payload stays dead.
    await store.append([preference(1)])
    first = (await stored_messages(js, "hermes.evt.preference.pref1.>"))[0].data
    await erasing.erase(js, [key_id_of("preference", "pref1")])
    again = await Keyring.connect(js)
    keyring.activate(again)
    await EventStore(js, "test").append([preference(2)])
    stored = await stored_messages(js, "hermes.evt.preference.pref1.>")
    assert len(stored) == 2
    assert (await _open(again, stored[1].data)).value == f"{SECRET} 2"
    await again.ready((first,))
    try:
        decode_event(first)
    except DecodeError as exc:
        assert exc.reason == "forgotten"
    else:
        raise AssertionError("the destroyed generation still opens")

    # The erased key's bytes are gone from the server's files, not only from its index.
    nats_server.stop(signal.SIGTERM)
    leftovers = [p for p in nats_server.store_dir.rglob("*") if p.is_file() and key_b64 in p.read_bytes()]
    assert leftovers == []
    nats_server.start()


async def test_two_appenders_share_one_key(js_client) -> None:
    _, js = js_client
    a, b = await Keyring.connect(js), await Keyring.connect(js)
    first = await a.ensure(key_id_of("thread", "t9"), "bob")
    second = await b.ensure(key_id_of("thread", "t9"), "")
    assert first is not None and first == second
