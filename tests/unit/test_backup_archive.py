"""The backup archive (:mod:`hermes_proto.backup`) against a real nats-server: the manifest lists every member with a
checksum that holds; what a home contributes and what it does not (read models, logs, credentials, the NATS store);
the instance key only sealed (scrypt + AES-GCM), a wrong passphrase refused before anything is written; a flipped byte
found and the member named; unsafe member paths refused; ``keep`` pruning; and a restore that gives every message its
original sequence (stored duplicates of a ``Nats-Msg-Id``, a work queue starting above 1 with gaps, a consumed-empty
stream) and every durable consumer its position.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import hashlib
import io
import json
import os
import sqlite3
import subprocess
import tarfile
import threading
from contextlib import contextmanager
from pathlib import Path

import pytest
from nats.js.api import AckPolicy, ConsumerConfig

from hermes_proto import backup as backup_module
from hermes_proto import backup_streams
from hermes_proto.backup import BackupError, check_archive, open_bus, restore_backup, write_backup
from hermes_proto.backup_home import SealError, read_passphrase, seal, unseal
from hermes_proto.backup_skills import bundle_skills, unbundle_skills, valid_head
from hermes_proto.backup_streams import api, dump_stream, read_messages

from hermes_cli.backup import local_nats
from hermes_cli.busadmin import nats_url
from hermes_cli.natsserver import nats_server_args
from hermes_cli.supervision import Program, RestartPolicy, render_config

PASS = b"a passphrase"
KEY = "9f" * 32
TOKEN = "api-token-4f1c"
MCP_SECRET = "mcp-header-secret-77"
STREAMS = ["HERMES_EVENTS", "HERMES_COMMANDS", "HERMES_EXEC", "HERMES_DLQ", "HERMES_INBOX"]


def git(repo: Path, *args: str) -> str:
    argv = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(repo), *args]
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A home as `hermes up` and its services leave it, with a user's files in it."""
    home = tmp_path / "home"
    for rel, text in {
        "SOUL.md": "You are Hermes.\n",
        "agents/writer.toml": 'tools = ["file_read"]\n',
        "mcp.toml": f'[servers.time]\ncommand = "t"\nheaders = {{ Authorization = "{MCP_SECRET}" }}\n',
        "cli.toml": f'url = "http://127.0.0.1:5000"\ntoken = "{TOKEN}"\n',
        "workspace/default/.git/config": "[core]\n",
        "permissions.toml": 'allow = ["shell(git:*)"]\n',
        "workspace/default/notes.md": "basil\n",
        "identity/instance.pub": "ab" * 32 + "\n",
        "logs/gateway.log": "log\n",
        "credentials/admin.nk": "SUAseed\n",
        "nats/jetstream/x": "store\n",
        "nats.conf": "accounts {}\n",
        "supervisord.conf": "[supervisord]\n",
        "orchestrator.db": "a read model\n",
        "orchestrator.db-wal": "journal\n",
    }.items():
        (home / rel).parent.mkdir(parents=True, exist_ok=True)
        (home / rel).write_text(text)
    (home / "identity" / "instance.key").write_text(KEY + "\n")
    os.chmod(home / "identity" / "instance.key", 0o600)
    for name in ("tools.db", "skills.db"):  # the call ledger (never archived: personal) and usage counts
        db = sqlite3.connect(home / name)
        db.execute("CREATE TABLE calls (call_id TEXT PRIMARY KEY, state TEXT)")
        db.execute("INSERT INTO calls VALUES ('c1', 'done')")
        db.commit()
        db.close()
    (home / "skills" / "hello").mkdir(parents=True)
    (home / "skills" / "hello" / "skill.toml").write_text('name = "hello"\n')
    git(home / "skills", "init", "-q", "-b", "main")
    git(home / "skills", "add", "-A")
    git(home / "skills", "commit", "-qm", "hello")
    (home / "workspace" / "default" / "link").symlink_to("/etc/passwd")
    return home


async def seed(js) -> None:
    """Messages whose sequences are hard to give back: two stored copies of one Nats-Msg-Id, a work queue whose first
    message is above 1 with a gap inside, an execution queue consumed empty, a filtered consumer half way."""
    config = (await js.stream_info("HERMES_EVENTS")).config
    config.duplicate_window = 0.1
    await js.update_stream(config)
    for i in range(40):
        headers = {"Nats-Msg-Id": "same" if i in (3, 30) else f"e{i}", "traceparent": f"00-{i:032x}-{i:016x}-01"}
        await js.publish(f"hermes.evt.thread.t{i % 4}.draft_presented", f'{{"n":{i}}}'.encode(), headers=headers)
        if i == 3:
            await asyncio.sleep(0.3)  # past the window: the second copy is stored
    config.duplicate_window = 600
    await js.update_stream(config)
    for i in range(8):
        await js.publish("hermes.cmd.submit_idea", f"c{i}".encode(), headers={"Nats-Msg-Id": f"c{i}"})
    await js.publish("hermes.exec.talos", b"x", headers={"Nats-Msg-Id": "x1"})
    for stream, durable, subject, acks in (
        ("HERMES_COMMANDS", "orchestrator-commands", "hermes.cmd.>", [0, 1, 2, 5]),
        ("HERMES_EXEC", "edge-talos", "hermes.exec.talos", [0]),
        ("HERMES_EVENTS", "learner-reactor", "hermes.evt.thread.t1.>", list(range(6))),
    ):
        await js.add_consumer(
            stream, ConsumerConfig(durable_name=durable, ack_policy=AckPolicy.EXPLICIT, filter_subject=subject)
        )
        sub = await js.pull_subscribe_bind(durable=durable, stream=stream)
        msgs = await sub.fetch(max(acks) + 1, timeout=5)
        for i in acks:
            await msgs[i].ack_sync()
        await sub.unsubscribe()


async def states(nc) -> dict:
    found = {}
    for name in STREAMS:
        info = await api(nc, f"STREAM.INFO.{name}")
        consumers = (await api(nc, f"CONSUMER.LIST.{name}"))["consumers"]
        floors = {c["name"]: c["ack_floor"]["stream_seq"] for c in consumers}
        state = info["state"]
        found[name] = (state["messages"], state["first_seq"], state["last_seq"], floors)
    return found


async def test_a_restore_gives_every_message_its_sequence_and_every_consumer_its_place(js_client, home, tmp_path):
    nc, js = js_client
    await seed(js)
    before = await states(nc)
    assert before["HERMES_COMMANDS"][:3] == (4, 4, 8) and before["HERMES_EXEC"][:3] == (0, 2, 1)
    result = await write_backup(nc, home, tmp_path / "out", PASS, streams=STREAMS)
    originals = {}
    for name in STREAMS:
        await dump_stream(nc, name, tmp_path / "orig" / name)
        originals[name] = [
            {k: v for k, v in m.items() if k != "time"}
            for m in read_messages(tmp_path / "orig" / name / "messages.jsonl")
        ]
    assert [m["hdrs"] is not None for m in originals["HERMES_EVENTS"]].count(True) == 40
    assert sum(base64.b64decode(m["hdrs"]).count(b"Nats-Msg-Id: same\r\n") for m in originals["HERMES_EVENTS"]) == 2

    target = tmp_path / "restored"
    restored = await restore_backup(result.path, target, PASS, local_nats)
    assert restored.messages == {name: before[name][0] for name in STREAMS} and restored.consumers == 3
    with local_nats(target / "nats") as settings:
        nc2 = await open_bus(settings, "test")
        try:
            assert await states(nc2) == before
            for name in STREAMS:
                await dump_stream(nc2, name, tmp_path / "again" / name)
                again = read_messages(tmp_path / "again" / name / "messages.jsonl")
                assert [{k: v for k, v in m.items() if k != "time"} for m in again] == originals[name], name
            config = (await api(nc2, "STREAM.INFO.HERMES_EVENTS"))["config"]
            assert config["duplicate_window"] == 600 * 10**9
        finally:
            await nc2.close()
    # the files: as they were, the key back 0600 in a 0700 folder, the skills repository at the same commit
    for rel in ("SOUL.md", "agents/writer.toml", "mcp.toml", "cli.toml", "workspace/default/notes.md"):
        assert (target / rel).read_bytes() == (home / rel).read_bytes(), rel
    key = target / "identity" / "instance.key"
    assert key.read_text() == KEY + "\n" and key.stat().st_mode & 0o777 == 0o600
    assert key.parent.stat().st_mode & 0o777 == 0o700
    assert all((target / rel).stat().st_mode & 0o777 == 0o600 for rel in ("cli.toml", "mcp.toml"))
    assert git(target / "skills", "rev-parse", "HEAD") == git(home / "skills", "rev-parse", "HEAD")
    assert git(target / "skills", "status", "--porcelain") == "" and git(target / "skills", "remote") == ""
    db = sqlite3.connect(target / "skills.db")
    assert db.execute("SELECT * FROM calls").fetchall() == [("c1", "done")]
    db.close()
    for gone in (
        "tools.db",
        "orchestrator.db",
        "orchestrator.db-wal",
        "logs",
        "credentials",
        "nats.conf",
        "supervisord.conf",
    ):
        assert not (target / gone).exists(), gone
    assert not (target / "workspace" / "default" / ".git").exists()
    assert "skipped at backup: workspace/default/.git" in restored.warnings
    assert not [p for p in tmp_path.iterdir() if ".restore-" in p.name] and not list(target.glob(".*restore*"))


async def test_the_manifest_lists_every_member_with_a_checksum_and_leaves_out_what_is_rebuilt(
    js_client, home, tmp_path
):
    nc, _ = js_client
    result = await write_backup(nc, home, tmp_path / "out", PASS, streams=STREAMS)
    assert result.path.name.startswith("hermes-backup-") and result.path.stat().st_mode & 0o777 == 0o600
    assert check_archive(result.path) == result.manifest
    with tarfile.open(result.path) as tar:
        names = tar.getnames()
        assert names[0] == "manifest.json"
        for entry in result.manifest.members:
            data = tar.extractfile(entry.path).read()
            assert (len(data), hashlib.sha256(data).hexdigest()) == (entry.size, entry.sha256)
            assert KEY.encode() not in data, entry.path
            assert TOKEN.encode() not in data and MCP_SECRET.encode() not in data, entry.path
    plain = sorted(m.path.removeprefix("home/") for m in result.manifest.members if m.path.startswith("home/"))
    assert plain == [
        "SOUL.md",
        "agents/writer.toml",
        "identity/instance.pub",
        "permissions.toml",
        "skills.db",
        "workspace/default/notes.md",
    ]
    # the secrets only sealed: the key, the API token (cli.toml), the MCP servers' credentials (mcp.toml)
    assert result.manifest.sealed == ["cli.toml", "identity/instance.key", "mcp.toml"]
    assert {f"secrets/{rel}.sealed" for rel in result.manifest.sealed} <= set(names)
    assert result.manifest.skipped_secrets == []
    assert "skills.bundle" in names and result.manifest.skills_head == "refs/heads/main"
    assert result.manifest.skipped == ["workspace/default/.git", "workspace/default/link"]
    streams = {s.name: (s.messages, s.last_seq) for s in result.manifest.streams}
    assert streams == {name: (0, 0) for name in STREAMS} and result.manifest.created_at.endswith("+00:00")


async def test_a_key_needs_a_passphrase_and_a_wrong_one_restores_nothing(js_client, home, tmp_path):
    nc, _ = js_client
    with pytest.raises(BackupError) as refused:
        await write_backup(nc, home, tmp_path / "out", None, streams=STREAMS)
    assert refused.value.code == "passphrase_required" and not list((tmp_path / "out").glob("*"))
    without = await write_backup(nc, home, tmp_path / "without", None, include_key=False, streams=STREAMS)
    assert without.manifest.sealed == [] and not any("secrets/" in m.path for m in without.manifest.members)
    assert without.manifest.skipped_secrets == ["cli.toml", "identity/instance.key", "mcp.toml"]
    assert not {"home/cli.toml", "home/mcp.toml"} & {m.path for m in without.manifest.members}
    sealed = await write_backup(nc, home, tmp_path / "out", PASS, streams=STREAMS)
    for passphrase, code in ((b"not it", "bad_passphrase"), (None, "passphrase_required")):
        with pytest.raises(BackupError) as failed:
            await restore_backup(sealed.path, tmp_path / "target", passphrase, local_nats)
        assert failed.value.code == code
        assert not (tmp_path / "target").exists() and not [p for p in tmp_path.iterdir() if ".restore-" in p.name]


def test_sealing_round_trips_and_binds_passphrase_and_label():
    blob = seal(KEY.encode(), PASS, "identity/instance.key")
    assert KEY.encode() not in blob and blob != seal(KEY.encode(), PASS, "identity/instance.key")  # fresh salt
    assert len(blob) == 4 + 16 + 12 + len(KEY) + 16
    assert unseal(blob, PASS, "identity/instance.key") == KEY.encode()
    for passphrase, label in ((b"wrong", "identity/instance.key"), (PASS, "identity/instance.key.next")):
        with pytest.raises(SealError):
            unseal(blob, passphrase, label)
    with pytest.raises(SealError):
        unseal(blob[:-1] + bytes([blob[-1] ^ 1]), PASS, "identity/instance.key")


def rewrite(source: Path, target: Path, change) -> None:  # noqa: ANN001
    """Copy the archive ``source`` to ``target`` member by member, ``change(info, data)`` → (info, data) or None."""
    with tarfile.open(source) as old, tarfile.open(target, "w:gz") as new:
        for info in old.getmembers():
            data = old.extractfile(info).read() if info.isfile() else b""
            changed = change(info, data)
            if changed is not None:
                info, data = changed
                info.size = len(data)
                new.addfile(info, io.BytesIO(data) if info.isfile() else None)


async def test_a_flipped_byte_is_corrupt_and_names_the_member(js_client, home, tmp_path):
    nc, _ = js_client
    result = await write_backup(nc, home, tmp_path / "out", PASS, streams=STREAMS)

    def flip(info, data):  # noqa: ANN001, ANN202
        if info.name == "home/SOUL.md":
            data = bytes([data[0] ^ 0x20]) + data[1:]
        return info, data

    rewrite(result.path, tmp_path / "flipped.tar.gz", flip)
    with pytest.raises(BackupError) as corrupt:
        check_archive(tmp_path / "flipped.tar.gz")
    assert corrupt.value.code == "corrupt" and "home/SOUL.md" in corrupt.value.detail
    rewrite(
        result.path,
        tmp_path / "short.tar.gz",
        lambda info, data: None if info.name == "home/permissions.toml" else (info, data),
    )
    with pytest.raises(BackupError) as missing:
        check_archive(tmp_path / "short.tar.gz")
    assert missing.value.code == "corrupt" and "home/permissions.toml" in missing.value.detail
    raw = bytearray(result.path.read_bytes())
    for at in (len(raw) // 2, len(raw) - 6):  # inside the compressed data; in the gzip trailer's CRC
        damaged = bytearray(raw)
        damaged[at] ^= 0xFF
        (tmp_path / "damaged.tar.gz").write_bytes(damaged)
        with pytest.raises(BackupError) as unreadable:
            check_archive(tmp_path / "damaged.tar.gz")
        assert unreadable.value.code == "corrupt"
    with pytest.raises(BackupError) as not_found:
        check_archive(tmp_path / "nothing.tar.gz")
    assert not_found.value.code == "not_found"


@pytest.mark.parametrize(
    "name, link",
    [("home/../../escaped", None), ("/tmp/absolute", None), ("elsewhere/file", None), ("home/SOUL.md", "/etc/passwd")],
)
def test_unsafe_members_are_refused_and_nothing_is_written(tmp_path, name, link):
    data = b"pwned\n" if link is None else b""
    member = {"path": name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest(), "mode": 0o644}
    manifest = {"format": 1, "schema_version": 1, "created_at": "x", "members": [member], "streams": []}
    archive = tmp_path / "evil.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for path, content in (("manifest.json", json.dumps(manifest).encode()), (name, data)):
            info = tarfile.TarInfo(path)
            info.size = len(content)
            if link is not None and path == name:
                info.type, info.linkname = tarfile.SYMTYPE, link
            tar.addfile(info, io.BytesIO(content))
    assert gzip.open(archive).read(4)  # a readable archive: refused for what it holds
    with pytest.raises(BackupError) as refused:
        check_archive(archive)
    assert refused.value.code == "corrupt" and name in refused.value.detail
    with pytest.raises(BackupError):
        asyncio.run(restore_backup(archive, tmp_path / "a" / "home", None, local_nats))
    assert not (tmp_path / "escaped").exists() and not (tmp_path / "a" / "home").exists()


async def test_keep_prunes_all_but_the_newest_archives(js_client, home, tmp_path):
    nc, _ = js_client
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "notes.txt").write_text("mine")
    (dest / "hermes-backup-by-hand.tar.gz").write_text("not ours to prune")
    made = [await write_backup(nc, home, dest, PASS, keep=2, streams=STREAMS) for _ in range(3)]
    assert made[2].pruned == [made[0].path] and made[1].pruned == []
    assert sorted(p.name for p in dest.iterdir()) == sorted(  # the one data keys' file: never pruned
        ["notes.txt", "hermes-backup-by-hand.tar.gz", made[1].path.name, made[2].path.name, "hermes-keys.sealed"]
    )
    with pytest.raises(BackupError) as invalid:
        await write_backup(nc, home, dest, PASS, keep=0, streams=STREAMS)
    assert invalid.value.code == "invalid_keep"


async def test_a_restore_refuses_a_home_that_is_not_empty(js_client, home, tmp_path):
    nc, _ = js_client
    result = await write_backup(nc, home, tmp_path / "out", PASS, streams=STREAMS)
    with pytest.raises(BackupError) as refused:
        await restore_backup(result.path, home, PASS, local_nats)
    assert refused.value.code == "home_not_empty"
    (tmp_path / "empty").mkdir()
    restored = await restore_backup(result.path, tmp_path / "empty", PASS, local_nats)
    assert restored.home == tmp_path / "empty" and (tmp_path / "empty" / "SOUL.md").exists()


def test_backup_finds_the_nats_that_hermes_up_started(tmp_path, monkeypatch):
    monkeypatch.delenv("NATS_URL", raising=False)
    monkeypatch.delenv("HERMES_NATS_PORT", raising=False)
    assert nats_url(None, tmp_path) == "nats://127.0.0.1:4222"  # nothing recorded: the default port
    nats = Program("nats", nats_server_args(4333, tmp_path / "nats"), infrastructure=True)
    (tmp_path / "supervisord.conf").write_text(render_config([nats], tmp_path, RestartPolicy(), {}))
    assert nats_url(None, tmp_path) == "nats://127.0.0.1:4333"
    monkeypatch.setenv("HERMES_NATS_PORT", "4444")
    assert nats_url(None, tmp_path) == "nats://127.0.0.1:4444"
    monkeypatch.setenv("NATS_URL", "tls://bus.example:4222")
    assert nats_url(None, tmp_path) == "tls://bus.example:4222"


def forge(source: Path, target: Path, change=None, extra: dict[str, bytes] | None = None) -> None:  # noqa: ANN001
    """Copy the archive ``source`` to ``target`` with ``extra`` members added (listed in the manifest with their true
    checksums) and the manifest (a dict) passed through ``change``: an archive tampered with by someone who knows
    the format, so every checksum holds."""
    extra = extra or {}
    with tarfile.open(source) as old:
        members = [(info, old.extractfile(info).read()) for info in old.getmembers()]
    manifest = json.loads(members[0][1])
    for name, data in extra.items():
        manifest["members"].append(
            {"path": name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest(), "mode": 0o644}
        )
    manifest = change(manifest) if change is not None else manifest
    with tarfile.open(target, "w:gz") as new:
        for info, data in [(members[0][0], json.dumps(manifest).encode()), *members[1:]]:
            info.size = len(data)
            new.addfile(info, io.BytesIO(data))
        for name, data in extra.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            new.addfile(info, io.BytesIO(data))


def refused(archive: Path, target: Path) -> BackupError:
    """The error of both a check and a restore of ``archive`` into ``target`` (left absent)."""
    with pytest.raises(BackupError) as checked:
        check_archive(archive)
    with pytest.raises(BackupError) as restoring:
        asyncio.run(restore_backup(archive, target, PASS, local_nats))
    assert restoring.value.code == checked.value.code and not target.exists()
    return checked.value


@pytest.mark.parametrize(
    "member, text",
    [
        ("home/skills/.git/config", "[core]\n\tfsmonitor = touch {pwned}\n"),
        ("home/skills/.git/hooks/post-checkout", "#!/bin/sh\ntouch {pwned}\n"),
        ("home/workspace/p/.GIT/config", "[core]\n\tfsmonitor = touch {pwned}\n"),
    ],
)
async def test_git_metadata_in_an_archive_is_refused_and_never_runs(js_client, home, tmp_path, member, text):
    nc, _ = js_client
    result = await write_backup(nc, home, tmp_path / "out", PASS, streams=STREAMS)
    pwned = Path(f"/tmp/pwned-{os.urandom(8).hex()}")
    forge(result.path, tmp_path / "evil.tar.gz", extra={member: text.format(pwned=pwned).encode()})
    try:
        error = await asyncio.to_thread(refused, tmp_path / "evil.tar.gz", tmp_path / "target")
        assert error.code == "corrupt" and member in error.detail
        assert not pwned.exists()
    finally:
        pwned.unlink(missing_ok=True)


@pytest.mark.parametrize(
    "sealed, head",
    [
        (["../../escaped"], None),
        (["identity/../../escaped"], None),
        (["identity/a/b"], None),
        (["identity/.hidden"], None),
        (["identity/instance.key", "identity/instance.key"], None),
        (["identity/instance.key.next"], None),  # not among the members
        ([], None),  # a sealed member the manifest does not name
        (["identity/instance.key"], "--upload-pack=touch /tmp/x"),
        (["identity/instance.key"], "-q"),
        (["identity/instance.key"], "refs/heads/../../x"),
        (["identity/instance.key"], "abc123"),
    ],
)
async def test_unsafe_sealed_paths_and_skills_heads_are_refused(js_client, home, tmp_path, sealed, head):
    nc, _ = js_client
    result = await write_backup(nc, home, tmp_path / "out", PASS, include_key=False, streams=STREAMS)
    key = seal(KEY.encode(), PASS, "identity/instance.key")

    def change(manifest: dict) -> dict:
        return {**manifest, "sealed": sealed, "skills_head": head or manifest["skills_head"]}

    forge(result.path, tmp_path / "evil.tar.gz", change, {"secrets/identity/instance.key.sealed": key})
    error = await asyncio.to_thread(refused, tmp_path / "evil.tar.gz", tmp_path / "target")
    assert error.code == "corrupt" and ("manifest.json" in error.detail or "secrets/" in error.detail)
    assert not (tmp_path / "escaped").exists() and not (tmp_path.parent / "escaped").exists()


def test_the_skills_repository_is_made_in_a_new_folder_without_any_git_configuration(home, tmp_path, monkeypatch):
    pwned = tmp_path / f"pwned-{os.urandom(4).hex()}"
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "post-checkout").write_text(f"#!/bin/sh\ntouch {pwned}\n")
    (hooks / "post-checkout").chmod(0o755)
    (tmp_path / "user").mkdir()
    config = f"[core]\n\tfsmonitor = touch {pwned}\n\thooksPath = {hooks}\n"
    (tmp_path / "user" / ".gitconfig").write_text(config)
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(tmp_path / "user" / ".gitconfig"))
    head = bundle_skills(home, tmp_path / "skills.bundle")
    assert head == "refs/heads/main"
    unbundle_skills(tmp_path / "skills.bundle", tmp_path / "restored", head)
    assert git(tmp_path / "restored", "rev-parse", "HEAD") == git(home / "skills", "rev-parse", "HEAD")
    assert not pwned.exists()
    (tmp_path / "existing" / ".git").mkdir(parents=True)
    (tmp_path / "existing" / ".git" / "config").write_text(config)
    with pytest.raises(FileExistsError):
        unbundle_skills(tmp_path / "skills.bundle", tmp_path / "existing", head)
    for bad in ("--upload-pack=x", "-q", "refs/heads/-x", "refs/heads/a..b", "HEAD", "ab" * 19):
        assert not valid_head(bad), bad
        with pytest.raises(ValueError):
            unbundle_skills(tmp_path / "skills.bundle", tmp_path / "never", bad)
    assert valid_head("ab" * 20) and valid_head("ab" * 32) and valid_head("refs/heads/feature/x-1.2")
    assert not pwned.exists() and not (tmp_path / "never").exists()


async def test_a_backup_hashes_and_writes_off_the_event_loop(js_client, home, tmp_path, monkeypatch):
    """A scheduled backup runs in the notary's event loop: hashing the staged files and writing the messages must
    happen in worker threads (a loop thread that hashes a large workspace stalls every other task)."""
    nc, js = js_client
    for i in range(300):
        await js.publish("hermes.cmd.submit_idea", f"c{i}".encode())
    loop_thread = threading.get_ident()
    threads: dict[str, set[int]] = {"member_entry": set(), "write_lines": set()}

    def spy(name, real):  # noqa: ANN001, ANN202
        def call(*args):  # noqa: ANN002, ANN202
            threads[name].add(threading.get_ident())
            return real(*args)

        return call

    monkeypatch.setattr(backup_module, "member_entry", spy("member_entry", backup_module.member_entry))
    monkeypatch.setattr(backup_streams, "write_lines", spy("write_lines", backup_streams.write_lines))
    result = await write_backup(nc, home, tmp_path / "out", PASS, streams=STREAMS)
    assert {s.name: s.messages for s in result.manifest.streams}["HERMES_COMMANDS"] == 300
    assert threads["member_entry"] and threads["write_lines"]
    assert loop_thread not in threads["member_entry"] | threads["write_lines"]


def test_the_passphrase_is_read_one_way(tmp_path):
    file = tmp_path / "pass"
    for data, want in (
        (b"secret\n", b"secret"),
        (b"secret\r\n", b"secret"),
        (b"secret\n\n", b"secret\n"),
        (b" two words ", b" two words "),
        (b"\n", None),
        (b"", None),
    ):
        file.write_bytes(data)
        assert read_passphrase(file, "from the environment") == want, data
    assert read_passphrase(None, "from the environment") == b"from the environment"
    assert read_passphrase(None, "") is None and read_passphrase(None, None) is None
    with pytest.raises(OSError):
        read_passphrase(tmp_path / "missing", "from the environment")


async def test_a_restore_stages_inside_the_home_and_a_failure_leaves_it_empty(js_client, home, tmp_path):
    """Staged inside the home (a mount point: no rename across file systems), 0700 while the key lies there open;
    a failure removes the stage: an empty home stays (empty), a new one goes."""
    nc, _ = js_client
    result = await write_backup(nc, home, tmp_path / "out", PASS, streams=STREAMS)
    seen: list[tuple[Path, int, int]] = []

    @contextmanager
    def spying(store: Path):  # noqa: ANN202
        stage = next(p for p in store.parents if p.name.startswith(".hermes-restore-"))
        key = store.parent / "identity" / "instance.key"
        seen.append((stage.parent, stage.stat().st_mode & 0o777, key.stat().st_mode & 0o777))
        assert not [p for p in tmp_path.iterdir() if "restore" in p.name]
        with local_nats(store) as settings:
            yield settings

    @contextmanager
    def failing(store: Path):  # noqa: ANN202
        raise BackupError("nats_failed", "no nats-server here")
        yield

    mount = tmp_path / "mount"
    mount.mkdir()
    for target in (mount, tmp_path / "new" / "home"):
        with pytest.raises(BackupError) as failed:
            await restore_backup(result.path, target, PASS, failing)
        assert failed.value.code == "nats_failed"
        assert (target == mount) == target.exists() and (not target.exists() or not list(target.iterdir()))
    restored = await restore_backup(result.path, mount, PASS, spying)
    assert seen == [(mount, 0o700, 0o600)] and restored.home == mount
    assert (mount / "SOUL.md").exists() and not list(mount.glob(".hermes-restore-*"))
