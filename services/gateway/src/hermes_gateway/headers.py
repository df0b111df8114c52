"""Security headers on every HTTP response of the gateway (web UI, API, SSE, errors, CORS preflights).

``Content-Security-Policy``: the web UI's script, styles and data come from the gateway itself only, no inline
script, style or event handler (the page has none: :mod:`hermes_gateway.routes.ui`), no plugins, no ``<base>``,
forms post here, and no page may frame it (``frame-ancestors 'none'``, with ``X-Frame-Options: DENY`` for
browsers without CSP 2). FastAPI's interactive docs (``/docs``, ``/redoc``) load their bundles from a CDN with an
inline start-up script, so they get :data:`DOCS_CSP`, which allows those and still forbids framing.
``X-Content-Type-Options: nosniff`` (a response is only what its type says) and ``Referrer-Policy: no-referrer``
(no thread id leaves in a ``Referer``). A header the route set itself is kept.
"""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
DOCS_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net https://fonts.googleapis.com; "
    "font-src 'self' https://fonts.gstatic.com; img-src 'self' data: https://fastapi.tiangolo.com https://cdn.redoc.ly; "
    "worker-src 'self' blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)
DOCS_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc"})
COMMON = (
    ("X-Frame-Options", "DENY"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
)


class SecurityHeaders:
    """ASGI middleware adding the headers above to each ``http.response.start``; a plain ASGI middleware, so
    streaming responses (SSE) pass through untouched."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        policy = DOCS_CSP if scope["path"] in DOCS_PATHS else CSP

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in (("Content-Security-Policy", policy), *COMMON):
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, with_headers)
