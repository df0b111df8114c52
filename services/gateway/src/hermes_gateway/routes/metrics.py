"""``GET /metrics``: Prometheus text exposition of this process (gateway series and the shared bus series)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

router = APIRouter(tags=["system"])


@router.get("/metrics", include_in_schema=False)
async def metrics() -> Response:
    """Every series of the default registry, e.g. ``hermes_gateway_http_requests_total{route,method,status}``."""
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
