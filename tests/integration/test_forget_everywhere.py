"""Forgetting reaches every copy (issue 25): the whole system (``hermes up``, auth on: ann, bob, an admin; the model a
scripted OpenAI-compatible server on loopback), every byte searched.

ann and bob each submit an idea and answer its questions, chat, state a preference and run an agent; every text
carries the person's marker. ``hermes backup`` writes archive 1 (and the folder's key file). ``hermes forget --user
ann``; ``hermes backup`` into the same folder writes archive 2 and replaces the key file. Then, with bob's markers
found each time (the search works): no file under the stopped original (every SQLite read model and its WAL, the
NATS store of every stream and of the keys' bucket, the logs) holds any of ann's markers; ``hermes up`` again after
deleting every read model replays the log and still holds none; archive 1 — made BEFORE the forget — restored with
the folder's key file into a fresh home and replayed holds none, and neither do the archives themselves. Known, and
left out of the search: the workspace folder (the user's own files; an agent read ann's note there).
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import httpx
import pytest
from fakes.agent_model import MODEL, AgentModel, wait_for
from stack import HermesUp
from test_backup_restore import PASSPHRASE, hermes, read_models

from hermes_proto.keystore import KEY_FILE

ANN, BOB, ROOT = "tok-ann-0123456789abcdef", "tok-bob-0123456789abcdef", "tok-root-0123456789abcdef"
WORDS = ("IDEA", "ANSWER", "CHAT", "PREF", "RUN", "NOTE")


def markers(who: str) -> list[bytes]:
    return [f"{who}-{word}-7f3a".encode() for word in WORDS]


@pytest.fixture(scope="module")
def model():
    script = {
        f"{who}-RUN-7f3a": [[("file_read", {"path": f"{who.lower()}.md"})], "The note says: {result}"]
        for who in ("ANN", "BOB")
    }
    server = AgentModel(script).start()
    yield server
    server.stop()


def env(model: AgentModel) -> dict[str, str]:
    return dict(
        HERMES_LOCAL_MODEL="false",
        BACKEND_TALOS_TYPE="openai",
        BACKEND_TALOS_HOST="127.0.0.1",
        BACKEND_TALOS_PORT=str(model.port),
        BACKEND_TALOS_MODELS=MODEL,
        HERMES_API_TOKENS=f"ann:user:{ANN},bob:user:{BOB},root:admin:{ROOT}",
    )


def client(up: HermesUp, token: str) -> httpx.Client:
    return httpx.Client(base_url=up.base_url, timeout=60, headers={"Authorization": f"Bearer {token}"})


def data(c: httpx.Client, who: str) -> None:
    """An idea answered to completion, a chat turn, a stated preference and an agent run, each with ``who``'s marker."""
    idea, answer, chat, pref, run, _ = (m.decode() for m in markers(who))
    tid = c.post("/api/submit", json={"idea": f"{idea} plan a vegetable garden"}).json()["data"]["thread_id"]

    def status() -> dict:
        r = c.get(f"/api/threads/{tid}/status")
        return r.json()["data"] if r.status_code == 200 else {}

    current = wait_for(lambda: (s := status()).get("status") == "completed" or s.get("answerable") and s, 60)
    if current is not True and current.get("answerable"):
        answers = [
            {"question_id": q["question_id"], "text": f"{answer} {i}"} for i, q in enumerate(current["questions"])
        ]
        assert c.post(f"/api/threads/{tid}/continue", json={"answers": answers}).status_code == 202
        wait_for(lambda: status().get("status") == "completed", 60)
    body = {"model": MODEL, "messages": [{"role": "user", "content": f"{chat} what should I plant?"}]}
    r = c.post("/v1/chat/completions", json=body, headers={"X-Hermes-Session-Id": f"{who.lower()}-chat"})
    assert r.status_code == 200, r.text
    pref_body = {"category": "constraint", "key": "budget", "value": f"{pref} a small budget"}
    assert c.post("/api/learn/preferences", json=pref_body).status_code in (200, 201, 202)
    started = c.post("/api/agent/runs", json={"task": f"{run} read my note", "profile": "fileops"})
    assert started.status_code == 202, started.text
    run_id = started.json()["data"]["run_id"]

    def run_status() -> str:
        r = c.get(f"/api/agent/runs/{run_id}")
        return r.json()["data"]["status"] if r.status_code == 200 else ""

    wait_for(lambda: run_status() == "completed", 60)
    wait_for(lambda: chat.encode() in c.get("/api/me/export").content, 30)


def found(root: Path, needles: list[bytes], skip: tuple[str, ...] = ("workspace",)) -> dict[str, list[str]]:
    """``{needle: [files holding it]}`` under ``root`` (every file, every byte; ``skip``: folder names left out)."""
    hits: dict[str, list[str]] = {}
    for path in root.rglob("*"):
        if not path.is_file() or any(part in skip for part in path.relative_to(root).parts):
            continue
        content = path.read_bytes()
        for needle in needles:
            if needle in content:
                hits.setdefault(needle.decode(), []).append(str(path.relative_to(root)))
    return hits


def archive_hits(archive: Path, needles: list[bytes]) -> dict[str, list[str]]:
    hits: dict[str, list[str]] = {}
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            if member.isfile() and not member.name.startswith("home/workspace"):
                content = tar.extractfile(member).read()  # type: ignore[union-attr]
                for needle in needles:
                    if needle in content:
                        hits.setdefault(needle.decode(), []).append(member.name)
    return hits


def backup(home: Path, url: str, folder: Path) -> Path:
    before = set(folder.glob("hermes-backup-*.tar.gz"))
    made = hermes("backup", "--to", str(folder), home=home, NATS_URL=url, HERMES_BACKUP_PASSPHRASE=PASSPHRASE)
    assert made.returncode == 0, made.stdout + made.stderr
    [archive] = set(folder.glob("hermes-backup-*.tar.gz")) - before
    return archive


def bobs_rows(home: Path) -> bool:
    """Whether bob's texts are back in the read models (the replay has reached them)."""
    blob = repr(read_models(home)).encode()
    return all(m in blob for m in markers("BOB")[:4])


def test_a_forgotten_user_is_in_no_byte_of_the_system_its_replay_or_an_older_backup(tmp_path, model):
    (tmp_path / "original").mkdir()
    stack = HermesUp(tmp_path / "original", **env(model)).start()
    url = f"nats://127.0.0.1:{stack.env['HERMES_NATS_PORT']}"
    folder = tmp_path / "backups"
    for who in ("ann", "bob"):
        note = stack.home / "workspace" / "default" / f"{who}.md"
        note.parent.mkdir(parents=True, exist_ok=True)
        note.write_text(f"{who.upper()}-NOTE-7f3a basil needs sun\n")
    try:
        with client(stack, ROOT) as root:
            stack.wait_healthy(root)
        with client(stack, ANN) as ann, client(stack, BOB) as bob:
            data(ann, "ANN")
            data(bob, "BOB")
        assert set(found(stack.home, markers("ANN"))) >= {m.decode() for m in markers("ANN")[:5]}  # there to find
        older = backup(stack.home, url, folder)
        done = hermes("forget", "--user", "ann", "--yes", "--json", home=stack.home, NATS_URL=url)
        assert done.returncode == 0, done.stdout + done.stderr
        assert json.loads(done.stdout)["keys_destroyed"] >= 4
        with client(stack, BOB) as bob:
            assert bob.get("/api/me/export").status_code == 200
        with client(stack, ANN) as ann:
            wait_for(lambda: b"ANN-" not in ann.get("/api/me/export").content, 30)
        newer = backup(stack.home, url, folder)  # replaces the folder's key file
    finally:
        stack.stop()

    assert found(tmp_path / "original", markers("ANN")) == {}
    assert set(found(tmp_path / "original", markers("BOB"))) >= {m.decode() for m in markers("BOB")[:5]}
    for archive in (older, newer):
        assert archive_hits(archive, markers("ANN")) == {}
    assert archive_hits(older, markers("BOB")) == {}  # sealed in the archive too: only the key file opens them

    # Replay every read model from the log: nothing of ann comes back, bob's rows do.
    for db in stack.home.glob("*.db*"):
        if db.name.split(".db")[0] in ("orchestrator", "learner", "router"):
            db.unlink()
    again = HermesUp(tmp_path / "original", **env(model)).start()
    try:
        with client(again, ROOT) as root:
            again.wait_healthy(root)
        wait_for(lambda: bobs_rows(again.home), 120, interval_s=1)
    finally:
        again.stop()
    assert found(tmp_path / "original", markers("ANN")) == {}

    # The backup made BEFORE the forget, restored with the folder's (current) key file: bob whole, ann nowhere.
    restored = tmp_path / "restored"
    restored.mkdir()
    done = hermes(
        "restore",
        str(older),
        "--keys",
        str(folder / KEY_FILE),
        home=restored / "home",
        HERMES_BACKUP_PASSPHRASE=PASSPHRASE,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    back = HermesUp(restored, **env(model)).start()
    try:
        with client(back, ROOT) as root:
            back.wait_healthy(root)
        wait_for(lambda: bobs_rows(back.home), 120, interval_s=1)
        with client(back, ANN) as ann:
            assert b"ANN-" not in ann.get("/api/me/export").content
    finally:
        back.stop()
    assert found(restored, markers("ANN")) == {}
    assert set(found(restored, markers("BOB"))) >= {m.decode() for m in markers("BOB")[:4]}
