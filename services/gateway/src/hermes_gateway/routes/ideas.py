"""``POST /api/submit``: a new idea becomes a ``SubmitIdea`` command and a thread id to watch."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, StrictBool, StrictInt, StrictStr

from hermes_proto.commands import SubmitIdea
from hermes_proto.ids import new_id, utcnow

from hermes_gateway.adapters import CommandPublisher
from hermes_gateway.admission import admitted
from hermes_gateway.auth import owner_id
from hermes_gateway.config import GatewaySettings
from hermes_gateway.deps import CommandsDep, SettingsDep
from hermes_gateway.domain import clean_idea
from hermes_gateway.envelope import success

router = APIRouter(prefix="/api", tags=["ideas"])


class RoutingFields(BaseModel):
    """What every submission (idea or workflow) carries for routing: ``project``: the budget scope (1-64
    letters, digits, '-' or '_'); ``private``: every model call stays on local backends; ``priority``: 1
    (lowest) to 10, dispatched first when backends are busy."""

    project: StrictStr = Field(default="default", pattern=r"^[A-Za-z0-9_-]{1,64}$")
    private: StrictBool = False
    priority: StrictInt = Field(default=5, ge=1, le=10)


class ChannelFields(BaseModel):
    """Who submits: ``channel`` (web, cli, api...) and ``user_id`` (while auth is on, always the token's user:
    this field is then ignored)."""

    channel: str = Field(default="api", pattern=r"^[a-z][a-z0-9_]{0,31}$")
    user_id: str = Field(default="local", min_length=1, max_length=128)


class IdeaFields(RoutingFields):
    """:class:`RoutingFields` plus ``idea``: free text (limit ``HERMES_MAX_INPUT_LENGTH`` characters) and
    ``max_questions``: 0-10 clarifying questions at most (None: the orchestrator's default)."""

    idea: StrictStr
    max_questions: StrictInt | None = Field(default=None, ge=0, le=10)


class SubmitRequest(IdeaFields, ChannelFields):
    """:class:`IdeaFields` plus :class:`ChannelFields`."""


def thread_links(thread_id: str) -> dict[str, str]:
    """Where to watch a thread: ``status_url`` (JSON) and ``events_url`` (SSE), relative to the gateway."""
    return {
        "thread_id": thread_id,
        "status_url": f"/api/threads/{thread_id}/status",
        "events_url": f"/api/threads/{thread_id}/events",
    }


@router.post("/submit", status_code=202)
async def submit_idea(
    body: SubmitRequest, request: Request, settings: SettingsDep, commands: CommandsDep
) -> JSONResponse:
    """Publish one ``SubmitIdea`` (command id new, correlation id = the request id) for a new thread id.

    202 ``{"thread_id", "status_url", "events_url", "command_id"}``. Errors: 400 ``empty_idea`` / ``invisible_idea``,
    413 ``idea_too_long``, 400 ``invalid_json``, 422 ``validation_failed``, 429 ``queue_full`` (with
    ``Retry-After``), 503 ``queue_unknown`` (with ``Retry-After``) / ``bus_unavailable``; nothing is published on
    any of them."""
    return await publish_idea(request, settings, commands, body, channel=body.channel, user_id=body.user_id)


async def publish_idea(
    request: Request, settings: GatewaySettings, commands: CommandPublisher, body: IdeaFields, **fields: str | None
) -> JSONResponse:
    """Check ``body.idea`` (``Rejected`` ``empty_idea`` / ``idea_too_long``), publish one ``SubmitIdea`` for a
    new thread id with ``body``'s fields plus ``fields`` (e.g. ``channel``, ``callback_url``) and answer 202
    ``{"thread_id", "status_url", "events_url", "command_id"}``. Shared by every submit route. While auth is on
    the thread belongs to the request's principal, whatever ``fields`` says."""
    idea = clean_idea(body.idea, settings.hermes_max_input_length)
    thread_id = new_id()
    fields = {**fields, "user_id": owner_id(request, fields.get("user_id") or "local")}
    command = SubmitIdea(
        command_id=new_id(),
        issued_at=utcnow(),
        correlation_id=request.state.request_id,
        thread_id=thread_id,
        idea=idea,
        max_questions=body.max_questions,
        project=body.project,
        private=body.private,
        priority=body.priority,
        **fields,
    )
    async with admitted(request) as hold:
        request.state.thread_id = thread_id
        request.app.state.bus.events.expect(thread_id)  # its live view from the start needs no read of the log
        hold.bind(await commands.send(command))
    return success(request, {**thread_links(thread_id), "command_id": command.command_id}, status_code=202)
