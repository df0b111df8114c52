"""Forgetting in the tool service (:class:`~hermes_proto.forgetting.PersonalDataForgotten`, taken by the
``tools-calls`` consumer): the calls of the runs it names and, when it names a user, of that user leave the call
ledger (their arguments and outputs, zeroed in the file), with the full outputs :func:`~hermes_tools.redact.truncate`
kept of them in their project's workspace; :meth:`hermes_tools.service.ToolService.forget` also stops their running
calls and refuses later dispatches of those runs.

Kept: the skills' usage statistics (counts and times per skill, no text) and the skills library (shared code: an
applied proposal is a commit of its history).
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

import structlog

from hermes_tools.ledger import CallLedger
from hermes_tools.redact import remove_spilled
from hermes_tools.workspace import PROJECT_NAME

log = structlog.get_logger("hermes.tools")


def forget_calls(ledger: CallLedger, home: Path, run_ids: Collection[str], user_id: str = "") -> tuple[int, int]:
    """Delete the ledger's calls of ``run_ids`` (and of ``user_id`` when not empty) and their spilled outputs
    under ``<home>/workspace/<project>``; returns ``(calls, files)`` deleted. Blocking (a worker thread). Raises
    ``sqlite3.Error``; a spilled output that cannot be removed is logged (``spilled_output_not_removed``)."""
    files = 0
    calls = ledger.forget(run_ids, user_id)
    for call_id, project in calls:
        if not PROJECT_NAME.fullmatch(project):
            continue
        try:
            files += remove_spilled(Path(home) / "workspace" / project, call_id)
        except OSError as exc:
            log.warning("spilled_output_not_removed", call_id=call_id, project=project, error=repr(exc))
    return len(calls), files
