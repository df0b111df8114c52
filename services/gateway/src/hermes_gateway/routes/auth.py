"""Web sessions: ``POST /api/auth/login`` turns an API token into the ``hermes_session`` cookie, ``POST
/api/auth/logout`` ends it, ``GET /api/auth/me`` says who the request acts for (see :mod:`hermes_gateway.auth`)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictStr

from hermes_gateway.auth import LOCAL, SESSION_COOKIE, Guard, auth_enabled
from hermes_gateway.deps import PrincipalDep
from hermes_gateway.envelope import success

router = APIRouter(prefix="/api/auth", tags=["auth"])

REFUSED: dict[int | str, dict[str, Any]] = {
    401: {"description": "``unauthorized``: no such token."},
    429: {"description": "``rate_limited``: too many failed logins from this address (``Retry-After``)."},
}


class LoginRequest(BaseModel):
    """``token``: one of ``HERMES_API_TOKENS`` (1-1024 characters)."""

    model_config = ConfigDict(extra="forbid")

    token: StrictStr = Field(min_length=1, max_length=1024)


def _guard(request: Request) -> Guard:
    return request.app.state.auth


@router.post("/login", responses=REFUSED)
async def login(body: LoginRequest, request: Request) -> JSONResponse:
    """200 ``{"user_id", "mode"}`` and the cookie ``hermes_session`` (HttpOnly, SameSite=Strict, Path=/, Secure
    with ``HERMES_COOKIE_SECURE``, max age ``HERMES_SESSION_TTL_HOURS``), which then authenticates like the
    token. Auth off: the ``local`` principal, no cookie. Errors: 401 ``unauthorized`` (counted against the
    address's ``HERMES_AUTH_FAILURE_LIMIT``), 429 ``rate_limited``, 422 ``validation_failed``."""
    guard = _guard(request)
    if not guard.enabled:
        return success(request, {"user_id": LOCAL.user_id, "mode": LOCAL.mode})
    principal = guard.login(request, body.token)
    response = success(request, {"user_id": principal.user_id, "mode": principal.mode})
    response.set_cookie(
        SESSION_COOKIE,
        guard.session_cookie(principal),
        max_age=guard.session_ttl_s,
        path="/",
        httponly=True,
        samesite="strict",
        secure=guard.cookie_secure,
    )
    request.state.principal = principal
    return response


@router.post("/logout")
async def logout(request: Request) -> JSONResponse:
    """End the session: its cookie value is refused from now on by this gateway process (a restart forgets that,
    and a session signed under a fixed ``HERMES_SESSION_SECRET`` would then work again until it expires) and the
    ``hermes_session`` cookie is cleared. 200 ``{"logged_out": true}``. Open: an expired session can log out too."""
    guard = _guard(request)
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie and guard.enabled:
        guard.revoke(cookie)
    response = success(request, {"logged_out": True})
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict", secure=guard.cookie_secure)
    return response


@router.get("/me", responses={401: {"description": "``unauthorized``: no or wrong credentials."}})
async def me(request: Request, principal: PrincipalDep) -> JSONResponse:
    """``{"user_id", "mode" (user, guest), "auth_enabled"}``: who this request acts for. Errors: 401
    ``unauthorized`` while auth is on and no valid credentials came (the web UI then shows its login form)."""
    return success(
        request, {"user_id": principal.user_id, "mode": principal.mode, "auth_enabled": auth_enabled(principal)}
    )
