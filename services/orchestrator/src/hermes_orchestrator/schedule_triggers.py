"""Event triggers: what fires a schedule besides the clock. Each sends ``FireSchedule`` with a due key naming what it
saw, so a restarted watcher that sees the same thing again fires nothing new (the decision remembers the key).

- ``subject``: an external producer's event on ``hermes.inbox.event.>`` (stream HERMES_INBOX, durable
  ``orchestrator-triggers``): due key ``event:<stream sequence>``, the payload handed to the run as untrusted data.
- ``file``: a file under the project's workspace matching the glob, created or modified after the schedule became
  active: due key ``file:<path>:<mtime ns>:<size>`` (polled every ``poll_s`` seconds; a poll is a ``stat`` per file).
- ``git``: a local repository whose ``HEAD`` differs from the baseline recorded at creation: due key
  ``git:<commit>`` (``git rev-parse HEAD``, polled).
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import structlog
from wcmatch import glob

from hermes_proto import schedules as sc
from hermes_proto.bus import Delivery, EventStore
from hermes_proto.ids import derived_id, utcnow

from hermes_orchestrator.schedule_state import ScheduleState

log = structlog.get_logger("hermes.orchestrator")

MAX_FILES_SCANNED = 10000
"""Files a file trigger looks at per poll (a glob matching more is cut, logged)."""
_GIT_TIMEOUT_S = 5.0


def git_head(path: str) -> str | None:
    """The commit ``HEAD`` of the git repository at ``path`` (None: not a repository, no commit, git missing)."""
    try:
        done = subprocess.run(
            ["git", "-C", path, "rev-parse", "--verify", "-q", "HEAD"],
            capture_output=True,
            text=True,
            timeout=_GIT_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    sha = done.stdout.strip()
    return sha if done.returncode == 0 and sha else None


def git_subject(path: str, sha: str) -> str:
    """The first line of commit ``sha``'s message (empty when unreadable)."""
    try:
        done = subprocess.run(
            ["git", "-C", path, "log", "-1", "--format=%s", sha],
            capture_output=True,
            text=True,
            timeout=_GIT_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout.strip()[:200]


def changed_files(workspace: Path, pattern: str, since: datetime) -> Iterator[tuple[str, int, int]]:
    """``(relative path, mtime ns, size)`` of the regular files under ``workspace`` matching ``pattern``
    (``**`` spans folders) modified after ``since``; symlinks are not followed out of the workspace."""
    if not workspace.is_dir():
        return
    since_ns = int(since.timestamp() * 1_000_000_000)
    flags = glob.GLOBSTAR | glob.DOTGLOB | glob.NODIR
    for count, rel in enumerate(glob.iglob(pattern, root_dir=str(workspace), flags=flags)):
        if count >= MAX_FILES_SCANNED:
            log.warning("file_trigger_cut", workspace=str(workspace), pattern=pattern, files=count)
            return
        path = workspace / rel
        try:
            if path.is_symlink() or not path.resolve().is_relative_to(workspace.resolve()):
                continue
            st = path.stat()
        except OSError:
            continue
        if st.st_mtime_ns > since_ns:
            yield rel, st.st_mtime_ns, st.st_size


def fire_command(state: ScheduleState, key: str, detail: str, payload: str = "") -> sc.FireSchedule:
    now = utcnow()
    return sc.FireSchedule(
        command_id=derived_id(state.schedule_id, key, "fire"),
        issued_at=now,
        schedule_id=state.schedule_id,
        due_key=key[:300],
        reason="trigger",
        detail=detail[:500],
        payload=payload[: sc.PAYLOAD_MAX_CHARS],
        seen_at=now,
        user_id=state.user_id,
    )


class TriggerWatcher:
    """Polls the file and git triggers of the active schedules every ``poll_s`` seconds and takes the external
    events (:meth:`on_inbox_event`, the ``orchestrator-triggers`` consumer's handler)."""

    def __init__(self, states: dict[str, ScheduleState], store: EventStore, home: Path, poll_s: float) -> None:
        self.states, self.store, self.home, self.poll_s = states, store, home, poll_s

    def _active(self, kind: str) -> list[ScheduleState]:
        return [s for s in list(self.states.values()) if s.status == "active" and s.definition.when.kind == kind]

    async def on_inbox_event(self, delivery: Delivery[bytes]) -> None:
        """Fire every active ``subject`` schedule whose pattern matches the event's subject (before the ack)."""
        key = f"event:{delivery.stream_sequence}"
        payload = delivery.message.decode("utf-8", "replace")
        for state in self._active("subject"):
            if sc.subject_matches(state.definition.when.subject or "", delivery.subject):
                await self.store.send(fire_command(state, key, delivery.subject, payload))

    async def poll_once(self) -> int:
        """One pass over the file and git triggers; returns the firings sent (the decision drops known keys)."""
        sent = 0
        for state in self._active("file"):
            workspace = self.home / "workspace" / state.definition.action.project
            found = await asyncio.to_thread(
                lambda s=state, w=workspace: list(changed_files(w, s.definition.when.path or "", s.active_since))
            )
            for rel, mtime_ns, size in found:
                key = f"file:{rel}:{mtime_ns}:{size}"
                if key in state.keys:
                    continue
                when = datetime.fromtimestamp(mtime_ns / 1e9, UTC).isoformat()
                await self.store.send(fire_command(state, key, f"{rel} (modified {when}, {size} bytes)"))
                sent += 1
        for state in self._active("git"):
            path = state.definition.when.path or ""
            head = await asyncio.to_thread(git_head, path)
            if head is None or head == state.baseline or f"git:{head}" in state.keys:
                continue
            subject = await asyncio.to_thread(git_subject, path, head)
            await self.store.send(fire_command(state, f"git:{head}", f"commit {head[:12]} in {path}: {subject}"))
            sent += 1
        return sent

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.poll_once()
            except Exception as exc:  # a watcher must never stop the service
                log.warning("trigger_poll_failed", error=repr(exc))
            try:
                await asyncio.wait_for(stop.wait(), timeout=self.poll_s)
            except TimeoutError:
                pass
