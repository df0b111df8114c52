"""An agent run on the embedded model, with nothing configured: ``hermes up`` starts NATS, the real SmolLM2-135M
server (the GGUF's own chat template), every service and the tool service's real sandbox; the edge offers the tools by
constrained decoding (``BACKEND_TALOS_TOOL_CALLING=constrained``, set by ``hermes up``).

``POST /api/agent/runs`` with the ``fileops`` profile (``first_tool_choice = "required"``: turn 1 must call a tool)
on a workspace holding three files. The 135M model is weak: the run may answer or stop at ``max_iterations``. What is
checked: turn 1 asked for a tool, at least one call of a sandboxed file tool was executed by the tool service
(``tool_call_completed``), and the run ended. A call the permission rules send to a person (a path outside the
workspace, say) is rejected, as a careful person would, and the model is told. The run's steps are printed
(``pytest -s``): a real recorded run.

Slow (up to 8 model turns of ~0.5-3 s on 2 cores, plus the stack's start): marked ``e2e``.
"""

from __future__ import annotations

import json
import time
from datetime import datetime

import httpx
import pytest
from stack import HermesUp

pytestmark = pytest.mark.e2e

TASK = "List the files in my workspace and tell me their names."
FILES = {
    "notes.md": "# Notes\nBuy tomatoes and basil.\nWater the balcony plants on Sunday.\n",
    "garden-plan.txt": "Balcony garden: tomatoes (south rail), basil (window box), mint (own pot).\n",
    "todo.txt": "- repot the mint\n- order seeds\n",
}
SANDBOXED = {"file_list", "file_read", "file_search"}
ENDED = ("completed", "failed", "cancelled")


def fresh_env(up: HermesUp) -> None:
    """Nothing configured: no ``HERMES_*`` or ``BACKEND_*`` variable but the home and ports ``HermesUp`` sets."""
    keep = {"HERMES_HOME", "HERMES_WEB_PORT", "HERMES_NATS_PORT"}
    for name in [k for k in up.env if k.startswith(("HERMES_", "BACKEND_")) and k not in keep]:
        del up.env[name]


def at(step: dict, start: datetime) -> float:
    return (datetime.fromisoformat(step["occurred_at"]) - start).total_seconds()


def recorded(view: dict) -> str:
    """The run's steps, one line each, seconds from the run's start."""
    start = datetime.fromisoformat(view["steps"][0]["occurred_at"])
    lines = [f"task: {view['task']!r} (profile {view['profile']})"]
    for step in view["steps"]:
        kind, t = step["type"], at(step, start)
        if kind == "model_turn_completed":
            calls = ", ".join(f"{c['name']}({json.dumps(c['arguments'])})" for c in step["tool_calls"]) or "-"
            lines.append(
                f"{t:7.2f}s turn {step['iteration']}: tool calls {calls}; text {step['text']!r} "
                f"({step['prompt_tokens']} prompt + {step['completion_tokens']} completion tokens)"
            )
        elif kind == "tool_call_requested":
            lines.append(f"{t:7.2f}s   requested {step['name']} {json.dumps(step['arguments'])}: {step['decision']}")
        elif kind == "tool_call_completed":
            output = step["output"] if len(step["output"]) < 400 else step["output"][:400] + "..."
            lines.append(
                f"{t:7.2f}s   completed {step['name']} in {step['duration_ms']:.0f} ms"
                f"{' (error)' if step['is_error'] else ''}: {output!r}"
            )
        elif kind == "tool_call_failed":
            lines.append(f"{t:7.2f}s   failed {step['name']}: {step['error_code']}: {step['message']!r}")
        elif kind == "approval_requested":
            lines.append(f"{t:7.2f}s   approval asked for {step['name']}: {step['reason']!r}")
        elif kind == "approval_denied":
            lines.append(f"{t:7.2f}s   approval denied: {step['comment']!r}")
        elif kind == "agent_run_completed":
            lines.append(f"{t:7.2f}s answer: {step['answer']!r}")
        elif kind == "agent_run_failed":
            lines.append(f"{t:7.2f}s run failed: {step['reason']}: {step['message']!r}")
        elif kind not in ("tool_call_dispatched", "tool_call_started"):
            lines.append(f"{t:7.2f}s {kind}")
    lines.append(
        f"status {view['status']} ({view['reason']}), {view['iterations']} turns, {view['tool_calls']} tool calls, "
        f"{view['tokens']} tokens"
    )
    return "\n".join(lines)


def reject_pending(client: httpx.Client, run_id: str) -> list[dict]:
    r = client.get("/api/approvals", params={"status": "pending", "run_id": run_id})
    pending = r.json()["data"]["approvals"] if r.status_code == 200 else []
    for approval in pending:
        answer = client.post(
            f"/api/approvals/{approval['approval_id']}/reject", json={"comment": "Not that; stay in the workspace."}
        )
        assert answer.status_code in (202, 409), answer.text
    return pending


@pytest.mark.timeout(900)  # the stack's start, then up to 8 turns; the run's own limit is 300 s
def test_an_agent_run_on_the_local_model_calls_a_sandboxed_tool(tmp_path) -> None:
    up = HermesUp(tmp_path)
    fresh_env(up)
    workspace = up.home / "workspace" / "default"
    workspace.mkdir(parents=True)
    for name, text in FILES.items():
        (workspace / name).write_text(text)
    started = time.monotonic()
    up.start()
    try:
        with httpx.Client(base_url=up.base_url, timeout=15) as client:
            up.wait_healthy(client)
            healthy_s = time.monotonic() - started
            r = client.post("/api/agent/runs", json={"task": TASK, "profile": "fileops"})
            assert r.status_code == 202, r.text
            run_id = r.json()["data"]["run_id"]
            posted = time.monotonic()
            view: dict = {}
            deadline = posted + 420  # the profile's timeout_s is 300
            while time.monotonic() < deadline:
                got = client.get(f"/api/agent/runs/{run_id}")
                view = got.json()["data"] if got.status_code == 200 else {}
                if view.get("status") in ENDED:
                    break
                if view.get("status") == "awaiting_approval":
                    for approval in reject_pending(client, run_id):
                        print(
                            f"\nrejected {approval['tool']} {json.dumps(approval['arguments'])}: {approval['reason']}"
                        )
                time.sleep(1)
            run_s = time.monotonic() - posted
        assert view.get("status") in ENDED, (view, up.log_tail())
        print(f"\nhermes up healthy after {healthy_s:.1f} s; the run took {run_s:.1f} s\n{recorded(view)}")
        (tmp_path / "run.json").write_text(json.dumps(view, indent=2))

        kinds = [s["type"] for s in view["steps"]]
        first_turn = next(s for s in view["steps"] if s["type"] == "model_turn_completed")
        assert first_turn["tool_calls"], "fileops requires a tool call on turn 1"
        assert all(c["name"] in SANDBOXED and "_raw" not in c["arguments"] for c in first_turn["tool_calls"])
        executed = [s for s in view["steps"] if s["type"] == "tool_call_completed" and s["name"] in SANDBOXED]
        assert executed, kinds
        dispatched = {s["call_id"] for s in view["steps"] if s["type"] == "tool_call_dispatched"}
        assert {s["call_id"] for s in executed} <= dispatched  # run by the tool service after the gate
        assert "agent_run_completed" in kinds or "agent_run_failed" in kinds
    finally:
        up.stop()
