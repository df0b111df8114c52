"""``hermes backup`` and ``hermes restore``: one archive with every Hermes stream and the home's state
(:mod:`hermes_proto.backup`), and a home re-created from one.

``backup`` reads the streams over the running Hermes's NATS as the ``admin`` role: ``$NATS_URL``, else the local
server ``hermes up`` runs (port ``$HERMES_NATS_PORT``, else the one in ``$HERMES_HOME/supervisord.conf``, else
4222), with the seed ``$HERMES_HOME/credentials/admin.nk`` when there is one. ``restore`` starts its own nats-server
for the time of the restore, on a free port with throwaway credentials, storing where ``hermes up`` will look
(``$HERMES_HOME/nats``); ``hermes up`` then makes the bus credentials anew. The passphrase that seals the secrets (the
instance key, ``cli.toml`` with the API token, ``mcp.toml`` with the MCP servers' credentials) comes from
``--passphrase-file`` (its bytes; one final newline is not part of it), else ``$HERMES_BACKUP_PASSPHRASE``
(:func:`hermes_proto.backup_home.read_passphrase`). ``--without-key`` leaves all of them out (the backup names them).

The data keys of the personal events are never in an archive: with a passphrase ``backup`` replaces the one key file
``hermes-keys.sealed`` in the archives' folder (:mod:`hermes_proto.keystore`), and ``restore`` imports it (``--keys``,
default the one beside the archive) into the restored bus; without it the personal events stay unreadable.

Exit codes: 0 done; 1 the backup or restore failed (``error: <what> [<code>]``); 2 bad usage (an unreadable
passphrase file, a secret to archive and no passphrase).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from hermes_cli.busadmin import admin_settings
from hermes_cli.common import EXIT_USAGE, fail
from hermes_cli.config import hermes_home
from hermes_cli.natsserver import NatsServerNotFound, free_port, nats_server_args, wait_for_port

if TYPE_CHECKING:  # hermes_proto comes with the `local` extra: imported where used
    from hermes_proto.settings import BusSettings

PASSPHRASE_ENV = "HERMES_BACKUP_PASSPHRASE"
KEY_FILE = "hermes-keys.sealed"
"""The data keys' file beside the archives (:data:`hermes_proto.keystore.KEY_FILE`: hermes_proto is imported lazily)."""
USAGE_CODES = {"passphrase_required", "invalid_keep"}
PassphraseOption = Annotated[
    Path | None,
    typer.Option(
        "--passphrase-file", help=f"File holding the passphrase of the instance key (else ${PASSPHRASE_ENV})."
    ),
]


def passphrase(file: Path | None) -> bytes | None:
    """The passphrase (:func:`hermes_proto.backup_home.read_passphrase`): ``file``'s bytes without one final
    ``\\n`` or ``\\r\\n``, else ``$HERMES_BACKUP_PASSPHRASE``; None when neither gives one. Exits 2 when ``file``
    cannot be read."""
    from hermes_proto.backup_home import read_passphrase

    try:
        return read_passphrase(file, os.environ.get(PASSPHRASE_ENV))
    except OSError as exc:
        raise fail(f"cannot read the passphrase file {file}: {exc.strerror}", code=EXIT_USAGE) from None


def _echo_streams(manifest: Any, messages: dict[str, int] | None = None) -> None:
    for stream in manifest.streams:
        count = stream.messages if messages is None else messages.get(stream.name, 0)
        typer.echo(f"  {stream.name:<15} {count:>8} messages  last sequence {stream.last_seq}")


def backup(
    to: Annotated[
        Path | None, typer.Option("--to", help="Folder of the archives (default $HERMES_HOME/backups).")
    ] = None,
    keep: Annotated[
        int | None, typer.Option("--keep", min=1, help="Then keep only the newest N archives there.")
    ] = None,
    passphrase_file: PassphraseOption = None,
    without_key: Annotated[
        bool,
        typer.Option(
            "--without-key", help="Leave the secrets out: instance key, cli.toml, mcp.toml (no passphrase needed)."
        ),
    ] = False,
) -> None:
    """Write hermes-backup-<UTC time>.tar.gz: every stream's messages and consumers, SOUL.md, settings, profiles,
    the skills library, the workspace; the secrets (instance key, cli.toml, mcp.toml) sealed with a passphrase."""
    from hermes_proto.backup import BackupError, open_bus, write_backup
    from hermes_proto.backup_home import secret_files

    home = hermes_home().expanduser().resolve()
    secret = passphrase(passphrase_file)
    if not secret and not without_key and secret_files(home):  # said before NATS is even asked
        hint = f"Give --passphrase-file or ${PASSPHRASE_ENV}, or --without-key to leave the secrets out."
        raise fail(f"{home / secret_files(home)[0]} is only archived sealed [passphrase_required]", hint, EXIT_USAGE)
    settings = admin_settings(None, home)

    async def run() -> Any:
        nc = await open_bus(settings, "hermes-backup", timeout_s=5)
        try:
            return await write_backup(nc, home, to or home / "backups", secret, keep, include_key=not without_key)
        finally:
            await nc.close()

    try:
        result = asyncio.run(run())
    except BackupError as exc:
        raise fail(f"{exc.detail} [{exc.code}]", code=EXIT_USAGE if exc.code in USAGE_CODES else 1) from None
    except OSError as exc:
        raise fail(f"{exc} [io_error]") from None
    manifest = result.manifest
    typer.echo(f"Backup written: {result.path} ({result.size} bytes)")
    _echo_streams(manifest)
    identity = [p for p in manifest.sealed + manifest.skipped_secrets if p.startswith("identity/")]
    key = "none" if not identity else "sealed" if identity[0] in manifest.sealed else "left out"
    files = sum(1 for m in manifest.members if m.path.startswith("home/"))
    skills = "bundled" if manifest.skills_head else "none"
    typer.echo(f"  {files} files, skills repository {skills}, instance key {key}")
    for path in manifest.sealed:
        typer.echo(f"  sealed with the passphrase: {path}")
    for path in manifest.skipped_secrets:
        typer.echo(f"  left out (a secret, --without-key): {path}; a restore does not bring it back, keep a copy")
    for path in manifest.skipped:
        typer.echo(f"  skipped (link, special file or git metadata): {path}")
    for path in result.pruned:
        typer.echo(f"  pruned {path.name}")
    if result.key_file is not None:
        typer.echo(f"  data keys: {result.keys} written to {result.key_file} (sealed with the passphrase)")
    else:
        typer.echo(
            f"  warning: no passphrase, so no key file: the personal events of this archive can be restored only with"
            f" a {KEY_FILE} written with a passphrase (give --passphrase-file or ${PASSPHRASE_ENV})"
        )


def restore(
    archive: Annotated[Path, typer.Argument(help="A hermes-backup-*.tar.gz archive.")],
    passphrase_file: PassphraseOption = None,
    keys: Annotated[
        Path | None,
        typer.Option("--keys", help=f"The data keys' file (default {KEY_FILE} beside the archive, if there is one)."),
    ] = None,
) -> None:
    """Re-create $HERMES_HOME (it must be empty or absent) from an archive: files, the instance key, the skills
    library, every stream with its original sequences and the data keys of the key file. Then `hermes up`."""
    from hermes_proto.backup import BackupError, restore_backup

    home = hermes_home().expanduser().absolute()
    secret = passphrase(passphrase_file)
    key_file = keys if keys is not None else archive.parent / KEY_FILE
    if keys is None and not key_file.is_file():
        key_file = None
    try:
        result = asyncio.run(restore_backup(archive, home, secret, local_nats, key_file))
    except BackupError as exc:
        raise fail(f"{exc.detail} [{exc.code}]", code=EXIT_USAGE if exc.code in USAGE_CODES else 1) from None
    except OSError as exc:
        raise fail(f"{exc} [io_error]") from None
    typer.echo(f"Restored {archive} (made {result.manifest.created_at}) into {result.home}")
    _echo_streams(result.manifest, result.messages)
    key = "restored" if any(p.startswith("identity/") for p in result.manifest.sealed) else "none in the archive"
    typer.echo(f"  {result.files} files, {result.consumers} consumers, instance key {key}")
    if key_file is not None:
        typer.echo(f"  data keys: {result.keys} imported from {key_file}")
    for warning in result.warnings:
        typer.echo(f"  warning: {warning}")
    typer.echo("Start it with `hermes up`.")


@contextmanager
def local_nats(store_dir: Path) -> Iterator[BusSettings]:
    """A nats-server on a free loopback port storing in ``store_dir``, configured as ``hermes up`` configures its
    own (the same account, so ``hermes up`` finds the streams) with throwaway credentials; yields the admin's
    settings and stops the server (SIGTERM, so the store is flushed) on leaving."""
    from hermes_proto.backup import BackupError
    from hermes_proto.settings import BusSettings

    from hermes_cli.buscreds import prepare

    with tempfile.TemporaryDirectory(prefix="hermes-restore-") as tmp:
        config = Path(tmp) / "nats.conf"
        seeds = prepare(Path(tmp) / "credentials", config, [])
        port = free_port()
        try:
            argv = nats_server_args(port, store_dir, config=config)
        except NatsServerNotFound as exc:
            raise BackupError("nats_failed", str(exc)) from None
        with open(Path(tmp) / "nats.log", "wb") as log:
            proc = subprocess.Popen(argv, stdout=log, stderr=log)
            try:
                try:
                    wait_for_port(port)
                except TimeoutError:
                    log.flush()
                    tail = (Path(tmp) / "nats.log").read_text(errors="replace").strip().splitlines()[-1:]
                    raise BackupError("nats_failed", f"nats-server did not start: {' '.join(tail)}") from None
                yield BusSettings(
                    nats_url=f"nats://127.0.0.1:{port}",
                    nats_nkey_seed_file=seeds["admin"],
                    nats_tls_ca_file=None,
                    nats_tls_cert_file=None,
                    nats_tls_key_file=None,
                )
            finally:
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
