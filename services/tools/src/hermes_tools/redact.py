"""What a tool's output goes through before it reaches a model: secrets replaced (:class:`Redactor`) and a long
output cut to a head and a tail, the whole of it kept in the workspace (:func:`truncate`)."""

from __future__ import annotations

import contextlib
import errno
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

REDACTED = "[REDACTED]"
SPILL_DIR = ".hermes/outputs"
"""Where :func:`truncate` keeps full outputs, relative to the workspace."""

MIN_SECRET_LENGTH = 8

# Names of environment variables whose values are secrets (matched on the upper-cased name).
SECRET_NAME = re.compile(
    r"(^|_)(KEYS?|TOKENS?|SECRETS?|SEED|NKEY|CREDENTIALS|APIKEY)$|PASSWORD|PASSWD|PASSPHRASE|SECRET|PRIVATE_KEY|NKEY"
)
NOT_A_SECRET_NAME = re.compile(r"_(FILE|PATH|DIR)$")  # where a secret is kept, not the secret
NATS_SEED = re.compile(r"\bS[ACNOPUX][A-Z2-7]{56}\b")

# Common secret formats, found anywhere in a text.
SECRET_PATTERNS: tuple[re.Pattern[str], ...] = (
    re.compile(
        r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY( BLOCK)?-----.*?(-----END [A-Z0-9 ]*PRIVATE KEY( BLOCK)?-----|\Z)", re.S
    ),
    re.compile(r"\bsk-(?:proj-|ant-)?[A-Za-z0-9_-]{16,}"),  # OpenAI, Anthropic
    re.compile(r"\b(?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{30,}\b|\bgithub_pat_[A-Za-z0-9_]{40,}"),  # GitHub
    re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}"),  # Slack
    re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),  # AWS access key id
    re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]{16,}"),  # Authorization: Bearer <token>
    re.compile(r"\b\d{6,12}:[A-Za-z0-9_-]{35}\b"),  # Telegram bot token
    NATS_SEED,
    re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"),  # JWT
)


class Redactor:
    """Replaces secrets with ``[REDACTED]``: the exact ``secrets`` given (each at least 8 characters; shorter
    ones are ignored, they would mangle ordinary text) and every :data:`SECRET_PATTERNS` match."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        kept = {s for s in secrets if isinstance(s, str) and len(s) >= MIN_SECRET_LENGTH}
        # Longest first, so a secret that contains another is replaced whole.
        self._literal = (
            re.compile("|".join(re.escape(s) for s in sorted(kept, key=len, reverse=True))) if kept else None
        )
        self.count = len(kept)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Redactor:
        """From the environment (default ``os.environ``): the value of every variable whose name looks secret
        (``*_KEY``, ``*_TOKEN``, ``*_SECRET``, ``*PASSWORD*``, ``*_API_KEY``, NATS seeds and nkeys, ...), and
        each comma-separated item of such a value (token lists), plus any value that is a NATS seed."""
        env = os.environ if environ is None else environ
        secrets: list[str] = []
        for name, value in env.items():
            if not value:
                continue
            upper = name.upper()
            named = SECRET_NAME.search(upper) is not None and NOT_A_SECRET_NAME.search(upper) is None
            if named or NATS_SEED.fullmatch(value.strip()):
                secrets.append(value)
                secrets.extend(part.strip() for part in value.split(",") if part.strip())
        return cls(secrets)

    def redact(self, text: str) -> str:
        """``text`` with every known secret and every secret-looking token replaced by ``[REDACTED]``."""
        if self._literal is not None:
            text = self._literal.sub(REDACTED, text)
        for pattern in SECRET_PATTERNS:
            text = pattern.sub(REDACTED, text)
        return text


def truncate(text: str, limit_chars: int, spill_dir: Path, name: str) -> tuple[str, bool, str | None]:
    """``(text, truncated, full_output_path)``. Within ``limit_chars``: ``(text, False, None)``. Past it: the
    head (about 4/5 of the limit) and the tail (1/5) around a marker line ``[... N characters truncated; full
    output in <path>]``, and the whole text written to ``<spill_dir>/.hermes/outputs/<name>.txt`` (``spill_dir``:
    the workspace; ``<path>`` is relative to it, which is how the agent's file tools reach it). The file is
    created without following symlinks (the workspace is the sandbox's to change) and takes the owner of
    ``spill_dir``. When it cannot be written the marker says so and the path is None."""
    if limit_chars <= 0 or len(text) <= limit_chars:
        return text, False, None
    relative = spill_path(name)
    try:
        _write_below(spill_dir, relative, text.encode("utf-8", "surrogateescape"))
        where: str | None = relative
    except OSError:
        where = None
    head = limit_chars * 4 // 5
    tail = limit_chars - head
    cut = len(text) - head - tail
    note = f"full output in {where}" if where else "the full output could not be kept"
    kept = text[:head]
    marker = ("" if kept.endswith("\n") else "\n") + f"[... {cut} characters truncated; {note}]\n"
    return kept + marker + text[len(text) - tail :], True, where


def spill_path(name: str) -> str:
    """Where :func:`truncate` keeps the full output named ``name`` (a call id), relative to the workspace."""
    safe = re.sub(r"[^A-Za-z0-9_-]", "_", name) or "output"
    return f"{SPILL_DIR}/{safe[:100]}.txt"


def remove_spilled(workspace: Path, name: str) -> bool:
    """Delete the full output :func:`truncate` kept for ``name`` in ``workspace`` (never following a symlink, as
    it was written); False when there is none. Raises OSError for other failures (e.g. permissions)."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    *dirs, filename = spill_path(name).split("/")
    fds: list[int] = []
    try:
        fds.append(os.open(workspace, flags))
        for part in dirs:
            fds.append(os.open(part, flags, dir_fd=fds[-1]))
        os.unlink(filename, dir_fd=fds[-1])
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):  # (a symlink: truncate never wrote through it)
            return False
        raise
    finally:
        for fd in fds:
            os.close(fd)
    return True


def _write_below(root: Path, relative: str, data: bytes) -> None:
    # Directory by directory from an fd of root, never following a symlink: a link planted in the workspace
    # (by a sandboxed command) cannot redirect the write outside it.
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    st = os.stat(root)
    fds = [os.open(root, flags)]
    try:
        *dirs, filename = relative.split("/")
        for part in dirs:
            with contextlib.suppress(FileExistsError):
                os.mkdir(part, 0o755, dir_fd=fds[-1])
                with contextlib.suppress(PermissionError):
                    os.chown(part, st.st_uid, st.st_gid, dir_fd=fds[-1], follow_symlinks=False)
            fds.append(os.open(part, flags, dir_fd=fds[-1]))
        with contextlib.suppress(FileNotFoundError):
            os.unlink(filename, dir_fd=fds[-1])
        fd = os.open(
            filename, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=fds[-1]
        )
        with os.fdopen(fd, "wb") as out:
            with contextlib.suppress(PermissionError):
                os.fchown(out.fileno(), st.st_uid, st.st_gid)
            out.write(data)
    finally:
        for fd in fds:
            os.close(fd)
