"""Canonical keys for answers to clarifying questions, so that votes per value add up.

`normalize(raw)` -> `Normal(key, wording, kind)`. `wording`: the user's words with control chars and
lone surrogates dropped, whitespace folded, surrounding punctuation stripped, case kept. Key and
wording are <= 120 chars; the key reads the first 2,000 chars (cut at a space). Kinds:

- "amount": one number with a currency and else only filler, "about"/"around"/"budget"... and at
  most one bound. Key "500 EUR", "12.5 USD" (no trailing zeros, ISO 4217). `price-parser` finds
  amount and currency; `_CURRENCY` maps € $ £, euro(s), dollar(s), pound(s) and codes ("$" = USD);
  another three-letter code price-parser reports ("CHF") is kept.
- "duration": number + time unit and else only those words and "in", "within", "from now", "next"
  ("in 3 weeks" == "within three weeks" == "3 weeks from now"). `pytimeparse2` turns the rest
  ("3 weeks", "1h30m") into seconds; the key takes the largest of month (30 days, only when months
  or years were said, a year being 12 months), day, hour, minute, second that divides it:
  "2 weeks" == "14 days" == "a fortnight", "48 hours" == "2 days", "90 minutes" stays.
- Bounds belong to amount and duration keys: under, below, less than, at most, max, up to, no more
  than, tops -> "<= 500 EUR"; over, above, more than, at least, minimum, no less than -> ">=".
  So "under 500 euros" != "500 euros", and "under" == "at most" (both said for one cap).
- "words": anything else. Key: sorted unique tokens (runs of Unicode letters/digits, "12.5" one
  token) of the NFKC, case-folded text, apostrophes dropped ("don't" -> "dont"), number words as
  digits by `text2num` ("two" -> "2", "first" -> "1st"), a trailing "s" folded off alphabetic
  tokens over 3 letters unless "ss"/"us"/"is" ("pages" -> "page"; "class", "paris" stay), without
  `_FILLER`: articles, politeness, the pronouns and auxiliaries of "I would like", prepositions
  that only frame ("on weekends" == "at weekends"), "and" (lists compare as sets) and the cap
  words at/most/max/maximum ("2 pages max" == "2 pages"). `_KEEP` (negations, bounds) is never
  filler: "no meat" != "meat", "without sugar" != "with sugar", "at least 2 pages" != "2 pages".
- "empty": no content token (blank, punctuation, emoji, filler only). Key "".
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

from price_parser import Price
from pytimeparse2 import parse as parse_seconds
from text_to_num import alpha2digit

LIMIT = 120
_READ = 2000
_FILLER = frozenset(
    "a an the only just please thanks thank at most max maximum on in of for to with and "
    "it its is be are am should would could will i we me my our want like prefer id im".split()
)
_KEEP = frozenset(
    "no not without never none nothing except under over less more least than below above "
    "neither nor dont cant wont isnt non".split()
)
_MEASURE_EXTRA = _FILLER | frozenset(
    "about around roughly approximately approx circa budget total within from now next or so".split()
)
_CURRENCY = {"€": "EUR", "eur": "EUR", "euro": "EUR", "euros": "EUR", "$": "USD", "us$": "USD",
             "usd": "USD", "dollar": "USD", "dollars": "USD", "£": "GBP", "gbp": "GBP",
             "pound": "GBP", "pounds": "GBP"}  # fmt: skip
_BOUND = re.compile(
    r"(?P<cap>\b(?:no|not) more than\b|\bunder\b|\bbelow\b|\bless than\b|\bat most\b|"
    r"\bmax(?:imum)?\b|\bup to\b|\btops\b|<=?|≤)|"
    r"(?P<floor>\b(?:no|not) less than\b|\bover\b|\babove\b|\bmore than\b|\bat least\b|"
    r"\bminimum\b|>=?|≥)"
)
_TOKEN = re.compile(r"\d+(?:[.,]\d+)+|[^\W_]+")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_MONTHS = re.compile(r"(?<![a-z])(?:mos?|mths?|months?)\b")
_YEARS = re.compile(r"\b(\d+(?:\.\d+)?)\s*(?:years?|yrs?)\b")
_ONE_UNIT = re.compile(r"\b(?:a|an)\s+(?=(?:second|minute|hour|day|week|month|year)\b)")
_FORTNIGHT = re.compile(r"\b(?:(?:a|1)\s+)?fortnight\b")
_UNITS = ((2592000, "month"), (86400, "day"), (3600, "hour"), (60, "minute"), (1, "second"))


@dataclass(frozen=True)
class Normal:
    key: str  # canonical form; votes are counted per key; <= 120 chars
    wording: str  # the user's words, tidied; <= 120 chars, case kept
    kind: str  # "amount" | "duration" | "words" | "empty"


def normalize(raw: str) -> Normal:
    """Canonical key, tidy wording and kind of one answer; pure, never raises.

    normalize("under five hundred euros") == Normal("<= 500 EUR", "under five hundred euros", "amount")
    """
    clean = _printable(raw)
    head = clean if len(clean) <= _READ else clean[:_READ].rsplit(" ", 1)[0]
    text = " ".join(unicodedata.normalize("NFKC", head).replace("'", "").replace("’", "").split())
    try:
        text = alpha2digit(text, "en", threshold=0)
    except Exception:  # text2num is native code: a failure there must not lose the answer
        pass
    wording = _strip(_strip(clean)[:LIMIT])
    measured = _measure(text, _unit_words(text.casefold()))
    if measured is not None:
        return Normal(measured[0][:LIMIT], wording, measured[1])
    tokens = _content(text.casefold())
    return Normal(_join(tokens), wording, "words" if tokens else "empty")


def settle(normal: Normal, earlier: Iterable[str]) -> str:
    """The key to vote for, given the keys already voted for by the same user in the same slot.

    A words answer that restates an earlier words key in more words (every token of that key is
    among the answer's tokens, and no extra token is a negation or bound of `_KEEP`) counts for
    that key; of several, the one with most tokens, ties to the smallest string. Amounts,
    durations and empty answers keep their own key (equal keys are the same vote anyway).
    """
    if normal.kind != "words":
        return normal.key
    mine = set(normal.key.split())
    fits = [
        key
        for key in earlier
        if isinstance(key, str)
        and key
        and set(key.split()) <= mine
        and not (mine - set(key.split())) & _KEEP
        and key == _join(_content(key))
        and _measure(key, key) is None
    ]
    return min(fits, key=lambda key: (-len(key.split()), key)) if fits else normal.key


def _measure(text: str, folded: str) -> tuple[str, str] | None:
    """(key, kind) when the answer is only an amount or a duration, with at most one bound."""
    bounds = {"<= " if m.group("cap") else ">= " for m in _BOUND.finditer(folded)}
    rest = [t for t in _TOKEN.findall(_BOUND.sub(" ", folded)) if t not in _MEASURE_EXTRA]
    if len(bounds) > 1 or not rest or len(" ".join(rest)) > 60:
        return None
    op = bounds.pop() if bounds else ""
    if sum(1 for t in rest if _NUMBER.fullmatch(t)) == 1 and (amount := _amount(text, rest)):
        return op + amount, "amount"
    joined = " ".join(rest)
    if not (re.search(r"\d", joined) and re.search(r"[^\W\d_]", joined)):
        return None
    seconds = parse_seconds(joined)  # None when it is not a duration; it does not raise
    if not isinstance(seconds, int | float) or not 0 < seconds < 10**12:
        return None
    total = Decimal(str(seconds))
    for size, unit in _UNITS:
        if total % size == 0 and (size != 2592000 or _MONTHS.search(joined)):
            count = total / size
            return f"{op}{_num(count)} {unit}{'' if count == 1 else 's'}", "duration"
    return f"{op}{_num(total)} seconds", "duration"


def _unit_words(folded: str) -> str:
    """For durations only: "a week" -> "1 week", fortnight -> "2 weeks", years -> months."""
    folded = _ONE_UNIT.sub("1 ", folded.replace("half an hour", "30 minutes"))
    folded = _FORTNIGHT.sub("2 weeks", folded)
    return _YEARS.sub(lambda m: f"{_num(Decimal(m.group(1)) * 12)} months", folded)


def _amount(text: str, rest: list[str]) -> str | None:
    """'500 EUR' when `rest` is one number and currency words only, and price-parser agrees."""
    price = Price.fromstring(text)
    said = (price.currency or "").strip()
    code = _CURRENCY.get(said.casefold()) or (said if re.fullmatch("[A-Z]{3}", said) else None)
    named = {_CURRENCY[t] for t in rest if t in _CURRENCY}
    if code is None and len(named) == 1:
        code = named.pop()
    if price.amount is None or code is None or named - {code}:
        return None
    if any(not _NUMBER.fullmatch(t) and t not in _CURRENCY and t != code.lower() for t in rest):
        return None
    return f"{_num(abs(price.amount))} {code}"


def _content(folded: str) -> list[str]:
    tokens = (t for t in _TOKEN.findall(folded) if t not in _FILLER)
    return sorted({_fold(t) for t in tokens} - _FILLER)


def _fold(token: str) -> str:
    plural = len(token) > 3 and token.endswith("s") and not token.endswith(("ss", "us", "is"))
    return token[:-1] if plural and token.isalpha() else token


def _join(tokens: list[str]) -> str:
    """Tokens joined by one space, cut at a token boundary to fit LIMIT."""
    key = ""
    for token in tokens:
        if len(key) + len(token) + 1 > LIMIT:
            break
        key = f"{key} {token}" if key else token
    return key or (tokens[0][:LIMIT] if tokens else "")


def _num(value: Decimal) -> str:
    """A number without trailing zeros or exponent: 1500, 12.5."""
    return f"{value.normalize():f}"


def _printable(raw: str) -> str:
    """Control characters as spaces, lone surrogates dropped, whitespace folded to one space."""
    cats = {"Cc": " ", "Cs": ""}
    return " ".join("".join(cats.get(unicodedata.category(c), c) for c in str(raw)).split())


def _strip(text: str) -> str:
    """Without surrounding punctuation, separators and other invisible characters."""
    start, end = 0, len(text)
    while start < end and unicodedata.category(text[start])[0] in "PZC":
        start += 1
    while end > start and unicodedata.category(text[end - 1])[0] in "PZC":
        end -= 1
    return text[start:end]
