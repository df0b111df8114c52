"""NATS request/reply between services: one typed question, one typed answer (msgspec JSON).

Failures surface as :class:`BusUnavailable` (nobody answered in time), :class:`Refused` (the answering service
sent the contract's :class:`~hermes_proto.queries.ErrorReply`) or :class:`BadReply` (anything else).

The answering side wraps each responder in :func:`answering`, so a request the handler fails on still gets an
``ErrorReply`` (``bad_request`` when its arguments caused it) instead of leaving the asker to its timeout.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import msgspec
import nats
import structlog
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from prometheus_client import Counter

from hermes_proto.codec import UNDECODABLE, encode
from hermes_proto.queries import ErrorReply

R = TypeVar("R")
log = structlog.get_logger("hermes.rpc")

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


Responder = Callable[[Msg], Awaitable[None]]
"""A core NATS subscription callback that answers requests itself (``msg.respond``)."""

QUERY_FAILURES = Counter(
    "hermes_query_failures_total",
    "Requests whose responder raised, answered with an ErrorReply instead; code: bad_request (the request's "
    "arguments, e.g. a date out of range), internal (anything else)",
    ["service", "subject", "code"],
)
BAD_ARGUMENTS = (ValueError, ArithmeticError, UnicodeError, RecursionError)
"""What a handler raises when the request's own arguments are at fault: msgspec's decode and validation errors
(ValueErrors), a value out of range (``ValueError``, ``OverflowError``), invalid UTF-8, nesting too deep."""


def error_reply(exc: BaseException) -> ErrorReply:
    """The ``ErrorReply`` for a request a handler raised ``exc`` on: ``bad_request`` with its message for
    :data:`BAD_ARGUMENTS`, else ``internal`` naming only the exception's type (no internals leak)."""
    if isinstance(exc, BAD_ARGUMENTS):
        return ErrorReply(code="bad_request", message=str(exc)[:500] or type(exc).__name__)
    return ErrorReply(code="internal", message=f"The request failed ({type(exc).__name__}).")


def answering(service: str, handler: Responder) -> Responder:
    """``handler`` as a subscription callback that never leaves an asker waiting for its timeout: when it raises,
    the exception is logged (``query_failed``), counted in ``hermes_query_failures_total`` and answered with
    :func:`error_reply` (if the message has a reply subject). ``service`` labels the metric. Raises nothing."""

    async def respond(msg: Msg) -> None:
        try:
            await handler(msg)
        except Exception as exc:
            reply = error_reply(exc)
            QUERY_FAILURES.labels(service, msg.subject, reply.code).inc()
            failed = log.exception if reply.code == "internal" else log.warning
            failed("query_failed", subject=msg.subject, code=reply.code, error=repr(exc)[:500])
            if msg.reply:
                try:
                    await msg.respond(encode(reply))
                except BUS_ERRORS as lost:
                    log.warning("query_error_not_sent", subject=msg.subject, error=repr(lost))

    return respond
