"""Who is asking, what they may do, how often and how much: authentication and limits at the gateway's edge.

Credentials: ``Authorization: Bearer <token>`` (a token of ``HERMES_API_TOKENS``) or the web session cookie
``hermes_session`` that ``POST /api/auth/login`` sets. The cookie is signed and timestamped with itsdangerous
(``URLSafeTimedSerializer``) under ``HERMES_SESSION_SECRET``; when that is unset the secret is random per process,
so every web session ends when the gateway restarts. The cookie holds the token's :attr:`Principal.key` and user
id, never the token, and is checked against the configured tokens on every request (removing a token ends its
sessions).

Paths: ``/``, ``/static/...``, ``/api/auth/login``, ``/api/auth/logout`` and ``/api/telegram/webhook`` (its own
secret) are open; ``/api/system/health`` and ``/metrics`` are open unless ``HERMES_PROTECT_HEALTH`` (then any valid
token; ``/metrics`` also takes ``HERMES_METRICS_TOKEN``, and setting that token protects ``/metrics`` by itself);
everything else under ``/api/`` and ``/v1/`` needs credentials: missing or wrong → 401 ``unauthorized`` with
``WWW-Authenticate: Bearer`` and only the error envelope. Paths outside those prefixes (``/openapi.json``,
``/docs``) are open. A guest may only GET/HEAD, and nothing under ``/api/export``, ``/api/config``,
``/api/soul``: 403 ``read_only``.

Limits: ``HERMES_RATE_LIMIT`` per principal (moving window, the ``limits`` library, in memory: per process) →
429 ``rate_limited`` with ``Retry-After`` (whole seconds until the window frees a request). With auth off every
caller is the one principal ``local``, so the limit then applies only when ``HERMES_RATE_LIMIT`` is set
explicitly. ``HERMES_AUTH_FAILURE_LIMIT`` counts wrong tokens and forged cookies per client address; once it is
spent, any request presenting credentials from that address gets 429 until the window frees (so tokens cannot be
guessed at speed); the address is the peer's, or behind a proxy of ``HERMES_TRUSTED_PROXIES`` the one its
``X-Forwarded-For`` names (:mod:`hermes_gateway.proxies`). ``HERMES_MAX_BODY_BYTES``: a larger ``Content-Length``
→ 413 ``payload_too_large`` before the body is read; a body without one is counted as it arrives and refused once
over the limit (never buffered here). CORS (``HERMES_CORS_ORIGINS``) is off unless origins are configured.

With ``HERMES_API_TOKENS`` unset or blank auth is off: every request is :data:`LOCAL` (user ``local``, mode
``user``), the embedded single-user default.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import structlog
from fastapi import FastAPI, Request
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from limits import RateLimitItem
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hermes_gateway.config import GatewaySettings
from hermes_gateway.envelope import ApiError, failure
from hermes_gateway.observability import AUTH_FAILURES, RATE_LIMITED
from hermes_gateway.proxies import TrustedProxies

log = structlog.get_logger("hermes.gateway")

SESSION_COOKIE = "hermes_session"
ADMIN, USER, GUEST = "admin", "user", "guest"
AUTH_OFF_KEY = "auth-off"
KEY_HEX_CHARS = 16
"""A principal key is the first 16 hex characters (64 bits) of the token's SHA-256: enough to tell tokens apart
in rate-limit keys and logs; a long random token cannot be recovered from it."""

OWN_BODY_LIMIT = frozenset({"/api/telegram/webhook"})
"""Routes that bound their own bodies (the webhook answers Telegram's 413 ``update_too_large`` itself)."""
OPEN_PATHS = frozenset({"/", "/api/auth/login", "/api/auth/logout", "/api/telegram/webhook"})
OPEN_PREFIXES = ("/static/",)
HEALTH_PATH = "/api/system/health"
METRICS_PATH = "/metrics"
PROTECTED_PREFIXES = ("/api/", "/v1/")
GUEST_FORBIDDEN = ("/api/export", "/api/config", "/api/soul")
READ_METHODS = frozenset({"GET", "HEAD"})
SESSION_SALT = "hermes-session"


@dataclass(frozen=True)
class Principal:
    """Who a request acts for: ``user_id`` (owner of the threads it submits), ``mode`` (``admin``: everything;
    ``user``: everything but changes that act for every user (SOUL.md, settings, question templates, backends and
    their comparison, dead letters);
    ``guest``: read-only) and ``key`` (:func:`token_key` of its token; never the token itself)."""

    user_id: str
    mode: str
    key: str


LOCAL = Principal(user_id="local", mode=ADMIN, key=AUTH_OFF_KEY)
"""Every request's principal while auth is off."""


def token_key(token: str) -> str:
    """The short non-reversible key of ``token`` (see :data:`KEY_HEX_CHARS`)."""
    return hashlib.sha256(token.encode()).hexdigest()[:KEY_HEX_CHARS]


def auth_enabled(principal: Principal) -> bool:
    """Whether ``principal`` came from a credential (False: auth is off and it is :data:`LOCAL`)."""
    return principal.key != AUTH_OFF_KEY


def scope_user(principal: Principal) -> str | None:
    """The user a read is limited to: the authenticated one (None while auth is off: every user's)."""
    return principal.user_id if auth_enabled(principal) else None


def visible(principal: Principal, user_id: str) -> bool:
    """Whether ``principal`` may see what belongs to ``user_id`` (always, while auth is off)."""
    return not auth_enabled(principal) or principal.user_id == user_id


def owner_id(request: Request, claimed: str) -> str:
    """The user id a submission is stored under: the principal's while auth is on (whatever the body says),
    else ``claimed``. Open paths (no principal, e.g. the Telegram webhook) keep ``claimed``."""
    principal: Principal | None = getattr(request.state, "principal", None)
    return principal.user_id if principal is not None and auth_enabled(principal) else claimed


def unauthorized() -> ApiError:
    """401 ``unauthorized``: nothing about what was asked for, so nothing leaks."""
    return ApiError(
        401,
        "unauthorized",
        "Authentication required.",
        user_action="Send Authorization: Bearer <token>, or log in through the web UI.",
    )


def admin_only() -> ApiError:
    """403 ``admin_only``: a change that acts for every user (SOUL.md, settings, question templates, backends and
    their comparison, dead letters) needs a token of mode ``admin``."""
    return ApiError(
        403,
        "admin_only",
        "This changes Hermes for every user: it needs a token of mode admin.",
        user_action="Ask whoever runs Hermes, or use an admin token.",
    )


def read_only() -> ApiError:
    """403 ``read_only``: a guest token asked to change something (or for export/config/soul)."""
    return ApiError(
        403, "read_only", "This token is read-only (guest mode).", user_action="Use a token of mode user for this."
    )


def _too_many(limiter: MovingWindowRateLimiter, item: RateLimitItem, scope: str, *ids: str) -> ApiError:
    RATE_LIMITED.labels(scope).inc()
    reset_at = limiter.get_window_stats(item, scope, *ids).reset_time
    retry_after = max(1, math.ceil(reset_at - time.time()))
    return ApiError(
        429,
        "rate_limited",
        f"Too many requests: the limit is {item}.",
        details={"limit": str(item), "scope": scope},
        retry_after=retry_after,
        user_action=f"Wait {retry_after} s before trying again.",
    )


@dataclass(frozen=True)
class _Entry:
    principal: Principal
    digest: bytes


class Guard:
    """The tokens, session signer and limiters of one gateway process (built from ``settings``).
    :meth:`admit` decides one request; :meth:`login` / :meth:`session_cookie` serve the login route."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.entries = [
            _Entry(Principal(t.user_id, t.mode, token_key(t.token)), hashlib.sha256(t.token.encode()).digest())
            for t in settings.api_tokens()
        ]
        self.enabled = bool(self.entries)
        self.by_key = {e.principal.key: e.principal for e in self.entries}
        self.metrics_digest = (
            hashlib.sha256(settings.hermes_metrics_token.get_secret_value().encode()).digest()
            if settings.hermes_metrics_token
            else None
        )
        self.protect_health = settings.hermes_protect_health
        secret = (
            settings.hermes_session_secret.get_secret_value()
            if settings.hermes_session_secret
            else secrets.token_urlsafe(32)
        )
        self.signer = URLSafeTimedSerializer(secret, salt=SESSION_SALT)
        self.session_ttl_s = int(settings.hermes_session_ttl_hours * 3600)
        self.cookie_secure = settings.hermes_cookie_secure
        explicit = "hermes_rate_limit" in settings.model_fields_set
        self.rate_limit = settings.rate_limit() if self.enabled or explicit else None
        self.failure_limit = settings.auth_failure_limit()
        self.max_body_bytes = settings.hermes_max_body_bytes
        self.proxies = TrustedProxies(settings.trusted_proxies())
        self.limiter = MovingWindowRateLimiter(MemoryStorage())
        self.revoked: dict[str, float] = {}  # cookie value -> when it expires anyway (time.time() seconds)

    # ---- credentials ---------------------------------------------------------------------------------

    def by_token(self, token: str) -> Principal | None:
        """The principal of ``token``; every entry is compared (in constant time), so timing tells nothing."""
        candidate = hashlib.sha256(token.encode()).digest()
        found = None
        for entry in self.entries:
            if hmac.compare_digest(entry.digest, candidate):
                found = entry.principal
        return found

    def by_cookie(self, value: str) -> tuple[Principal | None, str]:
        """``(principal, "")`` for a good session cookie, else ``(None, reason)``: ``expired_session`` or
        ``invalid`` (bad signature, or its token is no longer configured)."""
        if value in self.revoked:
            return None, "invalid"
        try:
            payload = self.signer.loads(value, max_age=self.session_ttl_s)
        except SignatureExpired:
            return None, "expired_session"
        except BadSignature:
            return None, "invalid"
        principal = self.by_key.get(payload.get("key")) if isinstance(payload, dict) else None
        if principal is None or principal.user_id != payload.get("user_id"):
            return None, "invalid"
        return principal, ""

    def session_cookie(self, principal: Principal) -> str:
        """The signed, timestamped cookie value of ``principal``'s session (its key and user id)."""
        return self.signer.dumps({"user_id": principal.user_id, "key": principal.key})

    def revoke(self, value: str) -> None:
        """End the session of cookie ``value`` in this process (logout), so a copy of it stops working too;
        forgotten once it would have expired anyway, and at a restart."""
        now = time.time()
        self.revoked = {v: until for v, until in self.revoked.items() if until > now}
        if self.by_cookie(value)[0] is not None:
            self.revoked[value] = now + self.session_ttl_s

    def login(self, request: Request, token: str) -> Principal:
        """The principal of ``token`` for the login route. Raises :class:`ApiError` 401 ``unauthorized`` (counted
        against the client's ``HERMES_AUTH_FAILURE_LIMIT``) or 429 ``rate_limited``."""
        self._check_failures(request)
        principal = self.by_token(token)
        if principal is None:
            raise self._refuse(request, "invalid")
        return principal

    # ---- the decision --------------------------------------------------------------------------------

    def admit(self, request: Request) -> Principal | None:
        """The request's principal (None on an open path). Raises :class:`ApiError` 401 ``unauthorized``,
        403 ``read_only``, 429 ``rate_limited`` or 413 ``payload_too_large``."""
        path, method = request.scope["path"], request.method  # the decoded path, as request.url.path without escapes
        length = request.headers.get("content-length", "")
        if path not in OWN_BODY_LIMIT and length.isdigit() and int(length) > self.max_body_bytes:
            raise payload_too_large(self.max_body_bytes)
        if path in OPEN_PATHS or path.startswith(OPEN_PREFIXES):
            return None if self.enabled else LOCAL
        if path == METRICS_PATH and self.metrics_digest is not None:
            bearer = _bearer(request)
            if bearer is not None and hmac.compare_digest(
                hashlib.sha256(bearer.encode()).digest(), self.metrics_digest
            ):
                return None
            if not self.enabled:
                raise self._refuse(request, "invalid" if bearer else "missing")
        elif path in (HEALTH_PATH, METRICS_PATH) and not self.protect_health:
            return None if self.enabled else LOCAL
        if not self.enabled:
            principal = LOCAL
        elif path.startswith(PROTECTED_PREFIXES) or path in (HEALTH_PATH, METRICS_PATH):
            principal = self._authenticate(request)
        else:
            return None
        if self.rate_limit is not None and not self.limiter.hit(self.rate_limit, "token", principal.key):
            raise _too_many(self.limiter, self.rate_limit, "token", principal.key)
        if principal.mode == GUEST and (method not in READ_METHODS or _under(path, GUEST_FORBIDDEN)):
            AUTH_FAILURES.labels("read_only").inc()
            raise read_only()
        return principal

    def _authenticate(self, request: Request) -> Principal:
        header = request.headers.get("authorization")
        cookie = request.cookies.get(SESSION_COOKIE)
        if header is None and cookie is None:
            raise self._refuse(request, "missing")
        self._check_failures(request)
        if header is not None:
            bearer = _bearer(request)
            principal, reason = (self.by_token(bearer) if bearer else None), "invalid"
        else:
            principal, reason = self.by_cookie(cookie or "")
        if principal is None:
            raise self._refuse(request, reason)
        return principal

    def _check_failures(self, request: Request) -> None:
        client = self.proxies.client(request)
        if self.failure_limit is not None and not self.limiter.test(self.failure_limit, "auth_failure", client):
            raise _too_many(self.limiter, self.failure_limit, "auth_failure", client)

    def _refuse(self, request: Request, reason: str) -> ApiError:
        AUTH_FAILURES.labels(reason).inc()
        client = self.proxies.client(request)
        if reason == "invalid" and self.failure_limit is not None:
            self.limiter.hit(self.failure_limit, "auth_failure", client)
        log.info("auth_refused", reason=reason, path=request.url.path, client=client)
        return unauthorized()


def payload_too_large(limit: int) -> ApiError:
    """413 ``payload_too_large`` for a body over ``limit`` bytes."""
    return ApiError(
        413,
        "payload_too_large",
        f"The request body is over {limit} bytes (HERMES_MAX_BODY_BYTES).",
        details={"limit_bytes": limit},
        user_action="Send a smaller body.",
    )


def _bearer(request: Request) -> str | None:
    scheme, _, token = (request.headers.get("authorization") or "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def _under(path: str, prefixes: tuple[str, ...]) -> bool:
    return any(path == p or path.startswith(p + "/") for p in prefixes)


class AuthAndLimits:
    """ASGI middleware applying :meth:`Guard.admit` to every HTTP request; the principal goes to
    ``request.state.principal`` and ``user_id`` into the log context. A plain ASGI middleware, so SSE streams
    pass through untouched. Runs inside :class:`~hermes_gateway.observability.RequestObservability`, so its
    refusals are logged and counted like any answer."""

    def __init__(self, app: ASGIApp, guard: Guard) -> None:
        self.app = app
        self.guard = guard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        try:
            principal = self.guard.admit(request)
        except ApiError as error:
            await failure(request, error)(scope, receive, send)
            return
        request.state.principal = principal
        with _bound_user(principal):
            limited = receive if scope["path"] in OWN_BODY_LIMIT else _counted(receive, self.guard.max_body_bytes)
            await self.app(scope, limited, send)


@contextmanager
def _bound_user(principal: Principal | None) -> Iterator[None]:
    if principal is None:
        yield
        return
    with structlog.contextvars.bound_contextvars(user_id=principal.user_id):
        yield


def _counted(receive: Receive, limit: int) -> Receive:
    """``receive`` that refuses a body growing over ``limit`` bytes (one without ``Content-Length``) as it
    arrives. It raises Starlette's ``HTTPException`` because FastAPI re-raises that one from body parsing (any
    other error becomes a 400); the error handlers answer it as ``payload_too_large``."""
    seen = 0

    async def counted() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise StarletteHTTPException(413)
        return message

    return counted


def install_auth(app: FastAPI, settings: GatewaySettings) -> Guard:
    """Add :class:`AuthAndLimits` to ``app`` (call before adding the observability middleware, so it runs
    inside it) and keep its :class:`Guard` on ``app.state.auth`` for the login route."""
    guard = Guard(settings)
    app.state.auth = guard
    app.add_middleware(AuthAndLimits, guard=guard)
    return guard


def install_cors(app: FastAPI, settings: GatewaySettings) -> None:
    """CORSMiddleware for ``HERMES_CORS_ORIGINS`` only, credentials allowed; nothing when none are configured
    (then no ``Access-Control-*`` header is ever sent). Call after :func:`install_auth` and the observability
    middleware, so it is outside them: preflights are answered before authentication and refusals carry the CORS
    headers a browser needs to read them."""
    origins = settings.cors_origins()
    if origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_credentials=True,
            allow_methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "Last-Event-ID", "X-Request-ID"],
            expose_headers=["Retry-After", "X-Request-ID"],
        )
