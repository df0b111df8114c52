"""The orchestrator's read-model projection: the shared :class:`hermes_proto.projection.Projection`
(position, dead letters, read-your-writes) over this service's SQLite tables."""

from __future__ import annotations

from nats.js import JetStreamContext
from sqlalchemy.engine import Engine
from sqlmodel import Session

from hermes_proto import projection
from hermes_proto.events import SettingChanged
from hermes_proto.sqlstore import batch_session

from hermes_orchestrator import readmodel

SERVICE = "orchestrator"


class Projection(projection.Projection):
    """Applies each batch of the log to the read models in one transaction, position included.
    Metrics: ``hermes_orchestrator_events_applied_total``, ``hermes_orchestrator_projection_position``."""

    def __init__(self, engine: Engine, js: JetStreamContext) -> None:
        self.engine = engine
        self.settings_version = 0
        """Bumped by every applied ``SettingChanged``: what caches of the user settings are keyed by."""
        with Session(engine) as session:
            position = readmodel.load_position(session)
        super().__init__(js, SERVICE, self._apply, position)

    def _apply(self, batch: list[projection.RawMessage]) -> list[projection.Rejected]:
        decoded, rejected = projection.decode_batch(batch)
        with batch_session(self.engine) as session:
            for _, event in decoded:
                readmodel.apply(event, session)
                session.flush()
            readmodel.save_position(session, batch[-1][0])
            session.commit()
        if any(isinstance(event, SettingChanged) for _, event in decoded):
            self.settings_version += 1
        return rejected
