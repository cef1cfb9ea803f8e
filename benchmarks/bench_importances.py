"""Side-by-side: the study report's parameter importances, before and now.

The report computes fANOVA importances of the first objective from the completed trials,
or from a random sample of them. Before: a sample of 500 and Optuna's 64 trees; now:
``automl.delivery.report.MAX_IMPORTANCE_TRIALS`` and ``FANOVA_TREES``. Both sides run on
the same synthetic studies (``--trials`` completed trials of a random search over eight
parameters, of which the objective depends on three, plus noise; one study per seed from
0), against a reference computed from every trial with 64 trees. Printed per study:
each side's seconds, top three parameters and largest difference from the reference;
then the median time ratio (above 1: now is faster) and each side's largest difference.

    python benchmarks/bench_importances.py [--trials 1000] [--studies 3]
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import time
import warnings

import optuna
from optuna.importance import FanovaImportanceEvaluator, get_param_importances
from optuna.trial import FrozenTrial

from automl.delivery import report

BEFORE = (500, 64)
"""Sample size and trees before."""


def synthetic_study(trials: int, seed: int) -> list[FrozenTrial]:
    """``trials`` completed trials whose value depends on lr, width and dropout."""
    noise = random.Random(seed)
    study = optuna.create_study(
        direction="maximize", sampler=optuna.samplers.RandomSampler(seed=seed)
    )

    def objective(trial: optuna.Trial) -> float:
        lr = trial.suggest_float("lr", 1e-4, 1e-1, log=True)
        trial.suggest_float("weight_decay", 1e-6, 1e-2, log=True)
        width = trial.suggest_categorical("width", [8, 16, 32, 64])
        trial.suggest_int("depth", 1, 4)
        dropout = trial.suggest_float("dropout", 0.0, 0.5)
        trial.suggest_categorical("optimizer", ["adam", "sgd", "adamw"])
        trial.suggest_categorical("batch_size", [32, 64, 128])
        trial.suggest_float("momentum", 0.8, 0.99)
        shape = 0.9 - 0.1 * abs(math.log10(lr) + 2.5) - 0.1 * dropout + width / 640
        return shape + noise.gauss(0.0, 0.02)

    study.optimize(objective, n_trials=trials)
    return study.trials


def importances(trials: list[FrozenTrial], size: int, trees: int) -> tuple[dict, float]:
    """fANOVA importances from a sample of ``size`` (as the report draws it) with
    ``trees`` trees, and the seconds they took."""
    rng = random.Random(len(trials))
    sample = trials if len(trials) <= size else rng.sample(trials, size)
    study = optuna.create_study(direction="maximize")
    study.add_trials(sample)
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        found = get_param_importances(
            study, evaluator=FanovaImportanceEvaluator(n_trees=trees, seed=0)
        )
    return dict(found), time.perf_counter() - started


def main() -> None:
    """Computes the reference and both sides on each study and prints the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--studies", type=int, default=3)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    now = (report.MAX_IMPORTANCE_TRIALS, report.FANOVA_TREES)
    ratios, gaps = [], {"before": [], "now": []}
    for seed in range(args.studies):
        trials = synthetic_study(args.trials, seed)
        reference, _ = importances(trials, len(trials), 64)
        line = [f"study {seed}: all trials {list(reference)[:3]}"]
        seconds = {}
        for side, (size, trees) in (("before", BEFORE), ("now", now)):
            found, seconds[side] = importances(trials, size, trees)
            gap = max(abs(reference[name] - found[name]) for name in reference)
            gaps[side].append(gap)
            line.append(f"{side} {seconds[side]:.2f} s {list(found)[:3]} off by {gap:.3f}")
        ratios.append(seconds["before"] / seconds["now"])
        print("; ".join(line), flush=True)
    print(
        f"before: sample {BEFORE[0]}, {BEFORE[1]} trees; now: sample {now[0]}, {now[1]} trees; "
        f"median time before / now {statistics.median(ratios):.2f}x; largest difference "
        f"from all trials' importances: before {max(gaps['before']):.3f}, now "
        f"{max(gaps['now']):.3f}"
    )


if __name__ == "__main__":
    main()
