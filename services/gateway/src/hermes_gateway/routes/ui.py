"""``GET /``: the single-page web UI (static HTML, vanilla JS and CSS from ``hermes_gateway/static``)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"

router = APIRouter(tags=["ui"])


@router.get("/", include_in_schema=False)
async def index() -> FileResponse:
    """The web UI's page; its script and style are served under ``/static/``."""
    return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})
