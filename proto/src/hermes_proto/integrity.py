"""The tamper-evident log's facts: leaves, signed checkpoints, SOUL.md attestations and key handoffs.

Every message of ``HERMES_EVENTS`` is a leaf of one Merkle tree (RFC 6962: leaf hash SHA-256(0x00 || entry), node
hash SHA-256(0x01 || left || right); pymerkle's tree with its ``security`` prefixes). A leaf's entry is
:func:`leaf_entry`: SHA-256 over the stored message (stream sequence, subject, headers, data), so the tree covers what
is stored, including ciphertext. Leaf ``i`` (counting from one) is stream sequence ``i``; a sequence missing from the
stream becomes :func:`gap_entry`. The notary appends a :class:`CheckpointSigned` (tree size, root, the entries it adds,
a BIP-340 signature) to the same stream it covers, a :class:`SoulAttested` for every SOUL.md change (a hash chain),
and an :class:`IdentityHandedOff` when a successor key takes over. :mod:`hermes_proto.integrity_verify` checks them.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import ClassVar

import msgspec

from hermes_proto.base import Event

LOG_AGGREGATE = "events"
"""The aggregate id of the checkpoints (the stream they cover: ``hermes.evt.log.events.checkpoint_signed``)."""
OP_RETURN_MAGIC = b"HRM1"
ZERO = "0" * 64
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def tagged_hash(tag: str, data: bytes) -> bytes:
    """BIP-340's tagged hash: SHA-256(SHA-256(tag) || SHA-256(tag) || data), 32 bytes."""
    digest = hashlib.sha256(tag.encode()).digest()
    return hashlib.sha256(digest + digest + data).digest()


def millis(moment: datetime) -> int:
    """``moment`` as whole milliseconds since the Unix epoch (exact integer arithmetic, no float rounding)."""
    return (moment - _EPOCH) // timedelta(milliseconds=1)


def u64(value: int) -> bytes:
    return struct.pack(">Q", value)


def leaf_entry(sequence: int, subject: str, headers: Mapping[str, str] | None, data: bytes) -> bytes:
    """32 bytes: SHA-256 of sequence (u64 BE) || len(subject) (u32 BE) || subject || len(h) (u32 BE) || h || data,
    where h is the JSON array of the headers' [name, value] pairs sorted by name (no headers: ``[]``)."""
    name = subject.encode()
    header_bytes = msgspec.json.encode(sorted((headers or {}).items()))
    return hashlib.sha256(
        struct.pack(">QI", sequence, len(name)) + name + struct.pack(">I", len(header_bytes)) + header_bytes + data
    ).digest()


def gap_entry(sequence: int) -> bytes:
    """The entry of a sequence the stream does not hold (deleted before the notary read it)."""
    return tagged_hash("hermes/gap", u64(sequence))


class CheckpointSigned(Event, frozen=True, kw_only=True):
    """The notary's signature over the first ``tree_size`` leaves (stream sequences 1..tree_size). ``root``: the
    tree's root hash (hex); ``previous_size``: the previous checkpoint's ``tree_size`` (0 for the first); ``entries``:
    the leaf entries ``previous_size + 1 .. tree_size``, 32 bytes each, so that a verifier can name the exact sequence
    that changed; ``public_key``: the signer's x-only key (hex); ``signature``: BIP-340 (hex) over
    :func:`checkpoint_digest`."""

    aggregate_type: ClassVar[str] = "log"

    tree_size: int
    previous_size: int
    root: str
    entries: bytes
    public_key: str
    signature: str


class SoulAttested(Event, frozen=True, kw_only=True):
    """SOUL.md as it was at ``occurred_at``: ``soul_sha256`` (:func:`hermes_proto.identity.soul_digest`), ``index``
    (0 for the first), ``previous``: :func:`attestation_id` of the previous attestation (``ZERO`` for the first),
    signed by ``public_key`` over :func:`attestation_digest`."""

    aggregate_type: ClassVar[str] = "identity"

    index: int
    soul_sha256: str
    previous: str
    public_key: str
    signature: str


class IdentityHandedOff(Event, frozen=True, kw_only=True):
    """A successor key takes over from ``previous_public_key``: both sign :func:`handoff_digest`, which binds the
    last checkpoint the previous key signed (``tree_size``, ``root``; 0 and ``ZERO`` before the first), so that
    the previous key alone cannot put the handoff after a history of its own making."""

    aggregate_type: ClassVar[str] = "identity"

    previous_public_key: str
    public_key: str
    tree_size: int
    root: str
    signature_previous: str
    signature_new: str


INTEGRITY_EVENTS: tuple[type[Event], ...] = (CheckpointSigned, SoulAttested, IdentityHandedOff)
CHECKPOINT_SUBJECT = f"hermes.evt.log.{LOG_AGGREGATE}.checkpoint_signed"
ATTESTATION_SUBJECT = "hermes.evt.identity.soul.soul_attested"
HANDOFF_SUBJECT = "hermes.evt.identity.key.identity_handed_off"
IDENTITY_EVENTS_FILTER = "hermes.evt.identity.>"


def checkpoint_digest(tree_size: int, root: str, signed_at_ms: int) -> bytes:
    """tagged_hash("hermes/checkpoint", tree_size u64 || root (32 bytes) || signed_at ms u64)."""
    return tagged_hash("hermes/checkpoint", u64(tree_size) + _key(root) + u64(signed_at_ms))


def attestation_digest(index: int, soul_sha256: str, previous: str, signed_at_ms: int) -> bytes:
    """tagged_hash("hermes/soul", index u64 || soul SHA-256 || previous attestation id || signed_at ms u64)."""
    return tagged_hash("hermes/soul", u64(index) + _key(soul_sha256) + _key(previous) + u64(signed_at_ms))


def attestation_id(attestation: SoulAttested) -> str:
    """The hash the next attestation chains to: SHA-256(attestation digest || signature), hex."""
    digest = attestation_digest(
        attestation.index, attestation.soul_sha256, attestation.previous, millis(attestation.occurred_at)
    )
    return hashlib.sha256(digest + bytes.fromhex(attestation.signature)).hexdigest()


def handoff_digest(previous_public_key: str, public_key: str, signed_at_ms: int, tree_size: int, root: str) -> bytes:
    """tagged_hash("hermes/handoff", previous key || new key || signed_at ms u64 || tree_size u64 || root), the last
    checkpoint before the handoff."""
    return tagged_hash(
        "hermes/handoff",
        _key(previous_public_key) + _key(public_key) + u64(signed_at_ms) + u64(tree_size) + _key(root),
    )


def _key(text: str) -> bytes:
    """32 bytes from 64 hex characters. Raises ValueError for anything else (a crafted event)."""
    raw = bytes.fromhex(text)
    if len(raw) != 32:
        raise ValueError(f"{len(raw)} bytes where 32 are needed")
    return raw


def op_return_payload(checkpoint: CheckpointSigned) -> bytes:
    """80 bytes for a Bitcoin ``OP_RETURN`` output: ``HRM1`` || tree_size u64 || root (32) || signer's x-only key
    (32) || signed_at seconds u32."""
    seconds = millis(checkpoint.occurred_at) // 1000
    payload = (
        OP_RETURN_MAGIC
        + u64(checkpoint.tree_size)
        + bytes.fromhex(checkpoint.root)
        + bytes.fromhex(checkpoint.public_key)
        + struct.pack(">I", seconds & 0xFFFFFFFF)
    )
    assert len(payload) == 80
    return payload


def split_entries(entries: bytes) -> list[bytes]:
    """A checkpoint's ``entries`` as 32-byte leaf entries. Raises ValueError when the length is not a multiple."""
    if len(entries) % 32:
        raise ValueError(f"entries of {len(entries)} bytes are not 32-byte leaves")
    return [entries[i : i + 32] for i in range(0, len(entries), 32)]
