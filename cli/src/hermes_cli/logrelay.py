"""The terminal of ``hermes up``: every supervised program's new log lines, prefixed by its name.

supervisord writes each program's output to ``$HERMES_HOME/logs/<name>.log`` (and rotates it: ``<name>.log`` is
renamed ``<name>.log.1`` and started afresh). :class:`LogRelay` follows those files from where they ended when it
was made (earlier runs are not shown again), across rotations, and copies each new line as
``HH:MM:SS name | line`` to its output, from a background thread polling every ``interval_s`` seconds.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO


@dataclass
class _Followed:
    name: str
    path: Path
    handle: BinaryIO | None = None
    inode: int | None = None
    partial: bytes = b""


class LogRelay:
    """Copies new lines of ``logs/<name>.log`` for each of ``names`` to ``out`` (binary, flushed per poll)."""

    def __init__(self, logs: Path, names: Iterable[str], out: BinaryIO, interval_s: float = 0.1) -> None:
        self._out = out
        self._interval_s = interval_s
        self._files = [_Followed(name, logs / f"{name}.log") for name in names]
        width = max((len(f.name) for f in self._files), default=0)
        self._prefix = {f.name: f.name.ljust(width).encode() + b" | " for f in self._files}
        for followed in self._files:
            self._open(followed, at_end=True)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="log-relay", daemon=True)

    def start(self) -> LogRelay:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Copy what is left (a last line without its newline too) and stop."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self.poll(final=True)

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            self.poll()

    def poll(self, final: bool = False) -> None:
        """One pass over every file: copy the complete lines written since the last pass."""
        stamp = time.strftime("%H:%M:%S").encode() + b" "
        chunks: list[bytes] = []
        for followed in self._files:
            data = self._read_new(followed)
            if final and followed.partial:
                data, followed.partial = data + followed.partial + b"\n", b""
            prefix = stamp + self._prefix[followed.name]
            chunks += [prefix + line + b"\n" for line in data.splitlines()]
        if chunks:
            try:
                self._out.write(b"".join(chunks))
                self._out.flush()
            except (OSError, ValueError):  # the terminal went away: the logs are still in their files
                pass

    def _open(self, followed: _Followed, at_end: bool) -> None:
        try:
            handle = open(followed.path, "rb")
        except OSError:
            return
        if at_end:
            handle.seek(0, os.SEEK_END)
        followed.handle, followed.inode = handle, os.fstat(handle.fileno()).st_ino

    def _read_new(self, followed: _Followed) -> bytes:
        """The complete lines appended since the last read (following a rotation to the new file)."""
        if followed.handle is None:
            self._open(followed, at_end=False)  # created since: read it from its start
            if followed.handle is None:
                return b""
        data = followed.handle.read()
        try:
            current = os.stat(followed.path)
        except OSError:
            current = None
        if current is not None and current.st_ino != followed.inode:  # rotated: the old file is complete
            data += followed.handle.read()
            followed.handle.close()
            followed.handle = None
            self._open(followed, at_end=False)
            if followed.handle is not None:
                data += followed.handle.read()
        elif current is not None and current.st_size < followed.handle.tell():  # truncated in place
            followed.handle.seek(0)
            data += followed.handle.read()
        data = followed.partial + data
        complete, newline, rest = data.rpartition(b"\n")
        followed.partial = rest
        return complete + newline
