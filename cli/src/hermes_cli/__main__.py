"""The ``hermes`` command line: ``up`` runs Hermes locally; every other command talks to the gateway over HTTP.

Threads (:mod:`hermes_cli.threads`): ``submit`` (streams draft 1 live, then prints the questions), ``answer``
(streams draft 2), ``status``, ``list``, ``rate``, ``cancel`` (a job, or an agent run), ``workflow``. Agent runs
(:mod:`hermes_cli.agents`): ``do`` (start one and follow it live), ``runs``, ``run``, ``approvals`` (``approve``,
``reject``). Sessions and memory
(:mod:`hermes_cli.memory`): ``sessions``, ``session``, ``search``, ``soul``, ``export sft|dpo`` (training data as
JSONL). Operations (:mod:`hermes_cli.backends`, :mod:`hermes_cli.system`): ``backends`` (``enable``, ``disable``,
``compare``), ``dead-letters`` (``replay``), ``up``, ``bus-credentials`` (:mod:`hermes_cli.buscreds`), ``forget``
(destroy a user's data keys, over NATS as admin: :mod:`hermes_cli.forget`). Each command is a plain function there; this module
registers them all, in the order ``hermes --help`` lists them.

The gateway and its token come from :mod:`hermes_cli.config`: ``--url`` / ``--token``, else ``$HERMES_URL`` /
``$HERMES_TOKEN``, else ``url`` / ``token`` in ``$HERMES_HOME/cli.toml`` (``~/.hermes/cli.toml``), else
``http://127.0.0.1:${HERMES_WEB_PORT:-5000}`` without a token. The token is sent as ``Authorization: Bearer``
and never printed.

Exit codes (:mod:`hermes_cli.common`): 0 done; 1 the gateway answered an error (401: no or a wrong token), the
thread or agent run failed (or was cancelled), or waiting timed out; 2 bad usage (including an unreadable
``cli.toml``); 3 the gateway could not be reached; 130 following an agent run was interrupted (it goes on).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import typer

from hermes_cli import (
    agents,
    backends,
    backup,
    buscreds,
    forget,
    integrity,
    memory,
    memory_entries,
    schedules,
    skills,
    system,
    threads,
)

COMMANDS: tuple[tuple[str, Callable[..., Any]], ...] = (
    ("submit", threads.submit),
    ("answer", threads.answer),
    ("status", threads.status),
    ("list", threads.list_threads),
    ("rate", threads.rate),
    ("cancel", threads.cancel),
    ("workflow", threads.workflow),
    ("do", agents.do),
    ("runs", agents.runs),
    ("run", agents.run),
    ("search", memory.search),
    ("sessions", memory.sessions),
    ("session", memory.session),
    ("soul", memory.soul),
    ("export", memory.export),
    ("verify", integrity.verify),
    ("forget", forget.forget),
)
"""Top-level commands by name (``up`` comes after the groups, as it always has)."""
BACKEND_COMMANDS = (
    ("enable", backends.enable_backend),
    ("disable", backends.disable_backend),
    ("compare", backends.compare_backends),
)
DEAD_LETTER_COMMANDS = (("replay", system.replay_dead_letter),)


def build_app() -> typer.Typer:
    """The ``hermes`` Typer app with every command and group registered."""
    app = typer.Typer(
        name="hermes",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_show_locals=False,
        help="Hermes: from a vague idea to a clear draft. Submit ideas, answer questions, watch threads; "
        "run agents and answer their approvals; browse sessions, search memory, export training data. "
        "The gateway and token come from "
        "--url/--token, HERMES_URL/HERMES_TOKEN, or url/token in $HERMES_HOME/cli.toml.",
    )
    for name, command in COMMANDS:
        app.command(name)(command)
    app.add_typer(_group(agents.APPROVALS_HELP, agents.approvals, agents.APPROVAL_COMMANDS), name="approvals")
    app.add_typer(_group(backends.HELP, backends.backends, BACKEND_COMMANDS), name="backends")
    app.add_typer(_group(schedules.HELP, schedules.list_schedules, schedules.SCHEDULE_COMMANDS), name="schedule")
    app.add_typer(_group(skills.HELP, skills.skills, skills.SKILL_COMMANDS), name="skills")
    app.add_typer(_group(memory_entries.HELP, memory_entries.entries, memory_entries.MEMORY_COMMANDS), name="memory")
    app.add_typer(_group(system.DEAD_LETTERS_HELP, system.dead_letters, DEAD_LETTER_COMMANDS), name="dead-letters")
    app.add_typer(_group(integrity.HELP, integrity.identity, integrity.IDENTITY_COMMANDS), name="identity")
    app.command("up")(system.up)
    app.command("bus-credentials")(buscreds.bus_credentials)
    app.command("backup")(backup.backup)
    app.command("restore")(backup.restore)
    return app


def _group(
    help_text: str, listing: Callable[..., Any], commands: tuple[tuple[str, Callable[..., Any]], ...]
) -> typer.Typer:
    """A command group whose bare name runs ``listing`` (it returns at once when a subcommand was named)."""
    group = typer.Typer(no_args_is_help=False, help=help_text)
    group.callback(invoke_without_command=True)(listing)
    for name, command in commands:
        group.command(name)(command)
    return group


app = build_app()


def main() -> None:
    """Console script ``hermes``."""
    app()


if __name__ == "__main__":
    main()
