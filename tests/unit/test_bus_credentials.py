"""The bus credentials ``hermes up`` prepares (no running system): every program gets only its own role's seed, the
embedded server listens on loopback with the generated authorization, seeds are owner-only and kept across starts,
and the rendered configuration is one nats-server accepts (``nats-server -t``), partition mappings included."""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path

import pytest

from hermes_proto.access import edge_role, grants, permissions
from hermes_proto.credentials import public_key, role_of

from hermes_cli.buscreds import SERVER_CONFIG, prepare, role_of_program
from hermes_cli.natsserver import find_nats_server
from hermes_cli.up import UpSettings, plan


def test_each_program_gets_its_own_roles_seed_and_nats_listens_on_loopback(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr("hermes_cli.up.model_path", lambda: Path("/models/smollm2.gguf"))
    up = plan(UpSettings(hermes_home=tmp_path / "home", hermes_nats_port=14222, hermes_backends_enabled="talos,x"))
    nats = next(p for p in up.programs if p.name == "nats")
    assert nats.argv[nats.argv.index("-a") + 1] == "127.0.0.1"
    assert Path(nats.argv[nats.argv.index("-c") + 1]) == up.home / SERVER_CONFIG
    seeds = {p.name: Path(p.env["NATS_NKEY_SEED_FILE"]) for p in up.programs if "NATS_NKEY_SEED_FILE" in p.env}
    assert {name: role_of(path) for name, path in seeds.items()} == {
        "orchestrator": "orchestrator",
        "learner": "learner",
        "backend-router": "router",
        "talos-edge": "edge-talos",
        "x-edge": "edge-x",
        "notifier": "notifier",
        "tools": "tools",
        "notary": "notary",
        "gateway": "gateway",
    }
    assert all(role_of_program(p.name) is None for p in up.programs if p.name in ("nats", "model"))
    assert len({path.read_bytes() for path in seeds.values()}) == len(seeds)  # no two programs share a key


def test_seeds_are_owner_only_and_kept_and_the_config_admits_exactly_their_keys(tmp_path) -> None:
    first = prepare(tmp_path / "creds", tmp_path / SERVER_CONFIG, ["talos"])
    again = prepare(tmp_path / "creds", tmp_path / SERVER_CONFIG, ["talos", "remote_api"])
    assert stat.S_IMODE((tmp_path / "creds").stat().st_mode) == 0o700
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in again.values())
    assert all(first[role].read_bytes() == again[role].read_bytes() for role in first)  # kept across starts
    assert set(again) == set(first) | {edge_role("remote_api")}
    config = (tmp_path / SERVER_CONFIG).read_text()
    assert stat.S_IMODE((tmp_path / SERVER_CONFIG).stat().st_mode) == 0o600
    for path in again.values():
        assert public_key(path.read_bytes()) in config
        assert path.read_text() not in config  # public keys only, never a seed


@pytest.mark.parametrize("partitions", [1, 2])
def test_the_rendered_configuration_is_valid_for_nats_server(tmp_path, partitions) -> None:
    prepare(tmp_path / "creds", tmp_path / SERVER_CONFIG, ["talos"], partitions)
    result = subprocess.run(
        [find_nats_server(), "-t", "-c", str(tmp_path / SERVER_CONFIG)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr + result.stdout
    assert ("mappings" in (tmp_path / SERVER_CONFIG).read_text()) == (partitions > 1)


def test_the_partitions_durables_are_granted_and_only_admin_gets_everything() -> None:
    table = grants(["talos"], partitions=2)
    consumed = {d for _, d in table["orchestrator"].consume}
    assert consumed == {
        "orchestrator-commands-p0",
        "orchestrator-commands-p1",
        "orchestrator-reactor-p0",
        "orchestrator-reactor-p1",
        "orchestrator-triggers",  # partition 0's: the schedules' event triggers
    }
    assert [role for role, g in table.items() if ">" in permissions(g)["publish"]["allow"]] == ["admin"]
    for grant in (g for g in table.values() if not g.everything):  # each inbox prefix its own role's alone
        inboxes = [s for s in permissions(grant)["subscribe"]["allow"] if s.startswith("_INBOX")]
        assert inboxes == [f"_INBOX.{grant.role}.>"]
