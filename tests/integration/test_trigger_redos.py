"""A user-supplied trigger pattern cannot freeze the learner: the learner as a real process on a real NATS server
takes ``^(a+)+$`` (RE2 matches it in linear time) while ideas built to make a backtracking engine explode are
decided on, and another user's query keeps its latency; a pattern RE2 refuses is answered ``invalid_trigger``, and
one already in the log (from before this rule) is skipped on replay rather than crashing the learner."""

from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path

import msgspec
import pytest
from conftest import stored_events, wait_until
from procs import ServiceProcess, start_ready
from test_learner import open_and_present

from hermes_proto import subjects
from hermes_proto.bus import EventStore
from hermes_proto.events import QuestionsProposed, TemplateAdded
from hermes_proto.ids import new_id, utcnow
from hermes_proto.queries import PreferencesQuery, SaveTemplate

QUERIES = 60
ATTACK_IDEAS = ["a" * n + "!" for n in (27, 28, 29, 30, 32, 40, 64, 500, 2000, 5000)] * 3
"""Python's ``re`` needs about 2^n steps for ``^(a+)+$`` against n a's and a "!": seconds from n = 27 on."""
REDOS = {
    "template_id": "scope-redos",
    "create": True,
    "category": "scope",
    "text": "How far does {topic} go?",
    "triggers": ["^(a+)+$", "(x+x+)+y", "^(a|aa)+$"],
    "prior_improvement": 0.9,
}


@pytest.fixture
async def learner(bus_env: dict[str, str], tmp_path: Path):
    process = ServiceProcess("learner", "hermes_learner", dict(bus_env, METRICS_PORT="0"), tmp_path / "logs")
    await start_ready(process)
    yield process
    await asyncio.to_thread(process.stop)


async def ask(nc, subject: str, body: object) -> tuple[dict, float]:
    started = time.monotonic()
    reply = await nc.request(subject, msgspec.json.encode(body), timeout=10)
    return msgspec.json.decode(reply.data), time.monotonic() - started


async def latencies(nc, n: int = QUERIES) -> list[float]:
    """``n`` preference queries of another user, one after another, each answered within the timeout."""
    took = []
    for _ in range(n):
        reply, seconds = await ask(nc, subjects.QUERY_PREFERENCES, PreferencesQuery(user_id="bob"))
        assert "preferences" in reply, reply
        took.append(seconds)
        await asyncio.sleep(0.01)
    return took


async def proposals(js, thread_ids: list[str]) -> list[QuestionsProposed] | None:
    found = await stored_events(js, subjects.event_type_filter(QuestionsProposed))
    mine = [e for e in found if e.aggregate_id in thread_ids]
    return mine if len(mine) == len(thread_ids) else None


async def test_a_redos_trigger_neither_freezes_decisions_nor_slows_other_queries(js_client, learner) -> None:
    nc, js = js_client
    store = EventStore(js, "test")
    refused, _ = await ask(nc, subjects.CONTROL_TEMPLATE, SaveTemplate(**{**REDOS, "triggers": [r"(a)\1"]}))
    assert refused["code"] == "invalid_trigger" and r"(a)\1" in refused["message"]
    refused, _ = await ask(nc, subjects.CONTROL_TEMPLATE, SaveTemplate(**{**REDOS, "triggers": ["(?=a)a"]}))
    assert refused["code"] == "invalid_trigger"
    added, _ = await ask(nc, subjects.CONTROL_TEMPLATE, SaveTemplate(**REDOS))
    assert [t["template_id"] for t in added["templates"]] == ["scope-redos"]

    baseline = statistics.median(await latencies(nc))
    started = time.monotonic()
    attack = [open_and_present(store, idea) for idea in ATTACK_IDEAS]
    measuring = asyncio.create_task(latencies(nc))
    thread_ids = [thread_id for thread_id, _ in await asyncio.gather(*attack)]
    during = statistics.median(await measuring)
    decided = await wait_until(lambda: proposals(js, thread_ids), timeout_s=60, interval_s=0.2)
    elapsed = time.monotonic() - started

    assert len(decided) == len(ATTACK_IDEAS)  # every attack idea was decided on, none hung the learner
    assert elapsed < 30, f"{len(ATTACK_IDEAS)} decisions took {elapsed:.1f} s"
    assert during <= max(4 * baseline, baseline + 0.05), f"p50 {during * 1000:.1f} ms vs {baseline * 1000:.1f} ms"
    exact = await open_and_present(store, "a" * 40)  # the trigger matches: the template is boosted and asked
    [proposal] = await wait_until(lambda: proposals(js, [exact[0]]), timeout_s=20)
    assert "scope-redos" in [q.template_id for q in proposal.questions]
    assert learner.alive()


async def test_a_stored_trigger_re2_refuses_is_skipped_on_replay(js_client, learner) -> None:
    nc, js = js_client
    store = EventStore(js, "test")
    old = TemplateAdded(  # written before triggers were checked with RE2: a backreference
        event_id=new_id(),
        aggregate_id="scope-old",
        occurred_at=utcnow(),
        correlation_id=new_id(),
        category="scope",
        text="Which rooms of {topic}?",
        triggers=[r"(flat)\1", r"\bflat\b"],
        prior_improvement=0.9,
        source="user",
    )
    await store.append([old])
    learner.stop()
    db = Path(learner.env["HERMES_HOME"]) / "learner.db"
    for suffix in ("", "-wal", "-shm"):  # rebuilt from the log: the old event is replayed
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    await start_ready(learner)
    thread_id, _ = await open_and_present(store, "help me repaint my flat")
    [proposal] = await wait_until(lambda: proposals(js, [thread_id]), timeout_s=20)
    assert "scope-old" in [q.template_id for q in proposal.questions]  # its usable trigger still counts
    assert learner.logged_since(0, "trigger_skipped") and learner.alive()
    listed, _ = await ask(nc, subjects.QUERY_TEMPLATES, {})
    assert any(t["template_id"] == "scope-old" for t in listed["templates"])
