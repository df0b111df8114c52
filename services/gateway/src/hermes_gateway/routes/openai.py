"""The OpenAI-compatible API: ``GET /v1/models`` and ``POST /v1/chat/completions`` (plain and ``stream: true``).

Any OpenAI client works unchanged: point its base URL at ``http://<gateway>/v1`` and give a Hermes token (any
string while auth is off) as the API key. A completion is one chat turn through the real bus (:mod:`hermes_gateway.chat`):
the orchestrator applies SOUL.md and memories, the backend-router chooses the backend serving the requested model
within the budgets, an edge runs it, and the turn is captured in the session. The model ``hermes`` runs Hermes's
own flow instead: draft 1 and its clarifying questions; the next message of the same session answers them and gets
draft 2. The model ``hermes-agent`` runs an agent (tools, approvals) on the last user message and answers with the
run's answer, streaming each step (:mod:`hermes_gateway.agent_model`); ``metadata.profile``/``metadata.project`` (or
the headers ``X-Hermes-Agent-Profile``/``X-Hermes-Project``) choose its profile and workspace.

Sessions: header ``X-Hermes-Session-Id`` (else the body's ``user``) names the session; the same id continues it.
Without either, each request starts a new session. Every response carries ``X-Hermes-Session-Id`` (the key, to
send back to continue: a new one when the caller named none) and ``X-Hermes-Thread-Id`` (the session's thread,
as ``/api/sessions/{id}`` reads it). Errors use OpenAI's error object ``{"error": {"message", "type", "param", "code"}}``.
Wire formats: OpenAI's API reference, "Chat Completions" (object ``chat.completion`` / ``chat.completion.chunk``,
``data: [DONE]`` ends a stream, ``stream_options.include_usage`` adds a last chunk with ``usage`` and no choices).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

import msgspec
import structlog
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse

from hermes_proto.base import ChatMessage
from hermes_proto.commands import SubmitChat
from hermes_proto.ids import new_id, utcnow
from hermes_proto.rpc import BadReply, BusUnavailable, Refused

from hermes_gateway.agent_model import AGENT_MODEL, run_agent_turn
from hermes_gateway.chat import ChatTurn, TurnFailed, TurnResult, session_thread_id
from hermes_gateway.deps import BackendsDep, BusDep, CommandsDep, PrincipalDep, SettingsDep, WriterDep
from hermes_gateway.hermes_model import HERMES_MODEL, run_hermes_turn

log = structlog.get_logger("hermes.gateway")
router = APIRouter(prefix="/v1", tags=["openai"], include_in_schema=False)

SESSION_HEADER = "X-Hermes-Session-Id"
THREAD_HEADER = "X-Hermes-Thread-Id"
PROJECT_HEADER = "X-Hermes-Project"
ROLE_MAP = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
"""OpenAI roles Hermes passes on (``developer`` is the newer name of ``system``); ``tool``/``function`` are refused."""
SESSION_KEY = re.compile(r"^[\x21-\x7e]{1,200}$")
PROJECT = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class ContentPart(msgspec.Struct, kw_only=True):
    type: str
    text: str | None = None


class InMessage(msgspec.Struct, kw_only=True):
    role: str
    content: str | list[ContentPart] | None = None


class StreamOptions(msgspec.Struct, kw_only=True):
    include_usage: bool = False


class ChatRequest(msgspec.Struct, kw_only=True):
    """The fields Hermes reads from OpenAI's request body; others (top_p, stop, seed...) are accepted and ignored."""

    model: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    messages: Annotated[list[InMessage], msgspec.Meta(min_length=1)]
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: Annotated[int, msgspec.Meta(ge=1, le=32768)] | None = None
    max_completion_tokens: Annotated[int, msgspec.Meta(ge=1, le=32768)] | None = None
    temperature: Annotated[float, msgspec.Meta(ge=0.0, le=2.0)] | None = None
    n: int = 1
    user: str | None = None
    metadata: dict[str, Any] | None = None
    """OpenAI's free-form metadata; the model ``hermes-agent`` reads ``profile`` and ``project`` from it."""


class OpenAIError(Exception):
    """An error in OpenAI's shape: ``status`` (HTTP), ``type`` (invalid_request_error, authentication_error,
    api_error...), ``code`` (machine-readable), ``param`` (the offending field)."""

    def __init__(
        self,
        status: int,
        message: str,
        type_: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type_, code, param

    def response(self) -> JSONResponse:
        return JSONResponse(
            {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}},
            status_code=self.status,
        )


def _bus_error(exc: Exception) -> OpenAIError:
    return OpenAIError(503, f"Hermes is not answering: {exc}", "api_error", "service_unavailable")


@router.get("/models")
async def list_models(backends: BackendsDep, principal: PrincipalDep) -> JSONResponse:
    """OpenAI's model list: ``hermes``, ``hermes-agent`` and every model of every healthy, enabled backend
    (``owned_by`` the first backend serving it)."""
    try:
        reply = await backends.backends()
    except (BusUnavailable, BadReply, Refused) as exc:
        return _bus_error(exc).response()
    seen: dict[str, str] = {}
    for b in reply.backends:
        if b.enabled and b.health == "healthy":
            for model in b.models:
                seen.setdefault(model, b.name)
    data = [{"id": m, "object": "model", "created": 0, "owned_by": "hermes"} for m in (HERMES_MODEL, AGENT_MODEL)]
    data += [{"id": m, "object": "model", "created": 0, "owned_by": owner} for m, owner in seen.items()]
    return JSONResponse({"object": "list", "data": data})


def _parse(raw: bytes, max_chars: int) -> tuple[ChatRequest, list[ChatMessage]]:
    try:
        body = msgspec.json.decode(raw, type=ChatRequest)
    except msgspec.ValidationError as exc:
        raise OpenAIError(400, f"Invalid request: {exc}", code="invalid_request") from None
    except msgspec.DecodeError as exc:
        raise OpenAIError(400, f"The body is not valid JSON: {exc}", code="invalid_json") from None
    if body.n != 1:
        raise OpenAIError(400, "Only n=1 is supported.", code="unsupported_parameter", param="n")
    messages: list[ChatMessage] = []
    for i, m in enumerate(body.messages):
        role = ROLE_MAP.get(m.role)
        if role is None:
            raise OpenAIError(
                400,
                f"messages[{i}].role {m.role!r} is not supported (system, developer, user, assistant).",
                code="unsupported_role",
                param=f"messages[{i}].role",
            )
        if isinstance(m.content, list):
            if any(p.type != "text" or p.text is None for p in m.content):
                raise OpenAIError(
                    400,
                    f"messages[{i}].content: only text parts are supported.",
                    code="unsupported_content",
                    param=f"messages[{i}].content",
                )
            text = "".join(p.text or "" for p in m.content)
        else:
            text = m.content or ""
        messages.append(ChatMessage(role=role, content=text))
    if sum(len(m.content) for m in messages) > max_chars:
        raise OpenAIError(
            400,
            f"The messages hold more than {max_chars} characters (HERMES_MAX_CHAT_CHARS).",
            code="context_length_exceeded",
            param="messages",
        )
    if not any(m.role == "user" and m.content.strip() for m in messages):
        raise OpenAIError(
            400, "At least one non-empty user message is needed.", code="invalid_request", param="messages"
        )
    return body, messages


def _session_key(request: Request, body: ChatRequest) -> tuple[str, bool]:
    """(the session key, whether the caller named it)."""
    key = request.headers.get(SESSION_HEADER) or body.user
    if key is None:
        return new_id(), False
    if not SESSION_KEY.fullmatch(key):
        raise OpenAIError(
            400,
            f"{SESSION_HEADER} (or user) must be 1-200 printable ASCII characters.",
            code="invalid_session",
            param="user",
        )
    return key, True


async def _routing(backends: BackendsDep, model: str) -> tuple[str | None, str | None]:
    """(backend, model) to ask the router for: a backend's name asks for that backend, a model name for any
    backend serving it. Raises :class:`OpenAIError` 404 ``model_not_found``."""
    try:
        reply = await backends.backends()
    except (BusUnavailable, BadReply, Refused) as exc:
        raise _bus_error(exc) from None
    if any(b.name == model for b in reply.backends):
        return model, None
    if any(model in b.models for b in reply.backends):
        return None, model
    raise OpenAIError(
        404, f"The model {model!r} does not exist (GET /v1/models lists them).", code="model_not_found", param="model"
    )


@router.post("/chat/completions")
async def chat_completions(
    request: Request,
    settings: SettingsDep,
    bus: BusDep,
    commands: CommandsDep,
    backends: BackendsDep,
    principal: WriterDep,
):
    """One chat completion (see the module docstring). 400 on a malformed request, 404 ``model_not_found``,
    502 when the turn's job failed (its error code in ``code``: no_backend, over_budget...), 503 when Hermes is
    not answering, 504 ``timeout`` after ``HERMES_CHAT_TIMEOUT_SECONDS``."""
    try:
        body, messages = _parse(await request.body(), settings.hermes_max_chat_chars)
        key, named = _session_key(request, body)
        project = request.headers.get(PROJECT_HEADER, "default")
        if not PROJECT.fullmatch(project):
            raise OpenAIError(
                400, f"{PROJECT_HEADER} must be 1-64 letters, digits, '-' or '_'.", code="invalid_project"
            )
        max_tokens = body.max_completion_tokens or body.max_tokens
        if body.model == HERMES_MODEL:
            return await run_hermes_turn(
                request,
                body.stream,
                messages,
                key,
                principal.user_id,
                project,
                bool(body.stream_options and body.stream_options.include_usage),
            )
        if body.model == AGENT_MODEL:
            return await run_agent_turn(
                request,
                body.stream,
                messages,
                key,
                principal.user_id,
                project,
                body.metadata,
                bool(body.stream_options and body.stream_options.include_usage),
            )
        backend, model = await _routing(backends, body.model)
    except OpenAIError as exc:
        return exc.response()
    command = SubmitChat(
        command_id=new_id(),
        issued_at=utcnow(),
        correlation_id=getattr(request.state, "request_id", None),
        thread_id=session_thread_id(principal.user_id, key),
        job_id=new_id(),
        session_key=key,
        messages=messages,
        channel="api",
        user_id=principal.user_id,
        model=model,
        backend=backend,
        max_tokens=max_tokens,
        temperature=body.temperature,
        project=project,
        origin={"session_named": "true" if named else "false"},
    )
    turn = ChatTurn(bus, commands, command)
    headers = {SESSION_HEADER: key, THREAD_HEADER: command.thread_id}
    try:
        await turn.__aenter__()
    except (BusUnavailable, BadReply) as exc:
        return _bus_error(exc).response()
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return StreamingResponse(
            _sse(turn, settings.hermes_chat_timeout_seconds, body.model, include_usage),
            media_type="text/event-stream",
            headers={**headers, "Cache-Control": "no-cache"},
        )
    try:
        result = None
        async for piece in turn.replies(settings.hermes_chat_timeout_seconds, streaming=False):
            if isinstance(piece, TurnResult):
                result = piece
    except TurnFailed as exc:
        return OpenAIError(502, f"The model call failed: {exc.message}", "api_error", exc.code).response()
    except TimeoutError:
        return OpenAIError(504, "No reply within HERMES_CHAT_TIMEOUT_SECONDS.", "api_error", "timeout").response()
    finally:
        await turn.__aexit__(None, None, None)
    assert result is not None
    log.info("chat_completion", session_id=command.thread_id, job_id=command.job_id, backend=result.backend)
    return JSONResponse(completion(result, body.model), headers=headers)


def usage(result: TurnResult) -> dict[str, int]:
    return {
        "prompt_tokens": result.prompt_tokens,
        "completion_tokens": result.completion_tokens,
        "total_tokens": result.prompt_tokens + result.completion_tokens,
    }


def completion(result: TurnResult, model: str) -> dict[str, Any]:
    """OpenAI's ``chat.completion`` object for a finished turn (``model``: as the caller named it; the backend
    that answered is in ``system_fingerprint``)."""
    return completion_body(
        f"chatcmpl-{result.job_id}",
        model,
        f"hermes:{result.backend}:{result.model}",
        result.text,
        _finish(result.finish_reason),
        usage(result),
    )


def completion_body(
    completion_id: str, model: str, fingerprint: str, text: str, finish: str, counts: dict[str, int]
) -> dict[str, Any]:
    """OpenAI's ``chat.completion`` object: one choice with ``text``, ``counts`` as its ``usage`` (tokens)."""
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": fingerprint,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None, "finish_reason": finish}
        ],
        "usage": counts,
    }


def _finish(reason: str) -> str:
    return reason if reason in ("stop", "length", "content_filter") else "stop"


def chunk(
    chunk_id: str,
    model: str,
    delta: dict,
    finish: str | None = None,
    extra: dict | None = None,
    created: int | None = None,
) -> str:
    """One SSE ``data:`` line of a ``chat.completion.chunk`` (``created``: the stream's, the same on every chunk)."""
    body = {
        "id": chunk_id,
        "object": "chat.completion.chunk",
        "created": created or int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        **(extra or {}),
    }
    return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"


def usage_chunk(chunk_id: str, model: str, created: int, counts: dict[str, int]) -> str:
    """OpenAI's last chunk with ``stream_options.include_usage``: no choices, the whole stream's ``usage``."""
    body = {
        "id": chunk_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [],
        "usage": counts,
    }
    return f"data: {json.dumps(body)}\n\n"


def error_event(exc: OpenAIError) -> str:
    return f"data: {json.dumps({'error': {'message': exc.message, 'type': exc.type, 'param': exc.param, 'code': exc.code}})}\n\n"


async def _sse(turn: ChatTurn, timeout_s: float, model: str, include_usage: bool) -> AsyncIterator[str]:
    """The stream as OpenAI sends it: a first chunk with the role, one per text piece, one with ``finish_reason``;
    with ``stream_options.include_usage`` every chunk has ``"usage": null`` and a last one without choices carries
    the usage; then ``[DONE]``. A failure mid-stream is an ``error`` event (OpenAI's streaming error shape) before
    ``[DONE]``."""
    chunk_id, created = f"chatcmpl-{turn.command.job_id}", int(time.time())
    extra = {"usage": None} if include_usage else None
    try:
        yield chunk(chunk_id, model, {"role": "assistant", "content": ""}, None, extra, created)
        async for piece in turn.replies(timeout_s):
            if isinstance(piece, str):
                yield chunk(chunk_id, model, {"content": piece}, None, extra, created)
            else:
                yield chunk(chunk_id, model, {}, _finish(piece.finish_reason), extra, created)
                if include_usage:
                    yield usage_chunk(chunk_id, model, created, usage(piece))
    except TurnFailed as exc:
        yield error_event(OpenAIError(502, f"The model call failed: {exc.message}", "api_error", exc.code))
    except TimeoutError:
        yield error_event(OpenAIError(504, "No reply within HERMES_CHAT_TIMEOUT_SECONDS.", "api_error", "timeout"))
    finally:
        await turn.__aexit__(None, None, None)
    yield "data: [DONE]\n\n"
