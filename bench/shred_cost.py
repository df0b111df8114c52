"""What sealing personal events costs per event (hermes_proto.keyring: crypto-shredding, issue 25).

Builds a realistic log (``bench/threadlog.py``: whole thread stories) and runs each event through the real paths:
``encode`` then :func:`hermes_proto.keyring.seal` under its aggregate's key when it is personal (what
``EventStore.append`` does after the key is loaded), and :func:`hermes_proto.codec.decode_event` of the result with
an active keyring holding the keys (what every projection does); against plain ``encode`` / ``decode_event``.
Reports µs per event and the bytes added. Key loading (one direct get per aggregate, then cached) is not in it.

Run (not a test): ``uv run --frozen --group bench python bench/shred_cost.py [--events 50000]``; writes
``bench/results/shred_cost.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from system import ROOT  # puts tests/ on sys.path

# isort: split
from threadlog import build_log  # noqa: E402

from hermes_proto.codec import decode_event, encode  # noqa: E402
from hermes_proto.keyring import MAGIC, KeyEntry, Keyring, activate, is_personal, key_id_of  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    events = build_log(args.events, seed=5).events
    ring = Keyring()
    for event in events:
        key_id = key_id_of(event.aggregate_type, event.aggregate_id)
        if is_personal(event.aggregate_type, event.type_name()) and ring.known(key_id) is None:
            ring._keys[key_id] = KeyEntry(key=AESGCM.generate_key(bit_length=256), owner="u", created_ms=1)

    started = time.perf_counter()
    plain = [encode(e) for e in events]
    encode_s = time.perf_counter() - started
    started = time.perf_counter()
    for body in plain:
        decode_event(body)
    decode_s = time.perf_counter() - started

    started = time.perf_counter()
    stored = []
    for event in events:
        body = encode(event)
        if is_personal(event.aggregate_type, event.type_name()):
            key_id = key_id_of(event.aggregate_type, event.aggregate_id)
            body = ring.seal(key_id, ring._keys[key_id], body)
        stored.append(body)
    seal_s = time.perf_counter() - started
    activate(ring)
    started = time.perf_counter()
    for body in stored:
        decode_event(body)
    open_s = time.perf_counter() - started
    activate(None)

    n = len(events)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout
    row = {
        "commit": commit.strip(),
        "events": n,
        "sealed_share": round(sum(b[:4] == MAGIC for b in stored) / n, 3),
        "mean_event_bytes": round(sum(map(len, plain)) / n),
        "mean_stored_bytes": round(sum(map(len, stored)) / n),
        "encode_us": round(encode_s / n * 1e6, 2),
        "encode_seal_us": round(seal_s / n * 1e6, 2),
        "decode_us": round(decode_s / n * 1e6, 2),
        "open_decode_us": round(open_s / n * 1e6, 2),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "shred_cost.json").write_text(json.dumps(row, indent=2) + "\n")
    print(json.dumps(row, indent=2))


if __name__ == "__main__":
    main()
