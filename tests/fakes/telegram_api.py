"""A loopback stand-in for the Telegram Bot API that speaks its wire protocol over a real socket on 127.0.0.1.

Requests go to ``{api_base_url}/bot<token>/<method>`` (GET or POST; method names case-insensitive) with
parameters in the query string, a JSON body, a form-encoded body or ``multipart/form-data`` (python-telegram-bot
sends form fields whose non-string values are JSON-encoded). Every answer is a JSON object:
``{"ok": true, "result": ...}`` or ``{"ok": false, "error_code": N, "description": "...", "parameters": {...}}``
with the HTTP status equal to ``error_code``. An unknown token answers 401 ``Unauthorized``, an unknown method
404 ``Not Found``, as the real server does.

Methods: ``getMe``, ``sendMessage`` (returns a Message with ``message_id``, ``from``, ``chat``, ``date``,
``text`` and, for formatted text, ``entities``), ``editMessageText``, ``answerCallbackQuery``, ``getUpdates``
(``offset`` confirms earlier updates, ``limit``, ``timeout`` long polling, 409 while a webhook is set or when a
newer poll takes over), ``setWebhook`` (``url``, which must be https, ``secret_token``, ``allowed_updates``,
``drop_pending_updates``), ``deleteWebhook``, ``getWebhookInfo`` (``url``, ``pending_update_count``,
``allowed_updates``, ``last_error_date``/``last_error_message`` after a failed delivery).

Formatted text: with ``parse_mode=MarkdownV2`` the text is parsed as the real server parses it
(:func:`parse_markdown_v2`): the message keeps the plain text and its ``entities``; a reserved character left
unescaped or an entity left open answers 400 ``Bad Request: can't parse entities: ...`` in the real server's
words. The 4096-character limit (UTF-16 code units) applies to the parsed text, as the Bot API says ("1-4096
characters after entities parsing"). ``HTML``, ``Markdown`` and no ``parse_mode`` keep the text as sent.

Webhooks: the fake plays Telegram behind a TLS-terminating proxy. While a webhook is set and a test has set
:attr:`FakeTelegramServer.webhook_delivery_url` (the plain-HTTP address the https webhook URL stands for),
every pending update is POSTed there as JSON, one at a time in update order, with the header
``X-Telegram-Bot-Api-Secret-Token`` (only when ``setWebhook`` got a ``secret_token``). A non-2xx answer or a
connection error is retried after :data:`WEBHOOK_RETRY_DELAY_S` up to :data:`WEBHOOK_MAX_ATTEMPTS` times, then
the update is dropped, as Telegram gives up on an update after a while. A delivered update leaves the pending
list. Every attempt is recorded in :attr:`FakeTelegramServer.webhook_deliveries`.

Usage::

    async with FakeTelegramServer(token="123:abc") as server:
        server.api_base_url                  # http://127.0.0.1:<free port>; PTB base_url = api_base_url + "/bot"
        server.fail_next(1, status=429, retry_after=1)   # flood control on the next call
        server.fail_next(2, status=502, method="sendMessage")
        server.push_text(chat_id=42, text="hello bot")   # an Update for getUpdates (or the webhook)
        server.messages_to(42)               # [{"message_id": 1, "text": ..., ...}]
        server.calls_to("sendMessage")       # [ApiCall(method, params, status, ...)]
        server.webhook_delivery_url = "http://127.0.0.1:5000/api/telegram/webhook"
        server.webhook_deliveries            # [(update_id, HTTP status or None), ...]

Run one standalone (e.g. for a manual run of the notifier)::

    PYTHONPATH=tests python -m fakes.telegram_api --token 123:abc --port 8081
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import time
import zlib
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from fakes.loopback import LoopbackServer

TEXT_LIMIT = 4096  # Bot API sendMessage/editMessageText: "1-4096 characters after entities parsing"
MAX_POLL_TIMEOUT_S = 50  # long polls are capped server-side; keeps a forgotten client from hanging a test
WEBHOOK_RETRY_DELAY_S = 0.2  # far shorter than Telegram's own back-off, so tests see retries within seconds
WEBHOOK_MAX_ATTEMPTS = 50
WEBHOOK_TIMEOUT_S = 10.0  # one delivery POST, connect to last byte
SECRET_TOKEN_HEADER = "X-Telegram-Bot-Api-Secret-Token"
SECRET_TOKEN_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,256}")
"""setWebhook's ``secret_token``: "1-256 characters. Only characters A-Z, a-z, 0-9, _ and - are allowed"."""

# Descriptions the real Bot API gives for these statuses (used when a fault names no description).
DEFAULT_DESCRIPTIONS = {
    400: "Bad Request: chat not found",
    401: "Unauthorized",
    403: "Forbidden: bot was blocked by the user",
    404: "Not Found",
    409: "Conflict: terminated by other getUpdates request; make sure that only one bot instance is running",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


class ApiError(Exception):
    """An error answer of the Bot API: HTTP ``status`` = ``error_code``, ``description``, ``parameters``."""

    def __init__(self, status: int, description: str | None = None, parameters: dict[str, Any] | None = None):
        super().__init__(description)
        self.status = status
        self.description = description or DEFAULT_DESCRIPTIONS.get(status, "Error")
        self.parameters = parameters

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"ok": False, "error_code": self.status, "description": self.description}
        if self.parameters:
            body["parameters"] = self.parameters
        return body


def bad_request(detail: str) -> ApiError:
    return ApiError(400, f"Bad Request: {detail}")


@dataclass
class ApiCall:
    """One request as received: ``method`` is the canonical name (``sendMessage``) or the raw path segment
    when unknown; ``params`` merged from query and body (form values as sent, i.e. strings); ``status`` is the
    HTTP status answered; ``token_ok`` whether the token matched."""

    method: str
    params: dict[str, Any]
    http_method: str
    content_type: str
    token_ok: bool
    status: int = 200
    received_at: float = field(default_factory=time.monotonic)


@dataclass
class FaultPlan:
    """Answer the next ``remaining`` matching calls with ``status`` (429 carries ``retry_after`` seconds)."""

    status: int
    remaining: int
    retry_after: int | None = None
    description: str | None = None
    method: str | None = None  # canonical method name, or None for every method

    def error(self) -> ApiError:
        if self.status == 429:
            retry = self.retry_after if self.retry_after is not None else 1
            return ApiError(429, self.description or f"Too Many Requests: retry after {retry}", {"retry_after": retry})
        return ApiError(self.status, self.description)


def _int(params: dict[str, Any], name: str, default: int | None = None) -> int | None:
    value = params.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        raise bad_request(f"invalid {name} specified") from None


def _json_field(params: dict[str, Any], name: str) -> Any:
    """Object-valued parameters arrive JSON-encoded in form bodies and as objects in JSON bodies."""
    value = params.get(name)
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            raise bad_request(f"can't parse {name} JSON object") from None
    return value


def _utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


# MarkdownV2 (https://core.telegram.org/bots/api#markdownv2-style), parsed the way the real server does ------------

MDV2_RESERVED = "_*[]()~`>#+-=|{}.!"
"""Characters that must be escaped with a preceding backslash outside ``code``/``pre`` (inside: only ` and \\)."""

_MARKERS = (
    ("```", "pre"),
    ("__", "underline"),
    ("||", "spoiler"),
    ("_", "italic"),
    ("*", "bold"),
    ("~", "strikethrough"),
    ("`", "code"),
    ("[", "text_link"),
)
"""Opening markers, longest first where one is a prefix of another."""
_CLOSERS = {
    "pre": "```",
    "underline": "__",
    "spoiler": "||",
    "italic": "_",
    "bold": "*",
    "strikethrough": "~",
    "code": "`",
    "text_link": "]",
}
_ERROR_NAMES = {
    "pre": "Pre",
    "underline": "Underline",
    "spoiler": "Spoiler",
    "italic": "Italic",
    "bold": "Bold",
    "strikethrough": "Strikethrough",
    "code": "Code",
    "text_link": "TextUrl",
}
"""The server's own (TDLib's) entity names, as its error messages spell them."""


@dataclass
class _OpenEntity:
    type: str
    offset: int  # UTF-16 offset of the content in the parsed text
    marker_at: int  # index of the opening marker in the input (for error messages)
    content_at: int  # index of the content in the parsed text (a link without (url) links to its own text)
    language: str = ""

    def error_name(self) -> str:
        return "PreCode" if self.language else _ERROR_NAMES[self.type]


def _parse_error(detail: str) -> ApiError:
    return bad_request(f"can't parse entities: {detail}")


def _byte_offset(text: str, index: int) -> int:
    return len(text[:index].encode("utf-8", "surrogatepass"))


def _escapable(text: str, index: int) -> bool:
    """A backslash escapes the next character when its code is 1..126."""
    return index < len(text) and 0 < ord(text[index]) <= 126


def _closes(entity: _OpenEntity, text: str, i: int) -> bool:
    if entity.type == "italic":  # "__" inside italic opens underline instead
        return text[i] == "_" and not text.startswith("__", i)
    return text.startswith(_CLOSERS[entity.type], i)


def _open(text: str, i: int, utf16: int, parsed_len: int) -> tuple[_OpenEntity, int]:
    """The entity whose marker starts at ``i`` and the index after the marker; raises ApiError on a reserved
    character that opens nothing."""
    marker, kind = next(((m, k) for m, k in _MARKERS if text.startswith(m, i)), ("", ""))
    if not marker:
        raise _parse_error(f"Character '{text[i]}' is reserved and must be escaped with the preceding '\\'")
    entity, j = _OpenEntity(kind, utf16, i, parsed_len), i + len(marker)
    if kind == "pre":  # ```language\n...```: a word right after the marker, followed by whitespace, names it
        end = j
        while end < len(text) and not text[end].isspace() and text[end] != "`":
            end += 1
        if end > j and end < len(text) and text[end] != "`":
            entity.language, j = text[j:end], end
        if text[j : j + 1] in ("\n", "\r"):  # one line break after the marker is not content
            j += 2 if text[j + 1 : j + 2] in ("\n", "\r") and text[j + 1] != text[j] else 1
    return entity, j


def _link_target(text: str, i: int, link_text: str) -> tuple[str, int]:
    """After the ``]`` at ``i``: the URL of ``(url)`` (backslash escapes honoured) or, without one, the link's
    own text; and the index after it."""
    if not text.startswith("(", i + 1):
        return link_text, i + 1
    j, url = i + 2, []
    while j < len(text) and text[j] != ")":
        if text[j] == "\\" and _escapable(text, j + 1):
            j += 1
        url.append(text[j])
        j += 1
    if j >= len(text):
        raise _parse_error(f"Can't find end of a URL at byte offset {_byte_offset(text, i + 2)}")
    return "".join(url), j + 1


def _link_url(url: str) -> str | None:
    """The URL a text link keeps, or None when it is not one (the server then drops the entity, keeping the
    text). The real server also normalizes URLs; this keeps them as given, adding ``http://`` to a bare host."""
    url = url.strip()
    if re.match(r"^(https?|tg|ton)://\S+$", url, re.IGNORECASE):
        return url
    if re.match(r"^[\w-]+(\.[\w-]+)+(/\S*)?$", url):
        return f"http://{url}"
    return None


def parse_markdown_v2(text: str) -> tuple[str, list[dict[str, Any]]]:
    """Parse MarkdownV2 ``text`` into ``(plain text, entities)``: entities are Bot API MessageEntity objects
    ``{"type", "offset", "length"}`` (plus ``url`` for ``text_link``, ``language`` for ``pre`` that names one),
    offsets and lengths in UTF-16 code units, sorted by offset then longest first; empty entities are dropped.
    Supports *bold*, _italic_, __underline__, ~strikethrough~, ||spoiler||, `code`, ```pre```, [text](url).
    Block quotes (``>``) and custom emoji (``![..](tg://emoji?id=..)``) are not supported: their markers are
    reported as unescaped reserved characters. Raises :class:`ApiError` 400 with the real server's description
    (``Bad Request: can't parse entities: Character '.' is reserved and must be escaped with the preceding '\\'``,
    ``... Can't find end of Bold entity at byte offset 12``; byte offsets count UTF-8 bytes of ``text``)."""
    parsed: list[str] = []
    utf16 = 0
    entities: list[dict[str, Any]] = []
    open_entities: list[_OpenEntity] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char == "\\" and _escapable(text, i + 1):
            parsed.append(text[i + 1])
            utf16, i = utf16 + 1, i + 2
            continue
        top = open_entities[-1] if open_entities else None
        reserved = "`" if top is not None and top.type in ("code", "pre") else MDV2_RESERVED
        if char not in reserved:
            parsed.append(char)
            utf16, i = utf16 + _utf16_len(char), i + 1
            continue
        if top is None or not _closes(top, text, i):
            entity, i = _open(text, i, utf16, len(parsed))
            open_entities.append(entity)
            continue
        open_entities.pop()
        found: dict[str, Any] = {"type": top.type, "offset": top.offset, "length": utf16 - top.offset}
        if top.type == "text_link":
            url, i = _link_target(text, i, "".join(parsed[top.content_at :]))
            found["url"] = _link_url(url)
        else:
            i += len(_CLOSERS[top.type])
        if top.language:
            found["language"] = top.language
        if found["length"] > 0 and found.get("url", "") is not None:
            entities.append(found)
    if open_entities:
        top = open_entities[-1]
        raise _parse_error(
            f"Can't find end of {top.error_name()} entity at byte offset {_byte_offset(text, top.marker_at)}"
        )
    entities.sort(key=lambda e: (e["offset"], -e["length"]))
    return "".join(parsed), entities


class FakeTelegramServer(LoopbackServer):
    """The fake Bot API on ``host``:``port`` (0 = a free port) for the bot with ``token`` (``<bot id>:<secret>``).

    State that tests read: :attr:`calls` (every request), :meth:`messages_to` (messages the bot sent to a chat,
    as edited since), :attr:`callback_answers`, :attr:`webhook_url`, :attr:`webhook_secret_token`,
    :attr:`webhook_allowed_updates`, :attr:`webhook_deliveries`. Control: :meth:`fail_next`,
    :meth:`clear_faults`, :meth:`push_update` / :meth:`push_text` / :meth:`push_callback`,
    :attr:`webhook_delivery_url`."""

    def __init__(
        self,
        token: str = "123456:TEST-token",
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        username: str = "hermes_test_bot",
    ) -> None:
        super().__init__(host, port)
        self.token = token
        bot_id = token.split(":", 1)[0]
        self.bot_user = {
            "id": int(bot_id) if bot_id.isdigit() else 1,
            "is_bot": True,
            "first_name": "Hermes",
            "username": username,
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
        }
        self.calls: list[ApiCall] = []
        self.callback_answers: list[dict[str, Any]] = []
        self.webhook_url = ""
        self.webhook_secret_token: str | None = None
        self.webhook_allowed_updates: list[str] | None = None
        self.webhook_deliveries: list[tuple[int, int | None]] = []
        """Every webhook delivery attempt: ``(update_id, HTTP status answered)``, status None on a connection
        error or timeout."""
        self._webhook_delivery_url: str | None = None
        self._webhook_last_error: tuple[int, str] | None = None  # (Unix time, message), as getWebhookInfo says
        self._delivery_task: asyncio.Task[None] | None = None
        self._faults: deque[FaultPlan] = deque()
        self._chats: dict[str, list[dict[str, Any]]] = {}
        self._next_message_id: dict[str, int] = {}
        self._updates: list[dict[str, Any]] = []
        self._next_update_id = 1
        self._open_callbacks: set[str] = set()
        self._changed = asyncio.Event()  # set (and replaced) whenever a poller should look again
        self._poll_generation = 0
        self._methods: dict[str, tuple[str, Callable[[dict[str, Any]], dict[str, Any] | Awaitable[dict[str, Any]]]]] = {
            name.lower(): (name, handler)
            for name, handler in (
                ("getMe", self._get_me),
                ("sendMessage", self._send_message),
                ("editMessageText", self._edit_message_text),
                ("answerCallbackQuery", self._answer_callback),
                ("getUpdates", self._get_updates),
                ("setWebhook", self._set_webhook),
                ("deleteWebhook", self._delete_webhook),
                ("getWebhookInfo", self._webhook_info),
            )
        }

    # lifecycle ---------------------------------------------------------------------------------------

    def routes(self, app: web.Application) -> None:
        app.router.add_route("*", "/bot{token}/{method}", self._dispatch)

    @property
    def api_base_url(self) -> str:
        """The server root: methods live at ``{api_base_url}/bot{token}/{method}``."""
        return self.url

    async def stop(self) -> None:
        """Stop webhook delivery, then the HTTP server."""
        task, self._delivery_task = self._delivery_task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await super().stop()

    @property
    def webhook_delivery_url(self) -> str | None:
        """Where webhook updates really go (plain HTTP; the https webhook URL is what the bot registered, as if
        a TLS-terminating proxy stood in front of this address). None (default): updates stay pending."""
        return self._webhook_delivery_url

    @webhook_delivery_url.setter
    def webhook_delivery_url(self, url: str | None) -> None:
        self._webhook_delivery_url = url
        self._kick_delivery()

    # control and inspection --------------------------------------------------------------------------

    def fail_next(
        self,
        n: int,
        status: int = 429,
        retry_after: int | None = 1,
        *,
        description: str | None = None,
        method: str | None = None,
    ) -> FaultPlan:
        """Answer the next ``n`` calls (of ``method`` only, when given) with ``status``; queued after earlier
        plans. 429 answers ``"Too Many Requests: retry after <retry_after>"`` with ``parameters.retry_after``."""
        plan = FaultPlan(status, n, retry_after if status == 429 else None, description, method)
        self._faults.append(plan)
        return plan

    def clear_faults(self) -> None:
        self._faults.clear()

    def calls_to(self, method: str) -> list[ApiCall]:
        """Recorded calls of one method (canonical name, e.g. ``sendMessage``), oldest first."""
        return [c for c in self.calls if c.method == method]

    def messages_to(self, chat_id: int | str) -> list[dict[str, Any]]:
        """Messages the bot sent to ``chat_id`` (as edited since), oldest first."""
        return [dict(m) for m in self._chats.get(str(chat_id), [])]

    def push_update(self, **fields: Any) -> dict[str, Any]:
        """Queue an Update (e.g. ``message={...}`` or ``callback_query={...}``) for getUpdates; assigns
        ``update_id`` and returns the update."""
        update = {"update_id": self._next_update_id, **fields}
        self._next_update_id += 1
        if "callback_query" in update:
            self._open_callbacks.add(str(update["callback_query"]["id"]))
        self._updates.append(update)
        self._wake_pollers()
        self._kick_delivery()
        return update

    def push_text(
        self, chat_id: int, text: str, *, user_id: int | None = None, first_name: str = "Tester"
    ) -> dict[str, Any]:
        """An incoming private-chat text message from user ``user_id`` (default: the chat id)."""
        user = {"id": user_id or chat_id, "is_bot": False, "first_name": first_name}
        message = {
            "message_id": self._take_message_id(str(chat_id)),
            "from": user,
            "date": int(time.time()),
            "chat": self._chat(str(chat_id)),
            "text": text,
        }
        if text.startswith("/"):
            message["entities"] = [{"type": "bot_command", "offset": 0, "length": len(text.split()[0])}]
        return self.push_update(message=message)

    def push_callback(self, chat_id: int, data: str, *, message_id: int | None = None) -> dict[str, Any]:
        """A press on an inline keyboard button of a message the bot sent to ``chat_id`` (default: its last)."""
        sent = self._chats.get(str(chat_id), [])
        message = next((m for m in sent if m["message_id"] == message_id), sent[-1] if sent else None)
        query = {
            "id": str(self._next_update_id * 7919),
            "chat_instance": str(chat_id),
            "data": data,
            "from": {"id": int(chat_id), "is_bot": False, "first_name": "Tester"},
        }
        if message is not None:
            query["message"] = message
        return self.push_update(callback_query=query)

    # dispatch ----------------------------------------------------------------------------------------

    async def _dispatch(self, request: web.Request) -> web.Response:
        params = await self._params(request)
        token_ok = request.match_info["token"] == self.token
        name, handler = self._methods.get(request.match_info["method"].lower(), (request.match_info["method"], None))
        call = ApiCall(name, params, request.method, request.content_type, token_ok)
        self.calls.append(call)
        try:
            if not token_ok:
                raise ApiError(401)
            if handler is None:
                raise ApiError(404)
            self._raise_fault(name)
            answer = handler(params)
            if asyncio.iscoroutine(answer):
                answer = await answer
        except ApiError as exc:
            call.status = exc.status
            return web.json_response(exc.body(), status=exc.status)
        return web.json_response({"ok": True, **answer})

    async def _params(self, request: web.Request) -> dict[str, Any]:
        params: dict[str, Any] = dict(request.query)
        if request.method != "POST" or not request.can_read_body:
            return params
        if request.content_type == "application/json":
            try:
                body = await request.json()
            except ValueError:
                body = None
            if isinstance(body, dict):
                params.update(body)
            return params
        form = await request.post()  # application/x-www-form-urlencoded or multipart/form-data
        for key, value in form.items():
            params[key] = value if isinstance(value, str) else getattr(value, "filename", "file")
        return params

    def _raise_fault(self, method: str) -> None:
        plan = next((p for p in self._faults if p.method in (None, method)), None)
        if plan is None:
            return
        plan.remaining -= 1
        if plan.remaining <= 0:
            self._faults.remove(plan)
        raise plan.error()

    # chats and messages ------------------------------------------------------------------------------

    def _chat(self, chat_id: str) -> dict[str, Any]:
        if chat_id.startswith("@"):  # a public channel addressed by username
            return {
                "id": -1000000000000 - zlib.crc32(chat_id.encode()),
                "type": "channel",
                "title": chat_id[1:],
                "username": chat_id[1:],
            }
        numeric = int(chat_id)
        if numeric > 0:
            return {"id": numeric, "type": "private", "first_name": "Tester"}
        if chat_id.startswith("-100"):
            return {"id": numeric, "type": "supergroup", "title": "Test group"}
        return {"id": numeric, "type": "group", "title": "Test group"}

    def _chat_id(self, params: dict[str, Any]) -> str:
        value = params.get("chat_id")
        if value is None or str(value).strip() == "":
            raise bad_request("chat_id is empty")
        chat_id = str(value).strip()
        if not chat_id.startswith("@") and not chat_id.lstrip("-").isdigit():
            raise bad_request("chat not found")
        return chat_id

    def _take_message_id(self, chat_id: str) -> int:
        self._next_message_id[chat_id] = self._next_message_id.get(chat_id, 0) + 1
        return self._next_message_id[chat_id]

    @staticmethod
    def _text(params: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
        """The message text and its entities. ``parse_mode`` is case-insensitive as on the real server;
        MarkdownV2 is parsed, other modes keep the text as sent. The length limit counts the parsed text."""
        text = params.get("text")
        if not isinstance(text, str) or not text.strip():
            raise bad_request("message text is empty")
        parse_mode = str(params.get("parse_mode") or "none").lower()
        if parse_mode not in ("none", "html", "markdown", "markdownv2"):
            raise bad_request("unsupported parse_mode")
        entities: list[dict[str, Any]] = []
        if parse_mode == "markdownv2":
            text, entities = parse_markdown_v2(text)
            if not text.strip():
                raise bad_request("message text is empty")
        if _utf16_len(text) > TEXT_LIMIT:
            raise bad_request("message is too long")
        return text, entities

    # methods -----------------------------------------------------------------------------------------

    def _get_me(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"result": self.bot_user}

    def _send_message(self, params: dict[str, Any]) -> dict[str, Any]:
        chat_id = self._chat_id(params)
        text, entities = self._text(params)
        message: dict[str, Any] = {
            "message_id": self._take_message_id(chat_id),
            "from": self.bot_user,
            "chat": self._chat(chat_id),
            "date": int(time.time()),
            "text": text,
        }
        if entities:
            message["entities"] = entities
        markup = _json_field(params, "reply_markup")
        if markup:
            message["reply_markup"] = markup
        self._chats.setdefault(chat_id, []).append(message)
        return {"result": message}

    def _edit_message_text(self, params: dict[str, Any]) -> dict[str, Any]:
        text, entities = self._text(params)
        if params.get("inline_message_id"):
            return {"result": True}
        chat_id = self._chat_id(params)
        message_id = _int(params, "message_id")
        if message_id is None:
            raise bad_request("message identifier is not specified")
        message = next((m for m in self._chats.get(chat_id, []) if m["message_id"] == message_id), None)
        if message is None:
            raise bad_request("message to edit not found")
        markup = _json_field(params, "reply_markup")
        same_markup = markup is None or markup == message.get("reply_markup")
        if message["text"] == text and message.get("entities", []) == entities and same_markup:
            raise bad_request(
                "message is not modified: specified new message content and reply markup are "
                "exactly the same as a current content and reply markup of the message"
            )
        message.update(text=text, edit_date=int(time.time()))
        message.pop("entities", None)
        if entities:
            message["entities"] = entities
        if markup:
            message["reply_markup"] = markup
        return {"result": message}

    def _answer_callback(self, params: dict[str, Any]) -> dict[str, Any]:
        query_id = str(params.get("callback_query_id") or "")
        if query_id not in self._open_callbacks:
            raise bad_request("query is too old and response timeout expired or query ID is invalid")
        self._open_callbacks.discard(query_id)
        self.callback_answers.append(dict(params))
        return {"result": True}

    async def _get_updates(self, params: dict[str, Any]) -> dict[str, Any]:
        if self.webhook_url:
            raise ApiError(
                409,
                "Conflict: can't use getUpdates method while webhook is active; "
                "use deleteWebhook to delete the webhook first",
            )
        offset = _int(params, "offset", 0) or 0
        limit = min(max(_int(params, "limit", 100) or 100, 1), 100)
        timeout = min(max(_int(params, "timeout", 0) or 0, 0), MAX_POLL_TIMEOUT_S)
        allowed = _json_field(params, "allowed_updates") or None
        if offset > 0:  # confirms (forgets) every update before it
            self._updates = [u for u in self._updates if u["update_id"] >= offset]
        self._poll_generation += 1
        generation = self._poll_generation
        self._wake_pollers()  # a newer poll ends the older one with 409, as the real server does
        deadline = time.monotonic() + timeout
        while True:
            if generation != self._poll_generation:
                raise ApiError(409)
            found = self._pending(offset, limit, allowed)
            remaining = deadline - time.monotonic()
            if found or remaining <= 0:
                return {"result": found}
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                pass

    def _pending(self, offset: int, limit: int, allowed: list[str] | None) -> list[dict[str, Any]]:
        updates = self._updates[offset:] if offset < 0 else [u for u in self._updates if u["update_id"] >= offset]
        if allowed:
            updates = [u for u in updates if any(k in u for k in allowed)]
        return updates[:limit]

    def _wake_pollers(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _set_webhook(self, params: dict[str, Any]) -> dict[str, Any]:
        url = str(params.get("url") or "")
        if url and not url.startswith("https://"):
            raise bad_request("bad webhook: An HTTPS URL must be provided for webhook")
        secret = params.get("secret_token")
        secret = str(secret) if secret not in (None, "") else None
        if secret is not None and not SECRET_TOKEN_PATTERN.fullmatch(secret):
            raise bad_request("secret token contains unallowed characters")
        allowed = _json_field(params, "allowed_updates")
        if allowed is not None and not (isinstance(allowed, list) and all(isinstance(a, str) for a in allowed)):
            raise bad_request("can't parse allowed_updates JSON object")
        self.webhook_url = url
        self.webhook_secret_token = secret if url else None
        if allowed is not None or not url:
            self.webhook_allowed_updates = allowed or None
        self._webhook_last_error = None
        if str(params.get("drop_pending_updates", "")).lower() == "true":
            self._updates.clear()
        self._kick_delivery()
        return {"ok": True, "result": True, "description": "Webhook was set" if url else "Webhook was deleted"}

    def _delete_webhook(self, params: dict[str, Any]) -> dict[str, Any]:
        description = "Webhook was deleted" if self.webhook_url else "Webhook is already deleted"
        self.webhook_url = ""
        self.webhook_secret_token = None
        if str(params.get("drop_pending_updates", "")).lower() == "true":
            self._updates.clear()
        return {"ok": True, "result": True, "description": description}

    def _webhook_info(self, params: dict[str, Any]) -> dict[str, Any]:
        info: dict[str, Any] = {
            "url": self.webhook_url,
            "has_custom_certificate": False,
            "pending_update_count": len(self._updates),
        }
        if self.webhook_allowed_updates:
            info["allowed_updates"] = list(self.webhook_allowed_updates)
        if self._webhook_last_error is not None:
            info["last_error_date"], info["last_error_message"] = self._webhook_last_error
        return {"result": info}

    # webhook delivery --------------------------------------------------------------------------------

    def _kick_delivery(self) -> None:
        """Start the delivery task when there is somewhere to deliver to and none is running. It ends by
        itself once nothing is pending (or the webhook or delivery URL is gone)."""
        if not (self.webhook_url and self._webhook_delivery_url):
            return
        if self._delivery_task is not None and not self._delivery_task.done():
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # pushed before any loop runs: the next push or setWebhook starts delivery
            return
        self._delivery_task = loop.create_task(self._deliver_pending())

    def _next_for_webhook(self) -> dict[str, Any] | None:
        """The oldest pending update the webhook wants; updates of kinds not in ``allowed_updates`` are
        dropped, as Telegram does not send them."""
        while self.webhook_url and self._webhook_delivery_url and self._updates:
            update = self._updates[0]
            allowed = self.webhook_allowed_updates
            if not allowed or any(kind in update for kind in allowed):
                return update
            self._updates.pop(0)
        return None

    async def _deliver_pending(self) -> None:
        timeout = aiohttp.ClientTimeout(total=WEBHOOK_TIMEOUT_S)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while (update := self._next_for_webhook()) is not None:
                await self._deliver(session, update)

    async def _deliver(self, session: aiohttp.ClientSession, update: dict[str, Any]) -> None:
        """POST one update until it is answered 2xx (then it leaves the pending list) or
        :data:`WEBHOOK_MAX_ATTEMPTS` tries failed (then it is dropped). Stops early, leaving it pending, when
        the webhook or the delivery URL is removed or the update was dropped meanwhile."""
        for _ in range(WEBHOOK_MAX_ATTEMPTS):
            url = self._webhook_delivery_url
            if not (self.webhook_url and url) or not any(u is update for u in self._updates):
                return
            status = await self._post_update(session, url, update)
            self.webhook_deliveries.append((update["update_id"], status))
            if status is not None and 200 <= status < 300:
                break
            await asyncio.sleep(WEBHOOK_RETRY_DELAY_S)
        self._updates = [u for u in self._updates if u is not update]

    async def _post_update(self, session: aiohttp.ClientSession, url: str, update: dict[str, Any]) -> int | None:
        headers = {SECRET_TOKEN_HEADER: self.webhook_secret_token} if self.webhook_secret_token else {}
        try:
            async with session.post(url, json=update, headers=headers) as response:
                await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            self._webhook_last_error = (int(time.time()), f"Connection failed: {exc!r}")
            return None
        if not 200 <= status < 300:
            self._webhook_last_error = (
                int(time.time()),
                f"Wrong response from the webhook: {status} {response.reason}",
            )
        return status


async def _serve_forever(args: argparse.Namespace) -> None:
    server = FakeTelegramServer(token=args.token, port=args.port)
    await server.start()
    print(f"fake Telegram Bot API on {server.api_base_url} (token {args.token})", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--token", default="123456:TEST-token")
    parser.add_argument("--port", type=int, default=0)
    asyncio.run(_serve_forever(parser.parse_args()))


if __name__ == "__main__":
    main()
