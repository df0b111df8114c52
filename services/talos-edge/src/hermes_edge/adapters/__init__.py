"""I/O adapters of the edge: one per model-server wire format."""

from __future__ import annotations

import aiohttp

from hermes_proto.backends import BackendConfig

from hermes_edge.adapters.anthropic import AnthropicAdapter
from hermes_edge.adapters.http_chat import HttpChatAdapter, TextSink
from hermes_edge.adapters.ollama import OllamaAdapter
from hermes_edge.adapters.openai_compat import OpenAICompatAdapter
from hermes_edge.adapters.session import new_session

ADAPTERS: dict[str, type[HttpChatAdapter]] = {
    "openai": OpenAICompatAdapter,
    "ollama": OllamaAdapter,
    "anthropic": AnthropicAdapter,
}


def build_adapter(backend: BackendConfig, session: aiohttp.ClientSession) -> HttpChatAdapter:
    """The adapter for ``backend.type`` talking to :attr:`~hermes_proto.backends.BackendConfig.base_url` through
    ``session`` (see :func:`new_session`), an OpenAI-compatible one with the backend's ``tool_calling``; raises
    ``KeyError`` for an unknown type (``load_backend`` already rejects those)."""
    key = backend.key.get_secret_value() if backend.key else None
    if backend.type == "openai":
        return OpenAICompatAdapter(session, backend.base_url, key, tool_calling=backend.tool_calling)
    return ADAPTERS[backend.type](session, backend.base_url, key)


__all__ = [
    "ADAPTERS",
    "AnthropicAdapter",
    "HttpChatAdapter",
    "OllamaAdapter",
    "OpenAICompatAdapter",
    "TextSink",
    "build_adapter",
    "new_session",
]
