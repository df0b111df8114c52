"""Learning evaluation (issue 5): does Hermes need fewer questions and start from a better draft 1 the longer a
user works with it?

Runs a population of simulated users (``tests/fakes/simulated_users.py``: each with a hidden, consistent profile
of depth, style and 3-5 recurring constraints) through ``--ideas`` ideas each over the real system: a fresh
nats-server, the gateway, orchestrator, learner, backend-router and talos-edge as processes, and a loopback
OpenAI-compatible model (the faithful stand-in: its draft restates the prompt's requirement lines). Users run
concurrently, each one idea after the other, over HTTP as a client would: submit, wait for the questions, answer
those that touch the profile (ignore the rest; a thread whose questions are all ignored completes on draft 1 at
the answer timeout), wait for the final draft, rate it by the share of profile facts it honours.

The same population then runs again with ``HERMES_LEARNING_ENABLED=false`` (the baseline). Both runs set
``HERMES_MEMORY_TOKEN_BUDGET=0``: memory markers (earlier turns, answers included) would carry profile facts into
draft 1 in both runs and blur what preference learning itself does.

Per thread it records: questions asked, answers given, assumptions shown, profile facts in the draft-1 prompt
(read from the ``job_queued`` event of draft 1, as the model received it), facts in the final draft, the rating.
Writes ``bench/results/learning_eval.csv`` (one row per thread) and ``bench/results/learning_curves.png`` (means
over users per thread index), prints first-ten / last-ten means per run, and exits 1 when the learning run does not
show fewer questions and more profile facts in draft 1 in its last ten threads than in its first ten and than the
baseline's last ten.

Run (not a test): ``uv run --frozen --group bench python bench/learning_eval.py [--users 8] [--ideas 30]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from statistics import mean

import httpx
from system import ROOT  # puts tests/ on sys.path for the imports below

# isort: split
from conftest import NatsServer, stored_events, wait_until  # noqa: E402  (tests/ is on sys.path through system)
from fakes.llm_servers import FakeOpenAIServer  # noqa: E402
from fakes.simulated_users import Profile, faithful_reply, ideas_for, population  # noqa: E402
from procs import model_env, service_processes, start_ready  # noqa: E402
from report import table, write_csv

from hermes_proto import events as ev  # noqa: E402
from hermes_proto.bus import connect  # noqa: E402
from hermes_proto.settings import BusSettings  # noqa: E402
from hermes_proto.subjects import thread_events  # noqa: E402

from hermes_cli.natsserver import free_port  # noqa: E402

SERVICES = ("orchestrator", "learner", "router", "edge", "gateway")


@dataclass
class Row:
    """One thread of one simulated user (counts; ``seconds`` from submit to completed)."""

    mode: str
    user_id: str
    thread_index: int
    idea: str
    idea_type: str
    questions: int
    answers: int
    assumptions: int
    facts: int
    facts_in_draft1_prompt: int
    facts_in_final_draft: int
    rating: int
    final_draft_number: int
    seconds: float


class Run:
    """One mode's system (its own nats-server, services, model and Hermes home) and the client driving it."""

    def __init__(self, mode: str, tmp: Path, answer_timeout_s: float) -> None:
        self.mode, self.tmp, self.answer_timeout_s = mode, tmp / mode, answer_timeout_s
        self.nats = NatsServer(port=free_port(), store_dir=self.tmp / "jetstream")
        self.model = FakeOpenAIServer(models=["fake"])
        self.model.respond = faithful_reply
        self.port = free_port()
        self.procs: dict = {}

    async def __aenter__(self) -> Run:
        self.nats.start()
        await self.model.start()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TELEGRAM_", "BACKEND_", "HERMES_"))}
        env.update(
            NATS_URL=self.nats.url,
            HERMES_HOME=str(self.tmp / "home"),
            LOG_LEVEL="INFO",
            METRICS_PORT="0",
            HERMES_WEB_HOST="127.0.0.1",
            HERMES_WEB_PORT=str(self.port),
            HERMES_ANSWER_TIMEOUT_SECONDS=str(self.answer_timeout_s),
            HERMES_EDGE_HEARTBEAT_S="0.5",
            HERMES_LEARNING_ENABLED=str(self.mode == "learning").lower(),
            HERMES_MEMORY_TOKEN_BUDGET="0",
            **model_env(self.model.port),
        )
        self.procs = service_processes(env, self.tmp / "logs", SERVICES)
        await asyncio.gather(*(start_ready(p) for p in self.procs.values()))
        self.nc = await connect(BusSettings(nats_url=self.nats.url), "learning-eval")
        self.js = self.nc.jetstream()
        self.http = httpx.AsyncClient(base_url=f"http://127.0.0.1:{self.port}", timeout=30)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.http.aclose()
        await self.nc.close()
        await asyncio.gather(*(asyncio.to_thread(p.stop) for p in self.procs.values()))
        await self.model.stop()
        self.nats.stop()

    async def _view(self, thread_id: str) -> dict | None:
        response = await self.http.get(f"/api/threads/{thread_id}/status")
        return response.json()["data"] if response.status_code == 200 else None

    async def thread(self, profile: Profile, index: int, idea: str) -> Row:
        """Submit ``idea`` as ``profile``'s user, answer, wait, rate; the thread's row."""
        started = time.perf_counter()
        response = await self.http.post("/api/submit", json={"idea": idea, "user_id": profile.user_id})
        response.raise_for_status()
        thread_id = response.json()["data"]["thread_id"]

        async def decided() -> dict | None:
            view = await self._view(thread_id)
            # awaiting_answers comes with draft 1, its questions a moment later (idea_type marks them)
            ready = view and (
                view["status"] in ("completed", "failed")
                or (view["status"] == "awaiting_answers" and view["idea_type"] is not None)
            )
            return view if ready else None

        asked = await wait_until(decided, timeout_s=60, interval_s=0.1)
        answers = {}
        if asked["status"] == "awaiting_answers":
            answers = {
                q["question_id"]: a
                for q in asked["questions"]
                if (a := profile.answer(q["category"], q["text"])) is not None
            }
        if answers:
            sent = await self.http.post(f"/api/threads/{thread_id}/continue", json={"answers": answers})
            if sent.status_code == 409:  # the answer timeout came first (a loaded machine): draft 1 is final
                answers = {}
            else:
                sent.raise_for_status()

        async def finished() -> dict | None:
            view = await self._view(thread_id)
            return view if view and view["status"] in ("completed", "failed") else None

        done = await wait_until(finished, timeout_s=self.answer_timeout_s + 60, interval_s=0.1)
        seconds = time.perf_counter() - started
        final = done["draft2"] if done["final_draft_number"] == 2 else (done["draft1"] or "")
        rating = profile.rating(final)
        if done["status"] == "completed":
            (await self.http.post(f"/api/threads/{thread_id}/rate", json={"rating": rating})).raise_for_status()
        draft1 = next(
            e
            for e in await stored_events(self.js, thread_events(thread_id))
            if isinstance(e, ev.JobQueued) and e.kind == "draft1"
        )
        prompt = "\n".join(m.content for m in draft1.messages)
        return Row(
            mode=self.mode,
            user_id=profile.user_id,
            thread_index=index,
            idea=idea,
            idea_type=asked.get("idea_type") or "",
            questions=len(asked["questions"]),
            answers=len(answers),
            assumptions=len(done["assumptions"]),
            facts=len(profile.facts()),
            facts_in_draft1_prompt=profile.honoured(prompt),
            facts_in_final_draft=profile.honoured(final),
            rating=rating,
            final_draft_number=done["final_draft_number"] or 0,
            seconds=round(seconds, 2),
        )

    async def user(self, profile: Profile, ideas: Sequence[str]) -> list[Row]:
        rows = []
        for index, idea in enumerate(ideas, start=1):
            rows.append(await self.thread(profile, index, idea))
        return rows


async def run_mode(
    mode: str, profiles: list[Profile], ideas: int, tmp: Path, answer_timeout_s: float, seed: int
) -> list[Row]:
    async with Run(mode, tmp, answer_timeout_s) as run:
        per_user = await asyncio.gather(*(run.user(p, ideas_for(p, ideas, seed)) for p in profiles))
    return [row for rows in per_user for row in rows]


# ---- report --------------------------------------------------------------------------------------------------

METRICS = (
    ("questions", "questions asked"),
    ("answers", "answers given"),
    ("draft1_share", "profile facts in the draft-1 prompt (share)"),
    ("rating", "rating (1-5)"),
)


def _value(row: Row, metric: str) -> float:
    return row.facts_in_draft1_prompt / row.facts if metric == "draft1_share" else getattr(row, metric)


def curve(rows: list[Row], metric: str) -> list[float]:
    """Mean of ``metric`` over users, per thread index (1..n)."""
    last = max(r.thread_index for r in rows)
    return [mean(_value(r, metric) for r in rows if r.thread_index == i) for i in range(1, last + 1)]


def window(rows: list[Row], metric: str, first: bool, size: int = 10) -> float:
    """Mean of ``metric`` over the first (or last) ``size`` thread indexes of every user."""
    last = max(r.thread_index for r in rows)
    keep = range(1, size + 1) if first else range(last - size + 1, last + 1)
    return mean(_value(r, metric) for r in rows if r.thread_index in keep)


def summary(by_mode: dict[str, list[Row]]) -> list[dict]:
    out = []
    for mode, rows in by_mode.items():
        for first in (True, False):
            out.append(
                {
                    "mode": mode,
                    "threads": "first 10" if first else "last 10",
                    **{m: round(window(rows, m, first), 3) for m, _ in METRICS},
                    "seconds": round(window(rows, "seconds", first), 2),
                }
            )
    return out


def claims(by_mode: dict[str, list[Row]]) -> list[tuple[str, bool]]:
    """The issue's claims, each with whether the measurement supports it."""
    learn, base = by_mode.get("learning"), by_mode.get("baseline")
    if not learn:
        return []
    checks = [
        (
            "learning: fewer questions in the last ten threads than in the first ten",
            window(learn, "questions", False) < window(learn, "questions", True),
        ),
        (
            "learning: more profile facts in draft 1 in the last ten than in the first ten",
            window(learn, "draft1_share", False) > window(learn, "draft1_share", True),
        ),
    ]
    if base:
        checks += [
            (
                "last ten: fewer questions with learning than the baseline",
                window(learn, "questions", False) < window(base, "questions", False),
            ),
            (
                "last ten: more profile facts in draft 1 with learning than the baseline",
                window(learn, "draft1_share", False) > window(base, "draft1_share", False),
            ),
        ]
    return checks


def plot(by_mode: dict[str, list[Row]], path: Path, title: str) -> None:
    """One panel per metric of :data:`METRICS`, a line per mode, against the thread index."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(10, 7), sharex=True)
    for ax, (metric, label) in zip(axes.flat, METRICS, strict=True):
        for mode, rows in by_mode.items():
            values = curve(rows, metric)
            ax.plot(range(1, len(values) + 1), values, "o-" if mode == "learning" else "s--", markersize=3, label=mode)
        ax.set_title(label, fontsize=9)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    for ax in axes[1]:
        ax.set_xlabel("thread index (per user)")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=8, help="simulated users (run concurrently)")
    parser.add_argument("--ideas", type=int, default=30, help="ideas per user, one after the other (>= 20)")
    parser.add_argument("--seed", type=int, default=7, help="profiles and idea order")
    parser.add_argument("--modes", default="learning,baseline", help="comma-separated: learning, baseline")
    parser.add_argument(
        "--answer-timeout",
        type=float,
        default=4.0,
        help="HERMES_ANSWER_TIMEOUT_SECONDS: how long a thread with only ignored questions waits",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (logs, databases, store)")
    args = parser.parse_args()
    if args.ideas < 20:
        parser.error("--ideas must be at least 20 (first ten and last ten threads are compared)")
    return args


def main() -> int:
    args = parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="hermes-bench-learning-"))
    profiles = population(args.users, args.seed)
    started = time.monotonic()
    by_mode: dict[str, list[Row]] = {}
    try:
        for mode in args.modes.split(","):
            t0 = time.monotonic()
            by_mode[mode] = asyncio.run(run_mode(mode, profiles, args.ideas, tmp, args.answer_timeout, args.seed))
            print(f"{mode}: {len(by_mode[mode])} threads in {time.monotonic() - t0:.0f}s", flush=True)
    finally:
        if not args.keep_tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    rows = [asdict(r) for mode_rows in by_mode.values() for r in mode_rows]
    write_csv(rows, args.out / "learning_eval.csv")
    title = (
        f"{args.users} simulated users x {args.ideas} ideas each, seed {args.seed}; means over users per thread "
        f"index; {' vs '.join(by_mode)}"
    )
    plot(by_mode, args.out / "learning_curves.png", title)
    print(f"\n{title}; total {time.monotonic() - started:.0f}s\n")
    print(
        table(
            summary(by_mode),
            [
                ("mode", "mode"),
                ("threads", "threads"),
                ("questions", "questions"),
                ("answers", "answers"),
                ("draft1_share", "facts in draft-1 prompt"),
                ("rating", "rating"),
                ("seconds", "s/thread"),
            ],
        )
    )
    results = claims(by_mode)
    print()
    for text, holds in results:
        print(f"{'holds' if holds else 'FAILS'}: {text}")
    print(f"\nwrote {args.out / 'learning_eval.csv'} and {args.out / 'learning_curves.png'}")
    return 0 if all(holds for _, holds in results) else 1


if __name__ == "__main__":
    sys.exit(main())
