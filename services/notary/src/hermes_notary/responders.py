"""What the notary answers on core NATS: ``hermes.query.identity`` (anyone allowed to query) and
``hermes.notary.rotate`` (admin only)."""

from __future__ import annotations

import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from hermes_proto import subjects
from hermes_proto.identity import npub, taproot_address
from hermes_proto.identity_queries import IdentityQuery, IdentityReply, RotateIdentity
from hermes_proto.queries import ErrorReply
from hermes_proto.rpc import answering

from hermes_notary.service import Notary


def identity_reply(notary: Notary) -> IdentityReply | ErrorReply:
    """The notary's key in its three forms and the log's state; ``no_identity`` when it has no key."""
    if notary.identity is None:
        return ErrorReply(code="no_identity", message="the notary has no readable key (see its log)")
    key = notary.identity.public_key
    last = notary.last_attestation
    return IdentityReply(
        public_key=key,
        address=taproot_address(key),
        npub=npub(key),
        signing=notary.signing,
        tree_size=notary.tree.size,
        checkpoint_size=notary.signed_size,
        checkpoint_root=notary.root,
        attestations=last.index + 1 if last else 0,
        soul_sha256=last.soul_sha256 if last else "",
    )


class Responders:
    def __init__(self, nc: NATS, notary: Notary) -> None:
        self.nc, self.notary = nc, notary

    async def subscribe(self) -> None:
        await self.nc.subscribe(subjects.QUERY_IDENTITY, queue="notary", cb=answering("notary", self._identity))
        await self.nc.subscribe(subjects.NOTARY_ROTATE, queue="notary", cb=answering("notary", self._rotate))

    async def _respond(self, msg: Msg, reply: object) -> None:
        if msg.reply:
            await msg.respond(msgspec.json.encode(reply))

    async def _identity(self, msg: Msg) -> None:
        msgspec.json.decode(msg.data or b"{}", type=IdentityQuery)
        await self._respond(msg, identity_reply(self.notary))

    async def _rotate(self, msg: Msg) -> None:
        request = msgspec.json.decode(msg.data or b"{}", type=RotateIdentity)
        try:
            await self.notary.rotate(request.reason)
        except RuntimeError as exc:
            await self._respond(msg, ErrorReply(code="not_signing", message=str(exc)))
            return
        await self.notary.checkpoint()  # the successor signs at once: its first checkpoint covers the handoff
        await self._respond(msg, identity_reply(self.notary))
