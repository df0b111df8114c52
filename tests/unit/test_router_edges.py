"""A backend no live edge serves is not eligible: ``hermes_router.health`` (edge liveness from heartbeats and probe
replies, on a clock the test moves) and ``hermes_router.domain`` (the rejection). No bus, no database: the signals
used here append nothing (the unhealthy threshold is out of reach)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from fakes.clock import ManualClock

from hermes_proto.backends import BackendConfig, enabled_backend_names

from hermes_router import domain
from hermes_router.health import HealthMonitor

NOW = datetime(2026, 12, 5, tzinfo=UTC)


def monitor(clock: ManualClock, changes: list[int], stale_s: float = 15.0) -> HealthMonitor:
    registry = {name: BackendConfig(name=name) for name in ("talos", "remote_api")}
    return HealthMonitor(
        nc=None,
        store=None,
        registry=registry,
        threshold=1000,
        probe_timeout_s=1.0,
        marked={},
        on_change=lambda: changes.append(1),
        edge_stale_s=stale_s,
        clock=clock,
    )


async def test_edge_liveness_follows_heartbeats_probes_and_silence() -> None:
    clock, changes = ManualClock(1000.0), []
    health = monitor(clock, changes)
    assert health.state("talos") == "unknown" and health.edge_live("talos") is None  # nothing heard or asked yet

    await health.signal("remote_api", False, "probe: NoRespondersError", edge=False)  # a probe nobody answered
    assert health.state("remote_api") == domain.NO_EDGE and health.edge_live("remote_api") is False

    await health.signal("talos", True, "heartbeat: healthy", edge=True)
    assert health.state("talos") == "healthy" and health.edge_live("talos") is True
    changes.clear()

    clock.now += 14.9  # still within the stale window
    health.sweep()
    assert health.state("talos") == "healthy" and changes == []
    clock.now += 0.2  # silent past it: the edge is gone
    health.sweep()
    assert health.state("talos") == domain.NO_EDGE and changes == [1]

    await health.signal("talos", True, "heartbeat: healthy", edge=True)  # it is back: the dispatcher is woken
    assert health.state("talos") == "healthy" and changes == [1, 1]
    await health.signal("talos", True, "call completed")  # a call's outcome says nothing about edges
    assert health.edge_live("talos") is True


async def test_without_any_signal_the_stale_window_since_start_decides() -> None:
    clock, changes = ManualClock(1000.0), []
    health = monitor(clock, changes, stale_s=5.0)
    clock.now += 5.1
    health.sweep()
    assert health.state("talos") == health.state("remote_api") == domain.NO_EDGE
    assert changes == [1]


def state(name: str, health: str, **cfg) -> domain.BackendState:
    return domain.BackendState(config=BackendConfig(name=name, **cfg), health=health)


def test_a_backend_without_edge_is_rejected_and_failover_goes_where_an_edge_runs() -> None:
    needs = domain.analyse(
        "j1", "draft1", [], job_type="general", private=False, project="default", priority=5, max_tokens=64
    )
    policy = domain.Policy(primary="remote_api")
    states = {
        "talos": state("talos", domain.NO_EDGE, quality=0.9, speed=0.9),
        "remote_api": state("remote_api", "healthy", quality=0.1, speed=0.1),
    }
    selection = domain.select(states, needs, domain.Budget(), policy, NOW)
    assert selection.chosen is not None and selection.chosen.backend == "remote_api"
    rejected = {c.backend: c.rejected for c in selection.candidates}
    assert rejected["talos"] == domain.NO_EDGE_REASON and rejected["talos"].startswith("no_edge")

    # No edge anywhere: the job waits (an edge may start), it is not abandoned as impossible.
    states["remote_api"] = state("remote_api", domain.NO_EDGE)
    waiting = domain.select(states, needs, domain.Budget(), policy, NOW)
    assert waiting.chosen is None and waiting.wait_reason == "no_backend" and not waiting.permanent
    assert "talos: no_edge" in waiting.reason and "remote_api: no_edge" in waiting.reason


def test_enabled_backend_names() -> None:
    assert enabled_backend_names(" Talos, remote_api,,talos ") == ["talos", "remote_api"]
    assert enabled_backend_names("") == []
    with pytest.raises(ValueError, match="remote-api"):
        enabled_backend_names("talos,remote-api")
