"""Hermes talos-edge: the generic execution edge (prompt in, result out) for one configured backend.

Consumes ``ExecutionRequested`` on ``hermes.exec.<backend>``, streams the model's reply as ``TokenDelta``s
on core NATS, and appends ``ExecutionStarted`` and ``ExecutionCompleted``/``ExecutionFailed`` to the log.
"""
