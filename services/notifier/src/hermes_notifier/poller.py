"""Telegram updates in by long polling: :class:`Poller` moves each ``getUpdates`` batch into ``HERMES_INBOX``.

The next poll's ``offset`` confirms a batch to Telegram, so an update is confirmed only once JetStream holds it;
the ``notifier-inbox`` consumer (:mod:`hermes_notifier.inbox`) handles it from there.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence

import structlog
from nats.js import JetStreamContext
from tenacity import AsyncRetrying, retry_if_exception_type, wait_exponential

from hermes_proto import subjects
from hermes_proto.codec import DecodeError, decode_telegram_update
from hermes_proto.inbox import telegram_msg_id
from hermes_proto.rpc import BUS_ERRORS

from hermes_notifier.adapters import SendFailed, TelegramSender
from hermes_notifier.metrics import UPDATES_POLLED

log = structlog.get_logger("hermes.notifier")

ALLOWED_UPDATES = ["message", "callback_query"]
"""The update kinds Hermes reads (``getUpdates`` and ``setWebhook``'s ``allowed_updates``)."""


class Poller:
    """Moves updates from ``getUpdates`` (long polling, ``timeout_s`` seconds) into ``HERMES_INBOX``. A failed
    poll or store waits with exponential backoff (``backoff_s`` doubled up to 30 s) and tries again forever."""

    def __init__(self, sender: TelegramSender, js: JetStreamContext, timeout_s: float, backoff_s: float) -> None:
        self._sender = sender
        self._js = js
        self._timeout_s = timeout_s
        self._backoff_s = backoff_s
        self._offset = 0
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        retrying = AsyncRetrying(
            wait=wait_exponential(multiplier=self._backoff_s, max=30.0),
            reraise=True,
            retry=retry_if_exception_type((SendFailed, *BUS_ERRORS)),
            before_sleep=lambda state: log.warning(
                "poll_failed", error=str(state.outcome.exception()), wait_s=state.upcoming_sleep
            ),
        )
        try:
            async for attempt in retrying.copy():
                with attempt:
                    await self._sender.api("deleteWebhook")  # getUpdates answers 409 while a webhook is set
            while not self._stopping.is_set():
                async for attempt in retrying.copy():  # a fresh backoff after each good poll
                    with attempt:
                        await self._poll_once()
        except asyncio.CancelledError:
            raise
        except Exception:  # not a Telegram or bus error: a bug; say so rather than stop polling quietly
            log.exception("poller_stopped")
            raise

    async def _poll_once(self) -> None:
        try:
            updates = await self._sender.api(
                "getUpdates",
                timeout_s=self._timeout_s + 10,
                offset=self._offset,
                timeout=int(self._timeout_s),
                allowed_updates=ALLOWED_UPDATES,
            )
        except SendFailed:
            UPDATES_POLLED.labels("error").inc()
            raise
        if not updates:
            UPDATES_POLLED.labels("empty").inc()
            return
        await self._store(updates)
        self._offset = max(int(u.get("update_id", 0)) for u in updates) + 1  # confirmed by the next poll
        UPDATES_POLLED.labels("updates").inc(len(updates))

    async def _store(self, updates: Sequence[dict]) -> None:
        futures = []
        for update in updates:
            data = json.dumps(update).encode()
            try:
                decoded = decode_telegram_update(data)
            except DecodeError as exc:  # not an Update as documented: kept out of the inbox, and logged
                log.warning("update_undecodable", reason=exc.reason, detail=exc.detail[:200])
                continue
            chat_id = decoded.chat_id()
            if chat_id is None:
                continue  # an update kind Hermes does not read (allowed_updates should keep them out)
            futures.append(
                await self._js.publish_async(
                    subjects.telegram_inbox(chat_id), data, headers={"Nats-Msg-Id": telegram_msg_id(decoded.update_id)}
                )
            )
        await asyncio.wait_for(asyncio.gather(*futures), timeout=10)
