"""The editable configuration (the web UI's settings page): only settings marked user-editable
(:data:`hermes_proto.userconfig.USER_SETTINGS`), so no secret can ever be shown or changed here. Users only:
guests get 403."""

from __future__ import annotations

import msgspec
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, StrictFloat, StrictInt, StrictStr

from hermes_proto.userconfig import BY_KEY, ChangeSetting, ConfigReply

from hermes_gateway.deps import AdminDep, WriterDep
from hermes_gateway.envelope import ApiError, success, success_schema
from hermes_gateway.routes.sessions import SessionsDep

router = APIRouter(prefix="/api/config", tags=["config"])


class SettingIn(BaseModel):
    """``value``: the new value (a number, or its text), or null to go back to the deployment's value."""

    value: StrictInt | StrictFloat | StrictStr | None


@router.get("", responses={200: success_schema(ConfigReply, "Every editable setting.")})
async def get_config(request: Request, sessions: SessionsDep, principal: WriterDep) -> JSONResponse:
    """``{"settings": [{"key", "env", "value", "default", "unit", "description", "minimum", "maximum", "changed",
    "user_editable", "service"}]}``."""
    return success(request, msgspec.to_builtins(await sessions.config()))


@router.patch("/{key}", responses={200: success_schema(ConfigReply, "The setting as now in force.")})
async def change_setting(
    key: str, body: SettingIn, request: Request, sessions: SessionsDep, principal: AdminDep
) -> JSONResponse:
    """Change one editable setting (``SettingChanged`` in the log; the orchestrator applies it to every decision
    from now on, for every user: admins only, else 403 ``admin_only``). 404 ``unknown_setting``, 400
    ``bad_request`` outside its bounds."""
    if key not in BY_KEY:
        raise ApiError(404, "unknown_setting", f"No editable setting {key!r}.")
    value = None if body.value is None else str(body.value)
    reply = await sessions.change_setting(ChangeSetting(key=key, value=value, by=principal.user_id))
    return success(request, msgspec.to_builtins(reply.settings[0]))
