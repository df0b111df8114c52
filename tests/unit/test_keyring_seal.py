"""Sealed personal events: the payload format, opening through the codec, generations, forgetting in memory, and
the retention policy (pure: no NATS; the bucket side is tests/integration/test_keyring_bucket.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from hermes_proto import codec, keyring, subjects
from hermes_proto.events import CostRecorded, ThreadOpened
from hermes_proto.forgetting import PersonalDataForgotten, RetentionPolicy, forgotten_aggregates
from hermes_proto.keyring import KeyEntry, Keyring, is_personal, key_id_of, seal, sealed_header

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


def opened(thread_id: str = "t1", text: str = "my secret plan about the lighthouse") -> ThreadOpened:
    return ThreadOpened(
        event_id=f"e-{thread_id}",
        aggregate_id=thread_id,
        occurred_at=NOW,
        correlation_id="c",
        idea=text,
        user_id="alice",
    )


@pytest.fixture
def ring():
    kr = Keyring()
    keyring.activate(kr)
    yield kr
    keyring.activate(None)


def entry(created_ms: int = 1_000) -> KeyEntry:
    return KeyEntry(key=AESGCM.generate_key(bit_length=256), owner="alice", created_ms=created_ms)


def test_sealed_payload_hides_the_text_and_opens_through_the_codec(ring: Keyring) -> None:
    event = opened()
    key_id = key_id_of("thread", "t1")
    ring._keys[key_id] = entry()
    data = seal(key_id, ring._keys[key_id], codec.encode(event))
    assert b"lighthouse" not in data and data.startswith(keyring.MAGIC)
    assert sealed_header(data)[:2] == (key_id, 1_000)
    assert len(data) == len(codec.encode(event)) + 4 + 1 + len(key_id) + 8 + 12 + 16
    assert codec.decode_event(data) == event
    assert codec.decode_event(codec.encode(event)) == event  # clear payloads still decode


def test_a_flipped_byte_is_unsealable_not_a_crash(ring: Keyring) -> None:
    key_id = key_id_of("thread", "t1")
    ring._keys[key_id] = entry()
    data = bytearray(seal(key_id, ring._keys[key_id], codec.encode(opened())))
    data[-3] ^= 1
    with pytest.raises(codec.DecodeError) as err:
        codec.decode_event(bytes(data))
    assert err.value.reason == "unsealable"
    with pytest.raises(codec.DecodeError) as err:
        codec.decode_event(bytes(data[:20]))
    assert err.value.reason == "unsealable"


def test_unloaded_and_destroyed_keys_have_their_own_reasons(ring: Keyring) -> None:
    key_id = key_id_of("thread", "t1")
    old = entry(1_000)
    data = seal(key_id, old, codec.encode(opened()))
    with pytest.raises(codec.DecodeError) as err:
        codec.decode_event(data)
    assert err.value.reason == "key_unavailable"
    ring._keys[key_id] = old
    forgotten = PersonalDataForgotten(
        event_id="f", aggregate_id="p", occurred_at=NOW, correlation_id="c", user_id="alice", key_ids=[key_id]
    )
    forged_on = "hermes.evt.thread.t9.execution_completed"  # a role may append there, not a forget
    with pytest.raises(codec.DecodeError) as err:
        codec.decode_event(codec.encode(forgotten), forged_on)
    assert err.value.reason == "subject_mismatch"
    assert codec.decode_event(data).idea  # the forged forget dropped nothing
    codec.decode_event(codec.encode(forgotten), subjects.event_subject(forgotten))  # the real one drops the key
    with pytest.raises(codec.DecodeError) as err:
        codec.decode_event(data)
    assert err.value.reason == "forgotten"


def test_a_forget_event_leaves_a_newer_generation_alone(ring: Keyring) -> None:
    key_id = key_id_of("preference", "p1")
    newer = entry(int((NOW + timedelta(minutes=1)).timestamp() * 1000))
    ring._keys[key_id] = newer
    ring.forget_loaded([key_id], before_ms=int(NOW.timestamp() * 1000))
    assert ring.known(key_id) == newer
    ring.forget_loaded([key_id], before_ms=newer.created_ms)
    assert ring.known(key_id) is None


def test_a_payload_of_an_older_generation_is_forgotten_once_the_bucket_says_so() -> None:
    kr = Keyring()
    key_id = key_id_of("preference", "p1")
    old, new = entry(1_000), entry(2_000)
    data = seal(key_id, old, b"{}")
    kr._keys[key_id] = new
    with pytest.raises(keyring.KeyUnavailable):
        kr.open(data)
    kr._dead.add((key_id, 1_000))  # what ready() records when the bucket holds another generation
    with pytest.raises(keyring.KeyForgotten):
        kr.open(data)


def test_what_is_sealed() -> None:
    assert is_personal("thread", "thread_opened") and is_personal("preference", "preference_learned")
    assert not is_personal("thread", CostRecorded.type_name())  # spend survives a forgotten thread
    assert not is_personal("backend", "backend_enabled") and not is_personal("log", "checkpoint_signed")


def test_retention_policy() -> None:
    policy = RetentionPolicy.parse("thread=90, schedule=0.5")
    day = 86_400_000
    assert policy.expired("thread.t1", created_ms=0, now_ms=91 * day)
    assert not policy.expired("thread.t1", created_ms=0, now_ms=89 * day)
    assert policy.expired("schedule.s", created_ms=0, now_ms=day)
    assert not policy.expired("preference.p", created_ms=0, now_ms=10_000 * day)
    assert RetentionPolicy.parse("").days == {}
    for bad in ("thread", "thread=", "thread=-1", "=5", "thread=abc"):
        with pytest.raises(ValueError, match="retention item"):
            RetentionPolicy.parse(bad)


def test_forgotten_aggregates_groups_the_key_ids() -> None:
    event = PersonalDataForgotten(
        event_id="f",
        aggregate_id="p",
        occurred_at=NOW,
        correlation_id="c",
        key_ids=["thread.a", "thread.b", "preference.x", "junk"],
    )
    assert forgotten_aggregates(event) == {"thread": {"a", "b"}, "preference": {"x"}}


def test_key_ids_are_always_valid_bucket_keys_and_a_forged_header_is_unsealable(ring: Keyring) -> None:
    assert key_id_of("thread", "abc-123_X=") == "thread.abc-123_X="
    odd = [key_id_of("thread", i) for i in ("order:42", "jira@PROJ-1", "idée", "x" * 250)]
    assert all(k.startswith("thread.h-") and len(k) == len("thread.h-") + 40 for k in odd) and len(set(odd)) == 4
    entry_ = entry()
    for bad in ("thread.*", "a b", "", "backend.x", "thread.x.y"):
        kid = bad.encode()
        header = keyring.MAGIC + bytes([len(kid)]) + kid + (1).to_bytes(8, "big")
        data = header + bytes(12) + AESGCM(entry_.key).encrypt(bytes(12), b"{}", header)
        assert sealed_header(data) is None
        with pytest.raises(codec.DecodeError) as err:
            codec.decode_event(data)
        assert err.value.reason == "unsealable"
