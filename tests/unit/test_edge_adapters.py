"""The edge's model-server adapters against loopback fakes speaking the real wire formats.

Each adapter (OpenAI-compatible SSE, Ollama NDJSON, Anthropic Messages SSE) must assemble the streamed text
in order, report the provider's token usage (or a flagged estimate when there is none), measure first token
and latency, and map every failure of the wire to the right ``error_code`` and ``retryable`` flag.
"""

from __future__ import annotations

import math
import socket
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import aiohttp
import httpx
import pytest
from fakes.llm_servers import FakeAnthropicServer, FakeLLMServer, FakeOllamaServer, FakeOpenAIServer, Fault, Reply

from hermes_proto.backends import BackendConfig
from hermes_proto.base import ChatMessage
from hermes_proto.costs import estimate_prompt_tokens, estimate_tokens

from hermes_cli.natsserver import free_port
from hermes_edge.adapters import (
    AnthropicAdapter,
    HttpChatAdapter,
    OllamaAdapter,
    OpenAICompatAdapter,
    build_adapter,
    http_chat,
    new_session,
)
from hermes_edge.adapters.anthropic import stream_error
from hermes_edge.adapters.session import env_proxy
from hermes_edge.config import EdgeSettings, load_backend_settings
from hermes_edge.domain import (
    ErrorCode,
    ModelCall,
    ModelCallFailed,
    error_for_status,
    parse_retry_after,
)

KEY = "sk-test-5ecret"
TEXT = "Grow cherry tomatoes and basil in deep pots; water every morning."
MESSAGES = [
    ChatMessage(role="system", content="You are a helpful gardener."),
    ChatMessage(role="user", content="Help me plan a vegetable garden on my balcony."),
]


@dataclass
class Pair:
    kind: str
    server: FakeLLMServer
    adapter: HttpChatAdapter


KINDS = {
    "openai": (FakeOpenAIServer, OpenAICompatAdapter),
    "ollama": (FakeOllamaServer, OllamaAdapter),
    "anthropic": (FakeAnthropicServer, AnthropicAdapter),
}
PATHS = {
    "openai": ("/v1/chat/completions", "/v1/models"),
    "ollama": ("/api/chat", "/api/tags"),
    "anthropic": ("/v1/messages", "/v1/models"),
}


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """The adapters' HTTP client, made as the edge makes it."""
    async with new_session() as http:
        yield http


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    """A client of our own for the fakes' tests (a different library than the adapters')."""
    async with httpx.AsyncClient() as http:
        yield http


@pytest.fixture(params=sorted(KINDS))
async def pair(request: pytest.FixtureRequest, session: aiohttp.ClientSession) -> AsyncIterator[Pair]:
    server_cls, adapter_cls = KINDS[request.param]
    server = server_cls(
        reply=Reply(text=TEXT, prompt_tokens=31, completion_tokens=17), models=["small-model", "big-model"], api_key=KEY
    )
    await server.start()
    yield Pair(request.param, server, adapter_cls(session, server.base_url, KEY))
    await server.stop()


def call(model: str = "small-model", max_tokens: int = 256, timeout_s: float = 10.0) -> ModelCall:
    return ModelCall(model=model, messages=MESSAGES, max_tokens=max_tokens, temperature=0.3, timeout_s=timeout_s)


class Collector:
    """The ``on_text`` sink: keeps every chunk in arrival order."""

    def __init__(self) -> None:
        self.chunks: list[str] = []

    async def __call__(self, text: str) -> None:
        self.chunks.append(text)


async def failure(pair: Pair, the_call: ModelCall | None = None) -> tuple[ModelCallFailed, Collector]:
    sink = Collector()
    with pytest.raises(ModelCallFailed) as caught:
        await pair.adapter.stream_chat(the_call or call(), sink)
    return caught.value, sink


# --- the happy path -----------------------------------------------------------------------------------


async def test_streamed_text_is_assembled_in_order_with_provider_usage(pair: Pair) -> None:
    sink = Collector()
    reply = await pair.adapter.stream_chat(call(), sink)

    assert sink.chunks == Reply(text=TEXT).split()
    assert len(sink.chunks) > 5
    assert reply.text == TEXT
    # The provider's counts, not the chunk count or an estimate.
    assert (reply.prompt_tokens, reply.completion_tokens) == (31, 17)
    assert reply.usage_estimated is False
    assert reply.finish_reason == "stop"
    assert reply.first_token_ms is not None and 0 < reply.first_token_ms <= reply.latency_ms


async def test_request_speaks_the_servers_wire_format(pair: Pair) -> None:
    await pair.adapter.stream_chat(call(model="big-model", max_tokens=99), Collector())

    [sent] = pair.server.chat_requests()
    assert sent.method == "POST"
    assert sent.path == PATHS[pair.kind][0]
    body = sent.body
    assert body["model"] == "big-model"
    assert body["stream"] is True
    if pair.kind == "anthropic":
        assert sent.headers["x-api-key"] == KEY and "authorization" not in sent.headers
        assert sent.headers["anthropic-version"] == "2023-06-01"
        assert sent.headers["content-type"] == "application/json"
        assert body["system"] == MESSAGES[0].content
        assert body["messages"] == [{"role": "user", "content": MESSAGES[1].content}]
        assert (body["max_tokens"], body["temperature"]) == (99, 0.3)
        return
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert body["messages"] == [{"role": m.role, "content": m.content} for m in MESSAGES]
    if pair.kind == "openai":
        assert body["stream_options"] == {"include_usage": True}
        assert (body["max_tokens"], body["temperature"]) == (99, 0.3)
    else:
        assert body["options"] == {"num_predict": 99, "temperature": 0.3}


async def test_calls_and_probes_reuse_one_connection(pair: Pair) -> None:
    for _ in range(3):
        await pair.adapter.stream_chat(call(), Collector())
    await pair.adapter.probe(timeout_s=2)

    # Each streamed body is read to its end, so its connection goes back to the pool (a new connection per call
    # costs both sides a handshake and more CPU than the call).
    assert len(pair.server.requests) == 4
    assert len({r.peer for r in pair.server.requests}) == 1


async def test_first_token_and_latency_are_measured(pair: Pair) -> None:
    pair.server.reply = Reply(chunks=["a", " b", " c", " d", " e"], chunk_delay_s=0.08)
    reply = await pair.adapter.stream_chat(call(), Collector())

    # 4 gaps of 80 ms between 5 chunks: the last byte comes >= 320 ms after the first token.
    assert reply.latency_ms >= 300
    assert reply.first_token_ms is not None and reply.first_token_ms < reply.latency_ms - 250
    assert reply.text == "a b c d e"


async def test_max_tokens_cuts_the_reply_with_finish_reason_length(pair: Pair) -> None:
    pair.server.reply = Reply(text=TEXT, prompt_tokens=31)
    reply = await pair.adapter.stream_chat(call(max_tokens=3), Collector())

    assert reply.text == "".join(Reply(text=TEXT).split()[:3])
    assert reply.completion_tokens == 3
    assert reply.finish_reason == "length"


async def test_missing_usage_is_estimated_never_zero(pair: Pair) -> None:
    pair.server.reply = Reply(text=TEXT, report_usage=False)
    reply = await pair.adapter.stream_chat(call(), Collector())

    assert reply.usage_estimated is True
    assert reply.prompt_tokens == estimate_prompt_tokens(MESSAGES) > 0
    assert reply.completion_tokens == math.ceil(len(TEXT) / 4) > 0


async def test_a_server_that_ignores_stream_true_still_works(pair: Pair) -> None:
    pair.server.supports_streaming = False
    sink = Collector()
    reply = await pair.adapter.stream_chat(call(), sink)

    assert sink.chunks == [TEXT]
    assert (reply.text, reply.prompt_tokens, reply.completion_tokens) == (TEXT, 31, 17)


# --- faults -------------------------------------------------------------------------------------------


async def test_slow_first_byte_is_a_timeout(pair: Pair) -> None:
    pair.server.set_fault(Fault.SLOW_FIRST_BYTE, delay_s=3.0)
    started = time.perf_counter()
    error, sink = await failure(pair, call(timeout_s=0.5))

    assert error.code == ErrorCode.TIMEOUT and error.retryable is True
    assert time.perf_counter() - started < 2.0
    assert 450 <= error.latency_ms < 2000
    assert sink.chunks == []


async def test_slow_stream_past_the_deadline_is_a_timeout(pair: Pair) -> None:
    pair.server.reply = Reply(chunks=["a"] * 20, chunk_delay_s=0.1)
    error, sink = await failure(pair, call(timeout_s=0.5))

    assert error.code == ErrorCode.TIMEOUT and error.retryable is True
    assert 0 < len(sink.chunks) < 20


@pytest.mark.parametrize(
    ("fault", "code", "retryable"),
    [
        (Fault.SERVER_ERROR, ErrorCode.HTTP_5XX, True),
        (Fault.UNAUTHORIZED, ErrorCode.AUTH_FAILED, False),
        (Fault.FORBIDDEN, ErrorCode.AUTH_FAILED, False),
        (Fault.MALFORMED_JSON, ErrorCode.MALFORMED_RESPONSE, True),
        (Fault.ERROR_IN_STREAM, ErrorCode.HTTP_5XX, True),
    ],
)
async def test_faults_map_to_error_codes(pair: Pair, fault: Fault, code: ErrorCode, retryable: bool) -> None:
    pair.server.set_fault(fault)
    error, _ = await failure(pair)

    assert error.code == code
    assert error.retryable is retryable
    assert error.latency_ms > 0


async def test_rate_limit_carries_retry_after_seconds(pair: Pair) -> None:
    pair.server.set_fault(Fault.RATE_LIMITED, retry_after="7")
    error, _ = await failure(pair)

    assert error.code == ErrorCode.RATE_LIMITED and error.retryable is True
    assert error.retry_after_s == 7
    assert "retry after 7 s" in error.message


async def test_bad_request_carries_the_providers_message(pair: Pair) -> None:
    pair.server.set_fault(Fault.BAD_REQUEST, message="prompt is 9000 tokens, limit 8192")
    error, _ = await failure(pair)

    assert error.code == ErrorCode.BAD_REQUEST and error.retryable is False
    assert "prompt is 9000 tokens, limit 8192" in error.message
    assert "HTTP 400" in error.message


async def test_unknown_model_is_a_bad_request(pair: Pair) -> None:
    error, _ = await failure(pair, call(model="no-such-model"))

    assert error.code == ErrorCode.BAD_REQUEST and error.retryable is False
    assert "no-such-model" in error.message and "HTTP 404" in error.message


async def test_wrong_key_is_auth_failed(pair: Pair, session: aiohttp.ClientSession) -> None:
    adapter = type(pair.adapter)(session, pair.server.base_url, "sk-wrong")
    with pytest.raises(ModelCallFailed) as caught:
        await adapter.stream_chat(call(), Collector())

    assert caught.value.code == ErrorCode.AUTH_FAILED and caught.value.retryable is False
    assert "sk-wrong" not in caught.value.message


async def test_stream_cut_midway_keeps_what_arrived(pair: Pair) -> None:
    pair.server.set_fault(Fault.STREAM_CUT, cut_after=3)
    error, sink = await failure(pair)

    assert error.code == ErrorCode.STREAM_CUT and error.retryable is True
    assert sink.chunks == Reply(text=TEXT).split()[:3]


async def test_stream_ending_without_its_final_message_is_cut(pair: Pair) -> None:
    pair.server.set_fault(Fault.EARLY_END, cut_after=2)
    error, sink = await failure(pair)

    assert error.code == ErrorCode.STREAM_CUT
    assert len(sink.chunks) == 2


async def test_fault_for_the_next_n_requests_only(pair: Pair) -> None:
    pair.server.set_fault(Fault.SERVER_ERROR, times=1)
    error, _ = await failure(pair)
    reply = await pair.adapter.stream_chat(call(), Collector())

    assert error.code == ErrorCode.HTTP_5XX
    assert reply.text == TEXT
    assert len(pair.server.chat_requests()) == 2  # the adapter itself never retried


@pytest.mark.parametrize("kind", sorted(KINDS))
async def test_refused_connection_is_connection_error(kind: str, session: aiohttp.ClientSession) -> None:
    adapter = KINDS[kind][1](session, f"http://127.0.0.1:{free_port()}")
    with pytest.raises(ModelCallFailed) as caught:
        await adapter.stream_chat(call(), Collector())

    assert caught.value.code == ErrorCode.CONNECTION_ERROR and caught.value.retryable is True


@pytest.fixture
def unanswered_port() -> Iterator[int]:
    """A loopback port whose listener never accepts and whose backlog is full: the kernel drops further SYNs,
    so a connect to it hangs (neither refused nor answered)."""
    with socket.create_server(("127.0.0.1", 0), backlog=0) as listener:
        port = listener.getsockname()[1]
        held: list[socket.socket] = []
        try:
            while True:
                filler = socket.socket()
                held.append(filler)
                filler.settimeout(0.3)
                try:
                    filler.connect(("127.0.0.1", port))
                except TimeoutError:
                    break
            yield port
        finally:
            for filler in held:
                filler.close()


@pytest.mark.parametrize("kind", sorted(KINDS))
async def test_a_hanging_connect_is_a_connection_error_not_a_timeout(
    kind: str, session: aiohttp.ClientSession, unanswered_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(http_chat, "CONNECT_TIMEOUT_S", 0.3)
    adapter = KINDS[kind][1](session, f"http://127.0.0.1:{unanswered_port}")
    started = time.perf_counter()
    with pytest.raises(ModelCallFailed) as caught:
        await adapter.stream_chat(call(timeout_s=5.0), Collector())

    # Connecting is bounded apart from the call: a server that cannot be reached is not a slow model.
    assert caught.value.code == ErrorCode.CONNECTION_ERROR and caught.value.retryable is True
    assert "connect timed out" in caught.value.message
    assert time.perf_counter() - started < 2.0


def _clear_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


async def test_the_environments_proxy_carries_the_calls(
    monkeypatch: pytest.MonkeyPatch, session: aiohttp.ClientSession
) -> None:
    _clear_proxy_env(monkeypatch)
    # The fake answers proxied requests too (absolute-form targets): standing in as the proxy, it proves the call
    # went through the proxy, since the model host does not exist.
    async with FakeOpenAIServer(reply=Reply(text=TEXT)) as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.base_url)
        monkeypatch.setenv("NO_PROXY", "localhost,internal.lan")
        adapter = OpenAICompatAdapter(session, "http://model-host.invalid:8080")
        reply = await adapter.stream_chat(call(model="fake-model"), Collector())

    assert reply.text == TEXT
    assert proxy.chat_requests()[0].path == "/v1/chat/completions"
    assert env_proxy("http://model-host.invalid:8080") == proxy.base_url
    assert env_proxy("http://internal.lan:11434") is None  # NO_PROXY exempts it
    assert env_proxy("https://openrouter.ai/api") is None  # HTTP_PROXY is for http:// only
    _clear_proxy_env(monkeypatch)
    assert env_proxy("http://model-host.invalid:8080") is None


# --- health probe -------------------------------------------------------------------------------------


async def test_probe_lists_the_servers_models(pair: Pair) -> None:
    result = await pair.adapter.probe(timeout_s=2)

    assert result.healthy is True
    assert result.models == ["small-model", "big-model"]
    assert pair.server.requests[-1].path == PATHS[pair.kind][1]


async def test_probe_of_an_unhealthy_server(pair: Pair) -> None:
    pair.server.healthy = False
    result = await pair.adapter.probe(timeout_s=2)

    assert result.healthy is False and result.models == []
    assert "503" in result.detail


async def test_probe_of_a_stopped_server_does_not_raise(pair: Pair) -> None:
    await pair.server.stop()
    result = await pair.adapter.probe(timeout_s=2)

    assert result.healthy is False


# --- the fakes' non-streaming mode (used by other services' tests) -------------------------------------


@pytest.mark.parametrize("kind", sorted(KINDS))
async def test_fake_non_streaming_completion_shape(kind: str, client: httpx.AsyncClient) -> None:
    async with KINDS[kind][0](reply=Reply(text="Hi there you", prompt_tokens=5)) as server:
        body = {
            "model": "fake-model",
            "messages": [{"role": "user", "content": "hi"}],
            "stream": False,
            "max_tokens": 50,
        }
        response = await client.post(
            server.base_url + server.chat_path, json=body, headers={"anthropic-version": "2023-06-01"}
        )

    assert response.status_code == 200
    payload = response.json()
    if kind == "openai":
        assert payload["object"] == "chat.completion"
        assert payload["choices"][0]["message"] == {"role": "assistant", "content": "Hi there you"}
        assert payload["usage"] == {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}
    elif kind == "anthropic":
        assert payload["type"] == "message" and payload["stop_reason"] == "end_turn"
        assert payload["content"] == [{"type": "text", "text": "Hi there you"}]
        assert payload["usage"] == {"input_tokens": 5, "output_tokens": 3}
    else:
        assert payload["done"] is True and payload["message"]["content"] == "Hi there you"
        assert (payload["prompt_eval_count"], payload["eval_count"]) == (5, 3)


# --- Anthropic's Messages API: what the shared tests above do not cover ---------------------------------


@pytest.fixture
async def anthropic(session: aiohttp.ClientSession) -> AsyncIterator[Pair]:
    server = FakeAnthropicServer(
        reply=Reply(text=TEXT, prompt_tokens=31, completion_tokens=17),
        models=["claude-small", "claude-big"],
        api_key=KEY,
    )
    await server.start()
    yield Pair("anthropic", server, AnthropicAdapter(session, server.base_url, KEY))
    await server.stop()


async def test_anthropic_joins_system_messages_and_caps_the_temperature(anthropic: Pair) -> None:
    messages = [
        ChatMessage(role="system", content="You are a gardener."),
        ChatMessage(role="user", content="Balcony, south facing."),
        ChatMessage(role="assistant", content="Tomatoes?"),
        ChatMessage(role="system", content="Answer in one line."),
        ChatMessage(role="user", content="Yes."),
    ]
    # 1.5 is valid for OpenAI (0-2); the fake, like Anthropic, refuses anything above 1.
    the_call = ModelCall(model="claude-big", messages=messages, max_tokens=40, temperature=1.5, timeout_s=10)
    reply = await anthropic.adapter.stream_chat(the_call, Collector())

    [sent] = anthropic.server.chat_requests()
    assert sent.body["system"] == "You are a gardener.\n\nAnswer in one line."
    assert sent.body["messages"] == [{"role": m.role, "content": m.content} for m in messages if m.role != "system"]
    assert sent.body["temperature"] == 1.0
    assert reply.text == TEXT and (reply.prompt_tokens, reply.completion_tokens) == (31, 17)


async def test_anthropic_without_system_messages_sends_no_system(anthropic: Pair) -> None:
    the_call = ModelCall(model="claude-small", messages=MESSAGES[1:], max_tokens=40, temperature=0.0, timeout_s=10)
    await anthropic.adapter.stream_chat(the_call, Collector())

    [sent] = anthropic.server.chat_requests()
    assert "system" not in sent.body
    assert sent.body["temperature"] == 0.0


async def test_anthropic_wrong_key_keeps_the_providers_message(anthropic: Pair, session: aiohttp.ClientSession) -> None:
    adapter = AnthropicAdapter(session, anthropic.server.base_url, "sk-ant-wrong")
    with pytest.raises(ModelCallFailed) as caught:
        await adapter.stream_chat(call(model="claude-small"), Collector())

    error = caught.value
    assert (error.code, error.retryable) == (ErrorCode.AUTH_FAILED, False)
    assert "HTTP 401" in error.message and "invalid x-api-key" in error.message
    assert "sk-ant-wrong" not in error.message
    result = await adapter.probe(timeout_s=2)
    assert result.healthy is False and "401" in result.detail


@pytest.mark.parametrize(
    ("status", "code", "retryable"),
    [
        (500, ErrorCode.HTTP_5XX, True),
        (529, ErrorCode.HTTP_5XX, True),
        (400, ErrorCode.BAD_REQUEST, False),
    ],
)
async def test_anthropic_error_statuses(anthropic: Pair, status: int, code: ErrorCode, retryable: bool) -> None:
    anthropic.server.set_fault(Fault.SERVER_ERROR, status=status, message=f"provider says {status}")
    error, sink = await failure(anthropic, call(model="claude-small"))

    assert (error.code, error.retryable) == (code, retryable)
    assert f"HTTP {status}: provider says {status}" in error.message
    assert sink.chunks == []


async def test_anthropic_rate_limit_and_overloaded_event(anthropic: Pair) -> None:
    anthropic.server.set_fault(Fault.RATE_LIMITED, retry_after="12", times=1)
    limited, _ = await failure(anthropic, call(model="claude-small"))
    anthropic.server.set_fault(Fault.ERROR_IN_STREAM, cut_after=2, message="Overloaded", times=1)
    overloaded, sink = await failure(anthropic, call(model="claude-small"))

    assert (limited.code, limited.retryable, limited.retry_after_s) == (ErrorCode.RATE_LIMITED, True, 12)
    assert (overloaded.code, overloaded.retryable) == (ErrorCode.HTTP_5XX, True)
    assert "overloaded_error: Overloaded" in overloaded.message
    assert sink.chunks == Reply(text=TEXT).split()[:2]


@pytest.mark.parametrize(
    ("kind", "code", "retryable"),
    [
        ("overloaded_error", ErrorCode.HTTP_5XX, True),
        ("api_error", ErrorCode.HTTP_5XX, True),
        ("rate_limit_error", ErrorCode.RATE_LIMITED, True),
        ("invalid_request_error", ErrorCode.BAD_REQUEST, False),
        ("authentication_error", ErrorCode.AUTH_FAILED, False),
        ("brand_new_error", ErrorCode.HTTP_5XX, True),
    ],
)
def test_anthropic_error_event_types(kind: str, code: ErrorCode, retryable: bool) -> None:
    error = stream_error({"type": "error", "error": {"type": kind, "message": "details here"}})
    assert (error.code, error.retryable) == (code, retryable)
    assert f"{kind}: details here" in error.message


async def test_fake_anthropic_refuses_what_the_real_api_refuses(client: httpx.AsyncClient) -> None:
    async with FakeAnthropicServer(api_key=KEY) as server:
        url = server.base_url + server.chat_path
        ok = {"model": "fake-model", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
        headers = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}
        no_version = await client.post(url, json=ok, headers={"x-api-key": KEY})
        no_key = await client.post(url, json=ok, headers={"anthropic-version": "2023-06-01"})
        no_max = await client.post(url, json={k: v for k, v in ok.items() if k != "max_tokens"}, headers=headers)
        system_role = await client.post(
            url, json=ok | {"messages": [{"role": "system", "content": "x"}]}, headers=headers
        )
        fine = await client.post(url, json=ok, headers=headers)

    assert [r.status_code for r in (no_version, no_key, no_max, system_role, fine)] == [400, 401, 400, 400, 200]
    assert no_key.json()["error"] == {"type": "authentication_error", "message": "invalid x-api-key"}
    assert no_key.json()["type"] == "error"
    assert "system" in system_role.json()["error"]["message"]


# --- pure helpers and configuration -------------------------------------------------------------------


def test_retry_after_seconds_and_http_date() -> None:
    now = datetime(2025, 5, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("12", now) == 12
    assert parse_retry_after(format_datetime(now + timedelta(seconds=30), usegmt=True), now) == 30
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after(None, now) is None


@pytest.mark.parametrize(
    ("status", "code", "retryable"),
    [
        (400, ErrorCode.BAD_REQUEST, False),
        (404, ErrorCode.BAD_REQUEST, False),
        (422, ErrorCode.BAD_REQUEST, False),
        (401, ErrorCode.AUTH_FAILED, False),
        (403, ErrorCode.AUTH_FAILED, False),
        (408, ErrorCode.TIMEOUT, True),
        (429, ErrorCode.RATE_LIMITED, True),
        (500, ErrorCode.HTTP_5XX, True),
        (503, ErrorCode.HTTP_5XX, True),
    ],
)
def test_status_mapping(status: int, code: ErrorCode, retryable: bool) -> None:
    error = error_for_status(status, "provider says no")
    assert (error.code, error.retryable) == (code, retryable)
    assert "provider says no" in error.message


def test_token_estimate() -> None:
    assert estimate_tokens("") == 0
    assert estimate_tokens("abcd") == 1
    assert estimate_tokens("abcde") == 2
    assert estimate_prompt_tokens([ChatMessage(role="user", content="abcdefgh")]) == 2 + 4 + 3


@pytest.mark.parametrize(
    ("host", "port", "kind", "url"),
    [
        ("127.0.0.1", None, "ollama", "http://127.0.0.1:11434"),
        ("127.0.0.1", None, "openai", "http://127.0.0.1:8080"),
        ("gpu-box", 8000, "openai", "http://gpu-box:8000"),
        ("https://openrouter.ai/api", None, "openai", "https://openrouter.ai/api"),
        ("https://openrouter.ai/api/", 8443, "openai", "https://openrouter.ai:8443/api"),
        ("http://mac-mini.local:11500", 9999, "ollama", "http://mac-mini.local:11500"),
        ("https://llm-gateway.example/anthropic", None, "anthropic", "https://llm-gateway.example/anthropic"),
        ("::1", None, "ollama", "http://[::1]:11434"),
    ],
)
def test_base_url(host: str, port: int | None, kind: str, url: str) -> None:
    assert BackendConfig(name="x", type=kind, host=host, port=port).base_url == url


def test_backend_settings_from_prefixed_environment(
    monkeypatch: pytest.MonkeyPatch, session: aiohttp.ClientSession
) -> None:
    monkeypatch.setenv("HERMES_EDGE_BACKEND", "Server_Models")
    monkeypatch.setenv("BACKEND_SERVER_MODELS_TYPE", "openai")
    monkeypatch.setenv("BACKEND_SERVER_MODELS_HOST", "vllm.lan")
    monkeypatch.setenv("BACKEND_SERVER_MODELS_PORT", "8001")
    monkeypatch.setenv("BACKEND_SERVER_MODELS_MODELS", "qwen-7b, llama-8b")
    monkeypatch.setenv("BACKEND_SERVER_MODELS_TIMEOUT", "42")
    monkeypatch.setenv("BACKEND_SERVER_MODELS_KEY", KEY)
    monkeypatch.setenv("BACKEND_TALOS_HOST", "elsewhere")

    settings = EdgeSettings()
    backend = load_backend_settings(settings.hermes_edge_backend)

    assert settings.hermes_edge_backend == "server_models"
    assert settings.metrics_port == 9104 and settings.hermes_edge_heartbeat_s == 5.0
    assert backend.models == ["qwen-7b", "llama-8b"] and backend.timeout == 42
    assert KEY not in repr(backend)
    adapter = build_adapter(backend, session)
    assert isinstance(adapter, OpenAICompatAdapter) and adapter.base_url == "http://vllm.lan:8001"


def test_anthropic_backend_builds_the_anthropic_adapter(session: aiohttp.ClientSession) -> None:
    backend = BackendConfig(name="claude", type="anthropic", host="https://llm-gateway.example", key=KEY)
    adapter = build_adapter(backend, session)
    assert isinstance(adapter, AnthropicAdapter) and adapter.base_url == "https://llm-gateway.example"


def test_bad_backend_name_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HERMES_EDGE_BACKEND", "a.b")
    with pytest.raises(ValueError):
        EdgeSettings()
