"""Tool calling by constrained decoding, for a model whose chat template knows no tools (``TOOL_CALLING=constrained``).

The tools are described in the system message, and the model is told to reply with ONE JSON object: a tool call
``{"tool": "<name>", "arguments": {...}}`` or an answer ``{"answer": "<text>"}``. The server is asked to make every
reply such an object: ``response_format: {"type": "json_object", "schema": <reply schema>}``, which llama-cpp-python's
server turns into a grammar that the sampler follows token by token, so the reply always parses and always names an
offered tool with arguments of its schema (measured with the embedded SmolLM2-135M, llama-cpp-python 0.3.36, its
GGUF's own chatml template; services/talos-edge/README.md, "Tools").

The reply schema is an ``anyOf`` with one branch per tool (``tool``: that name as a ``const``, ``arguments``: the
tool's parameters schema) and one for the answer; ``tool_choice`` ``required`` keeps only the tool branches, a tool's
name only that tool's branch, ``none`` only the answer. The parameters schemas are simplified for the grammar first
(:func:`grammar_schema`): length and range bounds are dropped (the server unrolls ``maxLength: 4096`` into thousands
of nested rules; the tool service checks arguments anyway) and so are descriptions, titles, regex patterns and
formats (a schema the server cannot convert silently falls back to "any JSON").

The system message ends with an example of the format, a call of the first callable tool that needs no arguments
(``{"tool": "file_list", "arguments": {}}`` for the ``fileops`` profile): without it SmolLM2-135M filled
``file_list``'s optional ``path`` with a made-up file name on turn 1 (``my-workspace/files.txt``, 3 seeds of 3).

The conversation is sent so that the chat template shows it: an assistant message's tool calls as the JSON objects
the model produced (one a line) in its ``content``, a tool result as a ``tool`` message with its ``content``
(rendered by the GGUF's template as ``<|im_start|>tool\\n<content><|im_end|>``) and its ``tool_call_id``, which the
server requires.

Nothing here does I/O.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from hermes_proto.base import ChatMessage
from hermes_proto.tools import ToolCall, ToolSpec

from hermes_edge.domain import AUTO, NO_TOOL, REQUIRED, arguments_text, derived_call_id, tool_arguments

TOOL_KEY, ARGUMENTS_KEY, ANSWER_KEY = "tool", "arguments", "answer"

_SCHEMA_MAPS = frozenset({"properties", "patternProperties", "$defs", "definitions", "dependentSchemas"})
"""Keywords whose value maps names to schemas (the names are not keywords: a property may be called ``pattern``)."""
_SCHEMA_LISTS = frozenset({"anyOf", "oneOf", "allOf", "prefixItems"})
_SCHEMA_VALUES = frozenset(
    {"items", "additionalProperties", "additionalItems", "not", "contains", "propertyNames", "if", "then", "else"}
)
_GRAMMAR_DROPPED = frozenset(
    {
        "description",
        "title",
        "default",
        "examples",
        "$comment",
        "$schema",
        "$id",
        "maxLength",
        "maxItems",
        "maxProperties",
        "pattern",
        "format",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "multipleOf",
        "deprecated",
        "readOnly",
        "writeOnly",
    }
)
"""Keywords left out of the grammar's schema: documentation, and bounds that make the server's grammar huge
(``maxLength``) or that it may fail to convert (``pattern``, ``format``)."""
_PROMPT_DROPPED = frozenset(
    {
        "$schema",
        "$id",
        "$comment",
        "title",
        "examples",
        "maxLength",
        "minLength",
        "maxItems",
        "minItems",
        "maximum",
        "minimum",
        "additionalProperties",
    }
)
"""Keywords left out of the tools' description in the prompt (a 2048-token context has no room for them)."""
MAX_MIN_LENGTH = 16
"""A ``minLength`` / ``minItems`` up to this is kept in the grammar (each unit is one rule); larger ones are dropped."""


def _simplified(schema: Any, dropped: frozenset[str], *, grammar: bool) -> Any:
    """``schema`` without the ``dropped`` keywords, at every level (names under ``properties`` are kept)."""
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in dropped:
            continue
        if grammar and key in ("minLength", "minItems") and (not isinstance(value, int) or value > MAX_MIN_LENGTH):
            continue
        if key in _SCHEMA_MAPS and isinstance(value, dict):
            out[key] = {name: _simplified(sub, dropped, grammar=grammar) for name, sub in value.items()}
        elif key in _SCHEMA_LISTS and isinstance(value, list):
            out[key] = [_simplified(sub, dropped, grammar=grammar) for sub in value]
        elif key in _SCHEMA_VALUES:
            out[key] = _simplified(value, dropped, grammar=grammar)
        else:
            out[key] = value
    return out


def grammar_schema(parameters: dict[str, Any]) -> dict[str, Any]:
    """A tool's parameters schema as the grammar gets it: without documentation, patterns, formats, maximum lengths
    and numeric bounds; a ``minLength`` / ``minItems`` above :data:`MAX_MIN_LENGTH` dropped."""
    return _simplified(parameters, _GRAMMAR_DROPPED, grammar=True)


def prompt_schema(parameters: dict[str, Any]) -> dict[str, Any]:
    """A tool's parameters schema as the prompt describes it: types, descriptions, enums, required; no bounds."""
    return _simplified(parameters, _PROMPT_DROPPED, grammar=False)


def offered(tools: Sequence[ToolSpec], choice: str) -> tuple[list[ToolSpec], bool]:
    """The tools the reply may call and whether it may answer instead, for ``choice`` (see
    :func:`hermes_edge.domain.tool_choice`): ``auto`` → all, may answer; ``required`` → all, must call; ``none`` →
    none, must answer; a tool's name → that tool, must call (a name not offered counts as ``required``)."""
    if choice == AUTO:
        return list(tools), True
    if choice == NO_TOOL:
        return [], True
    if choice == REQUIRED:
        return list(tools), False
    return [tool for tool in tools if tool.name == choice] or list(tools), False


def reply_schema(tools: Sequence[ToolSpec], choice: str) -> dict[str, Any]:
    """The JSON Schema every reply must match: ``{"anyOf": [<one object per tool>, <the answer object>]}``, as
    :func:`offered` allows."""
    callable_tools, may_answer = offered(tools, choice)
    branches: list[dict[str, Any]] = [
        {
            "type": "object",
            "properties": {TOOL_KEY: {"const": tool.name}, ARGUMENTS_KEY: grammar_schema(tool.parameters)},
            "required": [TOOL_KEY, ARGUMENTS_KEY],
            "additionalProperties": False,
        }
        for tool in callable_tools
    ]
    if may_answer:
        branches.append(
            {
                "type": "object",
                "properties": {ANSWER_KEY: {"type": "string"}},
                "required": [ANSWER_KEY],
                "additionalProperties": False,
            }
        )
    return {"anyOf": branches}


def tools_prompt(tools: Sequence[ToolSpec], choice: str) -> str:
    """What the system message says about the tools and the reply format, for ``choice``, ending with an example:
    a call of the first callable tool that needs no arguments, if there is one (a small model copies the shape of
    the example; without one SmolLM2-135M filled optional arguments with made-up paths)."""
    callable_tools, may_answer = offered(tools, choice)
    lines = ["# Tools", "You can call these tools (name: what it does; its arguments as a JSON Schema):"]
    lines += [
        f"- {tool.name}: {tool.description} Arguments: {json.dumps(prompt_schema(tool.parameters), separators=(',', ':'))}"
        for tool in tools
    ]
    call = f'{{"{TOOL_KEY}": "<tool name>", "{ARGUMENTS_KEY}": {{<its arguments>}}}}'
    answer = f'{{"{ANSWER_KEY}": "<your reply to the user>"}}'
    lines.append("")
    if not callable_tools:
        lines.append(f"Do not call a tool now. Reply with ONE JSON object and nothing else: {answer}")
    elif may_answer:
        lines += [
            "Reply with ONE JSON object and nothing else:",
            f"- to call a tool: {call}",
            f"- to answer the user: {answer}",
        ]
    elif len(callable_tools) == 1 and callable_tools[0].name == choice:
        lines.append(
            f"Call the tool {choice} now. Reply with ONE JSON object and nothing else: "
            f'{{"{TOOL_KEY}": "{choice}", "{ARGUMENTS_KEY}": {{<its arguments>}}}}'
        )
    else:
        lines.append(f"Call a tool now. Reply with ONE JSON object and nothing else: {call}")
    bare = next((tool for tool in callable_tools if not tool.parameters.get("required")), None)
    if bare is not None:
        lines.append(f"Example: {call_object(ToolCall(call_id='', name=bare.name))}")
    return "\n".join(lines)


def call_object(call: ToolCall) -> str:
    """A tool call as the model writes it in constrained mode: ``{"tool": name, "arguments": {...}}``; arguments
    kept as ``{"_raw": text}`` go back as the model wrote them."""
    return f'{{"{TOOL_KEY}": {json.dumps(call.name)}, "{ARGUMENTS_KEY}": {arguments_text(call.arguments)}}}'


def constrained_messages(messages: Sequence[ChatMessage], tools: Sequence[ToolSpec], choice: str) -> list[dict]:
    """The conversation in the shape the chat template renders: the tools' description appended to the first
    system message (or a new first system message), an assistant's tool calls as JSON objects in its content (after
    its text, if any), a tool result as a ``tool`` message with its content and ``tool_call_id``."""
    out: list[dict[str, Any]] = []
    described = False
    for m in messages:
        if m.role == "system" and not described:
            out.append({"role": "system", "content": f"{m.content}\n\n{tools_prompt(tools, choice)}".lstrip()})
            described = True
        elif m.role == "assistant" and m.tool_calls:
            parts = [m.content] if m.content else []
            out.append({"role": "assistant", "content": "\n".join([*parts, *map(call_object, m.tool_calls)])})
        elif m.role == "tool":
            out.append({"role": "tool", "content": m.content, "tool_call_id": m.tool_call_id or ""})
        else:
            out.append({"role": m.role, "content": m.content})
    if not described:
        out.insert(0, {"role": "system", "content": tools_prompt(tools, choice)})
    return out


def parse_reply(text: str) -> tuple[str, list[ToolCall]]:
    """The model's JSON object as (answer text, tool calls): ``{"tool", "arguments"}`` → ("", [the call, id
    ``call_0``]); ``{"answer"}`` → (the answer, []); anything else (not JSON, another shape: only possible when the
    server did not constrain the reply) → (``text``, []). Arguments that are not an object are kept as
    ``{"_raw": <their JSON>}``. Control characters inside strings are accepted: the server's grammar lets the model
    write a raw newline in a string, which strict JSON forbids."""
    try:
        value = json.loads(text, strict=False)
    except ValueError:
        return text, []
    if not isinstance(value, dict):
        return text, []
    name = value.get(TOOL_KEY)
    if isinstance(name, str) and name:
        arguments = value.get(ARGUMENTS_KEY)
        decoded = (
            arguments
            if isinstance(arguments, dict)
            else tool_arguments(None if arguments is None else json.dumps(arguments))
        )
        return "", [ToolCall(call_id=derived_call_id(0), name=name, arguments=decoded)]
    answer = value.get(ANSWER_KEY)
    if isinstance(answer, str):
        return answer, []
    return text, []
