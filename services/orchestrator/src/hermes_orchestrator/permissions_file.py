"""``$HERMES_HOME/permissions.toml``: the tool permission rules a person writes (:mod:`hermes_proto.permissions`)."""

from __future__ import annotations

import threading
import tomllib
from pathlib import Path

import structlog

from hermes_proto.permissions import PermissionRuleError, RuleSet, load_rules

log = structlog.get_logger("hermes.orchestrator")


class PermissionsFile:
    """The rules of ``path``, re-read whenever its modification time or size changes (a person may edit it while
    Hermes runs). :meth:`read` never raises: a missing file is an empty :class:`RuleSet` (the defaults decide), a
    malformed one keeps the last good rules and reports the error (logged once per change)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._rules = RuleSet()
        self._error: str | None = None

    def read(self) -> tuple[RuleSet, str | None]:
        """``(rules in force, error)``: ``error`` says why the file on disk is not in force (None when it is)."""
        with self._lock:
            try:
                stat = self.path.stat()
            except FileNotFoundError:
                self._rules, self._error, self._stamp = RuleSet(), None, None
                return self._rules, None
            except OSError as exc:
                return self._rules, self._failed(f"{self.path}: {exc}")
            stamp = (stat.st_mtime_ns, stat.st_size)
            if stamp != self._stamp:
                self._stamp = stamp
                try:
                    data = tomllib.loads(self.path.read_text(encoding="utf-8"))
                    self._rules, self._error = load_rules(data), None
                except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, PermissionRuleError) as exc:
                    self._failed(f"{self.path}: {exc}")
            return self._rules, self._error

    def _failed(self, error: str) -> str:
        if error != self._error:
            log.error("permissions_file_invalid", path=str(self.path), error=error)
        self._error = error
        return error
