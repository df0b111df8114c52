"""Free text a person typed (an idea, an answer), made safe to store and show: one rule for every way in (the
gateway's REST and OpenAI-compatible routes, Telegram, commands published straight to the bus).

:func:`clean_text` NFKC-normalises, drops control characters (tab and newline stay; CR LF and lone CR become a
newline), drops the bidirectional controls that reorder what a reader sees (embeddings, overrides, isolates and the
directional marks), trims, and refuses text that is empty or made only of invisible characters (zero-width spaces
and joiners, other format characters, combining marks with nothing to combine with, fillers that render blank).
Zero-width joiners inside visible text stay: emoji sequences and some scripts need them.
"""

from __future__ import annotations

import re
import unicodedata

from prometheus_client import Counter

BIDI_CONTROLS = frozenset(
    "\u061c"  # ARABIC LETTER MARK
    "\u200e\u200f"  # LEFT-TO-RIGHT / RIGHT-TO-LEFT MARK
    "\u202a\u202b\u202c\u202d\u202e"  # embeddings, pop, overrides (LRE, RLE, PDF, LRO, RLO)
    "\u2066\u2067\u2068\u2069"  # isolates (LRI, RLI, FSI, PDI)
)
"""Characters that change the display order of the text around them: never kept."""
BLANK_FILLERS = frozenset("\u115f\u1160\u3164\uffa0\u2800")
"""Letters and symbols that render as blank space (Hangul fillers, the empty Braille pattern)."""
TRIMMED_CATEGORIES = frozenset({"Cc", "Cf", "Zs", "Zl", "Zp"})
"""Unicode general categories trimmed from both ends: controls, format characters (zero-width space, joiners, word
joiner, BOM, tags) and separators (spaces)."""
INVISIBLE_CATEGORIES = TRIMMED_CATEGORIES | {"Mn", "Me"}
"""Categories that show nothing on their own: the trimmed ones, and non-spacing and enclosing marks (which show only
on a base character, so they are never trimmed off one)."""
TEXT_REFUSED = Counter(
    "hermes_text_refused_total",
    "Typed text refused by clean_text; what: idea, answer...; reason: empty, invisible",
    ["what", "reason"],
)
_NEWLINES = re.compile("\r\n?|[\u2028\u2029]")


class TextRefused(ValueError):
    """Text with nothing to show. ``reason``: ``empty`` (nothing but whitespace) or ``invisible`` (characters that
    show nothing: zero-width and format characters, controls, lone combining marks, blank fillers)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def invisible(char: str) -> bool:
    """Whether ``char`` (one character) shows nothing on its own (:data:`INVISIBLE_CATEGORIES`,
    :data:`BLANK_FILLERS`)."""
    return char in BLANK_FILLERS or unicodedata.category(char) in INVISIBLE_CATEGORIES


def _trimmed(char: str) -> bool:
    return char in BLANK_FILLERS or unicodedata.category(char) in TRIMMED_CATEGORIES


def _drop_controls(text: str) -> str:
    """``text`` without control characters (but newline and tab) and :data:`BIDI_CONTROLS`. A lone surrogate stays:
    it cannot be encoded, and the encoder's refusal says so (the gateway's 400 ``invalid_text``)."""
    return "".join(c for c in text if c in "\n\t" or (c not in BIDI_CONTROLS and unicodedata.category(c) != "Cc"))


def normalize_text(text: str) -> str:
    """``text`` with line breaks made ``\\n``, control characters (but ``\\n`` and ``\\t``) and
    :data:`BIDI_CONTROLS` removed, NFKC-normalised, and whitespace, controls and format characters trimmed from both
    ends. Never refuses: the result may be empty or invisible (see :func:`clean_text`). Idempotent."""
    text = _drop_controls(unicodedata.normalize("NFKC", _drop_controls(_NEWLINES.sub("\n", text))))
    start, end = 0, len(text)
    while start < end and _trimmed(text[start]):
        start += 1
    while end > start and _trimmed(text[end - 1]):
        end -= 1
    return text[start:end]


def clean_text(text: str, what: str = "text") -> str:
    """:func:`normalize_text` of ``text``, when something visible is left. Raises :class:`TextRefused`, its message
    naming ``what`` (e.g. "idea"): ``empty`` when ``text`` is only whitespace, ``invisible`` when it holds other
    characters but none that shows (:func:`invisible`)."""
    cleaned = normalize_text(text)
    if any(not invisible(c) for c in cleaned):
        return cleaned
    if any(not c.isspace() for c in text):
        TEXT_REFUSED.labels(what, "invisible").inc()
        raise TextRefused("invisible", f"The {what} holds only invisible characters.")
    TEXT_REFUSED.labels(what, "empty").inc()
    raise TextRefused("empty", f"The {what} is empty.")
