"""normalize and settle as pure functions: the same fact said in other words gives one key (amounts with their
currency code, durations in one unit scheme, words as a sorted set of content tokens), meaning-flipping words are never
dropped, bounds are part of an amount or duration key, a restatement in more words settles on the earlier key, and
no str input raises or gives a key or wording over 120 characters (hypothesis)."""

from __future__ import annotations

import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hermes_learner.normalize import _FILLER, _KEEP, LIMIT, Normal, normalize, settle

SAME = [
    ["weekends only", "only on weekends", "just at weekends", "Weekends."],
    ["two pages at most", "at most 2 pages", "2 pages max", "two pages"],
    ["Go and SQLite", "SQLite and Go", "go, sqlite", "SQLite & Go please"],
    ["Porto", "porto.", "  «Porto»  ", "ｐｏｒｔｏ", "I would like Porto"],
    ["plain words", "Plain words, please", "plain   words!"],
    ["under 500 euros", "500 euros max", "at most 500€", "no more than €500", "below five hundred euros"],
    ["500 euros", "€500", "500 EUR", "500,00 €", "five hundred euros", "about 500 euros", "my budget is 500 eur"],
    ["200 dollars", "$200", "200 USD", "two hundred dollars", "200$"],
    ["in 3 weeks", "within three weeks", "3 weeks from now", "in the next 3 weeks", "21 days", "3 wks"],
    ["2 weeks", "two weeks", "14 days", "a fortnight", "fourteen days"],
    ["1 year", "12 months", "twelve months", "a year"],
    ["1.5 hours", "90 minutes", "1h30m", "1 hour and 30 minutes", "an hour 30 min"],
    ["48 hours", "2 days", "two days"],
]

DIFFERENT = [
    ("meat", "no meat"),
    ("with sugar", "without sugar"),
    ("2 pages", "3 pages"),
    ("2 pages", "at least 2 pages"),
    ("under 500 euros", "500 euros"),
    ("under 500 euros", "over 500 euros"),
    ("500 euros", "500 dollars"),
    ("500 euros", "500 euros per month"),
    ("meat", "not meat"),
    ("I want meat", "I don't want meat"),
    ("3 months", "90 days"),
    ("tea or coffee", "tea and coffee"),
    ("Go", "Go except SQLite"),
]

KEYS = [
    ("under 500 euros", "<= 500 EUR", "amount"),
    ("at least 500 euros", ">= 500 EUR", "amount"),
    ("more than £80", ">= 80 GBP", "amount"),
    ("80 pounds", "80 GBP", "amount"),
    ("1,500 EUR", "1500 EUR", "amount"),
    ("12.50 €", "12.5 EUR", "amount"),
    ("a hundred dollars", "100 USD", "amount"),
    ("twenty five euros", "25 EUR", "amount"),
    ("200 CHF", "200 CHF", "amount"),
    ("2 weeks", "14 days", "duration"),
    ("3 months", "3 months", "duration"),
    ("a month", "1 month", "duration"),
    ("1.5 years", "18 months", "duration"),
    ("1 month and 2 weeks", "44 days", "duration"),
    ("2 hours", "2 hours", "duration"),
    ("half an hour", "30 minutes", "duration"),
    ("an hour", "1 hour", "duration"),
    ("10 seconds", "10 seconds", "duration"),
    ("3 weeks max", "<= 21 days", "duration"),
    ("two pages at most", "2 page", "words"),
    ("3 weeks in Porto", "3 porto week", "words"),
    ("500 euros in dollars", "500 dollar euro", "words"),
    ("not 500 euros", "500 euro not", "words"),
    ("500", "500", "words"),
    ("between 300 and 500 euros", "300 500 between euro", "words"),
    ("first class", "1st class", "words"),
    ("Paris, this class, a bonus", "bonus class paris this", "words"),
    ("no meat", "meat no", "words"),
    ("", "", "empty"),
    ("please, thanks", "", "empty"),
    ("...", "", "empty"),
    ("👍", "", "empty"),
]


@pytest.mark.parametrize("group", SAME, ids=lambda group: group[0])
def test_one_fact_in_other_words_gives_one_key(group: list[str]) -> None:
    keys = {text: normalize(text).key for text in group}
    assert len(set(keys.values())) == 1, keys


@pytest.mark.parametrize(("one", "other"), DIFFERENT)
def test_meaning_flips_give_other_keys(one: str, other: str) -> None:
    assert normalize(one).key != normalize(other).key


@pytest.mark.parametrize(("raw", "key", "kind"), KEYS)
def test_key_and_kind(raw: str, key: str, kind: str) -> None:
    normal = normalize(raw)
    assert (normal.key, normal.kind) == (key, kind)


def test_wording_keeps_the_users_words_tidied() -> None:
    assert normalize("  Plain \n words,\tplease!! ").wording == "Plain words, please"
    assert normalize("«Porto»").wording == "Porto"
    assert normalize("$200").wording == "$200"  # a currency symbol is not punctuation
    assert normalize("a\x00b\ud800c") == Normal("bc", "a bc", "words")  # control char, lone surrogate
    long = normalize("word " * 3000)
    assert len(long.wording) <= LIMIT and long.wording.startswith("word word")
    assert long.key == "word"


def test_filler_never_holds_a_negation_or_bound() -> None:
    assert not _FILLER & _KEEP
    assert {"no", "not", "without", "never", "none", "except", "under", "over", "less", "more"} <= _KEEP


def test_settle_counts_a_restatement_for_the_earlier_key() -> None:
    assert settle(normalize("a balcony in Porto"), ["porto"]) == "porto"
    assert settle(normalize("Go and SQLite with htmx"), ["go sqlite", "go", "htmx"]) == "go sqlite"
    assert settle(normalize("Go and SQLite with htmx"), ["htmx sqlite", "go sqlite"]) == "go sqlite"  # tie
    assert settle(normalize("Lisbon"), ["porto"]) == "lisbon"
    assert settle(normalize("porto"), []) == "porto"


def test_settle_never_crosses_a_negation_or_a_measure() -> None:
    assert settle(normalize("no meat"), ["meat"]) == "meat no"
    assert settle(normalize("not in Porto"), ["porto"]) == "not porto"
    assert settle(normalize("one day in Porto"), ["1 day"]) == "1 day porto"  # a duration key
    assert settle(normalize("under 500 euros"), ["500 EUR"]) == "<= 500 EUR"
    assert settle(normalize("500 euros"), ["500 EUR", "<= 500 EUR"]) == "500 EUR"
    assert settle(normalize("please"), ["porto"]) == ""
    assert settle(normalize("Porto"), ["", "Porto", "porto  x", None]) == "porto"  # type: ignore[list-item]


@pytest.mark.parametrize(
    "raw",
    [
        "1" * 10_000,
        "1." * 5_000,
        "500 € " * 2_000,
        "€" * 10_000,
        "👍🏽" * 5_000,
        "مرحبا بالعالم " * 700,
        "\x00\x01\x1f\x7f" * 2_500,
        "\ud800\udfff" * 100,
        "9" * 30 + " weeks",
        "1e999 euros",
        "under over 500 €",
        "0 euros",
        "0 seconds",
    ],
    ids=lambda raw: repr(raw[:12]),
)
def test_odd_input_is_fast_and_bounded(raw: str) -> None:
    started = time.perf_counter()
    normal = normalize(raw)
    assert time.perf_counter() - started < 0.5
    assert len(normal.key) <= LIMIT and len(normal.wording) <= LIMIT
    assert normal.kind in {"amount", "duration", "words", "empty"}


FUZZ = settings(max_examples=400, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])  # fmt: skip
ANSWERS = st.text(max_size=200) | st.lists(
    st.sampled_from(["500", "two", "€", "$", "euros", "weeks", "under", "no", "at most", "a", "Porto", ".", "1.5"]),
    max_size=8,
).map(" ".join)


@FUZZ
@given(ANSWERS, st.lists(st.text(max_size=40), max_size=4))
def test_any_text_gives_a_bounded_stable_normal(raw: str, earlier: list[str]) -> None:
    normal = normalize(raw)
    assert normal == normalize(raw)
    assert len(normal.key) <= LIMIT and len(normal.wording) <= LIMIT
    assert normal.kind in {"amount", "duration", "words", "empty"}
    assert (normal.kind == "empty") == (normal.key == "")
    assert normal.wording == normal.wording.strip()
    if len(raw) < LIMIT:  # the shown wording stands for the same value unless it had to be cut
        assert normalize(normal.wording).key == normal.key
    settled = settle(normal, [*earlier, *(normalize(text).key for text in earlier)])
    assert settled == normal.key or set(settled.split()) <= set(normal.key.split())
