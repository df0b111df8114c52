"""Prometheus metrics of the notifier (served on ``METRICS_PORT``, default 9105)."""

from __future__ import annotations

from prometheus_client import Counter

MESSAGES_SENT = Counter(
    "hermes_notifier_messages_sent_total",
    "Messages delivered (a text split at the provider's length limit counts once per part); channel: telegram, "
    "webhook; kind: thread_completed, job_failed, thread_failed, budget_threshold, talos_down, backend_down, "
    "queue_full, dead_letters (alert type of a kind: hermes_notifier.domain.alert_type)",
    ["channel", "kind"],
)
MESSAGES_FAILED = Counter(
    "hermes_notifier_messages_failed_total",
    "Notifications given up after retries; reason: flood_wait, bad_request, forbidden, unauthorized, ...; for a "
    "callback http_<status>, timeout, network, invalid_url, refused_address (a forbidden address, not retried)",
    ["channel", "kind", "reason"],
)
SEND_RETRIES = Counter(
    "hermes_notifier_send_retries_total",
    "Provider calls retried (flood_wait, network, timeout, http_<status>)",
    ["channel", "reason"],
)
NOTIFICATIONS_SKIPPED = Counter(
    "hermes_notifier_notifications_skipped_total",
    "Events and dead letters acknowledged without a message; reason: off, disabled (alert type switched off), "
    "already_sent, covered, stale, no_recipient, not_announced, cooldown (alert type cooling down), own (a dead "
    "letter of the notifier's own dead-letter consumer)",
    ["channel", "kind", "reason"],
)
INBOUND_UPDATES = Counter(
    "hermes_notifier_inbound_updates_total",
    "Telegram updates handled; intent: idea, answer, done, rate, command, usage, ignore, refused, foreign_thread",
    ["intent"],
)
UPDATES_POLLED = Counter(
    "hermes_notifier_updates_polled_total",
    "getUpdates outcomes; outcome: updates (count of updates stored in HERMES_INBOX), empty, error",
    ["outcome"],
)
STREAM_EDITS = Counter(
    "hermes_notifier_stream_edits_total",
    "Edits of a streaming draft 1 message; outcome: edited, or the failure reason of a skipped edit",
    ["outcome"],
)
