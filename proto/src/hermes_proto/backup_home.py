"""The files of a Hermes home that a backup carries (:mod:`hermes_proto.backup`): what is state a user would lose,
how SQLite files are copied while in use, the secrets sealed with a passphrase (scrypt, AES-256-GCM), and the one
reading of that passphrase (:func:`read_passphrase`).

Secrets (:func:`secret_files`) travel only sealed: the identity folder's keys, ``cli.toml`` (the API token) and
``mcp.toml`` (the MCP servers' environment and header credentials). Without a passphrase they are left out and the
manifest names them. Left out, because ``hermes up`` or a replay of the log rebuilds them: the read models
(:data:`READ_MODELS`, folded again from the event stream), the NATS store (``nats/``: the streams travel as
messages), logs, bus credentials and the server configuration rendered from them (``credentials/``, ``nats.conf``),
supervisord's files, SQLite journals (each database is copied consistently through SQLite's backup API) and earlier
backups. Symbolic links, sockets, other special files and git metadata (any ``.git``: the skills repository travels
as a bundle, :mod:`hermes_proto.backup_skills`, and a restore refuses a ``.git`` path) are listed as skipped, never
followed.
"""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

READ_MODELS = frozenset({"orchestrator.db", "learner.db", "router.db", "notary.db"})
"""SQLite files at the home's top level that are projections of the log, rebuilt by replay (never archived); the
notary's Merkle tree among them. Any other ``*.db`` (the skills' usage statistics ``skills.db``) is state no replay
gives back, so it is archived."""
NOT_ARCHIVED = frozenset({"tools.db"})
"""Top-level files never archived although no replay rebuilds them: the tool service's call ledger holds tool
arguments and outputs in clear (an archive outlives a forget), and its one use, not running a dispatched call
twice, is kept after a restore by the consumers' restored positions."""
EXCLUDED_DIRS = frozenset({"nats", "logs", "credentials", "skills", "identity"})
"""Top-level folders not copied as plain files: regenerated (nats, logs, credentials) or carried otherwise (the
skills library as a bundle, the identity folder's secrets sealed)."""
EXCLUDED_FILES = frozenset({"nats.conf", "supervisord.conf", "supervisord.pid"})
SEALED_FILES = frozenset({"cli.toml", "mcp.toml"})
"""Top-level files that hold credentials (the CLI's API token; the MCP servers' env and headers): sealed like the
key, never archived in clear."""
GIT_DIR = ".git"
_SECRET_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")
JOURNAL_SUFFIXES = ("-wal", "-shm", "-journal")
IDENTITY_DIR = "identity"
PUBLIC_SUFFIX = ".pub"

MAGIC = b"HBK1"
SALT_BYTES, NONCE_BYTES, KEY_BYTES = 16, 12, 32
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1


class SealError(Exception):
    """A sealed secret that does not open: wrong passphrase, or altered bytes (AES-GCM cannot tell them apart)."""


def seal(secret: bytes, passphrase: bytes, label: str) -> bytes:
    """``secret`` encrypted under ``passphrase``: ``HBK1`` + 16-byte salt + 12-byte nonce + AES-256-GCM ciphertext
    and tag, the key derived with scrypt (n=2**15, r=8, p=1, 32 bytes); ``label`` (the member's path) is
    authenticated too, so a sealed file cannot be passed off as another one."""
    salt, nonce = os.urandom(SALT_BYTES), os.urandom(NONCE_BYTES)
    return MAGIC + salt + nonce + AESGCM(_derive(passphrase, salt)).encrypt(nonce, secret, label.encode())


def unseal(blob: bytes, passphrase: bytes, label: str) -> bytes:
    """The secret :func:`seal` sealed. Raises :class:`SealError` for a wrong passphrase, another label or a blob
    that is not a sealed secret."""
    head = len(MAGIC) + SALT_BYTES + NONCE_BYTES
    if len(blob) <= head or not blob.startswith(MAGIC):
        raise SealError("not a sealed secret")
    salt, nonce = blob[len(MAGIC) : len(MAGIC) + SALT_BYTES], blob[len(MAGIC) + SALT_BYTES : head]
    try:
        return AESGCM(_derive(passphrase, salt)).decrypt(nonce, blob[head:], label.encode())
    except InvalidTag:
        raise SealError("wrong passphrase or altered secret") from None


def _derive(passphrase: bytes, salt: bytes) -> bytes:
    return Scrypt(salt=salt, length=KEY_BYTES, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P).derive(passphrase)


def read_passphrase(file: Path | None, env_value: str | None) -> bytes | None:
    """The backup passphrase: ``file``'s bytes without one final ``\\n`` or ``\\r\\n`` when a file is given,
    else ``env_value`` encoded as UTF-8; None when that is empty. Raises ``OSError`` when ``file`` cannot be read."""
    if file is not None:
        data = file.read_bytes()
        data = data[:-2] if data.endswith(b"\r\n") else data.removesuffix(b"\n")
        return data or None
    return env_value.encode() if env_value else None


def secret_files(home: Path) -> list[str]:
    """The home's secrets, archived only sealed: the identity folder's regular files but the ``*.pub`` ones (the
    instance key and a pending next key) and the top-level :data:`SEALED_FILES` there are; home-relative paths,
    sorted."""
    found = [name for name in SEALED_FILES if _regular(home / name)]
    folder = home / IDENTITY_DIR
    if folder.is_dir():
        found += [f"{IDENTITY_DIR}/{p.name}" for p in folder.iterdir() if _regular(p)]
    return sorted(rel for rel in found if sealed_path_ok(rel))  # an identity's dot-files: temporaries


def sealed_path_ok(rel: str) -> bool:
    """Whether ``rel`` can be a sealed secret's home path: one of :data:`SEALED_FILES`, or ``identity/<name>`` with
    a plain file name (letters, digits, ``.``, ``_``, ``-``; not starting with ``.`` or ``-``; not ``*.pub``)."""
    if rel in SEALED_FILES:
        return True
    folder, _, name = rel.partition("/")
    return folder == IDENTITY_DIR and bool(_SECRET_NAME.fullmatch(name)) and not name.endswith(PUBLIC_SUFFIX)


def _regular(path: Path) -> bool:
    return path.is_file() and not path.is_symlink()


def is_git_name(name: str) -> bool:
    """Whether a path component is git metadata (``.git`` in any case: some file systems fold it)."""
    return name.lower() == GIT_DIR


def plain_files(home: Path, skip: Path | None = None) -> tuple[list[str], list[str]]:
    """``(files, skipped)``: the home-relative paths (``/``-separated, sorted) of the regular files a backup copies
    as they are, and of the special files and symbolic links it leaves out. ``skip``: a folder never entered (the
    backups' own destination when it lies inside the home)."""
    files: list[str] = []
    skipped: list[str] = []
    public = home / IDENTITY_DIR
    if public.is_dir():
        files += [
            f"{IDENTITY_DIR}/{p.name}" for p in public.iterdir() if p.is_file() and p.name.endswith(PUBLIC_SUFFIX)
        ]
    if not (home / "skills" / ".git").exists() and (home / "skills").is_dir():
        files += [f"skills/{rel}" for rel in _walk(home / "skills", None, skipped, "skills/")]
    files += [rel for rel in _walk(home, skip, skipped, "") if _archived(rel)]
    return sorted(set(files)), sorted(skipped)


def _walk(root: Path, skip: Path | None, skipped: list[str], prefix: str) -> Iterator[str]:
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        here = Path(dirpath)
        rel_dir = here.relative_to(root).as_posix()
        for name in list(dirnames):
            path = here / name
            top = rel_dir == "." and not prefix
            if path.is_symlink() or is_git_name(name):
                skipped.append(prefix + (path.relative_to(root).as_posix()))
                dirnames.remove(name)
            elif (top and name in EXCLUDED_DIRS) or (skip is not None and path == skip) or name.startswith(".hermes-"):
                dirnames.remove(name)
        for name in filenames:
            path = here / name
            rel = path.relative_to(root).as_posix()
            if path.is_symlink() or not path.is_file() or is_git_name(name):
                skipped.append(prefix + rel)
            else:
                yield rel


def _archived(rel: str) -> bool:
    name = rel.rsplit("/", 1)[-1]
    if "/" not in rel and (rel in EXCLUDED_FILES or rel in READ_MODELS or rel in NOT_ARCHIVED or rel in SEALED_FILES):
        return False
    if name.endswith(JOURNAL_SUFFIXES) or (name.startswith("hermes-backup-") and name.endswith(".tar.gz")):
        return False
    return not (name.startswith(".SOUL.") and name.endswith(".md"))  # SoulFile's half-written temporaries


def copy_file(source: Path, target: Path) -> None:
    """Copy one file to ``target`` (parents created, permission bits kept): an SQLite database (``*.db``) through
    SQLite's online backup (a consistent copy while a service writes it), any other file byte for byte."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if source.suffix == ".db" and _is_sqlite(source):
        src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
        dst = sqlite3.connect(target)
        try:
            src.backup(dst)
        finally:
            dst.close()
            src.close()
        os.chmod(target, source.stat().st_mode & 0o777)
    else:
        shutil.copy2(source, target, follow_symlinks=False)


def _is_sqlite(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(16) == b"SQLite format 3\x00"
