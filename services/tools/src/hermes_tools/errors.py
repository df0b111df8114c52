"""The one error a tool call ends with when it cannot produce an output: a stable ``code`` (what the orchestrator and
the model can branch on, e.g. ``invalid_arguments``, ``path_outside_workspace``, ``sandbox_unavailable``,
``http_404``) and a human ``message`` (what the model reads)."""

from __future__ import annotations


class ToolError(Exception):
    """A refused or failed tool call. ``code``: ``[a-z0-9_]+``; ``message``: one or two sentences that name the
    argument or the condition at fault, never a secret."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
