"""A loopback stand-in for the Telegram Bot API that speaks its wire protocol over a real socket on 127.0.0.1.

Requests go to ``{api_base_url}/bot<token>/<method>`` (GET or POST; method names case-insensitive) with
parameters in the query string, a JSON body, a form-encoded body or ``multipart/form-data`` (python-telegram-bot
sends form fields whose non-string values are JSON-encoded). Every answer is a JSON object:
``{"ok": true, "result": ...}`` or ``{"ok": false, "error_code": N, "description": "...", "parameters": {...}}``
with the HTTP status equal to ``error_code``. An unknown token answers 401 ``Unauthorized``, an unknown method
404 ``Not Found``, as the real server does.

Methods: ``getMe``, ``sendMessage`` (returns a Message with ``message_id``, ``from``, ``chat``, ``date``,
``text``; text limited to 4096 UTF-16 code units like the real API), ``editMessageText``,
``answerCallbackQuery``, ``getUpdates`` (``offset`` confirms earlier updates, ``limit``, ``timeout`` long
polling, 409 while a webhook is set or when a newer poll takes over), ``setWebhook``, ``deleteWebhook``,
``getWebhookInfo``.

Usage::

    async with FakeTelegramServer(token="123:abc") as server:
        server.api_base_url                  # http://127.0.0.1:<free port>; PTB base_url = api_base_url + "/bot"
        server.fail_next(1, status=429, retry_after=1)   # flood control on the next call
        server.fail_next(2, status=502, method="sendMessage")
        server.push_text(chat_id=42, text="hello bot")   # an Update for getUpdates
        server.messages_to(42)               # [{"message_id": 1, "text": ..., ...}]
        server.calls_to("sendMessage")       # [ApiCall(method, params, status, ...)]

Run one standalone (e.g. for a manual run of the notifier)::

    PYTHONPATH=tests python -m fakes.telegram_api --token 123:abc --port 8081
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import zlib
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from fakes.loopback import LoopbackServer

TEXT_LIMIT = 4096  # Bot API sendMessage/editMessageText: "1-4096 characters after entities parsing"
MAX_POLL_TIMEOUT_S = 50  # long polls are capped server-side; keeps a forgotten client from hanging a test

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
            return ApiError(429, self.description or f"Too Many Requests: retry after {retry}",
                            {"retry_after": retry})
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
    return len(text.encode("utf-16-le")) // 2


class FakeTelegramServer(LoopbackServer):
    """The fake Bot API on ``host``:``port`` (0 = a free port) for the bot with ``token`` (``<bot id>:<secret>``).

    State that tests read: :attr:`calls` (every request), :meth:`messages_to` (messages the bot sent to a chat,
    as edited since), :attr:`callback_answers`, :attr:`webhook_url`. Control: :meth:`fail_next`,
    :meth:`clear_faults`, :meth:`push_update` / :meth:`push_text` / :meth:`push_callback`."""

    def __init__(self, token: str = "123456:TEST-token", *, host: str = "127.0.0.1", port: int = 0,
                 username: str = "hermes_test_bot") -> None:
        super().__init__(host, port)
        self.token = token
        bot_id = token.split(":", 1)[0]
        self.bot_user = {"id": int(bot_id) if bot_id.isdigit() else 1, "is_bot": True, "first_name": "Hermes",
                         "username": username, "can_join_groups": True, "can_read_all_group_messages": False,
                         "supports_inline_queries": False}
        self.calls: list[ApiCall] = []
        self.callback_answers: list[dict[str, Any]] = []
        self.webhook_url = ""
        self._faults: deque[FaultPlan] = deque()
        self._chats: dict[str, list[dict[str, Any]]] = {}
        self._next_message_id: dict[str, int] = {}
        self._updates: list[dict[str, Any]] = []
        self._next_update_id = 1
        self._open_callbacks: set[str] = set()
        self._changed = asyncio.Event()  # set (and replaced) whenever a poller should look again
        self._poll_generation = 0
        self._methods: dict[str, tuple[str, Callable[[dict[str, Any]], dict[str, Any] | Awaitable[dict[str, Any]]]]] = {
            name.lower(): (name, handler) for name, handler in (
                ("getMe", self._get_me), ("sendMessage", self._send_message),
                ("editMessageText", self._edit_message_text), ("answerCallbackQuery", self._answer_callback),
                ("getUpdates", self._get_updates), ("setWebhook", self._set_webhook),
                ("deleteWebhook", self._delete_webhook), ("getWebhookInfo", self._webhook_info))}

    # lifecycle ---------------------------------------------------------------------------------------

    def routes(self, app: web.Application) -> None:
        app.router.add_route("*", "/bot{token}/{method}", self._dispatch)

    @property
    def api_base_url(self) -> str:
        """The server root: methods live at ``{api_base_url}/bot{token}/{method}``."""
        return self.url

    # control and inspection --------------------------------------------------------------------------

    def fail_next(self, n: int, status: int = 429, retry_after: int | None = 1, *, description: str | None = None,
                  method: str | None = None) -> FaultPlan:
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
        return update

    def push_text(self, chat_id: int, text: str, *, user_id: int | None = None,
                  first_name: str = "Tester") -> dict[str, Any]:
        """An incoming private-chat text message from user ``user_id`` (default: the chat id)."""
        user = {"id": user_id or chat_id, "is_bot": False, "first_name": first_name}
        message = {"message_id": self._take_message_id(str(chat_id)), "from": user, "date": int(time.time()),
                   "chat": self._chat(str(chat_id)), "text": text}
        if text.startswith("/"):
            message["entities"] = [{"type": "bot_command", "offset": 0, "length": len(text.split()[0])}]
        return self.push_update(message=message)

    def push_callback(self, chat_id: int, data: str, *, message_id: int | None = None) -> dict[str, Any]:
        """A press on an inline keyboard button of a message the bot sent to ``chat_id`` (default: its last)."""
        sent = self._chats.get(str(chat_id), [])
        message = next((m for m in sent if m["message_id"] == message_id), sent[-1] if sent else None)
        query = {"id": str(self._next_update_id * 7919), "chat_instance": str(chat_id), "data": data,
                 "from": {"id": int(chat_id), "is_bot": False, "first_name": "Tester"}}
        if message is not None:
            query["message"] = message
        return self.push_update(callback_query=query)

    # dispatch ----------------------------------------------------------------------------------------

    async def _dispatch(self, request: web.Request) -> web.Response:
        params = await self._params(request)
        token_ok = request.match_info["token"] == self.token
        name, handler = self._methods.get(request.match_info["method"].lower(),
                                          (request.match_info["method"], None))
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
            return {"id": -1000000000000 - zlib.crc32(chat_id.encode()), "type": "channel",
                    "title": chat_id[1:], "username": chat_id[1:]}
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
    def _text(params: dict[str, Any]) -> str:
        text = params.get("text")
        if not isinstance(text, str) or not text.strip():
            raise bad_request("message text is empty")
        if _utf16_len(text) > TEXT_LIMIT:
            raise bad_request("message is too long")
        parse_mode = params.get("parse_mode")
        if parse_mode not in (None, "", "HTML", "Markdown", "MarkdownV2"):
            raise bad_request("unsupported parse_mode")
        return text

    # methods -----------------------------------------------------------------------------------------

    def _get_me(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"result": self.bot_user}

    def _send_message(self, params: dict[str, Any]) -> dict[str, Any]:
        chat_id = self._chat_id(params)
        text = self._text(params)
        message: dict[str, Any] = {"message_id": self._take_message_id(chat_id), "from": self.bot_user,
                                   "chat": self._chat(chat_id), "date": int(time.time()), "text": text}
        markup = _json_field(params, "reply_markup")
        if markup:
            message["reply_markup"] = markup
        self._chats.setdefault(chat_id, []).append(message)
        return {"result": message}

    def _edit_message_text(self, params: dict[str, Any]) -> dict[str, Any]:
        text = self._text(params)
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
        if message["text"] == text and same_markup:
            raise bad_request("message is not modified: specified new message content and reply markup are "
                              "exactly the same as a current content and reply markup of the message")
        message.update(text=text, edit_date=int(time.time()))
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
            raise ApiError(409, "Conflict: can't use getUpdates method while webhook is active; "
                                "use deleteWebhook to delete the webhook first")
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
        self.webhook_url = url
        if str(params.get("drop_pending_updates", "")).lower() == "true":
            self._updates.clear()
        return {"ok": True, "result": True, "description": "Webhook was set" if url else "Webhook was deleted"}

    def _delete_webhook(self, params: dict[str, Any]) -> dict[str, Any]:
        description = "Webhook was deleted" if self.webhook_url else "Webhook is already deleted"
        self.webhook_url = ""
        if str(params.get("drop_pending_updates", "")).lower() == "true":
            self._updates.clear()
        return {"ok": True, "result": True, "description": description}

    def _webhook_info(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"result": {"url": self.webhook_url, "has_custom_certificate": False,
                           "pending_update_count": len(self._updates)}}


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
