"""A scripted OpenAI-compatible model server for agent runs over a real socket: each task (the run's user message)
names a script, a list of turns; turn N of a request is the number of assistant messages it carries. A turn is
either tool calls (``[(name, arguments), ...]``) or a final text, which may embed the last tool result with
``{result}``. Requests are recorded (``bodies``) so a test can see what the model was sent."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MODEL = "agent-model"
Turn = list[tuple[str, dict[str, Any]]] | str


@dataclass
class AgentModel:
    """``scripts``: a marker in the task → its turns (the last one repeats)."""

    scripts: dict[str, list[Turn]]
    bodies: list[dict[str, Any]] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.server_address[1]

    def start(self) -> AgentModel:
        model = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_: Any) -> None:
                pass

            def _json(self, status: int, payload: Any) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802
                self._json(200, {"object": "list", "data": [{"id": MODEL, "object": "model"}]})

            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
                model.bodies.append(body)
                message = model.reply(body)
                if body.get("stream"):
                    self._stream(message.get("content") or "")
                    return
                self._json(
                    200,
                    {
                        "id": f"c{time.time_ns()}",
                        "object": "chat.completion",
                        "model": MODEL,
                        "choices": [
                            {
                                "index": 0,
                                "message": message,
                                "finish_reason": "tool_calls" if message.get("tool_calls") else "stop",
                            }
                        ],
                        "usage": {"prompt_tokens": 20, "completion_tokens": 7, "total_tokens": 27},
                    },
                )

            def _stream(self, text: str) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                chunk = {"id": "s", "object": "chat.completion.chunk", "model": MODEL}
                for piece in (text, ""):
                    delta = {"content": piece} if piece else {}
                    finish = None if piece else "stop"
                    payload = {**chunk, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
                    self.wfile.write(f"data: {json.dumps(payload)}\n\n".encode())
                usage = {**chunk, "choices": [], "usage": {"prompt_tokens": 20, "completion_tokens": 7}}
                self.wfile.write(f"data: {json.dumps(usage)}\n\ndata: [DONE]\n\n".encode())

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def reply(self, body: dict[str, Any]) -> dict[str, Any]:
        messages = body.get("messages") or []
        task = next((m.get("content") or "" for m in messages if m.get("role") == "user"), "")
        turns = next((t for marker, t in self.scripts.items() if marker in task), ["no script for this task"])
        index = sum(1 for m in messages if m.get("role") == "assistant")
        turn = turns[min(index, len(turns) - 1)]
        if isinstance(turn, str):
            results = [m.get("content") or "" for m in messages if m.get("role") == "tool"]
            return {"role": "assistant", "content": turn.replace("{result}", results[-1] if results else "")}
        calls = [
            {"id": f"call_{index}_{i}", "type": "function", "function": {"name": n, "arguments": json.dumps(a)}}
            for i, (n, a) in enumerate(turn)
        ]
        return {"role": "assistant", "content": "", "tool_calls": calls}

    def requests_for(self, marker: str) -> list[dict[str, Any]]:
        """The chat requests of the task containing ``marker``."""
        return [
            b
            for b in self.bodies
            if any(m.get("role") == "user" and marker in (m.get("content") or "") for m in b.get("messages") or [])
        ]


def wait_for(predicate: Callable[[], Any], timeout_s: float = 30.0, interval_s: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    raise AssertionError(f"not true within {timeout_s}s")
