"""Verifying the log: recompute every leaf from the stored messages and check every checkpoint, attestation and
handoff found among them (pure: fed message by message in stream order, no I/O).

Checks, each naming the first stream sequence that fails: a missing sequence (``missing``); a checkpoint whose
entries do not make its root, whose ``previous_size`` is not the previous checkpoint's, or whose tree does not extend
the previous one by a consistency proof (``bad_checkpoint``); a signature that is not the current key's
(``bad_signature``); a stored message whose recomputed entry differs from the signed one (``altered``); an
attestation that does not chain to the previous one (``broken_chain``); the last signer not being the expected key
(``wrong_key``). Inclusion proofs (:func:`inclusion_proof`) can be checked with the public key alone
(:func:`check_inclusion_proof`).
"""

from __future__ import annotations

import base64
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field

import msgspec
from pymerkle import InmemoryTree, InvalidProof, verify_consistency, verify_inclusion
from pymerkle.proof import InclusionProof

from hermes_proto.identity import verify_signature
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
    gap_entry,
    handoff_digest,
    leaf_entry,
    millis,
    split_entries,
)


@dataclass(frozen=True)
class Finding:
    """One failed check: ``sequence`` (the stream sequence it names), ``kind``, ``detail`` (for people)."""

    sequence: int
    kind: str
    detail: str


@dataclass
class Report:
    """What :class:`LogVerifier` found: ``messages`` read, ``last_sequence``, ``checkpoints`` and ``attestations``
    checked, ``covered`` (leaves under the last good checkpoint), ``checkpoint_sequence`` (where that checkpoint is
    stored), ``keys`` (signers in order, handoffs followed),
    ``soul_sha256`` (the last attested), ``findings`` (the first is what failed first)."""

    messages: int = 0
    last_sequence: int = 0
    checkpoints: int = 0
    attestations: int = 0
    covered: int = 0
    checkpoint_sequence: int = 0
    last_root: str = ZERO
    keys: list[str] = field(default_factory=list)
    soul_sha256: str | None = None
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings

    @property
    def first(self) -> Finding | None:
        return min(self.findings, key=lambda f: f.sequence) if self.findings else None


MALFORMED = (msgspec.DecodeError, ValueError, TypeError, OverflowError, struct.error)
"""What a crafted integrity event raises: undecodable, not hex, a wrong length, a naive time, a size out of range."""
_checkpoint = msgspec.json.Decoder(CheckpointSigned)
_attestation = msgspec.json.Decoder(SoulAttested)
_handoff = msgspec.json.Decoder(IdentityHandedOff)


class LogVerifier:
    """Feed :meth:`add` every stored message in stream order, then :meth:`finish`. ``expected_key``: the x-only key
    (hex) that must be the current signer at the end (None: whatever key the log starts with). Memory: 32 bytes per
    message plus pymerkle's in-memory tree of the signed entries."""

    def __init__(self, expected_key: str | None = None) -> None:
        self.expected_key = expected_key
        self.report = Report()
        self._entries = bytearray()  # recomputed entry of sequence i at [32*(i-1), 32*i)
        self._signed = InmemoryTree()
        self._signed_entries = bytearray()  # the entries of the valid checkpoints, to rebuild after a bad one
        self._checkpoints: list[CheckpointSigned] = []
        self._key: str | None = None
        self._last_attestation: SoulAttested | None = None
        self._messages: dict[int, tuple[str, dict[str, str], bytes]] = {}
        self.keep: set[int] = set()

    def add(self, sequence: int, subject: str, headers: Mapping[str, str] | None, data: bytes) -> None:
        """One stored message (its stream sequence, subject, headers, data)."""
        report = self.report
        expected = report.last_sequence + 1
        if sequence < expected:
            return  # a repeat
        for missing in range(expected, sequence):
            self._fail(missing, "missing", f"sequence {missing} is not in the stream")
            self._entries += gap_entry(missing)
        if subject == CHECKPOINT_SUBJECT:
            self._on_checkpoint(sequence, data)
        elif subject == ATTESTATION_SUBJECT:
            self._on_attestation(sequence, data)
        elif subject == HANDOFF_SUBJECT:
            self._on_handoff(sequence, data)
        self._entries += leaf_entry(sequence, subject, headers, data)
        if sequence in self.keep:
            self._messages[sequence] = (subject, dict(headers or {}), data)
        report.messages += 1
        report.last_sequence = sequence

    def finish(self, last_sequence: int | None = None) -> Report:
        """The report. ``last_sequence``: the stream's last sequence (its state), so that messages missing at the
        end are found too. With ``expected_key`` set, a last signer other than it is a ``wrong_key`` finding."""
        report = self.report
        if last_sequence is not None and last_sequence > report.last_sequence:
            self._fail(
                report.last_sequence + 1,
                "missing",
                f"sequences {report.last_sequence + 1}..{last_sequence} are not in the stream",
            )
        if self.expected_key is not None and self._key not in (None, self.expected_key):
            self._fail(report.last_sequence, "wrong_key", f"the log is signed by {self._key}, not {self.expected_key}")
        if self.expected_key is not None and self._key is None and report.messages:
            self._fail(report.last_sequence, "wrong_key", "no checkpoint or attestation is signed in this log")
        return report

    def _fail(self, sequence: int, kind: str, detail: str) -> None:
        self.report.findings.append(Finding(sequence, kind, detail))

    def _signer_ok(self, sequence: int, public_key: str, digest: bytes, signature: str, what: str) -> bool:
        if self._key is None:
            self._key = public_key
            self.report.keys.append(public_key)
        if public_key != self._key:
            self._fail(sequence, "bad_signature", f"{what} is signed by {public_key}, the current key is {self._key}")
            return False
        if not verify_signature(public_key, digest, signature):
            self._fail(sequence, "bad_signature", f"{what}'s signature does not verify")
            return False
        return True

    def _on_checkpoint(self, sequence: int, data: bytes) -> None:
        try:
            checkpoint = _checkpoint.decode(data)
            entries = split_entries(checkpoint.entries)
            digest = checkpoint_digest(checkpoint.tree_size, checkpoint.root, millis(checkpoint.occurred_at))
        except MALFORMED as exc:
            self._fail(sequence, "bad_checkpoint", f"malformed checkpoint: {exc!r}")
            return
        previous = self._checkpoints[-1] if self._checkpoints else None
        size, prior = checkpoint.tree_size, previous.tree_size if previous else 0
        if checkpoint.previous_size != prior or size != prior + len(entries) or size >= sequence or size <= prior:
            self._fail(sequence, "bad_checkpoint", f"covers {checkpoint.previous_size}..{size}, expected {prior}..")
            return
        if not self._signer_ok(sequence, checkpoint.public_key, digest, checkpoint.signature, "checkpoint"):
            return
        for entry in entries:
            self._signed.append_entry(entry)
        failure = self._extends(previous, checkpoint)
        if failure is not None:
            self._fail(sequence, "bad_checkpoint", failure)
            self._signed = InmemoryTree.init_from_entries(split_entries(bytes(self._signed_entries)))
            return
        self._signed_entries += checkpoint.entries
        for index, entry in enumerate(entries, start=prior + 1):
            if self._entries[32 * (index - 1) : 32 * index] != entry:
                self._fail(index, "altered", f"sequence {index} differs from what checkpoint {size} signed")
                break
        self._checkpoints.append(checkpoint)
        self.report.checkpoints += 1
        self.report.covered, self.report.last_root = size, checkpoint.root
        self.report.checkpoint_sequence = sequence

    def _extends(self, previous: CheckpointSigned | None, checkpoint: CheckpointSigned) -> str | None:
        """None when the signed tree (with the checkpoint's entries appended) has the signed root and extends the
        previous checkpoint's tree (a consistency proof); else why not."""
        if self._signed.get_root().hex() != checkpoint.root:
            return f"its entries do not make its signed root (tree size {checkpoint.tree_size})"
        if previous is None:
            return None
        try:
            proof = self._signed.prove_consistency(previous.tree_size, checkpoint.tree_size)
            verify_consistency(bytes.fromhex(previous.root), bytes.fromhex(checkpoint.root), proof)
        except (InvalidProof, ValueError) as exc:
            return f"tree {checkpoint.tree_size} does not extend tree {previous.tree_size}: {exc}"
        return None

    def _on_attestation(self, sequence: int, data: bytes) -> None:
        try:
            attestation = _attestation.decode(data)
            digest = attestation_digest(
                attestation.index, attestation.soul_sha256, attestation.previous, millis(attestation.occurred_at)
            )
        except MALFORMED as exc:
            self._fail(sequence, "broken_chain", f"malformed attestation: {exc!r}")
            return
        last = self._last_attestation
        want_index, want_previous = (last.index + 1, attestation_id(last)) if last else (0, ZERO)
        if attestation.index != want_index or attestation.previous != want_previous:
            self._fail(sequence, "broken_chain", f"attestation {attestation.index} does not follow {want_index - 1}")
            return
        if self._signer_ok(sequence, attestation.public_key, digest, attestation.signature, "attestation"):
            self._last_attestation = attestation
            self.report.attestations += 1
            self.report.soul_sha256 = attestation.soul_sha256

    def _on_handoff(self, sequence: int, data: bytes) -> None:
        try:
            handoff = _handoff.decode(data)
            digest = handoff_digest(
                handoff.previous_public_key,
                handoff.public_key,
                millis(handoff.occurred_at),
                handoff.tree_size,
                handoff.root,
            )
        except MALFORMED as exc:
            self._fail(sequence, "bad_signature", f"malformed handoff: {exc!r}")
            return
        if (handoff.tree_size, handoff.root) != (self.report.covered, self.report.last_root):
            self._fail(
                sequence,
                "bad_signature",
                f"the handoff follows checkpoint {handoff.tree_size}, the last one in this log is {self.report.covered}",
            )
            return
        if not self._signer_ok(sequence, handoff.previous_public_key, digest, handoff.signature_previous, "handoff"):
            return
        if not verify_signature(handoff.public_key, digest, handoff.signature_new):
            self._fail(sequence, "bad_signature", "the successor's signature of the handoff does not verify")
            return
        self._key = handoff.public_key
        self.report.keys.append(handoff.public_key)

    def has_checkpoint(self, tree_size: int, root: str) -> bool:
        """True when a valid checkpoint of this log signed ``root`` for ``tree_size`` (an exported anchor)."""
        return any(c.tree_size == tree_size and c.root == root for c in self._checkpoints)

    def inclusion_proof(self, sequence: int) -> dict:
        """A JSON-ready proof that ``sequence`` (which must be in :attr:`keep` before it was added) is in the tree of
        the first checkpoint covering it: the message, its entry, the checkpoint (size, root, time, key, signature)
        and the audit path. Raises ValueError when no checkpoint covers it or it was not kept."""
        checkpoint = next((c for c in self._checkpoints if c.tree_size >= sequence), None)
        if checkpoint is None or sequence not in self._messages:
            raise ValueError(f"sequence {sequence} is not covered by a checkpoint yet (or not in the stream)")
        subject, headers, data = self._messages[sequence]
        proof = self._signed.prove_inclusion(sequence, checkpoint.tree_size)
        return {
            "format": "hermes-inclusion/1",
            "sequence": sequence,
            "message": {"subject": subject, "headers": headers, "data": base64.b64encode(data).decode()},
            "entry": leaf_entry(sequence, subject, headers, data).hex(),
            "checkpoint": {
                "tree_size": checkpoint.tree_size,
                "root": checkpoint.root,
                "signed_at_ms": millis(checkpoint.occurred_at),
                "public_key": checkpoint.public_key,
                "signature": checkpoint.signature,
            },
            "proof": proof.serialize(),
        }


def check_inclusion_proof(document: dict, public_key: str) -> str | None:
    """None when ``document`` (from :meth:`LogVerifier.inclusion_proof`) holds: the message makes the entry, the
    entry is in the tree of the checkpoint's root by the audit path, and ``public_key`` signed that root; otherwise
    the reason. Needs nothing but the document and the key."""
    try:
        message, checkpoint = document["message"], document["checkpoint"]
        entry = leaf_entry(
            int(document["sequence"]), message["subject"], message["headers"], base64.b64decode(message["data"])
        )
        if entry.hex() != document["entry"]:
            return "the message does not make the entry"
        if checkpoint["public_key"] != public_key:
            return f"the checkpoint is signed by {checkpoint['public_key']}, not {public_key}"
        digest = checkpoint_digest(int(checkpoint["tree_size"]), checkpoint["root"], int(checkpoint["signed_at_ms"]))
        if not verify_signature(public_key, digest, checkpoint["signature"]):
            return "the checkpoint's signature does not verify"
        proof = InclusionProof.deserialize(document["proof"])
        if proof.index != int(document["sequence"]) or proof.size != int(checkpoint["tree_size"]):
            return "the proof is for another leaf or tree"
        verify_inclusion(InmemoryTree().hash_buff(entry), bytes.fromhex(checkpoint["root"]), proof)
    except InvalidProof as exc:
        return f"the audit path does not lead to the root: {exc}"
    except (KeyError, TypeError, ValueError) as exc:
        return f"malformed proof: {exc!r}"
    return None
