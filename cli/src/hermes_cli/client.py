"""The ``hermes`` commands' client of the gateway (every command but ``up``): :class:`GatewayClient` is the SDK's
:class:`hermes_sdk.Hermes` submitting on channel ``cli``, plus the routes only the command line uses (workflows,
backends, dead letters, memory search, sessions, SOUL.md, exports), which return the gateway's JSON as it came.

With a token every request carries ``Authorization: Bearer <token>``. Every call unwraps the gateway's envelope:
the ``data`` of a success, or :class:`GatewayError` with the error's ``code``, ``message`` and ``user_action``. A
gateway that cannot be reached raises :class:`GatewayUnreachable`. These two, :class:`SseEvent` and
:func:`parse_sse` are the SDK's (:class:`hermes_sdk.HermesError`, :class:`hermes_sdk.HermesUnreachable`...) under
the names the commands have always used.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from hermes_sdk import Hermes, SseEvent, parse_sse, unwrap
from hermes_sdk import HermesError as GatewayError
from hermes_sdk import HermesUnreachable as GatewayUnreachable

__all__ = ["GatewayClient", "GatewayError", "GatewayUnreachable", "SseEvent", "parse_sse", "unwrap"]


class GatewayClient(Hermes):
    """The gateway at ``base_url``; ``timeout_s`` bounds each plain request (seconds); ``token``: sent as
    ``Authorization: Bearer <token>`` on every request when given (never logged or kept anywhere else)."""

    def __init__(self, base_url: str, timeout_s: float = 15.0, token: str | None = None) -> None:
        super().__init__(base_url, token, timeout_s=timeout_s, channel="cli")

    def workflow(self, spec: dict[str, Any]) -> dict[str, Any]:
        """``POST /api/workflows`` with ``spec`` (``{"steps": [...], "title", ...}``); returns ``{"thread_id",
        "status_url", "events_url", "command_id", "steps"}`` (step ids in a dependency order)."""
        return self.request("POST", "/api/workflows", json=spec)

    def backends(self) -> dict[str, Any]:
        """``GET /api/backends``: ``{"backends": [...], "budget": {...}, "queued_jobs"}``."""
        return self.request("GET", "/api/backends")

    def set_backend_enabled(self, name: str, enabled: bool, reason: str = "") -> dict[str, Any]:
        """``POST /api/backends/<name>/enable`` or ``/disable``; returns the updated list."""
        action = "enable" if enabled else "disable"
        return self.request("POST", f"/api/backends/{name}/{action}", json={"reason": reason})

    def compare(self, prompt: str, backends: list[str], max_tokens: int, timeout_s: float) -> dict[str, Any]:
        """``POST /api/backends/compare``: ``{"comparison_id", "results": [...]}``. The HTTP call waits up to
        ``timeout_s`` plus the usual request timeout, as the gateway answers only after the comparison."""
        body = {"prompt": prompt, "backends": backends, "max_tokens": max_tokens, "timeout_s": timeout_s}
        return self.request(
            "POST",
            "/api/backends/compare",
            json=body,
            timeout=httpx.Timeout(self._timeout_s, read=timeout_s + self._timeout_s),
        )

    def dead_letters(
        self, consumer: str | None = None, reason: str | None = None, limit: int = 50, before: int | None = None
    ) -> dict[str, Any]:
        """``GET /api/system/dead-letters``: ``{"dead_letters": [...], "next_before"}``, newest first."""
        params = {"consumer": consumer, "reason": reason, "limit": limit, "before": before}
        return self.request(
            "GET", "/api/system/dead-letters", params={key: value for key, value in params.items() if value is not None}
        )

    def replay_dead_letter(self, dlq_sequence: int, payload: dict[str, Any] | None = None) -> dict[str, Any]:
        """``POST /api/system/dead-letters/<seq>/replay`` (with ``payload``, a corrected message, when given);
        returns the replay marker ``{"dlq_sequence", "subject", "stream_sequence", "corrected", ...}``."""
        body = {"payload": payload} if payload is not None else None
        return self.request("POST", f"/api/system/dead-letters/{dlq_sequence}/replay", json=body)

    def search(self, query: str, limit: int = 20) -> dict[str, Any]:
        """``GET /api/memory/search``: ``{"hits": [{"job_id", "session_id", "channel", "user_id", "prompt",
        "reply", "snippet", "score", "created_at"}]}``, best match first (``limit`` 1-100)."""
        return self.request("GET", "/api/memory/search", params={"q": query, "limit": limit})

    def sessions(self, channel: str | None = None, limit: int = 50) -> dict[str, Any]:
        """``GET /api/sessions``: ``{"sessions": [...]}`` without turns, newest activity first."""
        params: dict[str, Any] = {"limit": limit}
        if channel:
            params["channel"] = channel
        return self.request("GET", "/api/sessions", params=params)

    def session(self, session_id: str) -> dict[str, Any]:
        """``GET /api/sessions/<id>``: the session with its ``turns`` (404 ``not_found``)."""
        return self.request("GET", f"/api/sessions/{session_id}")

    def soul(self, text: str | None = None) -> dict[str, Any]:
        """``GET /api/soul`` (or ``PUT`` with ``text``): ``{"text", "path"}`` of SOUL.md as in force."""
        if text is None:
            return self.request("GET", "/api/soul")
        return self.request("PUT", "/api/soul", json={"text": text})

    @contextmanager
    def export(self, kind: str, params: dict[str, Any]) -> Iterator[Iterator[bytes]]:
        """Open ``GET /api/export/<kind>`` (``sft`` or ``dpo``) with ``params`` (None values left out); yields the
        JSONL body's chunks as they arrive, once the gateway answered 200 (so nothing is written on an error).
        Raises :class:`GatewayError` (e.g. 400 ``bad_request`` for an impossible date) / :class:`GatewayUnreachable`,
        also when the connection breaks mid-body."""
        query = {key: value for key, value in params.items() if value is not None}
        # The orchestrator pages the export; allow a slow page, but never wait forever.
        timeout = httpx.Timeout(self._timeout_s, read=max(60.0, self._timeout_s))
        try:
            with self.http.stream("GET", f"/api/export/{kind}", params=query, timeout=timeout) as response:
                if response.status_code != 200:
                    response.read()
                    unwrap(response)
                    raise GatewayError(response.status_code, "bad_response", f"HTTP {response.status_code}")
                yield response.iter_bytes()
        except httpx.TransportError as exc:
            raise GatewayUnreachable(self.base_url, exc) from exc
