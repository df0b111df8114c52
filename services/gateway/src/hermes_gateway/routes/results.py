"""``GET /api/threads/{thread_id}/result?format=md|json``: a thread's result as a file to download."""

from __future__ import annotations

from typing import Annotated

import msgspec
from fastapi import APIRouter, Query
from fastapi.responses import Response

from hermes_proto.queries import JobView, ThreadView

from hermes_gateway.auth import visible
from hermes_gateway.deps import PrincipalDep, ReadModelDep, ThreadId, thread_not_found
from hermes_gateway.envelope import ApiError

router = APIRouter(prefix="/api/threads", tags=["results"])

MEDIA_TYPES = {"md": "text/markdown; charset=utf-8", "json": "application/json"}


# Not in the OpenAPI schema: a 200 is a file, not the success envelope every documented operation answers with.
@router.get("/{thread_id}/result", include_in_schema=False)
async def thread_result(
    thread_id: ThreadId, read_model: ReadModelDep, principal: PrincipalDep, format: Annotated[str, Query()] = "md"
) -> Response:  # noqa: A002 - the query's name
    """The thread as an attachment (``Content-Disposition: attachment; filename="hermes-<thread_id>.<format>"``):
    ``md``: Markdown with the idea, the drafts, the questions and answers and a table of the jobs (backend,
    model, tokens, cost in cents, latency in ms); ``json``: the thread's ``ThreadView`` as in
    ``GET /api/threads/{thread_id}/status``. The state includes every event this gateway has shown. While auth
    is on, only the principal's own threads. Errors: 400 ``invalid_format``, 400 ``invalid_id``, 404
    ``thread_not_found`` (also another user's), 503 ``bus_unavailable``."""
    if format not in MEDIA_TYPES:
        raise ApiError(
            400,
            "invalid_format",
            f"No result format {format[:20]!r}.",
            details={"format": format[:20]},
            user_action="Ask for format=md (Markdown) or format=json.",
        )
    thread = await read_model.thread(thread_id, read_model.seen_position())
    if thread is None or not visible(principal, thread.user_id):
        raise thread_not_found(thread_id)
    body = msgspec.json.format(msgspec.json.encode(thread)) if format == "json" else markdown(thread).encode()
    return Response(
        body,
        media_type=MEDIA_TYPES[format],
        headers={"Content-Disposition": f'attachment; filename="hermes-{thread_id}.{format}"'},
    )


def markdown(thread: ThreadView) -> str:
    """The thread as a Markdown document: title, idea, draft 1, questions with answers, draft 2, jobs."""
    lines = [
        f"# Hermes thread {thread.thread_id}",
        "",
        f"Status: {thread.status}"
        + (f" ({thread.completion_reason})" if thread.completion_reason else "")
        + (f" · rated {thread.rating}/5" if thread.rating else "")
        + f" · created {thread.created_at.isoformat()}",
        "",
        "## Idea",
        "",
        thread.idea,
        "",
    ]
    for number, text in ((1, thread.draft1), (2, thread.draft2)):
        if number == 2 and thread.questions:
            lines += _questions(thread)
        if text:
            final = " (final)" if thread.final_draft_number == number else ""
            lines += [f"## Draft {number}{final}", "", text, ""]
    if thread.questions and not thread.draft2:
        lines += _questions(thread)
    lines += _jobs(thread.jobs)
    return "\n".join(lines).rstrip() + "\n"


def _questions(thread: ThreadView) -> list[str]:
    lines = ["## Questions and answers", ""]
    for q in thread.questions:
        lines += [f"- **{q.text}** ({q.category})", f"  - Answer: {q.answer if q.answer else '(not answered)'}"]
    return [*lines, ""]


def _cell(value: object) -> str:
    # A table cell is one line, and a '|' inside it would end the cell.
    return "–" if value is None else " ".join(str(value).split()).replace("|", "\\|")


def _jobs(jobs: list[JobView]) -> list[str]:
    lines = [
        "## Jobs",
        "",
        "| Job | Kind | Status | Backend | Model | Prompt tokens | Completion tokens | Cost (cents) | Time (ms) |",
        "|---|---|---|---|---|---:|---:|---:|---:|",
    ]
    for j in jobs:
        latency = round(j.latency_ms) if j.latency_ms is not None else None
        lines.append(
            "| "
            + " | ".join(
                _cell(v)
                for v in (
                    j.job_id,
                    j.kind,
                    j.status,
                    j.backend,
                    j.model,
                    j.prompt_tokens,
                    j.completion_tokens,
                    f"{j.cost_cents:.4f}",
                    latency,
                )
            )
            + " |"
        )
    if not jobs:
        lines.append("| – | | | | | | | | |")
    return [*lines, ""]
