"""PromQL as the dashboards and alert rules use it: the metric names an expression selects (for checking them
against what the services really export), balanced brackets, and the PromQL inside Grafana variable queries.
A small tokenizer, not a full PromQL parser: it covers selectors, functions, aggregations with by/without,
vector matching, offsets, numbers with units and Grafana's ``$var`` / ``${var}`` / ``[[var]]``."""

from __future__ import annotations

import re
from typing import Any

_PROMQL_TOKEN = re.compile(
    r"""
    (?P<str>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`[^`]*`)
  | (?P<var>\$\{[^}]*\}|\$\w+|\[\[\w+\]\])
  | (?P<num>(?:0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)[a-zA-Z]*)
  | (?P<id>[a-zA-Z_:][a-zA-Z0-9_:]*)
  | (?P<ws>\s+)
  | (?P<op>.)
""",
    re.X | re.S,
)
_GROUPING = {"by", "without", "on", "ignoring", "group_left", "group_right"}
_KEYWORDS = _GROUPING | {"and", "or", "unless", "bool", "offset", "inf", "nan", "atan2"}
_AGGREGATIONS = {
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
}


def check_balanced(expr: str) -> None:
    depth: list[str] = []
    pairs = {")": "(", "]": "[", "}": "{"}
    for m in _PROMQL_TOKEN.finditer(expr):
        if m.lastgroup == "op":
            ch = m.group()
            if ch in "([{":
                depth.append(ch)
            elif ch in pairs:
                assert depth and depth.pop() == pairs[ch], f"unbalanced {ch!r} in {expr!r}"
    assert not depth, f"unclosed {depth} in {expr!r}"


def promql_metric_names(expr: str) -> set[str]:
    """Metric names an expression selects: identifiers that are not functions, aggregations, keywords,
    label names (inside ``{}`` or grouping lists), durations, numbers or Grafana variables."""
    tokens = [(m.lastgroup, m.group()) for m in _PROMQL_TOKEN.finditer(expr) if m.lastgroup != "ws"]
    names: set[str] = set()
    stack: list[str] = []  # open brackets; "label-list" for by(...)/on(...) lists
    for i, (kind, text) in enumerate(tokens):
        nxt = tokens[i + 1][1] if i + 1 < len(tokens) else ""
        prev = tokens[i - 1][1] if i else ""
        inside = stack[-1] if stack else ""
        if kind == "op":
            if text == "(":
                stack.append("label-list" if prev in _GROUPING else "(")
            elif text in "[{":
                stack.append(text)
            elif text in ")]}":
                assert stack, f"unbalanced {text!r} in {expr!r}"
                stack.pop()
            continue
        if inside in {"{", "[", "label-list"}:
            if kind == "str" and inside == "{" and len(tokens) > i - 2 >= 0 and tokens[i - 2][1] == "__name__":
                names.add(text.strip("\"'`"))
            continue
        if kind != "id" or nxt == "(" or text in _KEYWORDS or text in _AGGREGATIONS:
            continue
        names.add(text)
    assert not stack, f"unclosed {stack} in {expr!r}"
    return names


def grafana_query_exprs(query: Any) -> list[str]:
    """PromQL inside a Grafana variable query (label_values(...), query_result(...) or raw)."""
    text = query.get("query", "") if isinstance(query, dict) else str(query or "")
    text = text.strip()
    if not text:
        return []
    m = re.fullmatch(r"label_values\((.*)\)", text, re.S)
    if m:
        inner = m.group(1)
        depth, split_at = 0, -1
        for i, ch in enumerate(inner):
            depth += ch in "({["
            depth -= ch in ")}]"
            if ch == "," and depth == 0:
                split_at = i
        return [inner[:split_at]] if split_at >= 0 else []
    m = re.fullmatch(r"query_result\((.*)\)", text, re.S)
    if m:
        return [m.group(1)]
    if re.fullmatch(r"(label_names|metrics)\(.*\)", text, re.S):
        return []
    return [text]


def exprs_in(node: Any) -> list[str]:
    """Every PromQL expression in a Grafana dashboard or a Prometheus rule file (parsed JSON/YAML): ``expr``
    fields anywhere, and the queries of ``templating`` variables."""
    found: list[str] = []
    if isinstance(node, dict):
        if isinstance(node.get("expr"), str):
            found.append(node["expr"])
        if node.get("type") == "query" and "name" in node:
            for source in (node.get("query"), node.get("definition")):
                found += grafana_query_exprs(source)
        for value in node.values():
            found += exprs_in(value)
    elif isinstance(node, list):
        for value in node:
            found += exprs_in(value)
    return found
