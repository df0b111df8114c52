"""Threads in partitions: which replica of the orchestrator (and of the backend-router) decides a thread.

Commands are published on ``hermes.cmd.<type>.<thread_id>``. With ``N`` > 1 partitions the NATS server maps that
subject to ``hermes.cmd.<type>.<thread_id>.<p>`` (:func:`server_mappings`, the server's own ``partition()``
transform), and the replica owning partition ``p`` consumes only those (:func:`command_filters`). Events keep their
subjects; each replica folds and reacts to the threads of its own partition, computed here exactly as the server
computes it (:func:`partition_of`: FNV-1a 32 of the thread id, modulo ``N``; checked against a real server in
tests/integration/test_partitioned_replicas.py), and every replica keeps the whole read model, so any of them answers any
query. One partition (``N`` = 1, the default) is today's single writer: one consumer on ``hermes.cmd.>``.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import Field
from pydantic_settings import BaseSettings

_FNV_OFFSET = 0x811C9DC5
_FNV_PRIME = 0x01000193


def partition_of(key: str, partitions: int) -> int:
    """The partition of ``key`` (a thread id) among ``partitions``: FNV-1a 32 of its UTF-8 bytes modulo
    ``partitions``, as the NATS server's ``{{partition(n, i)}}`` transform computes it. Raises ValueError for fewer
    than one partition."""
    if partitions < 1:
        raise ValueError("at least one partition")
    h = _FNV_OFFSET
    for byte in key.encode():
        h = ((h ^ byte) * _FNV_PRIME) & 0xFFFFFFFF
    return h % partitions


def server_mappings(partitions: int) -> dict[str, str]:
    """The NATS server's subject mappings for ``partitions`` (empty for one): a command's thread id decides its
    partition, appended as a last token."""
    if partitions <= 1:
        return {}
    return {"hermes.cmd.*.*": f"hermes.cmd.{{{{wildcard(1)}}}}.{{{{wildcard(2)}}}}.{{{{partition({partitions},2)}}}}"}


def server_config(partitions: int) -> str:
    """:func:`server_mappings` as a nats-server configuration block (empty text for one partition)."""
    mappings = server_mappings(partitions)
    if not mappings:
        return ""
    lines = "\n".join(f'  "{src}": "{dst}"' for src, dst in mappings.items())
    return f"mappings = {{\n{lines}\n}}\n"


class PartitionSettings(BaseSettings):
    """``HERMES_PARTITIONS`` (how many; the NATS server must map commands for that many, :func:`server_config`) and
    ``HERMES_PARTITION`` (the one this replica owns, 0 to ``HERMES_PARTITIONS`` - 1)."""

    hermes_partitions: int = Field(1, ge=1, le=64)
    hermes_partition: int = Field(0, ge=0, le=63)


@dataclass(frozen=True)
class Partition:
    """The partition a replica owns: ``index`` of ``count``. ``owns(thread_id)`` says whether it decides a thread."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if not 0 <= self.index < self.count:
            raise ValueError(f"partition {self.index} of {self.count}: it must be 0 to {self.count - 1}")

    @classmethod
    def of(cls, settings: PartitionSettings) -> Partition:
        return cls(settings.hermes_partition, settings.hermes_partitions)

    @property
    def single(self) -> bool:
        return self.count == 1

    def owns(self, thread_id: str) -> bool:
        return self.count == 1 or partition_of(thread_id, self.count) == self.index

    def suffix(self, name: str) -> str:
        """``name`` for this partition's own durable consumer (``name`` itself with one partition)."""
        return name if self.single else f"{name}-p{self.index}"

    def command_filters(self) -> list[str]:
        """The commands this replica consumes: all of ``hermes.cmd.>`` with one partition; else the mapped subjects
        of its partition, and for partition 0 also the commands published without a thread token
        (``hermes.cmd.<type>``, which it forwards to their thread's subject)."""
        if self.single:
            return ["hermes.cmd.>"]
        own = [f"hermes.cmd.*.*.{self.index}"]
        return own + ["hermes.cmd.*"] if self.index == 0 else own


SINGLE = Partition()
"""One partition: every thread (the default of a single orchestrator and router)."""
