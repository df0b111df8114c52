"""``POST /api/workflows``: several model calls as one thread, each step starting when the steps it depends on
completed (a DAG), with their results as context."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, StrictInt, StrictStr

from hermes_proto.commands import SubmitWorkflow
from hermes_proto.events import WorkflowError, WorkflowStep, step_order
from hermes_proto.ids import new_id, utcnow
from hermes_proto.text import normalize_text

from hermes_gateway.admission import admitted
from hermes_gateway.auth import owner_id
from hermes_gateway.deps import CommandsDep, SettingsDep
from hermes_gateway.domain import clean_idea
from hermes_gateway.envelope import ApiError, success
from hermes_gateway.routes.ideas import ChannelFields, RoutingFields, thread_links

router = APIRouter(prefix="/api", tags=["workflows"])


class StepIn(BaseModel):
    """One step: ``step_id`` (1-64 letters, digits, '-' or '_'), ``prompt``, ``depends_on`` (step ids),
    optional ``priority`` 1-10, ``max_retries`` 0-20, ``timeout_s`` (seconds) and ``max_tokens``."""

    step_id: StrictStr = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    prompt: StrictStr
    depends_on: list[StrictStr] = []
    priority: StrictInt | None = Field(default=None, ge=1, le=10)
    max_retries: StrictInt | None = Field(default=None, ge=0, le=20)
    timeout_s: float | None = Field(default=None, gt=0, le=86_400)
    max_tokens: StrictInt | None = Field(default=None, ge=1, le=32_768)


class WorkflowRequest(RoutingFields, ChannelFields):
    """``steps`` (at least one, at most ``HERMES_WORKFLOW_MAX_STEPS``), ``title``; ``max_retries`` for every
    step without its own; ``timeout_s`` for the whole workflow (seconds; None:
    ``HERMES_WORKFLOW_TIMEOUT_MINUTES``); the routing and channel fields as for ideas."""

    steps: list[StepIn] = Field(min_length=1)
    title: StrictStr = Field(default="", max_length=200)
    max_retries: StrictInt | None = Field(default=None, ge=0, le=20)
    timeout_s: float | None = Field(default=None, gt=0, le=7 * 86_400)


@router.post("/workflows", status_code=202)
async def submit_workflow(
    body: WorkflowRequest, request: Request, settings: SettingsDep, commands: CommandsDep
) -> JSONResponse:
    """Publish one ``SubmitWorkflow`` for a new thread id; the thread's ``steps`` show each step's status.

    202 ``{"thread_id", "status_url", "events_url", "command_id", "steps": [step ids in a dependency order]}``.
    Errors: 400 ``too_many_steps``, ``duplicate_step``, ``unknown_dependency``, ``dependency_cycle`` (the
    detail names the steps on or behind the cycle), 400 ``empty_idea`` / ``invisible_idea`` / 413 ``idea_too_long``
    for a step's prompt, 422 ``validation_failed``, 429 ``queue_full``, 503 ``queue_unknown`` / ``bus_unavailable``;
    nothing is published on any of them."""
    if len(body.steps) > settings.hermes_workflow_max_steps:
        raise ApiError(
            400,
            "too_many_steps",
            f"{len(body.steps)} steps; at most {settings.hermes_workflow_max_steps} (HERMES_WORKFLOW_MAX_STEPS).",
            details={"steps": len(body.steps), "limit": settings.hermes_workflow_max_steps},
        )
    steps = [
        WorkflowStep(
            step_id=s.step_id,
            prompt=clean_idea(s.prompt, settings.hermes_max_input_length),
            depends_on=s.depends_on,
            priority=s.priority,
            max_retries=s.max_retries,
            timeout_s=s.timeout_s,
            max_tokens=s.max_tokens,
        )
        for s in body.steps
    ]
    try:
        order = step_order(steps)
    except WorkflowError as exc:
        raise ApiError(400, exc.code, exc.detail, user_action="Fix the steps' depends_on lists.") from None
    thread_id = new_id()
    command = SubmitWorkflow(
        command_id=new_id(),
        issued_at=utcnow(),
        correlation_id=request.state.request_id,
        thread_id=thread_id,
        title=normalize_text(body.title),  # shown as the thread's idea: no reordering controls
        steps=steps,
        channel=body.channel,
        user_id=owner_id(request, body.user_id),
        project=body.project,
        private=body.private,
        priority=body.priority,
        max_retries=body.max_retries,
        timeout_s=body.timeout_s,
    )
    async with admitted(request, new_jobs=len(steps)) as hold:
        request.state.thread_id = thread_id
        request.app.state.bus.events.expect(thread_id)  # its live view from the start needs no read of the log
        hold.bind(await commands.send(command))
    return success(
        request, {**thread_links(thread_id), "command_id": command.command_id, "steps": order}, status_code=202
    )
