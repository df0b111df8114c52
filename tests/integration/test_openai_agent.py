"""The model ``hermes-agent`` of the OpenAI-compatible API through the whole system (``hermes up`` with every service,
the tool service's real sandbox, real NATS), the model scripted by a loopback OpenAI-compatible server that returns
tool calls, the client the official ``openai`` SDK, unchanged, pointed at the gateway's ``/v1``.

Covers: ``/v1/models`` lists ``hermes-agent``; a non-streamed completion runs a read and answers with the file's
text; a streamed one shows the tool call, its result and the answer, usage on the last chunk; a shell call streams
the approval id, is approved through ``POST /api/approvals/{id}/approve`` and the stream ends with the answer; earlier
messages reach the task as context; an unknown profile is refused; a run cancelled while waiting ends the stream
with an error event.
"""

from __future__ import annotations

import re

import httpx
import openai
import pytest
from fakes.agent_model import MODEL, AgentModel
from stack import HermesUp

from hermes_gateway.agent_model import CONTEXT_HEADING

NOTES = "# Garden notes\nwater the basil every morning\n"


@pytest.fixture(scope="module")
def model():
    scripts = {
        "A-READ": [[("file_read", {"path": "garden.md"})], "The notes say: {result}"],
        "A-STREAM": [[("file_read", {"path": "garden.md"})], "Streamed: {result}"],
        "A-SHELL": [[("shell", {"command": "echo agent-built > built.txt && cat built.txt"})], "Built: {result}"],
        "A-CTX": ["I read the context."],
        "A-CANCEL": [[("shell", {"command": "touch never.txt"})], "never"],
    }
    server = AgentModel(scripts).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def up(tmp_path_factory, model):
    tmp = tmp_path_factory.mktemp("openai-agent")
    stack = HermesUp(
        tmp,
        HERMES_LOCAL_MODEL="false",
        BACKEND_TALOS_TYPE="openai",
        BACKEND_TALOS_HOST="127.0.0.1",
        BACKEND_TALOS_PORT=str(model.port),
        BACKEND_TALOS_MODELS=MODEL,
        HERMES_APPROVAL_TIMEOUT_SECONDS="120",
    ).start()
    with httpx.Client(timeout=15) as client:
        stack.wait_healthy(client)
    workspace = stack.home / "workspace" / "default"
    workspace.mkdir(parents=True, exist_ok=True)
    (workspace / "garden.md").write_text(NOTES)
    yield stack
    stack.stop()


def api(up: HermesUp) -> openai.OpenAI:
    return openai.OpenAI(base_url=up.base_url + "/v1", api_key="auth-is-off", max_retries=0, timeout=60)


def test_models_list_hermes_agent(up):
    ids = [m.id for m in api(up).models.list().data]
    assert ids[:2] == ["hermes", "hermes-agent"]


def test_a_completion_runs_the_agent_and_answers_with_the_file(up, model):
    raw = api(up).chat.completions.with_raw_response.create(
        model="hermes-agent", messages=[{"role": "user", "content": "A-READ summarise my garden notes file"}]
    )
    done = raw.parse()
    answer = done.choices[0].message.content
    assert done.object == "chat.completion" and done.model == "hermes-agent"
    assert answer.startswith("The notes say:") and "water the basil every morning" in answer
    assert done.choices[0].finish_reason == "stop" and done.usage.total_tokens == 2 * 27  # two turns
    run_id = raw.headers["x-hermes-run-id"]
    assert raw.headers["x-hermes-thread-id"] == run_id
    run = httpx.get(f"{up.base_url}/api/agent/runs/{run_id}").json()["data"]
    assert run["status"] == "completed" and run["profile"] == "fileops"  # picked from the task
    assert len(model.requests_for("A-READ")) == 2


def test_a_streamed_run_shows_each_step_then_the_answer_and_the_usage(up):
    chunks = list(
        api(up).chat.completions.create(
            model="hermes-agent",
            stream=True,
            stream_options={"include_usage": True},
            metadata={"profile": "fileops"},
            messages=[{"role": "user", "content": "A-STREAM what do my notes say?"}],
        )
    )
    pieces = [c.choices[0].delta.content or "" for c in chunks if c.choices]
    text = "".join(pieces)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert '→ file_read(path="garden.md")\n' in pieces  # one chunk per step
    assert "← " in text and "Garden notes" in text.split("← ", 1)[1].splitlines()[0]
    assert "water the basil every morning" in text.split("\nStreamed: ", 1)[1]  # the answer, after a blank line
    assert text.index("→ file_read") < text.index("← ") < text.index("Streamed: ")
    assert "profile fileops" in text.splitlines()[0]
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == 2 * 27
    assert all(c.usage is None for c in chunks[:-1]) and len({c.created for c in chunks}) == 1


def test_a_streamed_run_names_the_approval_it_waits_for_and_goes_on_once_approved(up):
    workspace = up.home / "workspace" / "default"
    stream = (
        api(up)
        .with_options(timeout=90)
        .chat.completions.create(
            model="hermes-agent",
            stream=True,
            extra_headers={"X-Hermes-Agent-Profile": "code"},
            messages=[{"role": "user", "content": "A-SHELL build it"}],
        )
    )
    text, approved = "", None
    for c in stream:
        text += (c.choices[0].delta.content or "") if c.choices else ""
        found = re.search(r"approval (\S+) is waiting", text)
        if found and approved is None:
            approved = found.group(1)
            assert "hermes approvals approve " + approved in text and "Approvals page" in text
            assert not (workspace / "built.txt").exists()  # nothing ran before the approval
            r = httpx.post(f"{up.base_url}/api/approvals/{approved}/approve", json={"scope": "once"})
            assert r.status_code == 202, r.text
    assert approved is not None, text
    assert '→ shell(command="echo agent-built' in text and "[needs approval]" in text
    assert f"✓ approval {approved} granted" in text and "← agent-built" in text
    assert "agent-built" in text.split("\nBuilt: ", 1)[1]
    assert (workspace / "built.txt").read_text() == "agent-built\n"


def test_earlier_messages_reach_the_task_as_context(up, model):
    done = api(up).chat.completions.create(
        model="hermes-agent",
        metadata={"profile": "fileops"},
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Which plants need sun?"},
            {"role": "assistant", "content": "Tomatoes and basil."},
            {"role": "user", "content": "A-CTX and which need shade?"},
        ],
    )
    assert done.choices[0].message.content == "I read the context."
    task = next(m["content"] for m in model.requests_for("A-CTX")[0]["messages"] if m["role"] == "user")
    assert task.startswith("A-CTX and which need shade?\n\n" + CONTEXT_HEADING)
    assert task.endswith("[system] Be brief.\n\n[user] Which plants need sun?\n\n[assistant] Tomatoes and basil.")


def test_an_unknown_profile_is_refused(up):
    with pytest.raises(openai.BadRequestError) as refused:
        api(up).chat.completions.create(
            model="hermes-agent", metadata={"profile": "nosuch"}, messages=[{"role": "user", "content": "hi"}]
        )
    assert refused.value.code == "unknown_profile"


def test_a_run_cancelled_while_waiting_ends_the_stream_with_the_reason(up):
    stream = api(up).chat.completions.create(
        model="hermes-agent",
        stream=True,
        metadata={"profile": "code"},
        messages=[{"role": "user", "content": "A-CANCEL wait for me"}],
    )
    text, cancelled = "", False
    with pytest.raises(openai.APIError) as ended:
        for c in stream:
            text += (c.choices[0].delta.content or "") if c.choices else ""
            if not cancelled and "is waiting for" in text:
                run_id = re.search(r"Agent run (\S+):", text).group(1)
                r = httpx.post(f"{up.base_url}/api/agent/runs/{run_id}/cancel")
                assert r.status_code == 202, r.text
                cancelled = True
    assert cancelled and "cancelled" in str(ended.value.message)
    assert not (up.home / "workspace" / "default" / "never.txt").exists()
