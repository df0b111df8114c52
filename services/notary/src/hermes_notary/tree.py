"""The notary's copy of the log's Merkle tree: pymerkle's SQLite tree (append-only leaf table, RFC 6962 hashing),
one leaf per stream sequence, so its size is the last sequence read and the position to resume from."""

from __future__ import annotations

import asyncio
from pathlib import Path

from pymerkle import SqliteTree

from hermes_proto.bus import RawMessage
from hermes_proto.integrity import gap_entry, leaf_entry


def entries_of(batch: list[RawMessage], after: int) -> tuple[list[bytes], int]:
    """The leaf entries of ``batch`` (stream order) following sequence ``after``, a gap entry for every sequence
    the stream skipped; returns (entries, gaps). Messages at or below ``after`` are repeats and skipped."""
    entries: list[bytes] = []
    gaps = 0
    expected = after + 1
    for message in batch:
        if message.sequence < expected:
            continue
        for missing in range(expected, message.sequence):
            entries.append(gap_entry(missing))
            gaps += 1
        entries.append(leaf_entry(message.sequence, message.subject, message.headers, message.data))
        expected = message.sequence + 1
    return entries, gaps


class LeafTree:
    """Blocking pymerkle calls run in a worker thread (pymerkle serialises them with its own lock)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._tree = SqliteTree(str(path))
        # WAL, no fsync per commit: a crash loses at most the last batches, which the follower reads again from the
        # smaller size (the tree is derived from the stream; a corrupt or foreign one is set aside and rebuilt).
        self._tree.con.execute("PRAGMA journal_mode=WAL")
        self._tree.con.execute("PRAGMA synchronous=NORMAL")
        self.size = self._tree.get_size()

    async def append(self, entries: list[bytes]) -> int:
        """Append ``entries`` atomically (all or none); returns the new size."""
        if entries:
            self.size = await asyncio.to_thread(self._tree.append_entries, entries)
        return self.size

    async def root(self, size: int) -> str:
        """The root hash (hex) of the first ``size`` leaves."""
        return (await asyncio.to_thread(self._tree.get_root, size)).hex()

    async def entries(self, first: int, last: int) -> list[bytes]:
        """Leaf entries ``first..last`` (counting from one)."""
        return await asyncio.to_thread(lambda: [self._tree.get_entry(i) for i in range(first, last + 1)])

    def close(self) -> None:
        self._tree.close()
