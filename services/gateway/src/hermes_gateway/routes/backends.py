"""Backends: health, scores, load and spend as the backend-router sees them; runtime enable/disable; the
router's selection history; one prompt compared across backends. Every route asks the router over NATS
request/reply (``hermes.query.backends``, ``hermes.query.selections``, ``hermes.control.*``)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, StrictInt, StrictStr, StringConstraints

from hermes_proto.queries import BackendsReply, CompareReply, CompareRequest, SelectionsReply

from hermes_gateway.auth import ADMIN, auth_enabled
from hermes_gateway.deps import AdminDep, BackendName, BackendsDep, PrincipalDep, ReadModelDep
from hermes_gateway.domain import ID_PATTERN, check_id
from hermes_gateway.envelope import success, success_schema

router = APIRouter(prefix="/api/backends", tags=["backends"])

MAX_PROMPT = 20_000
"""Longest comparison prompt (characters)."""
OWN_THREADS = 500
"""How many of a user's newest threads their selections are shown for (the orchestrator's list limit)."""

NOT_ANSWERING: dict[int | str, dict[str, Any]] = {
    503: {"description": "``bus_unavailable``: the backend-router (or NATS) is not answering."},
    502: {"description": "``bad_reply``: the router answered outside the contract."},
}
UNKNOWN_BACKEND: dict[int | str, dict[str, Any]] = {
    404: {"description": "``unknown_backend``: the router has no backend of that name."},
    400: {"description": "``invalid_id``: the name is not 1-128 letters, digits, '-' or '_'."},
}

BackendField = Annotated[StrictStr, StringConstraints(pattern=ID_PATTERN.pattern)]


class ToggleRequest(BaseModel):
    """``reason``: why (free text, at most 500 characters; recorded on ``BackendDisabled``)."""

    reason: StrictStr = Field(default="", max_length=500)


class CompareBody(BaseModel):
    """``prompt``: 1-20000 characters (surrounding whitespace dropped); ``backends``: names to compare (empty:
    every enabled backend); ``max_tokens``: 1-4096 output tokens per backend; ``timeout_s``: 1-600 seconds for
    the whole comparison (a backend without a result by then reports ``timeout``)."""

    prompt: Annotated[StrictStr, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_PROMPT)]
    backends: list[BackendField] = Field(default_factory=list, max_length=32)
    max_tokens: StrictInt = Field(default=256, ge=1, le=4096)
    timeout_s: float = Field(default=120.0, ge=1, le=600)


LISTED = success_schema(BackendsReply, "Every backend and the budgets.")


@router.get("", responses={200: LISTED, **NOT_ANSWERING})
async def list_backends(request: Request, backends: BackendsDep) -> JSONResponse:
    """Every registered backend and the budgets (the router's ``BackendsReply``):
    ``{"backends": [{"name", "type", "enabled", "health" (healthy, degraded, unhealthy, unknown), "local",
    "models", "scores" {criteria: score in [0, 1]}, "in_flight", "max_concurrent", "requests", "failures",
    "success_rate" (0-1), "mean_latency_ms", "mean_rating", "spend_today_cents", "price_in_cents_per_mtok",
    "price_out_cents_per_mtok", "cooling_down_until", "unhealthy_reason"}], "budget": {"day",
    "spent_today_cents", "daily_budget_cents", "max_cost_per_job_cents", "min_remote_budget_cents",
    "projects", "project_budgets_cents"}, "queued_jobs"}``. Money in cents, times ISO-8601 UTC.
    Errors: 503 ``bus_unavailable``, 502 ``bad_reply``."""
    return success(request, await backends.backends())


@router.get(
    "/selections",
    responses={
        200: success_schema(SelectionsReply, "The selections."),
        **NOT_ANSWERING,
        400: {"description": "``invalid_id``: bad ``job_id``."},
    },
)
async def list_selections(
    request: Request,
    backends: BackendsDep,
    read_model: ReadModelDep,
    principal: PrincipalDep,
    job_id: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> JSONResponse:
    """The router's selection decisions (``SelectionsReply``): with ``job_id`` every attempt of that job in
    order, else the latest ``limit``, newest first. ``{"selections": [{"job_id", "thread_id", "attempt",
    "backend", "model", "strategy", "criteria", "reason", "job_type", "estimated_cost_cents", "selected_at",
    "failover_from", "candidates": [{"backend", "model", "score", "rejected" (why it could not take the job,
    or null), "estimated_cost_cents"}]}]}``. While auth is on, a token of mode user or guest sees only the
    selections of its own threads (its :data:`OWN_THREADS` newest, as the orchestrator lists them; another
    user's job answers as unknown: an empty list); an admin sees every one. Errors: 400 ``invalid_id``, 422
    ``validation_failed``, 503 ``bus_unavailable``."""
    if job_id is not None:
        check_id(job_id, "job_id")
    thread_ids = None
    if auth_enabled(principal) and principal.mode != ADMIN:
        thread_ids = await read_model.thread_ids(OWN_THREADS, principal.user_id)
    return success(request, await backends.selections(job_id, limit, thread_ids))


@router.post(
    "/compare",
    responses={
        200: success_schema(CompareReply, "One result per backend."),
        **NOT_ANSWERING,
        **UNKNOWN_BACKEND,
        422: {"description": "``validation_failed``: the body breaks a limit."},
    },
)
async def compare_backends(
    body: CompareBody, request: Request, backends: BackendsDep, principal: AdminDep
) -> JSONResponse:
    """Run ``prompt`` once on each backend (the router's ``CompareReply``, answered after at most
    ``timeout_s`` seconds): ``{"comparison_id", "results": [{"backend", "model", "text", "latency_ms",
    "first_token_ms", "prompt_tokens", "completion_tokens", "cost_cents", "error_code", "error"}]}``; a
    backend that failed, was refused (e.g. disabled, unhealthy, over budget: ``error_code`` ``refused``) or
    did not answer in time (``timeout``) has ``error_code`` and ``error`` instead of ``text``. Budgets apply;
    costs are recorded under the project ``compare`` and count against every user's budget, so admins only.
    Errors: 403 ``admin_only``, 404 ``unknown_backend``, 422 ``validation_failed``, 503 ``bus_unavailable``."""
    reply = await backends.compare(
        CompareRequest(prompt=body.prompt, backends=body.backends, max_tokens=body.max_tokens, timeout_s=body.timeout_s)
    )
    return success(request, reply)


async def _toggle(
    request: Request, backends: BackendsDep, name: str, enabled: bool, body: ToggleRequest | None
) -> JSONResponse:
    reason = body.reason if body is not None else ""
    return success(request, await backends.set_enabled(name, enabled, reason))


@router.post("/{name}/enable", responses={200: LISTED, **NOT_ANSWERING, **UNKNOWN_BACKEND})
async def enable_backend(
    name: BackendName, request: Request, backends: BackendsDep, principal: AdminDep, body: ToggleRequest | None = None
) -> JSONResponse:
    """Let the router send new jobs to ``name`` again (overrides ``BACKEND_<NAME>_ENABLED``; survives a
    restart: the router records ``BackendEnabled``). Optional body ``{"reason"}``. 200: the updated list, as
    ``GET /api/backends``. Errors: 404 ``unknown_backend``, 400 ``invalid_id``, 503 ``bus_unavailable``."""
    return await _toggle(request, backends, name, True, body)


@router.post("/{name}/disable", responses={200: LISTED, **NOT_ANSWERING, **UNKNOWN_BACKEND})
async def disable_backend(
    name: BackendName, request: Request, backends: BackendsDep, principal: AdminDep, body: ToggleRequest | None = None
) -> JSONResponse:
    """Stop sending new jobs to ``name`` (running ones finish; the router records ``BackendDisabled`` with the
    ``reason``). Optional body ``{"reason"}``. 200: the updated list, as ``GET /api/backends``. Errors:
    404 ``unknown_backend``, 400 ``invalid_id``, 503 ``bus_unavailable``."""
    return await _toggle(request, backends, name, False, body)
