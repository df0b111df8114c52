"""A clock a test moves by hand, for code that takes a ``timer``/``clock`` callable (seconds)."""

from __future__ import annotations


class ManualClock:
    """``clock()`` returns ``clock.now``; set or advance ``now`` to move time."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now
