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
REGISTRY_SIZE = Gauge(
    "hermes_tool_registry_tools", "Tools in the registry, by source (builtin, mcp or skill)", ["source"]
)
SKILL_PROPOSALS_VALIDATED = Counter(
    "hermes_skill_proposals_validated_total", "Skill proposals validated, by outcome (ok, invalid)", ["outcome"]
)
SKILL_CHANGES = Counter(
    "hermes_skill_changes_total",
    "Changes to the skills library, by change (applied, rolled_back, failed)",
    ["change"],
)
SKILLS = Gauge("hermes_skills", "Valid skills loaded in the registry (the library's HEAD)")
SKILL_RUNS = Counter(
    "hermes_skill_runs_total",
    "Runs of skills as tools, by skill and outcome (ok; error: exited non-zero; failed: refused or broke)",
    ["skill", "outcome"],
)
