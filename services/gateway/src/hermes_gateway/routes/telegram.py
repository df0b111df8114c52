"""``POST /api/telegram/webhook``: where Telegram pushes the bot's updates in webhook mode; each one is stored on
``HERMES_INBOX`` for the notifier (:mod:`hermes_proto.inbox`).

Register it with the Bot API's ``setWebhook``: ``url`` = this route's public https address (TLS ends at the
proxy in front of the gateway), ``secret_token`` = ``TELEGRAM_WEBHOOK_SECRET``. Telegram sends that secret
back in the ``X-Telegram-Bot-Api-Secret-Token`` header of every request, which is how the route knows the
request comes from Telegram. The body, one Update object (https://core.telegram.org/bots/api#update), is
stored unchanged on ``hermes.inbox.telegram.<chat_id>`` with ``Nats-Msg-Id`` ``telegram-update-<update_id>``,
so JetStream drops a repeat within its dedup window. The answer is 200 only after JetStream acknowledged the
update: Telegram re-sends an update on any other answer, so none is lost while NATS is away. (A 503 does not
prove the update was not stored: the NATS client may still flush a publish it buffered while disconnected; the
repeat Telegram then sends is dropped as a duplicate.)
"""

from __future__ import annotations

import hmac
from typing import Any

import structlog
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from hermes_proto import subjects as subj
from hermes_proto.bus import MSG_ID
from hermes_proto.codec import DecodeError, decode_telegram_update
from hermes_proto.inbox import telegram_msg_id
from hermes_proto.telemetry import inject_headers

from hermes_gateway.adapters import BUS_ERRORS, Bus, BusUnavailable
from hermes_gateway.deps import BusDep, SettingsDep
from hermes_gateway.envelope import ERROR_ENVELOPE_SCHEMA, ApiError
from hermes_gateway.observability import TELEGRAM_WEBHOOK_UPDATES

log = structlog.get_logger("hermes.gateway")

router = APIRouter(prefix="/api/telegram", tags=["telegram"])

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
MAX_BODY_BYTES = 1 << 20
"""1 MiB. An Update Hermes reads is a few KiB at most (message text is capped at 4096 UTF-16 units), so a
larger body is refused before it is read whole."""


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": ERROR_ENVELOPE_SCHEMA}}}


RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": 'Stored on HERMES_INBOX (``{"ok": true}``), or acknowledged without storing because '
        'the update has no chat Hermes reads (``{"ok": true, "ignored": true}``).',
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["ok"],
                    "properties": {"ok": {"const": True}, "ignored": {"type": "boolean"}},
                }
            }
        },
    },
    400: _error(
        "``bad_update``: the body is not a Telegram Update; ``details.reason`` is ``invalid_json`` or "
        "``validation_failed``."
    ),
    401: _error("``unauthorized``: the ``X-Telegram-Bot-Api-Secret-Token`` header is missing or wrong."),
    404: _error("``webhook_off``: ``TELEGRAM_WEBHOOK_SECRET`` is not set on this gateway."),
    413: _error("``update_too_large``: the body is over 1 MiB."),
    503: _error("``bus_unavailable``: JetStream did not store the update; Telegram will send it again."),
}
REQUEST_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["update_id"],
                    "additionalProperties": True,
                    "description": "A Telegram Update; Hermes reads update_id, message and callback_query.",
                    "properties": {
                        "update_id": {"type": "integer"},
                        "message": {"type": "object"},
                        "callback_query": {"type": "object"},
                    },
                }
            }
        },
    }
}


@router.post("/webhook", responses=RESPONSES, openapi_extra=REQUEST_BODY)
async def telegram_webhook(request: Request, settings: SettingsDep, bus: BusDep) -> JSONResponse:
    """Store one Telegram Update on ``hermes.inbox.telegram.<chat_id>``.

    200 ``{"ok": true}`` once JetStream has it (a repeat of an update already stored is acknowledged the same
    way, not stored twice); 200 ``{"ok": true, "ignored": true}`` for an update without a chat (nothing stored).
    Errors, nothing stored: 404 ``webhook_off``, 401 ``unauthorized``, 413 ``update_too_large``, 400
    ``bad_update``, 503 ``bus_unavailable``. Counted in ``hermes_telegram_webhook_updates_total{outcome}``."""
    secret = settings.webhook_secret()
    if secret is None:
        raise ApiError(
            404,
            "webhook_off",
            "The Telegram webhook is off on this gateway.",
            user_action="Set TELEGRAM_WEBHOOK_SECRET on the gateway and give the same value to "
            "setWebhook as secret_token.",
        )
    if not _secret_matches(request.headers.get(SECRET_HEADER), secret):
        TELEGRAM_WEBHOOK_UPDATES.labels("unauthorized").inc()
        raise ApiError(401, "unauthorized", "Missing or wrong secret token.")
    body = await _read_body(request)
    try:
        update = decode_telegram_update(body)
    except DecodeError as exc:
        TELEGRAM_WEBHOOK_UPDATES.labels("bad_update").inc()
        raise ApiError(
            400, "bad_update", "The body is not a Telegram Update.", details={"reason": exc.reason, "error": exc.detail}
        ) from None
    chat_id = update.chat_id()
    if chat_id is None:
        TELEGRAM_WEBHOOK_UPDATES.labels("ignored").inc()
        log.info("telegram_update_ignored", update_id=update.update_id)
        return JSONResponse({"ok": True, "ignored": True})
    seq, duplicate = await publish_update(bus, chat_id, update.update_id, body)
    TELEGRAM_WEBHOOK_UPDATES.labels("published").inc()
    log.info("telegram_update_stored", update_id=update.update_id, chat_id=chat_id, sequence=seq, duplicate=duplicate)
    return JSONResponse({"ok": True})


def _secret_matches(given: str | None, secret: str) -> bool:
    # Constant-time, on bytes: a header may carry any latin-1 text, which compare_digest refuses as str.
    return given is not None and hmac.compare_digest(given.encode("latin-1"), secret.encode())


async def _read_body(request: Request) -> bytes:
    """The request body, refused with 413 ``update_too_large`` as soon as it passes :data:`MAX_BODY_BYTES`."""
    declared = request.headers.get("content-length", "")
    size, chunks = int(declared) if declared.isdigit() else 0, []
    if size <= MAX_BODY_BYTES:
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                break
            chunks.append(chunk)
    if size > MAX_BODY_BYTES:
        TELEGRAM_WEBHOOK_UPDATES.labels("bad_update").inc()
        raise ApiError(
            413, "update_too_large", "The update is larger than 1 MiB.", details={"max_bytes": MAX_BODY_BYTES}
        )
    return b"".join(chunks)


async def publish_update(bus: Bus, chat_id: int, update_id: int, body: bytes) -> tuple[int, bool]:
    """Publish ``body`` as is to ``HERMES_INBOX`` on :func:`hermes_proto.subjects.telegram_inbox` with
    ``Nats-Msg-Id`` :func:`hermes_proto.inbox.telegram_msg_id` and the current ``traceparent``; returns the
    stream sequence and whether JetStream found it a duplicate. Raises :class:`BusUnavailable` when JetStream
    does not acknowledge it."""
    headers = inject_headers({MSG_ID: telegram_msg_id(update_id)})
    try:
        ack = await bus.js.publish(subj.telegram_inbox(chat_id), body, stream=subj.INBOX_STREAM, headers=headers)
    except BUS_ERRORS as exc:
        raise BusUnavailable("JetStream", exc) from exc
    return ack.seq, bool(ack.duplicate)
