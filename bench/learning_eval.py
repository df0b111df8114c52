"""Learning evaluation (issue 5): does Hermes need fewer questions and start from a better draft the longer a
user works with it?

Runs populations of simulated users (``tests/fakes/simulated_users.py``) through ``--ideas`` ideas each over the
real system: a fresh nats-server, the gateway, orchestrator, learner, backend-router and talos-edge as processes,
and a loopback OpenAI-compatible model (the faithful stand-in: its draft restates the prompt's requirement lines).
Two populations (``--population``, default both, classic first):

* ``classic``: each user a hidden, consistent profile of depth, style and 3-5 recurring constraints in the
  vocabulary the learner's code names; it answers questions by category. Kept as it was: a regression check.
* ``open``: each user 4-6 facts per idea, most in slots and words the learner's code does not name (schedule,
  length, register, tech stack, a bare city name...), some depending on the user's own group of the idea
  (writing, planning, tech, learning); it recognises the question a fact answers from the question's wording and
  says each fact in one of 2-3 wordings of the same value, chosen per thread.

Users run concurrently, each one idea after the other, over HTTP as a client would: submit, wait for the questions,
answer those that touch the profile (ignore the rest; a thread whose questions are all ignored completes on draft 1
at the answer timeout), wait for the final draft, rate it by the share of the idea's profile facts it honours.

Each population runs with learning and then again with ``HERMES_LEARNING_ENABLED=false`` (the baseline), each
mode on a system of its own. Every run sets ``HERMES_MEMORY_TOKEN_BUDGET=0``: memory markers (earlier turns,
answers included) would carry profile facts into draft 1 in both runs and blur what preference learning itself
does.

Per thread it records: questions asked, answers given, assumptions applied and how many of them are wrong (their
value honours none of the facts the user holds for this idea), profile facts in the draft-1 prompt and in the
prompt of the draft finally delivered (read from the stored ``job_queued`` events, as the model received them),
facts in the final draft, the rating. Writes ``bench/results/learning_eval.csv`` (one row per thread, a
``population`` column), ``bench/results/learning_curves.png`` (classic) and ``learning_curves_open.png`` (means over
users per thread index), prints first-ten / last-ten figures per population and mode, and the claims:

* classic: the learning run asks fewer questions and puts more profile facts into draft 1 in its last ten threads
  than in its first ten and than the baseline's last ten;
* open: in the learning run's last ten threads, at least 80 % of the profile facts reach the final prompt, at most
  one question per thread is asked, under 5 % of the applied assumptions are wrong; and each is better than the
  baseline's last ten (wrong assumptions: not worse).

Exits 1 when one claim fails.

Run (not a test): ``uv run --frozen --group bench python bench/learning_eval.py [--population classic|open|both]
[--users 8] [--ideas 30]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from statistics import mean

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # tests/ is not a package: conftest, fakes and procs come from there

# isort: split
from conftest import NatsServer, stored_events, wait_until  # noqa: E402
from fakes.llm_servers import FakeOpenAIServer  # noqa: E402
from fakes.simulated_users import (  # noqa: E402
    OnIdea,
    OpenProfile,
    Profile,
    faithful_reply,
    ideas_for,
    open_population,
    population,
)
from procs import model_env, service_processes, start_ready  # noqa: E402
from report import table, write_csv  # noqa: E402

from hermes_proto import events as ev  # noqa: E402
from hermes_proto.bus import connect  # noqa: E402
from hermes_proto.settings import BusSettings  # noqa: E402
from hermes_proto.subjects import thread_events  # noqa: E402

from hermes_cli.natsserver import free_port  # noqa: E402

SERVICES = ("orchestrator", "learner", "router", "edge", "gateway")
POPULATIONS = ("classic", "open")

User = Profile | OpenProfile
"""A population's user: a classic profile, or an open one (which needs the idea and thread: :func:`person`)."""
Person = Profile | OnIdea
"""A user on one thread: ``user_id``, ``facts()`` (key → marker), ``answer(category, text)``, ``honoured(text)``,
``rating(text)``."""


@dataclass
class Row:
    """One thread of one simulated user (counts; ``seconds`` from submit to completed)."""

    population: str
    mode: str
    user_id: str
    thread_index: int
    idea: str
    idea_type: str
    questions: int
    answers: int
    assumptions_applied: int
    wrong_assumptions: int
    facts: int
    facts_in_draft1_prompt: int
    facts_in_final_prompt: int
    facts_in_final_draft: int
    rating: int
    final_draft_number: int
    seconds: float


def make_population(name: str, size: int, seed: int) -> list[User]:
    """``size`` users of population ``name`` (one of :data:`POPULATIONS`)."""
    return list(population(size, seed)) if name == "classic" else list(open_population(size, seed))


def person(user: User, idea: str, index: int) -> Person:
    """``user`` on its ``index``-th thread, about ``idea``: a classic profile as it is, an open one on that idea (its
    group's facts, that thread's wordings)."""
    return user.on(idea, index) if isinstance(user, OpenProfile) else user


def prompt_of(events: Iterable[object], kind: str, *, last: bool = False) -> str:
    """The prompt as the model received it (message contents, newline-joined) of the first (``last``: the last)
    ``JobQueued`` of ``kind`` among a thread's stored ``events``. LookupError when there is none."""
    jobs = [e for e in events if isinstance(e, ev.JobQueued) and e.kind == kind]
    if not jobs:
        raise LookupError(f"no job_queued of kind {kind}")
    return "\n".join(m.content for m in jobs[-1 if last else 0].messages)


def final_kind(final_draft_number: int | None) -> str:
    """The job kind of the draft finally delivered: ``draft2`` when it is draft 2, else ``draft1``."""
    return "draft2" if final_draft_number == 2 else "draft1"


def wrong_assumptions(who: Person, assumptions: Sequence[dict]) -> int:
    """How many of ``assumptions`` (the thread view's: dicts with a ``value``, the user's wording as applied) honour
    none of the facts ``who`` holds for this thread."""
    return sum(1 for a in assumptions if who.honoured(str(a.get("value") or "")) == 0)


class Run:
    """One population's mode: its system (its own nats-server, services, model and Hermes home) and the client
    driving it."""

    def __init__(self, population: str, mode: str, tmp: Path, answer_timeout_s: float) -> None:
        self.population, self.mode, self.answer_timeout_s = population, mode, answer_timeout_s
        self.tmp = tmp / population / mode
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

    async def thread(self, user: User, index: int, idea: str) -> Row:
        """Submit ``idea`` as ``user``, answer, wait, rate; the thread's row."""
        who = person(user, idea, index)
        started = time.perf_counter()
        response = await self.http.post("/api/submit", json={"idea": idea, "user_id": who.user_id})
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
                if (a := who.answer(q["category"], q["text"])) is not None
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
        rating = who.rating(final)
        if done["status"] == "completed":
            (await self.http.post(f"/api/threads/{thread_id}/rate", json={"rating": rating})).raise_for_status()
        events = await stored_events(self.js, thread_events(thread_id))
        assumptions = done["assumptions"] or []
        return Row(
            population=self.population,
            mode=self.mode,
            user_id=who.user_id,
            thread_index=index,
            idea=idea,
            idea_type=asked.get("idea_type") or "",
            questions=len(asked["questions"]),
            answers=len(answers),
            assumptions_applied=len(assumptions),
            wrong_assumptions=wrong_assumptions(who, assumptions),
            facts=len(who.facts()),
            facts_in_draft1_prompt=who.honoured(prompt_of(events, "draft1")),
            facts_in_final_prompt=who.honoured(prompt_of(events, final_kind(done["final_draft_number"]), last=True)),
            facts_in_final_draft=who.honoured(final),
            rating=rating,
            final_draft_number=done["final_draft_number"] or 0,
            seconds=round(seconds, 2),
        )

    async def user(self, user: User, ideas: Sequence[str]) -> list[Row]:
        rows = []
        for index, idea in enumerate(ideas, start=1):
            rows.append(await self.thread(user, index, idea))
        return rows


async def run_mode(
    population: str, mode: str, users: list[User], ideas: int, tmp: Path, answer_timeout_s: float, seed: int
) -> list[Row]:
    async with Run(population, mode, tmp, answer_timeout_s) as run:
        per_user = await asyncio.gather(*(run.user(u, ideas_for(u, ideas, seed)) for u in users))
    return [row for rows in per_user for row in rows]


# ---- report --------------------------------------------------------------------------------------------------

METRICS = (
    ("questions", "questions asked"),
    ("answers", "answers given"),
    ("draft1_share", "profile facts in the draft-1 prompt (share)"),
    ("final_share", "profile facts in the final prompt (share)"),
    ("wrong", "wrong assumptions (share of applied)"),
    ("rating", "rating (1-5)"),
)
"""(metric, label): the curves plotted and the figures printed. Shares are per thread; ``wrong`` is pooled
(:func:`aggregate`)."""


def _value(row: Row, metric: str) -> float:
    shares = {"draft1_share": row.facts_in_draft1_prompt, "final_share": row.facts_in_final_prompt}
    if metric in shares:
        return shares[metric] / row.facts if row.facts else 0.0
    return getattr(row, metric)


def aggregate(rows: Sequence[Row], metric: str) -> float:
    """``metric`` over ``rows``: for ``wrong`` the wrong assumptions over all applied ones (0.0 when none was
    applied), else the mean of the per-row values (shares of the row's facts, counts, the rating, seconds)."""
    if metric == "wrong":
        applied = sum(r.assumptions_applied for r in rows)
        return sum(r.wrong_assumptions for r in rows) / applied if applied else 0.0
    return mean(_value(r, metric) for r in rows)


def curve(rows: Sequence[Row], metric: str) -> list[float]:
    """``metric`` over users (:func:`aggregate`), per thread index (1..n)."""
    last = max(r.thread_index for r in rows)
    return [aggregate([r for r in rows if r.thread_index == i], metric) for i in range(1, last + 1)]


def window(rows: Sequence[Row], metric: str, first: bool, size: int = 10) -> float:
    """``metric`` (:func:`aggregate`) over the first (or last) ``size`` thread indexes of every user."""
    last = max(r.thread_index for r in rows)
    keep = range(1, size + 1) if first else range(last - size + 1, last + 1)
    return aggregate([r for r in rows if r.thread_index in keep], metric)


def summary(population: str, by_mode: dict[str, list[Row]]) -> list[dict]:
    """One dict per mode and window (first 10, last 10): ``population``, ``mode``, ``threads`` and every metric of
    :data:`METRICS` (rounded to 3 places), ``seconds`` (2 places)."""
    out = []
    for mode, rows in by_mode.items():
        for first in (True, False):
            out.append(
                {
                    "population": population,
                    "mode": mode,
                    "threads": "first 10" if first else "last 10",
                    **{m: round(window(rows, m, first), 3) for m, _ in METRICS},
                    "seconds": round(window(rows, "seconds", first), 2),
                }
            )
    return out


def classic_claims(by_mode: dict[str, list[Row]]) -> list[tuple[str, bool]]:
    """The issue's claims for the classic population, each with whether the measurement supports it."""
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


OPEN_TARGETS = {"final_share": 0.80, "questions": 1.0, "wrong": 0.05}
"""The open population's learning run, last ten threads: final-prompt share at least, questions per thread at most,
wrong assumptions (share of applied) below."""


def open_claims(by_mode: dict[str, list[Row]]) -> list[tuple[str, bool]]:
    """The open population's claims on the learning run's last ten threads (:data:`OPEN_TARGETS`), and each against
    the baseline's last ten (wrong assumptions: not worse, as a baseline applies none)."""
    learn, base = by_mode.get("learning"), by_mode.get("baseline")
    if not learn:
        return []
    final, questions, wrong = (window(learn, m, False) for m in ("final_share", "questions", "wrong"))
    checks = [
        (
            f"learning, last ten: at least {OPEN_TARGETS['final_share']:.0%} of the profile facts in the final prompt",
            final >= OPEN_TARGETS["final_share"],
        ),
        (
            f"learning, last ten: at most {OPEN_TARGETS['questions']:g} question per thread",
            questions <= OPEN_TARGETS["questions"],
        ),
        (
            f"learning, last ten: under {OPEN_TARGETS['wrong']:.0%} of the applied assumptions wrong",
            wrong < OPEN_TARGETS["wrong"],
        ),
    ]
    if base:
        checks += [
            (
                "last ten: more profile facts in the final prompt with learning than the baseline",
                final > window(base, "final_share", False),
            ),
            (
                "last ten: fewer questions with learning than the baseline",
                questions < window(base, "questions", False),
            ),
            (
                "last ten: a share of wrong assumptions with learning not worse than the baseline's",
                wrong <= window(base, "wrong", False),
            ),
        ]
    return checks


def claims(population: str, by_mode: dict[str, list[Row]]) -> list[tuple[str, bool]]:
    """``population``'s claims, each text prefixed with the population, with whether the measurement supports it."""
    checks = classic_claims(by_mode) if population == "classic" else open_claims(by_mode)
    return [(f"{population}: {text}", holds) for text, holds in checks]


def curves_path(out: Path, population: str) -> Path:
    """``learning_curves.png`` for the classic population (its name before there were two), else
    ``learning_curves_<population>.png``."""
    return out / ("learning_curves.png" if population == "classic" else f"learning_curves_{population}.png")


def plot(by_mode: dict[str, list[Row]], path: Path, title: str) -> None:
    """One panel per metric of :data:`METRICS` (2 x 3), a line per mode, against the thread index."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(14, 7), sharex=True)
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


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--population",
        choices=(*POPULATIONS, "both"),
        default="both",
        help="which simulated users: classic, open, or both (classic first)",
    )
    parser.add_argument("--users", type=int, default=8, help="simulated users per population (run concurrently)")
    parser.add_argument("--ideas", type=int, default=30, help="ideas per user, one after the other (>= 20)")
    parser.add_argument("--seed", type=int, default=7, help="profiles, idea order and wordings")
    parser.add_argument("--modes", default="learning,baseline", help="comma-separated: learning, baseline")
    parser.add_argument(
        "--answer-timeout",
        type=float,
        default=4.0,
        help="HERMES_ANSWER_TIMEOUT_SECONDS: how long a thread with only ignored questions waits",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (logs, databases, store)")
    args = parser.parse_args(argv)
    if args.ideas < 20:
        parser.error("--ideas must be at least 20 (first ten and last ten threads are compared)")
    args.populations = POPULATIONS if args.population == "both" else (args.population,)
    return args


SUMMARY_COLUMNS = [
    ("population", "population"),
    ("mode", "mode"),
    ("threads", "threads"),
    ("questions", "questions"),
    ("answers", "answers"),
    ("draft1_share", "facts in draft-1 prompt"),
    ("final_share", "facts in final prompt"),
    ("wrong", "wrong assumptions"),
    ("rating", "rating"),
    ("seconds", "s/thread"),
]


def main() -> int:
    args = parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="hermes-bench-learning-"))
    started = time.monotonic()
    results: dict[str, dict[str, list[Row]]] = {}
    try:
        for name in args.populations:
            users = make_population(name, args.users, args.seed)
            results[name] = {}
            for mode in args.modes.split(","):
                t0 = time.monotonic()
                rows = asyncio.run(run_mode(name, mode, users, args.ideas, tmp, args.answer_timeout, args.seed))
                results[name][mode] = rows
                print(f"{name} {mode}: {len(rows)} threads in {time.monotonic() - t0:.0f}s", flush=True)
    finally:
        if not args.keep_tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    write_csv(
        [asdict(r) for by_mode in results.values() for rows in by_mode.values() for r in rows],
        args.out / "learning_eval.csv",
    )
    wrote = [args.out / "learning_eval.csv"]
    for name, by_mode in results.items():
        title = (
            f"{name} population: {args.users} simulated users x {args.ideas} ideas each, seed {args.seed}; "
            f"means over users per thread index; {' vs '.join(by_mode)}"
        )
        plot(by_mode, curves_path(args.out, name), title)
        wrote.append(curves_path(args.out, name))
    print(f"\n{args.users} users x {args.ideas} ideas, seed {args.seed}; total {time.monotonic() - started:.0f}s\n")
    print(table([row for name, by_mode in results.items() for row in summary(name, by_mode)], SUMMARY_COLUMNS))
    checks = [check for name, by_mode in results.items() for check in claims(name, by_mode)]
    print()
    for text, holds in checks:
        print(f"{'holds' if holds else 'FAILS'}: {text}")
    print(f"\nwrote {', '.join(str(p) for p in wrote)}")
    return 0 if all(holds for _, holds in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
