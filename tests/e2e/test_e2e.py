"""End to end: `hermes up` starts NATS, the real SmolLM2 model server and the six services as separate
processes; a real idea goes in over HTTP and comes back as draft 1, questions and draft 2; a loopback
Telegram Bot API server receives the completion message; SIGINT leaves no process behind.

Slow (the model writes two drafts of up to 256 tokens at ~40 tokens/s on 2 cores): marked ``e2e``.
"""

from __future__ import annotations

import httpx
import pytest
from conftest import wait_until
from fakes.telegram_api import FakeTelegramServer
from stack import HermesUp, processes_with_home, sse_events

pytestmark = pytest.mark.e2e

TOKEN = "123456:e2e-secret-token"
CHAT_ID = "4242"


@pytest.fixture
async def telegram():
    async with FakeTelegramServer(token=TOKEN) as server:
        yield server


async def test_idea_to_two_drafts_over_real_services_and_model(tmp_path, telegram):
    up = HermesUp(
        tmp_path,
        HERMES_ANSWER_TIMEOUT_SECONDS="300",
        TELEGRAM_BOT_TOKEN=TOKEN,
        TELEGRAM_CHAT_ID=CHAT_ID,
        TELEGRAM_API_BASE_URL=telegram.api_base_url,
        HERMES_DRAFT_MAX_TOKENS="160",
    ).start()
    home = up.home
    try:
        with httpx.Client(base_url=up.base_url, timeout=10) as client:
            up.wait_healthy(client)
            idea = "Help me plan a small vegetable garden on my city balcony"
            submitted = client.post("/api/submit", json={"idea": idea, "channel": "web"})
            assert submitted.status_code == 202, submitted.text
            thread_id = submitted.json()["data"]["thread_id"]

            events = sse_events(client, f"/api/threads/{thread_id}/events", {"questions_proposed"}, 180)
            kinds = [k for k, _ in events]
            assert kinds.index("thread_opened") < kinds.index("backend_selected") < kinds.index("draft_presented")
            tokens = [d["text"] for k, d in events if k == "token" and not d.get("done")]
            draft1 = next(d for k, d in events if k == "draft_presented")
            assert len(tokens) > 3, "draft 1 should stream token by token"
            assert draft1["draft_number"] == 1 and draft1["text"].strip()
            assert draft1["completion_tokens"] > 0 and draft1["backend"] == "talos"
            questions = next(d for k, d in events if k == "questions_proposed")["questions"]
            assert 1 <= len(questions) <= 5
            assert {q["category"] for q in questions} <= {"intent", "constraint", "success", "context", "scope"}

            status = client.get(f"/api/threads/{thread_id}/status").json()["data"]
            assert status["status"] == "awaiting_answers" and status["draft1"] == draft1["text"]
            job1 = status["jobs"][0]
            assert job1["prompt_tokens"] > 0 and job1["completion_tokens"] > 0 and job1["latency_ms"] > 0
            result = client.get(f"/api/threads/{thread_id}/jobs/{job1['job_id']}/result").json()["data"]
            assert result["text"] == draft1["text"] and result["model"]

            answers = [
                {"question_id": questions[0]["question_id"], "text": "Tomatoes and basil only"},
                {"question_id": questions[-1]["question_id"], "text": "The balcony gets 4 hours of sun"},
            ]
            resp = client.post(f"/api/threads/{thread_id}/continue", json={"answers": answers})
            assert resp.status_code == 202, resp.text

            events = sse_events(client, f"/api/threads/{thread_id}/events", {"thread_completed", "thread_failed"}, 240)
            completed = [d for k, d in events if k == "thread_completed"]
            assert completed and completed[0]["reason"] == "answered" and completed[0]["final_draft_number"] == 2
            final = client.get(f"/api/threads/{thread_id}/status").json()["data"]
            assert final["status"] == "completed"
            assert final["draft2"] and final["draft2"].strip() and final["draft2"] != final["draft1"]
            draft2_job = next(j for j in final["jobs"] if j["kind"] == "draft2")
            assert draft2_job["status"] == "completed" and draft2_job["completion_tokens"] > 0
            assert {q["answer"] for q in final["questions"] if q["answer"]} == {a["text"] for a in answers}
            # The draft-2 prompt was built from the idea, draft 1 and the answers.
            queued = next(d for k, d in events if k == "job_queued" and d["kind"] == "draft2")
            prompt = queued["messages"][-1]["content"]
            assert idea in prompt and final["draft1"] in prompt
            assert all(a["text"] in prompt for a in answers)

        await wait_until(lambda: telegram.messages_to(CHAT_ID), timeout_s=30)
        sent = telegram.messages_to(CHAT_ID)
        assert len(sent) == 1 and idea[:30] in sent[0]["text"]
    finally:
        up.stop()
    await wait_until(lambda: not processes_with_home(home), timeout_s=20)
    assert TOKEN not in up.all_logs()
