"""The built-in tools: their specs (:data:`BUILTIN_SPECS`) and one entry point (:func:`run_builtin`).

Where each runs: ``shell`` and ``python`` run in the sandbox (:mod:`hermes_tools.sandbox`); the file tools too, as
a small helper script (:mod:`hermes_tools.files`) after the host has resolved the path inside the workspace;
``web_fetch`` runs in the service through :func:`~hermes_proto.outbound_http.guarded_client` (the one client that
refuses internal addresses), text extraction in a worker thread; ``memory_search`` calls the injected callable.
Every output is redacted (:class:`~hermes_tools.redact.Redactor`) and, when ``max_output_chars`` is set, cut to
it with the whole kept in the workspace (:func:`~hermes_tools.redact.truncate`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import os
import sys
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx
import jsonschema
import trafilatura

from hermes_proto.outbound import OutboundPolicy, OutboundRefused, Resolver
from hermes_proto.outbound_http import guarded_client
from hermes_proto.tools import ToolSpec

from .errors import ToolError
from .redact import Redactor, truncate
from .sandbox import SandboxLimits, SandboxResult, run_sandboxed
from .workspace import relative_inside

MemorySearch = Callable[[str, int], Awaitable[list[dict[str, Any]]]]
"""``(query, limit) -> results``: the memory service's search, wired by the tool service."""

MAX_REDIRECTS = 5
_FILE_HELPER_OUTPUT = 4 * 1024 * 1024  # a file helper's JSON reply may exceed the command output limit
_TEXT_TYPES = ("text/", "application/json", "application/xml", "application/xhtml", "application/javascript")


def _default_outbound() -> OutboundPolicy:
    return OutboundPolicy.parse(os.environ.get("HERMES_OUTBOUND_ALLOW"))


@dataclass
class ToolContext:
    """What one call runs with. ``workspace``: the project's workspace (host path); ``limits``: the sandbox's;
    ``network``: network granted to this call (sandboxed commands only); ``memory_search``: None when the memory
    service is not wired; ``outbound``/``resolver``: for ``web_fetch`` (default ``HERMES_OUTBOUND_ALLOW``);
    ``max_output_chars``: what the model gets of an output (None: not cut here, the caller cuts, as the executor
    does with its own limit); ``call_id``: names the full-output file;
    ``fetch_timeout``: seconds for a whole ``web_fetch``; ``fetch_max_bytes``: body bytes read."""

    workspace: Path
    limits: SandboxLimits = field(default_factory=SandboxLimits)
    network: bool = False
    memory_search: MemorySearch | None = None
    outbound: OutboundPolicy = field(default_factory=_default_outbound)
    resolver: Resolver | None = None
    redactor: Redactor = field(default_factory=Redactor.from_env)
    max_output_chars: int | None = None
    call_id: str = field(default_factory=lambda: uuid.uuid4().hex[:16])
    fetch_timeout: float = 20.0
    fetch_max_bytes: int = 2 * 1024 * 1024


@dataclass(frozen=True)
class ToolOutput:
    """A call's result. ``text``: what the model reads (redacted, at most about ``max_output_chars`` when set);
    ``truncated``: part of the output is not in ``text`` (cut here, or the tool itself stopped: output limit, file
    list or search cap, fetch size); ``full_output_path``: where the whole text is, relative to the workspace (None
    when nothing was cut here); ``data``: structured details (exit code, paths, counts)."""

    text: str
    truncated: bool = False
    full_output_path: str | None = None
    data: dict[str, Any] = field(default_factory=dict)


def _object(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": required, "additionalProperties": False}


_PATH = {"type": "string", "minLength": 1, "maxLength": 4096, "description": "Path relative to the workspace."}
BUILTIN_SPECS: dict[str, ToolSpec] = {
    spec.name: spec
    for spec in (
        ToolSpec(
            name="file_read",
            description="Read a text file of the workspace, optionally a range of lines.",
            parameters=_object(
                {
                    "path": _PATH,
                    "offset": {"type": "integer", "minimum": 1, "description": "First line (1-based)."},
                    "limit": {"type": "integer", "minimum": 1, "maximum": 100_000, "description": "Lines to read."},
                },
                ["path"],
            ),
            read_only=True,
            permission="file_read",
        ),
        ToolSpec(
            name="file_list",
            description="List a directory of the workspace: names, types, sizes, modification times.",
            parameters=_object(
                {
                    "path": {**_PATH, "description": "Directory relative to the workspace (default: its root)."},
                    "glob": {"type": "string", "maxLength": 1000, "description": "Keep entries matching this glob."},
                    "recursive": {"type": "boolean", "description": "List subdirectories too."},
                },
                [],
            ),
            read_only=True,
            permission="file_read",
        ),
        ToolSpec(
            name="file_search",
            description="Search file contents of the workspace; returns file:line matches.",
            parameters=_object(
                {
                    "pattern": {"type": "string", "minLength": 1, "maxLength": 1000},
                    "literal": {"type": "boolean", "description": "Match the pattern as plain text, not a regex."},
                    "ignore_case": {"type": "boolean"},
                    "path": {
                        "type": "string",
                        "maxLength": 1000,
                        "description": "Glob of the files to search (default **: every file not hidden).",
                    },
                },
                ["pattern"],
            ),
            read_only=True,
            permission="file_read",
        ),
        ToolSpec(
            name="file_write",
            description="Create or overwrite a file of the workspace with the given content.",
            parameters=_object(
                {"path": _PATH, "content": {"type": "string", "maxLength": 10_000_000}}, ["path", "content"]
            ),
            permission="file_edit",
        ),
        ToolSpec(
            name="file_edit",
            description="Replace one exact, unique occurrence of `old` with `new` in a workspace file.",
            parameters=_object(
                {"path": _PATH, "old": {"type": "string", "minLength": 1}, "new": {"type": "string"}},
                ["path", "old", "new"],
            ),
            permission="file_edit",
        ),
        ToolSpec(
            name="shell",
            description="Run a shell command (sh -c) in the sandbox; the workspace is the working directory.",
            parameters=_object({"command": {"type": "string", "minLength": 1, "maxLength": 100_000}}, ["command"]),
            permission="shell",
        ),
        ToolSpec(
            name="python",
            description="Run Python code in the sandbox; the workspace is the working directory.",
            parameters=_object({"code": {"type": "string", "minLength": 1, "maxLength": 100_000}}, ["code"]),
            permission="python",
        ),
        ToolSpec(
            name="web_fetch",
            description="Fetch an http(s) URL and return its readable text.",
            parameters=_object({"url": {"type": "string", "minLength": 1, "maxLength": 8192}}, ["url"]),
            read_only=True,
            permission="web_fetch",
        ),
        ToolSpec(
            name="memory_search",
            description="Search the long-term memory.",
            parameters=_object(
                {
                    "query": {"type": "string", "minLength": 1, "maxLength": 2000},
                    "limit": {"type": "integer", "minimum": 1, "maximum": 50},
                },
                ["query"],
            ),
            read_only=True,
            permission="memory_search",
        ),
    )
}


@functools.cache
def _validator(name: str) -> jsonschema.protocols.Validator:
    schema = BUILTIN_SPECS[name].parameters
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    cls.check_schema(schema)
    return cls(schema)


def validate_arguments(name: str, arguments: Any) -> None:
    """Raises ``ToolError("invalid_arguments")`` (naming the first offending argument) unless ``arguments``
    fits the tool's schema; ``ToolError("unknown_tool")`` for a name that is not built in."""
    if name not in BUILTIN_SPECS:
        raise ToolError("unknown_tool", f"no built-in tool named {name!r}")
    if not isinstance(arguments, dict):
        raise ToolError("invalid_arguments", "the arguments must be a JSON object")
    error = jsonschema.exceptions.best_match(_validator(name).iter_errors(arguments))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "arguments"
        raise ToolError("invalid_arguments", f"{name}: {where}: {error.message[:300]}")


async def run_builtin(name: str, arguments: dict[str, Any], ctx: ToolContext) -> ToolOutput:
    """Run built-in tool ``name`` with ``arguments`` (validated against its schema first). Raises
    :class:`ToolError`: ``unknown_tool``, ``invalid_arguments``, ``path_outside_workspace``,
    ``sandbox_unavailable``, the file tools' codes (``file_not_found``, ``old_not_found``, ``old_not_unique``,
    ...), ``http_<status>``, ``outbound_refused``, ``timeout``. A command's failure (non-zero exit, time limit) is
    an output, not an error."""
    validate_arguments(name, arguments)
    text, data = await _HANDLERS[name](arguments, ctx)
    text = ctx.redactor.redact(text)
    spilled, path = False, None
    if ctx.max_output_chars:
        text, spilled, path = await asyncio.to_thread(
            truncate, text, ctx.max_output_chars, ctx.workspace, f"{name}-{ctx.call_id}"
        )
    return ToolOutput(text=text, truncated=spilled or bool(data.get("truncated")), full_output_path=path, data=data)


Result = tuple[str, dict[str, Any]]


@functools.cache
def _files_source() -> str:
    return Path(__file__).with_name("files.py").read_text(encoding="utf-8")


async def _file_op(op: str, request: dict[str, Any], ctx: ToolContext) -> Result:
    limits = dataclasses.replace(ctx.limits, max_output_bytes=max(ctx.limits.max_output_bytes, _FILE_HELPER_OUTPUT))
    argv = [sys.executable, "-I", "-c", _files_source(), op]
    result = await run_sandboxed(argv, ctx.workspace, limits, network=False, stdin=json.dumps(request).encode())
    if result.timed_out:
        raise ToolError("timeout", f"the file operation took longer than {limits.wall_seconds} s")
    try:
        reply = json.loads(result.stdout)
    except ValueError:
        detail = result.stderr.decode("utf-8", "replace").strip()[-500:]
        raise ToolError("tool_failed", f"the file operation failed (exit {result.exit_code}): {detail}") from None
    if not reply.get("ok"):
        raise ToolError(str(reply.get("code", "tool_failed")), str(reply.get("message", "")))
    return str(reply.get("text", "")), dict(reply.get("data") or {})


async def _file_read(args: dict[str, Any], ctx: ToolContext) -> Result:
    return await _file_op("read", {**args, "path": relative_inside(ctx.workspace, args["path"])}, ctx)


async def _file_list(args: dict[str, Any], ctx: ToolContext) -> Result:
    return await _file_op("list", {**args, "path": relative_inside(ctx.workspace, args.get("path") or ".")}, ctx)


async def _file_search(args: dict[str, Any], ctx: ToolContext) -> Result:
    return await _file_op("search", args, ctx)


async def _file_write(args: dict[str, Any], ctx: ToolContext) -> Result:
    return await _file_op("write", {**args, "path": relative_inside(ctx.workspace, args["path"])}, ctx)


async def _file_edit(args: dict[str, Any], ctx: ToolContext) -> Result:
    return await _file_op("edit", {**args, "path": relative_inside(ctx.workspace, args["path"])}, ctx)


def _render(result: SandboxResult, limits: SandboxLimits) -> Result:
    parts = [result.stdout.decode("utf-8", "replace")]
    if result.stderr:
        parts.append("[stderr]\n" + result.stderr.decode("utf-8", "replace"))
    if result.timed_out:
        parts.append(f"[killed: the wall time limit of {limits.wall_seconds:g} s was reached]")
    if result.truncated:
        parts.append(f"[killed: the output went past {limits.max_output_bytes} bytes]")
    parts.append(f"[exit code {result.exit_code}]")
    data = {
        "exit_code": result.exit_code,
        "timed_out": result.timed_out,
        "truncated": result.truncated,
        "duration_ms": result.duration_ms,
    }
    return "\n".join(p.rstrip("\n") for p in parts if p), data


async def _shell(args: dict[str, Any], ctx: ToolContext) -> Result:
    result = await run_sandboxed(["/bin/sh", "-c", args["command"]], ctx.workspace, ctx.limits, ctx.network)
    return _render(result, ctx.limits)


async def _python(args: dict[str, Any], ctx: ToolContext) -> Result:
    result = await run_sandboxed([sys.executable, "-c", args["code"]], ctx.workspace, ctx.limits, ctx.network)
    return _render(result, ctx.limits)


def _check_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ToolError("invalid_url", "web_fetch takes an http:// or https:// URL with a host")


async def _web_fetch(args: dict[str, Any], ctx: ToolContext) -> Result:
    url = args["url"].strip()
    _check_url(url)
    headers = {"User-Agent": "Hermes-web_fetch/1.0", "Accept": "text/html,text/plain;q=0.9,*/*;q=0.5"}
    try:
        async with (
            asyncio.timeout(ctx.fetch_timeout),
            guarded_client(ctx.outbound, timeout=ctx.fetch_timeout, headers=headers, resolver=ctx.resolver) as client,
        ):
            for _ in range(MAX_REDIRECTS + 1):
                async with client.stream("GET", url) as response:
                    location = response.headers.get("location")
                    if response.is_redirect and location:
                        url = urljoin(url, location)
                        _check_url(url)
                        continue
                    if not response.is_success:
                        reason = response.reason_phrase or ""
                        raise ToolError(
                            f"http_{response.status_code}", f"{url} answered {response.status_code} {reason}"
                        )
                    body, cut = await _read_capped(response, ctx.fetch_max_bytes)
                    return await _readable(url, response, body, cut)
            raise ToolError("too_many_redirects", f"more than {MAX_REDIRECTS} redirects")
    except OutboundRefused as exc:
        raise ToolError("outbound_refused", str(exc)) from None
    except (TimeoutError, httpx.TimeoutException):
        raise ToolError("timeout", f"fetching took longer than {ctx.fetch_timeout:g} s") from None
    except httpx.HTTPError as exc:
        raise ToolError("fetch_failed", f"{type(exc).__name__}: {exc}"[:300]) from None


async def _read_capped(response: httpx.Response, most: int) -> tuple[bytes, bool]:
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > most:
            return bytes(body[:most]), True
    return bytes(body), False


async def _readable(url: str, response: httpx.Response, body: bytes, cut: bool) -> Result:
    ctype = response.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype and not ctype.startswith(_TEXT_TYPES) and not ctype.endswith(("+json", "+xml")):
        raise ToolError("unsupported_content_type", f"{url} is {ctype}, not text")
    try:
        raw = body.decode(response.encoding or "utf-8", "replace")
    except LookupError:
        raw = body.decode("utf-8", "replace")
    text, extracted = raw, False
    if "html" in ctype or (not ctype and raw.lstrip()[:1] == "<"):
        found = await asyncio.to_thread(trafilatura.extract, raw, url=url, include_tables=True)
        if found and found.strip():
            text, extracted = found, True
    data = {
        "url": url,
        "status": response.status_code,
        "content_type": ctype,
        "bytes": len(body),
        "extracted": extracted,
        "truncated": cut,
    }
    return text, data


async def _memory_search(args: dict[str, Any], ctx: ToolContext) -> Result:
    if ctx.memory_search is None:
        raise ToolError("memory_unavailable", "the memory search is not available in this deployment")
    results = list(await ctx.memory_search(args["query"], int(args.get("limit") or 10)))
    lines = []
    for i, item in enumerate(results, start=1):
        body = (item.get("text") or item.get("content")) if isinstance(item, dict) else None
        lines.append(f"{i}. {body if isinstance(body, str) else json.dumps(item, default=str)}")
    return ("\n".join(lines) if lines else "(no memories match)"), {"results": results}


_HANDLERS: dict[str, Callable[[dict[str, Any], ToolContext], Awaitable[Result]]] = {
    "file_read": _file_read,
    "file_list": _file_list,
    "file_search": _file_search,
    "file_write": _file_write,
    "file_edit": _file_edit,
    "shell": _shell,
    "python": _python,
    "web_fetch": _web_fetch,
    "memory_search": _memory_search,
}
