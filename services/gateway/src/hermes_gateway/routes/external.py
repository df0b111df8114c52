"""``POST /api/external/submit``: another application hands Hermes an idea and gets the result POSTed back.

The submission becomes a ``SubmitIdea`` with channel ``external``, its ``callback_url`` and ``source_app``; the
notifier POSTs the outcome to ``callback_url`` once the thread completes or fails (README: "External
producers")."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import StrictStr

from hermes_gateway.deps import CommandsDep, SettingsDep
from hermes_gateway.domain import check_callback_url, check_source_app
from hermes_gateway.routes.ideas import IdeaFields, publish_idea

router = APIRouter(prefix="/api/external", tags=["external"])

CHANNEL = "external"


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
    400 ``invalid_callback_url``, 400 ``invalid_source_app``, 400 ``empty_idea``, 413 ``idea_too_long``,
    400 ``invalid_json``, 422 ``validation_failed``, 429 ``queue_full`` (with ``Retry-After``), 503
    ``queue_unknown`` (with ``Retry-After``) / ``bus_unavailable``. While auth is on the thread belongs to the
    token's user."""
    callback_url = check_callback_url(body.callback_url)
    source_app = check_source_app(body.source_app)
    return await publish_idea(
        request, settings, commands, body, channel=CHANNEL, callback_url=callback_url, source_app=source_app
    )
