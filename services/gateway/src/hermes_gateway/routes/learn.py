"""What the learner learned, under the user's control. Question templates and their measured effectiveness: list
(anyone), add, edit, deactivate (admins only: a template is asked in every user's threads; ``hermes.query.templates``,
``hermes.control.template``; the learner validates definitions, appends ``TemplateAdded``/``TemplateEdited``/
``TemplateDeactivated`` and answers once its read model holds the change). Learned preferences (each user's own):
list, set, edit, delete, and feedback (ratings and corrections) over ``hermes.query.preferences`` /
``hermes.control.preference``. Learned patterns: list (``hermes.query.patterns``)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictStr, StringConstraints, WithJsonSchema, model_validator

from hermes_proto.commands import RateThread
from hermes_proto.ids import new_id, utcnow
from hermes_proto.queries import (
    PREFERENCE_KEY_PATTERN,
    PREFERENCE_SCOPE_PATTERN,
    TEMPLATE_ID_PATTERN,
    USER_ID_PATTERN,
    CorrectPreference,
    DeactivateTemplate,
    ForgetPreference,
    PatternsReply,
    PreferencesReply,
    PreferenceView,
    SaveTemplate,
    SetPreference,
    TemplatesReply,
    TemplateView,
)

from hermes_gateway.auth import Principal, auth_enabled, visible
from hermes_gateway.deps import (
    AdminDep,
    CommandsDep,
    LearnerDep,
    PreferenceId,
    PrincipalDep,
    ReadModelDep,
    TemplateId,
    thread_not_found,
)
from hermes_gateway.domain import check_id, check_ratable
from hermes_gateway.envelope import ApiError, success, success_schema

router = APIRouter(prefix="/api/learn", tags=["learn"])

# The limits of hermes_proto.queries.SaveTemplate, so a body the gateway accepts is one the contract accepts;
# what only the learner knows (categories, statuses) it answers as bad_request, a trigger RE2 refuses invalid_trigger.
Category = StrictStr
Text = Annotated[StrictStr, StringConstraints(min_length=5, max_length=500)]
Suggestions = Annotated[list[Annotated[StrictStr, StringConstraints(min_length=1, max_length=60)]], Field(max_length=8)]
IdeaTypes = list[StrictStr]
Triggers = Annotated[list[Annotated[StrictStr, StringConstraints(min_length=1, max_length=200)]], Field(max_length=10)]
PriorImprovement = Annotated[float, Field(ge=0.0, le=1.0)]
TimeCost = Annotated[float, Field(gt=0.0, le=3600.0)]
Status = StrictStr
_CONTRACT = msgspec.json.schema(SaveTemplate)["$defs"]["SaveTemplate"]["properties"]


def _contract_schema(name: str) -> WithJsonSchema:
    """The contract's JSON Schema of field ``name``: pydantic words a Literal (and Literal dict keys) differently
    from msgspec, and the documented body must be exactly ``SaveTemplate``'s."""
    return WithJsonSchema({k: v for k, v in _CONTRACT[name].items() if k != "default"})


Variations = Annotated[
    dict[
        Literal["formal", "casual", "technical"], Annotated[StrictStr, StringConstraints(min_length=1, max_length=300)]
    ],
    _contract_schema("variations"),
]
Timing = Annotated[Literal["first", "any", "last"], _contract_schema("timing")]

NOT_ANSWERING: dict[int | str, dict[str, Any]] = {
    503: {"description": "``bus_unavailable``: the learner (or NATS) is not answering."},
    502: {"description": "``bad_reply``: the learner answered outside the contract."},
}
REFUSED_DEFINITION: dict[int | str, dict[str, Any]] = {
    400: {
        "description": "``bad_request``: the learner refused the definition (a category outside intent, "
        "constraint, success, context, scope; an unknown status or idea type; a slot other than ``{topic}`` in "
        "the text); ``invalid_trigger``: a trigger RE2 cannot run in linear time (backreferences, lookaround) or "
        "that is no regular expression at all; ``invalid_json``: the body is not JSON."
    },
    422: {"description": "``validation_failed``: the body breaks a limit."},
}
UNKNOWN_TEMPLATE: dict[int | str, dict[str, Any]] = {
    404: {"description": "``unknown_template``: the learner has no template of that id."},
    400: {
        "description": "``invalid_id``: the id does not match ``TEMPLATE_ID_PATTERN``; ``bad_request`` / "
        "``invalid_trigger``: the learner refused the definition."
    },
}
ONE = success_schema(TemplateView, "The template as the learner now has it.")


class TemplateDefinition(BaseModel):
    """A template's definition (limits as ``SaveTemplate``): ``category`` one of intent, constraint, success,
    context, scope; ``text`` 5-500 characters, its only slot ``{topic}``; ``suggestions`` at most 8 short
    answers (1-60 characters) offered as buttons; ``idea_types`` the idea types it applies to (planning, coding,
    creative, writing, learning, research, decision, general; empty: all);
    ``triggers`` at most 10 case-insensitive regular expressions (1-200 characters, RE2 syntax: no backreferences or
    lookaround) that make it more relevant when they match the idea; ``prior_improvement`` in [0, 1] the expected improvement of the next draft when it
    is answered, before any measurement; ``time_cost_s`` seconds a user needs to answer it, in (0, 3600];
    ``status`` ``active`` or ``draft`` (waiting for validation, never asked); ``variations`` style (formal, casual,
    technical) → the text in that register (1-300 characters, may hold ``{topic}``), asked instead of ``text`` of
    a user whose style preference is confident; ``timing`` ``first``, ``any`` or ``last``: where its question goes
    among those asked together (an order of Hermes's own)."""

    model_config = ConfigDict(extra="forbid")

    category: Category
    text: Text
    suggestions: Suggestions = []
    idea_types: IdeaTypes = []
    triggers: Triggers = []
    prior_improvement: PriorImprovement = 0.5
    time_cost_s: TimeCost = 20.0
    status: Status = "active"
    variations: Variations = {}
    timing: Timing = "any"


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
    variations: Variations | None = None
    timing: Timing | None = None

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
    return ApiError(
        404,
        "unknown_template",
        f"The learner has no template {template_id!r}.",
        details={"template_id": template_id},
        user_action="GET /api/learn/templates?include_inactive=true lists every template.",
    )


@router.get("/templates", responses={200: success_schema(TemplatesReply, "The templates."), **NOT_ANSWERING})
async def list_templates(
    request: Request,
    learner: LearnerDep,
    include_inactive: bool = False,
    status: Literal["active", "draft"] | None = None,
) -> JSONResponse:
    """Every question template with its measured effectiveness (the learner's ``TemplatesReply``):
    ``{"templates": [{"template_id", "category", "text", "suggestions", "idea_types", "triggers",
    "prior_improvement" (0-1), "time_cost_s", "status" (active, draft), "active", "source" (``seed``; ``user``
    when added through the API; ``learned`` when the learner drafted it from recurring free-text answers: such a
    template comes as a ``draft``, never asked until a ``PATCH`` sets ``"status": "active"``), "variations" (style →
    text), "timing" (first, any, last), "times_asked",
    "times_answered", "answer_rate" (0-1, null before any asking), "rated_threads", "mean_rating" (1-5),
    "mean_answer_time_s", "mean_clarity_gain" (clarity 0-1 scale), "trend" (improving, stable, declining, new),
    "expected_improvement" (0-1, what the ranking uses now)}]}``. Deactivated templates only with
    ``include_inactive=true``; only those of one status with ``status=active`` or ``status=draft``. Errors: 422
    ``validation_failed``, 503 ``bus_unavailable``."""
    reply = await learner.templates(include_inactive)
    if status is not None:
        reply = TemplatesReply(templates=[t for t in reply.templates if t.status == status])
    return success(request, reply)


@router.post(
    "/templates",
    status_code=201,
    responses={
        201: ONE,
        **NOT_ANSWERING,
        **REFUSED_DEFINITION,
        409: {"description": "``template_exists``: the id is taken (deactivated ones too)."},
    },
)
async def add_template(body: NewTemplate, request: Request, learner: LearnerDep, principal: AdminDep) -> JSONResponse:
    """Add a template (the learner appends ``TemplateAdded`` with ``source`` ``user``): it is asked in every user's
    threads, so admins only. 201: the template, as one item of ``GET /api/learn/templates``. Errors: 403
    ``admin_only``, 409 ``template_exists``, 400 ``bad_request`` / ``invalid_trigger``, 422 ``validation_failed``, 503
    ``bus_unavailable``."""
    view = await learner.save(SaveTemplate(create=True, **body.model_dump()))
    return success(request, view, status_code=201)


@router.patch(
    "/templates/{template_id}", responses={200: ONE, **NOT_ANSWERING, **UNKNOWN_TEMPLATE, 422: REFUSED_DEFINITION[422]}
)
async def edit_template(
    template_id: TemplateId, body: TemplatePatch, request: Request, learner: LearnerDep, principal: AdminDep
) -> JSONResponse:
    """Change some fields of a template's definition: the given fields are merged onto the learner's current
    definition, which is then replaced as a whole (``TemplateEdited``; the measured statistics stay, and an
    edited seed template is no longer overwritten by the seeds at start-up). An edit of a deactivated template
    makes it active again (the learner applies every ``TemplateEdited`` so); an empty body changes nothing.
    Two concurrent edits of one template: the last one wins, over the other's fields too. Admins only. 200: the
    template. Errors: 403 ``admin_only``, 404 ``unknown_template``, 400 ``invalid_id`` / ``bad_request`` /
    ``invalid_trigger``, 422
    ``validation_failed``, 503 ``bus_unavailable``."""
    current = await learner.template(template_id)
    if current is None:
        raise _unknown(template_id)
    changes = body.model_dump(exclude_unset=True)
    if not changes:
        return success(request, current)
    definition = {name: getattr(current, name) for name in TemplateDefinition.model_fields} | changes
    return success(request, await learner.save(SaveTemplate(template_id=template_id, create=False, **definition)))


@router.delete("/templates/{template_id}", responses={200: ONE, **NOT_ANSWERING, **UNKNOWN_TEMPLATE})
async def deactivate_template(
    template_id: TemplateId,
    request: Request,
    learner: LearnerDep,
    principal: AdminDep,
    body: DeactivateBody | None = None,
    reason: Annotated[str | None, Query(max_length=500)] = None,
) -> JSONResponse:
    """Stop asking a template (``TemplateDeactivated``; its statistics stay, and any ``PATCH``, e.g.
    ``{"status": "active"}``, brings it back). The reason comes from the optional body ``{"reason"}`` or the
    query ``reason`` (the body wins). Admins only. 200: the template, now ``"active": false``. Errors: 403
    ``admin_only``, 404 ``unknown_template``, 400 ``invalid_id``, 422 ``validation_failed``, 503 ``bus_unavailable``."""
    why = body.reason if body is not None else (reason or "")
    return success(request, await learner.deactivate(DeactivateTemplate(template_id=template_id, reason=why)))


# ---- learned preferences ----------------------------------------------------------------------------------

PreferenceCategory = Literal["depth", "style", "constraint", "fact"]
PreferenceKey = Annotated[StrictStr, StringConstraints(pattern=PREFERENCE_KEY_PATTERN)]
PreferenceScope = Annotated[StrictStr, StringConstraints(pattern=PREFERENCE_SCOPE_PATTERN)]
PreferenceValue = Annotated[StrictStr, StringConstraints(min_length=1, max_length=120)]
UserId = Annotated[StrictStr, StringConstraints(pattern=USER_ID_PATTERN)]
PREFERENCES = success_schema(PreferencesReply, "The preferences, with the confidence threshold in use.")
UNKNOWN_PREFERENCE: dict[int | str, dict[str, Any]] = {
    404: {"description": "``unknown_preference``: the learner has no preference of that id."},
    400: {"description": "``invalid_id``: the id is not 32 hexadecimal characters."},
}


class PreferenceIn(BaseModel):
    """A preference to set: ``category`` depth, style, constraint or fact; ``key`` ``depth``/``style`` for those, a
    slot's name otherwise (lowercase letters, digits, '_': budget, location, audience, tech_stack, ...);
    ``value`` 1-120 characters (depth: overview, detailed, comprehensive; style: formal, casual, technical; any
    other: your own words); ``user_id`` (default ``local``); ``scope`` where it holds: empty (everywhere),
    ``type:<idea type>`` or ``project:<name>``."""

    model_config = ConfigDict(extra="forbid")

    category: PreferenceCategory
    key: PreferenceKey
    value: PreferenceValue
    user_id: UserId = "local"
    scope: PreferenceScope = ""


class PreferencePatch(BaseModel):
    """``value``: the preference's new value (1-120 characters)."""

    model_config = ConfigDict(extra="forbid")

    value: PreferenceValue


class Correction(BaseModel):
    """What the user says is right: ``category``/``key``/``value`` as :class:`PreferenceIn`."""

    model_config = ConfigDict(extra="forbid")

    category: PreferenceCategory
    key: PreferenceKey
    value: PreferenceValue
    scope: PreferenceScope = ""


class Feedback(BaseModel):
    """Explicit feedback: ``thread_id`` (the thread it is about; needed for a ``rating``), ``rating`` 1-5 of that
    thread's final draft, ``comment`` (at most 2000 characters, with the rating), ``corrections`` (at most 20) of
    learned preferences, ``user_id`` (default: the thread's user, else ``local``). At least a rating or one
    correction."""

    model_config = ConfigDict(extra="forbid")

    thread_id: Annotated[StrictStr, StringConstraints(min_length=1, max_length=128)] | None = None
    rating: Annotated[int, Field(ge=1, le=5, strict=True)] | None = None
    comment: StrictStr = Field(default="", max_length=2000)
    corrections: Annotated[list[Correction], Field(max_length=20)] = []
    user_id: UserId | None = None

    @model_validator(mode="after")
    def _something(self) -> Feedback:
        if self.rating is None and not self.corrections:
            raise ValueError("give a rating (with thread_id) or at least one correction")
        if self.rating is not None and self.thread_id is None:
            raise ValueError("a rating needs the thread_id it rates")
        return self


def _own(principal: Principal, user_id: str | None) -> str | None:
    """The user whose learned data a request may list or change: the principal's while auth is on (whatever
    was asked), else ``user_id``."""
    return principal.user_id if auth_enabled(principal) else user_id


@router.get("/preferences", responses={200: PREFERENCES, **NOT_ANSWERING})
async def list_preferences(
    request: Request,
    learner: LearnerDep,
    principal: PrincipalDep,
    user_id: Annotated[str | None, Query(pattern=USER_ID_PATTERN)] = None,
) -> JSONResponse:
    """What Hermes learned about its users (every user's, or ``user_id``'s): ``{"preferences": [{"preference_id",
    "user_id", "category" (depth, style, constraint), "key", "value", "confidence" (0-1), "stability" (0-1: share
    of the evidence that agrees), "observations", "corrections", "usage" (drafts 1 it was applied to), "source"
    (explicit, observed, inferred), "evidence" (answer, rating, correction, edit: the last change), "votes"
    (evidence weight per value seen), "expires_at", "updated_at", "applied" (used for the next draft 1 and in
    place of its questions)}], "confidence_threshold"}``. While auth is on, only the principal's. Errors: 422
    ``validation_failed``, 503 ``bus_unavailable``."""
    return success(request, await learner.preferences(_own(principal, user_id)))


@router.get(
    "/patterns",
    responses={200: success_schema(PatternsReply, "The patterns, with the thresholds in use."), **NOT_ANSWERING},
)
async def list_patterns(
    request: Request,
    learner: LearnerDep,
    principal: PrincipalDep,
    user_id: Annotated[str | None, Query(pattern=USER_ID_PATTERN)] = None,
    applied_only: bool = False,
) -> JSONResponse:
    """How Hermes learned its users answer (every user's, or ``user_id``'s; with ``applied_only=true`` only the
    patterns applied now): ``{"patterns": [{"pattern_id", "user_id", "kind" (skip_question: questions of
    ``category`` are left unanswered for ideas of ``idea_type``; recurring_answer: they get the same answer),
    "idea_type", "category", "validation_count" (closed threads that tested it), "success_count" (those that
    confirmed it), "confidence" (0-1: (success + 1) / (validations + 2)), "values" (answers seen, how often), "value"
    (the most frequent), "recommended_actions" (e.g. ``skip_category:context``, ``assume:constraint=keep it
    simple``), "outcome" (success, failure, seeded: what the last thread did), "thread_id" (that thread),
    "updated_at", "applied" (used for the next decision and by ``POST /api/threads/{id}/optimize``)}],
    "validation_threshold", "min_validations"}``. While auth is on, only the principal's. Errors: 422
    ``validation_failed``, 503 ``bus_unavailable``."""
    return success(request, await learner.patterns(_own(principal, user_id), applied_only))


@router.post(
    "/preferences",
    responses={
        200: success_schema(PreferenceView, "The preference as now held."),
        **NOT_ANSWERING,
        422: REFUSED_DEFINITION[422],
        400: {"description": "``bad_request``: a depth or style preference whose key is not the category."},
    },
)
async def set_preference(
    body: PreferenceIn, request: Request, learner: LearnerDep, principal: PrincipalDep
) -> JSONResponse:
    """State a preference yourself (``PreferenceLearned``, evidence ``edit``: this value with confidence 0.9,
    whatever was learned before; applied from the next draft 1). Errors: 400 ``bad_request``, 422
    ``validation_failed``, 503 ``bus_unavailable``. While auth is on, ``user_id`` is the principal's."""
    fields = {**body.model_dump(), "user_id": _own(principal, body.user_id)}
    return success(request, await learner.change_preference(SetPreference(**fields)))


@router.patch(
    "/preferences/{preference_id}",
    responses={200: success_schema(PreferenceView, "The preference."), **NOT_ANSWERING, **UNKNOWN_PREFERENCE},
)
async def edit_preference(
    preference_id: PreferenceId, body: PreferencePatch, request: Request, learner: LearnerDep, principal: PrincipalDep
) -> JSONResponse:
    """Replace a learned preference's value (as ``POST /api/learn/preferences`` with its category and key).
    Errors: 404 ``unknown_preference``, 400 ``invalid_id``, 422 ``validation_failed``, 503 ``bus_unavailable``."""
    current = await learner.preference(preference_id)
    if current is None or not visible(principal, current.user_id):
        raise _unknown_preference(preference_id)
    return success(
        request,
        await learner.change_preference(
            SetPreference(
                user_id=current.user_id,
                category=current.category,
                key=current.key,
                value=body.value,
                scope=current.scope,
            )
        ),
    )


@router.delete(
    "/preferences/{preference_id}",
    responses={200: {"description": '``{"preference_id", "forgotten": true}``'}, **NOT_ANSWERING, **UNKNOWN_PREFERENCE},
)
async def forget_preference(
    preference_id: PreferenceId, request: Request, learner: LearnerDep, principal: PrincipalDep
) -> JSONResponse:
    """Delete a learned preference (``PreferenceForgotten``): no longer applied, its evidence dropped; later
    answers start it afresh. 200 ``{"preference_id", "forgotten": true}``. Errors: 404 ``unknown_preference``, 400
    ``invalid_id``, 503 ``bus_unavailable``. While auth is on, another user's preference answers as unknown."""
    if auth_enabled(principal):
        current = await learner.preference(preference_id)
        if current is None or not visible(principal, current.user_id):
            raise _unknown_preference(preference_id)
    await learner.forget_preference(ForgetPreference(preference_id=preference_id))
    return success(request, {"preference_id": preference_id, "forgotten": True})


def _unknown_preference(preference_id: str) -> ApiError:
    return ApiError(
        404,
        "unknown_preference",
        f"The learner has no preference {preference_id!r}.",
        details={"preference_id": preference_id},
        user_action="GET /api/learn/preferences lists them.",
    )


@router.post(
    "/feedback",
    responses={
        200: {"description": '``{"thread_id", "rated", "preferences"}``'},
        **NOT_ANSWERING,
        404: {"description": "``thread_not_found``"},
        409: {"description": "``not_completed``: only a completed thread is rated"},
        422: REFUSED_DEFINITION[422],
    },
)
async def give_feedback(
    body: Feedback,
    request: Request,
    learner: LearnerDep,
    read_model: ReadModelDep,
    commands: CommandsDep,
    principal: PrincipalDep,
) -> JSONResponse:
    """Tell Hermes what it got right or wrong. A ``rating`` rates the thread's final draft (``RateThread``, as
    ``POST /api/threads/{id}/rate``; the learner also credits it to the preferences that draft applied); each
    correction is weighed against what was learned (``PreferenceLearned``, evidence ``correction``: it lowers the
    confidence of a contradicted value and can flip it). The corrections are checked before the rating is sent.
    200 ``{"thread_id", "rated", "preferences": [the corrected preferences as now held]}``. Errors: 404
    ``thread_not_found``, 409 ``not_completed``, 400 ``bad_request``, 422 ``validation_failed``, 503
    ``bus_unavailable``."""
    thread = None
    if body.thread_id is not None:
        check_id(body.thread_id, "thread_id")
        thread = await read_model.thread(body.thread_id, await read_model.log_position())
        if thread is None or not visible(principal, thread.user_id):
            raise thread_not_found(body.thread_id)
        if body.rating is not None:
            check_ratable(thread)
    user_id = _own(principal, body.user_id) or (thread.user_id if thread is not None else "local")
    changed = [
        await learner.change_preference(
            CorrectPreference(
                user_id=user_id,
                category=c.category,
                key=c.key,
                value=c.value,
                thread_id=body.thread_id,
                scope=c.scope,
            )
        )
        for c in body.corrections
    ]
    if body.rating is not None and thread is not None:
        await commands.send(
            RateThread(
                command_id=new_id(),
                issued_at=utcnow(),
                correlation_id=request.state.request_id,
                thread_id=thread.thread_id,
                rating=body.rating,
                comment=body.comment,
            )
        )
    return success(
        request,
        {
            "thread_id": body.thread_id,
            "rated": body.rating is not None,
            "preferences": [msgspec.to_builtins(p) for p in changed],
        },
    )
