"""The orchestrator's read model on a real SQLite file: rules the projection enforces whatever a producer sends."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlmodel import Session, select

from hermes_proto.events import Question, QuestionsProposed, ThreadOpened

from hermes_orchestrator import readmodel

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def _questions(prefix: str, n: int) -> list[Question]:
    return [
        Question(question_id=f"{prefix}-{i}", template_id=f"t{i}", category="intent", text=f"q{i}?") for i in range(n)
    ]


def _proposed(event_id: str, questions: list[Question]) -> QuestionsProposed:
    return QuestionsProposed(
        event_id=event_id,
        aggregate_id="th-1",
        occurred_at=NOW,
        correlation_id="c",
        questions=questions,
        idea_type="plan",
        clarity=0.4,
    )


def test_questions_are_capped_and_only_the_first_proposal_counts(tmp_path):
    engine = readmodel.make_engine(f"sqlite:///{tmp_path / 'orchestrator.db'}")
    events = [
        ThreadOpened(
            event_id="e1", aggregate_id="th-1", occurred_at=NOW, correlation_id="c", idea="a garden", max_questions=3
        ),
        _proposed("e2", _questions("first", 7)),
        _proposed("e3", _questions("second", 2)),
    ]
    readmodel.apply_events(readmodel.row_store(engine), events, 3)
    with Session(engine) as session:
        rows = session.exec(select(readmodel.QuestionRow).order_by(readmodel.QuestionRow.position)).all()
    assert [r.question_id for r in rows] == ["first-0", "first-1", "first-2"]


def test_a_read_model_of_another_schema_is_dropped_for_replay(tmp_path):
    """An older version's tables (here: one column fewer) are dropped with their position, so the
    projection replays the log into the current schema; a same-schema restart keeps everything."""
    import sqlite3

    db = tmp_path / "orchestrator.db"
    engine = readmodel.make_engine(f"sqlite:///{db}")
    readmodel.apply_events(
        readmodel.row_store(engine),
        [ThreadOpened(event_id="e1", aggregate_id="th-1", occurred_at=NOW, correlation_id="c", idea="a garden")],
        7,
    )
    engine.dispose()

    engine = readmodel.make_engine(f"sqlite:///{db}")  # same code: kept
    with readmodel.row_store(engine) as store:
        assert readmodel.load_position(store) == 7
    with Session(engine) as session:
        assert session.get(readmodel.ThreadRow, "th-1") is not None
    engine.dispose()

    con = sqlite3.connect(db)
    con.execute("ALTER TABLE threads DROP COLUMN clarity")  # as an older version made it
    con.execute("UPDATE read_model_schema SET fingerprint = 'older'")
    con.commit()
    con.close()
    engine = readmodel.make_engine(f"sqlite:///{db}")
    with readmodel.row_store(engine) as store:
        assert readmodel.load_position(store) == 0
    with Session(engine) as session:
        assert session.get(readmodel.ThreadRow, "th-1") is None
        columns = {row[1] for row in session.connection().exec_driver_sql("PRAGMA table_info(threads)")}
    assert "clarity" in columns
