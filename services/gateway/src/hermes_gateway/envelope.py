"""The JSON envelopes of every API response, and the handlers that put every error into one.

Success: ``{"status": "success", "data": ..., "meta": {...}}``.
Error: ``{"status": "error", "error": {"code", "message", "details", "retry_after", "user_action"},
"meta": {...}}``. ``meta`` holds ``timestamp`` (ISO-8601 UTC), ``request_id`` and
``processing_time_ms`` (milliseconds since the request arrived).
"""

from __future__ import annotations

import time
from typing import Any

import msgspec
import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from hermes_proto.ids import new_id, utcnow

from hermes_gateway.adapters import BadReply, BusUnavailable, Refused
from hermes_gateway.domain import Rejected

log = structlog.get_logger("hermes.gateway")

REJECTED_STATUS = {
    "empty_idea": 400,
    "invisible_idea": 400,
    "idea_too_long": 413,
    "answer_too_long": 413,
    "no_answers": 400,
    "duplicate_question": 400,
    "unknown_question": 400,
    "invalid_id": 400,
    "not_awaiting_answers": 409,
    "not_completed": 409,
}

REFUSED_STATUS = {
    "unknown_backend": 404,
    "bad_request": 400,
    "invalid_trigger": 400,
    "over_budget": 409,
    "unknown_template": 404,
    "unknown_preference": 404,
    "template_exists": 409,
    "unknown_setting": 404,
}
"""HTTP status of each :class:`~hermes_gateway.adapters.Refused` code; any other code (``internal``) is 502."""


class ApiError(Exception):
    """An error answered as the error envelope with HTTP ``status_code``; ``retry_after`` is seconds
    (also sent as the ``Retry-After`` header)."""

    def __init__(
        self,
        status_code: int,
        code: str,
        message: str,
        *,
        details: Any = None,
        retry_after: int | None = None,
        user_action: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code
        self.message = message
        self.details = details
        self.retry_after = retry_after
        self.user_action = user_action

    @classmethod
    def from_rejected(cls, rejected: Rejected) -> ApiError:
        return cls(
            REJECTED_STATUS.get(rejected.code, 400),
            rejected.code,
            rejected.message,
            details=rejected.details,
            user_action=rejected.user_action,
        )


def meta(request: Request) -> dict[str, Any]:
    """``timestamp``, ``request_id`` and ``processing_time_ms`` of ``request`` (set by the request middleware)."""
    started = getattr(request.state, "started", None)
    elapsed_ms = (time.perf_counter() - started) * 1000 if started is not None else 0.0
    return {
        "timestamp": utcnow().isoformat(),
        "request_id": getattr(request.state, "request_id", None) or new_id(),
        "processing_time_ms": round(elapsed_ms, 3),
    }


def success(request: Request, data: Any, status_code: int = 200) -> JSONResponse:
    """The success envelope; ``data`` may hold msgspec structs and datetimes (converted to JSON builtins)."""
    body = {"status": "success", "data": msgspec.to_builtins(data), "meta": meta(request)}
    return JSONResponse(body, status_code=status_code)


def _any_value(type_: type) -> dict[str, Any]:
    """JSON Schema for a contract field typed ``object`` (any JSON value); other unknown types stay errors."""
    if type_ is object:
        return {"description": "any JSON value"}
    raise NotImplementedError


def success_schema(data_type: type, description: str = "Success.") -> dict[str, Any]:
    """An OpenAPI ``responses`` entry: the success envelope whose ``data`` is ``data_type`` (a msgspec struct
    of the contract). Its JSON Schema is inlined, because msgspec's ``#/$defs/...`` references would
    resolve against the OpenAPI document rather than the schema."""
    schema = msgspec.json.schema(data_type, schema_hook=_any_value)
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return inline(defs[ref.removeprefix("#/$defs/")])
            return {key: inline(value) for key, value in node.items()}
        if isinstance(node, list):
            return [inline(value) for value in node]
        return node

    envelope = {
        "type": "object",
        "required": ["status", "data", "meta"],
        "properties": {"status": {"const": "success"}, "data": inline(schema), "meta": {"type": "object"}},
    }
    return {"description": description, "content": {"application/json": {"schema": envelope}}}


ERROR_ENVELOPE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["status", "error", "meta"],
    "properties": {
        "status": {"const": "error"},
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "details": {},
                "retry_after": {"type": ["integer", "null"]},
                "user_action": {"type": ["string", "null"]},
            },
        },
        "meta": {"type": "object"},
    },
}


def document_error_envelope(app: FastAPI) -> None:
    """Make the OpenAPI document say what the gateway really answers on a validation failure: FastAPI
    documents its own ``{"detail": [...]}`` for 422, but every error here is the error envelope (code
    ``validation_failed``, the failures in ``details``)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        schema = generate()
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                response = operation.get("responses", {}).get("422")
                if response is not None:
                    response["description"] = "Validation failed: the error envelope, code validation_failed."
                    response["content"] = {"application/json": {"schema": ERROR_ENVELOPE_SCHEMA}}
        for name in ("HTTPValidationError", "ValidationError"):
            schema.get("components", {}).get("schemas", {}).pop(name, None)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


OPENAI_ERROR_TYPES = {
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}
"""OpenAI's error ``type`` by HTTP status (its API reference, "Error codes"); 5xx are ``api_error``, other 4xx
``invalid_request_error``."""


def failure(request: Request, error: ApiError) -> JSONResponse:
    """The error envelope for ``error`` — under ``/v1/`` (the OpenAI-compatible API) OpenAI's error object
    ``{"error": {"message", "type", "param", "code"}}`` instead, so OpenAI clients read it; a 401 carries
    ``WWW-Authenticate: Bearer`` (RFC 6750, section 3)."""
    body: dict[str, Any] = {
        "status": "error",
        "error": {
            "code": error.code,
            "message": error.message,
            "details": msgspec.to_builtins(error.details),
            "retry_after": error.retry_after,
            "user_action": error.user_action,
        },
        "meta": meta(request),
    }
    if request.url.path.startswith("/v1/"):
        kind = (
            "api_error"
            if error.status_code >= 500
            else OPENAI_ERROR_TYPES.get(error.status_code, "invalid_request_error")
        )
        body = {"error": {"message": error.message, "type": kind, "param": None, "code": error.code}}
    headers = {"Retry-After": str(error.retry_after)} if error.retry_after is not None else {}
    if error.status_code == 401:
        headers["WWW-Authenticate"] = "Bearer"
    request.state.error_code = error.code
    return JSONResponse(body, status_code=error.status_code, headers=headers)


def _validation_details(exc: RequestValidationError) -> list[dict[str, Any]]:
    return [{"loc": list(e.get("loc", ())), "type": e.get("type"), "message": e.get("msg")} for e in exc.errors()]


async def _on_api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return failure(request, exc)


async def _on_rejected(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Rejected)
    return failure(request, ApiError.from_rejected(exc))


async def _on_bus_unavailable(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, BusUnavailable)
    log.warning("bus_unavailable", what=exc.what, error=repr(exc.error))
    return failure(
        request,
        ApiError(
            503,
            "bus_unavailable",
            f"{exc.what} is not answering right now.",
            details={"error": repr(exc.error)},
            retry_after=2,
            user_action="Try again in a few seconds; check that Hermes is running "
            "(`hermes up`) and GET /api/system/health.",
        ),
    )


async def _on_bad_reply(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, BadReply)
    log.error("bad_query_reply", what=exc.what, error=str(exc))
    return failure(
        request,
        ApiError(502, "bad_reply", f"{exc.what} answered with an unexpected reply.", details={"error": str(exc)}),
    )


async def _on_refused(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Refused)
    status = REFUSED_STATUS.get(exc.code, 502)
    if status == 502:
        log.error("query_refused", what=exc.what, code=exc.code, message=exc.message)
    return failure(request, ApiError(status, exc.code, exc.message, details={"from": exc.what}))


async def _on_validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    details = _validation_details(exc)
    if any(d["type"] == "json_invalid" for d in details):
        return failure(
            request,
            ApiError(
                400,
                "invalid_json",
                "The request body is not valid JSON.",
                details=details,
                user_action="Send a JSON object.",
            ),
        )
    content_type = request.headers.get("content-type", "")
    if (
        request.method in ("POST", "PUT", "PATCH")
        and "json" not in content_type
        and any(d["loc"] == ["body"] for d in details)
    ):
        return failure(
            request,
            ApiError(
                415,
                "unsupported_media_type",
                "The request body must be JSON.",
                details={"content_type": content_type or None},
                user_action="Send the header Content-Type: application/json.",
            ),
        )
    return failure(
        request, ApiError(422, "validation_failed", "The request does not match the expected shape.", details=details)
    )


async def _on_http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    codes = {
        404: ("not_found", "No such route."),
        405: ("method_not_allowed", "Method not allowed here."),
        413: ("payload_too_large", "The request body is over HERMES_MAX_BODY_BYTES."),
    }
    code, message = codes.get(exc.status_code, (f"http_{exc.status_code}", str(exc.detail)))
    response = failure(request, ApiError(exc.status_code, code, message, details={"path": request.url.path}))
    for key, value in (exc.headers or {}).items():
        response.headers[key] = value
    return response


async def _on_unencodable(request: Request, exc: Exception) -> JSONResponse:
    # JSON allows an escaped lone UTF-16 surrogate ("\\ud800"); it cannot become UTF-8, so no message can carry it.
    return failure(
        request,
        ApiError(
            400,
            "invalid_text",
            "The request holds text that is not valid Unicode (a lone UTF-16 surrogate).",
            user_action="Send valid UTF-8 text.",
        ),
    )


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled_error", path=request.url.path, error=repr(exc), exc_info=exc)
    return failure(
        request,
        ApiError(
            500,
            "internal_error",
            "Something went wrong inside the gateway.",
            user_action="Try again; if it persists, look at the gateway log for this request_id.",
        ),
    )


def install_error_handlers(app: FastAPI) -> None:
    """Route every error (ours, FastAPI's validation, Starlette's 404/405, anything unexpected) into the
    error envelope."""
    app.add_exception_handler(ApiError, _on_api_error)
    app.add_exception_handler(Rejected, _on_rejected)
    app.add_exception_handler(BusUnavailable, _on_bus_unavailable)
    app.add_exception_handler(BadReply, _on_bad_reply)
    app.add_exception_handler(Refused, _on_refused)
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(StarletteHTTPException, _on_http)
    app.add_exception_handler(UnicodeEncodeError, _on_unencodable)
    app.add_exception_handler(Exception, _on_unexpected)
