"""``restore_best``: a run ends with its best epoch's weights and metrics, resumes keep it."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from automl.data import ImageData, load_dataset
from automl.train import TrainingInterrupted, TrainResult, train
from automl.train.best_epoch import BestEpoch
from automl.train.checkpoint import TrainState
from automl.train.evaluation import evaluate_weights
from automl.train.hyperparameters import flat_config
from automl.train.trial_config import TrialConfig

NOISY = {"epochs": 5, "width": 8, "depth": 1, "batch_size": 32, "lr": 0.1}
"""Adam at a rate this high makes validation accuracy go down as well as up."""
UNTIMED = {"latency_ms", "batch_latency_ms"}


@pytest.fixture(scope="module")
def digits() -> ImageData:
    full = load_dataset("digits")
    return replace(full, train_x=full.train_x[:600], train_y=full.train_y[:600])


def _best_of(history: list[dict[str, float]]) -> int:
    """The epoch with the highest accuracy, ties to the later one."""
    return int(max(history, key=lambda entry: (entry["accuracy"], entry["epoch"]))["epoch"])


def _untimed(metrics: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in metrics.items() if k not in UNTIMED | {"epoch", "train_loss"}}


@pytest.fixture(scope="module")
def went_down(digits: ImageData) -> tuple[TrialConfig, TrainResult]:
    """A configuration whose best epoch is not its last, and its run."""
    for seed in range(12):
        config = flat_config({**NOISY, "seed": seed})
        result = train(config, data=digits)
        if _best_of(result.history) < config.epochs:
            return config, result
    raise AssertionError("no seed gave a run whose accuracy went down at the end")


def test_ties_go_to_the_later_epoch_and_non_finite_values_never_win() -> None:
    model = torch.nn.Linear(2, 2)
    confusion = torch.zeros(2, 2)
    best = BestEpoch("maximize")
    for epoch, value in [(1, 0.5), (2, 0.7), (3, math.nan), (4, 0.7), (5, 0.6)]:
        best.offer(epoch, {"accuracy": value}, value, confusion, model)
    assert best.epoch == 4
    lowest = BestEpoch("minimize")
    for epoch, value in [(1, 3.0), (2, 1.0), (3, 2.0)]:
        lowest.offer(epoch, {"loss": value}, value, confusion, model)
    assert lowest.epoch == 2


def test_a_run_ends_with_its_best_epochs_weights_and_metrics(
    went_down: tuple[TrialConfig, TrainResult], digits: ImageData
) -> None:
    config, result = went_down
    best = _best_of(result.history)
    assert result.best_epoch == best < len(result.history)
    assert _untimed(result.metrics) == _untimed(result.history[best - 1])
    rescored = evaluate_weights(config, result.state_dict, split="val", data=digits).metrics
    assert rescored["accuracy"] == pytest.approx(result.history[best - 1]["accuracy"], abs=1e-6)
    assert sum(sum(row) for row in result.confusion) == len(digits.val_y)


def test_without_restore_best_the_last_epoch_is_kept(
    went_down: tuple[TrialConfig, TrainResult], digits: ImageData
) -> None:
    config, result = went_down
    last = train(config.model_copy(update={"restore_best": False}), data=digits)
    assert [_untimed(h) for h in last.history] == [_untimed(h) for h in result.history]
    assert last.best_epoch == config.epochs
    assert _untimed(last.metrics) == _untimed(last.history[-1])
    assert last.metrics["accuracy"] < result.metrics["accuracy"]


@pytest.mark.parametrize("where", ["at the best epoch's end", "within a later epoch"])
def test_a_resumed_run_still_ends_with_the_best_epoch(
    went_down: tuple[TrialConfig, TrainResult], digits: ImageData, where: str
) -> None:
    """At the best epoch's end the checkpoint's model is the best one (its weights are not
    stored twice); later, the best weights travel in the checkpoint."""
    config, reference = went_down
    best = reference.best_epoch
    batches_per_epoch = math.ceil(len(digits.train_y) / config.batch_size)
    calls = {"n": 0}

    def stop() -> bool:
        calls["n"] += 1
        return calls["n"] == best * batches_per_epoch + 2

    saved: list[TrainState] = []
    with pytest.raises(TrainingInterrupted):
        train(
            config,
            data=digits,
            should_stop=stop,
            checkpoint=lambda s: saved.append(TrainState.from_bytes(s.to_bytes())),
        )
    if where == "within a later epoch":
        state = saved[-1]
        assert state.best is not None and state.best["weights"] is not None
    else:
        [state] = [s for s in saved if (s.epoch, s.batch) == (best, 0)]
        assert state.best is not None and state.best["weights"] is None
    assert state.best["epoch"] == best
    resumed = train(config, data=digits, resume=state)
    assert resumed.best_epoch == best
    assert all(torch.equal(resumed.state_dict[k], v) for k, v in reference.state_dict.items())
    assert _untimed(resumed.metrics) == _untimed(reference.metrics)


def test_a_checkpoint_from_before_best_epochs_keeps_the_last_epoch(
    went_down: tuple[TrialConfig, TrainResult], digits: ImageData
) -> None:
    """Its earlier epochs' weights are gone: the attempt ends as it began, with its last."""
    config, reference = went_down
    saved: list[TrainState] = []
    train(config, data=digits, checkpoint=saved.append)
    [state] = [s for s in saved if (s.epoch, s.batch) == (reference.best_epoch, 0)]
    resumed = train(config, data=digits, resume=replace(state, best=None))
    assert resumed.best_epoch == config.epochs
    assert _untimed(resumed.metrics) == _untimed(reference.history[-1])


def test_the_best_epoch_follows_the_monitor_and_its_direction(
    went_down: tuple[TrialConfig, TrainResult], digits: ImageData
) -> None:
    config, reference = went_down
    history = reference.history
    lowest_loss = min(history, key=lambda entry: (entry["loss"], -entry["epoch"]))
    by_loss = train(config, data=digits, monitor="loss")
    assert by_loss.best_epoch == lowest_loss["epoch"]
    worst = min(history, key=lambda entry: (entry["accuracy"], -entry["epoch"]))
    inverted = train(config, data=digits, direction="minimize")  # a study's own direction
    assert inverted.best_epoch == worst["epoch"]
    assert inverted.metrics["accuracy"] == worst["accuracy"]


def test_a_pruned_run_keeps_the_epoch_it_was_pruned_at(
    went_down: tuple[TrialConfig, TrainResult], digits: ImageData
) -> None:
    config, reference = went_down
    stop_at = reference.best_epoch + 1
    pruned = train(config, lambda epoch, _: epoch == stop_at, data=digits)
    assert pruned.pruned and pruned.best_epoch == stop_at
    assert _untimed(pruned.metrics) == _untimed(reference.history[stop_at - 1])


def test_early_stopping_ends_with_the_epoch_it_waited_for(digits: ImageData) -> None:
    for seed in range(12):
        config = flat_config({**NOISY, "epochs": 8, "patience": 1, "seed": seed})
        result = train(config, data=digits)
        if result.stopped_early:
            break
    else:
        raise AssertionError("no seed stopped early")
    assert result.best_epoch == _best_of(result.history) >= len(result.history) - 1
    assert _untimed(result.metrics) == _untimed(result.history[result.best_epoch - 1])


def test_a_run_resumed_after_the_epoch_that_stopped_it_early_trains_no_more(
    digits: ImageData,
) -> None:
    """The checkpoint at that epoch's end comes before the stop: resuming from it (a worker
    killed in between) must stop too, not train one more epoch."""
    for seed in range(12):
        config = flat_config({**NOISY, "epochs": 8, "patience": 1, "seed": seed})
        saved: list[TrainState] = []
        reference = train(config, data=digits, checkpoint=saved.append)
        if reference.stopped_early:
            break
    else:
        raise AssertionError("no seed stopped early")
    [state] = [s for s in saved if (s.epoch, s.batch) == (len(reference.history), 0)]
    resumed = train(config, data=digits, resume=state)
    assert resumed.stopped_early
    assert len(resumed.history) == len(reference.history)
    assert resumed.best_epoch == reference.best_epoch
    assert all(torch.equal(resumed.state_dict[k], v) for k, v in reference.state_dict.items())
