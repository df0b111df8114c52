"""What crypto-shredding would cost per event (issue 25; forgetting is NOT built yet: this measures the primitive on
Hermes's own events to plan it).

Builds a realistic log (``bench/threadlog.py``: whole thread stories), and for every event encrypts its JSON body as
one AES-256-GCM message under a per-user data key (random 12-byte nonce, the event id as associated data; the
``cryptography`` package), then decrypts it again; reports µs per event for encode + encrypt and decrypt + decode
against plain encode and decode, and the bytes added. Field-level encryption of only the personal fields costs at most
this (fewer bytes through the cipher), plus one key lookup per user, which is a cache hit after the first.

Run (not a test): ``uv run --frozen --group bench python bench/shred_cost.py [--events 50000]``; writes
``bench/results/shred_cost.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from pathlib import Path

import msgspec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from system import ROOT  # puts tests/ on sys.path

# isort: split
from threadlog import build_log  # noqa: E402

from hermes_proto.codec import EventUnion, encode  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    events = build_log(args.events, seed=5).events
    decoder = msgspec.json.Decoder(EventUnion)
    cipher = AESGCM(AESGCM.generate_key(bit_length=256))

    started = time.perf_counter()
    plain = [encode(e) for e in events]
    encode_s = time.perf_counter() - started
    started = time.perf_counter()
    for body in plain:
        decoder.decode(body)
    decode_s = time.perf_counter() - started

    started = time.perf_counter()
    sealed = []
    for event in events:
        nonce = os.urandom(12)
        sealed.append(nonce + cipher.encrypt(nonce, encode(event), event.event_id.encode()))
    seal_s = time.perf_counter() - started
    started = time.perf_counter()
    for event, blob in zip(events, sealed, strict=True):
        decoder.decode(cipher.decrypt(blob[:12], blob[12:], event.event_id.encode()))
    open_s = time.perf_counter() - started

    n = len(events)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout
    row = {
        "commit": commit.strip(),
        "events": n,
        "mean_event_bytes": round(sum(map(len, plain)) / n),
        "encode_us": round(encode_s / n * 1e6, 2),
        "encode_encrypt_us": round(seal_s / n * 1e6, 2),
        "decode_us": round(decode_s / n * 1e6, 2),
        "decrypt_decode_us": round(open_s / n * 1e6, 2),
        "bytes_added_per_event": 28,  # 12-byte nonce + 16-byte tag
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "shred_cost.json").write_text(json.dumps(row, indent=2) + "\n")
    print(json.dumps(row, indent=2))


if __name__ == "__main__":
    main()
