"""Token estimates and cost in cents, shared by the router (estimate before dispatch) and the edge
(estimates when a provider reports no usage)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from hermes_proto.base import ChatMessage

# A common rule of thumb for English text with BPE tokenizers (OpenAI's and Llama's): ~4 characters per token.
CHARS_PER_TOKEN = 4
# Chat templates wrap every message in role markers; OpenAI documents ~3-4 tokens per message plus 3 to
# prime the reply.
TOKENS_PER_MESSAGE = 4
TOKENS_PER_REPLY = 3
MTOK = 1_000_000


def estimate_tokens(text: str) -> int:
    """Estimated token count of ``text``: ``ceil(len(text) / 4)``, 0 for empty text. Real counts always win."""
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def estimate_prompt_tokens(messages: Sequence[ChatMessage]) -> int:
    """Estimated prompt tokens of a chat: per message ``estimate_tokens(content) + 4`` (role markers),
    plus 3 to prime the reply."""
    return sum(estimate_tokens(m.content) + TOKENS_PER_MESSAGE for m in messages) + TOKENS_PER_REPLY


def cost_cents(prompt_tokens: int, completion_tokens: int, price_in: float, price_out: float) -> float:
    """Cost in cents of a call: ``(prompt_tokens × price_in + completion_tokens × price_out) / 1,000,000``,
    prices in cents per million tokens (the unit providers publish), rounded to 1e-6 cent."""
    return round((prompt_tokens * price_in + completion_tokens * price_out) / MTOK, 6)
