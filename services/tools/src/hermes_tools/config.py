"""Tool service settings (environment variables)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from hermes_proto.settings import BusSettings


class ToolSettings(BusSettings):
    """``hermes_tools_max_concurrent``: calls running at once; ``hermes_tool_output_limit_chars``: a result longer
    than this reaches the event (and the model) cut, with a marker, the whole kept in the workspace;
    ``hermes_tool_timeout_seconds``: wall time of one MCP call or web fetch (the sandbox has its own limits:
    ``hermes_sandbox_*``); ``hermes_mcp_file``: default ``$HERMES_HOME/mcp.toml``; ``hermes_skills_dir``: the skills
    library (a git repository), default ``$HERMES_HOME/skills``, its usage statistics in ``$HERMES_HOME/skills.db``."""

    metrics_port: int = 9119
    hermes_tools_max_concurrent: int = Field(4, ge=1, le=64)
    hermes_tool_output_limit_chars: int = Field(8000, ge=200, le=1_000_000)
    hermes_tool_timeout_seconds: float = Field(60.0, gt=0)
    hermes_sandbox_cpu_seconds: int = Field(10, ge=1)
    hermes_sandbox_memory_mb: int = Field(512, ge=32)
    hermes_sandbox_max_processes: int = Field(64, ge=4)
    hermes_sandbox_output_bytes: int = Field(1_000_000, ge=1024)
    hermes_sandbox_wall_seconds: float = Field(30.0, gt=0)
    hermes_mcp_file: Path | None = None
    hermes_skills_dir: Path | None = None

    def mcp_path(self) -> Path:
        return self.hermes_mcp_file or self.hermes_home / "mcp.toml"

    def ledger_path(self) -> Path:
        return self.hermes_home / "tools.db"

    def skills_path(self) -> Path:
        return self.hermes_skills_dir or self.hermes_home / "skills"

    def skills_db_path(self) -> Path:
        return self.hermes_home / "skills.db"
