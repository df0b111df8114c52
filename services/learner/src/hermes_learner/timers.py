"""Timers of the learner (an adapter around the event loop's ``call_later``): the classification timeout, after
which the pattern rules decide on a draft 1 whose ``classify`` job has not answered. A timer is only a reminder: the
decision it runs checks the thread again (:func:`hermes_learner.handlers.decide_later`)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog

log = structlog.get_logger("hermes.learner")


class Timers:
    """Armed timers by key; each runs its coroutine once, on the event loop. Not thread-safe."""

    def __init__(self) -> None:
        self._timers: dict[str, asyncio.TimerHandle] = {}

    def schedule(self, key: str, delay_s: float, fire: Callable[[], Awaitable[None]]) -> None:
        """In ``delay_s`` seconds run ``fire()`` (its errors are logged: a timer has no consumer to retry it). A key
        already armed is left as it is."""
        if key in self._timers:
            return
        loop = asyncio.get_running_loop()
        self._timers[key] = loop.call_later(delay_s, lambda: asyncio.ensure_future(self._fire(key, fire)))

    async def _fire(self, key: str, fire: Callable[[], Awaitable[None]]) -> None:
        self._timers.pop(key, None)
        try:
            await fire()
        except Exception as exc:
            log.warning("timer_failed", key=key, error=repr(exc))

    def disarm(self, key: str) -> None:
        handle = self._timers.pop(key, None)
        if handle is not None:
            handle.cancel()

    def cancel_all(self) -> None:
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
