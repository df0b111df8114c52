"""``hermes up``'s parts that need no running system: the plan (one edge per enabled backend), the supervisord
configuration it writes, the terminal relay of the log files (across a rotation) and the event listener's tally.
The whole, supervisord included, runs in tests/e2e/test_supervisor.py."""

from __future__ import annotations

import configparser
import io
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from hermes_cli.logrelay import LogRelay
from hermes_cli.supervision import Program, RestartPolicy, render_config
from hermes_cli.supervisor_events import Tally
from hermes_cli.up import UpSettings, plan


def settings(tmp_path: Path, backends: str, **fields) -> UpSettings:
    return UpSettings(
        hermes_home=tmp_path / "home",
        hermes_web_port=15000,
        hermes_nats_port=14222,
        hermes_backends_enabled=backends,
        **fields,
    )


def test_one_edge_per_enabled_backend_and_the_local_model_only_for_talos(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("BACKEND_TALOS_HOST", raising=False)
    monkeypatch.setattr("hermes_cli.up.model_path", lambda: Path("/models/smollm2.gguf"))
    up = plan(settings(tmp_path, "talos, remote_api"))
    names = [p.name for p in up.programs]
    assert names == [
        "nats",
        "model",
        "orchestrator",
        "learner",
        "backend-router",
        "talos-edge",
        "remote_api-edge",
        "notifier",
        "tools",
        "notary",
        "gateway",
    ]
    edges = {p.name: p for p in up.programs if p.name.endswith("-edge")}
    assert {n: p.env["HERMES_EDGE_BACKEND"] for n, p in edges.items()} == {
        "talos-edge": "talos",
        "remote_api-edge": "remote_api",
    }
    assert all(p.argv[-2:] == ["-m", "hermes_edge"] for p in edges.values())
    ports = [p.metrics_port for p in up.programs if p.metrics_port] + [up.supervisor_metrics_port]
    assert len(set(ports)) == len(ports) and edges["talos-edge"].metrics_port == 15004
    assert up.shared["BACKEND_TALOS_HOST"] == "127.0.0.1"  # talos is the embedded model

    remote_only = plan(settings(tmp_path, "remote_api"))
    assert "model" not in [p.name for p in remote_only.programs]  # no talos, no local model
    assert [p.name for p in remote_only.programs if p.name.endswith("-edge")] == ["remote_api-edge"]
    with pytest.raises(ValueError, match="remote-api"):
        plan(settings(tmp_path, "talos,remote-api"))


def test_the_supervisord_configuration(tmp_path) -> None:
    home = tmp_path / "50%home"
    programs = [
        Program("nats", ["/bin/nats-server", "-sd", str(home / "nats")], infrastructure=True),
        Program("orchestrator", ["/py", "-m", "hermes_orchestrator"], env={"METRICS_PORT": "5001"}),
        Program("talos-edge", ["/py", "-m", "hermes_edge"], env={"HERMES_EDGE_BACKEND": "talos"}),
    ]
    text = render_config(
        programs, home, RestartPolicy(start_seconds=7, start_retries=3), {"HERMES_SUPERVISOR_METRICS_PORT": "5006"}
    )
    config = configparser.RawConfigParser()
    config.read_string(text)
    assert config["supervisord"]["nodaemon"] == "true"
    assert config["group:hermes"]["programs"] == "orchestrator,talos-edge"  # stopped together, before nats
    nats, edge = config["program:nats"], config["program:talos-edge"]
    assert int(nats["priority"]) < int(config["group:hermes"]["priority"])
    assert (edge["autorestart"], edge["startsecs"], edge["startretries"]) == ("true", "7", "3")
    assert edge["environment"] == 'HERMES_EDGE_BACKEND="talos"'
    assert edge["stdout_logfile"] == str(home / "logs" / "talos-edge.log").replace("%", "%%")  # % is escaped
    assert nats["command"].endswith("-sd " + str(home / "nats").replace("%", "%%"))
    listener = config["eventlistener:supervisor"]
    assert "hermes_cli.supervisor_events" in listener["command"] and "PROCESS_STATE" in listener["events"]
    with pytest.raises(ValueError, match="not a plain value"):
        render_config([Program("x", ["/py"], env={"A": 'b",C="d'})], home, RestartPolicy(), {})


def test_the_relay_prefixes_new_lines_and_follows_a_rotation(tmp_path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "gateway.log").write_text("from an earlier run\n")
    out = io.BytesIO()
    relay = LogRelay(logs, ["gateway", "orchestrator"], out)
    with open(logs / "gateway.log", "a") as log:
        log.write("ready\nhalf a li")
    (logs / "orchestrator.log").write_text("started\n")  # appears after the relay was made
    relay.poll()
    with open(logs / "gateway.log", "a") as log:
        log.write("ne\nlast before rotation\n")
    (logs / "gateway.log").rename(logs / "gateway.log.1")  # what supervisord does at its size limit
    (logs / "gateway.log").write_text("first after rotation\nno newline")
    relay.stop()  # a final pass: the last line without its newline too
    lines = [line.split(" ", 1)[1] for line in out.getvalue().decode().splitlines()]
    assert lines == [
        "gateway      | ready",
        "orchestrator | started",
        "gateway      | half a line",
        "gateway      | last before rotation",
        "gateway      | first after rotation",
        "gateway      | no newline",
    ]


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_the_listener_counts_exits_restarts_and_give_ups_but_not_the_shutdown() -> None:
    tally = Tally(own_name="supervisor", start_retries=1)
    before = {
        key: sample(*key[:1], **dict(key[1:]))
        for key in [
            ("hermes_supervisor_exits_total", ("service", "unit-a"), ("phase", "running")),
            ("hermes_supervisor_exits_total", ("service", "unit-a"), ("phase", "starting")),
            ("hermes_supervisor_restarts_total", ("service", "unit-a")),
            ("hermes_supervisor_failed_total", ("service", "unit-a")),
        ]
    }

    def delta(name: str, **labels: str) -> float:
        return sample(name, **labels) - before[(name, *labels.items())]

    for event, from_state in [
        ("STARTING", "STOPPED"),
        ("RUNNING", "STARTING"),
        ("EXITED", "RUNNING"),
        ("STARTING", "EXITED"),
        ("BACKOFF", "STARTING"),
        ("STARTING", "BACKOFF"),
        ("BACKOFF", "STARTING"),
        ("FATAL", "BACKOFF"),
    ]:
        tally.handle(f"PROCESS_STATE_{event}", {"processname": "unit-a", "from_state": from_state, "pid": "1"})
    assert delta("hermes_supervisor_exits_total", service="unit-a", phase="running") == 1
    assert delta("hermes_supervisor_exits_total", service="unit-a", phase="starting") == 2
    assert delta("hermes_supervisor_restarts_total", service="unit-a") == 2
    assert delta("hermes_supervisor_failed_total", service="unit-a") == 1
    assert sample("hermes_supervisor_process_up", service="unit-a") == 0

    tally.handle("PROCESS_STATE_RUNNING", {"processname": "unit-b", "from_state": "STARTING"})
    assert sample("hermes_supervisor_process_up", service="unit-b") == 1
    tally.handle("SUPERVISOR_STATE_CHANGE_STOPPING", {})
    tally.handle("PROCESS_STATE_FATAL", {"processname": "unit-b", "from_state": "BACKOFF"})  # stop_all's give_up
    assert sample("hermes_supervisor_failed_total", service="unit-b") == 0
    assert sample("hermes_supervisor_process_up", service="unit-b") == 0
