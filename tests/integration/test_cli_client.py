# ruff: noqa: F811  (the gateway fixtures are imported from test_gateway_api and requested by name)
"""The real ``hermes`` console script against the real gateway process, the real orchestrator and NATS.

The harness (gateway process, in-loop orchestrator, the other services' events via ``Peers``) is the one
of ``test_gateway_api``.
"""

from __future__ import annotations

import asyncio
import codecs
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
from conftest import wait_until
from test_gateway_api import (  # noqa: F401
    Gateway,
    Stack,
    _count_is,
    ask_orchestrator,
    awaiting_thread,
    command_tap,
    commands_published,
    completed_thread,
    drafting_thread,
    gateway,
    http,
    orchestrators_wound_down,
    read_commands,
    settled_status,
    stack,
)

from hermes_proto.commands import AnswerQuestions, SubmitIdea

from hermes_cli.natsserver import free_port

HERMES = Path(sys.executable).parent / "hermes"


@dataclass
class Cli:
    """One running ``hermes`` process; ``stdout``/``stderr`` grow as it prints."""

    proc: asyncio.subprocess.Process
    stdout: str = ""
    stderr: str = ""
    readers: list = field(default_factory=list)

    async def _pump(self, stream: asyncio.StreamReader, name: str) -> None:
        decoder = codecs.getincrementaldecoder("utf-8")()  # a character may span two reads
        while chunk := await stream.read(256):
            setattr(self, name, getattr(self, name) + decoder.decode(chunk))
        setattr(self, name, getattr(self, name) + decoder.decode(b"", final=True))

    async def wait(self, timeout_s: float = 30) -> int:
        """The exit code; a CLI still running after ``timeout_s`` seconds is killed (and the wait fails)."""
        try:
            code = await asyncio.wait_for(self.proc.wait(), timeout_s)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
            raise AssertionError(f"hermes still running after {timeout_s} s; stdout: {self.stdout!r}") from None
        await asyncio.gather(*self.readers)
        return code


async def hermes(*args: str, url: str | None = None, env: dict[str, str] | None = None) -> Cli:
    full_env = {k: v for k, v in os.environ.items() if k not in ("HERMES_URL", "HERMES_WEB_PORT")}
    full_env.update(env or {})
    if url:
        full_env["HERMES_URL"] = url
    full_env["PYTHONUNBUFFERED"] = "1"
    proc = await asyncio.create_subprocess_exec(
        str(HERMES), *args, env=full_env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    cli = Cli(proc)
    cli.readers = [
        asyncio.create_task(cli._pump(proc.stdout, "stdout")),
        asyncio.create_task(cli._pump(proc.stderr, "stderr")),
    ]
    return cli


async def run_hermes(
    *args: str, url: str | None = None, env: dict[str, str] | None = None, timeout_s: float = 30
) -> tuple[int, str, str]:
    cli = await hermes(*args, url=url, env=env)
    code = await cli.wait(timeout_s)
    return code, cli.stdout, cli.stderr


async def test_submit_streams_draft_1_then_prints_the_questions(stack: Stack, http, js_client) -> None:
    nc, _ = js_client
    peers = stack.peers
    commands = await command_tap(nc)
    cli = await hermes("submit", "plan a vegetable garden on my balcony", "--max-questions", "2", url=stack.url)

    [(command, _)] = await wait_until(lambda: commands.seen)
    assert isinstance(command, SubmitIdea)
    assert (command.idea, command.channel, command.max_questions) == ("plan a vegetable garden on my balcony", "cli", 2)
    thread_id = command.thread_id
    job = await peers.job(thread_id)  # the orchestrator opened the thread and queued draft 1
    await wait_until(lambda: _count_is(stack.gateway, http, 1))  # the CLI is watching the thread
    await peers.select(job)
    await peers.tokens(job, ["Grow ", "cherry tomatoes ", "in pots."])
    # Printed token by token, before the draft is presented.
    await wait_until(lambda: "Grow cherry tomatoes in pots." in cli.stdout)
    assert cli.proc.returncode is None
    await peers.complete(job, "Grow cherry tomatoes in pots.", prompt_tokens=20, completion_tokens=9, latency_ms=1500.0)
    _, draft = await peers.draft(thread_id)
    _, proposed = await peers.propose(draft)
    assert await cli.wait() == 0, cli.stderr
    out = cli.stdout
    intent, scope = proposed.questions
    assert f"Thread {thread_id}" in out
    assert out.count("Grow cherry tomatoes in pots.") == 1
    assert "talos · smollm2, 29 tokens, 1.5 s" in out
    assert f"1. [intent] What is the garden for?  (id: {intent.question_id})" in out
    assert "suggestions: vegetables | flowers" in out
    assert f"2. [scope] How big is the balcony?  (id: {scope.question_id})" in out
    assert f'hermes answer {thread_id} "answer 1" "answer 2"' in out
    await wait_until(lambda: _count_is(stack.gateway, http, 0))  # the CLI left the stream


async def test_submit_prints_the_final_draft_when_tokens_were_missed(stack: Stack, http, js_client) -> None:
    nc, _ = js_client
    peers = stack.peers
    commands = await command_tap(nc)
    cli = await hermes("submit", "write a haiku", url=stack.url)

    [(command, _)] = await wait_until(lambda: commands.seen)
    thread_id = command.thread_id
    job = await peers.job(thread_id)
    await wait_until(lambda: _count_is(stack.gateway, http, 1))
    await peers.tokens(job, ["late "], first_seq=3)  # seq 0-2 never seen
    await peers.complete(job, "An old silent pond.")
    _, draft = await peers.draft(thread_id)
    await peers.propose(draft, [])  # nothing to ask: the orchestrator completes the thread on draft 1
    assert await cli.wait() == 0, cli.stderr
    assert "An old silent pond." in cli.stdout
    assert "late" not in cli.stdout
    assert "Thread completed (no questions)." in cli.stdout


async def test_submit_no_wait_returns_at_once(gateway: Gateway, js_client) -> None:
    _, js = js_client
    code, out, err = await run_hermes("submit", "--no-wait", "a quick one", url=gateway.url)
    assert code == 0, err
    [(command, _)] = await read_commands(js)
    assert f"Thread {command.thread_id}" in out
    assert f"hermes status {command.thread_id}" in out


async def test_answer_sends_answers_in_question_order_and_streams_draft_2(stack: Stack, http, js_client) -> None:
    nc, _ = js_client
    peers = stack.peers
    thread_id, (intent, scope) = await awaiting_thread(stack, http)
    commands = await command_tap(nc)
    cli = await hermes("answer", thread_id, "vegetables", "two square metres", url=stack.url)

    [(command, _)] = await wait_until(lambda: commands.seen)
    assert isinstance(command, AnswerQuestions)
    assert [(a.question_id, a.text) for a in command.answers] == [
        (intent.question_id, "vegetables"),
        (scope.question_id, "two square metres"),
    ]
    job = await peers.job(thread_id, "draft2")  # the orchestrator recorded the answers and queued draft 2
    prompt = job.messages[-1].content
    assert "What is the garden for? vegetables" in prompt and "How big is the balcony? two square metres" in prompt
    await wait_until(lambda: "Answers sent" in cli.stdout)  # watching since before it answered
    await peers.select(job)
    await peers.tokens(job, ["Two planters ", "of tomatoes."])
    await wait_until(lambda: "Two planters of tomatoes." in cli.stdout)
    assert cli.proc.returncode is None
    await peers.complete(job, "Two planters of tomatoes.")
    assert await cli.wait() == 0, cli.stderr
    assert "Draft 2:" in cli.stdout and "Draft 1:" not in cli.stdout
    assert cli.stdout.count("Two planters of tomatoes.") == 1
    assert "Thread completed (answered)." in cli.stdout


async def test_answer_by_question_id_and_failed_drafts(stack: Stack, http, js_client) -> None:
    nc, _ = js_client
    peers = stack.peers
    thread_id, (intent, scope) = await awaiting_thread(stack, http)
    commands = await command_tap(nc)
    cli = await hermes(
        "answer", thread_id, "--question", f"{scope.question_id}=small", "-q", f"{intent.question_id}=", url=stack.url
    )

    [(command, _)] = await wait_until(lambda: commands.seen)
    assert [(a.question_id, a.text) for a in command.answers] == [(scope.question_id, "small")]
    await peers.fail(await peers.job(thread_id, "draft2"), "connection_error", "connection refused")
    # Draft 2 failing is not the end of the thread: it completes on draft 1.
    assert await cli.wait() == 0, cli.stderr
    assert "failed: connection refused" in cli.stderr
    assert "Thread completed (draft2 failed)." in cli.stdout

    # Draft 1 failing is: the thread fails and so does the command.
    cli = await hermes("submit", "summarise my notes", url=stack.url)
    await wait_until(lambda: len(commands.seen) == 2)
    failing = commands.seen[1][0].thread_id
    await peers.no_backend(await peers.job(failing))
    assert await cli.wait() == 1
    assert f"thread {failing} failed: draft 1 failed: no backend is up [no_backend]" in cli.stderr
    assert "Traceback" not in cli.stderr


async def test_status_pretty_and_json(stack: Stack, http, js_client) -> None:
    nc, _ = js_client
    thread_id, (intent, _) = await awaiting_thread(stack, http)
    response = await http.post(
        f"{stack.url}/api/threads/{thread_id}/continue", json={"answers": {intent.question_id: "vegetables"}}
    )
    assert response.status_code == 202, response.text
    await stack.peers.job(thread_id, "draft2")
    seq, _ = await stack.peers.last(thread_id, "job_queued")
    view = await settled_status(stack, http, thread_id, seq)
    assert view["status"] == "refining"

    # No --url and no HERMES_URL: http://127.0.0.1:$HERMES_WEB_PORT.
    port = stack.url.rsplit(":", 1)[1]
    (code, out, err), (json_code, json_out, json_err), (env_code, env_out, env_err) = await asyncio.gather(
        run_hermes("status", thread_id, url=stack.url),
        run_hermes("status", thread_id, "--json", url=stack.url),
        run_hermes("status", thread_id, env={"HERMES_WEB_PORT": port}),
    )
    assert code == 0, err
    assert f"Thread {thread_id}: refining" in out
    assert "Idea:   plan a balcony garden" in out
    assert "talos · smollm2" in out and "46 tokens" in out
    assert f"1. [intent] What is the garden for?  (id: {intent.question_id})\n     → vegetables" in out
    assert "Draft 1:\nDraft one." in out

    assert json_code == 0, json_err
    reply = await ask_orchestrator(nc, thread_id)
    assert json.loads(json_out) == view == json.loads(msgspec.json.encode(reply.thread))

    assert env_code == 0, env_err
    assert env_out == out


async def test_errors_are_clear_messages_with_non_zero_exits(stack: Stack, http, js_client) -> None:
    nc, js = js_client
    drafting, _ = await drafting_thread(stack, http)
    commands = await command_tap(nc)
    before = await commands_published(js)
    cases = [
        (("status", "t-nope"), 1, "thread_not_found"),
        (("submit", "   "), 1, "empty_idea"),
        (("submit", "x" * 10_001), 1, "idea_too_long"),
        (("answer", drafting, "-q", "q-intent=food"), 1, "not_awaiting_answers"),
        (("answer", drafting, "food"), 2, "1 answers for 0 questions"),
        (("answer", drafting, "-q", "no-equals-sign"), 2, "--question wants ID=TEXT"),
        (("answer", drafting, "-q", "q-intent=  "), 2, "every answer is empty"),
    ]
    unreachable = f"http://127.0.0.1:{free_port()}"
    cases += [
        (args, 3, f"cannot reach the Hermes gateway at {unreachable}")
        for args in (("status", "t-1"), ("submit", "an idea"), ("answer", "t-1", "-q", "a=b"))
    ]
    # Independent runs, so run them side by side (each one is mostly interpreter start-up).
    results = await asyncio.gather(
        *(run_hermes(*args, url=unreachable if code == 3 else stack.url) for args, code, _ in cases)
    )
    for (args, code, message), (got, out, err) in zip(cases, results, strict=True):
        assert got == code, (args, out, err)
        assert message in err, (args, err)
        assert "Traceback" not in err
    assert await commands_published(js) == before
    assert commands.seen == []


async def test_rate_records_the_rating_and_status_shows_it(stack: Stack, http, js_client) -> None:
    done = await completed_thread(stack, http)
    code, out, err = await run_hermes("rate", done, "4", "-m", "useful start", url=stack.url)
    assert code == 0, err
    assert f"Rated thread {done}: 4/5." in out
    seq, rated = await stack.peers.last(done, "thread_rated")
    assert (rated.rating, rated.comment) == (4, "useful start")
    await settled_status(stack, http, done, seq)
    code, out, err = await run_hermes("status", done, url=stack.url)
    assert code == 0, err
    assert "Rated:  4/5 — useful start" in out

    bad_code, _, bad_err = await run_hermes("rate", done, "9", url=stack.url)
    assert bad_code == 2 and "less than or equal to 5" in bad_err  # a usage error, before any request
