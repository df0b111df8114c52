"""Hermes shared contract: typed msgspec events and commands, subjects, and the bus runtime.

This is the one package every Hermes service imports. Events are past tense
(``ThreadOpened``), commands imperative (``SubmitIdea``); both are frozen,
keyword-only, tagged ``msgspec.Struct`` types encoded as JSON on NATS JetStream.
"""

SCHEMA_VERSION = 1
