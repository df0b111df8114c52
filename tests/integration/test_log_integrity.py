"""The tamper-evident log with real parts: a real NATS JetStream, the notary as its own process (its key on disk),
and ``hermes verify`` / ``hermes identity`` as the operator runs them (subprocesses).

Covers: checkpoints sign every event and SOUL.md changes are attested in a chain; ``verify`` passes on the untouched
log and names the right sequence after a message is altered (the stream rewritten through the NATS API, and a byte
changed in the server's store files), deleted (the API) or two are swapped (reordered); an inclusion proof checks
offline with the public key alone and fails when edited; the notary resumes after kill -9; a key file that is not
the log's key signs nothing; a handoff to a successor key is followed by ``verify``; the exported attestation is 80
bytes of OP_RETURN payload and anchors the log against truncation.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest
from conftest import wait_until
from nats.js.errors import NotFoundError
from procs import ServiceProcess, start_ready

from hermes_proto import subjects
from hermes_proto.bus import EventStore, stream_configs
from hermes_proto.events import SettingChanged
from hermes_proto.identity import read_public_key
from hermes_proto.ids import new_id, utcnow
from hermes_proto.integrity import ATTESTATION_SUBJECT, CHECKPOINT_SUBJECT, CheckpointSigned
from hermes_proto.settings import BusSettings
from hermes_proto.stream_read import read_stream

pytestmark = pytest.mark.timeout(240)


def hermes(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "hermes_cli", *args], env=env, capture_output=True, text=True, timeout=60
    )


def setting(i: int) -> SettingChanged:
    return SettingChanged(
        event_id=new_id(),
        aggregate_id="test",
        occurred_at=utcnow(),
        correlation_id=new_id(),
        key=f"MARK-{i:04d}",
        value=f"value {i}",
    )


async def append_settings(js, first: int, count: int) -> None:
    store = EventStore(js, "test")
    for i in range(first, first + count):
        await store.append([setting(i)])


async def stored(js) -> list:
    messages: list = []
    await read_stream(js, subjects.EVENTS_STREAM, messages.append)
    return messages


async def rewrite(js, messages: list) -> None:
    """Replace HERMES_EVENTS by ``messages`` (subject, headers, data) through the NATS API, in the given order."""
    config = next(c for c in stream_configs(BusSettings()) if c.name == subjects.EVENTS_STREAM)
    await js.delete_stream(subjects.EVENTS_STREAM)
    await js.add_stream(config)
    for m in messages:
        await js.publish(m.subject, m.data, headers=m.headers)


async def signed_up_to(js, size: int) -> bool:
    try:
        raw = await js.get_last_msg(subjects.EVENTS_STREAM, CHECKPOINT_SUBJECT)
    except NotFoundError:
        return False
    return msgspec.json.decode(raw.data, type=CheckpointSigned).tree_size >= size


def write_soul(home: Path, text: str) -> None:
    """Replace SOUL.md atomically, as the orchestrator does (the notary polls it)."""
    tmp = home / ".SOUL.md.tmp"
    tmp.write_text(text)
    os.replace(tmp, home / "SOUL.md")


async def attested(js) -> bool:
    try:
        await js.get_last_msg(subjects.EVENTS_STREAM, ATTESTATION_SUBJECT)
    except NotFoundError:
        return False
    return True


@pytest.fixture
def env(bus_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    home = Path(bus_env["HERMES_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    write_soul(home, "You are Hermes.\n")
    return {
        **bus_env,
        "HERMES_CHECKPOINT_EVERY_EVENTS": "10",
        "HERMES_CHECKPOINT_EVERY_SECONDS": "0.5",
        "HERMES_SOUL_POLL_SECONDS": "0.2",
        "METRICS_PORT": "0",
    }


def first_failure(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 1, result.stdout + result.stderr
    return result.stderr


async def test_verify_detects_tampering_at_the_right_sequence(env, js_client, nats_server, tmp_path):
    nc, js = js_client
    home = Path(env["HERMES_HOME"])
    notary = ServiceProcess("notary", "hermes_notary", env, tmp_path / "logs")
    await start_ready(notary)
    await append_settings(js, 0, 25)
    await wait_until(lambda: attested(js), 30)  # the first SOUL.md is attested before it changes
    write_soul(home, "You are Hermes, brief and kind.\n")
    await append_settings(js, 25, 12)
    last = (await js.stream_info(subjects.EVENTS_STREAM)).state.last_seq
    await wait_until(lambda: signed_up_to(js, last), 30)
    notary.stop(signal.SIGKILL)  # kill -9: the next start resumes from its own tree
    await start_ready(notary)
    await append_settings(js, 37, 5)
    last = (await js.stream_info(subjects.EVENTS_STREAM)).state.last_seq
    await wait_until(lambda: signed_up_to(js, last), 30)
    notary.stop()
    assert (home / "identity" / "instance.key").stat().st_mode & 0o777 == 0o600

    ok = hermes(env, "verify", "--json")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    report = json.loads(ok.stdout[: ok.stdout.rindex("}") + 1])
    # two waits for a checkpoint over new events (how many more depends on how the notary's reads were batched)
    assert report["ok"] and report["checkpoints"] >= 2 and report["attestations"] == 2, report
    assert report["covered"] >= last

    soul = hermes(env, "identity", "verify")
    assert soul.returncode == 0 and "unbroken" in soul.stdout, soul.stdout + soul.stderr

    # an inclusion proof a third party checks with the public key alone
    proof = tmp_path / "proof.json"
    assert hermes(env, "verify", "--event", "7", "--out", str(proof)).returncode == 0
    key = read_public_key(home / "identity")
    offline = {k: v for k, v in env.items() if k not in ("NATS_URL", "HERMES_HOME")}
    offline["NATS_URL"] = "nats://127.0.0.1:1"  # nothing answers: the check needs no server
    checked = hermes(offline, "verify", "--proof", str(proof), "--public-key", key)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    unreachable = hermes(offline, "verify")  # no server: a clear error and exit 3, not a retry loop
    assert unreachable.returncode == 3 and "cannot reach NATS" in unreachable.stderr, unreachable.stderr
    document = json.loads(proof.read_text())
    document["message"]["data"] = document["message"]["data"][:-4] + "AAAA"
    proof.write_text(json.dumps(document))
    assert "proof rejected" in first_failure(hermes(offline, "verify", "--proof", str(proof), "--public-key", key))

    original = await stored(js)
    seq17 = next(m.sequence for m in original if b"MARK-0017" in m.data)

    # altered through the API: the stream rewritten with one value changed
    altered = [m._replace(data=m.data.replace(b"value 17", b"value 71")) for m in original]
    await rewrite(js, altered)
    assert f"sequence {seq17}: altered" in first_failure(hermes(env, "verify"))

    # reordered: two neighbours swapped
    swapped = list(original)
    i = seq17 - 1
    swapped[i], swapped[i + 1] = swapped[i + 1], swapped[i]
    await rewrite(js, swapped)
    assert f"sequence {seq17}: altered" in first_failure(hermes(env, "verify"))

    # deleted through the API
    await rewrite(js, original)
    assert hermes(env, "verify").returncode == 0
    await js.delete_msg(subjects.EVENTS_STREAM, seq17)
    assert f"sequence {seq17}: missing" in first_failure(hermes(env, "verify"))

    # a byte changed in the server's own store files while it is down
    await rewrite(js, original)
    await nc.close()
    nats_server.stop()
    blocks = list(Path(nats_server.store_dir).rglob("HERMES_EVENTS/msgs/*.blk"))
    changed = 0
    for block in blocks:
        data = block.read_bytes()
        if b"value 17" in data:
            block.write_bytes(data.replace(b"value 17", b"value 71"))
            changed += 1
    assert changed
    nats_server.start()
    failure = first_failure(hermes(env, "verify"))
    assert f"sequence {seq17}: altered" in failure or f"sequence {seq17}: missing" in failure, failure


async def test_handoff_wrong_key_and_anchor(env, js_client, tmp_path):
    nc, js = js_client
    home = Path(env["HERMES_HOME"])
    notary = ServiceProcess("notary", "hermes_notary", env, tmp_path / "logs")
    await start_ready(notary)
    await append_settings(js, 0, 12)
    last = (await js.stream_info(subjects.EVENTS_STREAM)).state.last_seq
    await wait_until(lambda: signed_up_to(js, last), 30)
    first_key = read_public_key(home / "identity")

    shown = hermes(env, "identity")
    assert shown.returncode == 0 and first_key in shown.stdout and "npub1" in shown.stdout, shown.stderr
    assert "bc1p" in shown.stdout

    anchor = tmp_path / "anchor.json"
    assert hermes(env, "identity", "export-attestation", "--out", str(anchor)).returncode == 0
    exported = json.loads(anchor.read_text())
    assert len(bytes.fromhex(exported["op_return"])) == 80
    assert bytes.fromhex(exported["op_return"])[:4] == b"HRM1"

    rotated = hermes(env, "identity", "rotate", "--reason", "test")
    assert rotated.returncode == 0, rotated.stdout + rotated.stderr
    second_key = read_public_key(home / "identity")
    assert second_key != first_key and second_key in rotated.stdout
    await append_settings(js, 12, 12)
    last = (await js.stream_info(subjects.EVENTS_STREAM)).state.last_seq
    await wait_until(lambda: signed_up_to(js, last), 30)
    ok = hermes(env, "verify", "--anchor", str(anchor))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert first_key in ok.stdout and second_key in ok.stdout
    assert "wrong_key" in first_failure(hermes(env, "verify", "--public-key", first_key))

    # a key file that is not the log's key: the notary reads on but signs nothing
    notary.stop()
    key_file = home / "identity" / "instance.key"
    key_file.write_text("11" * 32 + "\n")
    os.chmod(key_file, 0o600)
    offset = notary.log_size()
    await start_ready(notary)
    assert notary.logged_since(offset, "identity_mismatch")
    before = (await js.stream_info(subjects.EVENTS_STREAM)).state.last_seq
    await append_settings(js, 24, 12)
    await asyncio.sleep(2.5)  # five checkpoint intervals
    assert not await signed_up_to(js, before + 1)
    notary.stop(signal.SIGTERM)

    # truncation: the log rewritten without its tail no longer holds the anchored checkpoint
    original = await stored(js)
    size = exported["checkpoint"]["tree_size"]
    await rewrite(js, original[: size - 1])
    assert "anchor_missing" in first_failure(hermes(env, "verify", "--anchor", str(anchor), "--public-key", first_key))
