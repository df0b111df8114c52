"""The web UI's Markdown, agent page and approvals page in a real browser (Debian's Chromium, driven by Playwright).

The page is what is tested, not the gateway: a stand-in HTTP server on loopback (aiohttp, in this file) serves the
gateway's static directory with the gateway's Content-Security-Policy and answers the API routes the page calls with
canned JSON in the gateway's envelope, and the run's and a thread's events as Server-Sent Events (``event: <type>``,
``id: <sequence>``, the event JSON as data, as ``GET /api/threads/<id>/events`` sends them); it records every
request the page makes. Checked: a draft's Markdown is rendered and none of its HTML runs (escaped, sanitised,
links made safe); an agent run started from the page shows its turns and tool calls (once, though the snapshot and
the stream both hold them), a tool's output as Markdown, an approval whose button posts the decision, then the
rest of the run live; the approvals page lists what waits (polled), rejects with a comment and shows a closed one's
error. Nothing may be blocked by the CSP, and no script error may happen.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web

from hermes_gateway.headers import CSP
from hermes_gateway.routes.ui import STATIC_DIR

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TIMEOUT_MS = 10_000

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(),
    reason=f"Debian's Chromium is not installed at {CHROMIUM} (.ci/run installs it: apt-get install chromium)",
)

DRAFT1 = (
    '# Title\n**bold**<script>window.pwned=1</script><img src=x onerror="window.pwned=2">\n\n'
    "[safe](https://example.com/) and [bad](javascript:window.pwned=3) and "
    '<a href="javascript:window.pwned=4" onclick="window.pwned=5">raw</a>\n\n'
    "| plant | pots |\n|---|---|\n| basil | 2 |\n\n```\ncode <b>kept as text</b>\n```\n"
)
DRAFT2 = "# Title\n**bold** and *more* words\n\n- one\n- two\n"
TASK = "Find why the tests fail"
OUTPUT = "**important** line\n<script>window.pwned=6</script>\n\n- first\n- second"
ANSWER = "## Fixed\nThe tests failed because of `a typo`."


async def shoot(page, name: str) -> None:
    """A screenshot to ``$HERMES_SCREENSHOT_DIR/<name>.png`` when that is set (to look at the page), else nothing."""
    if directory := os.environ.get("HERMES_SCREENSHOT_DIR"):
        Path(directory).mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(Path(directory) / f"{name}.png"), full_page=True)


def ok(data: Any, status: int = 200) -> web.Response:
    return web.json_response({"status": "success", "data": data, "meta": {}}, status=status)


def error(status: int, code: str, message: str) -> web.Response:
    return web.json_response(
        {"status": "error", "error": {"code": code, "message": message}, "meta": {}}, status=status
    )


def canned(respond):
    """An aiohttp handler (it wants a coroutine function) answering ``respond(request)``."""

    async def handler(request: web.Request) -> web.Response:
        return respond(request)

    return handler


def approval(approval_id: str, run_id: str, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
    return {
        "approval_id": approval_id,
        "run_id": run_id,
        "call_id": f"call-{approval_id}",
        "tool": tool,
        "arguments": arguments,
        "reason": f"{tool} needs a person",
        "status": "pending",
        "requested_at": "2026-01-01T10:00:00Z",
        "expires_at": "2026-01-01T10:05:00Z",
        "decided_by": None,
        "comment": "",
        "scope": None,
    }


def thread_events() -> list[tuple[str, dict[str, Any]]]:
    return [
        ("thread_opened", {"idea": "A balcony garden", "user_id": "local", "assumptions": []}),
        ("job_queued", {"job_id": "j1", "kind": "draft1"}),
        ("draft_presented", {"job_id": "j1", "draft_number": 1, "text": DRAFT1, "backend": "b", "model": "m"}),
        ("job_queued", {"job_id": "j2", "kind": "draft2"}),
        ("draft_presented", {"job_id": "j2", "draft_number": 2, "text": DRAFT2, "backend": "b", "model": "m"}),
        ("thread_completed", {"reason": "refined"}),
    ]


def run_events() -> list[tuple[str, dict[str, Any]]]:
    """Run ``run-1`` up to its approval; :func:`run_rest` after it."""
    call_1 = {"call_id": "c1", "name": "read_file", "arguments": {"path": "tests/test_app.py"}}
    call_2 = {"call_id": "c2", "name": "shell", "arguments": {"command": "pytest -x"}}
    return [
        (
            "agent_run_started",
            {
                "task": TASK,
                "profile": "coder",
                "profile_reason": "named by you",
                "project": "demo",
                "tools": ["read_file", "shell"],
                "max_iterations": 8,
            },
        ),
        ("job_queued", {"job_id": "t1", "kind": "agent_turn"}),
        (
            "model_turn_completed",
            {"job_id": "t1", "iteration": 1, "text": "Let me *look*.", "tool_calls": [call_1, call_2]},
        ),
        ("tool_call_requested", {**call_1, "decision": "allow", "rule": "read_only", "reason": "reads only"}),
        ("tool_call_dispatched", {"call_id": "c1", "name": "read_file"}),
        ("tool_call_started", {"call_id": "c1", "name": "read_file"}),
        (
            "tool_call_completed",
            {
                "call_id": "c1",
                "name": "read_file",
                "output": OUTPUT,
                "is_error": False,
                "truncated": False,
                "full_output_path": None,
                "duration_ms": 12.0,
                "exit_code": None,
            },
        ),
        ("tool_call_requested", {**call_2, "decision": "ask", "rule": "shell", "reason": "runs a command"}),
        (
            "approval_requested",
            {**call_2, "approval_id": "ap-1", "reason": "shell runs commands", "expires_at": "2026-01-01T10:05:00Z"},
        ),
    ]


def run_rest() -> list[tuple[str, dict[str, Any]]]:
    return [
        ("approval_granted", {"approval_id": "ap-1", "call_id": "c2", "by": "local", "scope": "once", "comment": "go"}),
        ("tool_call_dispatched", {"call_id": "c2", "name": "shell"}),
        ("tool_call_started", {"call_id": "c2", "name": "shell"}),
        (
            "tool_call_completed",
            {"call_id": "c2", "name": "shell", "output": "1 passed", "duration_ms": 900.0, "exit_code": 0},
        ),
        ("job_queued", {"job_id": "t2", "kind": "agent_turn"}),
        ("model_turn_completed", {"job_id": "t2", "iteration": 2, "text": ANSWER, "tool_calls": []}),
        ("agent_run_completed", {"answer": ANSWER, "iterations": 2, "tool_calls": 2}),
        ("thread_completed", {"reason": "answered"}),
    ]


class StandIn:
    """The API routes the page calls, canned; ``requests``: every ``(method, path with query, JSON body)``."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, Any]] = []
        self.pending = [
            approval("ap-1", "run-1", "shell", {"command": "pytest -x"}),
            approval("ap-2", "run-0", "shell", {"command": "rm -rf build", "note": "<b>not bold</b>"}),
            approval("ap-3", "run-0", "write_file", {"path": "README.md"}),  # decided elsewhere: 409
        ]
        self.runs: list[dict[str, Any]] = [
            {"run_id": "run-0", "task": "An older task", "profile": "researcher", "status": "completed"}
        ]
        self.live: asyncio.Queue[tuple[str, dict[str, Any]] | None] = asyncio.Queue()
        self.closing = False
        app = web.Application(middlewares=[self.record])
        app.router.add_get("/", self.index)
        app.router.add_get("/static/{path:.+}", self.static)
        app.router.add_get("/api/auth/me", canned(lambda r: error(404, "not_found", "auth is off")))
        app.router.add_get("/api/system/health", canned(lambda r: ok({"status": "ok"})))
        app.router.add_get("/api/threads", canned(lambda r: ok({"threads": []})))
        app.router.add_get("/api/threads/{id}/status", canned(lambda r: ok({"jobs": []})))
        app.router.add_get("/api/threads/{id}/events", self.events)
        app.router.add_get("/api/agent/profiles", self.profiles)
        app.router.add_get("/api/agent/runs", canned(lambda r: ok({"runs": self.runs})))
        app.router.add_post("/api/agent/runs", self.start_run)
        app.router.add_get("/api/agent/runs/{id}", self.snapshot)
        app.router.add_post("/api/agent/runs/{id}/cancel", canned(lambda r: ok({"run_id": r.match_info["id"]}, 202)))
        app.router.add_get("/api/approvals", canned(lambda r: ok({"approvals": self.pending})))
        app.router.add_post("/api/approvals/{id}/{decision:approve|reject}", self.decide)
        self.app = app

    @web.middleware
    async def record(self, request: web.Request, handler) -> web.StreamResponse:
        body = await request.json() if request.can_read_body else None
        self.requests.append((request.method, request.path_qs, body))
        response = await handler(request)
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response

    async def __aenter__(self) -> StandIn:
        self.runner = web.AppRunner(self.app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.closing = True
        await self.runner.cleanup()

    def posted(self, path: str) -> list[Any]:
        return [body for method, p, body in self.requests if method == "POST" and p == path]

    async def index(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC_DIR / "index.html")

    async def static(self, request: web.Request) -> web.StreamResponse:
        path = (STATIC_DIR / request.match_info["path"]).resolve()
        if not path.is_relative_to(STATIC_DIR) or not path.is_file():
            return error(404, "not_found", "no such file")
        return web.FileResponse(path)

    async def profiles(self, request: web.Request) -> web.Response:
        return ok(
            {
                "profiles": [
                    {"name": "coder", "description": "Code", "tools": ["read_file", "shell"], "max_iterations": 8},
                    {"name": "researcher", "description": "Web", "tools": ["web_fetch"], "max_iterations": 6},
                ]
            }
        )

    async def start_run(self, request: web.Request) -> web.Response:
        self.runs.insert(0, {"run_id": "run-1", "task": TASK, "profile": "coder", "status": "running"})
        return ok(
            {
                "run_id": "run-1",
                "profile": "coder",
                "profile_reason": "named by you",
                "events_url": "/api/threads/run-1/events",
                "url": "/api/agent/runs/run-1",
            },
            202,
        )

    async def snapshot(self, request: web.Request) -> web.Response:
        if request.match_info["id"] != "run-1":
            return error(404, "not_found", "no such run")
        steps = [{"type": kind, **data} for kind, data in run_events()[:4]]  # the stream repeats these
        return ok(
            {
                "run_id": "run-1",
                "task": TASK,
                "profile": "coder",
                "profile_reason": "named by you",
                "project": "demo",
                "status": "running",
                "answer": None,
                "reason": None,
                "message": None,
                "iterations": 1,
                "steps": steps,
                "approvals": [],
            }
        )

    async def decide(self, request: web.Request) -> web.Response:
        approval_id, decision = request.match_info["id"], request.match_info["decision"]
        if approval_id == "ap-3":
            return error(409, "approval_closed", "approval ap-3 is closed")
        if not any(a["approval_id"] == approval_id for a in self.pending):
            return error(404, "not_found", "no such approval")
        self.pending = [a for a in self.pending if a["approval_id"] != approval_id]
        if approval_id == "ap-1":
            for event in run_rest():
                await self.live.put(event)
        return ok({"approval_id": approval_id, "status": "granted" if decision == "approve" else "denied"}, 202)

    async def events(self, request: web.Request) -> web.StreamResponse:
        thread_id = request.match_info["id"]
        canned = thread_events() if thread_id == "th-md" else run_events() if thread_id == "run-1" else []
        after = int(request.headers.get("Last-Event-ID") or 0)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        await response.write(b"retry: 2000\n\n")
        seq = 0

        async def send(kind: str, data: dict[str, Any]) -> None:
            nonlocal seq
            seq += 1
            if seq <= after:
                return
            body = json.dumps({"type": kind, "aggregate_id": thread_id, "event_id": f"e{seq}", **data})
            if kind == "tool_call_started":  # unnamed: the type only in the JSON
                await response.write(f"id: {seq}\ndata: {body}\n\n".encode())
            else:
                await response.write(f"id: {seq}\nevent: {kind}\ndata: {body}\n\n".encode())

        for kind, data in canned:
            await send(kind, data)
        if thread_id == "run-1":
            tokens = [{"job_id": "t2", "seq": 0, "text": "## Fi", "done": False}]
            while not self.closing:
                try:
                    event = await asyncio.wait_for(self.live.get(), 0.5)
                except TimeoutError:
                    await response.write(b": ping\n\n")
                    continue
                if event is None:
                    break
                if event[0] == "model_turn_completed" and tokens:  # a token delta first (no id)
                    await response.write(f"event: token\ndata: {json.dumps(tokens.pop())}\n\n".encode())
                await send(*event)
                if event[0] == "thread_completed":
                    break
        return response


@pytest_asyncio.fixture
async def stand_in() -> AsyncIterator[StandIn]:
    async with StandIn() as server:
        yield server


@pytest_asyncio.fixture
async def page(stand_in: StandIn):
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(TIMEOUT_MS)
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
            # Chromium reports what the Content-Security-Policy blocked as console errors.
            page.on("console", lambda m: errors.append(m.text) if "Content Security Policy" in m.text else None)
            yield page
            assert await page.evaluate("typeof window.pwned") == "undefined"
            assert not errors, errors
        finally:
            await browser.close()


async def test_a_draft_is_rendered_markdown_and_none_of_its_html_runs(stand_in: StandIn, page) -> None:
    from playwright.async_api import expect

    await page.goto(f"{stand_in.url}/#thread=th-md")
    draft = page.locator("#draft1")
    await expect(draft.locator("h1")).to_have_text("Title")
    await expect(draft.locator("strong")).to_have_text("bold")
    await expect(draft.locator("table td")).to_have_text(["basil", "2"])
    await expect(draft.locator("pre code")).to_have_text("code <b>kept as text</b>")
    # The raw HTML is shown as text, never as elements.
    await expect(draft).to_contain_text("<script>window.pwned=1</script>")
    await expect(draft).to_contain_text('<img src=x onerror="window.pwned=2">')
    for unsafe in ("script:not([src])", "img", "[onerror]", "[onclick]", "[style]", "iframe", "form", "b"):
        await expect(page.locator(f"#draft1 {unsafe}, #draft2 {unsafe}")).to_have_count(0)
    assert await page.locator("script:not([src])").count() == 0
    # Links: only safe URLs, each opened in a new tab without an opener.
    safe = draft.locator("a[href='https://example.com/']")
    await expect(safe).to_have_attribute("target", "_blank")
    await expect(safe).to_have_attribute("rel", "noopener noreferrer")
    hrefs = await draft.locator("a").evaluate_all("links => links.map((a) => a.getAttribute('href'))")
    assert hrefs == ["https://example.com/", None], hrefs
    # Draft 2 too, and the word diff of the two drafts' Markdown still works.
    await expect(page.locator("#draft2 li")).to_have_text(["one", "two"])
    await expect(page.locator("#diff-box")).to_be_visible()
    assert "more" in " ".join(await page.locator("#diff ins").all_text_contents())
    await shoot(page, "ui-markdown-draft")
    await page.wait_for_timeout(200)  # an image's onerror would have fired by now
    assert await page.evaluate("typeof window.pwned") == "undefined"


async def test_an_agent_run_is_started_watched_and_its_tool_call_approved(stand_in: StandIn, page) -> None:
    from playwright.async_api import expect

    await page.goto(stand_in.url)
    await page.click("a.nav-link[href='#agent']")
    await expect(page.locator("#agent-profile option[value='coder']")).to_have_count(1)
    await expect(page.locator("#agent-runs a[href='#agent/run-0']")).to_contain_text("An older task")
    await page.fill("#agent-task", TASK)
    await page.select_option("#agent-profile", "coder")
    await expect(page.locator("#agent-profile-info")).to_contain_text("read_file, shell")
    await page.fill("#agent-project", "demo")
    await page.click("#agent-submit")
    await page.wait_for_url(re.compile(r"#agent/run-1$"))
    assert stand_in.posted("/api/agent/runs") == [{"task": TASK, "profile": "coder", "project": "demo"}]

    await expect(page.locator("#agent-run-task")).to_have_text(TASK)
    await expect(page.locator("#agent-run-info")).to_contain_text("Profile coder (named by you)")
    # The snapshot's steps and the stream's replay of them are one step each.
    read = page.locator("#agent-steps li.tool-call[data-call-id='c1']")
    await expect(read).to_have_count(1)
    await expect(page.locator("#agent-steps li.turn")).to_have_count(1)
    await expect(page.locator("#agent-steps li.turn em")).to_have_text("look")
    await expect(read.locator(".tool-name")).to_have_text("read_file")
    await expect(read.locator(".decision")).to_have_text("allowed")
    await expect(read.locator(".tool-state")).to_have_text("done")
    await expect(read.locator("pre.json")).to_contain_text('"path": "tests/test_app.py"')
    output = read.locator(".tool-output .output")
    await expect(output.locator("strong")).to_have_text("important")
    await expect(output.locator("li")).to_have_text(["first", "second"])
    await expect(output).to_contain_text("<script>window.pwned=6</script>")  # as text
    await expect(page.locator("#agent-steps script")).to_have_count(0)

    shell = page.locator("#agent-steps li.tool-call[data-call-id='c2']")
    await expect(shell.locator(".decision")).to_have_text("needs approval")
    await expect(shell.locator(".approval")).to_contain_text("shell runs commands")
    buttons = shell.locator(".approval-actions button")
    await expect(buttons).to_have_text(["Approve once", "Approve for this run", "Reject"])
    await expect(page.locator("#agent-run-status")).to_have_attribute("data-status", "awaiting_approval")
    await expect(page.locator("#approvals-badge")).to_have_text("3")

    await shoot(page, "ui-agent-approval")
    await shell.locator(".approval-actions input").fill("go")
    await shell.locator("button[data-decision='once']").click()
    # The rest of the run comes live: the approval, the call's output, the answer.
    await expect(shell.locator(".approval-outcome")).to_have_text("Approved once by local: “go”")
    assert stand_in.posted("/api/approvals/ap-1/approve") == [{"scope": "once", "comment": "go"}]
    await expect(shell.locator(".tool-state")).to_have_text("done")
    await expect(shell.locator(".tool-output .output")).to_have_text("1 passed")
    await expect(page.locator("#agent-answer h2")).to_have_text("Fixed")
    await expect(page.locator("#agent-answer code")).to_have_text("a typo")
    await expect(page.locator("#agent-run-status")).to_have_attribute("data-status", "completed")
    await expect(page.locator("#agent-steps li.turn")).to_have_count(2)
    await expect(page.locator("#agent-cancel")).to_be_hidden()
    await expect(page.locator("#agent-runs a[href='#agent/run-1']")).to_contain_text(TASK)
    await expect(page.locator("#agent-connection")).to_have_attribute("data-state", "closed")
    await shoot(page, "ui-agent-completed")


async def test_the_approvals_page_lists_what_waits_and_rejects(stand_in: StandIn, page) -> None:
    from playwright.async_api import expect

    await page.goto(f"{stand_in.url}/#approvals")
    await expect(page.locator("#approvals-badge")).to_have_text("3")
    waiting = page.locator("#approvals li[data-approval-id='ap-2']")
    await expect(waiting.locator(".tool-name")).to_have_text("shell")
    await expect(waiting.locator("a[href='#agent/run-0']")).to_be_visible()
    args = waiting.locator("pre.json")
    await expect(args).to_contain_text('"command": "rm -rf build"')
    await expect(args).to_contain_text('"note": "<b>not bold</b>"')  # as text
    await expect(page.locator("#approvals b")).to_have_count(0)

    await shoot(page, "ui-approvals")
    closed = page.locator("#approvals li[data-approval-id='ap-3']")
    await closed.locator("button[data-decision='run']").click()
    await expect(closed.locator(".note")).to_contain_text("closed already")
    assert stand_in.posted("/api/approvals/ap-3/approve") == [{"scope": "run", "comment": ""}]

    await waiting.locator("input.approval-comment").fill("not now")
    await waiting.locator("button[data-decision='reject']").click()
    await expect(page.locator("#approvals-note")).to_have_text("Rejected: shell of run run-0.")
    assert stand_in.posted("/api/approvals/ap-2/reject") == [{"comment": "not now"}]
    await expect(waiting).to_have_count(0)
    await expect(page.locator("#approvals-badge")).to_have_text("2")
    # Polled: a new approval shows up without a reload.
    stand_in.pending.append(approval("ap-4", "run-0", "web_fetch", {"url": "https://example.com/"}))
    await expect(page.locator("#approvals li[data-approval-id='ap-4'] .tool-name")).to_have_text("web_fetch")
    await expect(page.locator("#approvals-badge")).to_have_text("3")
