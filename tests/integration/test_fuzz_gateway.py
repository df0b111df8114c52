"""The gateway's OpenAPI contract, fuzzed with schemathesis against the real thing over loopback HTTP.

Runs ``python -m hermes_gateway`` with its real peers on a real nats-server: the orchestrator (answers
``hermes.query.*``, consumes the commands the gateway publishes, dead-letters a bad one), the backend-router
(answers ``/api/backends``) and one talos-edge in front of a loopback OpenAI-compatible model server, so a
fuzzed ``POST /api/backends/compare`` or ``POST /api/submit`` runs all the way through. The schema is the one
the running gateway serves at ``/openapi.json``; every operation in it is fuzzed but the SSE stream.

Properties, for every request: no 5xx (every peer runs, so a 503 or 502 has no honest reason here); every 4xx
carries the gateway's error envelope; every 2xx carries the success envelope and matches its documented
schema; the gateway process stays up, and at the end ``/api/system/health`` still answers 200 and the log has
no ``unhandled_error``. Requests come from schemathesis' strategies (valid and invalid, from the schema; then
valid ones aimed at an existing thread, job, backend and dead letter) and from a table of malformed HTTP.
Reproducible: Hypothesis is derandomized and keeps no example database.

schemathesis' pytest loaders are not used: ``schemathesis.pytest.from_fixture`` (the only way to load a schema
from a server a fixture starts) fails on pytest 9.2 (``'Function' object has no attribute '_nodeid'``), so
each operation's strategy (``APIOperation.as_strategy``) drives a Hypothesis test here instead.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import nats
import pytest
import schemathesis
from conftest import NatsServer
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from procs import ServiceProcess
from schemathesis import GenerationMode
from schemathesis.checks import load_all_checks

from hermes_cli.natsserver import free_port, wait_for_port

MAX_EXAMPLES = 25
"""Generated requests per operation and pass (valid, invalid, aimed at existing resources)."""
REQUEST_TIMEOUT_S = 30.0
"""Seconds one request may take; a comparison on the loopback model answers in well under one."""
ERROR_FIELDS = {"code", "message", "details", "retry_after", "user_action"}
META_FIELDS = {"timestamp", "request_id", "processing_time_ms"}
TESTS_DIR = Path(__file__).resolve().parents[1]

# Not fuzzed: GET /api/threads/{thread_id}/events is a Server-Sent Events stream that stays open until the
# thread ends (a fuzzed or still running thread never does), so a valid request never returns; its input
# checks and its end are tested in test_gateway_api.py. /metrics and the web UI (/, /static) are not in the
# schema; the malformed-request table below reaches them anyway. PUT/DELETE /api/mcp/servers/{name} are not fuzzed
# either: a valid body starts the command it names as an MCP server (random programs of this machine); their
# validation and effects are tested with real servers in test_mcp_servers.py.
NOT_FUZZED = re.compile(r"/events$|/mcp/servers/\{name\}$")


@dataclass
class Stack:
    """The gateway and every peer it needs, each a real process, and what the fuzzing met."""

    url: str
    nats_url: str
    gateway: ServiceProcess
    peers: list[ServiceProcess]
    stop_all: Callable[[], None]
    seen: Counter = field(default_factory=Counter)  # (operation, status) -> requests

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.log_text()[-3000:]}" for p in (self.gateway, *self.peers))


def _get(url: str) -> httpx.Response | None:
    try:
        return httpx.get(url, timeout=5)
    except httpx.TransportError:
        return None


def _wait(predicate: Callable[[], object], timeout_s: float, what: str) -> object:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise TimeoutError(f"{what}: not within {timeout_s}s")


def _healthy(url: str) -> bool:
    response = _get(f"{url}/api/system/health")
    return response is not None and response.status_code == 200


def _talos_healthy(url: str) -> bool:
    response = _get(f"{url}/api/backends")
    return (
        response is not None
        and response.status_code == 200
        and any(b["name"] == "talos" and b["health"] == "healthy" for b in response.json()["data"]["backends"])
    )


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One stack for the module (it takes seconds to start on two cores). Its teardown is the survival check:
    the gateway is still running, ``/api/system/health`` answers 200, and it never logged ``unhandled_error``
    (its catch-all handler)."""
    tmp = tmp_path_factory.mktemp("fuzz-gateway")
    server = NatsServer(port=free_port(), store_dir=tmp / "jetstream")
    server.start()
    model_port, web_port = free_port(), free_port()
    # A stand-in for the outside model server, speaking OpenAI's wire format on a real socket.
    model = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fakes.llm_servers",
            "openai",
            "--port",
            str(model_port),
            "--models",
            "fuzz-model",
            "--text",
            "a fuzzed reply",
        ],
        env={**os.environ, "PYTHONPATH": str(TESTS_DIR)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    env = dict(
        os.environ,
        NATS_URL=server.url,
        HERMES_HOME=str(tmp / "home"),
        LOG_LEVEL="INFO",
        METRICS_PORT="0",
        HERMES_ANSWER_TIMEOUT_SECONDS="600",
        HERMES_BACKENDS_ENABLED="talos",
        BACKEND_TALOS_TYPE="openai",
        BACKEND_TALOS_HOST="127.0.0.1",
        BACKEND_TALOS_PORT=str(model_port),
        BACKEND_TALOS_MODELS="fuzz-model",
        HERMES_EDGE_BACKEND="talos",
        HERMES_EDGE_HEARTBEAT_S="0.5",
        HERMES_WEB_HOST="127.0.0.1",
        HERMES_WEB_PORT=str(web_port),
    )
    logs = tmp / "logs"
    peers = [
        ServiceProcess(name, module, env, logs)
        for name, module in (
            ("orchestrator", "hermes_orchestrator"),
            ("router", "hermes_router"),
            ("edge", "hermes_edge"),
            ("learner", "hermes_learner"),
            ("tools", "hermes_tools"),
        )
    ]
    gateway = ServiceProcess("gateway", "hermes_gateway", env, logs)

    def stop_all() -> None:
        with ThreadPoolExecutor() as pool:  # each may take a couple of seconds to wind down
            list(pool.map(ServiceProcess.stop, (gateway, *peers)))
        model.kill()
        model.wait(timeout=10)
        server.stop(signal.SIGKILL)

    for process in (*peers, gateway):
        process.start()
    stack = Stack(f"http://127.0.0.1:{web_port}", server.url, gateway, peers, stop_all)
    try:
        wait_for_port(model_port)
        # Health 200: NATS, the streams and the orchestrator answer. A healthy talos: the router heard the
        # edge's heartbeat, so a comparison really runs on the model server.
        _wait(lambda: _healthy(stack.url), 60, "gateway and orchestrator answering")
        _wait(lambda: _talos_healthy(stack.url), 60, "router and edge answering")
    except BaseException:
        print(stack.logs())
        stop_all()
        raise
    yield stack
    try:
        print(f"{sum(stack.seen.values())} requests:", dict(sorted(stack.seen.items())))
        assert gateway.alive(), stack.logs()
        assert _healthy(stack.url), _get(f"{stack.url}/api/system/health")
        assert '"unhandled_error"' not in gateway.log_text(), gateway.log_text()[-5000:]
    finally:
        stop_all()


# --------------------------------------------------------------------------- checks


def check_error_envelope(headers: dict[str, str], body: object) -> None:
    """A 4xx answer: JSON ``{"status": "error", "error": {code, message, details, retry_after, user_action},
    "meta": {timestamp, request_id, processing_time_ms}}`` (hermes_gateway.envelope), ``Retry-After`` equal to
    ``error.retry_after`` when set."""
    assert headers.get("content-type", "").startswith("application/json"), headers
    assert isinstance(body, dict) and set(body) == {"status", "error", "meta"} and body["status"] == "error", body
    error, meta = body["error"], body["meta"]
    assert isinstance(error, dict) and set(error) == ERROR_FIELDS, body
    assert isinstance(error["code"], str) and re.fullmatch(r"[a-z0-9_]+", error["code"]), body
    assert isinstance(error["message"], str) and error["message"], body
    assert error["retry_after"] is None or type(error["retry_after"]) is int, body
    assert error["user_action"] is None or isinstance(error["user_action"], str), body
    if error["retry_after"] is not None:
        assert headers.get("retry-after") == str(error["retry_after"]), headers
    check_meta(meta)


def check_meta(meta: object) -> None:
    assert isinstance(meta, dict) and set(meta) == META_FIELDS, meta
    assert isinstance(meta["request_id"], str) and meta["request_id"], meta
    assert isinstance(meta["timestamp"], str) and meta["timestamp"].endswith("+00:00"), meta
    assert isinstance(meta["processing_time_ms"], (int, float)) and meta["processing_time_ms"] >= 0, meta


def check_answer(stack: Stack, request: str, status: int, headers: dict[str, str], content: bytes) -> None:
    """No 5xx, the gateway still running, a 4xx in the error envelope, a 2xx in the success envelope (a JSONL
    export: one JSON object per line; a file download: a non-empty attachment); ``headers`` with lowercase names."""
    where = f"{request}\n-> {status}: {content[:600]!r}"
    assert stack.gateway.alive(), f"the gateway exited after: {where}\n{stack.logs()}"
    assert status < 500, where
    try:
        if 400 <= status < 500:
            check_error_envelope(headers, json.loads(content))
        elif 200 <= status < 300 and headers.get("content-type", "").startswith("application/x-ndjson"):
            for line in content.splitlines():  # a JSONL export: every record is a JSON object
                assert isinstance(json.loads(line), dict), line
        elif 200 <= status < 300 and "attachment" in headers.get("content-disposition", ""):
            assert content, "an empty download"  # a file download (Markdown or JSON), not an API answer
        elif 200 <= status < 300:
            body = json.loads(content)
            assert isinstance(body, dict) and set(body) == {"status", "data", "meta"}, body
            assert body["status"] == "success", body
            check_meta(body["meta"])
    except (AssertionError, ValueError) as exc:
        raise AssertionError(f"not in the envelope ({exc}): {where}") from None


# --------------------------------------------------------------------------- schemathesis


def operations(url: str) -> list[schemathesis.APIOperation]:
    """Every operation of the schema the running gateway serves, but :data:`NOT_FUZZED`."""
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    found = [result.ok() for result in schema.get_all_operations()]
    return [op for op in found if not NOT_FUZZED.search(op.path)]


def fuzz(
    stack: Stack,
    operation: schemathesis.APIOperation,
    mode: GenerationMode,
    path_parameters: dict[str, object] | None = None,
    query: dict[str, object] | None = None,
) -> None:
    """Up to :data:`MAX_EXAMPLES` requests for ``operation`` from its ``mode`` strategy (with
    ``path_parameters`` and ``query`` parameters fixed, if given), each through :func:`check_answer`; a 2xx
    body must also match the documented response schema."""
    load_all_checks()
    conforms = schemathesis.checks.response_schema_conformance

    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        print_blob=False,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode, path_parameters=path_parameters, query=query))
    def run(case: schemathesis.Case) -> None:
        response = case.call(base_url=stack.url, timeout=REQUEST_TIMEOUT_S)
        stack.seen[(operation.label, response.status_code)] += 1
        headers = {name: values[-1] for name, values in response.headers.items()}
        request = f"{mode.value}: {case.as_curl_command()}"
        check_answer(stack, request, response.status_code, headers, response.content)
        if 200 <= response.status_code < 300:
            case.validate_response(response, checks=[conforms])

    run()


def can_be_invalid(operation: schemathesis.APIOperation) -> bool:
    """Whether the schema lets a request to ``operation`` be invalid: it has a body, a query or header
    parameter, or a constrained path parameter (any string is a valid unconstrained one, and Hypothesis would
    search for seconds before giving up)."""
    raw = operation.definition.raw
    if raw.get("requestBody"):
        return True
    for parameter in raw.get("parameters", []):
        schema = parameter.get("schema", {})
        if parameter["in"] != "path" or schema.get("type") != "string" or set(schema) - {"type", "title"}:
            return True
    return False


def fuzz_all(
    stack: Stack,
    ops: list[schemathesis.APIOperation],
    modes: tuple[GenerationMode, ...],
    path_values: dict[str, object] | None = None,
    query: dict[str, object] | None = None,
) -> list[str]:
    """:func:`fuzz` each of ``ops`` in each of ``modes``; returns the failures (each Hypothesis' smallest).
    ``path_values``: fixed values for the path parameters of those names; ``query``: fixed query parameters."""
    failures: list[str] = []
    for operation in ops:
        fixed = {name: value for name, value in (path_values or {}).items() if f"{{{name}}}" in operation.path}
        names = {parameter["name"] for parameter in operation.definition.raw.get("parameters", [])}
        fixed_query = {name: value for name, value in (query or {}).items() if name in names}
        for mode in modes:
            if mode is GenerationMode.NEGATIVE and not can_be_invalid(operation):
                continue
            try:
                fuzz(stack, operation, mode, fixed or None, fixed_query or None)
            except Unsatisfiable:
                # Nothing in the schema can be made invalid (no parameters, or only free-form strings in the
                # path): the gateway's own id rules are not in the schema; the valid requests cover them.
                assert mode is GenerationMode.NEGATIVE, operation.label
            except Exception as exc:  # noqa: BLE001 - a failed check (AssertionError, schemathesis' Failure group)
                failures.append(f"{operation.label} ({mode.value}, {fixed}): {exc}")
    return failures


def test_fuzzed_requests_get_no_5xx_and_always_the_envelope(stack: Stack) -> None:
    ops = operations(stack.url)
    labels = {op.label for op in ops}
    assert labels >= {
        "POST /api/submit",
        "GET /api/threads",
        "GET /api/threads/{thread_id}/status",
        "POST /api/threads/{thread_id}/continue",
        "POST /api/backends/compare",
        "GET /api/system/health",
    }, labels
    failures = fuzz_all(stack, ops, (GenerationMode.POSITIVE, GenerationMode.NEGATIVE))
    assert not failures, "\n\n".join(failures)
    assert {label for label, _ in stack.seen} == labels, stack.seen
    # The valid requests did get through: ideas accepted, a comparison ran on the model server.
    assert stack.seen[("POST /api/submit", 202)] > 0 and stack.seen[("POST /api/backends/compare", 200)] > 0


# --------------------------------------------------------------------------- existing resources


async def _publish_garbage_command(nats_url: str) -> None:
    nc = await nats.connect(nats_url)
    try:
        await nc.jetstream().publish("hermes.cmd.submit_idea", b'{"type": "submit_idea", "idea": 42}')
    finally:
        await nc.close()


def existing_resources(stack: Stack) -> dict[str, object]:
    """Path values that name things that exist: a thread with a job (submitted through the gateway), the talos
    backend, and a dead letter (a bad command the orchestrator dead-lettered)."""
    submitted = httpx.post(
        f"{stack.url}/api/submit", json={"idea": "plan a vegetable garden on my balcony"}, timeout=10
    )
    assert submitted.status_code == 202, submitted.text
    thread_id = submitted.json()["data"]["thread_id"]

    def jobs() -> list:
        response = _get(f"{stack.url}/api/threads/{thread_id}/status")
        return response.json()["data"]["jobs"] if response is not None and response.status_code == 200 else []

    job_id = _wait(jobs, 30, "the submitted thread's first job")[0]["job_id"]
    values: dict[str, object] = {"thread_id": thread_id, "job_id": job_id, "name": "talos"}
    if _get(f"{stack.url}/api/system/dead-letters") is not None:
        asyncio.run(_publish_garbage_command(stack.nats_url))

        def dead_letter() -> int | None:
            response = _get(f"{stack.url}/api/system/dead-letters")
            records = response.json()["data"]["dead_letters"] if response and response.status_code == 200 else []
            return records[0]["dlq_sequence"] if records else None

        values["dlq_seq"] = _wait(dead_letter, 30, "the bad command's dead letter")
    return values


def test_fuzzed_requests_on_existing_resources(stack: Stack) -> None:
    """Valid requests aimed at a thread, job, backend and dead letter that exist, so the fuzzing gets past the
    404s into the state rules (409 not_awaiting_answers, not_completed, already_replayed...)."""
    values = existing_resources(stack)
    ops = [op for op in operations(stack.url) if any(f"{{{name}}}" in op.path for name in values)]
    assert len(ops) >= 6, [op.label for op in ops]
    # min_sequence fixed at 0 (its default): a later sequence makes the orchestrator wait up to 2 s for it
    # (read-your-writes), and with an existing thread every such request would take those 2 s.
    failures = fuzz_all(stack, ops, (GenerationMode.POSITIVE,), values, {"min_sequence": 0})
    assert not failures, "\n\n".join(failures)


# --------------------------------------------------------------------------- malformed HTTP

DEEP_JSON = b"[" * 50_000 + b"]" * 50_000
MALFORMED_BODIES: list[tuple[str, bytes, str]] = [
    ("not json", b"{", "application/json"),
    ("empty", b"", "application/json"),
    ("json null", b"null", "application/json"),
    ("json array", b"[]", "application/json"),
    ("json string", b'"idea"', "application/json"),
    ("deep nesting", DEEP_JSON, "application/json"),
    ("invalid utf-8", b'{"idea": "\xff\xfe"}', "application/json"),
    ("not json content type", b'{"idea": "x"}', "text/plain"),
    ("form", b"idea=x", "application/x-www-form-urlencoded"),
    ("huge number", b'{"idea": "x", "priority": 1' + b"0" * 5000 + b"}", "application/json"),
    ("nan", b'{"idea": "x", "priority": NaN, "rating": Infinity}', "application/json"),
]


def concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "abc", path)


def test_malformed_http_gets_the_error_envelope(stack: Stack) -> None:
    """Bodies no schema describes (not JSON, wrong content type, absurd nesting or numbers) on every operation
    with a body, methods the routes do not have, and paths that do not exist: all answered 4xx in the
    envelope, never 5xx."""
    failures: list[str] = []
    with httpx.Client(base_url=stack.url, timeout=REQUEST_TIMEOUT_S) as client:

        def send(method: str, path: str, content: bytes | None = None, content_type: str | None = None) -> None:
            headers = {"content-type": content_type} if content_type else {}
            response = client.request(method, path, content=content, headers=headers)
            stack.seen[(f"{method} (malformed)", response.status_code)] += 1
            try:
                assert 400 <= response.status_code < 500, response.status_code
                check_answer(
                    stack,
                    f"{method} {path} {content[:60] if content else b''!r} ({content_type})",
                    response.status_code,
                    dict(response.headers),
                    response.content,
                )
            except AssertionError as exc:
                failures.append(str(exc))

        ops = operations(stack.url)
        for op in ops:
            if op.method.upper() == "POST" and len(op.body):  # a route without a body ignores one (logout)
                for _, content, content_type in MALFORMED_BODIES:
                    send("POST", concrete(op.path), content, content_type)
            send("DELETE", concrete(op.path))
        for path in (
            "/api/nothing-here",
            "/api/threads/abc/nothing",
            "/api/" + "x" * 5000,
            "/api/%ff%fe",
            "/api/threads/..%2f..%2fetc/status",
        ):
            send("GET", path)
    assert not failures, "\n\n".join(failures)
