"""The orchestrator's projection: the shared :class:`hermes_proto.projection.Projection` (positions, the writer, dead
letters, read-your-writes) folding each batch into the in-memory :class:`ThreadFold` and writing the read model's
rows through a :class:`hermes_proto.rowstore.RowStore`."""

from __future__ import annotations

from nats.js import JetStreamContext
from sqlalchemy.engine import Engine

from hermes_proto import projection
from hermes_proto.bus import RawMessage
from hermes_proto.partitions import SINGLE, Partition

from hermes_orchestrator import readmodel
from hermes_orchestrator.fold import ThreadFold

SERVICE = "orchestrator"


class Projection(projection.Projection):
    """Folds each batch of the log into ``fold`` (decisions read it; ``partition``'s threads only), then writes the
    rows in one transaction, position included (every thread's: any replica answers any query). Metrics: ``hermes_orchestrator_events_applied_total``,
    ``hermes_orchestrator_projection_position`` and the rest of :class:`hermes_proto.projection.Projection`'s."""

    def __init__(self, engine: Engine, js: JetStreamContext, partition: Partition = SINGLE) -> None:
        self.engine = engine
        self.rows = readmodel.row_store(engine)
        with self.rows:
            position = readmodel.load_position(self.rows)
        self.fold = ThreadFold.load(engine, partition)
        super().__init__(js, SERVICE, self._apply, position, fold=self.fold.apply)

    @property
    def settings_version(self) -> int:
        """Bumped by every folded ``SettingChanged``: what caches of the user settings are keyed by."""
        return self.fold.settings_version

    def _apply(self, batch: list[RawMessage], decoded: projection.Decoded) -> None:
        readmodel.apply_events(self.rows, (event for _, event in decoded), batch[-1][0])

    async def stored(self, batch: list[RawMessage], decoded: projection.Decoded) -> None:
        self.fold.stored(batch[-1][0])
