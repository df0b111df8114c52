"""Request/reply contract of the notary (core NATS, msgspec JSON).

``hermes.query.identity`` with :class:`IdentityQuery` → :class:`IdentityReply`; ``hermes.notary.rotate`` (admin
only) with :class:`RotateIdentity` → :class:`IdentityReply` of the successor key, after the notary appended the
:class:`~hermes_proto.integrity.IdentityHandedOff` both keys signed.
"""

from __future__ import annotations

import msgspec


class IdentityQuery(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """No arguments."""


class RotateIdentity(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``reason``: why (kept in the notary's log, not in the event)."""

    reason: str = msgspec.field(default="", name="reason")


class IdentityReply(msgspec.Struct, kw_only=True):
    """``public_key``: x-only secp256k1 key (hex); ``address``: its BIP-86 Taproot address; ``npub``: NIP-19;
    ``signing``: False when the key file does not match the key the log is signed with (the notary then signs
    nothing); ``tree_size``: leaves the notary has read; ``checkpoint_size`` / ``checkpoint_root``: the last signed
    checkpoint (0 / "" before the first); ``attestations``: SOUL.md attestations so far; ``soul_sha256``: the last
    attested SOUL.md hash."""

    public_key: str
    address: str
    npub: str
    signing: bool
    tree_size: int
    checkpoint_size: int
    checkpoint_root: str
    attestations: int
    soul_sha256: str
