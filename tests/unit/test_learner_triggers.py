"""hermes_learner.triggers: user-supplied trigger patterns compiled with RE2 (or refused), matched in linear time,
off the event loop with a deadline; and the decision reading the matched set (hermes_learner.domain)."""

from __future__ import annotations

import asyncio
import re
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from hermes_learner import domain, triggers
from hermes_learner.templates import SEED_TEMPLATES

T = domain.QuestionTemplate


def counted(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


def test_every_seed_trigger_compiles_under_re2() -> None:
    for template in SEED_TEMPLATES:
        assert triggers.problem(template.triggers) is None, template.template_id


@pytest.mark.parametrize(
    "pattern",
    [
        "(unclosed",
        r"(a)\1",  # backreference
        r"(?=plan)",  # lookahead
        r"(?<!x)garden",  # lookbehind
        r"\Z",  # Python's end of text: RE2 spells it \z
        r"\pL{200}",  # a program past MAX_MEM
        "a{1001}",  # RE2's repetition limit
    ],
)
def test_patterns_re2_cannot_run_in_linear_time_are_refused(pattern: str) -> None:
    with pytest.raises(triggers.TriggerError) as refused:
        triggers.compile_trigger(pattern)
    assert refused.value.pattern == pattern and refused.value.reason
    assert triggers.problem(["garden", pattern]) == str(refused.value)


def test_nested_quantifiers_match_in_linear_time() -> None:
    redos = triggers.compile_trigger("^(a+)+$")
    attack = "a" * 200_000 + "!"
    started = time.perf_counter()
    assert redos.search(attack) is None and redos.search("a" * 27) is not None
    assert time.perf_counter() - started < 0.5  # Python's re would take longer than the universe's age
    assert triggers.matches("HELP ME PLAN A Garden", [r"\bgarden\b"])  # case-insensitive, like re.IGNORECASE


def test_a_stored_pattern_re2_refuses_is_skipped_not_raised() -> None:
    before = counted("hermes_learner_triggers_skipped_total")
    old = T("old", "scope", "Which one?", triggers=(r"(a)\1", r"\bflat\b"))
    assert triggers.matches("aa flat", old.triggers)  # the usable one still counts
    assert not triggers.matches("aa", old.triggers)
    assert triggers.triggered("my flat", [old]) == frozenset({"old"})
    assert counted("hermes_learner_triggers_skipped_total") == before + 1  # logged and counted once, however often used


def test_past_its_deadline_matching_stops_between_patterns() -> None:
    many = [T(f"t{i}", "scope", "Q?", triggers=(f"x{i}y",)) for i in range(50)]
    assert triggers.triggered("x7y", many, deadline=time.monotonic() + 60) == frozenset({"t7"})
    assert triggers.triggered("x7y", many, deadline=time.monotonic() - 1) is None


async def test_the_matcher_runs_in_a_worker_thread_and_gives_up_at_its_deadline() -> None:
    templates = [T(f"t{i}", "scope", "Q?", triggers=(r"(x+x+)+y", r"\bz\b")) for i in range(40)]
    matcher = triggers.TriggerMatcher(timeout_s=5.0)
    try:
        assert await matcher.matched("a z b", templates) == frozenset(t.template_id for t in templates)
    finally:
        matcher.close()
    slow = triggers.TriggerMatcher(timeout_s=0.005)
    timeouts = counted("hermes_learner_trigger_timeouts_total")
    ticks = 0

    async def ticking() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.001)

    ticker = asyncio.create_task(ticking())
    try:
        started = time.monotonic()
        assert await slow.matched("x" * 3_000_000 + " z", templates) == frozenset()  # counts as no match
        assert time.monotonic() - started < 1.0
        assert counted("hermes_learner_trigger_timeouts_total") == timeouts + 1
        assert ticks >= 1  # the event loop ran meanwhile
    finally:
        ticker.cancel()
        slow.close()


def test_the_decision_is_the_same_with_the_matched_set_given() -> None:
    ideas = ["help me plan a vegetable garden on my balcony", "write a python script for my photos", "x"]
    for idea in ideas:
        inline = domain.choose(idea, "", SEED_TEMPLATES, {}, 5, draft_event_id="d")
        matched = triggers.triggered(idea, SEED_TEMPLATES)
        assert domain.choose(idea, "", SEED_TEMPLATES, {}, 5, draft_event_id="d", triggered=matched) == inline
    boosted = T("b-boosted", "scope", "Rooms?", triggers=("flat",), prior_improvement=0.6)
    plain = T("a-plain", "scope", "Size?", prior_improvement=0.6)
    chosen = domain.choose("my flat", "", [plain, boosted], {}, 1, draft_event_id="d", triggered=frozenset())
    assert [q.template_id for q in chosen.questions] == ["a-plain"]  # no trigger counted: the smaller id wins a tie
    chosen = domain.choose("my flat", "", [plain, boosted], {}, 1, draft_event_id="d")
    assert [q.template_id for q in chosen.questions] == ["b-boosted"]


PIECES = st.sampled_from(["a", "b", "c", "B", ".", "[ab]", "[^c]", r"\s", "x"])
PATTERNS = st.recursive(
    PIECES,
    lambda inner: st.one_of(
        st.tuples(inner, inner).map("".join),
        st.tuples(inner, inner).map(lambda p: f"(?:{p[0]}|{p[1]})"),
        st.tuples(inner, st.sampled_from(["*", "+", "?", "{2}", "{1,3}"])).map(lambda p: f"(?:{p[0]}){p[1]}"),
        inner.map(lambda p: f"^{p}"),
        inner.map(lambda p: f"{p}$"),
    ),
    max_leaves=6,
)


@settings(max_examples=300, deadline=None)
@given(PATTERNS, st.text(st.sampled_from("abcABC x"), max_size=12))
def test_re2_agrees_with_python_re_where_both_apply(pattern: str, text: str) -> None:
    assert triggers.matches(text, [pattern]) == (re.search(pattern, text, re.IGNORECASE) is not None)
