"""``hermes verify`` and ``hermes identity``: the tamper-evident log and the instance identity, checked from the
stored messages themselves (NATS, :mod:`hermes_cli.busadmin`), never from a read model.

``verify`` recomputes every leaf of ``HERMES_EVENTS`` and checks every checkpoint, attestation and handoff
(:mod:`hermes_proto.integrity_verify`); exit 1 naming the first sequence that fails. ``verify --event SEQ`` also
writes the inclusion proof of one event; ``verify --proof FILE --public-key KEY`` checks such a proof offline.
``identity`` shows the key (hex, Taproot address, npub); ``identity verify`` checks the attestation chain and that
SOUL.md is the last attested; ``identity export-attestation`` writes the last checkpoint as an 80-byte
``OP_RETURN`` payload with its signed statement (nothing is broadcast); ``identity rotate`` hands over to a new key.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated, Any

import typer

from hermes_cli.busadmin import NatsOption, with_bus
from hermes_cli.common import EXIT_ERROR, EXIT_USAGE, fail
from hermes_cli.config import hermes_home

HELP = "The instance identity: its key, the SOUL.md attestations, exporting a checkpoint for a Bitcoin OP_RETURN."
ID_KINDS = {"broken_chain", "bad_signature", "wrong_key"}


def _expected_key(option: str | None) -> str | None:
    from hermes_proto.identity import parse_public_key, read_public_key

    if option:
        try:
            return parse_public_key(option)
        except ValueError as exc:
            raise fail(f"bad --public-key: {exc}", code=EXIT_USAGE) from exc
    return read_public_key(hermes_home() / "identity")


async def _scan(js: Any, expected: str | None, keep: set[int]) -> tuple[Any, Any]:
    from hermes_proto import subjects
    from hermes_proto.integrity_verify import LogVerifier
    from hermes_proto.stream_read import read_stream

    verifier = LogVerifier(expected)
    verifier.keep = keep
    _, last = await read_stream(js, subjects.EVENTS_STREAM, lambda m: verifier.add(*_fields(m)))
    return verifier, verifier.finish(last)


def _fields(message: Any) -> tuple[int, str, dict | None, bytes]:
    return message.sequence, message.subject, message.headers, message.data


def _print_report(report: Any) -> None:
    typer.echo(
        f"messages {report.messages} (last sequence {report.last_sequence}); checkpoints {report.checkpoints}, "
        f"signed up to {report.covered}, root {report.last_root}; attestations {report.attestations}"
    )
    for key in report.keys:
        typer.echo(f"key {key}")
    if report.last_sequence > max(report.covered, report.checkpoint_sequence):  # the last checkpoint is no gap
        typer.echo(f"not yet signed: sequences {report.covered + 1}..{report.last_sequence}")


def verify(
    event: Annotated[int | None, typer.Option("--event", min=1, help="Write this sequence's inclusion proof.")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Write the proof here (default: stdout).")] = None,
    public_key: Annotated[
        str | None, typer.Option("--public-key", help="Expected signer (hex or npub; default identity/instance.pub).")
    ] = None,
    proof: Annotated[Path | None, typer.Option("--proof", help="Check this inclusion proof offline.")] = None,
    anchor: Annotated[
        Path | None, typer.Option("--anchor", help="An exported attestation whose checkpoint must be in the log.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    nats_url: NatsOption = None,
) -> None:
    """Recompute the event log's Merkle tree and check every signed checkpoint; exit 1 naming the first bad sequence."""
    expected = _expected_key(public_key)
    if proof is not None:
        from hermes_proto.integrity_verify import check_inclusion_proof

        if expected is None:
            raise fail("--proof needs --public-key (or identity/instance.pub)", code=EXIT_USAGE)
        reason = check_inclusion_proof(json.loads(proof.read_text()), expected)
        if reason:
            raise fail(f"proof rejected: {reason}")
        typer.echo(f"proof ok: the message is in the log signed by {expected}")
        return
    verifier, report = asyncio.run(with_bus(nats_url, lambda nc, js: _scan(js, expected, {event} if event else set())))
    if anchor is not None:
        pinned = json.loads(anchor.read_text())["checkpoint"]
        if not verifier.has_checkpoint(int(pinned["tree_size"]), pinned["root"]):
            report.findings.append(_finding(int(pinned["tree_size"]), "anchor_missing", "the anchored checkpoint"))
    if as_json:
        typer.echo(json.dumps(_report_json(report), indent=2))
    else:
        _print_report(report)
    if event is not None and report.ok:
        try:
            document = verifier.inclusion_proof(event)
        except ValueError as exc:
            raise fail(str(exc)) from exc
        text = json.dumps(document, indent=2)
        if out is not None:
            out.write_text(text + "\n")
            typer.echo(f"inclusion proof of sequence {event} written to {out}")
        else:
            typer.echo(text)
    if not report.ok:
        first = report.first
        raise fail(f"sequence {first.sequence}: {first.kind}: {first.detail}", code=EXIT_ERROR)
    typer.echo("ok: every stored event matches the signed checkpoints")


def _finding(sequence: int, kind: str, what: str) -> Any:
    from hermes_proto.integrity_verify import Finding

    return Finding(sequence, kind, f"{what} (tree size {sequence}) is not in this log: it was truncated or replaced")


def _report_json(report: Any) -> dict:
    return {
        "ok": report.ok,
        "messages": report.messages,
        "last_sequence": report.last_sequence,
        "checkpoints": report.checkpoints,
        "covered": report.covered,
        "root": report.last_root,
        "attestations": report.attestations,
        "soul_sha256": report.soul_sha256,
        "keys": report.keys,
        "findings": [{"sequence": f.sequence, "kind": f.kind, "detail": f.detail} for f in report.findings],
    }


def identity(ctx: typer.Context, nats_url: NatsOption = None) -> None:
    """Show the instance's public key, its Bitcoin (Taproot) address and Nostr npub, and the log's last checkpoint."""
    if ctx.invoked_subcommand is not None:
        return
    from hermes_proto import subjects
    from hermes_proto.identity_queries import IdentityQuery, IdentityReply
    from hermes_proto.rpc import BusUnavailable, Refused, ask

    async def query(nc: Any, js: Any) -> IdentityReply:
        return await ask(nc, "The notary", subjects.QUERY_IDENTITY, IdentityQuery(), IdentityReply, 5.0)

    try:
        reply = asyncio.run(with_bus(nats_url, query))
    except (BusUnavailable, Refused) as exc:
        raise fail(str(exc)) from exc
    typer.echo(f"public key   {reply.public_key}")
    typer.echo(f"npub         {reply.npub}")
    typer.echo(f"address      {reply.address}  (BIP-86 Taproot)")
    typer.echo(f"signing      {'yes' if reply.signing else 'NO: the key file is not the key the log is signed with'}")
    typer.echo(f"log          {reply.tree_size} events read, signed up to {reply.checkpoint_size}")
    typer.echo(f"root         {reply.checkpoint_root or '-'}")
    typer.echo(f"SOUL.md      {reply.attestations} attestations, last {reply.soul_sha256 or '-'}")


def identity_verify(
    public_key: Annotated[str | None, typer.Option("--public-key", help="Expected signer (hex or npub).")] = None,
    nats_url: NatsOption = None,
) -> None:
    """Check the SOUL.md attestation chain back to the first (and the key handoffs) and that SOUL.md is the last attested."""
    from hermes_proto.identity import soul_digest

    expected = _expected_key(public_key)
    _, report = asyncio.run(with_bus(nats_url, lambda nc, js: _scan(js, expected, set())))
    typer.echo(f"attestations {report.attestations}; keys {' -> '.join(report.keys) or '-'}")
    bad = [f for f in report.findings if f.kind in ID_KINDS]
    if bad:
        raise fail(f"sequence {bad[0].sequence}: {bad[0].kind}: {bad[0].detail}")
    soul = hermes_home() / "SOUL.md"
    if soul.exists():
        current = soul_digest(soul.read_text(encoding="utf-8"))
        if current != report.soul_sha256:
            raise fail(f"SOUL.md ({current}) is not the last attested ({report.soul_sha256}); is the notary running?")
        typer.echo(f"SOUL.md {current} is the last attested")
    typer.echo("ok: the attestation chain is unbroken")


def export_attestation(
    out: Annotated[Path | None, typer.Option("--out", help="Write it here (default: stdout).")] = None,
    nats_url: NatsOption = None,
) -> None:
    """Write the last signed checkpoint as an 80-byte OP_RETURN payload and its signed statement (nothing is sent)."""
    import msgspec
    from nats.js.errors import NotFoundError

    from hermes_proto import subjects
    from hermes_proto.identity import npub, taproot_address, verify_signature
    from hermes_proto.integrity import (
        CHECKPOINT_SUBJECT,
        CheckpointSigned,
        checkpoint_digest,
        millis,
        op_return_payload,
    )

    async def last(nc: Any, js: Any) -> tuple[CheckpointSigned, int] | None:
        try:
            raw = await js.get_last_msg(subjects.EVENTS_STREAM, CHECKPOINT_SUBJECT)
        except NotFoundError:
            return None
        return msgspec.json.decode(raw.data, type=CheckpointSigned), raw.seq

    found = asyncio.run(with_bus(nats_url, last))
    if found is None:
        raise fail("no signed checkpoint yet", "The notary signs within HERMES_CHECKPOINT_EVERY_SECONDS of new events.")
    checkpoint, sequence = found
    signed_at = millis(checkpoint.occurred_at)
    expected = _expected_key(None)
    digest = checkpoint_digest(checkpoint.tree_size, checkpoint.root, signed_at)
    if not verify_signature(checkpoint.public_key, digest, checkpoint.signature):
        raise fail(f"the last checkpoint (sequence {sequence}) is not validly signed; run hermes verify")
    if expected is not None and checkpoint.public_key != expected:
        raise fail(f"the last checkpoint is signed by {checkpoint.public_key}, not this instance's {expected}")
    document = {
        "format": "hermes-attestation/1",
        "op_return": op_return_payload(checkpoint).hex(),
        "checkpoint": {
            "sequence": sequence,
            "tree_size": checkpoint.tree_size,
            "root": checkpoint.root,
            "signed_at_ms": signed_at,
            "digest": digest.hex(),
            "signature": checkpoint.signature,
        },
        "public_key": checkpoint.public_key,
        "address": taproot_address(checkpoint.public_key),
        "npub": npub(checkpoint.public_key),
        "statement": f"Hermes {checkpoint.public_key} signed the first {checkpoint.tree_size} events of its log: "
        f"root {checkpoint.root} at {checkpoint.occurred_at.isoformat()}",
    }
    text = json.dumps(document, indent=2)
    if out is None:
        typer.echo(text)
    else:
        out.write_text(text + "\n")
        typer.echo(f"attestation of tree size {checkpoint.tree_size} written to {out}")


def rotate(
    reason: Annotated[str, typer.Option("--reason", help="Why (kept in the notary's log).")] = "",
    nats_url: NatsOption = None,
) -> None:
    """Hand the identity over to a new key: both keys sign the handoff; verify follows it."""
    from hermes_proto import subjects
    from hermes_proto.identity_queries import IdentityReply, RotateIdentity
    from hermes_proto.rpc import BusUnavailable, Refused, ask

    async def call(nc: Any, js: Any) -> IdentityReply:
        return await ask(nc, "The notary", subjects.NOTARY_ROTATE, RotateIdentity(reason=reason), IdentityReply, 10.0)

    try:
        reply = asyncio.run(with_bus(nats_url, call))
    except (BusUnavailable, Refused) as exc:
        raise fail(str(exc)) from exc
    typer.echo(f"handed over to {reply.public_key} ({reply.npub})")


IDENTITY_COMMANDS = (("verify", identity_verify), ("export-attestation", export_attestation), ("rotate", rotate))
