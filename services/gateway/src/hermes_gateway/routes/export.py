"""Training exports of the captured sessions as JSONL (``hermes export`` reads these).

``GET /api/export/sft?format=openai|sharegpt`` writes one record per completed turn: OpenAI's chat fine-tuning
format (``{"messages": [...]}``, the prompt as sent plus the reply as the assistant message) or ShareGPT
(``{"id", "conversations": [{"from": "system"|"human"|"gpt", "value"}]}``). ``GET /api/export/dpo`` writes
preference pairs ``{"prompt", "chosen", "rejected", "thread_id", "rating"}`` (see
:func:`hermes_orchestrator.sessions.export_page` for which drafts pair up). Filters: ``since``/``until`` (ISO dates,
UTC, inclusive), ``channel``, ``min_rating``. Every record comes from the orchestrator's read model, a pure
function of the log: the same log gives the same bytes. Guests get 403; while auth is on, only the principal's
turns are exported.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from hermes_proto.rpc import Refused
from hermes_proto.sessions import ExportQuery, ExportReply, export_day

from hermes_gateway.adapters import SessionsClient
from hermes_gateway.auth import auth_enabled
from hermes_gateway.deps import WriterDep
from hermes_gateway.envelope import ApiError
from hermes_gateway.routes.sessions import CHANNEL, SessionsDep

router = APIRouter(prefix="/api/export", tags=["export"])
DATE = r"^\d{4}-\d{2}-\d{2}$"


@router.get("/{kind}", response_class=StreamingResponse)
async def export(
    kind: Literal["sft", "dpo"],
    sessions: SessionsDep,
    principal: WriterDep,
    format: Literal["openai", "sharegpt"] = "openai",  # noqa: A002 (the query parameter's name)
    since: Annotated[str | None, Query(pattern=DATE)] = None,
    until: Annotated[str | None, Query(pattern=DATE)] = None,
    channel: Annotated[str | None, Query(pattern=CHANNEL)] = None,
    min_rating: Annotated[int | None, Query(ge=1, le=5)] = None,
) -> StreamingResponse:
    """JSONL (``application/x-ndjson``), one record per line, as an attachment ``hermes-<kind>.jsonl``.
    400 ``invalid_date`` on an impossible date or one outside ``hermes_proto.sessions.EXPORT_DAYS`` (2000-01-01 to
    2999-12-31); 400 ``bad_request`` when the orchestrator refuses the query."""
    for field, value in (("since", since), ("until", until)):
        try:
            export_day(value, field)
        except ValueError as exc:
            raise ApiError(400, "invalid_date", str(exc), details={"field": field}) from None
    query = ExportQuery(
        format="dpo" if kind == "dpo" else format,
        since=since,
        until=until,
        channel=channel,
        min_rating=min_rating,
        user_id=principal.user_id if auth_enabled(principal) else None,
    )
    try:
        first = await sessions.export(query)
    except Refused as exc:
        raise ApiError(400, "bad_request", exc.message) from None
    name = f"hermes-{kind}{'-' + format if kind == 'sft' else ''}.jsonl"
    return StreamingResponse(
        _lines(sessions, query, first),
        media_type="application/x-ndjson",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


async def _lines(sessions: SessionsClient, query: ExportQuery, page: ExportReply) -> AsyncIterator[str]:
    while True:
        for line in page.lines:
            yield line + "\n"
        if page.next_after is None:
            return
        query.after = page.next_after
        page = await sessions.export(query)
