"""The real ``automl`` CLI with training replaced by a fixed-duration sleep.

A helper of ``bench_scaling.py`` and ``bench_api.py``: each worker process they start runs

    python benchmarks/sleep_worker.py --trial-seconds 0.5 [--claim-log FILE]
        -- worker --device cpu --threads 1 ...

It swaps ``automl.worker.runner.train`` for a function that sleeps ``--trial-seconds``
(spread over the trial's epochs, reporting each epoch like the real trainer) and returns
a valid ``TrainResult`` (with the trial's dataset, loaded as the real trainer loads it),
then calls the CLI's own ``main``. The dataset named by ``--preload`` (digits unless
``--preload ''``) is loaded first, so its imports are paid while the worker is idle.
Everything else is the real worker path: claim, Optuna trial, params, per-epoch reports
and pruning checks, heartbeats, weights, ``tell``, finish and settle. No product code
changes.

With ``--real-training`` the trainer is left alone (for load that trains for real).
With ``--claim-log`` every claim the worker makes is timed (the wall-clock duration of
the worker's claim call, as the worker sees it) and appended to FILE as one JSON line:
``{"s": seconds, "got": true/false, "at": unix time}`` (it wraps ``Worker._claim``,
so it follows that method if the worker loop is reorganized).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

import torch

import automl.worker.loop as worker_loop
import automl.worker.runner as worker_runner
from automl.cli.main import main as automl_main
from automl.data import load_dataset
from automl.train import TrainingInterrupted, TrainResult
from automl.train.checkpoint import TrainState
from automl.train.trial_config import TrialConfig

SLICE_S = 0.05
"""How often the sleep checks ``should_stop`` (the real trainer checks every batch)."""


def make_sleep_train(trial_seconds: float) -> Callable[..., TrainResult]:
    """A stand-in for ``automl.train.train`` that sleeps instead of training.

    Args:
        trial_seconds: Total sleep per trial, spread evenly over ``config.epochs``.

    Returns:
        A function with the trainer's signature.
    """

    def sleep_train(
        config: TrialConfig,
        report: Callable[[int, dict[str, float]], bool] | None = None,
        *,
        should_stop: Callable[[], bool] | None = None,
        resume: TrainState | None = None,
        monitor: str = "accuracy",
        **_: Any,
    ) -> TrainResult:
        started = time.perf_counter()
        digest = hashlib.sha256(config.model_dump_json().encode()).digest()
        final = 0.5 + 0.5 * int.from_bytes(digest[:4], "big") / 2**32
        per_epoch = trial_seconds / config.epochs
        first = 1 if resume is None else resume.epoch + 1
        history: list[dict[str, float]] = [] if resume is None else list(resume.history)
        metrics: dict[str, float] = {}
        pruned = False
        for epoch in range(first, config.epochs + 1):
            deadline = time.perf_counter() + per_epoch
            while (left := deadline - time.perf_counter()) > 0:
                time.sleep(min(SLICE_S, left))
                if should_stop is not None and should_stop():
                    raise TrainingInterrupted(f"stopped during epoch {epoch}")
            accuracy = final * epoch / config.epochs
            metrics = {"accuracy": accuracy, "loss": 1.0 - accuracy}
            history.append({"epoch": epoch, "train_loss": 1.0 - accuracy, **metrics})
            if report is not None and report(epoch, metrics):
                pruned = True
                break
        return TrainResult(
            metrics=metrics or {"accuracy": final, "loss": 1.0 - final},
            history=history,
            per_class=[],
            confusion=[],
            most_confused=[],
            epochs_run=len(history),
            pruned=pruned,
            duration_s=time.perf_counter() - started,
            state_dict={"weight": torch.zeros(4)},
            dataset=load_dataset(config.dataset.source, config.dataset.options),
        )

    return sleep_train


def time_claims(log: TextIO) -> None:
    """Wraps the worker's claim so that each call's duration is appended to ``log``."""
    original = worker_loop.Worker._claim

    def timed_claim(self: worker_loop.Worker) -> Any:
        started = time.perf_counter()
        lease = original(self)
        elapsed = time.perf_counter() - started
        log.write(json.dumps({"s": elapsed, "got": lease is not None, "at": time.time()}) + "\n")
        log.flush()
        return lease

    worker_loop.Worker._claim = timed_claim  # type: ignore[method-assign]


def main() -> int:
    """Patches the trainer (and the claim timer), then runs the ``automl`` CLI."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trial-seconds", type=float, default=0.5)
    parser.add_argument("--claim-log", help="append one JSON line per claim to this file")
    parser.add_argument(
        "--real-training", action="store_true", help="keep the real trainer (only time claims)"
    )
    parser.add_argument(
        "--preload",
        default="digits",
        help="dataset loaded before the worker starts (its imports and decoding are then "
        "paid while the worker is idle, not in its first measured trial; '' for none)",
    )
    parser.add_argument("argv", nargs=argparse.REMAINDER, help="-- then the automl arguments")
    args = parser.parse_args()
    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if not args.real_training:
        worker_runner.train = make_sleep_train(args.trial_seconds)  # type: ignore[assignment]
    if args.preload:
        load_dataset(args.preload)
    if args.claim_log:
        time_claims(open(args.claim_log, "a", buffering=1))  # noqa: SIM115 (lives as long as the process)
    return automl_main(argv)


if __name__ == "__main__":
    sys.exit(main())
