"""The data-rights export's shape, in step with what it is built from: the documented response names every section
the collector writes; the older turns it recovers from the training export map ShareGPT's speakers back to exactly
the roles the orchestrator mapped them from; ``hermes export`` needs either sft/dpo or ``--user``, never both."""

from __future__ import annotations

import typer
from typer.testing import CliRunner

from hermes_cli import memory
from hermes_gateway.bootstrap import create_app
from hermes_gateway.config import GatewaySettings
from hermes_gateway.user_export import FORMAT, SECTIONS, SPEAKERS
from hermes_orchestrator.sessions import SHAREGPT_ROLES


def test_both_routes_document_every_section_as_an_attachment_schema() -> None:
    spec = create_app(GatewaySettings()).openapi()
    for path in ("/api/me/export", "/api/users/{user_id}/export"):
        ok = spec["paths"][path]["get"]["responses"]["200"]
        schema = ok["content"]["application/json"]["schema"]
        assert set(schema["required"]) == {"user_id", "exported_at", "format", "truncated", *SECTIONS}
        assert schema["properties"]["format"] == {"const": FORMAT}
        assert "attachment" in ok["description"]
    assert "403" in spec["paths"]["/api/users/{user_id}/export"]["get"]["responses"]


def test_sharegpt_speakers_map_back_to_the_roles_the_orchestrator_wrote() -> None:
    assert SPEAKERS == {speaker: role for role, speaker in SHAREGPT_ROLES.items()}


def test_export_needs_a_kind_or_a_user_but_not_both() -> None:
    app = typer.Typer()
    app.command("export")(memory.export)
    app.command("noop")(lambda: None)  # two commands: ``export`` stays a subcommand, as in ``hermes``
    runner = CliRunner()
    for args, says in (
        (["export"], "sft or dpo, or --user"),
        (["export", "sft", "--user", "ann"], "leave out sft/dpo"),
        (["export", "--user", "ann", "--since", "2026-01-01"], "leave out sft/dpo"),
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 2 and says in result.output, (args, result.output)
