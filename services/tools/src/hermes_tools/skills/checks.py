"""Static checks of skill folders (nothing here runs a proposal's code): ruff, bandit and Hermes's own.

- :func:`ruff_findings`: ``ruff check`` (the service's ruff, ``--isolated``: no configuration file of the proposal
  is read; ``--ignore-noqa``; rules ``E4,E7,E9,F,B``); every finding counts against a proposal.
- :func:`bandit_findings`: bandit through its Python API with its default profile and ``# nosec`` ignored (the CLI
  would read a ``.bandit`` file of the proposal). Severity is bandit's, raised to a floor for what a skill must not
  do (:data:`BANDIT_FLOOR`: shell and process execution, ``exec``/``eval``, hard-coded secrets, plain network).
- :func:`ast_findings`: imports of network modules (``network_call``, high; dynamic imports too) and string
  literals that look like paths out of the workspace: absolute, ``~``, or holding a ``..`` component
  (``path_outside_workspace``, medium; any string but docstrings, as a literal's use as a path is not traced).
- :func:`shell_findings`: a simple token scan of ``*.sh`` files (comments dropped, no parsing of quotes or
  expansions, so it can be fooled): ``curl``, ``wget``, ``nc``/``ncat``/``netcat``, ``/dev/tcp``/``/dev/udp``
  (``network_call``), ``sudo``/``su``/``doas`` (``privilege``), ``eval`` (``dynamic_code``), ``rm -rf /``
  (``destructive``); all high.
"""

from __future__ import annotations

import ast
import json
import logging
import re
import shutil
import subprocess
import sys
import threading
import warnings
from pathlib import Path
from typing import Any, Literal

import msgspec

Severity = Literal["low", "medium", "high"]
RUFF_RULES = "E4,E7,E9,F,B"
NETWORK_MODULES = frozenset(
    {"socket", "socketserver", "ssl", "urllib", "urllib.request", "urllib3", "http.client", "http.server",
     "requests", "httpx", "aiohttp", "ftplib", "telnetlib", "smtplib", "poplib", "imaplib", "xmlrpc.client",
     "websocket", "websockets", "paramiko"}
)  # fmt: skip
BANDIT_FLOOR: dict[str, Severity] = {
    **dict.fromkeys(("B602", "B604", "B605"), "high"),  # a shell runs a command
    **dict.fromkeys(("B603", "B606", "B607"), "medium"),  # a process is started
    **dict.fromkeys(("B102", "B307"), "high"),  # exec, eval
    **dict.fromkeys(("B105", "B106", "B107"), "medium"),  # hard-coded passwords and tokens
    **dict.fromkeys(("B310", "B113", "B312", "B321", "B401", "B402", "B501"), "medium"),  # plain network use
}
_RANK = {"low": 0, "medium": 1, "high": 2}
_SECRETS = ("B105", "B106", "B107")
_SECRET_MESSAGE = "possible hard-coded password or token (the value is not repeated here)"
_bandit_lock = threading.Lock()


class Finding(msgspec.Struct, frozen=True, kw_only=True):
    """One problem. ``tool``: ``ruff``, ``bandit`` or ``hermes``; ``code``: the rule (``F401``, ``B602``,
    ``network_call``, ``manifest_invalid``...); ``file``: relative to the library root (``""`` for the whole
    proposal); ``line``: 1-based, 0 when not about a line."""

    tool: str
    code: str
    severity: Severity
    file: str
    line: int
    message: str


def python_files(folder: Path) -> list[Path]:
    """Every ``*.py`` file below ``folder`` (sorted; symlinks not followed)."""
    return sorted(p for p in folder.rglob("*.py") if p.is_file() and not p.is_symlink())


def _ruff_argv() -> list[str]:
    sibling = Path(sys.executable).with_name("ruff")
    if sibling.is_file():
        return [str(sibling)]
    found = shutil.which("ruff")
    return [found] if found else [sys.executable, "-m", "ruff"]


def ruff_findings(root: Path, files: list[Path]) -> list[Finding]:
    """``ruff check`` of ``files`` (under ``root``); a syntax error is high, any other finding medium. Raises
    ``RuntimeError`` when ruff itself fails (no JSON report)."""
    if not files:
        return []
    argv = [*_ruff_argv(), "check", "--isolated", "--no-cache", "--ignore-noqa", "--no-respect-gitignore"]
    argv += ["--output-format", "json", "--select", RUFF_RULES, "--target-version", "py311", "--"]
    try:
        done = subprocess.run([*argv, *map(str, files)], cwd=root, capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.SubprocessError) as exc:
        raise RuntimeError(f"ruff could not run: {exc}") from None
    try:
        report = json.loads(done.stdout)
    except ValueError:
        raise RuntimeError(f"ruff failed (exit {done.returncode}): {done.stderr.strip()[-500:]}") from None
    findings = []
    for item in report:
        code = item.get("code") or "syntax-error"
        findings.append(
            Finding(
                tool="ruff",
                code=code,
                severity="high" if code == "syntax-error" else "medium",
                file=_relative(root, item.get("filename", "")),
                line=int((item.get("location") or {}).get("row") or 0),
                message=str(item.get("message", ""))[:500],
            )
        )
    return findings


def bandit_findings(root: Path, files: list[Path]) -> list[Finding]:
    """Bandit's findings for ``files`` (under ``root``), severities raised to :data:`BANDIT_FLOOR`; a hard-coded
    secret's message does not quote it (bandit's would)."""
    if not files:
        return []
    config, manager = _bandit()
    with _bandit_lock:  # bandit keeps module-level state (its extension manager, logging)
        logging.getLogger("bandit").setLevel(logging.ERROR)
        mgr = manager.BanditManager(config.BanditConfig(), "file", quiet=True, ignore_nosec=True)
        mgr.discover_files([str(f) for f in files], recursive=False)
        mgr.run_tests()
        issues = mgr.get_issue_list()
    findings = []
    for issue in issues:
        own = str(issue.severity).lower()
        own = own if own in _RANK else "medium"
        floor = BANDIT_FLOOR.get(issue.test_id, "low")
        findings.append(
            Finding(
                tool="bandit",
                code=issue.test_id,
                severity=own if _RANK[own] >= _RANK[floor] else floor,  # type: ignore[arg-type]
                file=_relative(root, issue.fname),
                line=int(issue.lineno or 0),
                message=_SECRET_MESSAGE if issue.test_id in _SECRETS else str(issue.text)[:500],
            )
        )
    return findings


def _bandit() -> tuple[Any, Any]:
    # bandit's plugin loader (at its first import) warns about stevedore arguments and logs an error for its
    # optional SARIF formatter: noise, kept out of the service's logs.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        loader = logging.getLogger("stevedore.extension")
        disabled, loader.disabled = loader.disabled, True
        try:
            from bandit.core import config, manager
        finally:
            loader.disabled = disabled
    return config, manager


def _relative(root: Path, name: str) -> str:
    try:
        return Path(name).resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return name


def _imported(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        return [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
    if isinstance(node, ast.Call):
        func = node.func
        name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
        if name in ("__import__", "import_module") and node.args:
            first = node.args[0]
            return [first.value] if isinstance(first, ast.Constant) and isinstance(first.value, str) else ["?"]
    return []


def _is_network(module: str) -> bool:
    # urllib itself and urllib.request are network; urllib.parse and urllib.error are not
    return any(module == m or (m != "urllib" and module.startswith(m + ".")) for m in NETWORK_MODULES)


def _leaves_workspace(text: str) -> bool:
    if len(text) > 4096:
        return False
    return bool(re.match(r"/[^\s/]", text)) or text == "~" or text.startswith("~/") or ".." in re.split(r"[/\\]", text)


def _path_literals(tree: ast.AST) -> list[tuple[int, str]]:
    """String literals that look like paths out of the workspace; docstrings and other bare string statements are
    skipped, an f-string counts by its leading text only."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            skipped.add(id(node.value))
        elif isinstance(node, ast.JoinedStr):
            skipped.update(id(part) for part in node.values)
    found = []
    for node in ast.walk(tree):
        text = None
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skipped:
            text = node.value
        elif isinstance(node, ast.JoinedStr) and node.values:
            head = node.values[0]
            text = head.value if isinstance(head, ast.Constant) and isinstance(head.value, str) else None
        if text and _leaves_workspace(text):
            found.append((node.lineno, text))
    return found


def ast_findings(root: Path, files: list[Path]) -> list[Finding]:
    """Hermes's own Python checks (module doc); a file that does not parse is left to ruff."""
    findings: list[Finding] = []
    for path in files:
        try:
            tree = ast.parse(path.read_text(encoding="utf-8", errors="replace"), filename=str(path))
        except (SyntaxError, ValueError):
            continue
        rel = _relative(root, str(path))
        for node in ast.walk(tree):
            for module in _imported(node):
                if module == "?":
                    findings.append(
                        Finding(tool="hermes", code="dynamic_import", severity="medium", file=rel,
                                line=node.lineno, message="a module imported by a computed name")
                    )  # fmt: skip
                elif _is_network(module):
                    findings.append(
                        Finding(tool="hermes", code="network_call", severity="high", file=rel, line=node.lineno,
                                message=f"imports the network module {module!r}: skills run without network")
                    )  # fmt: skip
                    break
        for line, text in _path_literals(tree):
            findings.append(
                Finding(tool="hermes", code="path_outside_workspace", severity="medium", file=rel, line=line,
                        message=f"the path {text[:80]!r} leaves the workspace (absolute, ~ or ..)")
            )  # fmt: skip
    return findings


_SHELL_SPLIT = re.compile(r"[\s;&|()<>`\"'{}$=]+")
_RM_ROOT = re.compile(
    r"\brm\s+(?:-[A-Za-z]+\s+)*-[A-Za-z]*(?:r[A-Za-z]*f|f[A-Za-z]*r)[A-Za-z]*\s+(?:--\s+)?/(?:\s|\*|$)"
)
_SHELL_WORDS: dict[str, tuple[str, str]] = {
    **dict.fromkeys(("curl", "wget", "nc", "ncat", "netcat", "telnet", "ssh", "scp"), ("network_call", "network")),
    **dict.fromkeys(("sudo", "su", "doas"), ("privilege", "privilege escalation")),
    "eval": ("dynamic_code", "eval of a computed command"),
}


def _strip_comment(line: str) -> str:
    match = re.search(r"(?:^|\s)#", line)
    return line[: match.start()] if match else line


def shell_findings(root: Path, files: list[Path]) -> list[Finding]:
    """The token scan of shell scripts described in the module doc."""
    findings: list[Finding] = []
    for path in files:
        rel = _relative(root, str(path))
        for number, raw in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
            line = _strip_comment(raw)
            hits: list[tuple[str, str]] = []
            for token in _SHELL_SPLIT.split(line):
                word = token.rsplit("/", 1)[-1]  # /usr/bin/curl is curl
                if word in _SHELL_WORDS:
                    hits.append((_SHELL_WORDS[word][0], f"{_SHELL_WORDS[word][1]}: {word}"))
            if "/dev/tcp/" in line or "/dev/udp/" in line:
                hits.append(("network_call", "network: /dev/tcp or /dev/udp"))
            if _RM_ROOT.search(line):
                hits.append(("destructive", "rm -rf /"))
            for code, message in dict(hits).items():
                findings.append(
                    Finding(tool="hermes", code=code, severity="high", file=rel, line=number, message=message)
                )
    return findings


def blocking(findings: list[Finding]) -> list[Finding]:
    """The findings that make a proposal fail: every ruff finding, any other of severity medium or high."""
    return [f for f in findings if f.tool == "ruff" or _RANK[f.severity] >= 1]
