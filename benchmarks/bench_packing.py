"""Trials per hour with K trial processes per device (``automl worker --slots K``).

For each K, a fresh SQLite store gets one study of small models, submitted with the real
CLI (``python -m automl submit``), and ``python -m automl worker --slots K
--exit-when-idle --study ID`` works it: K worker processes sharing the CPU cores (the
product splits the threads: cores // K each), or with ``--device cuda`` K processes on
GPU 0 (``--gpus 0 --slots K``). The study is an exact grid (``sampler: grid``, ``pruner:
none``), so every K trains the very same configurations for the same epochs: ``lr`` x
``width`` of automl's ``cnn`` x ``seed`` (``--trials`` / 8 seeds), Adam, batch 64, on
scikit-learn's digits (``--source digits``, 8x8) or a generated folder of 32x32 RGB PNGs
(``--source shapes``).

Per run, from Optuna's timestamps: trials/hour = completed trials / (last trial's end -
first trial's start) x 3600 (steady state: process start-up excluded); wall trials/hour =
completed trials / the whole command's wall time (submit, start-up, every trial, exit);
steady trials/hour = the trials that ended after the K-th end / (last end - K-th end),
once every slot has finished its first trial, which carries that process's one-off costs
(imports, the CUDA context, cuDNN autotuning);
and the mean validation accuracy of the trials, which must not drop as K grows (the same
cells train in every run). The K values alternate, in rotated order, ``--repeats``
times; the medians are printed with the ratio to K = 1. The issue's goal: >= 3x at the
best K on one GPU (K = 1, 2, 4, 8); CPU figures for K = 1, 2 as well.

``--profile`` then works one more copy of the study in this process, one slot, under
cProfile, and prints where a trial's time goes (milliseconds per trial, automl functions
and the heaviest callees).

    python benchmarks/bench_packing.py [--slots 1 2] [--trials 16] [--epochs 6]
        [--repeats 3] [--source digits|shapes] [--device cpu|cuda] [--keep DIR] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optuna.trial import TrialState

from automl.examples import write_rgb_folder
from automl.spec import validate_spec
from automl.store import open_store, submit_study
from automl.worker import Worker, WorkerOptions

GOAL = 3.0
"""The issue's goal: trials/hour at the best K over K = 1, on one GPU."""
LRS = [1e-3, 2e-3, 5e-3, 1e-2]
WIDTHS = [16, 32]


@dataclass
class PackingRun:
    """One study worked by K slots.

    Attributes:
        slots: K.
        trials: Completed trials.
        busy_seconds: Last trial's end - first trial's start.
        wall_seconds: Wall time of submit + worker, start to exit.
        mean_trial_seconds: Mean duration of one trial (start to end).
        mean_accuracy: Mean final validation accuracy of the trials.
        steady_trials: Trials that ended after the K-th end (each slot's first trial,
            which carries the process's one-off costs, has ended by then).
        steady_seconds: Last end - the K-th end.
    """

    slots: int
    trials: int
    busy_seconds: float
    wall_seconds: float
    mean_trial_seconds: float
    mean_accuracy: float
    steady_trials: int = 0
    steady_seconds: float = float("nan")

    @property
    def steady_per_hour(self) -> float:
        """Trials per hour once every slot has finished its first trial (NaN if none)."""
        if self.steady_trials == 0 or not self.steady_seconds > 0:
            return float("nan")
        return self.steady_trials / self.steady_seconds * 3600

    @property
    def per_hour(self) -> float:
        """Completed trials per hour while the slots were busy."""
        return self.trials / self.busy_seconds * 3600

    @property
    def wall_per_hour(self) -> float:
        """Completed trials per hour of the whole command."""
        return self.trials / self.wall_seconds * 3600


def study_spec(args: argparse.Namespace, slots: int) -> dict[str, Any]:
    """The grid study: every cell once, no pruning, the same cells for every K."""
    if args.source == "digits":
        dataset: dict[str, Any] = {"source": "digits", "options": {"val_fraction": 0.2, "seed": 0}}
    else:
        options = {"path": "shapes", "size": 32, "val_fraction": 0.2, "seed": 0}
        dataset = {"source": "image_folder", "options": options}
    seeds = list(range(args.trials // (len(LRS) * len(WIDTHS))))
    return {
        "name": f"bench-packing-{slots}",
        "dataset": dataset,
        "objective": {"metric": "accuracy", "direction": "maximize"},
        "budget": {"n_trials": args.trials, "max_failed": 2},
        "sampler": {"name": "grid", "seed": 0},
        "pruner": {"name": "none"},
        "fixed": {"model": "cnn", "optimizer": "adam", "epochs": args.epochs, "batch_size": 64},
        "params": {
            "lr": {"type": "categorical", "choices": LRS},
            "width": {"type": "categorical", "choices": WIDTHS},
            "seed": {"type": "categorical", "choices": seeds},
        },
    }


def run_slots(args: argparse.Namespace, slots: int, work: Path, env: dict[str, str]) -> PackingRun:
    """Submits the study to a fresh store and works it with ``--slots`` K; reads the timings."""
    spec_path = work / "spec.json"
    spec_path.write_text(json.dumps(study_spec(args, slots)))
    url = f"sqlite:///{work / 'automl.db'}"
    env = {**env, "AUTOML_STORAGE": url, "AUTOML_ARTIFACTS_DIR": str(work / "artifacts")}
    cli = [sys.executable, "-m", "automl", "--log-level", "WARNING"]
    started = time.time()
    submitted = subprocess.run(
        [*cli, "submit", str(spec_path), "--json"], env=env, capture_output=True, text=True
    )
    if submitted.returncode != 0:
        raise RuntimeError(f"submit failed:\n{submitted.stderr}")
    study_id = json.loads(submitted.stdout)["id"]
    device = ["--gpus", "0"] if args.device.startswith("cuda") else ["--device", args.device]
    worker = [*cli, "worker", *device, "--slots", str(slots), "--exit-when-idle"]
    subprocess.run(
        [*worker, "--study", str(study_id), "--poll-interval", "0.5"], env=env, check=True
    )
    wall = time.time() - started
    store = open_store(url, artifacts_dir=work / "artifacts")
    try:
        trials = [
            t
            for t in store.storage.get_all_trials(study_id)
            if t.state == TrialState.COMPLETE and t.value is not None
        ]
    finally:
        store.close()
    if not trials:
        raise RuntimeError(f"K={slots}: no trial completed")
    starts = [t.datetime_start.timestamp() for t in trials if t.datetime_start]
    ends = [t.datetime_complete.timestamp() for t in trials if t.datetime_complete]
    durations = [
        (t.datetime_complete - t.datetime_start).total_seconds()
        for t in trials
        if t.datetime_start and t.datetime_complete
    ]
    ends.sort()
    first_round = min(slots, len(ends)) - 1
    return PackingRun(
        slots=slots,
        trials=len(trials),
        steady_trials=len(ends) - 1 - first_round,
        steady_seconds=ends[-1] - ends[first_round],
        busy_seconds=max(ends) - min(starts),
        wall_seconds=wall,
        mean_trial_seconds=statistics.mean(durations),
        mean_accuracy=statistics.mean(float(t.value) for t in trials if t.value is not None),
    )


def profile_one_slot(args: argparse.Namespace, work: Path) -> None:
    """Works the study once more in this process (one slot) under cProfile and prints
    milliseconds per trial of the heaviest automl functions and callees."""
    store = open_store(f"sqlite:///{work / 'automl.db'}", artifacts_dir=work / "artifacts")
    try:
        study = submit_study(store, validate_spec(study_spec(args, 1)))
        options = WorkerOptions(
            device=args.device, study_id=study.id, exit_when_idle=True, reap_interval=None
        )
        worker = Worker(store, options)
        profiler = cProfile.Profile()
        started = time.perf_counter()
        profiler.enable()
        worker.run()
        profiler.disable()
        total = time.perf_counter() - started
    finally:
        store.close()
    per_trial = 1000.0 / args.trials
    print(f"\nprofile, one slot in process: {total:.2f} s, {total * per_trial:.0f} ms per trial")
    rows = [
        (cumulative, own, calls, f"{Path(path).name}:{line}({name})", path)
        for (path, line, name), (_, calls, own, cumulative, _) in pstats.Stats(
            profiler
        ).stats.items()  # type: ignore[attr-defined]
    ]
    print(f"{'ms/trial':>9} {'own ms':>8} {'calls':>7}  automl function (cumulative)")
    automl_rows = [row for row in rows if f"{os.sep}automl{os.sep}" in row[4]]
    for cumulative, own, calls, label, _ in sorted(automl_rows, reverse=True)[:30]:
        print(f"{cumulative * per_trial:>9.1f} {own * per_trial:>8.1f} {calls:>7}  {label}")
    print(f"{'own ms':>9} {'calls':>7}  heaviest functions by own time")
    for _, own, calls, label, _ in sorted(rows, key=lambda row: -row[1])[:15]:
        print(f"{own * per_trial:>9.1f} {calls:>7}  {label}")


def report(runs: dict[int, list[PackingRun]], device: str) -> None:
    """Prints the medians per K and the ratios to K = 1."""
    base = statistics.median(r.per_hour for r in runs[min(runs)])
    base_wall = statistics.median(r.wall_per_hour for r in runs[min(runs)])
    print(f"\n{device}: medians of {len(runs[min(runs)])} runs per K")
    base_steady = statistics.median(r.steady_per_hour for r in runs[min(runs)])
    print(
        f"{'K':>3} {'trials/h':>9} {'ratio':>6} {'steady/h':>9} {'ratio':>6} "
        f"{'wall trials/h':>14} {'ratio':>6} {'s/trial':>8} {'mean val acc':>12}"
    )
    best = best_steady = 0.0
    for slots, rows in runs.items():
        per_hour = statistics.median(r.per_hour for r in rows)
        wall = statistics.median(r.wall_per_hour for r in rows)
        seconds = statistics.median(r.mean_trial_seconds for r in rows)
        accuracy = statistics.median(r.mean_accuracy for r in rows)
        steady = statistics.median(r.steady_per_hour for r in rows)
        best = max(best, per_hour / base)
        best_steady = max(best_steady, steady / base_steady)
        print(
            f"{slots:>3} {per_hour:>9.0f} {per_hour / base:>5.2f}x {steady:>9.0f} "
            f"{steady / base_steady:>5.2f}x {wall:>14.0f} {wall / base_wall:>5.2f}x "
            f"{seconds:>8.2f} {accuracy:>12.4f}"
        )
    scope = "" if device.startswith("cuda") else ", a goal for one GPU"
    for name, ratio in (("busy", best), ("steady", best_steady)):
        verdict = "met" if ratio >= GOAL else "NOT met"
        print(
            f"best K, {name}: {ratio:.2f}x trials/hour over K = {min(runs)} "
            f"(goal >= {GOAL:g}x: {verdict}{scope})"
        )


def main() -> None:
    """Runs every K per repeat in rotated order and prints the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu, or cuda (GPU 0)")
    parser.add_argument("--slots", type=int, nargs="+", help="K values (cpu: 1 2; cuda: 1 2 4 8)")
    parser.add_argument("--trials", type=int, default=16, help="a multiple of 8 (grid cells)")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--source", choices=["digits", "shapes"], default="digits")
    parser.add_argument("--per-class", type=int, default=500, help="shapes: PNGs per class")
    parser.add_argument("--keep", type=Path, help="keep each run's store here")
    parser.add_argument("--profile", action="store_true", help="profile one slot in process")
    args = parser.parse_args()
    cells = len(LRS) * len(WIDTHS)
    if args.trials < cells or args.trials % cells:
        parser.error(f"--trials must be a positive multiple of {cells}")
    slots_list = args.slots or ([1, 2, 4, 8] if args.device.startswith("cuda") else [1, 2])

    with tempfile.TemporaryDirectory(prefix="bench-packing-") as tmp:
        scratch = args.keep.resolve() if args.keep else Path(tmp) / "runs"
        env = {
            **os.environ,
            "AUTOML_DATA_ROOT": str(Path(tmp) / "data"),
            "AUTOML_CACHE_DIR": str(Path(tmp) / "cache"),  # shared: decoded once, as in use
        }
        if args.source == "shapes":
            write_rgb_folder(Path(tmp) / "data" / "shapes", per_class=args.per_class, size=32)
        print(
            f"{args.trials} trials x {args.epochs} epochs of cnn on {args.source}, "
            f"device {args.device}, K = {slots_list}, {os.cpu_count()} cores",
            flush=True,
        )
        runs: dict[int, list[PackingRun]] = {k: [] for k in slots_list}
        for repeat in range(args.repeats):
            shift = repeat % len(slots_list)
            for slots in slots_list[shift:] + slots_list[:shift]:
                work = scratch / f"{repeat}-k{slots}"
                shutil.rmtree(work, ignore_errors=True)
                work.mkdir(parents=True)
                run = run_slots(args, slots, work, env)
                runs[slots].append(run)
                print(
                    f"  repeat {repeat + 1} K={slots}: {run.trials} trials, "
                    f"{run.per_hour:.0f} trials/h busy ({run.busy_seconds:.1f} s), "
                    f"{run.wall_per_hour:.0f} trials/h wall ({run.wall_seconds:.1f} s), "
                    f"{run.mean_trial_seconds:.2f} s/trial, mean val acc "
                    f"{run.mean_accuracy:.4f}, load average {os.getloadavg()[0]:.1f}",
                    flush=True,
                )
        report(runs, args.device)
        if args.profile:
            os.environ.update(env)
            work = scratch / "profile"
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir(parents=True)
            profile_one_slot(args, work)


if __name__ == "__main__":
    main()
