"""The operator commands that talk to NATS directly (``verify``, ``identity``): which server, with which credentials.

The server: :func:`nats_url`. The credentials: the ``admin`` role's seed
``$HERMES_HOME/credentials/admin.nk`` when it exists (``hermes up`` writes it), else none.
"""

from __future__ import annotations

import configparser
import os
import shlex
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from hermes_cli.common import EXIT_UNREACHABLE, fail
from hermes_cli.config import hermes_home

T = TypeVar("T")
NatsOption = Annotated[
    str | None,
    typer.Option("--nats-url", help="NATS server (else $NATS_URL, else nats://127.0.0.1:$HERMES_NATS_PORT or 4222)."),
]


def nats_url(option: str | None, home: Path | None = None) -> str:
    """``option``, else ``$NATS_URL``, else 127.0.0.1 on ``$HERMES_NATS_PORT``, else on the port of the ``nats``
    program in ``$HERMES_HOME/supervisord.conf`` (what the last ``hermes up`` chose), else 4222."""
    if option or os.environ.get("NATS_URL"):
        return option or os.environ["NATS_URL"]
    conf = (home or hermes_home()) / "supervisord.conf"
    port = os.environ.get("HERMES_NATS_PORT") or _supervised_port(conf) or "4222"
    return f"nats://127.0.0.1:{port}"


def _supervised_port(conf: Path) -> str | None:
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read(conf, encoding="utf-8")
        argv = shlex.split(parser.get("program:nats", "command").replace("%%", "%"))
    except (OSError, configparser.Error, ValueError):
        return None
    return argv[argv.index("-p") + 1] if "-p" in argv[:-1] else None


def admin_settings(url: str | None, home: Path | None = None) -> Any:
    """Bus settings of the ``admin`` role: :func:`nats_url`, and the seed ``<home>/credentials/admin.nk`` when it
    exists (else ``$NATS_NKEY_SEED_FILE``, when set)."""
    from hermes_proto.settings import BusSettings

    home = home or hermes_home()
    seed = home / "credentials" / "admin.nk"
    return BusSettings(nats_url=nats_url(url, home), **({"nats_nkey_seed_file": seed} if seed.is_file() else {}))


async def with_bus(url: str | None, call: Callable[[Any, Any], Awaitable[T]]) -> T:
    """Connect as ``admin`` (:func:`admin_settings`, :func:`hermes_proto.backup.open_bus`: no reconnects, 5 s to
    connect), run ``call(nc, js)``, close. Exits 3 when NATS is unreachable."""
    from hermes_proto.backup import BackupError, open_bus

    settings = admin_settings(url)
    try:
        nc = await open_bus(settings, "hermes-cli", timeout_s=5)
    except BackupError as exc:
        raise fail(
            f"cannot reach NATS at {settings.nats_url}: {exc.detail}",
            "Is Hermes running (hermes up)?",
            EXIT_UNREACHABLE,
        ) from None
    try:
        return await call(nc, nc.jetstream())
    finally:
        await nc.close()
