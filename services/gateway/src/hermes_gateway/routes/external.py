"""``POST /api/external/submit``: another application hands Hermes an idea and gets the result POSTed back.

The submission becomes a ``SubmitIdea`` with channel ``external``, its ``callback_url`` and ``source_app``; the
notifier POSTs the outcome to ``callback_url`` once the thread completes or fails (README: "External
producers")."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

import structlog
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import StrictStr

from hermes_proto.outbound import OutboundPolicy, OutboundRefused, Resolver

from hermes_gateway.deps import CommandsDep, SettingsDep
from hermes_gateway.domain import check_callback_url, check_source_app, refused_callback_url
from hermes_gateway.routes.ideas import IdeaFields, publish_idea

router = APIRouter(prefix="/api/external", tags=["external"])

CHANNEL = "external"
RESOLVE_TIMEOUT_S = 5.0
"""How long the submission waits for the callback host's addresses (seconds)."""

log = structlog.get_logger("hermes.gateway")


class ExternalSubmitRequest(IdeaFields):
    """:class:`~hermes_gateway.routes.ideas.IdeaFields` plus ``callback_url`` (absolute http/https URL, at most
    2048 characters, no ``user:password@``) and ``source_app`` (the producer's name, 1-64 of
    ``[A-Za-z0-9_.-]``, echoed in the callback)."""

    callback_url: StrictStr
    source_app: StrictStr


@router.post("/submit", status_code=202)
async def submit_external(
    body: ExternalSubmitRequest, request: Request, settings: SettingsDep, commands: CommandsDep
) -> JSONResponse:
    """Publish one ``SubmitIdea`` (channel ``external``) for a new thread id.

    202 ``{"thread_id", "status_url", "events_url", "command_id"}``. Errors (nothing published):
    400 ``invalid_callback_url`` (also when its host is, or resolves to, an address that is not public and not in
    ``HERMES_OUTBOUND_ALLOW``; ``details.reason`` says which kind), 400 ``invalid_source_app``, 400
    ``empty_idea`` / ``invisible_idea``, 413 ``idea_too_long``, 400 ``invalid_json``, 422 ``validation_failed``, 429
    ``queue_full`` (with ``Retry-After``), 503 ``queue_unknown`` (with ``Retry-After``) / ``bus_unavailable``. While
    auth is on the thread belongs to the token's user."""
    callback_url = check_callback_url(body.callback_url)
    source_app = check_source_app(body.source_app)
    await check_callback_address(callback_url, settings.outbound_policy())
    return await publish_idea(
        request, settings, commands, body, channel=CHANNEL, callback_url=callback_url, source_app=source_app
    )


async def check_callback_address(url: str, policy: OutboundPolicy, resolver: Resolver | None = None) -> None:
    """Raises ``Rejected(invalid_callback_url)`` when ``url``'s host is an address (any spelling, no DNS) or a
    name resolving to any address that ``policy`` refuses. A name that does not resolve (or not within
    :data:`RESOLVE_TIMEOUT_S`) passes: DNS may be down just now, and the notifier checks again when it delivers."""
    try:
        async with asyncio.timeout(RESOLVE_TIMEOUT_S):
            await policy.check_url(url, resolver)
    except OutboundRefused as refused:
        raise refused_callback_url(refused) from None
    except OSError as exc:  # TimeoutError included
        log.info("callback_host_unresolved", host=urlsplit(url).hostname, error=str(exc) or type(exc).__name__)
