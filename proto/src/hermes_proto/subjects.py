"""Stream names and subject builders (lowercase, dotted)."""

from __future__ import annotations

import re

from hermes_proto.base import Command, Event

_NOT_TOKEN = re.compile(r"[.*>\s]")

EVENTS_STREAM = "HERMES_EVENTS"
COMMANDS_STREAM = "HERMES_COMMANDS"
EXEC_STREAM = "HERMES_EXEC"
DLQ_STREAM = "HERMES_DLQ"
INBOX_STREAM = "HERMES_INBOX"

EVENTS_ALL = "hermes.evt.>"
COMMANDS_ALL = "hermes.cmd.>"
EXEC_ALL = "hermes.exec.>"
DLQ_ALL = "hermes.dlq.>"
INBOX_ALL = "hermes.inbox.>"
INBOX_EVENTS_PREFIX = "hermes.inbox.event."
"""External producers' events a schedule's ``subject`` trigger waits for (stream HERMES_INBOX)."""
INBOX_EVENTS_ALL = INBOX_EVENTS_PREFIX + ">"


def event_subject(event: Event) -> str:
    """``hermes.evt.<aggregate_type>.<aggregate_id>.<event_type>``."""
    return f"hermes.evt.{event.aggregate_type}.{event.aggregate_id}.{event.type_name()}"


def event_type_filter(event_type: type[Event], aggregate_type: str | None = None) -> str:
    """A filter matching every event of one type, e.g. ``hermes.evt.thread.*.draft_presented``
    (the aggregate type defaults to the event's own)."""
    return f"hermes.evt.{aggregate_type or event_type.aggregate_type}.*.{event_type.type_name()}"


def thread_events(thread_id: str) -> str:
    return f"hermes.evt.thread.{thread_id}.>"


def thread_event(thread_id: str, event_type: type[Event] | str) -> str:
    """``hermes.evt.thread.<thread_id>.<event_type>``: one thread's events of one type (a class or its tag)."""
    name = event_type if isinstance(event_type, str) else event_type.type_name()
    return f"hermes.evt.thread.{thread_id}.{name}"


def command_subject(command: Command | type[Command]) -> str:
    """``hermes.cmd.<type>.<thread_id>`` for a command about a thread (the thread decides its partition:
    :mod:`hermes_proto.partitions`); ``hermes.cmd.<type>`` for a command type, or a command without a thread (what
    an external producer may also publish on: the orchestrator takes both)."""
    thread_id = getattr(command, "thread_id", None) if isinstance(command, Command) else None
    if isinstance(thread_id, str) and is_token(thread_id):
        return f"hermes.cmd.{command.type_name()}.{thread_id}"
    return f"hermes.cmd.{command.type_name()}"


def is_token(text: str) -> bool:
    """Whether ``text`` can be one subject token (1-256 characters, none of ``.``, ``*``, ``>`` or whitespace)."""
    return 0 < len(text) <= 256 and not _NOT_TOKEN.search(text)


def command_type_filter(command_type: type[Command]) -> str:
    """Every command of one type published with its thread: ``hermes.cmd.<type>.>``."""
    return f"hermes.cmd.{command_type.type_name()}.>"


def command_type_of(subject: str) -> str:
    """The command type a ``hermes.cmd.<type>[.<thread_id>[.<partition>]]`` subject names."""
    return subject.split(".")[2] if subject.startswith("hermes.cmd.") else ""


def exec_subject(backend: str) -> str:
    return f"hermes.exec.{backend}"


def heartbeat_subject(backend: str) -> str:
    return f"hermes.heartbeat.{backend}"


HEARTBEATS_ALL = "hermes.heartbeat.*"


def probe_subject(backend: str) -> str:
    """Core NATS request/reply: the router asks a backend's edges for a fresh :class:`Heartbeat`."""
    return f"hermes.probe.{backend}"


def cancel_subject(backend: str) -> str:
    """Core NATS: the router tells every edge of ``backend`` to stop a job's model call
    (:class:`hermes_proto.execution.CancelExecution`)."""
    return f"hermes.cancel.{backend}"


def token_subject(thread_id: str, job_id: str) -> str:
    return f"hermes.tokens.{thread_id}.{job_id}"


def thread_tokens(thread_id: str) -> str:
    """Every job's token deltas of one thread."""
    return token_subject(thread_id, "*")


def dlq_subject(consumer: str) -> str:
    return f"hermes.dlq.{consumer}"


DLQ_RECORDS = "hermes.dlq.*"
"""Every :class:`~hermes_proto.deadletter.DeadLetter` record (three tokens; a durable name has no dots)."""
DLQ_REPLAYED_ALL = "hermes.dlq.replayed.*"
"""Every :class:`~hermes_proto.deadletter.DeadLetterReplayed` marker (four tokens: never a record)."""


def dlq_replayed_subject(dlq_sequence: int) -> str:
    """``hermes.dlq.replayed.<dlq_sequence>``: the marker of one replayed dead letter."""
    return f"hermes.dlq.replayed.{dlq_sequence}"


TELEGRAM_INBOX_ALL = "hermes.inbox.telegram.*"
"""Every inbound Telegram update (:mod:`hermes_proto.inbox`)."""


def telegram_inbox(chat_id: int | str) -> str:
    """``hermes.inbox.telegram.<chat_id>``: one chat's updates (chat ids are integers, negative for groups)."""
    return f"hermes.inbox.telegram.{int(chat_id)}"


QUERY_THREAD = "hermes.query.thread"
QUERY_JOB = "hermes.query.job"
QUERY_HEALTH = "hermes.query.health"
QUERY_QUEUE = "hermes.query.queue"
QUERY_BACKENDS = "hermes.query.backends"
QUERY_SELECTIONS = "hermes.query.selections"
CONTROL_BACKEND = "hermes.control.backend"
QUERY_TEMPLATES = "hermes.query.templates"
CONTROL_TEMPLATE = "hermes.control.template"
QUERY_PREFERENCES = "hermes.query.preferences"
CONTROL_PREFERENCE = "hermes.control.preference"
QUERY_PATTERNS = "hermes.query.patterns"
QUERY_OPTIMIZATIONS = "hermes.query.optimizations"
CONTROL_COMPARE = "hermes.control.compare"
QUERY_SESSIONS = "hermes.query.sessions"
QUERY_SESSION = "hermes.query.session"
QUERY_MEMORY = "hermes.query.memory"
QUERY_EXPORT = "hermes.query.export"
CONTROL_SOUL = "hermes.control.soul"
QUERY_IDENTITY = "hermes.query.identity"
"""The notary: the instance's public key, its other forms and the log's last checkpoint (:mod:`hermes_proto.identity_queries`)."""
NOTARY_ROTATE = "hermes.notary.rotate"
"""The notary hands the identity over to a new key (admin only: outside ``hermes.control.*``, which the gateway may use)."""
QUERY_CONFIG = "hermes.query.config"
CONTROL_CONFIG = "hermes.control.config"
QUERY_TOOLS = "hermes.query.tools"
QUERY_WORKSPACE = "hermes.query.workspace"
QUERY_AGENT_RUN = "hermes.query.agent_run"
QUERY_AGENT_RUNS = "hermes.query.agent_runs"
QUERY_AGENT_PROFILES = "hermes.query.agent_profiles"
QUERY_APPROVALS = "hermes.query.approvals"
QUERY_SCHEDULES = "hermes.query.schedules"
QUERY_SCHEDULE = "hermes.query.schedule"
QUERY_MEMORY_ENTRIES = "hermes.query.memory_entries"
QUERY_SKILL_PROPOSALS = "hermes.query.skill_proposals"
QUERY_SKILLS = "hermes.query.skills"
CONTROL_MCP = "hermes.control.mcp"
PERCEPTION_ALL = "hermes.perception.*"
"""Perception events of external producers (core NATS request/reply): ``hermes.perception.<source>``."""


def perception_subject(source: str) -> str:
    """Where a producer named ``source`` publishes (or requests with) a perception event."""
    return f"hermes.perception.{source}"


def aggregate_id_of(subject: str) -> str:
    """The aggregate id of an event subject ``hermes.evt.<aggregate>.<id>.<type>``; any other subject is
    returned whole (so it forms a group of its own)."""
    tokens = subject.split(".")
    return tokens[3] if len(tokens) == 5 and tokens[1] == "evt" else subject
