"""``hermes export --user U [--out FILE]``: everything Hermes holds about one user, as the JSON document of the
gateway's admin route ``GET /api/users/{user_id}/export`` (an admin token is needed), written byte for byte as the
gateway sent it. :mod:`hermes_cli.memory` dispatches ``hermes export`` here when ``--user`` is given."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from urllib.parse import quote

import httpx
import typer

from hermes_cli.client import GatewayClient, GatewayError, GatewayUnreachable, unwrap
from hermes_cli.common import EXIT_ERROR, fail, with_client

TIMEOUT = httpx.Timeout(15.0, read=300.0)
"""Seconds to connect, and to wait for the document: the gateway gathers it from many queries before it answers."""


def download(client: GatewayClient, user_id: str) -> bytes:
    """The export of ``user_id`` as the gateway sent it (a JSON object). Raises :class:`GatewayError` (403
    ``admin_only`` for a non-admin token, 400 ``invalid_id``...) or :class:`GatewayUnreachable`."""
    try:
        response = client.http.get(f"/api/users/{quote(user_id, safe='')}/export", timeout=TIMEOUT)
    except httpx.TransportError as exc:
        raise GatewayUnreachable(client.base_url, exc) from exc
    if response.status_code != 200:
        unwrap(response)  # raises the gateway's error
        raise GatewayError(response.status_code, "bad_response", f"HTTP {response.status_code}")
    return response.content


def write(body: bytes, output: str) -> None:
    """``body`` to standard output (``-``) or to ``output``, which appears only once complete (exits 1 when it
    cannot be written)."""
    if output == "-":
        sys.stdout.buffer.write(body)
        sys.stdout.buffer.flush()
        return
    target = Path(output)
    partial = target.with_name(target.name + ".part")
    try:
        partial.write_bytes(body)
        partial.replace(target)
    except OSError as exc:
        raise fail(f"cannot write {output}: {exc}", code=EXIT_ERROR) from None
    finally:
        partial.unlink(missing_ok=True)


def export_user(user_id: str, output: str, url: str | None, token: str | None) -> None:
    """Fetch and write ``user_id``'s export; on stderr, how many items each section holds and what the document
    says it could not hold whole (``truncated``)."""
    body = with_client(url, token, lambda client: download(client, user_id))
    write(body, output)
    try:
        document = json.loads(body)
        counts = ", ".join(f"{len(v)} {k}" for k, v in document.items() if isinstance(v, list) and k != "truncated")
        truncated = document.get("truncated") or []
    except (ValueError, AttributeError):
        raise fail("the gateway's export is not a JSON object.", code=EXIT_ERROR) from None
    where = "standard output" if output == "-" else output
    typer.echo(f"Wrote the export of {user_id} ({counts}) to {where}.", err=True)
    for cut in truncated:
        typer.echo(f"  not whole: {cut.get('section')} {cut.get('id') or ''} ({cut.get('reason')})", err=True)
