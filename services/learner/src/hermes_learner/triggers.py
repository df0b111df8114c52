"""Trigger patterns of question templates: regular expressions, matched case-insensitively against an idea, that make
a template more relevant (:func:`hermes_learner.domain.expected_value`). Users write them
(``POST``/``PATCH /api/learn/templates``), so this module is the one rule for a user-supplied pattern:

- :func:`compile_trigger` compiles with RE2 (google-re2): matching takes time linear in the idea's length, whatever
  the pattern (``^(a+)+$`` included), and a pattern RE2 cannot run in linear time (backreferences, lookaround) or
  whose program would pass :data:`MAX_MEM` is refused (:class:`TriggerError`; the desk answers ``invalid_trigger``).
  RE2's syntax is Python's but for those, ``\\Z`` (write ``\\z``), and ``\\w``, ``\\d``, ``\\b`` being ASCII-only.
- :func:`usable` compiles a stored pattern once; one RE2 refuses (a ``TemplateAdded`` from before this rule, replayed)
  is skipped with a log line (``trigger_skipped``) and counted, never raised, so the projection and decisions go on.
- :class:`TriggerMatcher` matches off the event loop, in a worker thread with a deadline: past it, no trigger counts
  as matched (logged ``trigger_match_timeout``, counted in ``hermes_learner_trigger_timeouts_total``).
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import re2
import structlog
from prometheus_client import Counter

log = structlog.get_logger("hermes.learner")

MAX_MEM = 1 << 20
"""Bytes RE2 may use for one pattern's compiled program (its default is 8 MiB): bounds compile time and memory; a
pattern that needs more (``\\pL{200}``) is refused as too large."""
DEFAULT_TIMEOUT_S = 0.1
"""Seconds all of one idea's trigger matching may take (``HERMES_TRIGGER_TIMEOUT_MS``)."""

TRIGGERS_SKIPPED = Counter(
    "hermes_learner_triggers_skipped_total", "Stored trigger patterns RE2 refuses, skipped (counted once per process)"
)
TRIGGER_TIMEOUTS = Counter(
    "hermes_learner_trigger_timeouts_total", "Ideas whose trigger matching passed its deadline (no trigger counted)"
)


class TriggerError(ValueError):
    """``pattern`` is not one RE2 accepts; ``reason`` is RE2's word for why (e.g. ``invalid perl operator: (?=``)."""

    def __init__(self, pattern: str, reason: str) -> None:
        super().__init__(
            f"trigger {pattern} is not a regular expression Hermes accepts (RE2 syntax: no backreferences or "
            f"lookaround): {reason}"
        )
        self.pattern = pattern
        self.reason = reason


def _options() -> re2.Options:
    options = re2.Options()
    options.case_sensitive = False
    options.never_capture = True  # only whether it matches counts
    options.log_errors = False  # refusals are ours to report
    options.max_mem = MAX_MEM
    return options


def compile_trigger(pattern: str) -> Any:
    """``pattern`` compiled with RE2, case-insensitive, within :data:`MAX_MEM` (an object with ``search(text)``).
    Raises :class:`TriggerError` when RE2 refuses it."""
    try:
        return re2.compile(pattern, _options())
    except re2.error as exc:
        reason = exc.args[0] if exc.args else "refused"
        raise TriggerError(
            pattern, reason.decode(errors="replace") if isinstance(reason, bytes) else str(reason)
        ) from None


def problem(patterns: Iterable[str]) -> str | None:
    """Why one of ``patterns`` cannot be a trigger (the first :class:`TriggerError`'s message), or None."""
    for pattern in patterns:
        try:
            compile_trigger(pattern)
        except TriggerError as exc:
            return str(exc)
    return None


@functools.lru_cache(maxsize=4096)
def usable(pattern: str) -> Any | None:
    """``pattern`` compiled (cached), or None when RE2 refuses it: logged ``trigger_skipped`` and counted once."""
    try:
        return compile_trigger(pattern)
    except TriggerError as exc:
        TRIGGERS_SKIPPED.inc()
        log.warning("trigger_skipped", pattern=pattern[:200], reason=exc.reason)
        return None


def matches(idea: str, patterns: Iterable[str]) -> bool:
    """Whether one of ``patterns`` (the usable ones) matches somewhere in ``idea``, in this thread."""
    return any((compiled := usable(p)) is not None and compiled.search(idea) is not None for p in patterns)


class Triggered(Protocol):
    template_id: str
    triggers: Sequence[str]


def triggered(idea: str, templates: Iterable[Triggered], deadline: float | None = None) -> frozenset[str] | None:
    """The ids of ``templates`` one of whose triggers matches ``idea``; None when ``deadline`` (``time.monotonic()``)
    passed before every pattern was tried (checked between patterns: one RE2 search is linear in ``idea``)."""
    found = set()
    for template in templates:
        for pattern in template.triggers:
            if deadline is not None and time.monotonic() > deadline:
                return None
            compiled = usable(pattern)
            if compiled is not None and compiled.search(idea) is not None:
                found.add(template.template_id)
                break
    return frozenset(found)


class TriggerMatcher:
    """Matches ideas against templates' triggers in ``workers`` threads of its own (RE2 releases the GIL while it
    searches), so the event loop, and the queries it answers, never wait on a pattern; ``timeout_s`` bounds one idea.
    """

    def __init__(self, timeout_s: float = DEFAULT_TIMEOUT_S, workers: int = 2) -> None:
        self.timeout_s = timeout_s
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="triggers")

    async def matched(self, idea: str, templates: Sequence[Triggered]) -> frozenset[str]:
        """The ids of ``templates`` whose triggers match ``idea`` (:func:`triggered`); none when the matching did not
        end within ``timeout_s`` seconds (logged and counted)."""
        if not any(t.triggers for t in templates):
            return frozenset()
        started = time.monotonic()
        work = asyncio.get_running_loop().run_in_executor(
            self._pool, triggered, idea, list(templates), started + self.timeout_s
        )
        try:
            found = await asyncio.wait_for(work, timeout=self.timeout_s)
        except TimeoutError:
            found = None
        if found is None:
            TRIGGER_TIMEOUTS.inc()
            log.warning(
                "trigger_match_timeout",
                timeout_s=self.timeout_s,
                idea_chars=len(idea),
                templates=len(templates),
                waited_s=round(time.monotonic() - started, 3),
            )
            return frozenset()
        return found

    def close(self) -> None:
        """Stop the worker threads (a search under way finishes; none waiting starts)."""
        self._pool.shutdown(wait=False, cancel_futures=True)
