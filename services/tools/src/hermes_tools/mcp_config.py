"""The MCP servers the tool service connects to: ``$HERMES_HOME/mcp.toml``.

One ``[servers.<name>]`` table per server. A stdio server has ``command`` (a list ``[executable, arg...]``, or a
string split like a POSIX shell would, without running one) plus optional ``args`` (list of strings), ``env``
(table of strings, added to the SDK's minimal inherited environment) and ``cwd`` (relative: to the file's
directory). A streamable-HTTP server has ``url`` (http/https) plus optional ``headers`` (table of strings).
``enabled`` (boolean, default true) switches a server off without deleting it. Example::

    [servers.time]
    command = ["python", "-m", "mcp_server_time"]
    args = ["--local-timezone", "UTC"]

    [servers.docs]
    url = "https://mcp.example.com/mcp"
    headers = { Authorization = "Bearer ..." }

A server's name is ``[A-Za-z0-9-]{1,32}``: no ``_``, so the first ``__`` of a registry name ``<server>__<tool>``
(:func:`hermes_proto.tools.mcp_tool_name`) is always the separator. :func:`add_server` and :func:`remove_server`
rewrite the file atomically (temp file + ``os.replace``); the rewrite keeps every setting but not comments.
"""

from __future__ import annotations

import os
import re
import shlex
import tempfile
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

CONFIG_FILE = "mcp.toml"
SERVER_NAME = re.compile(r"[A-Za-z0-9-]{1,32}")
# RFC 9110 token: what an HTTP header name may be.
HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
STDIO_KEYS = frozenset({"command", "args", "env", "cwd", "enabled"})
HTTP_KEYS = frozenset({"url", "headers", "enabled"})


class McpConfigError(ValueError):
    """An unusable ``mcp.toml`` or server entry. ``code``: ``mcp_config_syntax`` (not TOML),
    ``mcp_config_invalid`` (a field's value), ``mcp_server_exists`` (add of a taken name), ``mcp_server_not_found``
    (remove of an unknown name); ``server`` and ``field`` name what is wrong when known."""

    def __init__(self, code: str, message: str, server: str | None = None, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.server = server
        self.field = field


@dataclass(frozen=True)
class McpServerConfig:
    """One server. stdio: ``command`` (``[executable, arg...]``), ``args``, ``env``, ``cwd``; streamable HTTP:
    ``url``, ``headers``. Exactly one of ``command``/``url`` is set; :meth:`validate` checks it all."""

    name: str
    command: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: str | None = None
    url: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    enabled: bool = True

    @property
    def transport(self) -> str:
        """``"stdio"`` or ``"http"``."""
        return "http" if self.url is not None else "stdio"

    @property
    def argv(self) -> list[str]:
        """The stdio command line: ``command`` then ``args``."""
        return [*self.command, *self.args]

    def validate(self) -> McpServerConfig:
        """Returns self; raises :class:`McpConfigError` (``mcp_config_invalid``) naming the server and field."""
        _check_name(self.name)
        if (self.url is None) == (not self.command):
            raise _invalid(self.name, "command", "needs either command (stdio) or url (streamable HTTP), not both")
        if self.url is not None:
            _check_url(self.name, self.url)
            for key, value in self.headers.items():
                if not HEADER_NAME.fullmatch(key):
                    raise _invalid(self.name, "headers", f"{key!r} is not an HTTP header name")
                if any(ch in value for ch in "\r\n\x00"):
                    raise _invalid(self.name, f"headers.{key}", "must not contain CR, LF or NUL")
            if self.args or self.env or self.cwd is not None:
                raise _invalid(self.name, "url", "args, env and cwd are for stdio servers (command) only")
        else:
            if not self.command[0]:
                raise _invalid(self.name, "command", "the executable must not be empty")
            for name, values in (("command", self.command), ("args", self.args)):
                if any("\x00" in value for value in values):
                    raise _invalid(self.name, name, "must not contain NUL")
            for key, value in self.env.items():
                if not key or "=" in key or "\x00" in key or "\x00" in value:
                    raise _invalid(self.name, f"env.{key}", "a variable name is non-empty without '=' or NUL")
            if self.cwd is not None and (not self.cwd or "\x00" in self.cwd):
                raise _invalid(self.name, "cwd", "must be a non-empty path")
            if self.headers:
                raise _invalid(self.name, "headers", "headers are for url (streamable HTTP) servers only")
        return self


def config_path(home: Path | str | None = None) -> Path:
    """``<home>/mcp.toml``; ``home`` defaults to ``$HERMES_HOME``, else ``~/.hermes``."""
    base = Path(home) if home is not None else Path(os.environ.get("HERMES_HOME") or Path.home() / ".hermes")
    return base / CONFIG_FILE


def load_config(path: Path | str) -> dict[str, McpServerConfig]:
    """Every server of the file, enabled or not, by name (a missing file: none). Relative ``cwd`` is resolved
    against the file's directory. Raises :class:`McpConfigError`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise McpConfigError("mcp_config_syntax", f"{path}: cannot read: {exc}") from None
    return parse_config(text, base_dir=path.parent)


def enabled_servers(path: Path | str) -> dict[str, McpServerConfig]:
    """The servers of :func:`load_config` whose ``enabled`` is true."""
    return {name: server for name, server in load_config(path).items() if server.enabled}


def parse_config(text: str, base_dir: Path | None = None) -> dict[str, McpServerConfig]:
    """The servers of an ``mcp.toml`` text by name. Raises :class:`McpConfigError`."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise McpConfigError("mcp_config_syntax", f"mcp.toml is not valid TOML: {exc}") from None
    unknown = sorted(set(data) - {"servers"})
    if unknown:
        raise McpConfigError(
            "mcp_config_invalid",
            f"mcp.toml: unknown top-level key {unknown[0]!r} (only [servers.<name>])",
            None,
            unknown[0],
        )
    servers = data.get("servers", {})
    if not isinstance(servers, dict):
        raise McpConfigError("mcp_config_invalid", "mcp.toml: servers must be a table", None, "servers")
    result: dict[str, McpServerConfig] = {}
    for name, table in servers.items():
        _check_name(name)
        if not isinstance(table, dict):
            raise _invalid(name, "servers", "must be a table [servers.<name>]")
        result[name] = server_from_table(name, table, base_dir)
    return result


def server_from_table(name: str, table: Mapping[str, Any], base_dir: Path | None = None) -> McpServerConfig:
    """One server from its table's values (as TOML or a JSON body gives them). Raises :class:`McpConfigError`."""
    _check_name(name)
    stdio = "command" in table
    allowed = STDIO_KEYS if stdio else HTTP_KEYS
    for key in table:
        if key not in allowed:
            if key == "url":
                raise _invalid(name, key, "needs either command (stdio) or url (streamable HTTP), not both")
            if key in HTTP_KEYS:
                raise _invalid(name, key, "only for streamable HTTP (url) servers")
            if key in STDIO_KEYS:
                raise _invalid(name, key, "only for stdio (command) servers")
            raise _invalid(name, key, "unknown setting")
    enabled = table.get("enabled", True)
    if not isinstance(enabled, bool):
        raise _invalid(name, "enabled", "must be true or false")
    if stdio:
        raw = table["command"]
        if isinstance(raw, str):
            try:
                command = tuple(shlex.split(raw))
            except ValueError as exc:
                raise _invalid(name, "command", f"cannot be split: {exc}") from None
        else:
            command = _strings(name, "command", raw)
        if not command:
            raise _invalid(name, "command", "must not be empty")
        cwd = table.get("cwd")
        if cwd is not None:
            if not isinstance(cwd, str):
                raise _invalid(name, "cwd", "must be a string")
            if base_dir is not None and cwd and not Path(cwd).expanduser().is_absolute():
                cwd = str(base_dir / cwd)
            elif cwd:
                cwd = str(Path(cwd).expanduser())
        server = McpServerConfig(
            name=name,
            command=command,
            args=_strings(name, "args", table.get("args", [])),
            env=_string_table(name, "env", table.get("env", {})),
            cwd=cwd,
            enabled=enabled,
        )
    else:
        if "url" not in table:
            raise _invalid(name, "command", "needs either command (stdio) or url (streamable HTTP)")
        url = table["url"]
        if not isinstance(url, str):
            raise _invalid(name, "url", "must be a string")
        server = McpServerConfig(
            name=name, url=url, headers=_string_table(name, "headers", table.get("headers", {})), enabled=enabled
        )
    return server.validate()


def add_server(path: Path | str, server: McpServerConfig, replace: bool = False) -> dict[str, McpServerConfig]:
    """Adds ``server`` to the file (creating it and its directory), atomically; returns every server. Raises
    :class:`McpConfigError`: ``mcp_server_exists`` when the name is taken and not ``replace``, or any error of
    :func:`load_config` / :meth:`McpServerConfig.validate`."""
    path = Path(path)
    server.validate()
    servers = load_config(path)
    if server.name in servers and not replace:
        raise McpConfigError(
            "mcp_server_exists", f"MCP server {server.name!r} already exists", server=server.name, field="name"
        )
    servers[server.name] = server
    write_config(path, servers)
    return servers


def remove_server(path: Path | str, name: str) -> dict[str, McpServerConfig]:
    """Removes server ``name`` from the file, atomically; returns the remaining servers. Raises
    :class:`McpConfigError`: ``mcp_server_not_found``, or any error of :func:`load_config`."""
    path = Path(path)
    servers = load_config(path)
    if name not in servers:
        raise McpConfigError("mcp_server_not_found", f"no MCP server {name!r}", server=name, field="name")
    del servers[name]
    write_config(path, servers)
    return servers


def write_config(path: Path | str, servers: Mapping[str, McpServerConfig]) -> None:
    """Writes ``servers`` as the whole file: a temp file in the same directory (mode 0600: headers and env may
    hold secrets), fsynced, then ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = render_config(servers)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def render_config(servers: Mapping[str, McpServerConfig]) -> str:
    """The TOML text of ``servers`` (sorted by name); :func:`parse_config` reads it back equal."""
    lines = ["# MCP servers of the Hermes tool service (written by Hermes: comments are not kept)."]
    for name in sorted(servers):
        server = servers[name]
        lines.append("")
        lines.append(f"[servers.{_key(name)}]")
        if server.url is not None:
            lines.append(f"url = {_string(server.url)}")
            if server.headers:
                lines.append(f"headers = {_inline_table(server.headers)}")
        else:
            lines.append(f"command = {_array(server.command)}")
            if server.args:
                lines.append(f"args = {_array(server.args)}")
            if server.env:
                lines.append(f"env = {_inline_table(server.env)}")
            if server.cwd is not None:
                lines.append(f"cwd = {_string(server.cwd)}")
        if not server.enabled:
            lines.append("enabled = false")
    return "\n".join(lines) + "\n"


def _check_name(name: object) -> None:
    if not isinstance(name, str) or not SERVER_NAME.fullmatch(name):
        raise McpConfigError(
            "mcp_config_invalid",
            f"MCP server name {name!r}: must be 1 to 32 of A-Z a-z 0-9 - (no '_': '__' separates server and tool)",
            server=str(name),
            field="name",
        )


def _check_url(name: str, url: str) -> None:
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise _invalid(name, "url", f"not a URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _invalid(name, "url", "must be an http:// or https:// URL with a host")
    if any(ch.isspace() or ch == "\x00" for ch in url):
        raise _invalid(name, "url", "must not contain whitespace")


def _invalid(server: str, field: str, problem: str) -> McpConfigError:
    return McpConfigError("mcp_config_invalid", f"MCP server {server!r}: {field}: {problem}", server, field)


def _strings(server: str, field: str, value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise _invalid(server, field, "must be a list of strings")
    return tuple(value)


def _string_table(server: str, field: str, value: object) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise _invalid(server, field, "must be a table of strings")
    return dict(value)


_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def _string(value: str) -> str:
    """A TOML basic string: quote, backslash and control characters escaped, the rest (UTF-8) kept."""
    out = []
    for ch in value:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else _string(key)


def _array(values: tuple[str, ...] | list[str]) -> str:
    return "[" + ", ".join(_string(value) for value in values) + "]"


def _inline_table(values: Mapping[str, str]) -> str:
    return "{ " + ", ".join(f"{_key(key)} = {_string(value)}" for key, value in values.items()) + " }"
