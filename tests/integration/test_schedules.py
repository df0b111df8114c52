"""Schedules through the whole system (``hermes up``: real NATS, every service, the real clock with seconds-long
intervals; the model a scripted OpenAI-compatible server on loopback).

Covers: a cron schedule (every 2 s) runs an agent task each due time and records each run's outcome and lateness;
pause, resume, run now and delete; exactly one run per due time across kill -9 of the orchestrator and of NATS;
missed due times (the orchestrator frozen past the grace) follow ``run_once`` and ``skip``; the overlap policies
``skip`` and ``queue`` while a run waits for an approval; event triggers: a producer's event on
``hermes.inbox.event.>`` (with the producer's own credentials), a file written in the workspace, a commit in a real
git repository, each firing once and not again after a restart; bad definitions are 400s.
"""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import nats
import pytest
from fakes.agent_model import MODEL, AgentModel, wait_for
from stack import HermesUp

EVERY_2S = "* * * * * */2"  # croniter: the sixth field is seconds
EVERY_1S = "* * * * * *"
CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def model():
    server = AgentModel(
        {
            "T-DONE": ["done"],
            "T-WAIT": [[("shell", {"command": "touch waited"})], "never"],
        }
    ).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def up(tmp_path_factory, model):
    tmp = tmp_path_factory.mktemp("schedules")
    stack = HermesUp(
        tmp,
        HERMES_LOCAL_MODEL="false",
        BACKEND_TALOS_TYPE="openai",
        BACKEND_TALOS_HOST="127.0.0.1",
        BACKEND_TALOS_PORT=str(model.port),
        BACKEND_TALOS_MODELS=MODEL,
        HERMES_SCHEDULE_GRACE_SECONDS="3",
        HERMES_SCHEDULE_POLL_SECONDS="0.5",
    ).start()
    with httpx.Client(timeout=15) as client:
        stack.wait_healthy(client)
    yield stack
    stack.stop()


@pytest.fixture
def client(up):
    with httpx.Client(base_url=up.base_url, timeout=15) as c:
        yield c


def create(client: httpx.Client, when: dict, task: str = "T-DONE", **kw) -> str:
    action = {"kind": "agent", "text": task, "profile": "code"}  # code: shell asks for an approval
    body = {"name": kw.pop("name", "test"), "when": when, "action": action, **kw}
    r = client.post("/api/schedules", json=body)
    assert r.status_code == 202, r.text
    return r.json()["data"]["schedule_id"]


def schedule(client: httpx.Client, schedule_id: str, runs: int = 200) -> dict:
    r = client.get(f"/api/schedules/{schedule_id}", params={"runs": runs})
    return r.json()["data"] if r.status_code == 200 else {}


def runs_of(client: httpx.Client, schedule_id: str, outcome: str | None = None) -> list[dict]:
    found = schedule(client, schedule_id).get("runs", [])
    return [r for r in found if outcome is None or r["outcome"] == outcome]


def delete(client: httpx.Client, schedule_id: str) -> None:
    assert client.delete(f"/api/schedules/{schedule_id}").status_code == 202


def agent_runs_started(client: httpx.Client) -> collections.Counter:
    """How many agent runs exist per run id (a run id opened twice would show twice)."""
    runs = client.get("/api/agent/runs", params={"limit": 500}).json()["data"]["runs"]
    return collections.Counter(r["run_id"] for r in runs)


def test_bad_definitions_are_400_with_the_reason(client):
    for when, fragment in (
        ({"kind": "cron", "cron": "99 * * * *"}, "cron"),
        ({"kind": "cron", "cron": "* * * * *", "timezone": "Nowhere/City"}, "time zone"),
        ({"kind": "at", "at": "2001-01-01T00:00:00Z"}, "past"),
        ({"kind": "subject", "subject": "hermes.cmd.submit_idea"}, "subject"),
        ({"kind": "sometimes"}, "kind"),
    ):
        r = client.post("/api/schedules", json={"name": "x", "when": when, "action": {"kind": "agent", "text": "T"}})
        assert r.status_code == 400, r.text
        assert r.json()["error"]["code"] == "invalid_schedule" and fragment in r.json()["error"]["message"]
    assert client.get("/api/schedules/nope").status_code == 404


def test_a_cron_schedule_runs_each_due_time_and_records_the_outcome(client, up):
    sid = create(client, {"kind": "cron", "cron": EVERY_2S})
    completed = wait_for(lambda: len(r := runs_of(client, sid, "completed")) >= 3 and r, 40)
    keys = [r["due_key"] for r in completed]
    assert len(set(keys)) == len(keys)
    assert all(r["lateness_ms"] < 2000 and r["duration_ms"] > 0 for r in completed), completed
    view = schedule(client, sid)
    assert view["next_due_at"] and view["last_outcome"] == "completed" and view["failures_in_row"] == 0
    listed = client.get("/api/schedules").json()["data"]["schedules"]
    assert sid in [s["schedule_id"] for s in listed]
    # paused: nothing runs; resumed: it runs again; run now: once, also while paused
    assert client.post(f"/api/schedules/{sid}/pause").status_code == 202
    wait_for(lambda: schedule(client, sid)["status"] == "paused", 10)
    time.sleep(1)  # a run started just before the pause may still end
    before = len(runs_of(client, sid))
    time.sleep(4.5)
    assert len(runs_of(client, sid)) == before
    r = client.post(f"/api/schedules/{sid}/run")
    assert r.status_code == 202
    manual = r.json()["data"]["due_key"]
    wait_for(lambda: any(x["due_key"] == manual and x["outcome"] == "completed" for x in runs_of(client, sid)), 20)
    assert client.post(f"/api/schedules/{sid}/resume").status_code == 202
    wait_for(lambda: len(runs_of(client, sid)) >= before + 3, 20)
    delete(client, sid)
    wait_for(lambda: client.get(f"/api/schedules/{sid}").status_code == 404, 10)
    metrics = httpx.get(f"http://127.0.0.1:{up.metrics_ports()['orchestrator']}/metrics").text
    assert 'hermes_schedule_runs_total{outcome="completed"}' in metrics
    assert "hermes_schedule_lateness_seconds_count" in metrics


def _kill_and_wait(up: HermesUp, name: str) -> None:
    old = up.pids()[name]
    os.kill(old, signal.SIGKILL)
    wait_for(lambda: up.pids().get(name) not in (None, old), 60)


def test_each_due_time_fires_once_across_kill_9_of_the_orchestrator_and_of_nats(client, up):
    sid = create(client, {"kind": "cron", "cron": EVERY_1S}, overlap="allow")
    wait_for(lambda: len(runs_of(client, sid)) >= 3, 30)
    _kill_and_wait(up, "hermes_orchestrator")
    time.sleep(2)
    _kill_and_wait(up, "nats")
    wait_for(lambda: client.get("/api/system/health").status_code == 200, 60)
    start = len(runs_of(client, sid))
    wait_for(lambda: len(runs_of(client, sid)) >= start + 3, 60)
    assert client.post(f"/api/schedules/{sid}/pause").status_code == 202
    time.sleep(2)
    runs = runs_of(client, sid)
    delete(client, sid)
    started = agent_runs_started(client)
    mine = [r for r in runs if r["run_id"]]
    assert len({r["due_key"] for r in mine}) == len(mine)
    assert all(started[r["run_id"]] == 1 for r in mine if r["outcome"] == "completed")  # each opened once
    assert len(mine) >= 6


def _freeze(up: HermesUp, seconds: float) -> None:
    """The orchestrator stopped (SIGSTOP) for ``seconds``: due times pass while it cannot act."""
    pid = up.pids()["hermes_orchestrator"]
    os.kill(pid, signal.SIGSTOP)
    try:
        time.sleep(seconds)
    finally:
        os.kill(pid, signal.SIGCONT)


@pytest.mark.parametrize("policy", ["skip", "run_once"])
def test_missed_due_times_follow_the_missed_policy(client, up, policy):
    sid = create(client, {"kind": "cron", "cron": EVERY_2S}, missed=policy)
    wait_for(lambda: len(runs_of(client, sid, "completed")) >= 1, 30)
    _freeze(up, 8)
    missed = wait_for(lambda: runs_of(client, sid, "missed"), 20)
    assert missed[0]["reason"] == policy
    time.sleep(1.5)
    missed = runs_of(client, sid, "missed")
    after_missed = [r for r in runs_of(client, sid) if r["recorded_at"] >= missed[0]["recorded_at"]]
    catch_up = [r for r in after_missed if r["reason"] == "catch_up"]
    if policy == "skip":
        assert not catch_up
    else:
        assert len(catch_up) == 1 and "missed:" + catch_up[0]["due_key"] == missed[0]["due_key"]
    assert len(missed) == 1 and missed[0]["detail"].startswith(("3 due", "4 due", "5 due"))  # one record
    assert schedule(client, sid)["missed_total"] >= 1
    delete(client, sid)


@pytest.mark.parametrize(("overlap", "outcome"), [("skip", "skipped"), ("queue", "queued")])
def test_a_due_time_while_a_run_waits_follows_the_overlap_policy(client, overlap, outcome):
    sid = create(client, {"kind": "cron", "cron": EVERY_2S}, task="T-WAIT", overlap=overlap)
    held = wait_for(lambda: runs_of(client, sid, outcome), 30)
    running = runs_of(client, sid, "running")
    assert len(running) == 1, running  # one run at a time: the others waited or were skipped
    assert held[0]["due_key"] != running[0]["due_key"]
    client.post(f"/api/agent/runs/{running[0]['run_id']}/cancel")
    if overlap == "queue":  # the queued one starts when the first ends
        wait_for(lambda: any(r["reason"] == "queued" for r in runs_of(client, sid)), 30)
    delete(client, sid)
    for run in runs_of(client, sid, "running"):
        client.post(f"/api/agent/runs/{run['run_id']}/cancel")


def test_a_producers_event_fires_its_schedule_once(client, up):
    sid = create(client, {"kind": "subject", "subject": "hermes.inbox.event.shop.*"})

    async def publish() -> None:
        port = up.env["HERMES_NATS_PORT"]
        seed = up.home / "credentials" / "producer.nk"
        nc = await nats.connect(
            f"nats://127.0.0.1:{port}", nkeys_seed=str(seed), inbox_prefix="_INBOX.producer", allow_reconnect=False
        )
        js = nc.jetstream()
        await js.publish("hermes.inbox.event.shop.order", b'{"order": 42}', headers={"Nats-Msg-Id": "order-42"})
        await js.publish("hermes.inbox.event.shop.order", b'{"order": 42}', headers={"Nats-Msg-Id": "order-42"})
        await js.publish("hermes.inbox.event.other.thing", b"{}")
        await nc.close()

    asyncio.run(publish())
    done = wait_for(lambda: runs_of(client, sid, "completed"), 30)
    time.sleep(2)
    assert len(runs_of(client, sid)) == 1 and done[0]["detail"] == "hermes.inbox.event.shop.order"
    run = client.get(f"/api/agent/runs/{done[0]['run_id']}").json()["data"]
    assert '{"order": 42}' in run["task"] and "untrusted" in run["task"]
    delete(client, sid)


def test_a_file_and_a_commit_fire_once_and_not_again_after_a_restart(client, up, tmp_path):
    workspace = up.home / "workspace" / "default"
    (workspace / "inbox").mkdir(parents=True, exist_ok=True)
    (workspace / "inbox" / "old.md").write_text("before the schedule")
    repo = tmp_path / "repo"
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@localhost", "-C", str(repo)]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / "a.txt").write_text("a")
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "first"], check=True)
    files = create(client, {"kind": "file", "path": "inbox/*.md"})
    commits = create(client, {"kind": "git", "path": str(repo)})
    time.sleep(2)  # the old file and the existing commit fire nothing
    assert runs_of(client, files) == [] and runs_of(client, commits) == []
    time.sleep(0.05)
    (workspace / "inbox" / "new.md").write_text("a new note")
    (repo / "b.txt").write_text("b")
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "second: add b"], check=True)
    by_file = wait_for(lambda: runs_of(client, files, "completed"), 30)
    by_commit = wait_for(lambda: runs_of(client, commits, "completed"), 30)
    assert "new.md" in by_file[0]["detail"] and "second: add b" in by_commit[0]["detail"]
    _kill_and_wait(up, "hermes_orchestrator")
    wait_for(lambda: client.get("/api/system/health").status_code == 200, 60)
    time.sleep(3)  # several polls by the restarted watcher
    assert len(runs_of(client, files)) == 1 and len(runs_of(client, commits)) == 1
    delete(client, files)
    delete(client, commits)


def cli(up: HermesUp, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("HERMES_TOKEN", "HERMES_HOME")}
    env.update(HERMES_URL=up.base_url, HERMES_HOME=str(up.home / "cli-home"))
    return subprocess.run(
        [sys.executable, "-m", "hermes_cli", *args], env=env, capture_output=True, text=True, timeout=60
    )


def test_the_command_line_adds_lists_runs_pauses_and_removes(client, up):
    added = cli(up, "schedule", "add", "cli briefing", "T-DONE", "--agent", "--cron", EVERY_2S, "--tz", "Europe/Berlin")
    assert added.returncode == 0, added.stderr
    sid = added.stdout.split()[1]
    wait_for(lambda: runs_of(client, sid, "completed"), 30)
    listed = cli(up, "schedule", "list")
    assert listed.returncode == 0 and sid in listed.stdout and "cli briefing" in listed.stdout
    runs = cli(up, "schedule", "runs", sid)
    assert runs.returncode == 0 and "completed" in runs.stdout
    assert cli(up, "schedule", "pause", sid).returncode == 0
    wait_for(lambda: schedule(client, sid)["status"] == "paused", 10)
    bad = cli(up, "schedule", "add", "x", "y", "--cron", "not a cron")
    assert bad.returncode == 1 and "invalid_schedule" in bad.stderr
    both = cli(up, "schedule", "add", "x", "y", "--cron", "* * * * *", "--at", "2030-01-01T00:00:00Z")
    assert both.returncode == 2
    assert cli(up, "schedule", "rm", sid).returncode == 0
    wait_for(lambda: client.get(f"/api/schedules/{sid}").status_code == 404, 10)


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"Debian's Chromium is not installed at {CHROMIUM}")
def test_the_schedules_page_lists_pauses_and_creates(client, up):
    from playwright.sync_api import sync_playwright

    sid = create(client, {"kind": "cron", "cron": "0 7 * * 1-5", "timezone": "Europe/Berlin"}, name="page briefing")
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"])
        page = browser.new_page()
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"{up.base_url}/#schedules")
        row = page.locator(f"tr[data-schedule-id='{sid}']")
        row.wait_for(timeout=10_000)
        text = row.inner_text()
        assert "page briefing" in text and "cron 0 7 * * 1-5 (Europe/Berlin)" in text and "active" in text
        row.locator("button[data-action=pause]").click()
        wait_for(lambda: schedule(client, sid)["status"] == "paused", 10)
        page.fill("#schedule-name", "from the page")
        page.fill("#schedule-cron", "30 8 * * *")
        page.select_option("#schedule-kind", "agent")
        page.fill("#schedule-text", "T-DONE")
        page.click("#schedule-form button[type=submit]")

        def made() -> list:
            listed = client.get("/api/schedules").json()["data"]["schedules"]
            return [s for s in listed if s["definition"]["name"] == "from the page"]

        new = wait_for(made, 10)[0]
        assert new["definition"]["when"]["cron"] == "30 8 * * *" and new["definition"]["action"]["kind"] == "agent"
        page.fill("#schedule-name", "broken")
        page.fill("#schedule-cron", "99 * * * *")
        page.fill("#schedule-text", "x")
        page.click("#schedule-form button[type=submit]")
        page.locator("#schedules-error", has_text="invalid cron expression").wait_for(timeout=10_000)
        browser.close()
    assert not errors, errors
    delete(client, sid)
    delete(client, new["schedule_id"])
