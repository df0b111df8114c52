"""Composition of the notary: NATS, the tree (checked against the stream), the key, the follower of
``HERMES_EVENTS``, the timers (checkpoints, SOUL.md) and the responders."""

from __future__ import annotations

import asyncio
import time

import structlog
from nats.js import JetStreamContext

from hermes_proto import keyring, subjects
from hermes_proto.bus import EventStore, LogFollower, close, connect, ensure_streams
from hermes_proto.service import stop_on_signals
from hermes_proto.telemetry import configure_logging, configure_tracing, start_metrics_server

from hermes_notary.backups import BackupSchedule
from hermes_notary.config import NotarySettings
from hermes_notary.head import LogHead, read_head
from hermes_notary.responders import Responders
from hermes_notary.service import Notary
from hermes_notary.tree import LeafTree

SERVICE = "notary"
log = structlog.get_logger("hermes.notary")


async def open_tree(settings: NotarySettings, js: JetStreamContext, head: LogHead) -> LeafTree:
    """The leaf tree, set aside and rebuilt from the stream when it cannot belong to this log: more leaves than the
    stream has, or a root that differs from the last checkpoint's (a restored or replaced stream)."""
    path = settings.tree_path()
    tree = LeafTree(path)
    last_seq = (await js.stream_info(subjects.EVENTS_STREAM)).state.last_seq
    stale = tree.size > last_seq
    checkpoint = head.checkpoint
    if not stale and checkpoint is not None and tree.size >= checkpoint.tree_size:
        stale = await tree.root(checkpoint.tree_size) != checkpoint.root
    if stale:
        tree.close()
        aside = path.with_name(f"{path.name}.stale-{int(time.time())}")
        path.rename(aside)
        log.warning("tree_set_aside", path=str(aside), leaves=tree.size, stream_last=last_seq)
        tree = LeafTree(path)
    return tree


async def run(settings: NotarySettings, stop: asyncio.Event | None = None) -> None:
    """Run until ``stop`` is set (or SIGINT/SIGTERM)."""
    configure_logging(SERVICE, settings.log_level, settings.log_file)
    configure_tracing(SERVICE)
    start_metrics_server(settings.metrics_port)
    stop = stop or stop_on_signals()
    nc = await connect(settings, SERVICE)
    js = nc.jetstream()
    await ensure_streams(js, settings)
    await keyring.start(js, settings.hermes_seal_personal_data)
    head = await read_head(js)
    tree = await open_tree(settings, js, head)
    notary = Notary(
        js,
        EventStore(js, SERVICE),
        tree,
        settings.identity_path(),
        settings.soul_path(),
        settings.hermes_checkpoint_every_events,
        settings.hermes_checkpoint_every_seconds,
        settings.hermes_checkpoint_max_entries,
    )
    notary.start(head)
    follower = LogFollower(js, subjects.EVENTS_STREAM, subjects.EVENTS_ALL, notary.on_batch, start_after=tree.size)
    await Responders(nc, notary).subscribe()
    tasks = [
        asyncio.create_task(follower.run(), name="notary-follow"),
        asyncio.create_task(notary.run_timers(stop, settings.hermes_soul_poll_seconds), name="notary-timers"),
    ]
    try:
        passphrase = settings.backup_passphrase()
    except OSError as exc:  # a bad backup setting must not stop the signing
        log.error("backup_passphrase_unreadable", error=repr(exc), effect="archives leave the secrets out")
        passphrase = None
    if settings.hermes_backups_enabled:
        backups = BackupSchedule(
            nc,
            settings.hermes_home,
            settings.backup_path(),
            settings.hermes_backup_cron,
            settings.hermes_backup_timezone,
            settings.hermes_backup_keep,
            passphrase,
        )
        tasks.append(asyncio.create_task(backups.run(stop), name="notary-backups"))
    log.info(
        "notary_started",
        nats=settings.nats_url,
        public_key=notary.identity.public_key if notary.identity else None,
        signing=notary.signing,
        tree_size=tree.size,
        signed_size=notary.signed_size,
    )
    await stop.wait()
    log.info("notary_stopping")
    follower.stop()
    await asyncio.gather(*tasks, return_exceptions=True)
    tree.close()
    await close(nc)
