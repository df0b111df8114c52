"""Question templates and their measured effectiveness: list, add, edit, deactivate. Every route asks the
learner over NATS request/reply (``hermes.query.templates``, ``hermes.control.template``); the learner
validates definitions, appends ``TemplateAdded``/``TemplateEdited``/``TemplateDeactivated`` and answers once
its read model holds the change."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictStr, StringConstraints, model_validator

from hermes_gateway.deps import LearnerDep, TemplateId
from hermes_gateway.envelope import ApiError, success, success_schema
from hermes_proto.queries import TEMPLATE_ID_PATTERN, DeactivateTemplate, SaveTemplate, TemplatesReply, TemplateView

router = APIRouter(prefix="/api/learn", tags=["learn"])

# The limits of hermes_proto.queries.SaveTemplate, so a body the gateway accepts is one the contract accepts;
# what only the learner knows (categories, statuses, whether a trigger compiles) it answers as bad_request.
Category = StrictStr
Text = Annotated[StrictStr, StringConstraints(min_length=5, max_length=500)]
Suggestions = Annotated[list[Annotated[StrictStr, StringConstraints(min_length=1, max_length=60)]],
                        Field(max_length=8)]
IdeaTypes = list[StrictStr]
Triggers = Annotated[list[Annotated[StrictStr, StringConstraints(min_length=1, max_length=200)]],
                     Field(max_length=10)]
PriorImprovement = Annotated[float, Field(ge=0.0, le=1.0)]
TimeCost = Annotated[float, Field(gt=0.0, le=3600.0)]
Status = StrictStr

NOT_ANSWERING: dict[int | str, dict[str, Any]] = {
    503: {"description": "``bus_unavailable``: the learner (or NATS) is not answering."},
    502: {"description": "``bad_reply``: the learner answered outside the contract."},
}
REFUSED_DEFINITION: dict[int | str, dict[str, Any]] = {
    400: {"description": "``bad_request``: the learner refused the definition (a category outside intent, "
                         "constraint, success, context, scope; an unknown status or idea type; a trigger that is "
                         "not a valid regular expression; a slot other than ``{topic}`` in the text); "
                         "``invalid_json``: the body is not JSON."},
    422: {"description": "``validation_failed``: the body breaks a limit."},
}
UNKNOWN_TEMPLATE: dict[int | str, dict[str, Any]] = {
    404: {"description": "``unknown_template``: the learner has no template of that id."},
    400: {"description": "``invalid_id``: the id does not match ``TEMPLATE_ID_PATTERN``; ``bad_request``: the "
                         "learner refused the definition."},
}
ONE = success_schema(TemplateView, "The template as the learner now has it.")


class TemplateDefinition(BaseModel):
    """A template's definition (limits as ``SaveTemplate``): ``category`` one of intent, constraint, success,
    context, scope; ``text`` 5-500 characters, its only slot ``{topic}``; ``suggestions`` at most 8 short
    answers (1-60 characters) offered as buttons; ``idea_types`` the idea types it applies to (planning, coding,
    creative, writing, learning, research, decision, general; empty: all);
    ``triggers`` at most 10 case-insensitive regular expressions (1-200 characters) that make it more relevant
    when they match the idea; ``prior_improvement`` in [0, 1] the expected improvement of the next draft when it
    is answered, before any measurement; ``time_cost_s`` seconds a user needs to answer it, in (0, 3600];
    ``status`` ``active`` or ``draft`` (waiting for validation, never asked)."""

    model_config = ConfigDict(extra="forbid")

    category: Category
    text: Text
    suggestions: Suggestions = []
    idea_types: IdeaTypes = []
    triggers: Triggers = []
    prior_improvement: PriorImprovement = 0.5
    time_cost_s: TimeCost = 20.0
    status: Status = "active"


class NewTemplate(TemplateDefinition):
    """A new template: ``template_id`` (1-64 of lowercase letters, digits, '_', '-', starting with a letter
    or digit; stable forever) and its :class:`TemplateDefinition`."""

    template_id: Annotated[StrictStr, StringConstraints(pattern=TEMPLATE_ID_PATTERN)]


class TemplatePatch(BaseModel):
    """The fields of :class:`TemplateDefinition` to change (same limits); a field left out keeps its value,
    ``null`` is not a value."""

    model_config = ConfigDict(extra="forbid")

    category: Category | None = None
    text: Text | None = None
    suggestions: Suggestions | None = None
    idea_types: IdeaTypes | None = None
    triggers: Triggers | None = None
    prior_improvement: PriorImprovement | None = None
    time_cost_s: TimeCost | None = None
    status: Status | None = None

    @model_validator(mode="after")
    def _no_nulls(self) -> TemplatePatch:
        nulls = sorted(name for name in self.model_fields_set if getattr(self, name) is None)
        if nulls:
            raise ValueError(f"null given for {', '.join(nulls)}: leave a field out to keep its value")
        return self


class DeactivateBody(BaseModel):
    """``reason``: why (free text, at most 500 characters; recorded on ``TemplateDeactivated``)."""

    model_config = ConfigDict(extra="forbid")

    reason: StrictStr = Field(default="", max_length=500)


def _unknown(template_id: str) -> ApiError:
    return ApiError(404, "unknown_template", f"The learner has no template {template_id!r}.",
                    details={"template_id": template_id},
                    user_action="GET /api/learn/templates?include_inactive=true lists every template.")


@router.get("/templates", responses={200: success_schema(TemplatesReply, "The templates."), **NOT_ANSWERING})
async def list_templates(request: Request, learner: LearnerDep, include_inactive: bool = False) -> JSONResponse:
    """Every question template with its measured effectiveness (the learner's ``TemplatesReply``):
    ``{"templates": [{"template_id", "category", "text", "suggestions", "idea_types", "triggers",
    "prior_improvement" (0-1), "time_cost_s", "status" (active, draft), "active", "source" (``seed``; ``user``
    when added through the API), "times_asked", "times_answered", "answer_rate" (0-1, null before any
    asking), "rated_threads", "mean_rating" (1-5), "mean_answer_time_s", "mean_clarity_gain" (clarity 0-1
    scale), "trend" (improving, stable, declining, new), "expected_improvement" (0-1, what the ranking uses
    now)}]}``. Deactivated templates only with ``include_inactive=true``. Errors: 422 ``validation_failed``,
    503 ``bus_unavailable``."""
    return success(request, await learner.templates(include_inactive))


@router.post("/templates", status_code=201, responses={201: ONE, **NOT_ANSWERING, **REFUSED_DEFINITION,
                                                        409: {"description": "``template_exists``: the id is "
                                                                             "taken (deactivated ones too)."}})
async def add_template(body: NewTemplate, request: Request, learner: LearnerDep) -> JSONResponse:
    """Add a template (the learner appends ``TemplateAdded`` with ``source`` ``user``). 201: the template, as
    one item of ``GET /api/learn/templates``. Errors: 409 ``template_exists``, 400 ``bad_request``, 422
    ``validation_failed``, 503 ``bus_unavailable``."""
    view = await learner.save(SaveTemplate(create=True, **body.model_dump()))
    return success(request, view, status_code=201)


@router.patch("/templates/{template_id}", responses={200: ONE, **NOT_ANSWERING, **UNKNOWN_TEMPLATE,
                                                      422: REFUSED_DEFINITION[422]})
async def edit_template(template_id: TemplateId, body: TemplatePatch, request: Request,
                        learner: LearnerDep) -> JSONResponse:
    """Change some fields of a template's definition: the given fields are merged onto the learner's current
    definition, which is then replaced as a whole (``TemplateEdited``; the measured statistics stay, and an
    edited seed template is no longer overwritten by the seeds at start-up). An edit of a deactivated template
    makes it active again (the learner applies every ``TemplateEdited`` so); an empty body changes nothing.
    Two concurrent edits of one template: the last one wins, over the other's fields too. 200: the template.
    Errors: 404 ``unknown_template``, 400 ``invalid_id`` / ``bad_request``, 422 ``validation_failed``,
    503 ``bus_unavailable``."""
    current = await learner.template(template_id)
    if current is None:
        raise _unknown(template_id)
    changes = body.model_dump(exclude_unset=True)
    if not changes:
        return success(request, current)
    definition = {name: getattr(current, name) for name in TemplateDefinition.model_fields} | changes
    return success(request, await learner.save(SaveTemplate(template_id=template_id, create=False, **definition)))


@router.delete("/templates/{template_id}", responses={200: ONE, **NOT_ANSWERING, **UNKNOWN_TEMPLATE})
async def deactivate_template(template_id: TemplateId, request: Request, learner: LearnerDep,
                              body: DeactivateBody | None = None,
                              reason: Annotated[str | None, Query(max_length=500)] = None) -> JSONResponse:
    """Stop asking a template (``TemplateDeactivated``; its statistics stay, and any ``PATCH``, e.g.
    ``{"status": "active"}``, brings it back). The reason comes from the optional body ``{"reason"}`` or the
    query ``reason`` (the body wins). 200: the template, now ``"active": false``. Errors: 404
    ``unknown_template``, 400 ``invalid_id``, 422 ``validation_failed``, 503 ``bus_unavailable``."""
    why = body.reason if body is not None else (reason or "")
    return success(request, await learner.deactivate(DeactivateTemplate(template_id=template_id, reason=why)))
