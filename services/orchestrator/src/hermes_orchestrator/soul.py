"""SOUL.md: the user-editable system prompt every channel's turns start with (``$HERMES_HOME/SOUL.md``)."""

from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path

import structlog

from hermes_orchestrator.domain import SYSTEM_PROMPT

log = structlog.get_logger("hermes.orchestrator")


class SoulFile:
    """The text of ``path``, re-read whenever its modification time changes (a user may edit it by hand while
    Hermes runs). A missing file is created with :data:`~hermes_orchestrator.domain.SYSTEM_PROMPT`; an unreadable
    or blank one counts as that default (logged), so a bad edit never stops a turn. Each prompt records the text
    it used (``JobQueued.messages``), so the log alone says what every turn was given."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._text = SYSTEM_PROMPT

    def ensure(self) -> None:
        """Create the file with the default prompt when it does not exist (at start-up)."""
        if not self.path.exists():
            self.write(SYSTEM_PROMPT)

    def read(self) -> str:
        """The current text (the default when the file is missing, unreadable or blank)."""
        with self._lock:
            try:
                stat = self.path.stat()
                stamp = (stat.st_mtime_ns, stat.st_size)
                if stamp != self._stamp:
                    text = self.path.read_text(encoding="utf-8").strip()
                    self._text, self._stamp = text or SYSTEM_PROMPT, stamp
            except (OSError, UnicodeDecodeError) as exc:
                log.warning("soul_unreadable", path=str(self.path), error=repr(exc))
                self._text, self._stamp = SYSTEM_PROMPT, None
            return self._text

    def write(self, text: str) -> str:
        """Replace the file atomically (a temporary file renamed over it) and return the text now in force."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock:
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".SOUL.", suffix=".md")
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as handle:
                    handle.write(text.rstrip() + "\n")
                os.replace(tmp, self.path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
            self._stamp = None
        log.info("soul_written", path=str(self.path), chars=len(text))
        return self.read()
