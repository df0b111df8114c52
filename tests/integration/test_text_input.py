"""Ideas are cleaned by one rule wherever they enter (hermes_proto.text): the REST routes, the OpenAI-compatible
``hermes`` model, Telegram, and commands published straight to the bus. An idea made only of zero-width characters
is refused (400 ``invisible_idea``, a usage reply, a dead letter ``invalid_idea``); a right-to-left override never
reaches the thread list. The gateway, the orchestrator and the notifier run as real processes on a real NATS server,
with the loopback Bot API (tests/fakes/telegram_api.py), over real HTTP."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from conftest import open_command, stored_dead_letters, stored_events, wait_until
from fakes.telegram_api import FakeTelegramServer
from procs import ServiceProcess, service_processes, start_ready

from hermes_proto import subjects
from hermes_proto.bus import EventStore
from hermes_proto.commands import SubmitIdea
from hermes_proto.events import ThreadOpened
from hermes_proto.ids import new_id, utcnow

from hermes_cli.natsserver import free_port

TOKEN = "555222:text-test-SECRET"
CHAT = 4303
ZERO_WIDTH = "\u200b\u200c\u200d\u2060\ufeff"
RLO = "\u202e"
SPOOFED = f"plan a {RLO}nedrag{chr(0x202C)} on my balcony\u200f"
"""Shown as "plan a garden on my balcony" by a browser that honours the override; cleaned, the letters stay."""
CLEANED = "plan a nedrag on my balcony"


@dataclass
class Stack:
    js: object
    procs: dict[str, ServiceProcess]
    url: str
    telegram: FakeTelegramServer

    async def opened(self, thread_id: str) -> ThreadOpened:
        async def found():
            events = await stored_events(self.js, subjects.thread_event(thread_id, ThreadOpened))
            return events[0] if events else None

        return await wait_until(found, timeout_s=20)


@pytest.fixture
async def stack(js_client, bus_env: dict[str, str], tmp_path: Path) -> AsyncIterator[Stack]:
    _, js = js_client
    port = free_port()
    async with FakeTelegramServer(token=TOKEN) as telegram:
        env = dict(
            bus_env,
            METRICS_PORT="0",
            HERMES_WEB_HOST="127.0.0.1",
            HERMES_WEB_PORT=str(port),
            TELEGRAM_BOT_TOKEN=TOKEN,
            TELEGRAM_CHAT_ID=str(CHAT),
            TELEGRAM_ALLOWED_CHAT_IDS=str(CHAT),
            TELEGRAM_API_BASE_URL=telegram.api_base_url,
            TELEGRAM_POLL_TIMEOUT_S="1",
            TELEGRAM_RETRY_BACKOFF_S="0.2",
        )
        procs = service_processes(env, tmp_path / "logs", ("orchestrator", "gateway", "notifier"))
        try:
            await asyncio.gather(*(start_ready(p) for p in procs.values()))
            yield Stack(js, procs, f"http://127.0.0.1:{port}", telegram)
        finally:
            await asyncio.gather(*(asyncio.to_thread(p.stop) for p in procs.values()))


def error_of(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    return body["error"]["code"]


async def test_the_gateway_refuses_invisible_ideas_and_cleans_the_rest(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.url, timeout=20) as http:
        before = (await stack.js.stream_info(subjects.COMMANDS_STREAM)).state.last_seq
        assert error_of(await http.post("/api/submit", json={"idea": ZERO_WIDTH}), 400) == "invisible_idea"
        assert error_of(await http.post("/api/submit", json={"idea": f" {RLO}\u200e "}), 400) == "invisible_idea"
        assert error_of(await http.post("/api/submit", json={"idea": " \n\t "}), 400) == "empty_idea"
        # a public address literal: the callback passes the outbound check (no DNS), so the idea decides
        external = {"idea": ZERO_WIDTH, "callback_url": "https://93.184.216.34/cb", "source_app": "probe"}
        assert error_of(await http.post("/api/external/submit", json=external), 400) == "invisible_idea"
        workflow = {"steps": [{"step_id": "a", "prompt": "\u3164\u200b"}]}
        assert error_of(await http.post("/api/workflows", json=workflow), 400) == "invisible_idea"
        chat = {"model": "hermes", "messages": [{"role": "user", "content": ZERO_WIDTH}]}
        refused = await http.post("/v1/chat/completions", json=chat)
        assert refused.status_code == 400 and refused.json()["error"]["code"] == "invisible_idea"
        # Nothing refused was published.
        assert (await stack.js.stream_info(subjects.COMMANDS_STREAM)).state.last_seq == before

        accepted = await http.post("/api/submit", json={"idea": SPOOFED})
        assert accepted.status_code == 202, accepted.text
        thread_id = accepted.json()["data"]["thread_id"]
        assert (await stack.opened(thread_id)).idea == CLEANED

        async def listed():
            threads = (await http.get("/api/threads")).json()["data"]["threads"]
            return next((t for t in threads if t["thread_id"] == thread_id), None)

        assert (await wait_until(listed, timeout_s=10))["idea"] == CLEANED


async def test_the_orchestrator_dead_letters_an_invisible_idea_from_the_bus(stack: Stack) -> None:
    store = EventStore(stack.js, "external-producer")

    def submit(idea: str) -> SubmitIdea:
        return SubmitIdea(command_id=new_id(), issued_at=utcnow(), thread_id=new_id(), idea=idea)

    invisible, spoofed, empty = submit(ZERO_WIDTH), submit(SPOOFED), submit("")
    for command in (invisible, spoofed, empty):
        await store.send(command)
    assert (await stack.opened(spoofed.thread_id)).idea == CLEANED

    async def dead() -> list | None:
        found = [d for d in await stored_dead_letters(stack.js) if d.consumer == "orchestrator-commands"]
        return found if len(found) == 2 else None

    letters = await wait_until(dead, timeout_s=20)
    by_thread = {(await open_command(base64.b64decode(d.payload_b64))).thread_id: d for d in letters}
    assert by_thread[invisible.thread_id].reason == "invalid_idea"
    assert by_thread[invisible.thread_id].detail.startswith("invisible")
    assert by_thread[empty.thread_id].detail.startswith("empty")
    assert not await stored_events(stack.js, subjects.thread_event(invisible.thread_id, ThreadOpened))
    assert stack.procs["orchestrator"].alive()


async def test_telegram_ideas_are_cleaned_and_invisible_ones_answered_with_usage(stack: Stack) -> None:
    telegram = stack.telegram
    telegram.push_text(CHAT, ZERO_WIDTH)

    def usage():
        return next((m for m in telegram.messages_to(CHAT) if "no visible text" in m["text"]), None)

    await wait_until(usage, timeout_s=20)
    telegram.push_text(CHAT, SPOOFED)

    async def opened():
        events = await stored_events(stack.js, subjects.event_type_filter(ThreadOpened))
        return [e for e in events if e.channel == "telegram"] or None

    [thread] = await wait_until(opened, timeout_s=20)
    assert thread.idea == CLEANED
    assert not [m for m in telegram.messages_to(CHAT) if RLO in m["text"]]
