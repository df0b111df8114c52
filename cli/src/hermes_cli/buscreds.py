"""Bus credentials for ``hermes up`` and for deployments: one NKey seed per role and the nats-server configuration
that admits them with least privilege (:mod:`hermes_proto.access`, :mod:`hermes_proto.credentials`).

``hermes up`` calls :func:`prepare` on every start: seeds are created on the first start under
``$HERMES_HOME/credentials`` (owner-only) and kept; the server configuration ``$HERMES_HOME/nats.conf`` is rendered
again (public keys only), so enabling a backend adds its edge's user. ``hermes bus-credentials --out DIR`` writes the
same files for compose and k3s, which mount them as secrets (README "Security").
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

SERVICE_ROLES = {
    "orchestrator": "orchestrator",
    "learner": "learner",
    "backend-router": "router",
    "notifier": "notifier",
    "tools": "tools",
    "notary": "notary",
    "gateway": "gateway",
}
"""``hermes up``'s program names → their roles (an edge program ``<backend>-edge`` → ``edge-<backend>``)."""
SERVER_CONFIG = "nats.conf"


def role_of_program(name: str) -> str | None:
    """The bus role of a ``hermes up`` program, or None for one that does not connect (nats, the model)."""
    if name.endswith("-edge"):
        return f"edge-{name.removesuffix('-edge')}"  # hermes_proto.access.edge_role
    return SERVICE_ROLES.get(name)


def prepare(credentials_dir: Path, config_path: Path, backends: list[str], partitions: int = 1) -> dict[str, Path]:
    """Seeds for every role (created where missing) and the server configuration at ``config_path`` (mode 0600).
    Returns role → seed path. (hermes_proto is imported here: the CLI without the ``local`` extra lacks it.)"""
    from hermes_proto.access import grants
    from hermes_proto.credentials import generate, server_config

    table = grants(backends, partitions)
    seeds = generate(credentials_dir, list(table))
    config_path.write_text(server_config(table, seeds, partitions))
    config_path.chmod(0o600)
    return seeds


def bus_credentials(
    out: Annotated[Path, typer.Option("--out", help="directory for the seeds (<role>.nk) and nats.conf")],
    backends: Annotated[str, typer.Option(help="enabled backends, one edge role each (comma-separated)")] = "talos",
    partitions: Annotated[int, typer.Option(min=1, max=64, help="orchestrator partitions (HERMES_PARTITIONS)")] = 1,
) -> None:
    """Write one NKey seed per role (kept if present) and the nats-server configuration admitting them, for compose or
    k3s secrets. Roles: the five services, one edge per backend, producer (public commands only) and admin."""
    from hermes_proto.access import ADMIN, PRODUCER
    from hermes_proto.backends import enabled_backend_names

    seeds = prepare(out, out / SERVER_CONFIG, enabled_backend_names(backends), partitions)
    for role, path in seeds.items():
        marker = " (everything)" if role == ADMIN else " (public commands)" if role == PRODUCER else ""
        typer.echo(f"{role}{marker}: {path}")
    typer.echo(f"server configuration: {out / SERVER_CONFIG}")
