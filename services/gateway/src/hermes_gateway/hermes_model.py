"""The model ``hermes`` of the OpenAI-compatible API: Hermes's own idea flow behind a chat completion.

A message in a session with no thread waiting for answers is an idea: ``SubmitIdea`` (origin ``session_key``), and
the reply is draft 1 followed by its clarifying questions, numbered. The next message of the same session answers
them (``1. …`` lines answer the question of that number; text without numbers answers the first question):
``AnswerQuestions``, and the reply is draft 2. Everything runs through the real bus like any submission.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator

from fastapi import Request
from fastapi.responses import JSONResponse, StreamingResponse

from hermes_proto.base import ChatMessage
from hermes_proto.commands import AnswerQuestions, SubmitIdea
from hermes_proto.events import Answer
from hermes_proto.ids import new_id, utcnow
from hermes_proto.queries import ThreadView
from hermes_proto.rpc import BadReply, BusUnavailable
from hermes_proto.text import TextRefused, clean_text, normalize_text
from hermes_proto.threads import IDEA

from hermes_gateway.live import ThreadFeed

HERMES_MODEL = "hermes"
QUESTIONS_INTRO = "To make this better, answer in your next message (one numbered line per question):"
NUMBERED = re.compile(r"^\s*(\d{1,2})[.):-]\s*(.+?)\s*$")


def parse_answers(text: str, questions: list[str]) -> list[tuple[int, str]]:
    """``(question index, answer)`` pairs from a reply: numbered lines answer the question of their number (1-based;
    numbers out of range are ignored); text without any numbered line answers the first question."""
    numbered = [(int(m.group(1)) - 1, m.group(2)) for m in map(NUMBERED.match, text.splitlines()) if m]
    if numbered:
        return [(i, a) for i, a in numbered if 0 <= i < len(questions)]
    return [(0, text.strip())] if questions and text.strip() else []


def questions_text(questions: list[str]) -> str:
    if not questions:
        return ""
    return "\n\n" + QUESTIONS_INTRO + "\n" + "\n".join(f"{i}. {q}" for i, q in enumerate(questions, 1))


async def _waiting_thread(request: Request, key: str, user_id: str) -> ThreadView | None:
    threads = await request.app.state.read_model.threads(5, user_id=user_id, origin={"session_key": key})
    return next((t for t in threads if t.user_id == user_id and t.kind == IDEA and t.answerable), None)


async def run_hermes_turn(
    request: Request,
    stream: bool,
    messages: list[ChatMessage],
    key: str,
    user_id: str,
    project: str,
    include_usage: bool = False,
):
    """Run one turn of the ``hermes`` model and answer it in OpenAI's format (``stream``: as SSE chunks). The
    response headers ``X-Hermes-Session-Id`` (the key) and ``X-Hermes-Thread-Id`` (the idea thread) say where it
    went. An idea obeys the same input length and queue cap as ``POST /api/submit``."""
    from hermes_gateway.admission import admitted
    from hermes_gateway.envelope import ApiError
    from hermes_gateway.routes.openai import OpenAIError, completion_body  # one place for the wire format

    state = request.app.state
    typed = next(m.content for m in reversed(messages) if m.role == "user")
    text = normalize_text(typed)
    try:
        waiting = await _waiting_thread(request, key, user_id)
    except (BusUnavailable, BadReply) as exc:
        return OpenAIError(503, f"Hermes is not answering: {exc}", "api_error", "service_unavailable").response()
    if len(text) > state.settings.hermes_max_input_length:
        return OpenAIError(
            400,
            f"The message is over {state.settings.hermes_max_input_length} characters (HERMES_MAX_INPUT_LENGTH).",
            code="input_too_long",
            param="messages",
        ).response()
    if waiting is not None:
        thread_id = waiting.thread_id
        pairs = parse_answers(text, [q.text for q in waiting.questions])
        if not pairs:
            return OpenAIError(
                400,
                f"No answer to any of the {len(waiting.questions)} questions: number each answer like '1. …'.",
                code="no_answers",
                param="messages",
            ).response()
        command = AnswerQuestions(
            command_id=new_id(),
            issued_at=utcnow(),
            thread_id=thread_id,
            answers=[Answer(question_id=waiting.questions[i].question_id, text=a) for i, a in pairs],
        )
        until = {"thread_completed", "thread_failed"}
    else:
        try:
            clean_text(typed, "idea")
        except TextRefused as refused:
            code = "empty_idea" if refused.reason == "empty" else "invisible_idea"
            return OpenAIError(400, str(refused), code=code, param="messages").response()
        thread_id = new_id()
        command = SubmitIdea(
            command_id=new_id(),
            issued_at=utcnow(),
            thread_id=thread_id,
            idea=text,
            channel="api",
            user_id=user_id,
            origin={"session_key": key},
            project=project,
        )
        until = {"questions_proposed", "thread_completed", "thread_failed"}
    feed = ThreadFeed(state.bus, thread_id, start_after=None)  # from now: the command is not yet sent
    try:
        async with admitted(request, new_jobs=1 if isinstance(command, SubmitIdea) else 0) as hold:
            await feed.open()
            hold.bind(await state.commands.send(command))
    except ApiError as exc:  # queue_full (429) or queue_unknown (503)
        await feed.close()
        kind = "rate_limit_error" if exc.status_code == 429 else "api_error"
        return OpenAIError(exc.status_code, exc.message, kind, exc.code).response()
    except (BusUnavailable, BadReply) as exc:
        await feed.close()
        return OpenAIError(503, f"Hermes is not answering: {exc}", "api_error", "service_unavailable").response()
    timeout_s = state.settings.hermes_chat_timeout_seconds
    pieces = _flow(feed, until, timeout_s, request)
    chunk_id = f"chatcmpl-{command.command_id}"
    headers = {"X-Hermes-Session-Id": key, "X-Hermes-Thread-Id": thread_id}
    if stream:
        return StreamingResponse(_sse(pieces, chunk_id, include_usage), media_type="text/event-stream", headers=headers)
    content, usage = "", {"prompt_tokens": 0, "completion_tokens": 0}
    try:
        async for piece in pieces:
            if isinstance(piece, dict):
                usage = piece
            elif piece.startswith("\0"):
                content = piece[1:]
    except _Failed as exc:
        return OpenAIError(502, exc.message, "api_error", exc.code).response()
    except TimeoutError:
        return OpenAIError(504, "No reply within HERMES_CHAT_TIMEOUT_SECONDS.", "api_error", "timeout").response()
    usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
    return JSONResponse(completion_body(chunk_id, HERMES_MODEL, "hermes:flow", content, "stop", usage), headers=headers)


class _Failed(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


async def _flow(feed: ThreadFeed, until: set[str], timeout_s: float, request: Request) -> AsyncIterator[str | dict]:
    """Streamed draft tokens (str), then ``"\\0" + the whole reply`` and the usage dict. Raises :class:`_Failed`."""
    import asyncio

    draft, usage = "", {"prompt_tokens": 0, "completion_tokens": 0}
    try:
        async with asyncio.timeout(timeout_s):
            async for item in feed.items():
                data = json.loads(item.data)
                if item.event == "token":
                    yield data["text"]
                elif item.event == "draft_presented":
                    draft = data["text"]
                    usage["prompt_tokens"] += data.get("prompt_tokens", 0)
                    usage["completion_tokens"] += data.get("completion_tokens", 0)
                elif item.event == "thread_failed":
                    raise _Failed(data["error_code"], data["message"])
                if item.event in until:
                    questions: list[str] = []
                    view = await request.app.state.read_model.thread(feed.thread_id, min_sequence=int(item.id))
                    if item.event == "questions_proposed":
                        questions = [q.text for q in view.questions] if view else []
                    elif view is not None and view.final_draft_number:  # e.g. draft 2 failed: draft 1 stands
                        draft = (view.draft2 if view.final_draft_number == 2 else view.draft1) or draft
                    tail = questions_text(questions)
                    if tail:
                        yield "\0\0" + tail
                    yield "\0" + draft + tail
                    yield usage
                    return
    finally:
        await feed.close()


async def _sse(pieces: AsyncIterator[str | dict], chunk_id: str, include_usage: bool) -> AsyncIterator[str]:
    """The same chunk stream as :func:`hermes_gateway.routes.openai._sse` (role, text pieces, finish, the usage
    chunk with ``include_usage``, ``[DONE]``)."""
    from hermes_gateway.routes.openai import OpenAIError, chunk, error_event, usage_chunk

    created = int(time.time())
    extra = {"usage": None} if include_usage else None
    yield chunk(chunk_id, HERMES_MODEL, {"role": "assistant", "content": ""}, None, extra, created)
    try:
        async for piece in pieces:
            if isinstance(piece, dict):
                piece["total_tokens"] = piece["prompt_tokens"] + piece["completion_tokens"]
                yield chunk(chunk_id, HERMES_MODEL, {}, "stop", extra, created)
                if include_usage:
                    yield usage_chunk(chunk_id, HERMES_MODEL, created, piece)
            elif piece.startswith("\0\0"):
                yield chunk(chunk_id, HERMES_MODEL, {"content": piece[2:]}, None, extra, created)
            elif not piece.startswith("\0"):
                yield chunk(chunk_id, HERMES_MODEL, {"content": piece}, None, extra, created)
    except _Failed as exc:
        yield error_event(OpenAIError(502, exc.message, "api_error", exc.code))
    except TimeoutError:
        yield error_event(OpenAIError(504, "No reply within HERMES_CHAT_TIMEOUT_SECONDS.", "api_error", "timeout"))
    yield "data: [DONE]\n\n"
