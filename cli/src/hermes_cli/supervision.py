"""``hermes up``'s supervisor: supervisord (the ``supervisor`` package) in the foreground, its configuration
generated into ``$HERMES_HOME/supervisord.conf``.

supervisord starts every program, writes each one's stdout and stderr to ``$HERMES_HOME/logs/<name>.log``
(rotated at 50 MB, 3 kept) and restarts a program that exits, whatever its exit status:

* a program that had been up ``start_seconds`` (supervisord's ``startsecs``) is started again at once;
* one that exits sooner is a failed start: supervisord waits 1 s, 2 s, 3 s ... (its BACKOFF state) before the
  next try, and after ``start_retries`` failed starts in a row gives up on it (FATAL, logged, counted) while the
  others keep running.

SIGINT or SIGTERM to supervisord stops the Hermes services together (SIGTERM, then SIGKILL after
``stop_wait_seconds``), then the model server, then nats-server, and it exits. Its event listener
(:mod:`hermes_cli.supervisor_events`) logs and counts every exit, restart and give-up and serves them on
``/metrics``.
"""

from __future__ import annotations

import ctypes
import os
import re
import shlex
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

LISTENER = "supervisor"
"""The event listener's program name: its log is ``logs/supervisor.log``, its lines are prefixed ``supervisor``."""
SUPERVISORD_LOG = "supervisord"
"""supervisord's own log (``logs/supervisord.log``, warnings and worse: unexpected exits, SIGKILLs, spawn errors)."""
SERVICES_GROUP = "hermes"
_SAFE_VALUE = re.compile(r"[A-Za-z0-9_.:/@+-]*")


@dataclass(frozen=True)
class Program:
    """One supervised process. ``name`` labels its terminal lines, its log file ``logs/<name>.log`` and its
    metrics; ``argv`` is run as is (no shell); ``env`` is added to the environment every program shares;
    ``infrastructure`` (nats-server, the model server) start before and stop after the Hermes services;
    ``metrics_port``: where it serves Prometheus ``/metrics``, if it does."""

    name: str
    argv: Sequence[str]
    env: Mapping[str, str] = field(default_factory=dict)
    infrastructure: bool = False
    metrics_port: int | None = None


@dataclass(frozen=True)
class RestartPolicy:
    """supervisord's ``startsecs`` (``start_seconds``), ``startretries`` (``start_retries``) and ``stopwaitsecs``
    (``stop_wait_seconds``) for every program; see the module docstring."""

    start_seconds: int = 10
    start_retries: int = 5
    stop_wait_seconds: int = 10


def _escaped(text: str) -> str:
    """supervisord expands ``%(name)s`` in its values: a literal ``%`` is written ``%%``."""
    return text.replace("%", "%%")


def _environment(env: Mapping[str, str]) -> str:
    for key, value in env.items():
        if not _SAFE_VALUE.fullmatch(value):  # supervisord parses this line with shlex: keep it plain
            raise ValueError(f"{key}={value!r}: not a plain value for supervisord's environment line")
    return ",".join(f'{key}="{_escaped(value)}"' for key, value in env.items())


def render_config(
    programs: Sequence[Program], home: Path, policy: RestartPolicy, listener_env: Mapping[str, str]
) -> str:
    """supervisord's configuration (INI) for ``programs`` under ``home``, with the event listener (started first,
    stopped last) given ``listener_env``. Raises ``ValueError`` for an ``env`` value supervisord cannot carry."""
    logs = home / "logs"
    config: dict[str, dict[str, str]] = {}
    config["supervisord"] = {
        "nodaemon": "true",
        "silent": "true",
        "loglevel": "warn",
        "logfile": _escaped(str(logs / f"{SUPERVISORD_LOG}.log")),
        "logfile_maxbytes": "10MB",
        "logfile_backups": "2",
        "pidfile": _escaped(str(home / "supervisord.pid")),
    }
    if os.geteuid() == 0:
        config["supervisord"]["user"] = "root"  # says it is meant; supervisord warns otherwise
    services = [p.name for p in programs if not p.infrastructure]
    if services:
        config[f"group:{SERVICES_GROUP}"] = {"programs": ",".join(services), "priority": "100"}
    for priority, program in enumerate(programs, start=10):
        section = {
            "command": _escaped(shlex.join(program.argv)),
            "priority": str(priority),
            "autostart": "true",
            "autorestart": "true",
            "startsecs": str(policy.start_seconds),
            "startretries": str(policy.start_retries),
            "stopsignal": "TERM",
            "stopwaitsecs": str(policy.stop_wait_seconds),
            "stopasgroup": "true",
            "killasgroup": "true",
            "redirect_stderr": "true",
            "stdout_logfile": _escaped(str(logs / f"{program.name}.log")),
            "stdout_logfile_maxbytes": "50MB",
            "stdout_logfile_backups": "3",
        }
        if program.env:
            section["environment"] = _environment(program.env)
        config[f"program:{program.name}"] = section
    config[f"eventlistener:{LISTENER}"] = {
        "command": _escaped(shlex.join([sys.executable, "-m", "hermes_cli.supervisor_events"])),
        "events": "PROCESS_STATE,SUPERVISOR_STATE_CHANGE",
        "buffer_size": "1024",
        "priority": "1",
        "autostart": "true",
        "autorestart": "true",
        "stdout_logfile": "NONE",  # stdout is the event protocol
        "stderr_logfile": _escaped(str(logs / f"{LISTENER}.log")),
        "stderr_logfile_maxbytes": "10MB",
        "stderr_logfile_backups": "2",
        "environment": _environment(listener_env),
    }
    return "\n".join(
        f"[{name}]\n" + "".join(f"{key} = {value}\n" for key, value in section.items())
        for name, section in config.items()
    )


def _die_with_parent() -> None:  # runs in the child between fork and exec
    """SIGTERM this process when the one that started it dies (Linux ``PR_SET_PDEATHSIG``): supervisord then
    stops everything even when ``hermes up`` itself is killed with SIGKILL."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


def start_supervisord(conf: Path, env: Mapping[str, str]) -> subprocess.Popen:
    """Start supervisord in the foreground on ``conf`` with ``env``; its stdout and stderr are this process's
    (only start-up errors appear there: it logs to its file). Raises ``OSError`` if it cannot be started."""
    return subprocess.Popen(
        [sys.executable, "-m", "supervisor.supervisord", "--nodaemon", "--configuration", str(conf)],
        env=dict(env),
        preexec_fn=_die_with_parent,
    )
