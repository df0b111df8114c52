"""Prometheus metrics of the notifier (served on ``METRICS_PORT``, default 9105)."""

from __future__ import annotations

from prometheus_client import Counter

MESSAGES_SENT = Counter(
    "hermes_notifier_messages_sent_total",
    "Messages delivered (a text split at the provider's length limit counts once per part); channel: telegram, "
    "webhook; kind: thread_completed, job_failed, thread_failed, budget_threshold, talos_down, backend_down, "
    "queue_full",
    ["channel", "kind"],
)
MESSAGES_FAILED = Counter(
    "hermes_notifier_messages_failed_total",
    "Notifications given up after retries; reason: flood_wait, bad_request, forbidden, unauthorized, ...",
    ["channel", "kind", "reason"],
)
SEND_RETRIES = Counter(
    "hermes_notifier_send_retries_total", "Provider calls retried (flood_wait, network, timeout, http_<status>)",
    ["channel", "reason"],
)
NOTIFICATIONS_SKIPPED = Counter(
    "hermes_notifier_notifications_skipped_total",
    "Events acknowledged without a message; reason: off, disabled, already_sent, covered, stale, no_recipient, "
    "not_announced, cooldown",
    ["channel", "kind", "reason"],
)
