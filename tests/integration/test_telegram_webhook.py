"""Telegram in webhook mode: ``POST /api/telegram/webhook`` of the real gateway process stores each pushed update
on ``HERMES_INBOX`` of a real nats-server, exactly once.

Telegram is the loopback Bot API stand-in (:mod:`fakes.telegram_api`): the webhook is registered on it over
HTTP with python-telegram-bot, as an operator's tool would, and it POSTs every pushed update to the gateway
route with the secret header, retrying on any non-2xx answer, as Telegram does. The stream is read back
with a JetStream client, message by message (nothing consumes it here: the notifier is not running).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from conftest import NatsServer, wait_until
from fakes.telegram_api import FakeTelegramServer
from nats.js.errors import NotFoundError
from procs import ServiceProcess
from telegram import Bot
from test_gateway_api import Gateway, assert_error, start_gateway

from hermes_proto import subjects
from hermes_proto.bus import RawMessage
from hermes_proto.inbox import telegram_msg_id

from hermes_gateway.config import GatewaySettings

TOKEN = "909090:webhook-test"
SECRET = "hermes-Webhook_secret-0123456789"
PUBLIC_URL = "https://hermes.example.test/api/telegram/webhook"
ROUTE = "/api/telegram/webhook"
HEADER = "X-Telegram-Bot-Api-Secret-Token"
CHATS = (5551, -1001234567890)  # a private chat and a supergroup (negative ids)


async def inbox(js) -> list[RawMessage]:
    """Every message ``HERMES_INBOX`` holds, in stream order (read by sequence: no consumer, nothing removed)."""
    state = (await js.stream_info(subjects.INBOX_STREAM)).state
    found = []
    for seq in range(state.first_seq, state.last_seq + 1) if state.messages else ():
        try:
            msg = await js.get_msg(subjects.INBOX_STREAM, seq)
        except NotFoundError:
            continue
        found.append(RawMessage(msg.seq, msg.subject, msg.data, msg.headers))
    return found


async def outcomes(gateway: Gateway, http: httpx.AsyncClient) -> dict[str, float]:
    """``hermes_telegram_webhook_updates_total`` by ``outcome``."""
    families = await gateway.metrics(http)
    return {
        s.labels["outcome"]: s.value for s in families["hermes_telegram_webhook_updates"] if s.name.endswith("_total")
    }


@dataclass
class Stack:
    gateway: Gateway
    telegram: FakeTelegramServer
    bot: Bot
    js: object
    http: httpx.AsyncClient

    async def post(self, body: bytes | str, secret: str | None = SECRET) -> httpx.Response:
        """POST ``body`` to the route as Telegram would (the secret header unless ``secret`` is None)."""
        headers = {"Content-Type": "application/json"}
        if secret is not None:
            headers[HEADER] = secret
        return await self.http.post(f"{self.gateway.url}{ROUTE}", content=body, headers=headers)


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=20) as client:
        yield client


@pytest.fixture
async def stack(bus_env: dict[str, str], js_client, tmp_path: Path, http: httpx.AsyncClient) -> AsyncIterator[Stack]:
    """The gateway with ``TELEGRAM_WEBHOOK_SECRET`` set, and Telegram delivering webhook updates to it."""
    _, js = js_client
    gateway = await start_gateway(bus_env, tmp_path / "logs", TELEGRAM_WEBHOOK_SECRET=SECRET)
    try:
        async with (
            FakeTelegramServer(token=TOKEN) as telegram,
            Bot(TOKEN, base_url=f"{telegram.api_base_url}/bot") as bot,
        ):
            telegram.webhook_delivery_url = f"{gateway.url}{ROUTE}"  # the TLS proxy in front of the gateway
            yield Stack(gateway, telegram, bot, js, http)
    finally:
        gateway.process.stop()


async def test_pushed_updates_land_on_the_inbox_once(stack: Stack) -> None:
    telegram, js = stack.telegram, stack.js
    # Registered with the wrong secret: the gateway refuses every delivery, Telegram keeps retrying.
    assert await stack.bot.set_webhook(PUBLIC_URL, secret_token="not-the-secret", allowed_updates=["message"])
    early = telegram.push_text(CHATS[0], "are you there?")
    await wait_until(lambda: len(telegram.webhook_deliveries) >= 2)
    assert {status for _, status in telegram.webhook_deliveries} == {401}
    assert await inbox(js) == []
    assert (await stack.bot.get_webhook_info()).pending_update_count == 1

    # The right secret: the retried update goes through, then new ones, in order.
    assert await stack.bot.set_webhook(PUBLIC_URL, secret_token=SECRET)
    pushed = [early, telegram.push_text(CHATS[1], "plan my balcony garden"), telegram.push_text(CHATS[0], "/status")]
    stored = await wait_until(lambda: _when_count(inbox(js), 3), timeout_s=15)
    assert [m.subject for m in stored] == [
        f"hermes.inbox.telegram.{CHATS[0]}",
        f"hermes.inbox.telegram.{CHATS[1]}",
        f"hermes.inbox.telegram.{CHATS[0]}",
    ]
    assert [json.loads(m.data) for m in stored] == pushed
    assert [m.headers["Nats-Msg-Id"] for m in stored] == [telegram_msg_id(u["update_id"]) for u in pushed]
    delivered = [(update_id, status) for update_id, status in telegram.webhook_deliveries if status == 200]
    assert delivered == [(u["update_id"], 200) for u in pushed]
    assert (await stack.bot.get_webhook_info()).pending_update_count == 0

    # Telegram sends an update again when it missed the answer: acknowledged, not stored twice.
    for update in pushed[:2]:
        response = await stack.post(json.dumps(update))
        assert (response.status_code, response.json()) == (200, {"ok": True})
    assert len(await inbox(js)) == 3
    counts = await outcomes(stack.gateway, stack.http)
    assert counts["published"] == 5 and counts["unauthorized"] >= 2
    assert counts["bad_update"] == 0 and counts["ignored"] == 0


async def _when_count(messages, n: int) -> list[RawMessage] | None:
    found = await messages
    assert len(found) <= n, found
    return found if len(found) == n else None


async def test_requests_that_are_not_telegram_updates_store_nothing(stack: Stack) -> None:
    update = {
        "update_id": 7001,
        "message": {
            "message_id": 1,
            "date": 0,
            "chat": {"id": CHATS[0], "type": "private"},
            "from": {"id": CHATS[0], "first_name": "T"},
            "text": "hi",
        },
    }
    body = json.dumps(update)
    for secret in (None, "", "wrong", SECRET + "x", SECRET[:-1]):
        refused = assert_error(await stack.post(body, secret=secret), 401, "unauthorized")
        assert refused["error"]["details"] is None
        assert SECRET not in json.dumps(refused)
    bad = assert_error(await stack.post(b"{not json"), 400, "bad_update")
    assert bad["error"]["details"]["reason"] == "invalid_json"
    bad = assert_error(await stack.post(json.dumps({"message": {"text": "no update_id"}})), 400, "bad_update")
    assert bad["error"]["details"]["reason"] == "validation_failed"
    assert_error(await stack.post(b"[]"), 400, "bad_update")
    assert_error(await stack.post(b'{"update_id": 1, "pad": "' + b"x" * (1 << 20) + b'"}'), 413, "update_too_large")
    # An update kind Hermes does not read (no chat) is acknowledged, so Telegram stops sending it.
    ignored = await stack.post(json.dumps({"update_id": 7002, "edited_message": update["message"]}))
    assert (ignored.status_code, ignored.json()) == (200, {"ok": True, "ignored": True})
    assert await inbox(stack.js) == []

    # The body is stored byte for byte as it came (Telegram's own formatting, unknown fields included).
    raw = b'{ "update_id": 7003,  "message": {"message_id": 2, "date": 1, "chat": {"id": 5551}, "x": [1]} }'
    response = await stack.post(raw)
    assert (response.status_code, response.json()) == (200, {"ok": True})
    [stored] = await inbox(stack.js)
    assert (stored.subject, stored.data) == ("hermes.inbox.telegram.5551", raw)
    assert await outcomes(stack.gateway, stack.http) == {
        "unauthorized": 5,
        "bad_update": 4,
        "ignored": 1,
        "published": 1,
    }


async def test_without_jetstream_the_update_is_refused_and_stored_once_when_resent(
    stack: Stack, nats_server: NatsServer
) -> None:
    direct = json.dumps({"update_id": 8001, "message": {"message_id": 1, "chat": {"id": CHATS[1]}, "text": "hi?"}})
    assert await stack.bot.set_webhook(PUBLIC_URL, secret_token=SECRET)
    nats_server.stop()
    down = assert_error(await stack.post(direct), 503, "bus_unavailable")
    assert down["error"]["retry_after"] is not None
    pushed = stack.telegram.push_text(CHATS[0], "hello?")  # Telegram keeps re-sending this one meanwhile
    await wait_until(lambda: any(status == 503 for _, status in stack.telegram.webhook_deliveries), timeout_s=15)
    nats_server.start()

    # Telegram re-sends what was refused. The client may also flush a publish it buffered while disconnected,
    # so a 503 does not prove nothing was stored: the message id makes every copy after the first a no-op.
    await wait_until(lambda: (pushed["update_id"], 200) in stack.telegram.webhook_deliveries, timeout_s=20)
    response = await stack.post(direct)
    assert (response.status_code, response.json()) == (200, {"ok": True})
    stored = await inbox(stack.js)
    assert sorted(json.loads(m.data)["update_id"] for m in stored) == sorted([8001, pushed["update_id"]])
    assert [json.loads(m.data) for m in stored if m.subject == f"hermes.inbox.telegram.{CHATS[0]}"] == [pushed]


async def test_the_route_is_off_without_a_secret(
    bus_env: dict[str, str], js_client, tmp_path: Path, http: httpx.AsyncClient
) -> None:
    _, js = js_client
    env = {k: v for k, v in bus_env.items() if k.upper() != "TELEGRAM_WEBHOOK_SECRET"}
    gateway = await start_gateway(env, tmp_path / "logs")
    try:
        for secret in (SECRET, None):
            headers = {HEADER: secret} if secret else {}
            off = assert_error(
                await http.post(
                    f"{gateway.url}{ROUTE}",
                    json={"update_id": 1, "message": {"message_id": 1, "chat": {"id": 1}}},
                    headers=headers,
                ),
                404,
                "webhook_off",
            )
            assert "TELEGRAM_WEBHOOK_SECRET" in off["error"]["user_action"]
    finally:
        gateway.process.stop()
    assert await inbox(js) == []


def test_a_secret_telegram_would_refuse_stops_the_gateway_at_start(bus_env: dict[str, str], tmp_path: Path) -> None:
    bad = "spaces and ! are not allowed"
    process = ServiceProcess(
        "gateway-bad", "hermes_gateway", {**bus_env, "TELEGRAM_WEBHOOK_SECRET": bad}, tmp_path / "logs"
    ).start()
    assert process.proc is not None
    assert process.proc.wait(timeout=30) != 0
    log = process.log_text()
    assert "telegram_webhook_secret" in log and bad not in log
    # Blank is "off" (deployments template the variable), not an empty secret.
    assert GatewaySettings(telegram_webhook_secret="  ").webhook_secret() is None
    assert GatewaySettings(telegram_webhook_secret=SECRET).webhook_secret() == SECRET
