"""Sessions, memory and exports on the orchestrator's real SQLite read model, and the chat-turn decisions."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from sqlmodel import Session

from hermes_proto.base import ChatMessage
from hermes_proto.commands import SubmitChat, SubmitIdea
from hermes_proto.events import (
    DraftPresented,
    ExecutionCompleted,
    JobQueued,
    ThreadCompleted,
    ThreadOpened,
    ThreadRated,
)
from hermes_proto.sessions import ExportQuery

from hermes_orchestrator import domain, readmodel, sessions, snapshot
from hermes_orchestrator.soul import SoulFile

NOW = datetime(2026, 11, 20, 9, 0, 0, tzinfo=UTC)


def _chat(job_id: str, text: str, **kw) -> SubmitChat:
    return SubmitChat(
        command_id=f"cmd-{job_id}",
        issued_at=NOW,
        thread_id="s-1",
        job_id=job_id,
        session_key="k1",
        messages=[ChatMessage(role="system", content="Answer in French."), ChatMessage(role="user", content=text)],
        **kw,
    )


def _state(events, engine) -> domain.ThreadState | None:
    readmodel.apply_events(readmodel.row_store(engine), events)
    with Session(engine) as session:
        return snapshot.load_state(session, "s-1")


def test_a_chat_session_opens_once_and_queues_one_job_per_turn(tmp_path):
    engine = readmodel.make_engine(f"sqlite:///{tmp_path / 'o.db'}")
    harness = domain.Harness(
        soul="You are Talos's keeper.",
        memories=(domain.Memory(job_id="old-1", day="2026-11-01", prompt="my dog is Rex", reply="Nice dog."),),
    )
    first = domain.decide_chat(
        None, _chat("j1", "hello", model="smollm2", max_tokens=50), domain.Limits(), NOW, harness
    )
    assert [e.type_name() for e in first] == ["thread_opened", "job_queued"]
    opened, queued = first
    assert opened.kind == "chat" and opened.origin["session_key"] == "k1" and opened.idea == "hello"
    assert queued.kind == "chat" and queued.model == "smollm2" and queued.max_tokens == 50
    assert queued.memories == ["old-1"]
    system = queued.messages[0]
    assert system.role == "system" and system.content.startswith("You are Talos's keeper.")
    assert "[memory old-1 · 2026-11-01] User: my dog is Rex → Hermes: Nice dog." in system.content
    assert system.content.endswith("Answer in French.")  # the caller's own system message comes after the soul
    assert [m.role for m in queued.messages] == ["system", "user"]

    state = _state(first, engine)
    assert state is not None and state.status == domain.ACTIVE and state.kind == domain.CHAT
    assert domain.decide_chat(state, _chat("j1", "hello"), domain.Limits(), NOW) == []  # a redelivery
    second = domain.decide_chat(state, _chat("j2", "again"), domain.Limits(), NOW)
    assert [e.type_name() for e in second] == ["job_queued"] and second[0].correlation_id == opened.correlation_id

    done = ExecutionCompleted(
        event_id="x1",
        aggregate_id="s-1",
        occurred_at=NOW,
        correlation_id="c",
        job_id="j1",
        backend="talos",
        model="m",
        text="bonjour",
        prompt_tokens=5,
        completion_tokens=2,
        latency_ms=12.0,
    )
    state = _state([done], engine)
    assert domain.react_execution_completed(state, done, NOW) == []  # no draft: the caller reads the reply
    assert state.status == domain.ACTIVE


def test_memory_search_recall_budget_and_session_views(tmp_path):
    engine = readmodel.make_engine(f"sqlite:///{tmp_path / 'o.db'}")
    events = _history()
    readmodel.apply_events(readmodel.row_store(engine), events)
    with Session(engine) as session:
        hits = sessions.search_memory(session, "what about my balcony?", None, 10)
        assert [h.job_id for h in hits] == ["t1-d1"] and "[balcony]" in hits[0].snippet
        assert {h.job_id for h in sessions.search_memory(session, "tomatoes", None, 10)} == {"t1-d1", "t1-d2"}
        assert sessions.search_memory(session, "tomatoes", "someone-else", 10) == []
        assert sessions.search_memory(session, "the and of", None, 10) == []  # nothing searchable
        assert [h.job_id for h in sessions.search_memory(session, 'balcony" OR *', None, 10)] == [
            "t1-d1"
        ]  # syntax is inert

        assert [m.job_id for m in sessions.recall(session, "ann", "a balcony", "other", 300, 3)] == ["t1-d1"]
        assert sessions.recall(session, "ann", "tomatoes", "t1", 300, 3) == ()  # its own thread is left out
        assert sessions.recall(session, "ann", "tomatoes", "other", 5, 3) == ()  # over the budget
        assert sessions.recall(session, "ann", "tomatoes", "other", 0, 3) == ()

        view = sessions.session_view(session, "t1")
        assert [t.kind for t in view.turns] == ["draft1", "draft2"] and view.rating == 5
        assert [t.rating for t in view.turns] == [None, 5]  # the rating belongs to the final draft
        assert view.turns[1].backend == "talos" and view.turns[1].completion_tokens == 7
        listed = sessions.recent_sessions(session, "ann", None, 10)
        assert [s.session_id for s in listed] == ["t1"] and listed[0].turn_count == 2 and listed[0].turns == []


def _history() -> list:
    def job(jid: str, kind: str, user: str, at: datetime) -> JobQueued:
        return JobQueued(
            event_id=f"q-{jid}",
            aggregate_id="t1",
            occurred_at=at,
            correlation_id="c",
            job_id=jid,
            kind=kind,
            messages=[ChatMessage(role="system", content="soul"), ChatMessage(role="user", content=user)],
        )

    def done(jid: str, text: str, at: datetime) -> ExecutionCompleted:
        return ExecutionCompleted(
            event_id=f"x-{jid}",
            aggregate_id="t1",
            occurred_at=at,
            correlation_id="c",
            job_id=jid,
            backend="talos",
            model="m",
            text=text,
            prompt_tokens=3,
            completion_tokens=7,
            latency_ms=40.0,
        )

    t = NOW
    return [
        ThreadOpened(
            event_id="o1",
            aggregate_id="t1",
            occurred_at=t,
            correlation_id="c",
            user_id="ann",
            channel="web",
            idea="grow tomatoes on my balcony",
        ),
        job("t1-d1", "draft1", "grow tomatoes on my balcony", t),
        done("t1-d1", "Use big pots.", t),
        DraftPresented(
            event_id="p1",
            aggregate_id="t1",
            occurred_at=t,
            correlation_id="c",
            job_id="t1-d1",
            draft_number=1,
            text="Use big pots.",
            backend="talos",
            model="m",
        ),
        job("t1-d2", "draft2", "refine: cherry varieties", t + timedelta(days=1)),
        done("t1-d2", "Cherry tomatoes in 20 l pots.", t + timedelta(days=1)),
        ThreadCompleted(
            event_id="c1", aggregate_id="t1", occurred_at=t, correlation_id="c", final_draft_number=2, reason="answered"
        ),
        ThreadRated(event_id="r1", aggregate_id="t1", occurred_at=t, correlation_id="c", rating=5, draft_number=2),
    ]


def test_exports_filter_page_and_pair_drafts(tmp_path):
    engine = readmodel.make_engine(f"sqlite:///{tmp_path / 'o.db'}")
    readmodel.apply_events(readmodel.row_store(engine), _history())
    with Session(engine) as session:
        page = sessions.export_page(session, ExportQuery(format="openai", limit=1))
        assert len(page.lines) == 1 and page.next_after is not None
        first = json.loads(page.lines[0])
        assert first["messages"][-1] == {"role": "assistant", "content": "Use big pots."}
        rest = sessions.export_page(session, ExportQuery(format="openai", limit=1, after=page.next_after))
        assert json.loads(rest.lines[0])["messages"][-1]["content"] == "Cherry tomatoes in 20 l pots."
        assert rest.next_after is None

        share = json.loads(sessions.export_page(session, ExportQuery(format="sharegpt")).lines[0])
        assert [c["from"] for c in share["conversations"]] == ["system", "human", "gpt"]
        dpo = [json.loads(line) for line in sessions.export_page(session, ExportQuery(format="dpo")).lines]
        assert dpo == [
            {
                "prompt": [
                    {"role": "system", "content": "soul"},
                    {"role": "user", "content": "grow tomatoes on my balcony"},
                ],
                "chosen": "Cherry tomatoes in 20 l pots.",
                "rejected": "Use big pots.",
                "thread_id": "t1",
                "rating": 5,
            }
        ]
        day2 = sessions.export_page(session, ExportQuery(since="2026-11-21", until="2026-11-21"))
        assert [json.loads(x)["messages"][-1]["content"] for x in day2.lines] == ["Cherry tomatoes in 20 l pots."]
        assert sessions.export_page(session, ExportQuery(channel="telegram")).lines == []
        assert len(sessions.export_page(session, ExportQuery(min_rating=5)).lines) == 2


def test_soul_file_is_created_reread_and_replaced(tmp_path):
    soul = SoulFile(tmp_path / "home" / "SOUL.md")
    soul.ensure()
    assert soul.read() == domain.SYSTEM_PROMPT and soul.path.exists()
    soul.path.write_text("Be terse.\n")
    assert soul.read() == "Be terse."  # a hand edit is picked up
    assert soul.write("You are Hermes for Ann.") == "You are Hermes for Ann."
    soul.path.write_text("   \n")
    assert soul.read() == domain.SYSTEM_PROMPT  # blank: the default


def test_an_idea_prompt_gets_the_soul_and_memories():
    cmd = SubmitIdea(command_id="c1", issued_at=NOW, thread_id="t9", idea="tomatoes again")
    harness = domain.Harness(soul="Soul.", memories=(domain.Memory("m1", "2026-11-01", "tomatoes?", "Pots."),))
    queued = domain.decide_submit(None, cmd, domain.Limits(), NOW, (), harness)[1]
    assert queued.messages[0].content.startswith("Soul.\n\n" + domain.MEMORY_INTRO) and queued.memories == ["m1"]


def test_replies_fit_one_nats_message_and_private_turns_are_not_memories(tmp_path):
    engine = readmodel.make_engine(f"sqlite:///{tmp_path / 'o.db'}")
    secret = ThreadOpened(
        event_id="o2",
        aggregate_id="t2",
        occurred_at=NOW,
        correlation_id="c",
        user_id="ann",
        idea="my private balcony diagnosis",
        private=True,
    )
    readmodel.apply_events(
        readmodel.row_store(engine),
        [
            *_history(),
            secret,
            JobQueued(
                event_id="q-p",
                aggregate_id="t2",
                occurred_at=NOW,
                correlation_id="c",
                job_id="p1",
                kind="draft1",
                messages=[ChatMessage(role="user", content="my private balcony diagnosis")],
            ),
            ExecutionCompleted(
                event_id="x-p",
                aggregate_id="t2",
                occurred_at=NOW,
                correlation_id="c",
                job_id="p1",
                backend="talos",
                model="m",
                text="private reply",
                prompt_tokens=1,
                completion_tokens=1,
                latency_ms=1.0,
            ),
        ],
    )
    with Session(engine) as session:
        assert [h.job_id for h in sessions.search_memory(session, "balcony", None, 10)] == ["t1-d1"]
        assert "private reply" in [
            r["messages"][-1]["content"] for r in map(json.loads, sessions.export_page(session, ExportQuery()).lines)
        ]  # still captured and exported

        view = sessions.session_view(session, "t1")
        whole = len(__import__("msgspec").json.encode(view))
        trimmed = sessions.fit(sessions.session_view(session, "t1"), whole - 1)
        assert [t.job_id for t in trimmed.turns] == ["t1-d2"] and trimmed.turns_omitted == 1
        last = sessions.session_view(session, "t1", last_turns=1)
        assert [t.job_id for t in last.turns] == ["t1-d2"] and last.turns_omitted == 1

        first = sessions.export_page(session, ExportQuery(), budget_bytes=10)  # one line at least, then a cursor
        assert len(first.lines) == 1 and first.next_after is not None
        rest = sessions.export_page(session, ExportQuery(after=first.next_after), budget_bytes=10)
        assert len(rest.lines) == 1 and json.loads(rest.lines[0]) != json.loads(first.lines[0])
