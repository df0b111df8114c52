"""A small synchronous client of the Hermes gateway's HTTP API (used by every ``hermes`` command but ``up``).

With a token every request carries ``Authorization: Bearer <token>``. Every call unwraps the gateway's envelope: the ``data`` of a success, or :class:`GatewayError` with the
error's ``code``, ``message`` and ``user_action``. A gateway that cannot be reached raises
:class:`GatewayUnreachable`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx


class GatewayError(Exception):
    """The gateway answered with its error envelope (or something that is not an envelope).
    ``status`` is the HTTP status; ``code`` the machine-readable error code."""

    def __init__(
        self, status: int, code: str, message: str, user_action: str | None = None, details: Any = None
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.user_action = user_action
        self.details = details


class GatewayUnreachable(Exception):
    """No HTTP answer from the gateway at ``url`` (not running, wrong port, connection lost, timeout)."""

    def __init__(self, url: str, error: Exception) -> None:
        super().__init__(f"cannot reach the Hermes gateway at {url}: {error}")
        self.url = url
        self.error = error


@dataclass(frozen=True)
class SseEvent:
    """One Server-Sent Event. ``event`` is the event type (``token``, ``draft_presented``...), or ``comment``
    for a keep-alive; ``id`` the log sequence (None for tokens and comments); ``data`` the raw text."""

    event: str
    data: str
    id: str | None = None

    def json(self) -> Any:
        return json.loads(self.data)


def parse_sse(lines: Iterable[str]) -> Iterator[SseEvent]:
    """Server-Sent Events from the lines of a ``text/event-stream`` body (line endings already removed)."""
    fields: dict[str, str] = {}
    data: list[str] = []
    comment = False
    for line in lines:
        if line == "":
            if data:
                yield SseEvent(fields.get("event", "message"), "\n".join(data), fields.get("id"))
            elif comment:
                yield SseEvent("comment", "")
            fields, data, comment = {}, [], False
            continue
        if line.startswith(":"):
            comment = True
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            data.append(value)
        else:
            fields[name] = value


class GatewayClient:
    """The gateway at ``base_url``; ``timeout_s`` bounds each plain request (seconds); ``token``: sent as
    ``Authorization: Bearer <token>`` on every request when given (never logged or kept anywhere else)."""

    def __init__(self, base_url: str, timeout_s: float = 15.0, token: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self._timeout_s = timeout_s
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout_s, headers=headers)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> GatewayClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise GatewayUnreachable(self.base_url, exc) from exc
        return unwrap(response)

    def submit(
        self,
        idea: str,
        max_questions: int | None = None,
        channel: str = "cli",
        *,
        project: str | None = None,
        private: bool | None = None,
        priority: int | None = None,
    ) -> dict[str, Any]:
        """``POST /api/submit``; returns ``{"thread_id", "status_url", "events_url", "command_id"}``. Options
        left None take the gateway's defaults (project ``default``, not private, priority 5)."""
        body: dict[str, Any] = {"idea": idea, "channel": channel}
        optional = {"max_questions": max_questions, "project": project, "private": private, "priority": priority}
        body.update({key: value for key, value in optional.items() if value is not None})
        return self._call("POST", "/api/submit", json=body)

    def answer(self, thread_id: str, answers: list[tuple[str, str]]) -> dict[str, Any]:
        """``POST /api/threads/<id>/continue`` with ``(question_id, text)`` pairs."""
        body = {"answers": [{"question_id": qid, "text": text} for qid, text in answers]}
        return self._call("POST", f"/api/threads/{thread_id}/continue", json=body)

    def rate(self, thread_id: str, rating: int, comment: str = "") -> dict[str, Any]:
        """``POST /api/threads/<id>/rate``: ``rating`` 1-5 of the final draft of a completed thread."""
        return self._call("POST", f"/api/threads/{thread_id}/rate", json={"rating": rating, "comment": comment})

    def cancel(self, thread_id: str, job_id: str) -> dict[str, Any]:
        """``POST /api/threads/<id>/jobs/<job_id>/cancel``: stop an open job (409 ``job_not_cancellable``)."""
        return self._call("POST", f"/api/threads/{thread_id}/jobs/{job_id}/cancel")

    def workflow(self, spec: dict[str, Any]) -> dict[str, Any]:
        """``POST /api/workflows`` with ``spec`` (``{"steps": [...], "title", ...}``); returns ``{"thread_id",
        "status_url", "events_url", "command_id", "steps"}`` (step ids in a dependency order)."""
        return self._call("POST", "/api/workflows", json=spec)

    def status(self, thread_id: str) -> dict[str, Any]:
        """``GET /api/threads/<id>/status``: the thread view (status, drafts, questions, jobs)."""
        return self._call("GET", f"/api/threads/{thread_id}/status")

    def backends(self) -> dict[str, Any]:
        """``GET /api/backends``: ``{"backends": [...], "budget": {...}, "queued_jobs"}``."""
        return self._call("GET", "/api/backends")

    def set_backend_enabled(self, name: str, enabled: bool, reason: str = "") -> dict[str, Any]:
        """``POST /api/backends/<name>/enable`` or ``/disable``; returns the updated list."""
        action = "enable" if enabled else "disable"
        return self._call("POST", f"/api/backends/{name}/{action}", json={"reason": reason})

    def compare(self, prompt: str, backends: list[str], max_tokens: int, timeout_s: float) -> dict[str, Any]:
        """``POST /api/backends/compare``: ``{"comparison_id", "results": [...]}``. The HTTP call waits up to
        ``timeout_s`` plus the usual request timeout, as the gateway answers only after the comparison."""
        body = {"prompt": prompt, "backends": backends, "max_tokens": max_tokens, "timeout_s": timeout_s}
        return self._call(
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
        return self._call(
            "GET", "/api/system/dead-letters", params={key: value for key, value in params.items() if value is not None}
        )

    def replay_dead_letter(self, dlq_sequence: int, payload: dict[str, Any] | None = None) -> dict[str, Any]:
        """``POST /api/system/dead-letters/<seq>/replay`` (with ``payload``, a corrected message, when given);
        returns the replay marker ``{"dlq_sequence", "subject", "stream_sequence", "corrected", ...}``."""
        body = {"payload": payload} if payload is not None else None
        return self._call("POST", f"/api/system/dead-letters/{dlq_sequence}/replay", json=body)

    def threads(self, limit: int = 50, status: str | None = None) -> dict[str, Any]:
        """``GET /api/threads``: ``{"threads": [ThreadView...], "count"}``, newest first (at most ``limit``, 1-200);
        with ``status``, only those of the newest 200 in that status (an unknown one: ``GatewayError``, 422
        ``validation_failed``, its ``details`` naming the statuses)."""
        params: dict[str, Any] = {"limit": limit}
        if status is not None:
            params["status"] = status
        return self._call("GET", "/api/threads", params=params)

    def search(self, query: str, limit: int = 20) -> dict[str, Any]:
        """``GET /api/memory/search``: ``{"hits": [{"job_id", "session_id", "channel", "user_id", "prompt",
        "reply", "snippet", "score", "created_at"}]}``, best match first (``limit`` 1-100)."""
        return self._call("GET", "/api/memory/search", params={"q": query, "limit": limit})

    def sessions(self, channel: str | None = None, limit: int = 50) -> dict[str, Any]:
        """``GET /api/sessions``: ``{"sessions": [...]}`` without turns, newest activity first."""
        params: dict[str, Any] = {"limit": limit}
        if channel:
            params["channel"] = channel
        return self._call("GET", "/api/sessions", params=params)

    def session(self, session_id: str) -> dict[str, Any]:
        """``GET /api/sessions/<id>``: the session with its ``turns`` (404 ``not_found``)."""
        return self._call("GET", f"/api/sessions/{session_id}")

    def soul(self, text: str | None = None) -> dict[str, Any]:
        """``GET /api/soul`` (or ``PUT`` with ``text``): ``{"text", "path"}`` of SOUL.md as in force."""
        if text is None:
            return self._call("GET", "/api/soul")
        return self._call("PUT", "/api/soul", json={"text": text})

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
            with self._http.stream("GET", f"/api/export/{kind}", params=query, timeout=timeout) as response:
                if response.status_code != 200:
                    response.read()
                    unwrap(response)
                    raise GatewayError(response.status_code, "bad_response", f"HTTP {response.status_code}")
                yield response.iter_bytes()
        except httpx.TransportError as exc:
            raise GatewayUnreachable(self.base_url, exc) from exc

    @contextmanager
    def watch(self, thread_id: str, last_event_id: int | None = None) -> Iterator[Iterator[SseEvent]]:
        """Open ``GET /api/threads/<id>/events``; yields the event iterator once the gateway has subscribed
        (so nothing published afterwards is missed). The iterator ends when the thread ends (or at once,
        on 204: nothing after ``last_event_id``). Raises :class:`GatewayError` / :class:`GatewayUnreachable`."""
        headers = {"Accept": "text/event-stream"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = str(last_event_id)
        timeout = httpx.Timeout(10.0, read=60.0)  # the gateway pings every 10 s
        try:
            with self._http.stream(
                "GET", f"/api/threads/{thread_id}/events", headers=headers, timeout=timeout
            ) as response:
                if response.status_code == 204:
                    yield iter(())
                    return
                if response.status_code != 200:
                    response.read()
                    unwrap(response)
                yield parse_sse(response.iter_lines())
        except httpx.TransportError as exc:
            raise GatewayUnreachable(self.base_url, exc) from exc


def unwrap(response: httpx.Response) -> Any:
    """The ``data`` of a success envelope; raises :class:`GatewayError` for an error envelope or a body
    that is not an envelope."""
    try:
        body = response.json()
    except ValueError:
        raise GatewayError(
            response.status_code,
            "bad_response",
            f"HTTP {response.status_code} without a JSON envelope: {response.text[:200]!r}",
        ) from None
    if isinstance(body, dict) and body.get("status") == "success":
        return body.get("data")
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        raise GatewayError(response.status_code, "bad_response", f"HTTP {response.status_code}: unexpected body")
    raise GatewayError(
        response.status_code,
        str(error.get("code", "unknown")),
        str(error.get("message", "")),
        error.get("user_action"),
        error.get("details"),
    )
