"""talos-edge without Docker: its two wheels, installed the way ``deploy/talos/README.md`` says, run alone.

What the Mac Mini gets is built here from the workspace: ``uv build`` makes the ``hermes-proto`` and
``hermes-talos-edge`` wheels and ``uv export`` pins their third-party dependencies from ``uv.lock``. A fresh
``python -m venv`` then gets them with plain pip (``pip install -r`` the pins, ``pip install --no-deps`` the
wheels): the commands of the README, run by the pip a bare host has. The tests check that nothing of the
rest of Hermes came along, that the installed ``hermes-talos-edge`` console script executes one request
from the real bus against a loopback stand-in for Ollama's native API, configured by the launchd plist's
own environment, and that the launchd plist and systemd unit start that very console script. The bus is locked
and reached over TLS, as for an edge on another host: the edge connects with its own key (``edge-talos.nk``)
and the CA of the server's certificate, in place of the plist's paths.
"""

from __future__ import annotations

import json
import os
import plistlib
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme
from conftest import NatsServer, thread_events, wait_until
from fakes.llm_servers import FakeOllamaServer, Reply

from hermes_proto import keyring
from hermes_proto.access import grants
from hermes_proto.base import ChatMessage
from hermes_proto.bus import EventStore, connect, ensure_streams
from hermes_proto.codec import encode
from hermes_proto.credentials import generate, server_config, tls_block
from hermes_proto.events import ExecutionCompleted, ExecutionFailed, ExecutionStarted
from hermes_proto.execution import ExecutionRequested
from hermes_proto.ids import new_id, utcnow
from hermes_proto.settings import BusSettings

from hermes_cli.natsserver import free_port

REPO = Path(__file__).resolve().parents[2]
TALOS_DIR = REPO / "deploy" / "talos"
PACKAGES = ("hermes-proto", "hermes-talos-edge")
SCRIPT = "hermes-talos-edge"
TEXT = "Water the basil in the morning; mint wants a pot of its own or it takes the whole box."
# Present in the workspace environment, and none of the edge's business: a web framework, the read-model
# ORM, the local model runtime, and the services that use them.
MUST_BE_ABSENT = (
    "fastapi",
    "sqlmodel",
    "sqlalchemy",
    "llama_cpp",
    "hermes_gateway",
    "hermes_orchestrator",
    "hermes_learner",
    "hermes_backend_router",
    "hermes_notifier",
    "hermes_cli",
)
MUST_BE_PRESENT = ("hermes_edge", "hermes_proto", "nats", "aiohttp", "msgspec", "structlog")


def find_uv() -> str:
    """The uv on PATH, else the one ``scripts/bootstrap.sh`` pip-installs into the base interpreter's
    scripts directory. Fails (never skips): without uv the wheels cannot be built."""
    found = shutil.which("uv")
    if found:
        return found
    base = Path(sysconfig.get_path("scripts", vars={"base": sys.base_prefix, "platbase": sys.base_prefix}))
    candidate = base / ("uv.exe" if os.name == "nt" else "uv")
    if candidate.exists():
        return str(candidate)
    pytest.fail(
        "uv is needed to build the talos-edge wheels and was found neither on PATH nor in "
        f"{base}; install the pinned one with scripts/bootstrap.sh"
    )


def run(args: list[str], *, cwd: Path, env: dict[str, str] | None = None, timeout_s: float = 120) -> str:
    """Run a command; on a non-zero exit fail with its full output. Returns stdout."""
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout_s)
    if done.returncode != 0:
        pytest.fail(f"{' '.join(args)} exited {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}")
    return done.stdout


def outside_env(**extra: str) -> dict[str, str]:
    """This environment minus whatever would point a child at the workspace (its venv, its sources)."""
    env = {k: v for k, v in os.environ.items() if k not in {"VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME"}}
    env.update(extra)
    return env


@dataclass
class Install:
    """The built wheels and the venv they were installed into."""

    wheels: list[Path]
    venv: Path

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    @property
    def script(self) -> Path:
        return self.venv / "bin" / SCRIPT


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Install:
    """Build both wheels and the pinned requirements (README step 1), then a fresh venv installed by pip
    (README step 2); ``pip check`` proves the pins satisfy what the wheels declare."""
    uv = find_uv()
    out = tmp_path_factory.mktemp("edge-dist")
    for package in PACKAGES:
        run([uv, "build", "--quiet", "--wheel", "--package", package, "--out-dir", str(out)], cwd=REPO)
    requirements = out / "talos-edge-requirements.txt"
    run(
        [
            uv,
            "export",
            "--quiet",
            "--frozen",
            "--no-dev",
            "--no-hashes",
            "--no-emit-workspace",
            "--package",
            "hermes-talos-edge",
            "-o",
            str(requirements),
        ],
        cwd=REPO,
    )
    wheels = sorted(out.glob("*.whl"))
    assert [w.name.split("-")[0] for w in wheels] == ["hermes_proto", "hermes_talos_edge"], wheels
    assert not re.search(r"^hermes", requirements.read_text(), re.M), "first-party code only from the wheels"

    venv = out / "venv"
    run([sys.executable, "-m", "venv", str(venv)], cwd=out, env=outside_env())
    pip = [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check", "--no-input"]
    run([*pip, "install", "--quiet", "-r", str(requirements)], cwd=out, env=outside_env(), timeout_s=300)
    run([*pip, "install", "--quiet", "--no-deps", *map(str, wheels)], cwd=out, env=outside_env())
    run([*pip, "check"], cwd=out, env=outside_env())
    return Install(wheels, venv)


def probe(install: Install, code: str) -> dict:
    """Run ``code`` (which prints one JSON value) in the installed venv, isolated from this environment."""
    return json.loads(run([str(install.python), "-I", "-c", code], cwd=install.venv, env=outside_env()))


def test_venv_holds_the_edge_and_nothing_else_of_hermes(installed: Install) -> None:
    found = probe(
        installed,
        (
            "import importlib.util, importlib.metadata, json, sys\n"
            f"names = {list(MUST_BE_ABSENT + MUST_BE_PRESENT)!r}\n"
            "import hermes_edge\n"
            "print(json.dumps({'importable': [n for n in names if importlib.util.find_spec(n)],\n"
            "    'dists': sorted(d.metadata['Name'] for d in importlib.metadata.distributions()),\n"
            "    'edge_file': hermes_edge.__file__, 'prefix': sys.prefix}))"
        ),
    )
    assert Path(found["prefix"]) == installed.venv
    assert Path(found["edge_file"]).is_relative_to(installed.venv), "hermes_edge must come from the wheel"
    assert set(MUST_BE_PRESENT) <= set(found["importable"]), found["importable"]
    assert not set(MUST_BE_ABSENT) & set(found["importable"]), f"leaked into the edge: {found['importable']}"
    ours = {d for d in found["dists"] if d.lower().startswith("hermes")}
    assert ours == set(PACKAGES), ours


def wheel_console_scripts(wheel: Path) -> dict[str, str]:
    """``[console_scripts]`` of a wheel's ``entry_points.txt``: name -> ``module:function``."""
    with zipfile.ZipFile(wheel) as zf:
        [name] = [n for n in zf.namelist() if n.endswith(".dist-info/entry_points.txt")]
        text = zf.read(name).decode()
    section = re.search(r"^\[console_scripts\]\n(.*?)(?:^\[|\Z)", text, re.M | re.S)
    assert section, f"{wheel.name} declares no console scripts"
    return dict(tuple(p.strip() for p in line.split("=", 1)) for line in section[1].splitlines() if "=" in line)


def systemd_exec_start(path: Path) -> str:
    """The program of the ``[Service]`` section's ``ExecStart`` (systemd's ``-@:+!`` prefixes dropped)."""
    section = None
    for line in path.read_text().splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line
        elif section == "[Service]" and line.startswith("ExecStart="):
            return line.partition("=")[2].split()[0].lstrip("-@:+!")
    raise AssertionError(f"{path.name}: no ExecStart in [Service]")


def test_launchd_and_systemd_start_the_console_script_the_wheel_installs(installed: Install) -> None:
    [edge_wheel] = [w for w in installed.wheels if w.name.startswith("hermes_talos_edge-")]
    scripts = wheel_console_scripts(edge_wheel)
    assert installed.script.is_file() and os.access(installed.script, os.X_OK)
    assert installed.script.name in scripts
    assert installed.script.read_text().splitlines()[0] == f"#!{installed.python}", "bound to its own venv"

    programs = {p.name: plistlib.loads(p.read_bytes())["ProgramArguments"][0] for p in TALOS_DIR.glob("*.plist")}
    programs |= {p.name: systemd_exec_start(p) for p in TALOS_DIR.glob("*.service")}
    assert any(n.endswith(".plist") for n in programs) and any(n.endswith(".service") for n in programs)
    # Where the README's install step puts the venv: both units must run <that venv>/bin/<script>.
    readme = (TALOS_DIR / "README.md").read_text()
    venv_dirs = set(re.findall(r"-m venv (\S+)", readme))
    assert len(venv_dirs) == 1, f"deploy/talos/README.md should create exactly one venv, found {venv_dirs}"
    expected = f"{venv_dirs.pop().rstrip('/')}/bin/{SCRIPT}"
    for unit, program in programs.items():
        assert program == expected, f"{unit} starts {program}, the README installs {expected}"
        assert Path(program).name in scripts, f"{unit}: {Path(program).name} is not a console script of the wheel"


# -- the installed console script on the real bus ---------------------------------------------------------


def plist_environment() -> dict[str, str]:
    [plist] = sorted(TALOS_DIR.glob("*.plist"))
    return dict(plistlib.loads(plist.read_bytes())["EnvironmentVariables"])


@dataclass
class RunningEdge:
    proc: subprocess.Popen
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@dataclass
class LockedBus:
    """A nats-server with the generated authorization and a TLS listener (a test CA): the edge's view of a hub."""

    server: NatsServer
    seeds: dict[str, Path]
    ca_file: Path

    @property
    def url(self) -> str:
        return f"tls://127.0.0.1:{self.server.port}"


@pytest.fixture
def locked_bus(tmp_path: Path) -> Iterator[LockedBus]:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    tls_dir = tmp_path / "tls"
    tls_dir.mkdir()
    ca.cert_pem.write_to_path(str(tls_dir / "ca.pem"))
    cert.private_key_pem.write_to_path(str(tls_dir / "server-key.pem"))
    cert.cert_chain_pems[0].write_to_path(str(tls_dir / "server.pem"))
    table = grants(["talos"])
    seeds = generate(tmp_path / "bus", list(table))
    config = tmp_path / "nats.conf"
    config.write_text(server_config(table, seeds, tls=tls_block(tls_dir / "server.pem", tls_dir / "server-key.pem")))
    server = NatsServer(port=free_port(), store_dir=tmp_path / "jetstream", config=config)
    server.start()
    yield LockedBus(server, seeds, tls_dir / "ca.pem")
    server.stop()


@pytest.fixture
async def js_client(locked_bus: LockedBus) -> AsyncIterator[tuple]:
    """The test's own connection to the locked bus (admin), with the streams declared."""
    settings = BusSettings(
        nats_url=locked_bus.url, nats_nkey_seed_file=locked_bus.seeds["admin"], nats_tls_ca_file=locked_bus.ca_file
    )
    nc = await connect(settings, "test")
    js = nc.jetstream()
    await ensure_streams(js, settings)
    await keyring.start(js)  # sealed events and commands open in this process too
    yield nc, js
    keyring.activate(None)
    await nc.close()


@pytest.fixture
async def ollama() -> AsyncIterator[FakeOllamaServer]:
    model = plist_environment()["BACKEND_TALOS_MODELS"].split(",")[0]
    server = FakeOllamaServer(reply=Reply(text=TEXT, prompt_tokens=31, completion_tokens=17), models=[model])
    yield await server.start()
    await server.stop()


@pytest.fixture
def edge_env(installed: Install, ollama: FakeOllamaServer, locked_bus: LockedBus, tmp_path: Path) -> dict:
    """The launchd plist's environment with only host-specific values replaced (bus, key and CA, ports, paths),
    and little else, as launchd gives a daemon: no inherited venv or PYTHONPATH."""
    env = plist_environment()
    assert env["BACKEND_TALOS_TYPE"] == "ollama", "the Mac Mini case is Ollama's native API"
    assert env["NATS_URL"].startswith("tls://") and env["NATS_TLS_CA_FILE"], "the plist reaches NATS over TLS"
    assert Path(env["NATS_NKEY_SEED_FILE"]).name == "edge-talos.nk", "the plist names the edge's own key"
    env.update(
        {
            "NATS_URL": locked_bus.url,
            "NATS_NKEY_SEED_FILE": str(locked_bus.seeds["edge-talos"]),
            "NATS_TLS_CA_FILE": str(locked_bus.ca_file),
            "HERMES_HOME": str(tmp_path / "home"),
            "BACKEND_TALOS_HOST": "127.0.0.1",
            "BACKEND_TALOS_PORT": str(ollama.port),
            "METRICS_PORT": str(free_port()),
            "LOG_FILE": str(tmp_path / "log" / "talos-edge.log"),
            "HERMES_EDGE_HEARTBEAT_S": "0.5",
            "PATH": "/usr/bin:/bin",
            "HOME": str(tmp_path),
        }
    )
    return env


@pytest.fixture
def running_edge(installed: Install, edge_env: dict, tmp_path: Path) -> Iterator[RunningEdge]:
    log = tmp_path / "talos-edge.out"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(installed.script)],
            env=edge_env,
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    edge = RunningEdge(proc, log)
    yield edge
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=25)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


async def test_installed_console_script_executes_a_request_from_the_bus(
    running_edge: RunningEdge, js_client, ollama: FakeOllamaServer
) -> None:
    nc, js = js_client
    heartbeats: list[dict] = []

    async def on_heartbeat(msg) -> None:
        heartbeats.append(json.loads(msg.data))

    await nc.subscribe("hermes.heartbeat.talos", cb=on_heartbeat)
    await wait_until(lambda: heartbeats or running_edge.proc.poll() is not None, timeout_s=30)
    assert running_edge.proc.poll() is None, f"the installed edge exited:\n{running_edge.output()}"

    model = ollama.models[0]
    request = ExecutionRequested(
        request_id=new_id(),
        thread_id=new_id(),
        job_id=new_id(),
        backend="talos",
        model=model,
        messages=[ChatMessage(role="user", content="How do I keep herbs alive on a balcony?")],
        max_tokens=64,
        temperature=0.2,
        timeout_s=20.0,
        correlation_id=new_id(),
        requested_at=utcnow(),
    )
    # As the router does: the request sealed under its thread's key (an edge may read keys, never make them).
    await EventStore(js, "test").request_execution(
        "hermes.exec.talos", encode(request), request.request_id, request.thread_id
    )

    async def finished():
        events = await thread_events(js, request.thread_id)
        return events if any(isinstance(e, ExecutionCompleted | ExecutionFailed) for e in events) else None

    try:
        events = await wait_until(finished, timeout_s=20, interval_s=0.2)
    except TimeoutError:
        pytest.fail(f"no outcome for the request within 20 s; edge output:\n{running_edge.output()}")
    assert [type(e) for e in events] == [ExecutionStarted, ExecutionCompleted], (events, running_edge.output())
    completed = events[-1]
    assert completed.text == TEXT
    assert (completed.prompt_tokens, completed.completion_tokens) == (31, 17)
    assert (completed.job_id, completed.backend, completed.model) == (request.job_id, "talos", model)
    assert completed.causation_id == request.request_id
    [sent] = ollama.chat_requests()
    assert sent.path == "/api/chat" and sent.body["model"] == model
