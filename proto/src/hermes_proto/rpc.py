"""NATS request/reply between services: one typed question, one typed answer (msgspec JSON).

Failures surface as :class:`BusUnavailable` (nobody answered in time), :class:`Refused` (the answering service
sent the contract's :class:`~hermes_proto.queries.ErrorReply`) or :class:`BadReply` (anything else).
"""

from __future__ import annotations

import asyncio
from typing import TypeVar

import msgspec
import nats
from nats.aio.client import Client as NATS

from hermes_proto.codec import UNDECODABLE, encode
from hermes_proto.queries import ErrorReply

R = TypeVar("R")

BUS_ERRORS = (nats.errors.Error, asyncio.TimeoutError, OSError)
"""What a NATS or JetStream call raises when the server or the answering service is unreachable."""


class BusUnavailable(Exception):
    """NATS, JetStream or the orchestrator did not answer (in time). ``what`` names the missing party."""

    def __init__(self, what: str, error: BaseException) -> None:
        super().__init__(f"{what}: {error!r}")
        self.what = what
        self.error = error


class BadReply(Exception):
    """A service answered a query with something that is not the contract's reply type. ``what`` names it."""

    def __init__(self, message: str, what: str = "The orchestrator") -> None:
        super().__init__(message)
        self.what = what


class Refused(Exception):
    """A service answered with the contract's :class:`hermes_proto.queries.ErrorReply`: ``code`` is its
    machine-readable reason (unknown_backend, bad_request, over_budget, internal), ``what`` names the service."""

    def __init__(self, what: str, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.what = what
        self.code = code
        self.message = message


class _ErrorFlag(msgspec.Struct):
    """Just the ``error`` field of any reply: ``true`` only on an :class:`ErrorReply`."""

    error: bool = False


async def ask(nc: NATS, what: str, subject: str, query: msgspec.Struct, reply_type: type[R], timeout_s: float) -> R:
    """Request ``subject`` with ``query`` (msgspec JSON) and decode the answer as ``reply_type``, waiting at
    most ``timeout_s`` seconds. ``what`` names the answering service in errors. Raises :class:`BusUnavailable`
    (no responder, timeout, connection lost), :class:`Refused` (an ``ErrorReply``) or :class:`BadReply`
    (anything else outside the contract)."""
    try:
        msg = await nc.request(subject, encode(query), timeout=timeout_s)
    except BUS_ERRORS as exc:
        raise BusUnavailable(what, exc) from exc
    try:
        if msgspec.json.decode(msg.data, type=_ErrorFlag).error:
            refusal = msgspec.json.decode(msg.data, type=ErrorReply)
            raise Refused(what, refusal.code, refusal.message)
        return msgspec.json.decode(msg.data, type=reply_type)
    except UNDECODABLE as exc:
        raise BadReply(f"{subject}: {exc}", what) from exc


class Empty(msgspec.Struct):
    """An empty query body."""
