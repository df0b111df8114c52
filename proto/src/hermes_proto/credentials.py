"""NKey credentials per role and the nats-server authorization that admits them.

``generate(dir, roles)`` writes one user NKey seed per role as ``<dir>/<role>.nk`` (owner-only, the directory too),
keeping seeds that exist; a service connects with ``NATS_NKEY_SEED_FILE`` pointing at its seed, whose file name
(the role) also names its inbox prefix (:attr:`hermes_proto.access.Grant.inbox_prefix`). ``server_config`` renders
the nats-server configuration: one account ``HERMES`` with JetStream, one user per role with the permissions of
:func:`hermes_proto.access.permissions`, and the partition mappings. Keys are NATS's own NKeys (Ed25519, the
``nkeys`` library); the server verifies them, Hermes signs nothing itself.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

import nkeys

from hermes_proto.access import Grant, permissions
from hermes_proto.partitions import server_mappings

ACCOUNT = "HERMES"
SEED_SUFFIX = ".nk"


def new_seed() -> bytes:
    """A fresh user NKey seed (``SU...``, 58 bytes) from the OS's random source."""
    return nkeys.encode_seed(secrets.token_bytes(32), nkeys.PREFIX_BYTE_USER)


def public_key(seed: bytes) -> str:
    """The user public key (``U...``) of ``seed``. Raises ``nkeys.ErrInvalidSeed`` for a malformed seed."""
    return nkeys.from_seed(bytearray(seed.strip())).public_key.decode()


def seed_path(directory: Path, role: str) -> Path:
    return directory / f"{role}{SEED_SUFFIX}"


def role_of(seed_file: Path) -> str:
    """The role a seed file belongs to: its name without ``.nk``."""
    return seed_file.name.removesuffix(SEED_SUFFIX)


def generate(directory: Path, roles: list[str]) -> dict[str, Path]:
    """Seed files for ``roles`` in ``directory`` (mode 0700; files 0600), created where missing; existing seeds are
    kept. Returns role → path."""
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    paths = {}
    for role in roles:
        path = seed_path(directory, role)
        if not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(new_seed() + b"\n")
        paths[role] = path
    return paths


def tls_block(cert_file: Path, key_file: Path, ca_file: Path | None = None) -> dict:
    """nats-server ``tls`` settings: the server's certificate and key; with ``ca_file``, clients must also present a
    certificate that CA signed (mutual TLS, ``verify``). ``handshake_first``: TLS starts before the server's INFO,
    so a man in the middle cannot answer "TLS not required" and keep the connection in clear (clients connect with
    ``tls_handshake_first``, :func:`hermes_proto.bus.credential_options` for ``tls://`` URLs)."""
    block: dict = {"cert_file": str(cert_file), "key_file": str(key_file), "timeout": 2, "handshake_first": True}
    if ca_file is not None:
        block.update(ca_file=str(ca_file), verify=True)
    return block


def server_config(
    grants: dict[str, Grant], seeds: dict[str, Path], partitions: int = 1, tls: dict | None = None
) -> str:
    """The nats-server configuration text (JSON, which the server's format reads) admitting one NKey user per role of
    ``grants`` (its public key from ``seeds[role]``) with that role's permissions, in one JetStream account that also
    holds the partition mappings; ``tls``: a :func:`tls_block` (for a server that other hosts reach). Raises KeyError
    when a role has no seed."""
    users = [
        {"nkey": public_key(seeds[role].read_bytes()), "permissions": permissions(grant)}
        for role, grant in grants.items()
    ]
    account: dict = {"jetstream": "enabled", "users": users}
    mappings = server_mappings(partitions)
    if mappings:
        account["mappings"] = mappings
    text = "accounts = " + json.dumps({ACCOUNT: account}, indent=1) + "\n"
    if tls is not None:
        text += "tls = " + json.dumps(tls, indent=1) + "\n"
    return text
