"""Self-improvement, measured (run on demand, not a test): a simulated user repeats a family of similar tasks; the
self-improvement loop proposes a skill from those runs; the bench approves it (as a person would); the same family
of tasks runs again. Reports per task and in total: model tokens (prompt + completion), model turns and wall time,
before and after.

    uv run --frozen --group bench python bench/autonomy.py [--tasks 5] [--ms-per-token 23]

The model is simulated (an OpenAI-compatible server on loopback): it behaves like a model that knows the job. With no
fitting skill it writes the same Python program with the ``python`` tool, then answers from its output; with a
``skill__auto-…`` tool offered it calls that instead. Tokens are estimated from the text it is sent and writes
(4 characters per token, ``hermes_proto.costs.estimate_tokens``), and it takes ``--ms-per-token`` per completion
token (23 ms: the embedded SmolLM2's 44 tokens/s on this machine, ../shared/design/facts.md), so the time saved is
what generating the program costs. Everything else is real: ``hermes up``, the router, the edge, the sandbox, the
validation, the git commit. Writes ``bench/results/autonomy.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from stack import HermesUp  # noqa: E402

from hermes_proto.costs import estimate_tokens  # noqa: E402

MODEL = "simulated-model"
PROGRAM = """import csv
import os
from collections import defaultdict

PATH = "sales.csv"
if not os.path.exists(PATH):
    print("no sales.csv in the workspace")
    raise SystemExit(0)
totals = defaultdict(float)
counts = defaultdict(int)
with open(PATH, newline="") as handle:
    for row in csv.DictReader(handle):
        region = row.get("region", "?").strip() or "?"
        try:
            amount = float(row.get("amount", 0) or 0)
        except ValueError:
            continue
        totals[region] += amount
        counts[region] += 1
grand = sum(totals.values())
for region in sorted(totals, key=totals.get, reverse=True):
    share = 100 * totals[region] / grand if grand else 0.0
    print(f"{region}: {totals[region]:.2f} in {counts[region]} sales ({share:.1f}%)")
print(f"total: {grand:.2f} in {sum(counts.values())} sales")
"""
TASKS = [
    "Summarise the sales in sales.csv by region for the weekly report.",
    "Which region sold the most? Look at sales.csv and give me the totals.",
    "Give me the sales totals per region from sales.csv, with shares.",
    "I need the regional sales breakdown from sales.csv for the meeting.",
    "Report on sales.csv: totals by region and the overall total.",
    "How did each region do in sales.csv? Totals please.",
    "Break sales.csv down by region for the newsletter.",
    "Sales per region from sales.csv, largest first.",
]
SALES = "region,amount\nnorth,120.5\nsouth,80\nnorth,42\neast,300\nwest,12.25\nsouth,66\n"


class SimulatedModel:
    """The loopback model; ``log`` records per request (task, prompt and completion tokens)."""

    def __init__(self, ms_per_token: float) -> None:
        self.ms_per_token = ms_per_token
        self.log: list[dict] = []
        self.lock = threading.Lock()

    def reply(self, body: dict) -> tuple[dict, int, int]:
        messages = body.get("messages") or []
        tools = [t["function"]["name"] for t in body.get("tools") or []]
        prompt = estimate_tokens(json.dumps(messages) + json.dumps(body.get("tools") or []))
        results = [m.get("content") or "" for m in messages if m.get("role") == "tool"]
        if results:
            text = "Here are the totals by region:\n" + results[-1][-600:]
            message = {"role": "assistant", "content": text}
            completion = estimate_tokens(text)
        else:
            skill = next((t for t in tools if t.startswith("skill__auto-")), None)
            name, arguments = (skill, {}) if skill else ("python", {"code": PROGRAM})
            call = {"id": "call_1", "type": "function", "function": {"name": name, "arguments": json.dumps(arguments)}}
            message = {"role": "assistant", "content": "", "tool_calls": [call]}
            completion = estimate_tokens(name + json.dumps(arguments))
        task = next((m.get("content") or "" for m in messages if m.get("role") == "user"), "")
        with self.lock:
            self.log.append({"task": task, "prompt": prompt, "completion": completion})
        time.sleep(completion * self.ms_per_token / 1000)
        return message, prompt, completion

    def start(self) -> int:
        model = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_) -> None:
                pass

            def _send(self, payload: dict) -> None:
                data = json.dumps(payload).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802
                self._send({"object": "list", "data": [{"id": MODEL, "object": "model"}]})

            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
                message, prompt, completion = model.reply(body)
                usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
                if not body.get("stream"):
                    finish = "tool_calls" if message.get("tool_calls") else "stop"
                    choice = {"index": 0, "message": message, "finish_reason": finish}
                    self._send(
                        {"id": "c", "object": "chat.completion", "model": MODEL, "choices": [choice], "usage": usage}
                    )
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                base = {"id": "s", "object": "chat.completion.chunk", "model": MODEL}
                delta = {"content": message.get("content") or ""}
                for payload in (
                    {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]},
                    {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
                    {**base, "choices": [], "usage": usage},
                ):
                    self.wfile.write(f"data: {json.dumps(payload)}\n\n".encode())
                self.wfile.write(b"data: [DONE]\n\n")

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server.server_address[1]


def run_task(client: httpx.Client, task: str) -> dict:
    started = time.monotonic()
    r = client.post("/api/agent/runs", json={"task": task, "profile": "code"})
    r.raise_for_status()
    run_id = r.json()["data"]["run_id"]
    while True:
        view = client.get(f"/api/agent/runs/{run_id}").json().get("data") or {}
        if view.get("status") in ("completed", "failed", "cancelled"):
            break
        if time.monotonic() - started > 120:
            raise TimeoutError(f"run {run_id} did not end")
        time.sleep(0.1)
    return {
        "task": task,
        "status": view["status"],
        "seconds": round(time.monotonic() - started, 2),
        "turns": view["iterations"],
        "tool_calls": view["tool_calls"],
        "tokens": view["tokens"],
        "tools_used": [s.get("name") for s in view["steps"] if s.get("type") == "tool_call_requested"],
    }


def wait(predicate, timeout_s: float = 120):  # noqa: ANN001, ANN202
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise TimeoutError("not within the time")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=5, help="tasks per phase (at least 3 for the analysis)")
    parser.add_argument("--ms-per-token", type=float, default=23.0)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    model = SimulatedModel(args.ms_per_token)
    port = model.start()
    tmp = Path(tempfile.mkdtemp(prefix="hermes-autonomy-"))
    stack = HermesUp(
        tmp,
        HERMES_LOCAL_MODEL="false",
        BACKEND_TALOS_TYPE="openai",
        BACKEND_TALOS_HOST="127.0.0.1",
        BACKEND_TALOS_PORT=str(port),
        BACKEND_TALOS_MODELS=MODEL,
    ).start()
    try:
        with httpx.Client(base_url=stack.base_url, timeout=30) as client:
            stack.wait_healthy(client)
            (stack.home / "permissions.toml").write_text('allow = ["python", "mcp(skill:*)"]\n')
            workspace = stack.home / "workspace" / "default"
            workspace.mkdir(parents=True, exist_ok=True)
            (workspace / "sales.csv").write_text(SALES)
            tasks = [TASKS[i % len(TASKS)] for i in range(args.tasks)]
            before = [run_task(client, t) for t in tasks]
            client.post("/api/skills/improve").raise_for_status()
            listed = wait(
                lambda: [
                    p
                    for p in client.get("/api/skills/proposals").json()["data"]["proposals"]
                    if p["source"] == "analysis" and p["status"] != "validating"
                ]
            )
            proposal = listed[0]
            if proposal["status"] != "awaiting_approval":
                raise SystemExit(f"the proposal did not pass validation: {proposal}")
            client.post(f"/api/skills/proposals/{proposal['proposal_id']}/approve", json={"comment": "bench"})
            wait(
                lambda: (
                    client.get(f"/api/skills/proposals/{proposal['proposal_id']}").json()["data"]["status"] == "applied"
                )
            )
            tool = f"skill__{proposal['skill']}"
            wait(lambda: tool in {t["name"] for t in client.get("/api/tools").json()["data"]["tools"]}, 30)
            after = [run_task(client, t) for t in tasks]
            library = client.get("/api/skills").json()["data"]
    finally:
        stack.stop(check_bus=False)
    report(before, after, proposal, library, args)


def report(before: list[dict], after: list[dict], proposal: dict, library: dict, args) -> None:  # noqa: ANN001
    print(f"{'task':<70} {'tokens':>15} {'turns':>7} {'seconds':>13}  tools after")
    for b, a in zip(before, after, strict=True):
        print(
            f"{b['task'][:70]:<70} {b['tokens']:>6} → {a['tokens']:<6} {b['turns']:>2} → {a['turns']:<2} "
            f"{b['seconds']:>5} → {a['seconds']:<5}  {','.join(a['tools_used'])}"
        )
    total = {
        phase: {
            "tokens": sum(r["tokens"] for r in rows),
            "seconds": round(sum(r["seconds"] for r in rows), 2),
            "median_seconds": statistics.median(r["seconds"] for r in rows),
            "completed": sum(r["status"] == "completed" for r in rows),
        }
        for phase, rows in (("before", before), ("after", after))
    }
    print(json.dumps(total, indent=2))
    args.out.mkdir(parents=True, exist_ok=True)
    result = {
        "ms_per_token": args.ms_per_token,
        "proposal": {k: proposal[k] for k in ("proposal_id", "skill", "rationale", "status")},
        "skills": library.get("skills"),
        "before": before,
        "after": after,
        "total": total,
    }
    (args.out / "autonomy.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
