"""The learner's projection: the shared :class:`hermes_proto.projection.Projection` (positions, the writer, dead
letters, read-your-writes) writing each batch of the log to the read model through a
:class:`hermes_proto.rowstore.RowStore` (one transaction, position included), then handing the rows that changed to
the decisions' in-memory :class:`~hermes_learner.view.LearnerView` (or, after a write that forgot rows in bulk, a
view loaded again from them: :mod:`hermes_learner.forgetting`)."""

from __future__ import annotations

import asyncio

from nats.js import JetStreamContext
from sqlalchemy.engine import Engine

from hermes_proto import projection, sqlstore
from hermes_proto.bus import RawMessage

from hermes_learner import readmodel
from hermes_learner.view import LearnerView

SERVICE = "learner"


class LearnerProjection(projection.Projection):
    """Writes each batch in one transaction, position included, then updates ``view`` with what changed (before
    anyone waiting for the position resumes: a decision that required a sequence sees it in memory). Blocking to
    construct (it reads the position and loads the view). Metrics: ``hermes_learner_events_applied_total``,
    ``hermes_learner_projection_position`` and the rest of :class:`hermes_proto.projection.Projection`'s."""

    def __init__(self, engine: Engine, js: JetStreamContext | None) -> None:
        self.engine = engine
        self.rows = readmodel.row_store(engine)
        with self.rows:
            position = readmodel.load_position(self.rows)
        self.view = LearnerView.load(engine)
        self._opened: set[str] = set()
        self._forgot = False
        super().__init__(js, SERVICE, self._apply, position)  # type: ignore[arg-type]

    def _apply(self, batch: list[RawMessage], decoded: projection.Decoded) -> None:
        applied = readmodel.apply_events(self.rows, (event for _, event in decoded), batch[-1][0])
        self._opened, self._forgot = applied.opened, applied.forgot
        if applied.forgot:  # no copy of the deleted rows left in the write-ahead log's frames
            sqlstore.checkpoint(self.engine)

    async def stored(self, batch: list[RawMessage], decoded: projection.Decoded) -> None:
        if self._forgot:  # rare: loading the view again (off the loop) is simpler and exact
            fresh = await asyncio.to_thread(LearnerView.load, self.engine, self.view.closed_capacity)
            self.view.replace(fresh)
        else:
            self.view.apply(self.rows.changes, self._opened)
