"""Threads: list, status, answers (``/continue``), learned optimisations (``/optimize``: answers the learner settles
over ``hermes.query.optimizations``) and job results, read from the orchestrator's read models over
``hermes.query.*``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, StrictStr

from hermes_proto.commands import AnswerQuestions, CancelJob, RateThread
from hermes_proto.events import Answer
from hermes_proto.ids import new_id, utcnow
from hermes_proto.queries import MAX_SEQUENCE, ThreadView
from hermes_proto.threads import ThreadStatus

from hermes_gateway.accepted import thread_or_accepted
from hermes_gateway.auth import Principal, auth_enabled, visible
from hermes_gateway.deps import (
    AcceptedDep,
    CommandsDep,
    JobId,
    LearnerDep,
    PrincipalDep,
    ReadModelDep,
    SettingsDep,
    ThreadId,
    job_not_found,
    thread_not_found,
)
from hermes_gateway.domain import check_answerable, check_ratable, clean_answers
from hermes_gateway.envelope import ApiError, success
from hermes_gateway.routes.ideas import thread_links

router = APIRouter(prefix="/api/threads", tags=["threads"])


class AnswerIn(BaseModel):
    question_id: StrictStr = Field(min_length=1, max_length=128)
    text: StrictStr


class ContinueRequest(BaseModel):
    """``answers``: ``[{"question_id", "text"}, ...]`` or ``{"<question_id>": "text", ...}``; empty texts
    are dropped (an unanswered question)."""

    answers: list[AnswerIn] | dict[StrictStr, StrictStr]


class RateRequest(BaseModel):
    """``rating``: 1 (useless) to 5 (just right); ``comment``: optional free text (characters, at most 2000)."""

    rating: int = Field(ge=1, le=5, strict=True)
    comment: StrictStr = Field(default="", max_length=2000)


async def _existing_thread(
    read_model: ReadModelDep,
    accepted: AcceptedDep,
    thread_id: str,
    min_sequence: int | None = None,
    principal: Principal | None = None,
) -> ThreadView:
    """The thread as the orchestrator shows it once it applied ``min_sequence`` (None: the log's end now), or as
    ``accepted`` while only this gateway knows it (:mod:`hermes_gateway.accepted`); 404 ``thread_not_found`` when
    neither (or another user's)."""
    thread = await thread_or_accepted(read_model, accepted, thread_id, min_sequence)
    if thread is None or (principal is not None and not visible(principal, thread.user_id)):
        raise thread_not_found(thread_id)
    return thread


LIST_MAX = 200
"""The largest page of ``GET /api/threads``, and how many of the newest threads a ``status`` filter looks at."""


@router.get("")
async def list_threads(
    request: Request,
    read_model: ReadModelDep,
    principal: PrincipalDep,
    limit: Annotated[int, Query(ge=1, le=LIST_MAX)] = 50,
    status: ThreadStatus | None = None,
) -> JSONResponse:
    """The most recent threads (``ThreadView``), newest first: ``{"threads": [...], "count"}``; while auth is on,
    only the principal's own. ``status`` (a :data:`hermes_proto.threads.ThreadStatus`): only threads in that
    status among the newest 200 (the orchestrator's query filters by user and origin only). Errors: 422
    ``validation_failed`` (``details`` names the valid statuses), 503 ``bus_unavailable``."""
    fetch = LIST_MAX if status is not None else limit
    if auth_enabled(principal):
        threads = [
            t for t in await read_model.threads(fetch, user_id=principal.user_id) if t.user_id == principal.user_id
        ]
    else:
        threads = await read_model.threads(fetch)
    threads = [t for t in threads if status in (None, t.status)][:limit]
    return success(request, {"threads": threads, "count": len(threads)})


@router.get("/{thread_id}/status")
async def thread_status(
    thread_id: ThreadId,
    request: Request,
    read_model: ReadModelDep,
    accepted: AcceptedDep,
    principal: PrincipalDep,
    min_sequence: Annotated[int, Query(ge=0, le=MAX_SEQUENCE)] = 0,
) -> JSONResponse:
    """The thread's ``ThreadView`` (status, drafts, questions, jobs). ``min_sequence``: read-your-writes,
    e.g. the last SSE id seen; by default the last event this gateway's feed delivered, so the state includes
    every event a client may already have seen on this gateway's SSE streams (with several gateways, pass the
    last SSE id). A thread whose submission this gateway accepted (202) but that the orchestrator does not show yet
    (its command waits, the orchestrator restarts or is busy) answers 200 with status ``accepted``: its idea,
    channel, user and submission time, no jobs yet. Errors: 404 ``thread_not_found``, 400 ``invalid_id``, 503
    ``bus_unavailable``."""
    position = min_sequence or read_model.seen_position()
    return success(request, await _existing_thread(read_model, accepted, thread_id, position, principal))


@router.post("/{thread_id}/continue", status_code=202)
async def continue_thread(
    thread_id: ThreadId,
    body: ContinueRequest,
    request: Request,
    settings: SettingsDep,
    read_model: ReadModelDep,
    accepted: AcceptedDep,
    commands: CommandsDep,
    principal: PrincipalDep,
) -> JSONResponse:
    """Publish ``AnswerQuestions`` for a thread that is ``awaiting_answers``.

    202 ``{"thread_id", "answered", "status_url", "events_url"}``. Errors: 400 ``no_answers``,
    ``duplicate_question``, ``unknown_question``; 413 ``answer_too_long``; 404 ``thread_not_found``;
    409 ``not_awaiting_answers``; 503 ``bus_unavailable``. Nothing is published on any of them."""
    raw = body.answers if isinstance(body.answers, dict) else [(a.question_id, a.text) for a in body.answers]
    answers = clean_answers(raw, settings.hermes_max_input_length)
    # Validate against a state at least as new as what the client saw: its questions arrived by SSE
    # straight from the log, possibly before the orchestrator's read model applied them.
    check_answerable(await _existing_thread(read_model, accepted, thread_id, None, principal), answers)
    await commands.send(
        AnswerQuestions(
            command_id=new_id(),
            issued_at=utcnow(),
            correlation_id=request.state.request_id,
            thread_id=thread_id,
            answers=answers,
        )
    )
    return success(request, {**thread_links(thread_id), "answered": [a.question_id for a in answers]}, status_code=202)


@router.post("/{thread_id}/optimize")
async def optimize_thread(
    thread_id: ThreadId,
    request: Request,
    read_model: ReadModelDep,
    accepted: AcceptedDep,
    learner: LearnerDep,
    commands: CommandsDep,
    principal: PrincipalDep,
) -> JSONResponse:
    """Apply what Hermes learned to a thread that is ``awaiting_answers``: the learner says which open questions
    the user's usable preferences (confidence >= ``HERMES_CONFIDENCE_THRESHOLD``, unexpired) and applied
    ``recurring_answer`` patterns answer, and which applied ``skip_question`` patterns let stay open; the answers
    are sent as ``AnswerQuestions`` (as ``/continue``; marked ``assumed``, so the learner never learns from them),
    which moves the thread on to draft 2.

    200 ``{"thread_id", "applied": [{"kind" (preference, recurring_answer, skip_question), "question_id",
    "category", "answer" (null for skip_question), "source_id" (preference or pattern id), "source_ids",
    "confidence" (0-1), "reason"}], "continued" (answers were sent), "reason", "status_url", "events_url"}``.
    Nothing applicable (or learning disabled): ``applied`` empty, ``continued`` false, the thread keeps waiting.
    Errors: 404 ``thread_not_found``, 409 ``not_awaiting_answers``, 400 ``invalid_id``, 503 ``bus_unavailable``."""
    position = await read_model.log_position()
    thread = await _existing_thread(read_model, accepted, thread_id, position, principal)
    check_answerable(thread, [])
    reply = await learner.optimizations(thread_id, position)
    open_ids = {q.question_id for q in thread.questions if q.answer is None}
    applied = [o for o in reply.optimizations if o.question_id in open_ids]
    answers = [Answer(question_id=o.question_id, text=o.answer, assumed=True) for o in applied if o.answer]
    if answers:
        await commands.send(
            AnswerQuestions(
                command_id=new_id(),
                issued_at=utcnow(),
                correlation_id=request.state.request_id,
                thread_id=thread_id,
                answers=answers,
            )
        )
    return success(
        request,
        {
            **thread_links(thread_id),
            "applied": applied,
            "continued": bool(answers),
            "reason": _optimized(reply.learning_enabled, reply.reason, len(answers), len(applied)),
        },
    )


def _optimized(learning_enabled: bool, learner_reason: str, answered: int, applied: int) -> str:
    """The sentence of an optimize response."""
    if not learning_enabled:
        return "learning disabled"
    if not applied:
        return learner_reason or "nothing learned settles the open questions"
    if not answered:
        return "only questions the user leaves unanswered: the thread keeps waiting for answers"
    return f"answered {answered} open question(s) from what was learned; the thread continues"


@router.post("/{thread_id}/rate", status_code=202)
async def rate_thread(
    thread_id: ThreadId,
    body: RateRequest,
    request: Request,
    read_model: ReadModelDep,
    accepted: AcceptedDep,
    commands: CommandsDep,
    principal: PrincipalDep,
) -> JSONResponse:
    """Publish ``RateThread`` for a completed thread; a later rating replaces an earlier one.

    202 ``{"thread_id", "rating", "status_url", "events_url"}``. Errors: 422 ``validation_failed`` (rating
    not an integer 1-5), 404 ``thread_not_found``, 409 ``not_completed``, 503 ``bus_unavailable``. Nothing is published
    on any of them."""
    check_ratable(await _existing_thread(read_model, accepted, thread_id, None, principal))
    await commands.send(
        RateThread(
            command_id=new_id(),
            issued_at=utcnow(),
            correlation_id=request.state.request_id,
            thread_id=thread_id,
            rating=body.rating,
            comment=body.comment,
        )
    )
    return success(request, {**thread_links(thread_id), "rating": body.rating}, status_code=202)


@router.get("/{thread_id}/jobs/{job_id}/result")
async def job_result(thread_id: ThreadId, job_id: JobId, request: Request, read_model: ReadModelDep) -> JSONResponse:
    """One job's ``JobView`` (status, backend, model, tokens, latency ms, text). Errors: 404 ``job_not_found``."""
    job = await read_model.job(thread_id, job_id)
    if job is None:
        raise job_not_found(thread_id, job_id)
    return success(request, job)


@router.post("/{thread_id}/jobs/{job_id}/cancel", status_code=202)
async def cancel_job(
    thread_id: ThreadId, job_id: JobId, request: Request, read_model: ReadModelDep, commands: CommandsDep
) -> JSONResponse:
    """Publish ``CancelJob`` for an open job: a queued job is never dispatched, a running model call is stopped
    at its edge; the thread then moves on as after a failed job (a cancelled draft 1 fails the thread, a
    workflow skips the steps depending on it).

    202 ``{"thread_id", "job_id", "status_url", "events_url"}``. Errors: 404 ``job_not_found``, 409
    ``job_not_cancellable`` (it already completed, failed or was cancelled; ``details.status``), 503
    ``bus_unavailable``."""
    job = await read_model.job(thread_id, job_id)
    if job is None:
        raise job_not_found(thread_id, job_id)
    if not job.cancellable:
        raise ApiError(
            409,
            "job_not_cancellable",
            f"Job {job_id} is {job.status}; only an open job can be cancelled.",
            details={"job_id": job_id, "status": job.status},
        )
    await commands.send(
        CancelJob(
            command_id=new_id(),
            issued_at=utcnow(),
            correlation_id=request.state.request_id,
            thread_id=thread_id,
            job_id=job_id,
        )
    )
    return success(request, {**thread_links(thread_id), "job_id": job_id}, status_code=202)
