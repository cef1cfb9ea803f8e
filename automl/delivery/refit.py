"""The refit model as a trial view, so cards, bundles and predict serve it unchanged.

A refit retrains the best trial's configuration on train + validation (see
``automl.store.refits``). ``as_refit_trial`` returns a copy of that trial whose weights
attribute names the refit's weights and whose test metrics are the refit's; its
``automl.refit`` attribute says what the model is, and the model card shows it.
"""

from __future__ import annotations

import copy
from typing import Any

from optuna.trial import FrozenTrial

from automl.store import RefitResult, attrs


def refit_facts(result: RefitResult) -> dict[str, Any]:
    """What a model card says about a refit model (its ``refit`` section)."""
    return {
        "refit": True,
        "trial_number": result.trial_number,
        "epochs": result.epochs,
        "train_samples": result.train_samples,
        "test_samples": result.test_samples,
        "description": (
            f"Trial {result.trial_number}'s configuration retrained on the training plus "
            f"validation split for {result.epochs} epochs, up to the one whose weights the "
            "trial kept (with the trial's learning-rate schedule), then scored on the test "
            "split. The validation metrics are the trial's own (trained on the "
            "training split alone); the test metrics are the refit model's."
        ),
    }


def as_refit_trial(
    trial: FrozenTrial,
    result: RefitResult,
    test_most_confused: list[dict[str, Any]] | None = None,
) -> FrozenTrial:
    """``trial`` (the one that was retrained) seen as the refit model.

    Args:
        trial: The trial whose configuration the refit retrained.
        result: The refit's result.
        test_most_confused: The refit's most frequent test mistakes, where known (the
            refitting worker knows them; its stored result keeps none, see
            ``RefitResult``).

    Returns:
        A copy of ``trial`` with the refit's weights, test metrics and ``automl.refit``.
    """
    view = copy.deepcopy(trial)
    view.user_attrs = {
        **trial.user_attrs,
        attrs.WEIGHTS: result.weights,
        attrs.TEST_METRICS: result.test_metrics,
        attrs.TEST_PER_CLASS: result.test_per_class,
        attrs.TEST_CONFUSION: result.test_confusion,
        # Not the trial's own test mistakes, whatever is known of the refit's.
        attrs.TEST_MOST_CONFUSED: test_most_confused,
        attrs.REFIT: refit_facts(result),
    }
    return view


__all__ = ["as_refit_trial", "refit_facts"]
