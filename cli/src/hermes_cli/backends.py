"""Backend commands: ``backends`` (health, load and spend), ``backends enable|disable``, ``backends compare``."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from hermes_cli.common import EXIT_ERROR, TokenOption, UrlOption, show, table, with_client

HELP = "The model backends: health, load and spend; enable, disable, compare."


def _print_backends(listing: dict[str, Any]) -> None:
    rows = [["NAME", "TYPE", "HEALTH", "ENABLED", "IN-FLIGHT", "SUCCESS", "SPEND TODAY"]]
    for b in listing["backends"]:
        in_flight = f"{b['in_flight']}/{b['max_concurrent']}" if b.get("max_concurrent") else str(b["in_flight"])
        success = f"{b['success_rate']:.0%} of {b['requests']}" if b.get("requests") else "-"
        rows.append(
            [
                b["name"],
                b["type"],
                b["health"],
                "yes" if b["enabled"] else "no",
                in_flight,
                success,
                f"{b['spend_today_cents']:.2f}¢",
            ]
        )
    typer.echo(table(rows))
    budget = listing["budget"]
    limit = budget.get("daily_budget_cents")
    of = f" of {limit:.2f}¢" if limit is not None else " (no daily budget)"
    typer.echo(
        f"\nSpent today ({budget['day']}): {budget['spent_today_cents']:.2f}¢{of}; "
        f"queued jobs: {listing.get('queued_jobs', 0)}"
    )


def backends(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print the raw listing as JSON.")] = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Show every backend: type, health, enabled, in-flight jobs, success rate, spend today (cents)."""
    if ctx.invoked_subcommand is not None:
        return
    listing = with_client(url, token, lambda client: client.backends())
    show(listing, as_json, _print_backends)


def _toggle(name: str, enabled: bool, reason: str, url: str | None, token: str | None) -> None:
    listing = with_client(url, token, lambda client: client.set_backend_enabled(name, enabled, reason))
    state = next((b for b in listing["backends"] if b["name"] == name.lower()), None)
    health = f" (health: {state['health']})" if state else ""
    typer.echo(f"Backend {name} {'enabled' if enabled else 'disabled'}{health}.")


def enable_backend(
    name: Annotated[str, typer.Argument(help="The backend to enable.")],
    reason: Annotated[str, typer.Option("--reason", help="Why (recorded).")] = "",
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Let the router send new jobs to a backend again."""
    _toggle(name, True, reason, url, token)


def disable_backend(
    name: Annotated[str, typer.Argument(help="The backend to disable.")],
    reason: Annotated[str, typer.Option("--reason", help="Why (recorded).")] = "",
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Stop sending new jobs to a backend (running ones finish)."""
    _toggle(name, False, reason, url, token)


def _print_comparison(reply: dict[str, Any]) -> None:
    for result in reply["results"]:
        where = f"{result['backend']} · {result['model']}"
        if result.get("error_code"):
            typer.echo(f"\n{where}: failed [{result['error_code']}] {result.get('error') or ''}".rstrip())
            continue
        took = f"{result['latency_ms'] / 1000:.1f} s" if result.get("latency_ms") is not None else "-"
        typer.echo(
            f"\n{where} ({took}, {result['prompt_tokens']} + {result['completion_tokens']} tokens, "
            f"{result['cost_cents']:.4f}¢)"
        )
        typer.echo(result.get("text") or "")


def compare_backends(
    prompt: Annotated[str, typer.Argument(help="The prompt to run on each backend.")],
    backend: Annotated[
        list[str] | None,
        typer.Option("--backend", "-b", help="A backend to compare (repeatable; default: every enabled one)."),
    ] = None,
    max_tokens: Annotated[int, typer.Option("--max-tokens", min=1, max=4096, help="Output tokens at most.")] = 256,
    timeout: Annotated[
        float, typer.Option("--timeout", min=1, max=600, help="Seconds for the whole comparison.")
    ] = 120.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the raw results as JSON.")] = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Run one prompt on several backends and show their answers side by side (text, time, tokens, cost).
    Exits 1 when no backend answered."""
    reply = with_client(url, token, lambda client: client.compare(prompt, backend or [], max_tokens, timeout))
    show(reply, as_json, _print_comparison)
    if not any(r.get("text") is not None and not r.get("error_code") for r in reply["results"]):
        raise typer.Exit(EXIT_ERROR)
