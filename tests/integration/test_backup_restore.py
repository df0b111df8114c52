"""Backups that restore, through the whole system (``hermes up`` with every service and its locked-down bus, the model a
scripted OpenAI-compatible server on loopback; ``hermes backup``/``hermes restore`` as subprocesses).

Real data is made through the HTTP API (SOUL.md edited, a preference stated, a schedule created, an idea answered to
completion and rated, a chat turn, an agent run that reads a workspace file), then ``hermes backup`` reads the running
bus as the admin role. The stack is stopped and the archive restored into a fresh home: every stream holds the same
messages with the same sequences, subjects, header bytes and data (checked message by message on a nats-server over
the restored store), the instance key comes back 0600 in a 0700 folder, SOUL.md and the workspace are the same, and
``hermes up`` on the restored home rebuilds every read model row for row equal to the original's: the personal events
are sealed, so that holds because the backup wrote the data keys' file beside the archive (``hermes-keys.sealed``,
sealed with the passphrase) and the restore imported it. Restored without that file, the read models lack every
personal row (the log is the same, its sealed events unreadable); restored again with ``--keys`` they are whole. A
restore into a non-empty home is refused (``home_not_empty``), a corrupted archive too (``corrupt``), a wrong
passphrase (``bad_passphrase``), each leaving the target untouched; a backup without a passphrase for the key (exit 2)
or without a reachable NATS (exit 1) writes nothing.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import shutil
import sqlite3
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import httpx
import pytest
from fakes.agent_model import MODEL, AgentModel, wait_for
from stack import HermesUp

from hermes_proto.backup import check_archive, open_bus
from hermes_proto.backup_streams import api, dump_stream, read_messages
from hermes_proto.keystore import KEY_FILE, read_key_file
from hermes_proto.settings import BusSettings

from hermes_cli.backup import local_nats
from hermes_cli.natsserver import free_port

PASSPHRASE = "correct horse battery staple"
SOUL = "You are Hermes, restored from a backup. Answer in short sentences."
NOTES = "# Balcony\nbasil needs four hours of sun\n"
SECRETS = {"identity/instance.key", "identity/instance.key.next", "cli.toml", "mcp.toml"}
PERSONAL_TABLES = [
    ("orchestrator.db", "threads"),
    ("orchestrator.db", "preferences"),
    ("orchestrator.db", "schedules"),
    ("orchestrator.db", "memory_entries"),
    ("learner.db", "user_preferences"),
    ("router.db", "thread_ratings"),
]


@pytest.fixture(scope="module")
def model():
    server = AgentModel({"B-READ": [[("file_read", {"path": "notes.md"})], "The notes say: {result}"]}).start()
    yield server
    server.stop()


def stack_env(model: AgentModel) -> dict[str, str]:
    return dict(
        HERMES_LOCAL_MODEL="false",
        BACKEND_TALOS_TYPE="openai",
        BACKEND_TALOS_HOST="127.0.0.1",
        BACKEND_TALOS_PORT=str(model.port),
        BACKEND_TALOS_MODELS=MODEL,
        HERMES_CHECKPOINT_EVERY_SECONDS="1",  # the notary signs what was made before the backup, nothing after
    )


def hermes(*args: str, home: Path, **env: str) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if k not in ("NATS_URL", "HERMES_BACKUP_PASSPHRASE")}
    full.update(HERMES_HOME=str(home), **env)
    return subprocess.run(
        [sys.executable, "-m", "hermes_cli", *args], env=full, capture_output=True, text=True, timeout=120
    )


def view(client: httpx.Client, path: str) -> dict:
    """The ``data`` of a GET, empty while the read model does not have it yet (404)."""
    response = client.get(path)
    return response.json()["data"] if response.status_code == 200 else {}


def make_data(client: httpx.Client, home: Path) -> None:
    assert client.put("/api/soul", json={"text": SOUL}).status_code == 200
    pref = {"category": "constraint", "key": "budget", "value": "a small budget"}
    assert client.post("/api/learn/preferences", json=pref).status_code in (200, 201, 202)
    when = {"kind": "at", "at": "2099-01-01T03:00:00Z"}  # never due while the test runs (a cron could fire)
    body = {"name": "nightly", "when": when, "action": {"kind": "agent", "text": "B-NIGHT tidy up", "profile": "code"}}
    assert client.post("/api/schedules", json=body).status_code == 202
    thread = client.post("/api/submit", json={"idea": "plan a vegetable garden on my balcony"}).json()["data"]
    tid = thread["thread_id"]
    status = wait_for(lambda: (s := view(client, f"/api/threads/{tid}/status")).get("answerable") and s, 60)
    answers = [{"question_id": q["question_id"], "text": f"answer {i}"} for i, q in enumerate(status["questions"])]
    assert client.post(f"/api/threads/{tid}/continue", json={"answers": answers}).status_code == 202
    wait_for(lambda: view(client, f"/api/threads/{tid}/status").get("status") == "completed", 60)
    assert client.post(f"/api/threads/{tid}/rate", json={"rating": 5, "comment": "useful"}).status_code == 202
    chat = {"model": MODEL, "user": "s-backup", "messages": [{"role": "user", "content": "tomatoes on a balcony?"}]}
    assert client.post("/v1/chat/completions", json=chat).status_code == 200
    workspace = home / "workspace" / "default"
    workspace.mkdir(parents=True, exist_ok=True)
    (workspace / "notes.md").write_text(NOTES)
    run = client.post("/api/agent/runs", json={"task": "B-READ my notes", "profile": "fileops"}).json()["data"]
    wait_for(lambda: view(client, f"/api/agent/runs/{run['run_id']}").get("status") == "completed", 60)
    identity = home / "identity"
    if not (identity / "instance.key").exists():  # the notary's key when it runs, else one like it
        identity.mkdir(mode=0o700, exist_ok=True)
        (identity / "instance.key").write_text(secrets.token_hex(32) + "\n")
        os.chmod(identity / "instance.key", 0o600)


async def stream_states(settings: BusSettings) -> dict[str, tuple[int, int, int]]:
    nc = await open_bus(settings, "test-backup")
    try:
        names = ["HERMES_EVENTS", "HERMES_COMMANDS", "HERMES_EXEC", "HERMES_DLQ", "HERMES_INBOX"]
        states = {}
        for name in names:
            state = (await api(nc, f"STREAM.INFO.{name}"))["state"]
            states[name] = (state["messages"], state["first_seq"], state["last_seq"])
        return states
    finally:
        await nc.close()


def settle(settings: BusSettings, quiet_s: float = 3.0, timeout_s: float = 60) -> dict[str, tuple[int, int, int]]:
    """The stream states once nothing was appended for ``quiet_s`` seconds (projections have caught up by then)."""
    deadline = time.monotonic() + timeout_s
    last, since = None, time.monotonic()
    while time.monotonic() < deadline:
        now = asyncio.run(stream_states(settings))
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return now
        time.sleep(0.5)
    raise AssertionError(f"streams still changing after {timeout_s}s: {last}")


def read_model(path: Path) -> dict[str, list[tuple]]:
    """Every table of one SQLite file (FTS shadow tables, the projection's position and schema among them), every
    column, rows sorted. Nothing is left out: every value a projection stores comes from the events (their ids,
    ``occurred_at``, payloads), not from the clock of the replay, so a replay of the same log gives the same rows."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")]
        return {t: sorted(db.execute(f'SELECT * FROM "{t}"').fetchall(), key=repr) for t in tables}
    finally:
        db.close()


def read_models(home: Path) -> dict[str, dict[str, list[tuple]]]:
    """Every ``*.db`` of a home (read models, the notary's tree, skills.db), or {} while one is not ready; not
    ``tools.db``, the call ledger, which archives leave out (its tool outputs are personal data in clear)."""
    try:
        return {p.name: read_model(p) for p in sorted(home.glob("*.db")) if p.name != "tools.db"}
    except sqlite3.Error:
        return {}


@pytest.fixture(scope="module")
def backed_up(tmp_path_factory, model):
    """The original stack with data made through the API, backed up with `hermes backup` as the admin role, then
    stopped: (tmp folder, original home, archive, stream states at the backup, `hermes backup`'s output)."""
    tmp = tmp_path_factory.mktemp("backup")
    (tmp / "original").mkdir()
    original = HermesUp(tmp / "original", **stack_env(model)).start()
    url = f"nats://127.0.0.1:{original.env['HERMES_NATS_PORT']}"
    try:
        with httpx.Client(base_url=original.base_url, timeout=30) as client:
            original.wait_healthy(client)
            make_data(client, original.home)
        admin = BusSettings(nats_url=url, nats_nkey_seed_file=original.admin_seed)
        before = settle(admin)
        backups = tmp / "backups"
        refused = hermes("backup", "--to", str(backups), home=original.home, NATS_URL=url)
        assert refused.returncode == 2 and "[passphrase_required]" in refused.stderr, refused.stderr
        made = hermes(
            "backup", "--to", str(backups), home=original.home, NATS_URL=url, HERMES_BACKUP_PASSPHRASE=PASSPHRASE
        )
        assert made.returncode == 0, made.stdout + made.stderr
        keyless = hermes("backup", "--without-key", "--to", str(tmp / "keyless"), home=original.home, NATS_URL=url)
        assert keyless.returncode == 0 and "instance key left out" in keyless.stdout, keyless.stdout + keyless.stderr
        assert "left out (a secret, --without-key): identity/instance.key" in keyless.stdout
        assert "no key file" in keyless.stdout and not (tmp / "keyless" / KEY_FILE).exists()
        assert asyncio.run(stream_states(admin)) == before, "something was appended during the backup"
        verified = verify_report(original.home, url)
    finally:
        original.stop()
    [archive] = list(backups.glob("hermes-backup-*.tar.gz"))
    return tmp, original.home, archive, before, made.stdout, verified


def verify_report(home: Path, url: str) -> dict:
    """`hermes verify --json` against a running stack: it must pass and have signed checkpoints."""
    done = hermes("verify", "--json", home=home, NATS_URL=url)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout[: done.stdout.rindex("}") + 1])
    assert report["ok"] and report["checkpoints"] >= 1 and report["attestations"] >= 1, report
    return report


def test_a_restored_home_has_every_message_file_and_read_model_of_the_original(backed_up, model):
    tmp, original, archive, before, printed, verified = backed_up
    assert str(archive) in printed and "instance key sealed" in printed
    key_file = archive.parent / KEY_FILE
    assert f"written to {key_file}" in printed and key_file.stat().st_mode & 0o777 == 0o600
    keys = read_key_file(key_file, PASSPHRASE.encode())
    assert {k.key_id.partition(".")[0] for k in keys} >= {"thread", "preference", "schedule"}
    manifest = check_archive(archive)
    archived = {s.name: (s.messages, s.first_seq, s.last_seq) for s in manifest.streams}
    assert archived == {name: (count, max(first, 1), last) for name, (count, first, last) in before.items()}
    assert "identity/instance.key" in manifest.sealed and set(manifest.sealed) <= SECRETS
    assert not any(m.path.endswith(("instance.key", ".nk", ".log")) for m in manifest.members)
    assert not {"home/cli.toml", "home/mcp.toml"} & {m.path for m in manifest.members}
    want = read_models(original)
    assert {"orchestrator.db", "learner.db", "router.db"} <= set(want)

    (tmp / "restored").mkdir()
    home = tmp / "restored" / "home"
    done = hermes("restore", str(archive), home=home, HERMES_BACKUP_PASSPHRASE=PASSPHRASE)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Start it with `hermes up`" in done.stdout
    assert f"data keys: {len(keys)} imported from {key_file}" in done.stdout and "unreadable" not in done.stdout
    assert not list(home.glob(".hermes-restore-*")) and not [p for p in home.parent.iterdir() if p != home]

    # the files: SOUL.md, the workspace, the key (0600 in 0700); nothing `hermes up` or a replay makes
    assert (home / "SOUL.md").read_text() == (original / "SOUL.md").read_text() and SOUL in (
        home / "SOUL.md"
    ).read_text()
    assert (home / "workspace" / "default" / "notes.md").read_text() == NOTES
    key = home / "identity" / "instance.key"
    assert key.read_bytes() == (original / "identity" / "instance.key").read_bytes()
    assert key.stat().st_mode & 0o777 == 0o600 and key.parent.stat().st_mode & 0o777 == 0o700
    for gone in ("credentials", "logs", "orchestrator.db", "learner.db", "router.db", "notary.db", "nats.conf"):
        assert not (home / gone).exists(), gone

    # every stream: the same messages (sequence, subject, header bytes, data) and consumers, read back over NATS
    asyncio.run(compare_streams(home, archive, tmp / "reread", before))

    # `hermes up` on the restored home replays the log into read models equal to the original's, row for row
    again = HermesUp(tmp / "restored", **stack_env(model)).start()
    try:
        with httpx.Client(base_url=again.base_url, timeout=30) as client:
            again.wait_healthy(client)
            assert client.get("/api/soul").json()["data"]["text"].strip() == SOUL
        try:
            wait_for(lambda: read_models(home) == want, 90, interval_s=1)
        except AssertionError:
            pass  # the comparison below says where they differ
        url = f"nats://127.0.0.1:{again.env['HERMES_NATS_PORT']}"
        after = asyncio.run(stream_states(BusSettings(nats_url=url, nats_nkey_seed_file=again.admin_seed)))
        assert verify_report(home, url) == verified  # the same log, checkpoints, root and keys
    finally:
        again.stop()
    assert after == before, "the restored stack appended to the log"
    got = read_models(home)
    assert sorted(got) == sorted(want)
    for name, tables in want.items():
        assert sorted(got[name]) == sorted(tables), name
        for table, rows in tables.items():
            assert got[name][table] == rows, f"{name}:{table}"


def restore_and_replay(root: Path, archive: Path, model: AgentModel, want: dict, *args: str) -> tuple[str, dict]:
    """``hermes restore`` into ``root/home``, then ``hermes up`` there until its read models equal ``want`` or stop
    changing: (the restore's output, the read models)."""
    done = hermes("restore", str(archive), *args, home=root / "home", HERMES_BACKUP_PASSPHRASE=PASSPHRASE)
    assert done.returncode == 0, done.stdout + done.stderr
    stack = HermesUp(root, **stack_env(model)).start()
    seen: list[dict] = []

    def settled() -> bool:
        seen.append(read_models(stack.home))
        return seen[-1] == want or (len(seen) > 8 and bool(seen[-1]) and all(m == seen[-1] for m in seen[-8:]))

    try:
        with httpx.Client(base_url=stack.base_url, timeout=30) as client:
            stack.wait_healthy(client)
        wait_for(settled, 120, interval_s=1)
    finally:
        stack.stop()
    return done.stdout, read_models(stack.home)


def test_without_the_key_file_the_personal_rows_are_missing_and_with_it_they_come_back(backed_up, model):
    tmp, original, archive, _, _, _ = backed_up
    want = read_models(original)
    bare = tmp / "bare"  # the archive alone, as copied elsewhere without its folder's key file
    bare.mkdir()
    shutil.copy2(archive, bare / archive.name)

    printed, got = restore_and_replay(tmp / "nokeys", bare / archive.name, model, want)
    assert "no key file" in printed and "stay unreadable" in printed, printed
    assert sorted(got) == sorted(want) and got != want
    for name, table in PERSONAL_TABLES:  # the thread, preference, schedule, memory, rating: sealed, unread
        assert want[name][table] and got[name][table] == [], f"{name}:{table}"
    for text in ("plan a vegetable garden", "a small budget", "B-NIGHT tidy up"):
        assert text in repr(want) and text not in repr(got), text
    for name in ("notary.db", "skills.db"):  # no personal data in them: as they were
        assert got.get(name) == want.get(name), name

    key_file = archive.parent / KEY_FILE
    printed, again = restore_and_replay(tmp / "withkeys", bare / archive.name, model, want, "--keys", str(key_file))
    assert f"imported from {key_file}" in printed and "unreadable" not in printed, printed
    for name, tables in want.items():
        for table, rows in tables.items():
            assert again[name][table] == rows, f"{name}:{table}"


def test_a_restore_refuses_a_full_home_a_damaged_archive_and_a_wrong_passphrase(backed_up):
    tmp, original, archive, _, _, _ = backed_up
    listing = sorted(p.name for p in original.iterdir())
    full = hermes("restore", str(archive), home=original, HERMES_BACKUP_PASSPHRASE=PASSPHRASE)
    assert full.returncode == 1 and "[home_not_empty]" in full.stderr, full.stderr
    assert sorted(p.name for p in original.iterdir()) == listing

    damaged = bytearray(archive.read_bytes())
    damaged[len(damaged) // 2] ^= 0x01
    (tmp / "damaged.tar.gz").write_bytes(damaged)
    alone = tmp / "alone"  # no key file beside it: the archive's own sealed secrets meet the wrong passphrase
    alone.mkdir()
    shutil.copy2(archive, alone / archive.name)
    key_file = archive.parent / KEY_FILE
    (tmp / "cut.sealed").write_bytes(key_file.read_bytes()[:20])
    for path, passphrase, code, args, named in (
        (tmp / "damaged.tar.gz", PASSPHRASE, "corrupt", (), ""),
        (alone / archive.name, "wrong", "bad_passphrase", (), "identity/instance.key"),
        (archive, "wrong", "bad_passphrase", (), str(key_file)),  # the key file beside it: opened first
        (alone / archive.name, PASSPHRASE, "corrupt", ("--keys", str(tmp / "cut.sealed")), "cut.sealed"),
        (alone / archive.name, PASSPHRASE, "not_found", ("--keys", str(tmp / "none.sealed")), "none.sealed"),
    ):
        target = tmp / f"refused-{code}" / "home"
        refused = hermes("restore", str(path), *args, home=target, HERMES_BACKUP_PASSPHRASE=passphrase)
        assert refused.returncode == 1 and f"[{code}]" in refused.stderr and named in refused.stderr, refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1
        assert not target.exists() and not (target.parent.exists() and list(target.parent.iterdir()))
    unreadable = hermes("restore", str(archive), "--passphrase-file", str(tmp / "none"), home=tmp / "x" / "home")
    assert unreadable.returncode == 2 and not (tmp / "x" / "home").exists()
    nowhere = f"nats://127.0.0.1:{free_port()}"
    lost = hermes("backup", "--without-key", "--to", str(tmp / "lost"), home=original, NATS_URL=nowhere)
    assert lost.returncode == 1 and "[nats_unreachable]" in lost.stderr and not (tmp / "lost").exists()


async def compare_streams(home: Path, archive: Path, scratch: Path, before: dict) -> None:
    """On a nats-server over the restored store: each stream's state as at the backup, every message as archived
    (read again the same way), every durable consumer back at its acknowledged position."""
    with tarfile.open(archive) as tar:
        tar.extractall(scratch / "archive", filter="data")
    with local_nats(home / "nats") as settings:
        nc = await open_bus(settings, "test-reread")
        try:
            for name, (count, first, last) in before.items():
                state = (await api(nc, f"STREAM.INFO.{name}"))["state"]
                assert (state["messages"], state["first_seq"], state["last_seq"]) == (count, first, last), name
                dump = await dump_stream(nc, name, scratch / name)
                assert dump is not None and dump.messages == count
                archived = [
                    _timeless(m) for m in read_messages(scratch / "archive" / "streams" / name / "messages.jsonl")
                ]
                assert [_timeless(m) for m in read_messages(scratch / name / "messages.jsonl")] == archived, name
                stored = json.loads((scratch / "archive" / "streams" / name / "stream.json").read_text())
                for consumer in stored["consumers"]:
                    info = await api(nc, f"CONSUMER.INFO.{name}.{consumer['name']}")
                    assert info["ack_floor"]["stream_seq"] == consumer["ack_floor"], consumer["name"]
                    assert _own(info["config"]) == _own(consumer["config"]), consumer["name"]
        finally:
            await nc.close()


def _own(config: dict) -> dict:
    """A configuration without the metadata the server sets itself (``_nats.level``, ``_nats.ver``...)."""
    metadata = {k: v for k, v in (config.get("metadata") or {}).items() if not k.startswith("_nats.")}
    return {**config, "metadata": metadata}


def _timeless(message: dict) -> dict:
    """A message record without its store time (a restore stores each message anew)."""
    return {k: v for k, v in message.items() if k != "time"}


def test_the_notary_backs_up_on_its_schedule_and_keeps_the_newest(model, tmp_path):
    """The notary's own bus role (locked bus: no violation allowed) writes an archive at every due time (a cron of
    every 2 s here; the default is 0 2 * * *), the key sealed, the newest 2 kept, the gauge set."""
    stack = HermesUp(
        tmp_path,
        **stack_env(model),
        HERMES_BACKUP_CRON="* * * * * */2",  # croniter: the sixth field is seconds
        HERMES_BACKUP_KEEP="2",
        HERMES_BACKUP_PASSPHRASE=PASSPHRASE,
    ).start()
    try:
        with httpx.Client(base_url=stack.base_url, timeout=30) as client:
            stack.wait_healthy(client)
            pref = {"category": "constraint", "key": "budget", "value": "a small budget"}  # a sealed event, a key
            wait_for(lambda: client.post("/api/learn/preferences", json=pref).status_code in (200, 201, 202), 30)
        port = stack.metrics_ports()["notary"]

        def backups_ok() -> float:
            text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
            found = re.search(r'^hermes_backups_total\{outcome="ok"\} (\S+)$', text, re.M)
            return float(found.group(1)) if found else 0.0

        wait_for(lambda: backups_ok() >= 3, 60, interval_s=0.5)
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        assert re.search(r"^hermes_backup_last_success_timestamp_seconds (\S+)$", metrics, re.M).group(1) != "0.0"
        archives = sorted((stack.home / "backups").glob("hermes-backup-*.tar.gz"))
        # the newest two kept; a third may be named already and not yet pruned (pruning follows the rename)
        assert 1 <= len(archives) <= 3, archives
        manifest = check_archive(archives[-1])
        assert "identity/instance.key" in manifest.sealed and set(manifest.sealed) <= SECRETS
        assert {s.name for s in manifest.streams} >= {"HERMES_EVENTS", "HERMES_COMMANDS"}
        # the data keys beside the archives, read with the notary's own bus rights (keys="export")
        key_file = stack.home / "backups" / KEY_FILE

        def keys_written() -> bool:
            return any(k.key_id.startswith("preference.") for k in read_key_file(key_file, PASSPHRASE.encode()))

        wait_for(keys_written, 30, interval_s=0.5)
    finally:
        stack.stop()  # fails on any bus permissions violation
