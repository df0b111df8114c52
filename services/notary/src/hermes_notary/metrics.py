"""The notary's Prometheus metrics."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

TREE_SIZE = Gauge(
    "hermes_log_tree_size", "Leaves of the event log's Merkle tree the notary has read (= stream sequence)"
)
SIGNED_SIZE = Gauge("hermes_log_signed_size", "Tree size of the last signed checkpoint")
UNSIGNED = Gauge("hermes_log_unsigned_events", "Events read but not yet under a signed checkpoint")
CHECKPOINTS = Counter("hermes_log_checkpoints_total", "Signed checkpoints appended")
CHECKPOINT_SECONDS = Histogram(
    "hermes_log_checkpoint_duration_seconds",
    "Time to compute the root, sign and append one checkpoint (seconds)",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
LAST_CHECKPOINT = Gauge("hermes_log_last_checkpoint_timestamp_seconds", "Unix time of the last signed checkpoint")
GAPS = Counter("hermes_log_gaps_total", "Stream sequences missing when the notary read past them")
ATTESTATIONS = Counter("hermes_soul_attestations_total", "SOUL.md attestations appended")
HANDOFFS = Counter("hermes_identity_handoffs_total", "Identity handoffs to a successor key")
SIGNING = Gauge(
    "hermes_notary_signing",
    "1 while the notary signs; 0 when its key is not the key the log is signed with (it then signs nothing)",
)
BACKUPS = Counter("hermes_backups_total", "Scheduled backups by outcome (ok, failed)", ["outcome"])
BACKUP_SECONDS = Histogram(
    "hermes_backup_duration_seconds",
    "Wall time of one scheduled backup (seconds)",
    buckets=(0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900),
)
BACKUP_BYTES = Gauge("hermes_backup_bytes", "Size of the last archive written (bytes)")
LAST_BACKUP = Gauge(
    "hermes_backup_last_success_timestamp_seconds", "Unix time of the last successful scheduled backup (0: none yet)"
)
