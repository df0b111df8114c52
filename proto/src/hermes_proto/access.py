"""Who may do what on the bus: one :class:`Grant` per role, rendered into nats-server's own authorization.

Every service connects as its own NKey user (:mod:`hermes_proto.credentials`) of one account; the server enforces
the permissions :func:`permissions` renders from the grant (publish/subscribe allow lists, JetStream API subjects
per stream and durable, replies to requests the role serves). Nothing is signed or checked by Hermes itself.
``docs/architecture.md`` ("The locked bus") shows the same table in prose; :func:`markdown_table` prints it.

Roles: ``orchestrator``, ``learner``, ``router``, ``gateway``, ``notifier``, ``edge-<backend>`` (one per backend),
``producer`` (external producers: public commands and perception requests only) and ``admin`` (operators: all).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hermes_proto import subjects as subj
from hermes_proto.keyring import BUCKET as KEYS_BUCKET
from hermes_proto.keyring import KEYS_ERASED, KEYS_STREAM
from hermes_proto.partitions import Partition

ADMIN = "admin"
PRODUCER = "producer"
STREAM_MANAGERS = ("orchestrator", ADMIN)
"""The roles that create and update the streams; every other role waits for them (:func:`hermes_proto.bus.ensure_streams`)."""
SERVICE_ROLES = ("orchestrator", "learner", "router", "gateway", "notifier", "tools")
PUBLIC_COMMANDS = ("submit_idea", "submit_chat", "submit_workflow", "answer_questions", "rate_thread", "cancel_job")
"""The commands an external producer may publish (``hermes.cmd.<type>`` and ``hermes.cmd.<type>.<thread_id>``)."""

SCHEDULE_SURFACE_COMMANDS = ("create_schedule", "pause_schedule", "resume_schedule", "delete_schedule", "fire_schedule")
"""The schedule commands a person's surface (web, CLI, Telegram) sends."""
STREAMS = (subj.EVENTS_STREAM, subj.COMMANDS_STREAM, subj.EXEC_STREAM, subj.DLQ_STREAM, subj.INBOX_STREAM)


AGENT_DECISIONS = (
    "agent_run_started",
    "model_turn_completed",
    "tool_call_requested",
    "approval_requested",
    "approval_granted",
    "approval_denied",
    "approval_expired",
    "tool_call_dispatched",
    "tool_call_failed",
    "agent_run_completed",
    "agent_run_failed",
    "agent_run_cancelled",
)
"""The agent events only the orchestrator appends (a dispatch and a grant above all: the tool service runs nothing
else, and nobody else can forge them)."""


def thread_events(*types: str) -> tuple[str, ...]:
    return tuple(f"hermes.evt.thread.*.{t}" for t in types)


def commands(*types: str) -> tuple[str, ...]:
    """A command type on its own subject, with a thread token, and forwarded to a partition."""
    return tuple(s for t in types for s in (f"hermes.cmd.{t}", f"hermes.cmd.{t}.>"))


@dataclass(frozen=True)
class Grant:
    """What one role may do. ``append``: subjects it publishes into streams (JetStream acks come back on its inbox);
    ``publish``: core subjects it publishes or requests; ``subscribe``: core subjects it subscribes (queries it
    serves, live subjects); ``consume``: (stream, durable) pull consumers it owns (create, fetch, ack);
    ``follow``: streams it reads with ephemeral ordered consumers; ``read``: streams it reads by sequence or subject
    (get message, info); ``inspect``: streams whose consumers it may list (a backup records their positions);
    ``manage``: it creates and updates the streams; ``serves``: it replies to requests; ``keys``: what it may do
    with the data keys' bucket (:mod:`hermes_proto.keyring`): ``read`` (and list: message gets),
    ``create`` (and read), ``export`` (read: backups; the same rights, named for what it is for) or ``erase``
    (create, and overwrite a stored key: destroy). ``everything``: allowed all (``admin``)."""

    role: str
    append: tuple[str, ...] = ()
    publish: tuple[str, ...] = ()
    subscribe: tuple[str, ...] = ()
    consume: tuple[tuple[str, str], ...] = ()
    follow: tuple[str, ...] = ()
    read: tuple[str, ...] = ()
    inspect: tuple[str, ...] = ()
    manage: bool = False
    serves: bool = False
    keys: str = "read"
    everything: bool = False
    notes: str = field(default="", compare=False)

    @property
    def inbox_prefix(self) -> str:
        return inbox_prefix(self.role)


def inbox_prefix(role: str) -> str:
    """``_INBOX.<role>``: the role's request replies and deliveries arrive under it, and nobody else may subscribe it."""
    return f"_INBOX.{role}"


def proposal_events(*types: str) -> tuple[str, ...]:
    """Append rights on the skill proposals' events of these types (:mod:`hermes_proto.skill_proposals`)."""
    return tuple(f"hermes.evt.skill_proposal.*.{t}" for t in types)


def _dlq(*durables: str) -> tuple[str, ...]:
    return tuple(subj.dlq_subject(d) for d in durables)


def _partitioned(name: str, partitions: int) -> list[str]:
    return [Partition(i, partitions).suffix(name) for i in range(partitions)]


def grants(backends: list[str], partitions: int = 1) -> dict[str, Grant]:
    """Every role's grant for these backends (one edge role each) and this many orchestrator partitions."""
    commands_durables = _partitioned("orchestrator-commands", partitions)
    reactor_durables = _partitioned("orchestrator-reactor", partitions)
    table = [
        Grant(
            "orchestrator",
            append=thread_events(
                "thread_opened",
                "workflow_planned",
                "job_queued",
                "job_cancelled",
                "job_skipped",
                "job_failed",
                "draft_presented",
                "questions_proposed",
                "answers_recorded",
                "thread_completed",
                "thread_failed",
                "thread_rated",
                *AGENT_DECISIONS,
            )
            + (
                "hermes.evt.config.*.setting_changed",
                "hermes.evt.schedule.>",
                "hermes.evt.memory_entry.>",
                "hermes.evt.privacy.>",
                "hermes.cmd.>",
            )
            + proposal_events(
                "skill_proposed", "skill_proposal_approved", "skill_proposal_rejected", "skill_rollback_requested"
            )
            + _dlq(*commands_durables, *reactor_durables, "orchestrator-triggers"),
            subscribe=(
                subj.QUERY_THREAD,
                subj.QUERY_JOB,
                "hermes.query.threads",
                subj.QUERY_HEALTH,
                subj.QUERY_QUEUE,
                subj.QUERY_SESSIONS,
                subj.QUERY_SESSION,
                subj.QUERY_MEMORY,
                subj.QUERY_EXPORT,
                subj.QUERY_CONFIG,
                subj.CONTROL_CONFIG,
                subj.CONTROL_SOUL,
                subj.QUERY_AGENT_RUN,
                subj.QUERY_AGENT_RUNS,
                subj.QUERY_APPROVALS,
                subj.QUERY_AGENT_PROFILES,
                subj.QUERY_SCHEDULES,
                subj.QUERY_SCHEDULE,
                subj.QUERY_MEMORY_ENTRIES,
                subj.QUERY_SKILL_PROPOSALS,
            ),
            publish=(subj.QUERY_TOOLS, subj.QUERY_WORKSPACE),
            consume=tuple((subj.COMMANDS_STREAM, d) for d in commands_durables)
            + tuple((subj.EVENTS_STREAM, d) for d in reactor_durables)
            + ((subj.INBOX_STREAM, "orchestrator-triggers"),),
            follow=(subj.EVENTS_STREAM,),
            read=STREAMS,
            manage="orchestrator" in STREAM_MANAGERS,
            serves=True,
            keys="erase",
            notes="the only writer of a thread's lifecycle events; creates and updates the streams; destroys data keys (forget, retention)",
        ),
        Grant(
            "learner",
            append=("hermes.evt.template.>", "hermes.evt.preference.>", "hermes.evt.pattern.>")
            + thread_events("questions_proposed")
            + commands("request_classification")
            + _dlq("learner-reactor"),
            subscribe=(
                subj.QUERY_TEMPLATES,
                subj.CONTROL_TEMPLATE,
                subj.QUERY_PREFERENCES,
                subj.CONTROL_PREFERENCE,
                subj.QUERY_PATTERNS,
                subj.QUERY_OPTIMIZATIONS,
            ),
            consume=((subj.EVENTS_STREAM, "learner-reactor"),),
            follow=(subj.EVENTS_STREAM,),
            read=(subj.EVENTS_STREAM,),
            serves=True,
            keys="create",
            notes="templates, preferences, patterns and the questions it proposes",
        ),
        Grant(
            "router",
            append=("hermes.evt.backend.>", "hermes.evt.budget.>", subj.EXEC_ALL)
            + thread_events(
                "backend_selected",
                "cost_recorded",
                "execution_abandoned",
                "execution_completed",
                "execution_failed",
                "job_deferred",
            ),
            publish=("hermes.cancel.*", "hermes.probe.*"),
            subscribe=(
                subj.HEARTBEATS_ALL,
                "hermes.evt.thread.*.>",
                subj.QUERY_BACKENDS,
                subj.QUERY_SELECTIONS,
                subj.CONTROL_BACKEND,
                subj.CONTROL_COMPARE,
            ),
            follow=(subj.EVENTS_STREAM,),
            read=(subj.EVENTS_STREAM, subj.EXEC_STREAM),
            serves=True,
            keys="create",
            notes="the only publisher of execution requests",
        ),
        Grant(
            "gateway",
            append=("hermes.cmd.>", subj.EXEC_ALL, subj.DLQ_REPLAYED_ALL, subj.TELEGRAM_INBOX_ALL),
            publish=("hermes.query.*", "hermes.control.*"),
            subscribe=("hermes.tokens.>", subj.PERCEPTION_ALL),
            follow=(subj.EVENTS_STREAM, subj.DLQ_STREAM),
            read=STREAMS,
            serves=True,
            keys="create",
            notes="publishes commands (and replays dead letters), never appends events",
        ),
        Grant(
            "notifier",
            append=thread_events("notification_sent", "notification_failed", "answer_collected")
            + commands(
                "submit_idea",
                "answer_questions",
                "rate_thread",
                "cancel_job",
                "start_agent_run",
                "decide_approval",
                "cancel_agent_run",
                *SCHEDULE_SURFACE_COMMANDS,
            )
            + (subj.TELEGRAM_INBOX_ALL,)
            + _dlq("notifier-events", "notifier-inbox", "notifier-dead-letters"),
            publish=("hermes.query.*", "hermes.control.preference"),
            subscribe=("hermes.tokens.>",),
            consume=(
                (subj.EVENTS_STREAM, "notifier-events"),
                (subj.INBOX_STREAM, "notifier-inbox"),
                (subj.DLQ_STREAM, "notifier-dead-letters"),
            ),
            read=(subj.EVENTS_STREAM, subj.INBOX_STREAM, subj.DLQ_STREAM),
            keys="create",
            notes="Telegram and webhooks; turns inbound messages into public commands",
        ),
    ]
    table.append(
        Grant(
            "tools",
            append=thread_events("tool_call_started", "tool_call_completed", "tool_call_failed")
            + proposal_events(
                "skill_proposal_validated",
                "skill_proposal_applied",
                "skill_proposal_failed",
                "skill_change_rolled_back",
            )
            + _dlq("tools-calls", "tools-skills"),
            publish=(subj.QUERY_MEMORY,),
            subscribe=(subj.QUERY_TOOLS, subj.QUERY_WORKSPACE, subj.CONTROL_MCP, subj.QUERY_SKILLS),
            consume=((subj.EVENTS_STREAM, "tools-calls"), (subj.EVENTS_STREAM, "tools-skills")),
            read=(subj.EVENTS_STREAM,),
            serves=True,
            keys="create",
            notes="the only process that runs tools (sandbox, MCP servers); executes only dispatched calls",
        )
    )
    table.append(
        Grant(
            "notary",
            append=("hermes.evt.log.>", "hermes.evt.identity.>"),
            subscribe=(subj.QUERY_IDENTITY, subj.NOTARY_ROTATE),
            follow=(subj.EVENTS_STREAM,),
            read=STREAMS,
            inspect=STREAMS,
            serves=True,
            keys="export",
            notes="the only holder of the instance key: signed checkpoints, SOUL.md attestations, key handoffs; reads every stream for scheduled backups",
        )
    )
    table += [edge_grant(backend) for backend in backends]
    table += [
        Grant(
            PRODUCER,
            keys="",
            append=commands(*PUBLIC_COMMANDS) + (subj.INBOX_EVENTS_ALL,),
            publish=(subj.PERCEPTION_ALL,),
            notes="external producers: public commands, trigger events and perception requests, nothing else",
        ),
        Grant(ADMIN, everything=True, notes="operators and tests: everything"),
    ]
    return {grant.role: grant for grant in table}


def edge_role(backend: str) -> str:
    return f"edge-{backend}"


def edge_grant(backend: str) -> Grant:
    """An edge of ``backend``: its own execution subject and durable, its outcome events, its heartbeats."""
    durable = edge_role(backend)
    return Grant(
        durable,
        append=thread_events("execution_started", "execution_completed", "execution_failed") + _dlq(durable),
        publish=(subj.heartbeat_subject(backend), "hermes.tokens.*.*"),
        subscribe=(subj.probe_subject(backend), subj.cancel_subject(backend)),
        consume=((subj.EXEC_STREAM, durable),),
        read=(subj.EVENTS_STREAM, subj.EXEC_STREAM),
        serves=True,
        notes=f"pulls only hermes.exec.{backend}; appends only execution outcomes",
    )


def _api(grant: Grant) -> list[str]:
    """The JetStream API subjects (``$JS.API...``, acks, flow control) the grant needs."""
    api: list[str] = ["$JS.API.INFO"] + [
        f"$JS.API.STREAM.INFO.{s}" for s in (*STREAMS, KEYS_STREAM)
    ]  # waiting for them
    for stream in grant.read:
        api += [f"$JS.API.STREAM.MSG.GET.{stream}", f"$JS.API.DIRECT.GET.{stream}", f"$JS.API.DIRECT.GET.{stream}.>"]
    for stream in grant.follow:  # ephemeral ordered consumers: created, deleted on reset, flow-controlled
        api += [
            f"$JS.API.CONSUMER.CREATE.{stream}",
            f"$JS.API.CONSUMER.CREATE.{stream}.>",
            f"$JS.API.CONSUMER.INFO.{stream}.*",
            f"$JS.API.CONSUMER.DELETE.{stream}.*",
            f"$JS.FC.{stream}.>",
        ]
    for stream, durable in grant.consume:
        api += [
            f"$JS.API.CONSUMER.CREATE.{stream}.{durable}",
            f"$JS.API.CONSUMER.CREATE.{stream}.{durable}.>",
            f"$JS.API.CONSUMER.DURABLE.CREATE.{stream}.{durable}",
            f"$JS.API.CONSUMER.INFO.{stream}.{durable}",
            f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}",
            f"$JS.ACK.{stream}.{durable}.>",
        ]
    for stream in grant.inspect:
        api += [f"$JS.API.CONSUMER.LIST.{stream}", f"$JS.API.CONSUMER.NAMES.{stream}"]
    if grant.manage:
        api += [f"$JS.API.STREAM.{op}.{stream}" for stream in STREAMS for op in ("CREATE", "UPDATE")]
        api.append(f"$JS.API.STREAM.CREATE.{KEYS_STREAM}")
    if grant.keys:
        api.append(f"$JS.API.DIRECT.GET.{KEYS_STREAM}.>")
        api.append(f"$JS.API.STREAM.MSG.GET.{KEYS_STREAM}")
    if grant.keys in ("create", "erase"):
        api.append(f"$KV.{KEYS_BUCKET}.>")
    if grant.keys == "erase":
        api.append(f"$JS.API.STREAM.MSG.DELETE.{KEYS_STREAM}")
    return list(dict.fromkeys(api))


def permissions(grant: Grant) -> dict:
    """nats-server ``permissions`` of ``grant`` (a JSON-compatible dict: the server's config format reads JSON)."""
    if grant.everything:
        return {"publish": {"allow": [">"]}, "subscribe": {"allow": [">"]}}
    erase_notices = [KEYS_ERASED] if grant.keys else []  # every key holder hears them, the eraser sends them
    rendered: dict = {
        "publish": {
            "allow": [*grant.append, *grant.publish, *_api(grant), *(erase_notices if grant.keys == "erase" else [])]
        },
        "subscribe": {"allow": [*grant.subscribe, f"{grant.inbox_prefix}.>", *erase_notices]},
    }
    if grant.serves:
        rendered["allow_responses"] = True
    return rendered


def markdown_table(table: dict[str, Grant]) -> str:
    """The grants as a Markdown table (docs/architecture.md)."""
    rows = ["| role | appends to streams | core publish | subscribes | consumes (durables) | reads | notes |"]
    rows.append("|---|---|---|---|---|---|---|")
    for grant in table.values():
        if grant.everything:
            rows.append(f"| {grant.role} | everything | | | | | {grant.notes} |")
            continue
        cells = [
            ", ".join(f"`{s}`" for s in grant.append),
            ", ".join(f"`{s}`" for s in grant.publish),
            ", ".join(f"`{s}`" for s in grant.subscribe),
            ", ".join(f"{s}/`{d}`" for s, d in grant.consume),
            ", ".join(sorted(set(grant.read) | set(grant.follow))),
        ]
        rows.append(f"| {grant.role} | " + " | ".join(cells) + f" | {grant.notes} |")
    return "\n".join(rows)
