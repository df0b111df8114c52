"""The data keys' file beside the backups (:mod:`hermes_proto.keystore`): sealed with the passphrase and read back;
a wrong passphrase, a damaged or foreign file each refused with their code; replaced atomically (no temporary left,
the old file kept when the write fails); exported from and imported into a real bucket without overwriting a key or
bringing back a destroyed one; a backup writes it beside the archive (never into it) and a restore imports it."""

from __future__ import annotations

import asyncio
import base64
import json
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest

from hermes_proto import keystore
from hermes_proto.backup import restore_backup, write_backup
from hermes_proto.backup_home import seal
from hermes_proto.bus import EventStore
from hermes_proto.events import PreferenceLearned
from hermes_proto.forgetting import PersonalDataForgotten
from hermes_proto.keyring import KeyEntry, Keyring, key_id_of, sealed_header
from hermes_proto.keystore import (
    KEY_FILE,
    KeyFileError,
    StoredKey,
    export_keys,
    import_keys,
    read_key_file,
    scan_log,
    write_key_file,
)

from hermes_cli.backup import local_nats

PASS = b"a passphrase"
STREAMS = ["HERMES_EVENTS", "HERMES_COMMANDS", "HERMES_EXEC", "HERMES_DLQ", "HERMES_INBOX"]
NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


def key(n: int, owner: str = "alice", created_ms: int = 1_700_000_000_000) -> StoredKey:
    return StoredKey(f"thread.t{n}", bytes([n]) * 32, owner, created_ms + n)


def test_a_key_file_round_trips_sealed_and_sorted(tmp_path: Path) -> None:
    path = tmp_path / KEY_FILE
    keys = [key(3), key(1, owner=""), key(2)]
    assert write_key_file(path, keys, PASS) == 3
    assert read_key_file(path, PASS) == sorted(keys, key=lambda k: k.key_id)
    assert path.stat().st_mode & 0o777 == 0o600
    blob = path.read_bytes()
    assert blob.startswith(b"HBK1") and bytes([3]) * 32 not in blob and b"thread.t1" not in blob
    write_key_file(path, [], PASS)
    assert read_key_file(path, PASS) == []
    with pytest.raises(ValueError):
        write_key_file(path, keys, b"")


def test_a_wrong_or_missing_passphrase_is_refused(tmp_path: Path) -> None:
    path = tmp_path / KEY_FILE
    write_key_file(path, [key(1)], PASS)
    for passphrase, code in (
        (b"not it", "bad_passphrase"),
        (None, "passphrase_required"),
        (b"", "passphrase_required"),
    ):
        with pytest.raises(KeyFileError) as refused:
            read_key_file(path, passphrase)
        assert refused.value.code == code and str(path) in refused.value.detail
    with pytest.raises(KeyFileError) as missing:
        read_key_file(tmp_path / "nowhere.sealed", PASS)
    assert missing.value.code == "not_found"


@pytest.mark.parametrize(
    ("damage", "code"),
    [
        (lambda blob: blob[: len(blob) // 2], "bad_passphrase"),  # cut: the tag fails (AES-GCM: same as a wrong one)
        (lambda blob: blob[:-1] + bytes([blob[-1] ^ 1]), "bad_passphrase"),
        (lambda blob: b"", "corrupt"),
        (lambda blob: b"HBK1", "corrupt"),
        (lambda blob: b'{"keys": []}', "corrupt"),
        (lambda blob: seal(b"not json", PASS, keystore.KEY_FILE_LABEL), "corrupt"),
        (lambda blob: seal(b'{"format": 1, "written_at": "x", "keys": [1]}', PASS, keystore.KEY_FILE_LABEL), "corrupt"),
        (lambda blob: seal(b'{"format": 1, "written_at": "x", "keys": [{"key_id": "thread.t", "key": "AAAA", '
                           b'"owner": "", "created_ms": 1}]}', PASS, keystore.KEY_FILE_LABEL), "corrupt"),
        (lambda blob: seal(b'{"format": 9, "written_at": "x", "keys": []}', PASS, keystore.KEY_FILE_LABEL),
         "unsupported_format"),
        (lambda blob: seal(b'{"format": 1, "written_at": "x", "keys": []}', PASS, "identity/instance.key"),
         "bad_passphrase"),  # another label: an archive's sealed secret is no key file
    ],
)  # fmt: skip
def test_a_damaged_or_foreign_file_is_refused_with_its_code(tmp_path: Path, damage, code: str) -> None:
    path = tmp_path / KEY_FILE
    write_key_file(path, [key(1)], PASS)
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(KeyFileError) as refused:
        read_key_file(path, PASS)
    assert refused.value.code == code


def test_a_write_replaces_the_file_atomically_and_leaves_no_temporary(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / KEY_FILE
    (tmp_path / "hermes-backup-20260101T000000.000Z.tar.gz").write_bytes(b"an archive")
    write_key_file(path, [key(1), key(2)], PASS)
    inode = path.stat().st_ino
    write_key_file(path, [key(1)], PASS)  # a forget: key 2 leaves the file
    assert read_key_file(path, PASS) == [key(1)] and path.stat().st_ino != inode  # a new file renamed over it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hermes-backup-20260101T000000.000Z.tar.gz", KEY_FILE]

    def failing(src, dst):  # noqa: ANN001, ANN202
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(keystore.os, "replace", failing)
    with pytest.raises(OSError):
        write_key_file(path, [key(3)], PASS)
    assert read_key_file(path, PASS) == [key(1)]  # the old file, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hermes-backup-20260101T000000.000Z.tar.gz", KEY_FILE]


async def test_export_lists_live_keys_and_import_never_overwrites_nor_revives(js_client) -> None:
    nc, js = js_client
    keyring = await Keyring.connect(js)
    assert await export_keys(keyring, nc) == []
    live = await keyring.ensure("thread.a", "alice")
    other = await keyring.ensure("preference.p", "bob")
    await keyring.ensure("thread.gone", "alice")
    await keyring.erase(js, ["thread.gone"])  # a purge marker stands in its place
    exported = await export_keys(keyring, nc)
    assert [(k.key_id, k.entry()) for k in exported] == [("preference.p", other), ("thread.a", live)]
    assert await export_keys(keyring, nc, {"thread.a": live.created_ms}) == exported[:1]  # forgotten: left out
    assert await export_keys(keyring, nc, {"thread.a": live.created_ms - 1}) == exported  # a later generation

    theirs = [
        StoredKey("thread.a", b"\x01" * 32, "mallory", 5),  # there already: never overwritten
        StoredKey("thread.gone", b"\x02" * 32, "alice", 6),  # destroyed here: never brought back
        StoredKey("thread.new", b"\x03" * 32, "carol", 7),
    ]
    assert await import_keys(keyring, theirs) == 1
    assert await import_keys(keyring.kv, theirs) == 0  # idempotent; the bucket itself will do
    fresh = Keyring(keyring.kv)
    assert await fresh.ensure("thread.a", "") == live
    assert await fresh.ensure("thread.new", "") == KeyEntry(b"\x03" * 32, "carol", 7)
    assert await fresh.ensure("thread.gone", "") is None
    assert {k.key_id for k in await export_keys(keyring, nc)} == {"preference.p", "thread.a", "thread.new"}


def _record(seq: int, subject: str, data: bytes) -> str:
    return json.dumps({"seq": seq, "subject": subject, "hdrs": None, "data": base64.b64encode(data).decode()})


def test_scan_log_finds_the_keys_sealed_events_need_and_those_the_log_forgets(tmp_path: Path) -> None:
    from hermes_proto.codec import encode
    from hermes_proto.keyring import seal as seal_payload

    entry = KeyEntry(b"\x07" * 32, "alice", 1_000)
    sealed = seal_payload("thread.t1", entry, b'{"x": 1}')
    forgot = PersonalDataForgotten(
        event_id="f1", aggregate_id="p1", occurred_at=NOW, correlation_id="c", user_id="alice", key_ids=["thread.t1"]
    )
    lines = [
        _record(1, "hermes.evt.thread.t1.thread_opened", sealed),
        _record(2, "hermes.evt.thread.t2.cost_recorded", b'{"clear": true}'),
        _record(3, "hermes.evt.privacy.p1.personal_data_forgotten", encode(forgot)),
    ]
    (tmp_path / "messages.jsonl").write_text("\n".join(lines) + "\n")
    found = scan_log(tmp_path / "messages.jsonl")
    assert sealed_header(sealed)[:2] == ("thread.t1", 1_000)
    assert found.needed == {("thread.t1", 1_000)}
    assert found.forgotten == {"thread.t1": int(NOW.timestamp() * 1000)}
    assert found.dead(StoredKey("thread.t1", entry.key, "alice", 1_000))
    assert not found.dead(StoredKey("thread.t1", entry.key, "alice", int(NOW.timestamp() * 1000) + 1))
    assert found.unreadable([]) == 0  # forgotten: no key is missing for it
    assert scan_log(tmp_path / "none.jsonl").needed == set()


def _preference(n: int) -> PreferenceLearned:
    return PreferenceLearned(
        event_id=f"p-{n}",
        aggregate_id=f"pref{n}",
        occurred_at=NOW,
        correlation_id="c",
        user_id="alice",
        category="style",
        key="tone",
        value=f"dry {n}",
        votes={f"dry {n}": 1.0},
        confidence=0.9,
        stability=0.5,
        observations=3,
        source="explicit",
        evidence="said so",
    )


async def test_a_backup_writes_the_key_file_beside_the_archive_and_a_restore_imports_it(js_client, tmp_path) -> None:
    nc, js = js_client
    await EventStore(js, "test").append([_preference(1), _preference(2)])  # sealed under two keys
    keyring = await Keyring.connect(js)
    home = tmp_path / "home"
    (home / "backups").mkdir(parents=True)
    (home / "SOUL.md").write_text("You are Hermes.\n")
    (home / "elsewhere").mkdir()
    (home / "elsewhere" / KEY_FILE).write_bytes(b"another folder's key file")  # never archived either
    dest = home / "backups"

    made = await write_backup(nc, home, tmp_path / "out", PASS, streams=STREAMS)
    assert made.key_file == tmp_path / "out" / KEY_FILE and made.keys == 2
    assert {k.key_id for k in read_key_file(made.key_file, PASS)} == {"preference.pref1", "preference.pref2"}
    assert not any(KEY_FILE in m.path for m in made.manifest.members)
    inside = await write_backup(nc, home, dest, PASS, streams=STREAMS)  # the default: inside the home
    assert inside.key_file == dest / KEY_FILE and not any(KEY_FILE in m.path for m in inside.manifest.members)
    bare = await write_backup(nc, home, tmp_path / "bare", None, include_key=False, streams=STREAMS)
    assert bare.key_file is None and not (tmp_path / "bare" / KEY_FILE).exists()

    await keyring.erase(js, ["preference.pref2"])  # forgotten since the key file was written: stays forgotten
    forgot = PersonalDataForgotten(
        event_id="f", aggregate_id="p", occurred_at=datetime.now(UTC), correlation_id="c", key_ids=["preference.pref2"]
    )
    await EventStore(js, "test").append([forgot])
    later = await write_backup(nc, home, tmp_path / "later", None, include_key=False, streams=STREAMS)

    restored = await restore_backup(later.path, tmp_path / "r1", PASS, local_nats, made.key_file)
    assert restored.keys == 1 and not [w for w in restored.warnings if "key" in w]
    without = await restore_backup(later.path, tmp_path / "r2", None, local_nats)
    assert without.keys == 0 and any("no key file" in w and "2 aggregates" in w for w in without.warnings)
    with local_nats(tmp_path / "r1" / "nats") as settings:
        from hermes_proto.backup import open_bus

        nc2 = await open_bus(settings, "test")
        try:
            again = await Keyring.connect(nc2.jetstream())
            assert [k.key_id for k in await export_keys(again, nc2)] == ["preference.pref1"]
        finally:
            await nc2.close()
    for passphrase, code in ((b"not it", "bad_passphrase"), (None, "passphrase_required")):
        with pytest.raises(KeyFileError) as refused:
            await restore_backup(later.path, tmp_path / "r3", passphrase, local_nats, made.key_file)
        assert refused.value.code == code and not (tmp_path / "r3").exists()


def test_stored_keys_encode_as_the_format_says() -> None:
    content = keystore.KeyFileContent(1, "2026-12-06T12:00:00+00:00", [key(1)])
    data = json.loads(msgspec.json.encode(content))
    assert data["keys"] == [
        {"key_id": key_id_of("thread", "t1"), "key": base64.b64encode(b"\x01" * 32).decode(), "owner": "alice",
         "created_ms": 1_700_000_000_001}
    ]  # fmt: skip


async def test_the_notarys_schedule_writes_the_key_file_again_after_a_forget(js_client, tmp_path) -> None:
    """The notary follows the log: a ``PersonalDataForgotten`` rewrites the key file without the keys it names, even
    before the orchestrator has erased them; without a passphrase it writes none."""
    from hermes_notary.backups import BackupSchedule

    nc, js = js_client
    keyring = await Keyring.connect(js)
    await keyring.ensure("thread.a", "alice")
    await keyring.ensure("thread.b", "bob")
    home, dest = tmp_path / "home", tmp_path / "backups"
    home.mkdir()
    schedule = BackupSchedule(nc, home, dest, "0 2 * * *", "UTC", 2, PASS)
    assert await schedule.rewrite_keys() is None  # no key file yet: the first backup writes it
    result = await schedule.run_once()
    assert result is not None and result.key_file == dest / KEY_FILE and result.keys == 2

    stop = asyncio.Event()
    running = asyncio.create_task(schedule.run(stop))
    try:
        forgot = PersonalDataForgotten(
            event_id="f1",
            aggregate_id="p1",
            occurred_at=datetime.now(UTC),
            correlation_id="c",
            user_id="alice",
            key_ids=["thread.a"],
        )
        await asyncio.sleep(0.5)  # the follower subscribed
        await EventStore(js, "test").append([forgot])  # not erased yet: the file drops it all the same
        for _ in range(100):
            if [k.key_id for k in read_key_file(dest / KEY_FILE, PASS)] == ["thread.b"]:
                break
            await asyncio.sleep(0.1)
        assert [k.key_id for k in read_key_file(dest / KEY_FILE, PASS)] == ["thread.b"]
    finally:
        stop.set()
        await asyncio.wait_for(running, 10)
    assert sorted(p.name for p in dest.iterdir()) == sorted([result.path.name, KEY_FILE])

    keyless = BackupSchedule(nc, home, tmp_path / "keyless", "0 2 * * *", "UTC", 2, None)
    made = await keyless.run_once()
    assert made is not None and made.key_file is None and not (tmp_path / "keyless" / KEY_FILE).exists()
