"""The loopback Telegram Bot API stand-in itself (:mod:`fakes.telegram_api`): MarkdownV2 parsed as the real
server parses it, and webhook delivery as Telegram does it. Driven over real HTTP on loopback, with
python-telegram-bot where a client library is what matters and httpx where the exact wire answer is."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
from aiohttp import web
from conftest import wait_until
from fakes.loopback import LoopbackServer
from fakes.telegram_api import SECRET_TOKEN_HEADER, FakeTelegramServer, parse_markdown_v2
from telegram import Bot, MessageEntity
from telegram.constants import ParseMode
from telegram.error import BadRequest
from telegram.helpers import escape_markdown

from hermes_cli.natsserver import free_port

TOKEN = "424242:fake-TOKEN"
CHAT = 777
SPECIAL = "Cost: 3.50 (est.) - 100% done! #1 [draft] {v2} a_b*c~d`e>f+g=h|i \\ end."
"""Every MarkdownV2 reserved character, a backslash, and plain text around them."""
WEBHOOK = "https://hermes.example.test/api/telegram/webhook"


@pytest.fixture
async def telegram() -> AsyncIterator[FakeTelegramServer]:
    async with FakeTelegramServer(token=TOKEN) as server:
        yield server


@pytest.fixture
async def api(telegram: FakeTelegramServer) -> AsyncIterator[Api]:
    async with httpx.AsyncClient(base_url=f"{telegram.api_base_url}/bot{TOKEN}", timeout=10) as client:
        yield Api(client)


@pytest.fixture
async def bot(telegram: FakeTelegramServer) -> AsyncIterator[Bot]:
    async with Bot(TOKEN, base_url=f"{telegram.api_base_url}/bot") as ptb:
        yield ptb


@dataclass
class Api:
    """Raw Bot API calls: ``(HTTP status, JSON answer)``."""

    client: httpx.AsyncClient

    async def __call__(self, method: str, **params: object) -> tuple[int, dict]:
        response = await self.client.post(f"/{method}", json=params)
        return response.status_code, response.json()


# --------------------------------------------------------------------------- MarkdownV2


async def test_escaped_markdown_v2_is_stored_as_the_plain_text(telegram: FakeTelegramServer, bot: Bot) -> None:
    escaped = escape_markdown(SPECIAL, version=2)
    assert escaped != SPECIAL
    sent = await bot.send_message(CHAT, escaped, parse_mode=ParseMode.MARKDOWN_V2)
    assert sent.text == SPECIAL
    assert sent.entities == ()
    assert [m["text"] for m in telegram.messages_to(CHAT)] == [SPECIAL]
    assert "entities" not in telegram.messages_to(CHAT)[0]


async def test_markdown_v2_entities_come_back_with_the_message(telegram: FakeTelegramServer, bot: Bot) -> None:
    text = (
        f"*Draft {escape_markdown('1.2', version=2)}* _ready_ __now__ ~old~ ||x|| `a.b` "
        f"[open](http://127.0.0.1:5000/t/1) ```python\nprint(1)```"
    )
    sent = await bot.send_message(CHAT, text, parse_mode=ParseMode.MARKDOWN_V2)
    assert sent.text == "Draft 1.2 ready now old x a.b open print(1)"
    got = [(e.type, sent.text[e.offset : e.offset + e.length]) for e in sent.entities]
    assert got == [
        (MessageEntity.BOLD, "Draft 1.2"),
        (MessageEntity.ITALIC, "ready"),
        (MessageEntity.UNDERLINE, "now"),
        (MessageEntity.STRIKETHROUGH, "old"),
        (MessageEntity.SPOILER, "x"),
        (MessageEntity.CODE, "a.b"),
        (MessageEntity.TEXT_LINK, "open"),
        (MessageEntity.PRE, "print(1)"),
    ]
    assert sent.entities[6].url == "http://127.0.0.1:5000/t/1"
    assert sent.entities[7].language == "python"
    assert telegram.messages_to(CHAT)[0]["entities"] == [e.to_dict() for e in sent.entities]


@pytest.mark.parametrize(
    ("text", "description"),
    [
        ("Draft 1 is ready.", "Character '.' is reserved and must be escaped with the preceding '\\'"),
        ("Done!", "Character '!' is reserved and must be escaped with the preceding '\\'"),
        ("Hello *world", "Can't find end of Bold entity at byte offset 6"),
        ("é ||secret", "Can't find end of Spoiler entity at byte offset 3"),
        ("see [docs](http://x", "Can't find end of a URL at byte offset 11"),
    ],
)
async def test_bad_markdown_v2_is_refused_in_the_servers_words(
    telegram: FakeTelegramServer, api: Api, text: str, description: str
) -> None:
    status, body = await api("sendMessage", chat_id=CHAT, text=text, parse_mode="MarkdownV2")
    assert (status, body["ok"], body["error_code"]) == (400, False, 400)
    assert body["description"] == f"Bad Request: can't parse entities: {description}"
    assert telegram.messages_to(CHAT) == []
    status, body = await api("sendMessage", chat_id=CHAT, text=text)  # the same text, unformatted, is fine
    assert status == 200 and body["result"]["text"] == text


async def test_ptb_reports_the_parse_error(bot: Bot) -> None:
    with pytest.raises(BadRequest, match="reserved and must be escaped"):
        await bot.send_message(CHAT, "v1.0", parse_mode=ParseMode.MARKDOWN_V2)


async def test_entity_offsets_count_utf16_code_units(api: Api) -> None:
    status, body = await api("sendMessage", chat_id=CHAT, text="🌱 *balcony* 🍅 _tomato_", parse_mode="MarkdownV2")
    assert status == 200, body
    message = body["result"]
    assert message["text"] == "🌱 balcony 🍅 tomato"
    # Each emoji is one code point but two UTF-16 code units (a surrogate pair).
    assert message["entities"] == [
        {"type": "bold", "offset": 3, "length": 7},
        {"type": "italic", "offset": 14, "length": 6},
    ]
    status, body = await api("sendMessage", chat_id=CHAT, text="🌱 *open", parse_mode="MarkdownV2")
    assert body["description"].endswith("Can't find end of Bold entity at byte offset 5")  # UTF-8 bytes


async def test_the_length_limit_counts_the_parsed_text(api: Api) -> None:
    status, body = await api("sendMessage", chat_id=CHAT, text="*" + "a" * 4096 + "*", parse_mode="MarkdownV2")
    assert status == 200 and len(body["result"]["text"]) == 4096
    status, body = await api("sendMessage", chat_id=CHAT, text="\\." * 4096, parse_mode="MarkdownV2")
    assert status == 200 and body["result"]["text"] == "." * 4096
    status, body = await api("sendMessage", chat_id=CHAT, text="\\." * 4097, parse_mode="MarkdownV2")
    assert (status, body["description"]) == (400, "Bad Request: message is too long")
    status, body = await api("sendMessage", chat_id=CHAT, text="**", parse_mode="MarkdownV2")
    assert (status, body["description"]) == (400, "Bad Request: message text is empty")


def test_code_needs_only_backticks_and_backslashes_escaped() -> None:
    assert parse_markdown_v2(r"`a.b_c*d \` \\ e` f\.") == (
        "a.b_c*d ` \\ e f.",
        [{"type": "code", "offset": 0, "length": 13}],
    )
    assert parse_markdown_v2("```\nx = [1] + (2)\n```") == (
        "x = [1] + (2)\n",
        [{"type": "pre", "offset": 0, "length": 14}],
    )


async def test_edit_message_text_parses_markdown_v2(telegram: FakeTelegramServer, api: Api) -> None:
    _, body = await api("sendMessage", chat_id=CHAT, text="Working\\.\\.\\.", parse_mode="MarkdownV2")
    message_id = body["result"]["message_id"]
    status, body = await api(
        "editMessageText", chat_id=CHAT, message_id=message_id, text="*Done*\\.", parse_mode="MarkdownV2"
    )
    assert status == 200
    assert telegram.messages_to(CHAT)[0]["text"] == "Done."
    assert telegram.messages_to(CHAT)[0]["entities"] == [{"type": "bold", "offset": 0, "length": 4}]
    status, body = await api("editMessageText", chat_id=CHAT, message_id=message_id, text="Done.")
    assert status == 200 and "entities" not in telegram.messages_to(CHAT)[0]  # same text, entities gone
    status, body = await api("editMessageText", chat_id=CHAT, message_id=message_id, text="Done.")
    assert status == 400 and body["description"].startswith("Bad Request: message is not modified")
    status, body = await api(
        "editMessageText", chat_id=CHAT, message_id=message_id, text="Done.", parse_mode="MarkdownV2"
    )
    assert status == 400 and "'.' is reserved" in body["description"]


# --------------------------------------------------------------------------- webhook delivery


class WebhookReceiver(LoopbackServer):
    """The bot's webhook endpoint: answers each POST with the next queued status (200 once none is left)."""

    def __init__(self) -> None:
        super().__init__()
        self.received: list[tuple[int, str | None, int]] = []  # (update_id, secret header, status answered)
        self.bodies: list[dict] = []
        self.statuses: list[int] = []

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/hook", self._post)

    async def _post(self, request: web.Request) -> web.Response:
        body = json.loads(await request.read())
        status = self.statuses.pop(0) if self.statuses else 200
        self.bodies.append(body)
        self.received.append((body["update_id"], request.headers.get(SECRET_TOKEN_HEADER), status))
        return web.json_response({"ok": status < 300}, status=status)

    def delivered(self) -> list[int]:
        return [update_id for update_id, _, status in self.received if status < 300]


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    async with WebhookReceiver() as server:
        yield server


async def test_webhook_delivers_updates_in_order_with_the_secret(
    telegram: FakeTelegramServer, api: Api, receiver: WebhookReceiver
) -> None:
    status, body = await api(
        "setWebhook", url=WEBHOOK, secret_token="hook-Secret_1", allowed_updates=["message", "callback_query"]
    )
    assert status == 200 and body["result"] is True
    pushed = [telegram.push_text(CHAT, "one"), telegram.push_text(CHAT + 1, "two"), telegram.push_text(CHAT, "three")]
    _, info = await api("getWebhookInfo")
    assert info["result"]["pending_update_count"] == 3  # no delivery address yet: they wait
    assert info["result"]["allowed_updates"] == ["message", "callback_query"]
    assert info["result"]["url"] == WEBHOOK

    telegram.webhook_delivery_url = f"{receiver.url}/hook"
    await wait_until(lambda: len(receiver.delivered()) == 3)
    assert receiver.bodies == pushed
    assert [secret for _, secret, _ in receiver.received] == ["hook-Secret_1"] * 3
    assert telegram.webhook_deliveries == [(u["update_id"], 200) for u in pushed]
    _, info = await api("getWebhookInfo")
    assert info["result"]["pending_update_count"] == 0
    status, body = await api("getUpdates")
    assert status == 409  # a webhook is set

    later = telegram.push_text(CHAT, "four")  # a push while the webhook is live goes straight out
    await wait_until(lambda: receiver.delivered()[-1:] == [later["update_id"]])


async def test_webhook_retries_a_failed_delivery_before_the_next_update(
    telegram: FakeTelegramServer, api: Api, receiver: WebhookReceiver
) -> None:
    telegram.webhook_delivery_url = f"{receiver.url}/hook"
    await api("setWebhook", url=WEBHOOK)  # no secret token: no header
    receiver.statuses = [500, 503]
    first, second = telegram.push_text(CHAT, "first"), telegram.push_text(CHAT, "second")
    await wait_until(lambda: len(receiver.delivered()) == 2)
    assert receiver.received == [
        (first["update_id"], None, 500),
        (first["update_id"], None, 503),
        (first["update_id"], None, 200),
        (second["update_id"], None, 200),
    ]
    assert telegram.webhook_deliveries == [
        (first["update_id"], 500),
        (first["update_id"], 503),
        (first["update_id"], 200),
        (second["update_id"], 200),
    ]
    _, info = await api("getWebhookInfo")
    assert info["result"]["pending_update_count"] == 0
    assert info["result"]["last_error_message"] == "Wrong response from the webhook: 503 Service Unavailable"


async def test_webhook_retries_after_a_connection_error(
    telegram: FakeTelegramServer, api: Api, receiver: WebhookReceiver
) -> None:
    await api("setWebhook", url=WEBHOOK, secret_token="s")
    telegram.webhook_delivery_url = f"http://127.0.0.1:{free_port()}/hook"  # nobody listens there
    update = telegram.push_text(CHAT, "hello")
    await wait_until(lambda: len(telegram.webhook_deliveries) >= 2)
    assert set(telegram.webhook_deliveries) == {(update["update_id"], None)}
    _, info = await api("getWebhookInfo")
    assert info["result"]["pending_update_count"] == 1 and info["result"]["last_error_message"]

    telegram.webhook_delivery_url = f"{receiver.url}/hook"  # the endpoint comes up
    await wait_until(lambda: receiver.delivered() == [update["update_id"]])
    assert receiver.received == [(update["update_id"], "s", 200)]


async def test_set_webhook_checks_its_parameters(telegram: FakeTelegramServer, api: Api) -> None:
    status, body = await api("setWebhook", url="http://hermes.example.test/hook")
    assert (status, body["description"]) == (400, "Bad Request: bad webhook: An HTTPS URL must be provided for webhook")
    status, body = await api("setWebhook", url=WEBHOOK, secret_token="has space")
    assert (status, body["description"]) == (400, "Bad Request: secret token contains unallowed characters")
    assert telegram.webhook_url == ""
    status, _ = await api("setWebhook", url=WEBHOOK, secret_token="ok-1")
    assert status == 200 and telegram.webhook_secret_token == "ok-1"
    status, body = await api("deleteWebhook")
    assert status == 200 and telegram.webhook_url == "" and telegram.webhook_secret_token is None
