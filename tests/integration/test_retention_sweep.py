"""Retention (HERMES_RETENTION) on a real JetStream bucket: the orchestrator's sweep destroys exactly the data keys
past their aggregate type's limit, says so in one event per type, and the events sealed under them are unreadable
from then on; a second sweep finds nothing more."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime

import msgspec
from conftest import stored_messages

from hermes_proto import keyring, subjects
from hermes_proto.bus import EventStore
from hermes_proto.codec import DecodeError, decode_event
from hermes_proto.events import ThreadOpened
from hermes_proto.forgetting import PersonalDataForgotten, RetentionPolicy
from hermes_proto.keyring import KeyEntry, Keyring

from hermes_orchestrator import forgetting
from hermes_orchestrator.forgetting import Forgetting

DAY_MS = 86_400_000


async def test_the_sweep_destroys_only_expired_keys_of_limited_types(js_client, monkeypatch) -> None:
    _, js = js_client
    ring = await Keyring.connect(js)
    keyring.activate(ring)
    now = int(time.time() * 1000)
    ages = {"thread.old": 100, "thread.old2": 95, "thread.new": 1, "preference.old": 400, "schedule.old": 10}
    for key_id, days in ages.items():
        entry = KeyEntry(key=os.urandom(32), owner="ann", created_ms=now - days * DAY_MS)
        await ring.kv.put(key_id, msgspec.json.encode(entry))
    store = EventStore(js, "test")
    opened = ThreadOpened(
        event_id="o1", aggregate_id="old", occurred_at=datetime.now(UTC), correlation_id="c", idea="ann's secret plan"
    )
    await store.append([opened])
    appended = []

    async def append(events) -> None:
        appended.extend(events)
        await store.append(events)

    monkeypatch.setattr(forgetting, "CHUNK", 1)  # one event per key: a long list is split, never one huge event
    sweep = Forgetting(js, ring, None, append, RetentionPolicy.parse("thread=90,schedule=30"), interval_s=3600)  # type: ignore[arg-type]
    assert await sweep.sweep(now) == 2
    assert [(e.reason, e.key_ids, e.user_id) for e in appended] == [
        ("retention:thread", ["thread.old"], ""),
        ("retention:thread", ["thread.old2"], ""),
    ]
    assert sorted(k for k, _, _ in await ring.entries()) == ["preference.old", "schedule.old", "thread.new"]
    stored = await stored_messages(js, "hermes.evt.privacy.*.personal_data_forgotten")
    assert len(stored) == 2 and isinstance(decode_event(stored[0].data), PersonalDataForgotten)

    fresh = await Keyring.connect(js)  # another process, after the sweep
    keyring.activate(fresh)
    [raw] = await stored_messages(js, subjects.thread_events("old"))
    await fresh.ready((raw.data,))
    try:
        decode_event(raw.data)
    except DecodeError as exc:
        assert exc.reason == "forgotten"
    else:
        raise AssertionError("an expired thread's event still opens")
    assert await sweep.sweep(now) == 0 and len(appended) == 2
