"""The two ways a call fails: the gateway answered an error (:class:`HermesError`), or it did not answer at all
(:class:`HermesUnreachable`)."""

from __future__ import annotations

from typing import Any


class HermesError(Exception):
    """The gateway answered with its error envelope (or with something that is not an envelope: ``code``
    ``bad_response``). ``status`` is the HTTP status; ``code`` the machine-readable error code (``not_found``,
    ``validation_failed``, ``approval_closed``...); ``message`` says what went wrong; ``user_action`` what to do
    about it (or None); ``details`` the error's details as sent (e.g. a list of validation failures)."""

    def __init__(
        self, status: int, code: str, message: str, user_action: str | None = None, details: Any = None
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.user_action = user_action
        self.details = details


class HermesUnreachable(Exception):
    """No HTTP answer from the gateway at ``url`` (not running, wrong port, connection lost, timeout); ``error`` is
    the underlying :mod:`httpx` exception."""

    def __init__(self, url: str, error: Exception) -> None:
        super().__init__(f"cannot reach the Hermes gateway at {url}: {error}")
        self.url = url
        self.error = error
