"""The notifier's I/O: the Telegram Bot API (through python-telegram-bot), HTTP callbacks to external
producers (httpx) and one thread's story in the log."""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from typing import Any, TypeVar

import httpx
import structlog
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from opentelemetry import trace
from opentelemetry.trace import SpanKind
from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup
from telegram.error import (
    BadRequest,
    ChatMigrated,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TelegramError,
    TimedOut,
)
from telegram.request import HTTPXRequest
from telegram.warnings import PTBDeprecationWarning, PTBUserWarning
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt, wait_exponential

from hermes_proto import subjects
from hermes_proto.agents import AGENT_KIND, AgentRunCancelled, AgentRunCompleted, AgentRunFailed
from hermes_proto.base import Event
from hermes_proto.codec import DecodeError, decode_event
from hermes_proto.events import DraftPresented, NotificationSent, ThreadOpened
from hermes_proto.keyring import ready as keyring_ready
from hermes_proto.outbound import OutboundPolicy, OutboundRefused, Resolver
from hermes_proto.outbound_http import guarded_client

from hermes_notifier.chat import Keyboard
from hermes_notifier.domain import CHANNEL, WEBHOOK, ThreadContext
from hermes_notifier.metrics import SEND_RETRIES

log = structlog.get_logger("hermes.notifier")
tracer = trace.get_tracer("hermes.notifier")
E = TypeVar("E", bound=Event)
T = TypeVar("T")

OnWait = Callable[[], Awaitable[None]]
CONNECTION_POOL_SIZE = 8  # concurrent sends (one per thread in a fetched batch); PTB's default is 1
EMPTY_KEYBOARD = '{"inline_keyboard":[]}'
"""An inline keyboard without buttons (JSON, as the Bot API takes ``reply_markup``): an edit with it removes them."""


class SendFailed(Exception):
    """A message was not delivered. ``reason``: flood_wait, bad_request, forbidden, unauthorized,
    chat_migrated, timeout, network, telegram_error; ``detail``: the Bot API's description, token removed;
    ``retry_after_s``: a flood wait's ``retry_after`` (seconds), else None."""

    def __init__(self, reason: str, detail: str, retry_after_s: float | None = None) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class RetryPolicy:
    """``attempts`` tries per message; a flood wait (429 ``retry_after``, seconds) is honoured when at most
    ``max_retry_after_s``; network errors and 5xx wait ``backoff_s``, doubled per try, capped at
    ``max_retry_after_s``."""

    attempts: int = 4
    max_retry_after_s: float = 30.0
    backoff_s: float = 1.0


def retry_after_s(exc: RetryAfter) -> float:
    """The flood wait of a 429 in seconds (PTB 22 gives an int or a timedelta depending on PTB_TIMEDELTA)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PTBDeprecationWarning)
        value = exc.retry_after
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def failure_reason(exc: BaseException) -> str:
    """A short machine-readable name for a Telegram error (see :class:`SendFailed`)."""
    for kind, reason in (
        (RetryAfter, "flood_wait"),
        (BadRequest, "bad_request"),
        (TimedOut, "timeout"),
        (NetworkError, "network"),
        (Forbidden, "forbidden"),
        (InvalidToken, "unauthorized"),
        (ChatMigrated, "chat_migrated"),
    ):
        if isinstance(exc, kind):
            return reason
    return "telegram_error"


class TelegramSender:
    """Sends plain-text messages as one bot. ``base_url``: the Bot API server root (None: PTB's default server);
    ``timeout_s``: connect, read, write and pool timeout of one call (seconds)."""

    def __init__(self, token: str, base_url: str | None, policy: RetryPolicy, timeout_s: float) -> None:
        self._token = token
        self._policy = policy
        self._request = HTTPXRequest(
            connection_pool_size=CONNECTION_POOL_SIZE,
            connect_timeout=timeout_s,
            read_timeout=timeout_s,
            write_timeout=timeout_s,
            pool_timeout=timeout_s,
        )
        # getUpdates long polls on a connection of its own (PTB routes that one method to this request).
        self._updates_request = HTTPXRequest(
            connection_pool_size=1,
            connect_timeout=timeout_s,
            read_timeout=timeout_s,
            write_timeout=timeout_s,
            pool_timeout=timeout_s,
        )
        # PTB appends the token to base_url: methods live at <root>/bot<token>/<method>.
        options = {"base_url": f"{base_url.rstrip('/')}/bot"} if base_url else {}
        self._bot = Bot(token, request=self._request, get_updates_request=self._updates_request, **options)
        self._backoff = wait_exponential(multiplier=policy.backoff_s, max=policy.max_retry_after_s)

    async def start(self) -> None:
        """Open the HTTP connection pools. (Not ``Bot.initialize``: its ``getMe`` would fail the start when
        Telegram is unreachable, and its error text carries the token.)"""
        await self._request.initialize()
        await self._updates_request.initialize()

    async def close(self) -> None:
        await self._request.shutdown()
        await self._updates_request.shutdown()

    def scrub(self, text: str) -> str:
        """``text`` with the bot token replaced by ``***``."""
        return text.replace(self._token, "***")

    async def send(
        self,
        chat_id: str,
        text: str,
        on_wait: OnWait | None = None,
        *,
        parse_mode: str | None = None,
        keyboard: Keyboard | None = None,
    ) -> int:
        """Send ``text`` (at most 4096 UTF-16 units after entity parsing) to ``chat_id`` in ``parse_mode`` (None:
        plain), with inline ``keyboard`` buttons if given; returns Telegram's ``message_id``. Retries per
        :class:`RetryPolicy`, awaiting ``on_wait`` before each wait (e.g. to extend an ack deadline). Raises
        :class:`SendFailed` when the message is not delivered."""
        message = await self._call(
            "sendMessage",
            lambda: self._bot.send_message(
                chat_id=chat_id, text=text, parse_mode=parse_mode, reply_markup=_markup(keyboard)
            ),
            on_wait,
        )
        return message.message_id

    async def edit(
        self,
        chat_id: str,
        message_id: int,
        text: str,
        *,
        parse_mode: str | None = None,
        keyboard: Keyboard | None = None,
        on_wait: OnWait | None = None,
        clear_keyboard: bool = False,
    ) -> None:
        """Replace the text (and buttons: none unless ``keyboard``) of message ``message_id`` in ``chat_id``;
        ``clear_keyboard`` (without ``keyboard``) sends an empty inline keyboard, to say so explicitly.
        An edit to the same content is not an error. Raises :class:`SendFailed`."""
        markup = _markup(keyboard)
        # PTB leaves an empty keyboard out of the request; this one says "no buttons" in so many words.
        extra = {"api_kwargs": {"reply_markup": EMPTY_KEYBOARD}} if clear_keyboard and markup is None else {}
        try:
            await self._call(
                "editMessageText",
                lambda: self._bot.edit_message_text(
                    text=text,
                    chat_id=chat_id,
                    message_id=message_id,
                    parse_mode=parse_mode,
                    reply_markup=markup,
                    **extra,
                ),
                on_wait,
            )
        except SendFailed as exc:
            if not (exc.reason == "bad_request" and "not modified" in exc.detail):
                raise

    async def answer_button(self, query_id: str, text: str) -> None:
        """Acknowledge a button press with a short notice (at most 200 characters), retried like a message.
        Raises :class:`SendFailed`."""
        await self._call(
            "answerCallbackQuery",
            lambda: self._bot.answer_callback_query(callback_query_id=query_id, text=text[:200]),
            None,
        )

    async def api(self, method: str, timeout_s: float | None = None, **params: Any) -> Any:
        """Call Bot API ``method`` once (no retry) and return its raw JSON ``result`` (e.g. ``getUpdates``: a
        list of Update objects as dicts). ``timeout_s`` is the read timeout (a long poll needs more than the
        default). Raises :class:`SendFailed`."""
        try:
            with warnings.catch_warnings():  # PTB suggests its typed methods; the raw JSON is what is wanted here
                warnings.simplefilter("ignore", PTBUserWarning)
                return await self._bot.do_api_request(method, api_kwargs=params, read_timeout=timeout_s)
        except TelegramError as exc:
            raise self._failed(exc) from None

    def _failed(self, exc: TelegramError) -> SendFailed:
        wait = retry_after_s(exc) if isinstance(exc, RetryAfter) else None
        return SendFailed(failure_reason(exc), self._detail(exc), wait)

    async def _call(self, method: str, make_call: Callable[[], Awaitable[T]], on_wait: OnWait | None) -> T:
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._policy.attempts),
            wait=self._wait,
            retry=retry_if_exception(self._retryable),
            reraise=True,
            before_sleep=partial(self._before_sleep, on_wait=on_wait),
        )
        with tracer.start_as_current_span(f"telegram {method}", kind=SpanKind.CLIENT) as span:
            try:
                async for attempt in retrying:
                    with attempt:
                        result = await make_call()
            except TelegramError as exc:
                span.set_attribute("error.type", failure_reason(exc))
                raise self._failed(exc) from None
            span.set_attribute("telegram.attempts", retrying.statistics.get("attempt_number", 1))
        return result

    def _detail(self, exc: TelegramError) -> str:
        if isinstance(exc, RetryAfter):
            return f"{exc} (longest wait honoured: {self._policy.max_retry_after_s:g} s)"
        return self.scrub(str(exc))

    def _retryable(self, exc: BaseException) -> bool:
        if isinstance(exc, RetryAfter):
            return retry_after_s(exc) <= self._policy.max_retry_after_s
        # BadRequest is a NetworkError subclass in PTB, but retrying cannot fix it.
        return isinstance(exc, NetworkError) and not isinstance(exc, BadRequest)

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, RetryAfter):
            return retry_after_s(exc)
        return self._backoff(state)

    async def _before_sleep(self, state: RetryCallState, on_wait: OnWait | None) -> None:
        exc = state.outcome.exception() if state.outcome else None
        reason = failure_reason(exc) if exc else "unknown"
        SEND_RETRIES.labels(CHANNEL, reason).inc()
        log.warning(
            "telegram_retry",
            reason=reason,
            attempt=state.attempt_number,
            wait_s=state.upcoming_sleep,
            error=self.scrub(str(exc)),
        )
        await _signal_progress(on_wait)


def _markup(keyboard: Keyboard | None) -> InlineKeyboardMarkup | None:
    if not keyboard:
        return None
    return InlineKeyboardMarkup(
        [[InlineKeyboardButton(label, callback_data=data) for label, data in row] for row in keyboard]
    )


@dataclass(frozen=True)
class CallbackPolicy:
    """``attempts`` POSTs at most; between them ``backoff_s`` seconds, doubled per try and capped at
    ``max_backoff_s``; each attempt (connect, send, status line) gives up after ``timeout_s`` seconds."""

    attempts: int = 5
    backoff_s: float = 1.0
    max_backoff_s: float = 30.0
    timeout_s: float = 10.0


class CallbackStatus(Exception):
    """The callback answered with a status other than 2xx."""

    def __init__(self, status: int) -> None:
        super().__init__(f"the callback answered HTTP {status}")
        self.status = status


def callback_failure_reason(exc: BaseException) -> str:
    """A short name for a failed callback attempt: ``http_<status>``, ``timeout``, ``network``, ``invalid_url`` or
    ``refused_address`` (the URL's host is, or resolves to, an address that is not public and not allowed)."""
    if isinstance(exc, CallbackStatus):
        return f"http_{exc.status}"
    if isinstance(exc, OutboundRefused):
        return "refused_address"
    if isinstance(exc, (TimeoutError, httpx.TimeoutException)):
        return "timeout"
    if isinstance(exc, (httpx.UnsupportedProtocol, httpx.InvalidURL)):
        return "invalid_url"
    return "network"


def _retryable_callback(exc: BaseException) -> bool:
    # 408/429/5xx and transport trouble may pass on a later try; another 4xx or a bad URL will not.
    if isinstance(exc, CallbackStatus):
        return exc.status in (408, 429) or exc.status >= 500
    return callback_failure_reason(exc) in ("timeout", "network")


class CallbackSender:
    """POSTs JSON results to external producers' callback URLs through the guarded client
    (:func:`hermes_proto.outbound_http.guarded_client`: only public addresses or those ``outbound`` lists, checked
    when connecting; one connection pool, redirects not followed, the response body never read). Retries per
    :class:`CallbackPolicy`; a refused address is not retried. ``resolver``: for tests."""

    def __init__(
        self, policy: CallbackPolicy, outbound: OutboundPolicy | None = None, resolver: Resolver | None = None
    ) -> None:
        self._policy = policy
        self._client = guarded_client(
            outbound or OutboundPolicy(),
            timeout=policy.timeout_s,
            headers={"User-Agent": "hermes-notifier"},
            resolver=resolver,
        )
        self._backoff = wait_exponential(multiplier=policy.backoff_s, max=policy.max_backoff_s)

    async def close(self) -> None:
        await self._client.aclose()

    async def post(self, url: str, body: bytes, idempotency_key: str, on_wait: OnWait | None = None) -> int:
        """POST ``body`` (JSON) to ``url`` with the header ``Idempotency-Key``; returns the 2xx status. Awaits
        ``on_wait`` before each wait between attempts. Raises :class:`SendFailed` (reason as
        :func:`callback_failure_reason`) when no attempt got a 2xx; its detail never holds the URL."""
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._policy.attempts),
            wait=self._backoff,
            retry=retry_if_exception(_retryable_callback),
            reraise=True,
            before_sleep=partial(self._before_sleep, on_wait=on_wait),
        )
        with tracer.start_as_current_span("callback POST", kind=SpanKind.CLIENT) as span:
            try:
                async for attempt in retrying:
                    with attempt:
                        status = await self._attempt(url, body, idempotency_key)
            except (CallbackStatus, httpx.HTTPError, httpx.InvalidURL, TimeoutError, OutboundRefused) as exc:
                reason = callback_failure_reason(exc)
                span.set_attribute("error.type", reason)
                raise SendFailed(reason, _callback_detail(exc, url, self._policy.timeout_s)) from None
            span.set_attribute("http.response.status_code", status)
            span.set_attribute("callback.attempts", retrying.statistics.get("attempt_number", 1))
        return status

    async def _attempt(self, url: str, body: bytes, idempotency_key: str) -> int:
        headers = {"Content-Type": "application/json", "Idempotency-Key": idempotency_key}
        async with asyncio.timeout(self._policy.timeout_s):  # the whole attempt, not each socket operation
            async with self._client.stream("POST", url, content=body, headers=headers) as response:
                status = response.status_code
        if not 200 <= status < 300:
            raise CallbackStatus(status)
        return status

    async def _before_sleep(self, state: RetryCallState, on_wait: OnWait | None) -> None:
        exc = state.outcome.exception() if state.outcome else None
        reason = callback_failure_reason(exc) if exc else "unknown"
        SEND_RETRIES.labels(WEBHOOK, reason).inc()
        log.warning("callback_retry", reason=reason, attempt=state.attempt_number, wait_s=state.upcoming_sleep)
        await _signal_progress(on_wait)


def _callback_detail(exc: BaseException, url: str, timeout_s: float) -> str:
    if isinstance(exc, TimeoutError):
        return f"no answer within {timeout_s:g} s"
    text = str(exc) or type(exc).__name__
    return text.replace(url, "<callback_url>")  # the URL may carry a token in its query


async def _signal_progress(on_wait: OnWait | None) -> None:
    if on_wait is not None:
        try:
            await on_wait()
        except Exception as err:  # a lost in_progress only risks a redelivery, which is idempotent
            log.warning("in_progress_failed", error=repr(err))


class ThreadLog:
    """Reads one thread's events from ``HERMES_EVENTS`` by subject (JetStream message get, no consumer).
    JetStream errors other than "not found" propagate (the message is retried)."""

    def __init__(self, js: JetStreamContext) -> None:
        self._js = js

    async def context(self, thread_id: str) -> ThreadContext:
        """The idea, origin, kind and assumptions of the thread's ``thread_opened`` and its last presented draft;
        for an agent run its ending event instead (``agent_run_completed``, ``_failed`` or ``_cancelled``)."""
        opened = await self.last(thread_id, ThreadOpened)
        kind = opened.kind if opened else "idea"
        draft = await self.last(thread_id, DraftPresented) if kind != AGENT_KIND else None
        return ThreadContext(
            kind=kind,
            run_end=await self.run_end(thread_id) if kind == AGENT_KIND else None,
            idea=opened.idea if opened else None,
            origin=opened.origin if opened else {},
            draft_text=draft.text if draft else None,
            draft_number=draft.draft_number if draft else None,
            callback_url=opened.callback_url if opened else None,
            source_app=opened.source_app if opened else None,
            assumptions=tuple(opened.assumptions) if opened else (),
            user_id=opened.user_id if opened else None,
        )

    async def run_end(self, run_id: str) -> AgentRunCompleted | AgentRunFailed | AgentRunCancelled | None:
        """The agent run's ending event, if it has ended (a run ends once: at most one of them is stored)."""
        for event_type in (AgentRunCompleted, AgentRunFailed, AgentRunCancelled):
            end = await self.last(run_id, event_type)
            if end is not None:
                return end
        return None

    async def notification_recorded(self, thread_id: str, event_id: str) -> bool:
        """Whether a ``notification_sent`` with ``event_id`` is in the thread's log."""
        async for data in self._stored(thread_id, NotificationSent):
            await keyring_ready((data,))
            if _event_id(data) == event_id:
                return True
        return False

    async def all(self, thread_id: str, event_type: type[E]) -> list[E]:
        """The thread's events of ``event_type`` in log order (meant for the few per thread, e.g. its answers or
        notification records); undecodable ones are logged and left out."""
        found: list[E] = []
        async for data in self._stored(thread_id, event_type):
            await keyring_ready((data,))
            try:
                event = decode_event(data)
            except DecodeError as exc:
                log.warning("thread_log_undecodable", type=event_type.type_name(), reason=exc.reason)
                continue
            if isinstance(event, event_type):
                found.append(event)
        return found

    async def notifications(self, thread_id: str) -> list[NotificationSent]:
        """The thread's (or alert aggregate's) ``notification_sent`` records in log order."""
        return await self.all(thread_id, NotificationSent)

    async def _stored(self, thread_id: str, event_type: type[Event]) -> AsyncIterator[bytes]:
        """The payloads stored on the thread's subject of ``event_type``, oldest first (one JetStream message
        get with ``next_by_subj`` each: no consumer)."""
        subject, seq = subjects.thread_event(thread_id, event_type), 1
        while True:
            try:
                raw = await self._js.get_msg(subjects.EVENTS_STREAM, seq=seq, subject=subject, next=True)
            except NotFoundError:
                return
            yield raw.data or b""
            seq = (raw.seq or seq) + 1

    async def last(self, thread_id: str, event_type: type[E]) -> E | None:
        """The thread's latest event of ``event_type``, or None (none, or undecodable)."""
        try:
            raw = await self._js.get_last_msg(subjects.EVENTS_STREAM, subjects.thread_event(thread_id, event_type))
            await keyring_ready((raw.data or b"",))
            event = decode_event(raw.data or b"")
        except NotFoundError:
            return None
        except DecodeError as exc:  # someone else's bad write must not stop the notification
            log.warning("thread_log_undecodable", type=event_type.type_name(), reason=exc.reason)
            return None
        return event if isinstance(event, event_type) else None


def _event_id(data: bytes | None) -> str | None:
    try:
        return decode_event(data or b"").event_id
    except DecodeError:
        return None


class DeadLetterArchive:
    """Reads ``HERMES_DLQ``'s size: stream info filtered on the records' subjects (one per consumer), so replay
    markers are not counted."""

    def __init__(self, js: JetStreamContext) -> None:
        self._js = js

    async def count(self) -> int | None:
        """Dead-letter records stored (None when the stream is missing). JetStream errors propagate."""
        try:
            info = await self._js.stream_info(subjects.DLQ_STREAM, subjects_filter=subjects.DLQ_RECORDS)
        except NotFoundError:
            return None
        return sum((info.state.subjects or {}).values())
