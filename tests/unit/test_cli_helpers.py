"""The ``hermes`` command line's pure parts: argument parsing, the listings' text helpers, the JSONL copy and the
live follower of a thread's events. No gateway: events and chunks are made here."""

from __future__ import annotations

import io
import json

import pytest
import typer

from hermes_cli.client import SseEvent
from hermes_cli.common import EXIT_USAGE, clip, table, when
from hermes_cli.follow import ThreadFollower, WaitTimeout
from hermes_cli.memory import stream_export
from hermes_cli.system import corrected_payload
from hermes_cli.threads import parse_pairs


def sse(event: str, **data: object) -> SseEvent:
    return SseEvent(event=event, data=json.dumps(data))


def test_answers_by_id_keep_their_text_and_refuse_a_missing_id() -> None:
    assert parse_pairs(["q1=a = b", " q2 =", "q3=  spaced "]) == [("q1", "a = b"), ("q2", ""), ("q3", "  spaced ")]
    for bad in ("no-equals", "=text"):
        with pytest.raises(typer.Exit) as caught:
            parse_pairs([bad])
        assert caught.value.exit_code == EXIT_USAGE


def test_listing_helpers() -> None:
    assert when("2026-05-09T07:35:12.345+00:00") == "2026-05-09 07:35" and when(None) == "-"
    assert clip("a  b\n c", 10) == "a b c" and clip("abcdefgh", 5) == "abcd…" and len(clip("x" * 80, 60)) == 60
    assert table([["ID", "STATUS"], ["t-1", "completed"], ["t-22", ""]]).splitlines() == [
        "ID    STATUS",
        "t-1   completed",
        "t-22",
    ]


def test_the_export_copy_counts_records_even_without_a_last_newline() -> None:
    sink = io.BytesIO()
    assert stream_export(iter([b'{"a": 1}\n{"b"', b"", b': 2}\n{"c": 3}']), sink) == 3
    assert sink.getvalue() == b'{"a": 1}\n{"b": 2}\n{"c": 3}'
    assert stream_export(iter([]), io.BytesIO()) == 0
    assert stream_export(iter([b"{}\n"]), io.BytesIO()) == 1


def test_a_corrected_payload_is_a_json_object_from_the_text_or_a_file(tmp_path) -> None:
    assert corrected_payload(None) is None
    assert corrected_payload('{"idea": "x"}') == {"idea": "x"}
    (tmp_path / "p.json").write_text('{"idea": "y"}', encoding="utf-8")
    assert corrected_payload(f"@{tmp_path / 'p.json'}") == {"idea": "y"}
    for bad in ("[1, 2]", "{not json", f"@{tmp_path / 'missing.json'}"):
        with pytest.raises(typer.Exit) as caught:
            corrected_payload(bad)
        assert caught.value.exit_code == EXIT_USAGE


def test_the_follower_streams_its_draft_s_tokens_and_holds_early_ones() -> None:
    out = io.StringIO()
    follower = ThreadFollower(draft=1, out=out)
    events = [
        sse("token", job_id="j1", seq=0, text="Hel"),  # before its job_queued: held
        sse("job_queued", job_id="j1", kind="draft1"),
        sse("job_queued", job_id="c1", kind="classify"),
        sse("token", job_id="c1", seq=0, text="IGNORED"),  # another job's tokens are not shown
        sse("token", job_id="j1", seq=1, text="lo"),
        SseEvent(event="comment", data=""),
        sse("execution_completed", job_id="j1", prompt_tokens=3, completion_tokens=4, latency_ms=1500.0),
        sse("draft_presented", job_id="j1", draft_number=1, text="Hello", backend="talos", model="m"),
        sse("questions_proposed", questions=[{"question_id": "q1"}]),
    ]
    follower.follow(iter(events), timeout_s=30, until_questions=True)
    assert out.getvalue() == "\nDraft 1:\nHello\n  (talos · m, 7 tokens, 1.5 s)\n"
    assert follower.questions == [{"question_id": "q1"}] and not (follower.completed or follower.failed)


def test_the_follower_prints_the_final_text_after_a_missed_token_and_says_how_it_ended() -> None:
    out = io.StringIO()
    follower = ThreadFollower(draft=2, out=out)
    follower.follow(
        iter(
            [
                sse("job_queued", job_id="j2", kind="draft2"),
                sse("token", job_id="j2", seq=0, text="Draft"),
                sse("token", job_id="j2", seq=2, text="lost order"),  # seq 1 missed
                sse("draft_presented", job_id="j2", draft_number=2, text="Done right", backend="b", model="m"),
                sse("thread_completed", reason="answered"),
            ]
        ),
        timeout_s=30,
        until_questions=False,
    )
    assert out.getvalue() == "\nDraft 2:\nDraft\n[final text]\nDone right\n  (b · m)\n"
    assert follower.completed == "answered"
    failed = ThreadFollower(draft=1, out=io.StringIO())
    failed.follow(iter([sse("thread_failed", message="no backend", error_code="no_backend")]), 30, False)
    assert failed.failed == "no backend [no_backend]"
    with pytest.raises(WaitTimeout):  # the stream ended before the thread did
        ThreadFollower(draft=1, out=io.StringIO()).follow(iter([]), 30, until_questions=True)
