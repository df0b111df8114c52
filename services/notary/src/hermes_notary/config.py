"""Notary settings (environment variables)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator

from hermes_proto.backup_home import read_passphrase
from hermes_proto.settings import BusSettings


class NotarySettings(BusSettings):
    """``hermes_checkpoint_every_events``: a checkpoint once this many events are unsigned;
    ``hermes_checkpoint_every_seconds``: else at most this long after the first unsigned event;
    ``hermes_checkpoint_max_entries``: leaves one checkpoint carries at most (32 bytes each, so the event stays far
    below NATS' 1 MiB payload limit); ``hermes_soul_poll_seconds``: how often SOUL.md is checked for a change to
    attest; ``hermes_soul_file``: default ``$HERMES_HOME/SOUL.md`` (the orchestrator's); ``hermes_identity_dir``:
    default ``$HERMES_HOME/identity`` (``instance.key`` 0600, ``instance.pub``); the tree's leaves are kept in
    ``$HERMES_HOME/notary.db`` (pymerkle's SQLite tree; rebuilt from the stream when lost). Backups
    (:mod:`hermes_notary.backups`): ``hermes_backup_cron`` (five fields, default the specification's ``0 2 * * *``) in
    ``hermes_backup_timezone``, into ``hermes_backup_dir`` (default ``$HERMES_HOME/backups``), keeping
    ``hermes_backup_keep`` archives; the key sealed with ``hermes_backup_passphrase_file`` or
    ``hermes_backup_passphrase``; ``hermes_backups_enabled`` false turns them off."""

    metrics_port: int = 9120
    hermes_checkpoint_every_events: int = Field(1000, ge=1, le=8000)
    hermes_checkpoint_every_seconds: float = Field(60.0, gt=0)
    hermes_checkpoint_max_entries: int = Field(8000, ge=1, le=20000)
    hermes_soul_poll_seconds: float = Field(2.0, gt=0)
    hermes_soul_file: Path | None = None
    hermes_identity_dir: Path | None = None
    hermes_backup_cron: str = "0 2 * * *"
    hermes_backup_timezone: str = "UTC"
    hermes_backup_keep: int = Field(7, ge=1)
    hermes_backup_dir: Path | None = None
    hermes_backup_passphrase: str | None = None
    hermes_backup_passphrase_file: Path | None = None
    hermes_backups_enabled: bool = True

    @model_validator(mode="after")
    def _checkpoints_keep_up(self) -> NotarySettings:
        if self.hermes_checkpoint_max_entries < self.hermes_checkpoint_every_events:
            raise ValueError("HERMES_CHECKPOINT_MAX_ENTRIES must be at least HERMES_CHECKPOINT_EVERY_EVENTS")
        return self

    def soul_path(self) -> Path:
        return self.hermes_soul_file or self.hermes_home / "SOUL.md"

    def identity_path(self) -> Path:
        return self.hermes_identity_dir or self.hermes_home / "identity"

    def tree_path(self) -> Path:
        return self.hermes_home / "notary.db"

    def backup_path(self) -> Path:
        return self.hermes_backup_dir or self.hermes_home / "backups"

    def backup_passphrase(self) -> bytes | None:
        """The passphrase (:func:`hermes_proto.backup_home.read_passphrase`: the file's bytes without one final line
        break, else the variable), None when neither gives one. Raises OSError for an unreadable file."""
        return read_passphrase(self.hermes_backup_passphrase_file, self.hermes_backup_passphrase)
