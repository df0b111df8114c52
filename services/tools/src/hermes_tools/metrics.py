"""The tool service's Prometheus metrics."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

TOOL_CALLS = Counter(
    "hermes_tool_calls_total",
    "Tool calls executed, by tool and outcome (completed, error, failed, interrupted, cancelled)",
    ["tool", "outcome"],
)
TOOL_CALL_SECONDS = Histogram(
    "hermes_tool_call_duration_seconds",
    "Wall time of one tool call (seconds)",
    ["tool"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
SANDBOX_REFUSALS = Counter(
    "hermes_sandbox_refusals_total",
    "Tool calls the sandbox refused or cut short, by reason (path_outside_workspace, sandbox_unavailable, timeout, "
    "output_truncated, ...)",
    ["reason"],
)
TOOLS_RUNNING = Gauge("hermes_tool_calls_running", "Tool calls running now")
REGISTRY_SIZE = Gauge("hermes_tool_registry_tools", "Tools in the registry, by source (builtin or mcp)", ["source"])
