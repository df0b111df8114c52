"""hermes-sdk: a typed Python client of the Hermes gateway, synchronous (:class:`Hermes`) and asynchronous
(:class:`AsyncHermes`), with the same methods:

- ideas: :meth:`~Hermes.submit`, :meth:`~Hermes.answer`, :meth:`~Hermes.rate`, :meth:`~Hermes.status`,
  :meth:`~Hermes.threads`, :meth:`~Hermes.cancel`, and their events: :meth:`~Hermes.events` (reconnecting) or
  :meth:`~Hermes.watch` (one connection);
- agent runs: :meth:`~Hermes.run_agent`, :meth:`~Hermes.agent_runs`, :meth:`~Hermes.agent_run`,
  :meth:`~Hermes.cancel_run`, :meth:`~Hermes.profiles`, :meth:`~Hermes.steps` (the run live, as typed steps,
  resumed with ``Last-Event-ID`` after a lost connection, ending with the run) and :meth:`~Hermes.wait`;
- approvals: :meth:`~Hermes.approvals`, :meth:`~Hermes.approve`, :meth:`~Hermes.reject`;
- tools: :meth:`~Hermes.tools`, :meth:`~Hermes.mcp_servers`, :meth:`~Hermes.add_mcp_server`,
  :meth:`~Hermes.remove_mcp_server`;
- anything else: :meth:`~Hermes.request` (returns the envelope's ``data``).

Results are frozen dataclasses (:mod:`hermes_sdk.models`; a run's steps: :mod:`hermes_sdk.steps`), each keeping
the gateway's JSON in ``raw``. A call fails with :class:`HermesError` (``status``, ``code``, ``message``,
``user_action``, ``details``: the gateway's error envelope) or :class:`HermesUnreachable` (``url``, ``error``).
The token is sent as ``Authorization: Bearer <token>``.

Start an agent run, stream its steps, approve what it asks for, print the answer::

    from hermes_sdk import Hermes, steps

    with Hermes("http://127.0.0.1:5000", token="...") as hermes:
        run = hermes.run_agent("Make the tests in tests/ pass", profile="code", project="demo")
        for step in hermes.steps(run.run_id):
            match step:
                case steps.ModelTurnCompleted(text=text) if text:
                    print("model:", text)
                case steps.ToolCallRequested(name=name, arguments=arguments, decision=decision):
                    print(f"-> {name}({arguments}) [{decision}]")
                case steps.ApprovalRequested(approval_id=approval_id, name=name, arguments=arguments):
                    print(f"approving {name}({arguments})")
                    hermes.approve(approval_id, scope="once", comment="go ahead")
                case steps.ToolCallCompleted(name=name, output=output):
                    print(f"<- {name}: {output[:200]}")
                case steps.AgentRunCompleted(answer=answer):
                    print("answer:", answer)
                case steps.AgentRunFailed(reason=reason, message=message):
                    print(f"failed ({reason}): {message}")

The same with :class:`AsyncHermes`::

    import asyncio

    from hermes_sdk import AsyncHermes, steps

    async def main() -> None:
        async with AsyncHermes("http://127.0.0.1:5000", token="...") as hermes:
            run = await hermes.run_agent("Make the tests in tests/ pass", profile="code", project="demo")
            async for step in hermes.steps(run.run_id):
                if isinstance(step, steps.ApprovalRequested):
                    await hermes.approve(step.approval_id)
                elif isinstance(step, steps.AgentRunCompleted):
                    print("answer:", step.answer)
            print((await hermes.agent_run(run.run_id)).status)

    asyncio.run(main())

Or, without following: ``hermes.wait(run.run_id, timeout_s=300).answer``.
"""

from hermes_sdk import steps
from hermes_sdk._api import VERSION as __version__
from hermes_sdk._api import unwrap
from hermes_sdk.aio import AsyncHermes
from hermes_sdk.client import Hermes
from hermes_sdk.errors import HermesError, HermesUnreachable
from hermes_sdk.models import (
    Accepted,
    AgentRun,
    Approval,
    Decided,
    Job,
    McpServers,
    Profile,
    Question,
    RunStarted,
    Submitted,
    Thread,
    Tool,
    ToolRegistry,
)
from hermes_sdk.sse import SseEvent, parse_sse
from hermes_sdk.steps import (
    AgentRunCancelled,
    AgentRunCompleted,
    AgentRunFailed,
    AgentRunStarted,
    ApprovalDenied,
    ApprovalExpired,
    ApprovalGranted,
    ApprovalRequested,
    ModelTurnCompleted,
    Step,
    ThreadCompleted,
    ThreadFailed,
    Token,
    ToolCall,
    ToolCallCompleted,
    ToolCallDispatched,
    ToolCallFailed,
    ToolCallRequested,
    ToolCallStarted,
    parse_step,
)

__all__ = [
    "Accepted",
    "AgentRun",
    "AgentRunCancelled",
    "AgentRunCompleted",
    "AgentRunFailed",
    "AgentRunStarted",
    "Approval",
    "ApprovalDenied",
    "ApprovalExpired",
    "ApprovalGranted",
    "ApprovalRequested",
    "AsyncHermes",
    "Decided",
    "Hermes",
    "HermesError",
    "HermesUnreachable",
    "Job",
    "McpServers",
    "ModelTurnCompleted",
    "Profile",
    "Question",
    "RunStarted",
    "SseEvent",
    "Step",
    "Submitted",
    "Thread",
    "ThreadCompleted",
    "ThreadFailed",
    "Token",
    "Tool",
    "ToolCall",
    "ToolCallCompleted",
    "ToolCallDispatched",
    "ToolCallFailed",
    "ToolCallRequested",
    "ToolCallStarted",
    "ToolRegistry",
    "__version__",
    "parse_sse",
    "parse_step",
    "steps",
    "unwrap",
]
