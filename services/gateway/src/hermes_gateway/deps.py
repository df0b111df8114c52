"""``Annotated`` dependency aliases that keep route signatures short (FastAPI full-stack template style)."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import Depends, Request

from hermes_gateway.adapters import BackendsClient, Bus, CommandPublisher, LearnerClient, ReadModel
from hermes_gateway.config import GatewaySettings
from hermes_gateway.domain import Rejected, check_id
from hermes_proto.queries import PREFERENCE_ID_PATTERN, TEMPLATE_ID_PATTERN


def _settings(request: Request) -> GatewaySettings:
    return request.app.state.settings


def _bus(request: Request) -> Bus:
    return request.app.state.bus


def _read_model(request: Request) -> ReadModel:
    return request.app.state.read_model


def _commands(request: Request) -> CommandPublisher:
    return request.app.state.commands


def _backends(request: Request) -> BackendsClient:
    return request.app.state.backends


def _learner(request: Request) -> LearnerClient:
    return request.app.state.learner


def _thread_id(thread_id: str, request: Request) -> str:
    request.state.thread_id = check_id(thread_id, "thread_id")
    return thread_id


def _job_id(job_id: str) -> str:
    return check_id(job_id, "job_id")


def _backend_name(name: str) -> str:
    return check_id(name, "backend")


def _template_id(template_id: str) -> str:
    if not re.fullmatch(TEMPLATE_ID_PATTERN, template_id):
        raise Rejected("invalid_id", "template_id must be 1-64 lowercase letters, digits, '_' or '-', "
                       "starting with a letter or digit", details={"field": "template_id"})
    return template_id


def _preference_id(preference_id: str) -> str:
    if not re.fullmatch(PREFERENCE_ID_PATTERN, preference_id):
        raise Rejected("invalid_id", "preference_id must be 32 lowercase hexadecimal characters.",
                       details={"field": "preference_id"})
    return preference_id


SettingsDep = Annotated[GatewaySettings, Depends(_settings)]
BusDep = Annotated[Bus, Depends(_bus)]
ReadModelDep = Annotated[ReadModel, Depends(_read_model)]
CommandsDep = Annotated[CommandPublisher, Depends(_commands)]
BackendsDep = Annotated[BackendsClient, Depends(_backends)]
ThreadId = Annotated[str, Depends(_thread_id)]
"""The ``{thread_id}`` path parameter, checked to be a safe id (else 400 ``invalid_id``)."""
JobId = Annotated[str, Depends(_job_id)]
BackendName = Annotated[str, Depends(_backend_name)]
"""The ``{name}`` path parameter of a backend, checked to be a safe id (else 400 ``invalid_id``)."""
LearnerDep = Annotated[LearnerClient, Depends(_learner)]
TemplateId = Annotated[str, Depends(_template_id)]
"""The ``{template_id}`` path parameter, checked against the contract's ``TEMPLATE_ID_PATTERN`` (else 400
``invalid_id``)."""
PreferenceId = Annotated[str, Depends(_preference_id)]
"""The ``{preference_id}`` path parameter, checked against ``PREFERENCE_ID_PATTERN`` (else 400 ``invalid_id``)."""
