"""hermes_proto.text: the one rule for free text a person typed (ideas, answers), as examples and as properties
over arbitrary Unicode (hypothesis)."""

from __future__ import annotations

import string
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hermes_proto.text import BIDI_CONTROLS, TextRefused, clean_text, invisible, normalize_text


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("  plan a garden \n", "plan a garden"),
        ("abc\u202edef", "abcdef"),  # a right-to-left override would show "abcfed"
        ("\u2067رسالة\u2069 ok", "رسالة ok"),  # isolates go, the Arabic stays
        ("left\u200eright\u200f", "leftright"),
        ("ﬁx ＡＢＣ ①", "fix ABC 1"),  # NFKC: ligatures, full-width letters, circled digits
        ("e\u202e\u0301", "\u00e9"),  # a control between a letter and its accent goes before composing
        ("q\u0301", "q\u0301"),  # no precomposed form: the mark stays on its letter
        ("line 1\r\nline 2\rline 3\u2028line 4", "line 1\nline 2\nline 3\nline 4"),
        ("tab\there\x00\x07\x1b[31m", "tab\there[31m"),
        ("\u200b\ufeffhidden start and end\u2060\u200d", "hidden start and end"),
        ("👨\u200d👩\u200d👧 family", "👨\u200d👩\u200d👧 family"),  # joiners inside text stay
    ],
)
def test_clean_text_examples(raw: str, clean: str) -> None:
    assert clean_text(raw) == clean


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("", "empty"),
        (" \n\t\u3000 ", "empty"),
        ("\u200b\u200c\u200d\u2060\ufeff", "invisible"),
        ("\u202e\u202d", "invisible"),
        ("\x00\x1f\x7f", "invisible"),
        ("\u0301\u20dd", "invisible"),  # combining marks with no base
        ("\u3164\u115f\u2800", "invisible"),  # Hangul fillers, the blank Braille pattern
        ("\U000e0041\U000e0042", "invisible"),  # tag characters
    ],
)
def test_nothing_visible_is_refused(raw: str, reason: str) -> None:
    with pytest.raises(TextRefused) as refused:
        clean_text(raw, "idea")
    assert refused.value.reason == reason and "idea" in str(refused.value)


TEXT = st.text(st.characters(codec="utf-8"), max_size=60) | st.text(
    st.sampled_from(sorted(BIDI_CONTROLS) + list("\u200b\u200d\u0301\r\n\t a\u00e9\ufb01\uff21\x00")), max_size=20
)


@settings(max_examples=400, deadline=None)
@given(TEXT)
def test_clean_text_properties(raw: str) -> None:
    cleaned = normalize_text(raw)
    assert normalize_text(cleaned) == cleaned  # idempotent
    assert unicodedata.is_normalized("NFKC", cleaned)
    assert not BIDI_CONTROLS & set(cleaned) and "\r" not in cleaned
    assert all(c in "\n\t" or unicodedata.category(c) != "Cc" for c in cleaned)
    assert cleaned == cleaned.strip()
    try:
        accepted = clean_text(raw)
    except TextRefused as refused:
        assert all(invisible(c) for c in cleaned)
        assert refused.reason == ("empty" if raw.isspace() or not raw else "invisible")
    else:
        assert accepted == cleaned and any(not invisible(c) for c in accepted)


@given(st.text(st.sampled_from(string.printable), max_size=80))
def test_plain_ascii_only_loses_its_surrounding_whitespace(raw: str) -> None:
    visible = raw.replace("\r\n", "\n").replace("\r", "\n")
    visible = "".join(c for c in visible if c in "\n\t" or c >= " ").strip(" \n\t")
    if visible.strip():
        assert clean_text(raw) == visible.strip()
    else:
        with pytest.raises(TextRefused):
            clean_text(raw)
