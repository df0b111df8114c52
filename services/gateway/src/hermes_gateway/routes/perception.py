"""Perception events: an outside system (a perception loop, "the Nexus") reports something that happened and gets
Hermes's response, over HTTP (``POST /api/perception/events``) or NATS request/reply (``hermes.perception.<source>``).

Each event becomes one chat turn in the persistent session of its source (session key ``perception:<source>``,
channel ``perception``): the event as JSON is the user message, the last turns of that session come with it as
history (at most :data:`HISTORY_TURNS`), and the orchestrator adds SOUL.md and memories as for every channel. The
reply is the model's response; the turn is captured like any other.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import msgspec
import structlog
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse
from prometheus_client import Counter

from hermes_proto import subjects
from hermes_proto.base import ChatMessage
from hermes_proto.commands import SubmitChat
from hermes_proto.ids import new_id, utcnow
from hermes_proto.rpc import BUS_ERRORS, BadReply, BusUnavailable, Refused

from hermes_gateway.chat import ChatTurn, TurnFailed, TurnResult, session_thread_id
from hermes_gateway.deps import WriterDep
from hermes_gateway.envelope import ApiError, success

log = structlog.get_logger("hermes.gateway")
router = APIRouter(prefix="/api/perception", tags=["perception"])

SOURCE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
EVENT_TYPE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
HISTORY_TURNS = 6
MAX_CONCURRENT = 32
"""Perception events from NATS handled at once; more wait their turn (each holds a live view of its session)."""
MAX_EVENT_CHARS = 20_000
INSTRUCTION = (
    "An event was perceived by {source}. Respond to it as Hermes: say briefly what it means and what, "
    "if anything, should be done."
)
PERCEPTION_EVENTS = Counter(
    "hermes_gateway_perception_events_total", "Perception events, by transport and outcome", ["transport", "outcome"]
)


class PerceptionError(Exception):
    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


def check_event(event: Any, source: str) -> dict[str, Any]:
    """The event, checked: a JSON object with a string ``type`` (1-64 of ``[A-Za-z0-9_.:-]``), a source of 1-64
    ``[A-Za-z0-9_-]`` and at most :data:`MAX_EVENT_CHARS` characters as JSON. Raises :class:`PerceptionError`."""
    if not SOURCE.fullmatch(source):
        raise PerceptionError("invalid_source", "source must be 1-64 letters, digits, '-' or '_'.")
    if not isinstance(event, dict) or not isinstance(event.get("type"), str) or not EVENT_TYPE.fullmatch(event["type"]):
        raise PerceptionError(
            "invalid_event",
            "An event is a JSON object with a string type (1-64 of letters, digits, '_', '.', ':' or '-').",
        )
    if len(json.dumps(event, ensure_ascii=False)) > MAX_EVENT_CHARS:
        raise PerceptionError("event_too_large", f"An event may hold at most {MAX_EVENT_CHARS} characters as JSON.")
    return event


async def perceive(app: FastAPI, event: dict[str, Any], source: str, user_id: str) -> TurnResult:
    """Run ``event`` as a turn of ``source``'s session and return the reply. Raises :class:`TurnFailed`,
    ``TimeoutError`` or :class:`BusUnavailable`."""
    state = app.state
    key = f"perception:{source}"
    thread_id = session_thread_id(user_id, key)
    history = await _history(app, thread_id)
    user = INSTRUCTION.format(source=source) + "\n\n" + json.dumps(event, ensure_ascii=False, sort_keys=True)
    command = SubmitChat(
        command_id=new_id(),
        issued_at=utcnow(),
        thread_id=thread_id,
        job_id=new_id(),
        session_key=key,
        messages=[*history, ChatMessage(role="user", content=user)],
        channel="perception",
        user_id=user_id,
        source_app=source,
        origin={"perception_source": source, "event_type": event["type"]},
    )
    async with ChatTurn(state.bus, state.commands, command) as turn:
        async for piece in turn.replies(state.settings.hermes_chat_timeout_seconds, streaming=False):
            if isinstance(piece, TurnResult):
                return piece
    raise TurnFailed("interrupted", "no reply")


async def _history(app: FastAPI, thread_id: str) -> list[ChatMessage]:
    """The last :data:`HISTORY_TURNS` completed turns of the session as user/assistant pairs (their user message as
    sent, without the system prompt)."""
    view = await app.state.sessions.session(thread_id, app.state.read_model.seen_position(), last_turns=HISTORY_TURNS)
    if view is None:
        return []
    done = [t for t in view.turns if t.reply is not None][-HISTORY_TURNS:]
    history: list[ChatMessage] = []
    for t in done:
        history += [
            ChatMessage(role="user", content=t.messages[-1].content),
            ChatMessage(role="assistant", content=t.reply or ""),
        ]
    return history


def _reply(result: TurnResult) -> dict[str, Any]:
    return {
        "session_id": result.session_id,
        "job_id": result.job_id,
        "reply": result.text,
        "backend": result.backend,
        "model": result.model,
        "latency_ms": result.latency_ms,
        "usage": {"prompt_tokens": result.prompt_tokens, "completion_tokens": result.completion_tokens},
    }


@router.post("/events")
async def post_event(request: Request, principal: WriterDep) -> JSONResponse:
    """Body: the event, a JSON object with ``type`` and any other fields; ``source`` (else the ``X-Hermes-Source``
    header, else ``http``) names the producer. Answers ``{"session_id", "job_id", "reply", "backend", "model",
    "latency_ms", "usage"}`` once the model replied. 400 ``invalid_event`` / ``invalid_source`` /
    ``event_too_large``, 502 with the job's error code when the model call failed, 504 ``timeout``."""
    try:
        event = json.loads(await request.body())
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise ApiError(400, "invalid_json", "The body is not valid JSON.") from None
    source = (event.get("source") if isinstance(event, dict) else None) or request.headers.get(
        "X-Hermes-Source", "http"
    )
    try:
        check_event(event, str(source))
        result = await perceive(request.app, event, str(source), principal.user_id)
    except PerceptionError as exc:
        PERCEPTION_EVENTS.labels("http", "rejected").inc()
        raise ApiError(exc.status, exc.code, exc.message) from None
    except TurnFailed as exc:
        PERCEPTION_EVENTS.labels("http", "failed").inc()
        raise ApiError(502, exc.code, f"The model call failed: {exc.message}") from None
    except TimeoutError:
        PERCEPTION_EVENTS.labels("http", "timeout").inc()
        raise ApiError(504, "timeout", "No reply within HERMES_CHAT_TIMEOUT_SECONDS.") from None
    PERCEPTION_EVENTS.labels("http", "answered").inc()
    return success(request, _reply(result))


async def subscribe(app: FastAPI):  # noqa: ANN201 (a nats subscription)
    """Answer ``hermes.perception.<source>`` (queue group ``gateway``): the JSON event in, ``{"status": "success",
    "data": {...}}`` or ``{"status": "error", "error": {"code", "message"}}`` to the reply subject. Events run
    concurrently; a bad one is answered with its error and logged, never stopping the subscription. Perception
    turns from NATS belong to ``HERMES_PERCEPTION_USER``."""
    tasks: set[asyncio.Task] = set()
    running = asyncio.Semaphore(MAX_CONCURRENT)

    async def handle(msg) -> None:  # noqa: ANN001
        async with running:
            await answer_one(msg)

    async def answer_one(msg) -> None:  # noqa: ANN001
        source = msg.subject.rsplit(".", 1)[-1]
        try:
            event = check_event(json.loads(msg.data), source)
            result = await perceive(app, event, source, app.state.settings.hermes_perception_user)
            answer, outcome = {"status": "success", "data": _reply(result)}, "answered"
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            answer, outcome = _error("invalid_event", f"Not a JSON event: {type(exc).__name__}"), "rejected"
        except PerceptionError as exc:
            answer, outcome = _error(exc.code, exc.message), "rejected"
        except TurnFailed as exc:
            answer, outcome = _error(exc.code, exc.message), "failed"
        except TimeoutError:
            answer, outcome = _error("timeout", "No reply within HERMES_CHAT_TIMEOUT_SECONDS."), "timeout"
        except (BusUnavailable, BadReply, Refused, *BUS_ERRORS) as exc:
            answer, outcome = _error("unavailable", str(exc)), "failed"
        except Exception as exc:  # never leave the producer waiting, never stop the subscription
            log.warning("perception_event_failed", source=source, error=repr(exc))
            answer, outcome = _error("internal", f"{type(exc).__name__}"), "failed"
        PERCEPTION_EVENTS.labels("nats", outcome).inc()
        log.info("perception_event", source=source, outcome=outcome)
        if msg.reply:
            try:
                await msg.respond(msgspec.json.encode(answer))
            except BUS_ERRORS as exc:
                log.warning("perception_reply_failed", source=source, error=repr(exc))

    async def on_message(msg) -> None:  # noqa: ANN001
        task = asyncio.create_task(handle(msg))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    return await app.state.bus.nc.subscribe(subjects.PERCEPTION_ALL, queue="gateway", cb=on_message)


def _error(code: str, message: str) -> dict[str, Any]:
    return {"status": "error", "error": {"code": code, "message": message}}
