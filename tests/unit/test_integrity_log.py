"""The pure parts of the tamper-evident log and the identity: published test vectors (BIP-340, BIP-86, NIP-19), the
leaf encoding, and :class:`LogVerifier` on logs built here (signed with a real key) and then altered, cut,
reordered, forged or re-keyed; inclusion proofs checked with the public key alone."""

from __future__ import annotations

import base64
import os
from datetime import UTC, datetime, timedelta

import pytest
from pymerkle import InmemoryTree

from hermes_proto.codec import encode
from hermes_proto.identity import (
    Identity,
    IdentityError,
    load_or_create,
    npub,
    parse_public_key,
    read_secret,
    taproot_address,
    verify_signature,
)
from hermes_proto.integrity import (
    ATTESTATION_SUBJECT,
    CHECKPOINT_SUBJECT,
    HANDOFF_SUBJECT,
    ZERO,
    CheckpointSigned,
    IdentityHandedOff,
    SoulAttested,
    attestation_digest,
    attestation_id,
    checkpoint_digest,
    handoff_digest,
    leaf_entry,
    millis,
    op_return_payload,
)
from hermes_proto.integrity_verify import LogVerifier, check_inclusion_proof

T0 = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)


def test_bip340_vector_0():
    key = Identity((3).to_bytes(32, "big"))
    assert key.public_key.upper() == "F9308A019258C31049344F85F89D5229B531C845836F99B08601F113BCE036F9"
    signature = key.sign(bytes(32), bytes(32))
    assert signature.upper() == (
        "E907831F80848D1069A5371B402410364BDF1C5F8307B0084C55F1CE2DCA8215"
        "25F66A4A85EA8B71E482A74F382D2CE5EBEEE8FDB2172F477DF4900D310536C0"
    )
    assert verify_signature(key.public_key, bytes(32), signature)
    assert not verify_signature(key.public_key, b"\x01" * 32, signature)
    assert not verify_signature("zz", bytes(32), signature)


def test_bip86_address_and_nip19_npub():
    internal = "cc8a4bc64d897bddc5fbc2f670f7a8ba0b386779106cf1223c6fc5d7cd6fc115"
    assert taproot_address(internal) == "bc1p5cyxnuxmeuwuvkwfem96lqzszd02n6xdcjrs20cac6yqjjwudpxqkedrcr"
    key = "3bf0c63fcb93463407af97a5e5ee64fa883d107ef9e558472c4eb9aaaefa459d"
    assert npub(key) == "npub180cvv07tjdrrgpa0j7j7tmnyl2yr6yr7l8j4s3evf6u64th6gkwsyjh6w6"
    assert parse_public_key(npub(key)) == key
    with pytest.raises(ValueError):
        parse_public_key("abcd")


def test_key_file_is_owner_only(tmp_path):
    identity, created = load_or_create(tmp_path / "identity", "You are Hermes.")
    assert created
    path = tmp_path / "identity" / "instance.key"
    assert path.stat().st_mode & 0o777 == 0o600 and (tmp_path / "identity").stat().st_mode & 0o777 == 0o700
    again, created = load_or_create(tmp_path / "identity", "other text")
    assert not created and again.public_key == identity.public_key
    os.chmod(path, 0o644)
    with pytest.raises(IdentityError):
        read_secret(path)


def test_leaf_entry_covers_every_part_and_not_header_order():
    base = leaf_entry(5, "hermes.evt.x.y.z", {"a": "1", "b": "2"}, b"data")
    assert base == leaf_entry(5, "hermes.evt.x.y.z", {"b": "2", "a": "1"}, b"data")
    assert (
        len(
            {
                base,
                leaf_entry(6, "hermes.evt.x.y.z", {"a": "1", "b": "2"}, b"data"),
                leaf_entry(5, "hermes.evt.x.y.w", {"a": "1", "b": "2"}, b"data"),
                leaf_entry(5, "hermes.evt.x.y.z", {"a": "1", "b": "3"}, b"data"),
                leaf_entry(5, "hermes.evt.x.y.z", {"a": "1", "b": "2"}, b"datb"),
                leaf_entry(5, "hermes.evt.x.y.z", None, b"data"),
            }
        )
        == 6
    )
    assert leaf_entry(1, "s", None, b"") == leaf_entry(1, "s", {}, b"")


class Log:
    """A log built the way the notary builds it: plain messages, then signed checkpoints over them."""

    def __init__(self, key: Identity) -> None:
        self.key = key
        self.messages: list[tuple[int, str, dict | None, bytes]] = []
        self.tree = InmemoryTree()
        self.signed = 0
        self.clock = T0
        self.attestation: SoulAttested | None = None
        self.last_root = ZERO

    def _now(self) -> datetime:
        self.clock += timedelta(milliseconds=7)
        return self.clock

    def _append(self, subject: str, headers: dict | None, data: bytes) -> None:
        sequence = len(self.messages) + 1
        self.messages.append((sequence, subject, headers, data))
        self.tree.append_entry(leaf_entry(sequence, subject, headers, data))

    def events(self, count: int) -> None:
        for i in range(count):
            self._append(f"hermes.evt.config.k{i}.setting_changed", {"Nats-Msg-Id": os.urandom(4).hex()}, b"v%d" % i)

    def checkpoint(self, key: Identity | None = None) -> None:
        key = key or self.key
        size, now = self.tree.get_size(), self._now()
        root = self.tree.get_root().hex()
        entries = b"".join(leaf_entry(*self.messages[i - 1]) for i in range(self.signed + 1, size + 1))
        event = CheckpointSigned(
            event_id=f"c{size}",
            aggregate_id="events",
            occurred_at=now,
            correlation_id="c",
            tree_size=size,
            previous_size=self.signed,
            root=root,
            entries=entries,
            public_key=key.public_key,
            signature=key.sign(checkpoint_digest(size, root, millis(now))),
        )
        self._append(CHECKPOINT_SUBJECT, None, encode(event))
        self.signed, self.last_root = size, root

    def attest(self, soul: str) -> None:
        last = self.attestation
        index, previous = (last.index + 1, attestation_id(last)) if last else (0, ZERO)
        now = self._now()
        event = SoulAttested(
            event_id=f"a{index}",
            aggregate_id="soul",
            occurred_at=now,
            correlation_id="a",
            index=index,
            soul_sha256=soul,
            previous=previous,
            public_key=self.key.public_key,
            signature=self.key.sign(attestation_digest(index, soul, previous, millis(now))),
        )
        self.attestation = event
        self._append(ATTESTATION_SUBJECT, None, encode(event))

    def hand_off(self, successor: Identity) -> None:
        now = self._now()
        root = self.last_root
        digest = handoff_digest(self.key.public_key, successor.public_key, millis(now), self.signed, root)
        event = IdentityHandedOff(
            event_id="h",
            aggregate_id="key",
            occurred_at=now,
            correlation_id="h",
            previous_public_key=self.key.public_key,
            public_key=successor.public_key,
            tree_size=self.signed,
            root=root,
            signature_previous=self.key.sign(digest),
            signature_new=successor.sign(digest),
        )
        self._append(HANDOFF_SUBJECT, None, encode(event))
        self.key = successor

    def raw(self, subject: str, data: bytes) -> None:
        self._append(subject, None, data)


def verify(messages, expected=None, last=None, keep=()):
    verifier = LogVerifier(expected)
    verifier.keep = set(keep)
    for message in messages:
        verifier.add(*message)
    return verifier, verifier.finish(last if last is not None else (messages[-1][0] if messages else 0))


@pytest.fixture
def log() -> Log:
    log = Log(Identity(os.urandom(32)))
    log.events(10)
    log.attest("aa" * 32)
    log.checkpoint()
    log.events(8)
    log.attest("bb" * 32)
    log.checkpoint()
    log.events(3)
    return log


def test_untouched_log_verifies(log):
    _, report = verify(log.messages, log.key.public_key)
    assert report.ok, report.findings
    assert report.checkpoints == 2 and report.attestations == 2 and report.covered == 21
    assert report.soul_sha256 == "bb" * 32 and report.last_sequence == len(log.messages)


@pytest.mark.parametrize("target", [1, 7, 15, 20])
def test_altered_message_is_named(log, target):
    messages = list(log.messages)
    seq, subject, headers, data = messages[target - 1]
    messages[target - 1] = (seq, subject, headers, data + b"!")
    _, report = verify(messages)
    assert (report.first.sequence, report.first.kind) == (target, "altered")


def test_header_change_is_altered(log):
    messages = list(log.messages)
    seq, subject, headers, data = messages[3]
    messages[3] = (seq, subject, {**headers, "traceparent": "x"}, data)
    report = verify(messages)[1]
    assert (report.first.sequence, report.first.kind) == (4, "altered")


def test_deleted_and_truncated_messages_are_missing(log):
    messages = [m for m in log.messages if m[0] != 9]
    report = verify(messages)[1]
    assert (report.first.sequence, report.first.kind) == (9, "missing")
    _, report = verify(log.messages[:-2], last=len(log.messages))
    assert report.first.kind == "missing" and report.first.sequence == len(log.messages) - 1


def test_reordered_messages_are_named_at_the_first(log):
    messages = list(log.messages)
    a, b = messages[4], messages[5]
    messages[4], messages[5] = (5, b[1], b[2], b[3]), (6, a[1], a[2], a[3])
    assert verify(messages)[1].first.sequence == 5


def test_forged_checkpoint_and_wrong_key(log):
    _, report = verify(log.messages, expected=Identity(os.urandom(32)).public_key)
    assert report.first.kind == "wrong_key"
    forger = Log(Identity(os.urandom(32)))
    forger.messages, forger.tree, forger.signed = list(log.messages), InmemoryTree(), 0
    for m in forger.messages:
        forger.tree.append_entry(leaf_entry(*m))
    forger.signed = log.signed
    forger.checkpoint()  # a second key signs on: not the log's key
    report = verify(forger.messages)[1]
    assert report.first.kind == "bad_signature" and report.first.sequence == len(forger.messages)


def test_broken_attestation_chain(log):
    log.attestation = None  # the next attestation restarts at 0: it does not follow the last
    log.attest("cc" * 32)
    report = verify(log.messages)[1]
    assert report.first.kind == "broken_chain" and report.first.sequence == len(log.messages)


def test_handoff_is_followed(log):
    first = log.key.public_key
    successor = Identity(os.urandom(32))
    log.hand_off(successor)
    log.events(4)
    log.checkpoint()
    log.attest("dd" * 32)
    _, report = verify(log.messages, successor.public_key)
    assert report.ok, report.findings
    assert report.keys == [first, successor.public_key]


def test_inclusion_proof_checks_with_the_key_alone(log):
    verifier, report = verify(log.messages, keep={7})
    document = verifier.inclusion_proof(7)
    assert check_inclusion_proof(document, log.key.public_key) is None
    other = Identity(os.urandom(32)).public_key
    assert "not" in check_inclusion_proof(document, other)
    edited = {**document, "message": {**document["message"], "data": base64.b64encode(b"v9").decode()}}
    assert check_inclusion_proof(edited, log.key.public_key) == "the message does not make the entry"
    with pytest.raises(ValueError):
        verifier.inclusion_proof(len(log.messages))  # not under a checkpoint yet


def test_op_return_payload_is_80_bytes(log):
    checkpoint = CheckpointSigned(
        event_id="c",
        aggregate_id="events",
        occurred_at=T0,
        correlation_id="c",
        tree_size=42,
        previous_size=0,
        root="ab" * 32,
        entries=b"",
        public_key=log.key.public_key,
        signature="00" * 64,
    )
    payload = op_return_payload(checkpoint)
    assert len(payload) == 80 and payload[:4] == b"HRM1"
    assert int.from_bytes(payload[4:12], "big") == 42 and payload[12:44].hex() == "ab" * 32


def test_the_old_key_cannot_put_a_real_handoff_after_a_history_of_its_own(log):
    """An attacker holding the pre-rotation key writes another history and appends the genuine handoff."""
    real = Log(log.key)
    real.messages, real.tree, real.signed, real.last_root = list(log.messages), InmemoryTree(), 0, ZERO
    for m in real.messages:
        real.tree.append_entry(leaf_entry(*m))
    real.signed, real.last_root = log.signed, log.last_root
    successor = Identity(os.urandom(32))
    real.hand_off(successor)
    genuine = real.messages[-1]

    forged = Log(log.key)  # same old key, another history
    forged.events(12)
    forged.checkpoint()
    forged.raw(HANDOFF_SUBJECT, genuine[3])
    report = verify(forged.messages, successor.public_key)[1]
    assert not report.ok and report.first.kind == "bad_signature"
    assert report.first.sequence == len(forged.messages)


def test_malformed_integrity_events_are_findings_not_crashes(log):
    log.raw(
        CHECKPOINT_SUBJECT,
        b'{"type":"checkpoint_signed","event_id":"x","aggregate_id":"events",'
        b'"occurred_at":"2026-12-06T09:00:00","correlation_id":"x","tree_size":3,"previous_size":21,'
        b'"root":"zz","entries":"","public_key":"00","signature":"00"}',
    )
    log.raw(ATTESTATION_SUBJECT, b"not json")
    log.raw(
        HANDOFF_SUBJECT,
        b'{"type":"identity_handed_off","event_id":"h","aggregate_id":"key",'
        b'"occurred_at":"2026-12-06T09:00:00Z","correlation_id":"h","previous_public_key":"ab",'
        b'"public_key":"cd","tree_size":-1,"root":"00","signature_previous":"","signature_new":""}',
    )
    report = verify(log.messages)[1]
    kinds = [(f.sequence, f.kind) for f in report.findings]
    n = len(log.messages)
    assert kinds == [(n - 2, "bad_checkpoint"), (n - 1, "broken_chain"), (n, "bad_signature")], kinds


def test_one_bad_checkpoint_does_not_spoil_the_next(log):
    size, now = log.tree.get_size(), log._now()
    bad = CheckpointSigned(
        event_id="bad",
        aggregate_id="events",
        occurred_at=now,
        correlation_id="c",
        tree_size=size,
        previous_size=log.signed,
        root="ab" * 32,
        entries=b"".join(leaf_entry(*log.messages[i - 1]) for i in range(log.signed + 1, size + 1)),
        public_key=log.key.public_key,
        signature=log.key.sign(checkpoint_digest(size, "ab" * 32, millis(now))),
    )
    log.raw(CHECKPOINT_SUBJECT, encode(bad))
    bad_at = len(log.messages)
    log.checkpoint()  # a valid one over the same leaves and the bad checkpoint's own
    report = verify(log.messages)[1]
    assert [(f.sequence, f.kind) for f in report.findings] == [(bad_at, "bad_checkpoint")]
    assert report.covered == log.signed
