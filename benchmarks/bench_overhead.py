"""Service overhead: trials/s through automl (API + worker + store) against bare ``study.optimize``.

Both sides run the same zero-cost objective (two suggested params, one report, a value)
on the same kind of storage, a fresh database each run (a SQLite file; with
``--backends postgres`` a new PostgreSQL database on ``--postgres``):

- ``automl``: a real ``automl serve`` process and one real ``automl worker`` process
  (``benchmarks/sleep_worker.py --trial-seconds 0``: the worker path unchanged, training
  replaced by a stand-in that reports every epoch and returns at once). Both are started
  and idle first; then the study (``--trials`` trials, ``epochs: 1``, random sampler
  seeded, no pruner) is submitted with ``POST /studies`` and worked to the end.
- ``bare``: ``optuna.create_study(storage=URL, sampler=RandomSampler(0),
  pruner=NopPruner())`` and ``study.optimize(objective, n_trials=--trials)`` in this
  process, the objective written as the Optuna examples write one (suggest, report,
  ``should_prune``, return).
- ``bare-wal`` (SQLite only): the same, on a file with the settings automl's store gives
  SQLite (``journal_mode=WAL``, ``synchronous=NORMAL``): Optuna's defaults sync the file
  at every commit, automl's store does not, so ``bare`` alone would credit automl with
  the disk's sync latency. The goal line reads on the faster bare side.

Trials/s = trials / wall, where wall runs from just before the submission (``POST`` /
``create_study``) to the end of the last trial (its Optuna ``datetime_complete``; the
bench waits for the end by polling the API twice a second, which the wall does not
include). ``steady`` = trials / (last trial's end - first trial's start): the per-trial
cost without the start. Also printed: CPU per trial of the automl processes (worker +
API) and of this process for the bare side (PostgreSQL's own not included), and the
median gap between two trials of the worker (settle + claim + trial creation). The sides
alternate, in swapped order each repeat; medians; ratio = automl / bare (the issue's
goal: >= 0.8).

``--profile`` then runs the automl worker loop once in this process under cProfile
(same stand-in trainer, same store, no API) and prints where a trial's time goes.

    python benchmarks/bench_overhead.py [--trials 200] [--repeats 3]
        [--backends sqlite postgres] [--sampler random|tpe] [--profile]
        [--postgres postgresql://postgres@127.0.0.1:5432/postgres]
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import itertools
import os
import pstats
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import optuna
import sqlalchemy
from bench_api import api_server, database
from bench_scaling import (
    cpu_seconds,
    spec_for,
    start_workers,
    stop,
    wait_until_started,
)
from optuna.trial import TrialState
from sleep_worker import make_sleep_train

import automl.worker.runner as worker_runner
from automl.spec import validate_spec
from automl.store import get_study, open_store, submit_study
from automl.worker import Worker, WorkerOptions

GOAL = 0.8
EPOCHS = 1
POLL_S = 0.5


@dataclass
class Run:
    """One measured study.

    Attributes:
        trials: Completed trials.
        wall_s: From just before the submission to the last trial's end.
        span_s: From the first trial's start to the last trial's end.
        cpu_s: CPU seconds of the side's processes meanwhile.
        gap_ms: Median time between one trial's end and the next trial's start.
    """

    trials: int
    wall_s: float
    span_s: float
    cpu_s: float
    gap_ms: float

    @property
    def rate(self) -> float:
        """Trials per second over the wall time."""
        return self.trials / self.wall_s

    @property
    def steady(self) -> float:
        """Trials per second from the first start to the last end."""
        return self.trials / self.span_s


def spec_data(trials: int, sampler: str) -> dict[str, Any]:
    """The study's spec as JSON (``bench_scaling``'s spec, ``epochs: 1``)."""
    data = spec_for(trials, EPOCHS, "overhead").model_dump(mode="json")
    data["sampler"] = {"name": sampler, "seed": 0}
    return data


def timing(trials: list[optuna.trial.FrozenTrial], submitted: float) -> tuple[float, float, float]:
    """(wall, span, median gap ms) of completed trials, from Optuna's timestamps."""
    done = sorted(
        (t.datetime_start.timestamp(), t.datetime_complete.timestamp())  # type: ignore[union-attr]
        for t in trials
        if t.state == TrialState.COMPLETE
    )
    end = max(stop for _, stop in done)
    gaps = [(b[0] - a[1]) * 1000 for a, b in itertools.pairwise(done)]
    return end - submitted, end - done[0][0], statistics.median(gaps) if gaps else 0.0


def run_automl(args: argparse.Namespace, backend: str) -> Run:
    """The study through ``automl serve`` and one ``automl worker``, on a fresh database."""
    with (
        tempfile.TemporaryDirectory(prefix="bench-overhead-") as tmp,
        database(backend, args.postgres, Path(tmp)) as url,
    ):
        folder = Path(tmp)
        open_store(url, artifacts_dir=folder / "art").close()  # the schema, before both start
        with api_server(url, folder, 1) as (base, server):
            workers = start_workers(1, url, folder, 0.0)
            try:
                wait_until_started(workers, folder, timeout=300)
                pids = [server, workers[0].pid]
                before = sum(cpu_seconds(pid) for pid in pids)
                with httpx.Client(base_url=base, timeout=60) as client:
                    submitted = time.time()
                    reply = client.post("/studies", json=spec_data(args.trials, args.sampler))
                    reply.raise_for_status()
                    study_id = reply.json()["id"]
                    deadline = time.monotonic() + args.run_timeout
                    while client.get(f"/studies/{study_id}").json()["status"] in (
                        "queued",
                        "running",
                    ):
                        if time.monotonic() > deadline:
                            raise RuntimeError(f"study not done after {args.run_timeout:.0f} s")
                        if workers[0].poll() is not None:
                            raise RuntimeError(f"the worker exited; see its log in {folder}")
                        time.sleep(POLL_S)
                cpu = sum(cpu_seconds(pid) for pid in pids) - before
            finally:
                stop(workers)
        store = open_store(url, artifacts_dir=folder / "art")
        try:
            trials = store.storage.get_all_trials(study_id, deepcopy=False)
        finally:
            store.close()
    wall, span, gap = timing(trials, submitted)
    return Run(sum(t.state == TrialState.COMPLETE for t in trials), wall, span, cpu, gap)


def bare_objective(trial: optuna.Trial) -> float:
    """A zero-cost objective written as the Optuna examples write one."""
    lr = trial.suggest_float("lr", 1e-4, 1e-1, log=True)
    width = trial.suggest_int("width", 8, 32, step=8)
    accuracy = 0.0
    for epoch in range(EPOCHS):
        accuracy = 1.0 / (1.0 + abs(lr - 1e-2)) * width / 32
        trial.report(accuracy, epoch)
        if trial.should_prune():
            raise optuna.TrialPruned()
    return accuracy


def run_bare(args: argparse.Namespace, backend: str, *, wal: bool = False) -> Run:
    """``study.optimize`` with the zero-cost objective on a fresh database (``wal``: a
    SQLite file with automl's settings)."""
    with (
        tempfile.TemporaryDirectory(prefix="bench-overhead-") as tmp,
        database(backend, args.postgres, Path(tmp)) as url,
    ):
        storage = optuna.storages.RDBStorage(url)  # the schema, as automl's is made first
        if wal:
            sqlalchemy.event.listen(storage.engine, "connect", _automl_sqlite_settings)
            storage.engine.dispose()
        sampler = (
            optuna.samplers.RandomSampler(seed=0)
            if args.sampler == "random"
            else optuna.samplers.TPESampler(seed=0)
        )
        cpu_before = time.process_time()
        submitted = time.time()
        study = optuna.create_study(
            storage=storage if wal else url,
            sampler=sampler,
            pruner=optuna.pruners.NopPruner(),
            direction="maximize",
        )
        study.optimize(bare_objective, n_trials=args.trials)
        cpu = time.process_time() - cpu_before
        trials = study.get_trials(deepcopy=False)
        storage.remove_session()
        del storage
    wall, span, gap = timing(trials, submitted)
    return Run(sum(t.state == TrialState.COMPLETE for t in trials), wall, span, cpu, gap)


def _automl_sqlite_settings(connection: Any, _: Any) -> None:
    """What ``automl.store.storage`` sets on each SQLite connection."""
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def profile_worker(args: argparse.Namespace, backend: str) -> None:
    """The worker loop in this process under cProfile, on a fresh database."""
    worker_runner.train = make_sleep_train(0.0)  # type: ignore[assignment]
    with (
        tempfile.TemporaryDirectory(prefix="bench-overhead-") as tmp,
        database(backend, args.postgres, Path(tmp)) as url,
    ):
        store = open_store(url, artifacts_dir=Path(tmp) / "art")
        try:
            study = submit_study(store, validate_spec(spec_data(args.trials, args.sampler)))
            options = WorkerOptions(device="cpu", study_id=study.id, exit_when_idle=True)
            profiler = cProfile.Profile()
            started = time.perf_counter()
            profiler.enable()
            ran = Worker(store, options).run()
            profiler.disable()
            total = time.perf_counter() - started
            assert not get_study(store, study.id).status.is_active
        finally:
            store.close()
    stats = pstats.Stats(profiler)
    rows = [
        (cumulative, own, calls, f"{Path(path).name}:{line}({name})", path)
        for (path, line, name), (_, calls, own, cumulative, _) in stats.stats.items()  # type: ignore[attr-defined]
    ]
    print(
        f"\nprofile of the worker loop in-process, {backend}: {ran} trials in {total:.2f} s "
        f"({1000 * total / max(ran, 1):.1f} ms per trial)"
    )
    print(f"{'ms/trial':>9} {'%':>6} {'own %':>6} {'calls':>7}  automl function (cumulative)")
    ours = sorted((r for r in rows if f"{os.sep}automl{os.sep}" in r[4]), reverse=True)
    for cumulative, own, calls, label, _ in ours[:25]:
        print(
            f"{1000 * cumulative / ran:>9.2f} {100 * cumulative / total:>5.1f}% "
            f"{100 * own / total:>5.1f}% {calls:>7}  {label}"
        )
    print(f"\n{'ms/trial':>9} {'%':>6} {'calls':>7}  heaviest functions by own time")
    for _, own, calls, label, _ in sorted(rows, key=lambda r: -r[1])[:15]:
        print(f"{1000 * own / ran:>9.2f} {100 * own / total:>5.1f}% {calls:>7}  {label}")


def main() -> None:
    """Runs both sides on every backend, alternating, and prints the medians and ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backends", nargs="+", default=["sqlite", "postgres"])
    parser.add_argument("--sampler", choices=["random", "tpe"], default="random")
    parser.add_argument("--run-timeout", type=float, default=600)
    parser.add_argument("--profile", action="store_true", help="profile the worker loop")
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    print(
        f"{args.trials} trials per study, {args.sampler} sampler, {EPOCHS} report per trial, "
        f"{os.cpu_count()} cores",
        flush=True,
    )
    results: dict[str, dict[str, list[Run]]] = {}
    for backend in args.backends:
        sides: dict[str, Callable[[argparse.Namespace, str], Run]] = {
            "automl": run_automl,
            "bare": run_bare,
        }
        if backend == "sqlite":
            sides["bare-wal"] = functools.partial(run_bare, wal=True)
        results[backend] = {name: [] for name in sides}
        for repeat in range(args.repeats):
            order = list(sides) if repeat % 2 == 0 else list(sides)[::-1]
            for name in order:
                run = sides[name](args, backend)
                results[backend][name].append(run)
                print(
                    f"  {backend} repeat {repeat + 1} {name:8}: {run.trials} trials, "
                    f"{run.rate:6.1f} trials/s (steady {run.steady:6.1f}), "
                    f"cpu/trial {1000 * run.cpu_s / run.trials:5.1f} ms, "
                    f"gap {run.gap_ms:5.1f} ms (load average {os.getloadavg()[0]:.1f})",
                    flush=True,
                )

    print(f"\nmedians of {args.repeats} runs, {args.trials} trials each")
    row = "{:9} {:9} {:>9} {:>9} {:>13} {:>8}"
    print(row.format("backend", "side", "trials/s", "steady/s", "cpu/trial ms", "gap ms"))
    verdicts = []
    for backend, by_side in results.items():
        medians = {}
        for name, runs in by_side.items():
            rate = statistics.median(r.rate for r in runs)
            steady = statistics.median(r.steady for r in runs)
            cpu = statistics.median(1000 * r.cpu_s / r.trials for r in runs)
            gap = statistics.median(r.gap_ms for r in runs)
            medians[name] = (rate, steady)
            print(
                row.format(
                    backend, name, f"{rate:.1f}", f"{steady:.1f}", f"{cpu:.1f}", f"{gap:.1f}"
                )
            )
        bares = sorted((n for n in medians if n != "automl"), key=lambda n: -medians[n][0])
        for name in bares:
            ratio = medians["automl"][0] / medians[name][0]
            steady_ratio = medians["automl"][1] / medians[name][1]
            goal = (
                f"goal >= {GOAL:g}: {'met' if ratio >= GOAL else 'NOT met'}"
                if name == bares[0]
                else "(the slower bare side)"
            )
            verdicts.append(
                f"{backend}: automl / {name} trials/s {ratio:.2f} (steady {steady_ratio:.2f}); "
                + goal
            )
    print("\n" + "\n".join(verdicts))
    if args.profile:
        for backend in args.backends:
            profile_worker(args, backend)


if __name__ == "__main__":
    main()
