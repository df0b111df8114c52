"""The web UI in a real browser: Debian's Chromium, driven by Playwright, against ``hermes up`` (NATS, the six
services as processes) whose talos backend is a loopback OpenAI-compatible model server that streams a fixed
draft 1 and, when its prompt holds draft 1, a fixed draft 2 (so the run is fast and deterministic).

Auth is on (``HERMES_API_TOKENS``: an admin and a guest), so the page first asks for a token. One user's way
through: log in → submit → draft 1 streams in live → answer the questions (one by a chip) → draft 2
beside draft 1 with a word diff → rate → download Markdown and JSON → the thread list's search → the system
page with the backend healthy. A guest sees no write control. The result download's errors over HTTP. Then a dropped connection: the browser goes offline while draft 1 streams and
the page still reaches the final state, with the draft shown once. Screenshots of every step go to
``$HERMES_SCREENSHOT_DIR`` (else ``tmp_path/screenshots``). All of it under the gateway's Content-Security-Policy
(no inline script or style): nothing may be blocked by it.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from conftest import wait_until
from fakes.llm_servers import FakeOpenAIServer, Reply
from stack import HermesUp

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

pytestmark = [
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(),
        reason=f"Debian's Chromium is not installed at {CHROMIUM} (.ci/run installs it: apt-get install chromium)",
    ),
    pytest.mark.asyncio(loop_scope="module"),
]

IDEA = "Help me plan a small vegetable garden on my sunny city balcony"
DRAFT1 = (
    "Start with three terracotta pots of cherry tomatoes, a trough of basil and a box of lettuce. "
    "Water every morning and feed weekly."
)
DRAFT2 = (
    "Start with two terracotta pots of cherry tomatoes and a trough of basil, on the south rail. "
    "Water every evening and feed every two weeks."
)
PRICE_IN, PRICE_OUT = 200_000, 600_000  # cents per million tokens: a job costs a visible fraction of a cent
DAILY_BUDGET = 500
USER_TOKEN, GUEST_TOKEN = "ana-browser-token-0123456789", "gus-browser-token-9876543210"
API_TOKENS = f"ana:admin:{USER_TOKEN},gus:guest:{GUEST_TOKEN}"
TIMEOUT_MS = 30_000


def reply_for(body: dict[str, Any]) -> str:
    """Draft 2 when the user's message carries draft 1 (the refine prompt), else draft 1. (The system prompt may
    hold earlier threads as memories, draft 1 among them.)"""
    return DRAFT2 if DRAFT1 in body["messages"][-1]["content"] else DRAFT1


class CuttableProxy:
    """A TCP proxy on 127.0.0.1 in front of the gateway that can drop every open connection at once and refuse
    new ones until :meth:`resume` (the server side of a dropped network), recording each request's head."""

    def __init__(self, port: int) -> None:
        self.port, self.up = port, True
        self.heads: list[bytes] = []
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def __aenter__(self) -> CuttableProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.cut()
        assert self._server is not None
        self._server.close()

    def cut(self) -> None:
        self.up = False
        for writer in list(self._writers):
            writer.transport.abort()

    def resume(self) -> None:
        self.up = True

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        if not self.up:
            client_w.transport.abort()
            return
        try:
            server_r, server_w = await asyncio.open_connection("127.0.0.1", self.port)
        except OSError:
            client_w.transport.abort()
            return
        self._writers |= {client_w, server_w}

        async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, record: bool) -> None:
            try:
                while data := await reader.read(65536):
                    if record:
                        self.heads.append(data.split(b"\r\n\r\n", 1)[0])
                    writer.write(data)
                    await writer.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                writer.transport.abort()
                self._writers.discard(writer)

        await asyncio.gather(pipe(client_r, server_w, True), pipe(server_r, client_w, False))


class Stack:
    def __init__(self, up: HermesUp, model: FakeOpenAIServer) -> None:
        self.up, self.model = up, model

    @property
    def url(self) -> str:
        return self.up.base_url


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    tmp = tmp_path_factory.mktemp("browser")
    async with FakeOpenAIServer(reply=Reply(chunk_delay_s=0.06), models=["fake-model"]) as model:
        model.respond = reply_for
        up = HermesUp(
            tmp,
            HERMES_LOCAL_MODEL="false",
            BACKEND_TALOS_TYPE="openai",
            BACKEND_TALOS_HOST="127.0.0.1",
            BACKEND_TALOS_PORT=str(model.port),
            BACKEND_TALOS_MODELS="fake-model",
            BACKEND_TALOS_PRICE_IN_CENTS_PER_MTOK=str(PRICE_IN),
            BACKEND_TALOS_PRICE_OUT_CENTS_PER_MTOK=str(PRICE_OUT),
            HERMES_DAILY_BUDGET_CENTS=str(DAILY_BUDGET),
            HERMES_ANSWER_TIMEOUT_SECONDS="300",
            HERMES_API_TOKENS=API_TOKENS,
        ).start()
        try:
            # Blocking HTTP runs in a thread: the model server lives on this event loop.
            def wait_healthy() -> None:
                with httpx.Client(timeout=5) as client:
                    up.wait_healthy(client)

            await asyncio.to_thread(wait_healthy)
            yield Stack(up, model)
        finally:
            await asyncio.to_thread(up.stop)


@pytest_asyncio.fixture(loop_scope="module")
async def page(stack: Stack):
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            context = await browser.new_context(accept_downloads=True, viewport={"width": 1280, "height": 900})
            page = await context.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            # Chromium reports what the Content-Security-Policy blocked as console errors.
            page.on("console", lambda m: errors.append(m.text) if "Content Security Policy" in m.text else None)
            served = await page.goto(stack.url)
            assert served is not None and "script-src 'self';" in served.headers["content-security-policy"]
            yield page
            assert not errors, errors  # no uncaught script error, nothing blocked by the CSP on the way
        finally:
            await browser.close()


@pytest.fixture
def shots(tmp_path: Path):
    """``shoot(page, name)`` saves ``<dir>/<name>.png``; the directory's PNGs are checked at the end."""
    directory = Path(os.environ.get("HERMES_SCREENSHOT_DIR") or tmp_path / "screenshots")
    directory.mkdir(parents=True, exist_ok=True)
    taken: list[Path] = []

    async def shoot(page, name: str) -> None:
        path = directory / f"{name}.png"
        await page.screenshot(path=str(path), full_page=True)
        taken.append(path)

    yield shoot
    for path in taken:
        assert path.is_file() and path.stat().st_size > 1000, path
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path


async def api(stack: Stack, path: str, token: str = USER_TOKEN) -> httpx.Response:
    async with httpx.AsyncClient(
        base_url=stack.url, timeout=10, headers={"Authorization": f"Bearer {token}"}
    ) as client:
        return await client.get(path)


async def log_in(page, token: str) -> None:
    """The login form the page shows on a 401: a wrong token is refused, the right one reloads the page."""
    from playwright.async_api import expect

    await expect(page.locator("#login-view")).to_be_visible()
    await expect(page.locator("#idea-form")).to_be_hidden()
    await page.fill("#login-token", "not-a-token")
    await page.click("#login-submit")
    await expect(page.locator("#login-error")).to_contain_text("not valid")
    await page.fill("#login-token", token)
    async with page.expect_navigation():
        await page.click("#login-submit")
    await expect(page.locator("#login-view")).to_be_hidden()


async def submit(page, idea: str, max_questions: int | None = None) -> str:
    await page.fill("#idea", idea)
    if max_questions is not None:
        await page.fill("#max-questions", str(max_questions))
    await page.click("#submit")
    await page.wait_for_url(re.compile(r"#thread=[\w-]+$"))
    return page.url.rsplit("=", 1)[1]


async def test_submit_draft_answer_refine_rate_download_and_system_page(stack: Stack, page, shots) -> None:
    from playwright.async_api import expect

    await expect(page.locator("#login-view")).to_be_visible()
    await shots(page, "00-login")
    await log_in(page, USER_TOKEN)
    await expect(page.locator("#user")).to_have_text("ana")
    await expect(page.locator("#idea-form")).to_be_visible()
    await shots(page, "01-start")
    thread_id = await submit(page, IDEA)

    # Draft 1 streams in token by token: seen part-way, still streaming, then whole.
    await page.wait_for_selector("#draft1.streaming")
    partial = await page.text_content("#draft1")
    await shots(page, "02-draft1-streaming")
    # Tokens sent before the page's stream opened are marked "…" until draft 1 is presented whole.
    shown = partial.removeprefix("… ").strip() if partial else ""
    assert shown and shown in DRAFT1 and shown != DRAFT1, partial
    await expect(page.locator("#draft1")).to_have_text(DRAFT1)
    await expect(page.locator("#draft1")).not_to_have_class(re.compile("streaming"))
    await expect(page.locator("#thread-idea")).to_have_text(IDEA)

    # Questions with answer fields; one answered by a chip, one typed.
    await expect(page.locator("#questions-form")).to_be_visible()
    await expect(page.locator("#thread-status")).to_have_attribute("data-status", "awaiting_answers")
    inputs = page.locator("#questions input[data-question-id]")
    assert await inputs.count() >= 1
    chips = page.locator("#questions .suggestions button.chip")
    assert await chips.count() >= 1, "no suggestion or assumption chip to click"
    chip = chips.first
    chip_value = await chip.get_attribute("data-value") or (await chip.text_content()).strip()
    chip_input = chip.locator("xpath=ancestor::li[1]//input[@data-question-id]")
    await chip.click()
    await expect(chip_input).to_have_value(chip_value)
    typed = "The balcony gets four hours of sun"
    typed_input = None
    for index in range(await inputs.count()):
        candidate = inputs.nth(index)
        if await candidate.input_value() == "":
            typed_input = candidate
            break
    if typed_input is not None:
        await typed_input.fill(typed)
    await shots(page, "03-questions-answered")
    await page.click("#refine")

    # Draft 2 beside draft 1, with the words that changed marked.
    await expect(page.locator("#draft2")).to_have_text(DRAFT2, timeout=TIMEOUT_MS)
    await expect(page.locator("#diff-box")).to_be_visible()
    inserted = " ".join(await page.locator("#diff ins").all_text_contents())
    deleted = " ".join(await page.locator("#diff del").all_text_contents())
    assert "two" in inserted and "evening" in inserted and "south" in inserted, inserted
    assert "three" in deleted and "morning" in deleted and "lettuce" in deleted, deleted
    assert "terracotta" not in inserted + deleted  # unchanged words are not marked
    box1, box2 = await page.locator("#draft1").bounding_box(), await page.locator("#draft2").bounding_box()
    assert box1 and box2 and abs(box1["y"] - box2["y"]) < 5 and box2["x"] > box1["x"] + box1["width"] - 1, (
        box1,
        box2,
    )  # side by side
    await expect(page.locator("#thread-status")).to_have_attribute("data-status", "completed")
    await shots(page, "04-draft2-diff")

    # Per job: backend, model, tokens, cost, time, status.
    rows = page.locator("#jobs tr")
    await expect(rows).to_have_count(2)
    await expect(rows.nth(1)).to_contain_text("completed")
    for index in range(2):  # a job's cost is recorded after its result, possibly after the thread's end
        await expect(rows.nth(index).locator("td").nth(4)).to_have_text(re.compile(r"^(?!0\.00 )[\d.]+ ¢$"))
        cells = await rows.nth(index).locator("td").all_text_contents()
        kind, backend, model, tokens, cost, latency, status = cells
        assert (backend, model, status) == ("talos", "fake-model", "completed"), cells
        assert int(tokens) > 0 and re.fullmatch(r"[\d.]+ ¢", cost) and float(cost.split()[0]) > 0, cells
        assert re.fullmatch(r"[\d.]+ m?s", latency), cells

    # Rate once completed.
    await expect(page.locator("#rate-box")).to_be_visible()
    await page.click("#rate-box button[data-rating='4']")
    await expect(page.locator("#rate-note")).to_contain_text("4/5")

    async def rated() -> bool:
        return (await api(stack, f"/api/threads/{thread_id}/status")).json()["data"]["rating"] == 4

    await wait_until(rated, timeout_s=15)
    await shots(page, "05-rated")

    # Downloads: Markdown and JSON of the whole thread.
    async with page.expect_download() as info:
        await page.click("#download-md")
    download = await info.value
    assert download.suggested_filename == f"hermes-{thread_id}.md"
    markdown = Path(await download.path()).read_text()
    for part in (IDEA, DRAFT1, DRAFT2, "## Questions and answers", chip_value, "| talos | fake-model |", "rated 4/5"):
        assert part in markdown, (part, markdown)
    if typed_input is not None:
        assert typed in markdown
    async with page.expect_download() as info:
        await page.click("#download-json")
    download = await info.value
    assert download.suggested_filename == f"hermes-{thread_id}.json"
    view = json.loads(Path(await download.path()).read_text())
    assert (view["thread_id"], view["idea"], view["draft1"], view["draft2"], view["rating"]) == (
        thread_id,
        IDEA,
        DRAFT1,
        DRAFT2,
        4,
    )
    assert chip_value in {q["answer"] for q in view["questions"]}
    assert [j["kind"] for j in view["jobs"]] == ["draft1", "draft2"] and all(j["cost_cents"] > 0 for j in view["jobs"])

    # The thread list: a status badge per thread, filtered by the search box.
    item = page.locator(f"#recent li[data-thread-id='{thread_id}']")
    await expect(item.locator(".status")).to_have_attribute("data-status", "completed")
    await page.fill("#thread-search", "balcony completed")
    await expect(item).to_be_visible()
    await page.fill("#thread-search", "balcony awaiting")
    await expect(item).to_have_count(0)
    await expect(page.locator("#recent")).to_contain_text("no thread matches")
    await page.fill("#thread-search", "")
    await expect(item).to_be_visible()

    # The system page: the backend healthy, queue depth, spend today against the budget.
    await page.click("a.nav-link[href='#system']")
    talos = page.locator("#backends tr[data-backend='talos']")
    await expect(talos.locator(".backend-health")).to_have_text("healthy")
    await expect(page.locator("#queue-depth")).to_have_text("0")
    await expect(page.locator("#spend-today")).to_contain_text(f"of {DAILY_BUDGET:.2f} ¢")
    spent = float((await page.text_content("#spend-today")).split()[0])
    assert spent > 0
    await shots(page, "06-system")

    # The settings page: an editable setting changed in the page is what the API then reports, and reset.
    await page.click("a.nav-link[href='#settings']")
    row = page.locator("#settings tr[data-key='hermes.learning.max_questions_per_conversation']")
    await row.locator("input").fill("3")
    await row.locator("button", has_text="Save").click()
    await expect(row.locator(".note")).to_have_text("Saved.")
    await shots(page, "06b-settings")
    listed = (await api(stack, "/api/config")).json()["data"]["settings"]
    assert {s["key"]: s["value"] for s in listed}["hermes.learning.max_questions_per_conversation"] == 3
    await row.locator("button", has_text="Reset").click()
    await expect(row.locator(".note")).to_have_text("Back to the deployment's value.")
    assert not await page.locator("#settings-view td:has-text('KEY'), #settings-view td:has-text('SECRET')").count()


async def test_live_draft_survives_a_dropped_connection(stack: Stack, page, shots) -> None:
    """The gateway's side of every connection is dropped while draft 1 streams, and new ones are refused for a
    while: the page says it is reconnecting, its EventSource resumes after the last event it saw
    (Last-Event-ID), and the thread still reaches its end with draft 1 shown exactly once."""
    from playwright.async_api import expect

    stack.model.reply = Reply(chunk_delay_s=0.25)  # about 6 s of streaming: time to drop the connection
    try:
        async with CuttableProxy(stack.up.web_port) as proxy:
            await page.goto(proxy.url)
            await log_in(page, USER_TOKEN)
            thread_id = await submit(page, "Help me plan a herb garden on a windowsill", max_questions=0)
            await page.wait_for_selector("#draft1.streaming")
            proxy.cut()
            await expect(page.locator("#connection")).to_have_attribute("data-state", "reconnecting")
            await shots(page, "07-reconnecting")
            proxy.resume()
            await expect(page.locator("#thread-status")).to_have_attribute(
                "data-status", "completed", timeout=TIMEOUT_MS
            )
            streams = [h for h in proxy.heads if f"/api/threads/{thread_id}/events".encode() in h.split(b"\r\n")[0]]
            resumed = [h for h in streams if re.search(rb"(?im)^last-event-id: *[1-9]\d*\r?$", h)]
            assert len(streams) >= 2 and resumed, [h.decode(errors="replace") for h in streams]
    finally:
        stack.model.reply = Reply(chunk_delay_s=0.06)
    await expect(page.locator("#draft1")).to_have_text(DRAFT1)  # exactly once: nothing applied twice
    await expect(page.locator("#jobs tr")).to_have_count(1)
    await expect(page.locator("#connection")).to_have_attribute("data-state", "closed")
    await shots(page, "08-after-reconnect")


async def test_a_guest_reads_but_sees_no_write_control_and_logs_out(stack: Stack, page, shots) -> None:
    from playwright.async_api import expect

    await log_in(page, GUEST_TOKEN)
    await expect(page.locator("#user")).to_contain_text("guest")
    for control in ("#idea-form", "#refine", "#rate-box"):
        await expect(page.locator(control)).to_be_hidden()
    await page.click("a.nav-link[href='#system']")
    await expect(page.locator("#backends tr[data-backend='talos'] .backend-health")).to_have_text("healthy")
    await shots(page, "09-guest-system")
    await page.click("#logout")
    await expect(page.locator("#login-view")).to_be_visible()


async def test_result_download_errors(stack: Stack) -> None:
    threads = (await api(stack, "/api/threads")).json()["data"]["threads"]
    thread_id = threads[0]["thread_id"]
    bad = await api(stack, f"/api/threads/{thread_id}/result?format=pdf")
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_format", bad.text
    unknown = await api(stack, "/api/threads/0123456789abcdef0123456789abcdef/result?format=md")
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "thread_not_found", unknown.text
    # Another user's thread is not there for them (a guest here), exactly as an unknown one.
    foreign = await api(stack, f"/api/threads/{thread_id}/result?format=json", token=GUEST_TOKEN)
    assert foreign.status_code == 404 and foreign.json()["error"]["code"] == "thread_not_found", foreign.text
    own = await api(stack, f"/api/threads/{thread_id}/result")  # Markdown by default
    assert own.status_code == 200 and own.headers["content-type"].startswith("text/markdown"), own.headers
    assert own.headers["content-disposition"] == f'attachment; filename="hermes-{thread_id}.md"'
    assert own.text.startswith(f"# Hermes thread {thread_id}\n") and threads[0]["idea"] in own.text
    anonymous = httpx.get(f"{stack.url}/api/threads/{thread_id}/result", timeout=10)
    assert anonymous.status_code == 401, anonymous.text
