"""Percentiles, the CSV (one row per concurrency level), the latency PNG and the printed table."""

from __future__ import annotations

import csv
import math
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) by linear interpolation between closest ranks (numpy's default,
    "linear" method of Hyndman & Fan type 7); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def pct_fields(prefix: str, values: Sequence[float], qs: Sequence[int] = (50, 95, 99)) -> dict[str, float]:
    return {f"{prefix}_p{q}_ms": round(percentile(values, q), 2) for q in qs}


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def plot_latency(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    """Overhead p50/p95/p99 (ms, log scale) against concurrency (log scale); the read-model overhead p50
    dashed when measured."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    conc = [r["concurrency"] for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for q, style in ((50, "o-"), (95, "s-"), (99, "^-")):
        ax.plot(conc, [r[f"overhead_p{q}_ms"] for r in rows], style, label=f"overhead p{q}")
    if all(not math.isnan(r.get("rm_overhead_p50_ms", math.nan)) for r in rows):
        ax.plot(conc, [r["rm_overhead_p50_ms"] for r in rows], "o--", label="read-model overhead p50")
    ax.plot(conc, [r["direct_p50_ms"] for r in rows], "x:", color="grey", label="direct backend call p50")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(conc, [str(c) for c in conc])
    ax.set_xlabel("concurrent clients (closed loop)")
    ax.set_ylabel("ms")
    ax.set_title("\n".join(textwrap.wrap(title, 90)), fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def table(rows: list[dict[str, Any]], columns: list[tuple[str, str]]) -> str:
    """A fixed-width text table of ``columns`` given as (row key, header)."""

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.3g}" if abs(value) < 10 else f"{value:.0f}"
        return str(value)

    body = [[cell(r.get(key, "")) for key, _ in columns] for r in rows]
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, (_, h) in enumerate(columns)]
    lines = ["  ".join(h.rjust(w) for (_, h), w in zip(columns, widths, strict=True))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(b, widths, strict=True)) for b in body]
    return "\n".join(lines)


def plot_peers(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    """bench/peers.py's chart, one colour per side against concurrency (log scale): requests/s (log scale);
    overhead p50 (solid) and p99 (dashed) in ms against the direct call; CPU ms per request over the side's
    processes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sides = list(dict.fromkeys(r["side"] for r in rows))
    conc = sorted({r["concurrency"] for r in rows})
    colours = dict(zip(sides, plt.rcParams["axes.prop_cycle"].by_key()["color"], strict=False))
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.2))
    panels = (
        (axes[0], [("requests_per_s", "o-", "")], "requests/s"),
        (axes[1], [("overhead_p50_ms", "o-", " p50"), ("overhead_p99_ms", "s--", " p99")], "overhead ms"),
        (axes[2], [("cpu_ms_per_req", "o-", "")], "CPU ms per request"),
    )
    for ax, series, label in panels:
        for side in sides:
            mine = sorted((r for r in rows if r["side"] == side), key=lambda r: r["concurrency"])
            for key, style, suffix in series:
                values = [r.get(key, math.nan) for r in mine]
                if not all(math.isnan(v) for v in values):
                    ax.plot([r["concurrency"] for r in mine], values, style, color=colours[side], label=side + suffix)
        ax.set_xscale("log")
        ax.set_xticks(conc, [str(c) for c in conc])
        ax.set_xlabel("concurrent clients (closed loop)")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_yscale("log")
    fig.suptitle("\n".join(textwrap.wrap(title, 140)), fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
