"""``Annotated`` dependency aliases that keep route signatures short (FastAPI full-stack template style).

Every dependency is ``async def`` although none awaits anything but the orchestrator: FastAPI runs a plain ``def``
dependency on a worker thread (``run_in_threadpool``), a hop that cost more than the dependency itself."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import Depends, Request

from hermes_proto.queries import PREFERENCE_ID_PATTERN, TEMPLATE_ID_PATTERN

from hermes_gateway.accepted import AcceptedThreads, thread_or_accepted
from hermes_gateway.adapters import BackendsClient, Bus, CommandPublisher, LearnerClient, ReadModel
from hermes_gateway.auth import ADMIN, GUEST, Principal, admin_only, auth_enabled, read_only, unauthorized, visible
from hermes_gateway.config import GatewaySettings
from hermes_gateway.domain import Rejected, check_id
from hermes_gateway.envelope import ApiError


async def _settings(request: Request) -> GatewaySettings:
    return request.app.state.settings


async def _bus(request: Request) -> Bus:
    return request.app.state.bus


async def _read_model(request: Request) -> ReadModel:
    return request.app.state.read_model


async def _accepted(request: Request) -> AcceptedThreads:
    return request.app.state.accepted


async def _commands(request: Request) -> CommandPublisher:
    return request.app.state.commands


async def _backends(request: Request) -> BackendsClient:
    return request.app.state.backends


async def _learner(request: Request) -> LearnerClient:
    return request.app.state.learner


async def _principal(request: Request) -> Principal:
    principal: Principal | None = getattr(request.state, "principal", None)
    if principal is None:  # an open path while auth is on: nobody presented credentials
        raise unauthorized()
    return principal


async def _writer(principal: Annotated[Principal, Depends(_principal)]) -> Principal:
    if principal.mode == GUEST:
        raise read_only()
    return principal


def thread_not_found(thread_id: str) -> ApiError:
    """404 ``thread_not_found``: no such thread, or (auth on) another user's; the two answers are identical."""
    return ApiError(
        404,
        "thread_not_found",
        f"No thread {thread_id}.",
        details={"thread_id": thread_id},
        user_action="Check the id; a thread just submitted appears within a second.",
    )


def job_not_found(thread_id: str, job_id: str) -> ApiError:
    """404 ``job_not_found``: no such job in the thread, or (auth on) the thread is another user's."""
    return ApiError(
        404,
        "job_not_found",
        f"No job {job_id} in thread {thread_id}.",
        details={"thread_id": thread_id, "job_id": job_id},
    )


async def _admin(principal: Annotated[Principal, Depends(_principal)]) -> Principal:
    if principal.mode != ADMIN:
        raise admin_only()
    return principal


async def _thread_id(thread_id: str, request: Request) -> str:
    request.state.thread_id = check_id(thread_id, "thread_id")
    principal: Principal | None = getattr(request.state, "principal", None)
    if principal is not None and auth_enabled(principal):
        # Another user's thread answers exactly as an unknown one, on every route taking a {thread_id}.
        read_model: ReadModel = request.app.state.read_model
        thread = await thread_or_accepted(
            read_model, request.app.state.accepted, thread_id, read_model.seen_position(), counted=False
        )
        if thread is not None and not visible(principal, thread.user_id):
            job_id = request.path_params.get("job_id")
            raise job_not_found(thread_id, job_id) if job_id else thread_not_found(thread_id)
    return thread_id


async def _job_id(job_id: str) -> str:
    return check_id(job_id, "job_id")


async def _backend_name(name: str) -> str:
    return check_id(name, "backend")


async def _template_id(template_id: str) -> str:
    if not re.fullmatch(TEMPLATE_ID_PATTERN, template_id):
        raise Rejected(
            "invalid_id",
            "template_id must be 1-64 lowercase letters, digits, '_' or '-', starting with a letter or digit",
            details={"field": "template_id"},
        )
    return template_id


async def _preference_id(preference_id: str) -> str:
    if not re.fullmatch(PREFERENCE_ID_PATTERN, preference_id):
        raise Rejected(
            "invalid_id",
            "preference_id must be 32 lowercase hexadecimal characters.",
            details={"field": "preference_id"},
        )
    return preference_id


SettingsDep = Annotated[GatewaySettings, Depends(_settings)]
BusDep = Annotated[Bus, Depends(_bus)]
PrincipalDep = Annotated[Principal, Depends(_principal)]
"""Who the request acts for (``request.state.principal``; ``LOCAL`` while auth is off); 401 ``unauthorized`` on
an open path without credentials."""
WriterDep = Annotated[Principal, Depends(_writer)]
AdminDep = Annotated[Principal, Depends(_admin)]
""":data:`PrincipalDep` of mode ``admin`` (everyone while auth is off): changes that act for every user; others get 403
``admin_only``."""
""":data:`PrincipalDep` of mode ``user`` or ``admin``; a guest gets 403 ``read_only``."""
ReadModelDep = Annotated[ReadModel, Depends(_read_model)]
CommandsDep = Annotated[CommandPublisher, Depends(_commands)]
AcceptedDep = Annotated[AcceptedThreads, Depends(_accepted)]
"""The submissions this gateway accepted whose threads the orchestrator may not show yet (:mod:`hermes_gateway.accepted`)."""
BackendsDep = Annotated[BackendsClient, Depends(_backends)]
ThreadId = Annotated[str, Depends(_thread_id)]
"""The ``{thread_id}`` path parameter, checked to be a safe id (else 400 ``invalid_id``); while auth is on, a thread
of another user answers 404 as an unknown one (``thread_not_found``; ``job_not_found`` on a job's route)."""
JobId = Annotated[str, Depends(_job_id)]
BackendName = Annotated[str, Depends(_backend_name)]
"""The ``{name}`` path parameter of a backend, checked to be a safe id (else 400 ``invalid_id``)."""
LearnerDep = Annotated[LearnerClient, Depends(_learner)]
TemplateId = Annotated[str, Depends(_template_id)]
"""The ``{template_id}`` path parameter, checked against the contract's ``TEMPLATE_ID_PATTERN`` (else 400
``invalid_id``)."""
PreferenceId = Annotated[str, Depends(_preference_id)]
"""The ``{preference_id}`` path parameter, checked against ``PREFERENCE_ID_PATTERN`` (else 400 ``invalid_id``)."""
