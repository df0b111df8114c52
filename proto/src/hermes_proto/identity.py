"""The instance identity: one secp256k1 keypair per Hermes instance, BIP-340 Schnorr signatures, and the public key's
other spellings (a Bitcoin Taproot address, a Nostr ``npub``).

The secret is 32 bytes: SHA-256 of ``hermes/identity``, SOUL.md's SHA-256 and 32 bytes of the kernel's random source
(``os.urandom``: getrandom(2), seeded by the hardware's entropy), retried in the negligible case it is not a valid
secp256k1 scalar. It lives in ``$HERMES_HOME/identity/instance.key`` (hex, mode 0600, directory 0700), read only by
the notary; ``instance.pub`` next to it holds the x-only public key (hex) for anyone. Signatures are BIP-340 over a
32-byte tagged hash (:func:`tagged_hash`, BIP-340's construction), so a Hermes signature can never be replayed as
another protocol's message.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from bech32m import codecs
from coincurve import PrivateKey, PublicKeyXOnly

from hermes_proto.integrity import tagged_hash

KEY_FILE, PUBLIC_FILE = "instance.key", "instance.pub"
NEXT_KEY_FILE = "instance.key.next"


class IdentityError(Exception):
    """A key file that is missing, unreadable, malformed or readable by others than its owner."""


def new_secret(soul_sha256: bytes, entropy: bytes | None = None) -> bytes:
    """A fresh 32-byte secret from SOUL.md's hash and 32 bytes of ``os.urandom`` (or ``entropy``, for tests)."""
    while True:
        seed = entropy if entropy is not None else os.urandom(32)
        secret = hashlib.sha256(b"hermes/identity" + soul_sha256 + seed).digest()
        try:
            PrivateKey(secret)
            return secret
        except ValueError:  # zero or >= the group order: p < 2**-127
            entropy = None


class Identity:
    """A loaded keypair. ``public_key``: the 32-byte x-only key as 64 hex characters (BIP-340)."""

    def __init__(self, secret: bytes) -> None:
        self._key = PrivateKey(secret)
        self.public_key = self._key.public_key.format(compressed=True)[1:].hex()

    def sign(self, digest: bytes, aux: bytes = b"") -> str:
        """BIP-340 signature (64 bytes, hex) of a 32-byte ``digest``; ``aux`` empty: fresh randomness."""
        return self._key.sign_schnorr(digest, aux).hex()


def verify_signature(public_key: str, digest: bytes, signature: str) -> bool:
    """True when ``signature`` (hex, 64 bytes) is ``public_key``'s (hex, x-only) BIP-340 signature of ``digest``;
    False for a wrong signature or a malformed key or signature."""
    try:
        return PublicKeyXOnly(bytes.fromhex(public_key)).verify(bytes.fromhex(signature), digest)
    except (ValueError, TypeError):
        return False


def taproot_address(public_key: str, hrp: str = "bc") -> str:
    """The key's BIP-86 Taproot address (key-path only: output key = P + tagged_hash("TapTweak", P)·G, bech32m
    witness version 1); ``hrp`` ``tb`` for testnet."""
    internal = bytes.fromhex(public_key)
    output = PublicKeyXOnly(internal)
    output.tweak_add(tagged_hash("TapTweak", internal))
    return codecs.encode(hrp, 1, output.format())


def npub(public_key: str) -> str:
    """The key in Nostr's NIP-19 form: bech32 (not bech32m) with prefix ``npub``."""
    return codecs.bech32_encode("npub", codecs.convertbits(bytes.fromhex(public_key), 8, 5), codecs.Encoding.BECH32)


def soul_digest(text: str) -> str:
    """SHA-256 (hex) of SOUL.md's text as the orchestrator reads it (UTF-8, stripped)."""
    return hashlib.sha256(text.strip().encode()).hexdigest()


def _check_private(path: Path) -> None:
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise IdentityError(f"{path} is readable by others (mode {mode:o}); it must be 0600")


def write_secret(directory: Path, secret: bytes, name: str = KEY_FILE) -> Identity:
    """Write ``secret`` to ``directory/name`` (mode 0600, created exclusively through a temporary file, the directory
    0700) and the public key to ``instance.pub`` when ``name`` is the active key. Returns the identity."""
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    tmp = directory / f".{name}.tmp"
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secret.hex() + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, directory / name)
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # the rename itself survives a crash: a successor key may be the log's only key
    finally:
        os.close(dir_fd)
    identity = Identity(secret)
    if name == KEY_FILE:
        (directory / PUBLIC_FILE).write_text(identity.public_key + "\n")
    return identity


def read_secret(path: Path) -> Identity:
    """The identity in ``path``. Raises :class:`IdentityError` when it is missing, malformed or not owner-only."""
    try:
        _check_private(path)
        return Identity(bytes.fromhex(path.read_text().strip()))
    except FileNotFoundError as exc:
        raise IdentityError(f"no key at {path}") from exc
    except (OSError, ValueError) as exc:
        raise IdentityError(f"{path}: {exc}") from exc


def load_or_create(directory: Path, soul_text: str) -> tuple[Identity, bool]:
    """The active identity of ``directory`` (``instance.key``), created from ``soul_text``'s hash when there is none.
    Returns (identity, created). Raises :class:`IdentityError` for an unreadable or world-readable key."""
    path = directory / KEY_FILE
    if path.exists():
        return read_secret(path), False
    return write_secret(directory, new_secret(bytes.fromhex(soul_digest(soul_text)))), True


def read_public_key(directory: Path) -> str | None:
    """The x-only public key (hex) in ``directory/instance.pub``, None when there is none."""
    try:
        text = (directory / PUBLIC_FILE).read_text().strip()
    except OSError:
        return None
    return text if len(text) == 64 else None


def parse_public_key(text: str) -> str:
    """A public key given as 64 hex characters or as an ``npub``; returns the hex form. Raises ValueError."""
    text = text.strip()
    if text.startswith("npub1"):
        hrp, data, spec = codecs.bech32_decode(text)
        key = bytes(codecs.convertbits(data, 5, 8, False))
        if hrp != "npub" or spec != codecs.Encoding.BECH32 or len(key) != 32:
            raise ValueError(f"not an npub: {text}")
        return key.hex()
    key = bytes.fromhex(text)
    if len(key) != 32:
        raise ValueError("a public key is 32 bytes (64 hex characters)")
    PublicKeyXOnly(key)  # raises ValueError when not on the curve
    return key.hex()
