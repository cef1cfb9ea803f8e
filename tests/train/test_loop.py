"""Tests of the training loop, losses, optimizers, schedules and metrics."""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math

import pytest
import torch
from torch.nn import functional as F

from automl.data import ImageData, load_dataset
from automl.models import build_model
from automl.train import (
    LOSSES,
    METRICS,
    OPTIMIZERS,
    SCHEDULERS,
    TrainingInterrupted,
    TrainResult,
    TrialConfig,
    train,
)
from automl.train.accel import Accelerator
from automl.train.checkpoint import TrainState
from automl.train.early_stopping import EarlyStopping
from automl.train.hyperparameters import flat_config
from automl.train.loop import TrainingDiverged, derived_seed
from automl.train.losses import FocalLoss, WeightedCrossEntropy, build_loss
from automl.train.metrics import (
    Evaluation,
    MetricFailedError,
    compute_metrics,
    confusion_matrix,
    per_class_report,
)
from automl.train.model_stats import ModelStats
from automl.train.optim import build_optimizer, build_scheduler, ignores_warmup
from automl.train.trial_config import MAX_SEED
from tests.train.test_metrics import plugin_metrics

TIMINGS = {"latency_ms", "batch_latency_ms"}
METRIC_NAMES = {
    "accuracy",
    "balanced_accuracy",
    "macro_f1",
    "worst_class_recall",
    "loss",
    "params",
    *TIMINGS,
}
STATS = ModelStats(params=1234, latency_ms=0.5, batch_latency_ms=20.0)


def evaluation(confusion: torch.Tensor, loss: float = 0.0) -> Evaluation:
    return Evaluation(confusion, loss, STATS)


def without_timings(history: list[dict[str, float]]) -> list[dict[str, float]]:
    """Measured latencies differ between runs; everything else is deterministic."""
    return [{k: v for k, v in row.items() if k not in TIMINGS} for row in history]


@pytest.fixture(scope="module")
def small_data() -> ImageData:
    """A 301/150 slice of digits: one epoch at width 8 takes milliseconds."""
    full = load_dataset("digits")
    return dataclasses.replace(
        full,
        train_x=full.train_x[:301],
        train_y=full.train_y[:301],
        val_x=full.val_x[:150],
        val_y=full.val_y[:150],
    )


def tiny(**overrides: object) -> TrialConfig:
    values: dict[str, object] = {"epochs": 2, "width": 8, "depth": 2, "batch_size": 64}
    values.update(overrides)
    return flat_config(values)


class Recorder:
    """A reporter that records its calls and asks to stop at ``stop_at``."""

    def __init__(self, stop_at: int | None = None) -> None:
        self.calls: list[tuple[int, dict[str, float]]] = []
        self.stop_at = stop_at

    def __call__(self, epoch: int, metrics: dict[str, float]) -> bool:
        self.calls.append((epoch, dict(metrics)))
        return epoch == self.stop_at


# --- train ---------------------------------------------------------------------------------


def test_train_reports_every_epoch_with_all_metrics() -> None:
    """With no ``data``, the config's dataset is loaded."""
    report = Recorder()
    result = train(tiny(epochs=2), report)
    assert [epoch for epoch, _ in report.calls] == [1, 2]
    for _, metrics in report.calls:
        assert set(metrics) == METRIC_NAMES
        assert all(math.isfinite(value) for value in metrics.values())
    assert result.metrics == report.calls[-1][1]
    assert result.classes == tuple(str(i) for i in range(10))


def test_train_result(small_data: ImageData) -> None:
    result = train(tiny(epochs=3), data=small_data)
    assert isinstance(result, TrainResult)
    assert result.epochs_run == 3
    assert not result.pruned
    assert [row["epoch"] for row in result.history] == [1, 2, 3]
    for row in result.history:
        assert set(row) == METRIC_NAMES | {"epoch", "train_loss"}
        assert math.isfinite(row["train_loss"]) and row["train_loss"] > 0
        assert 0.0 <= row["accuracy"] <= 1.0
    last = {k: v for k, v in result.history[-1].items() if k not in ("epoch", "train_loss")}
    assert result.metrics == last
    assert result.duration_s > 0
    assert len(result.confusion) == 10 and all(len(row) == 10 for row in result.confusion)
    assert sum(map(sum, result.confusion)) == len(small_data.val_y)
    assert [row["class"] for row in result.per_class] == list(small_data.classes)
    assert sum(row["support"] for row in result.per_class) == len(small_data.val_y)
    correct = sum(result.confusion[i][i] for i in range(10))
    assert result.metrics["accuracy"] == pytest.approx(correct / len(small_data.val_y))


def test_train_without_reporter(small_data: ImageData) -> None:
    assert train(tiny(epochs=1), None, data=small_data).epochs_run == 1


def test_state_dict_is_on_cpu_and_loads(small_data: ImageData) -> None:
    config = tiny(epochs=1)
    result = train(config, data=small_data)
    assert all(tensor.device.type == "cpu" for tensor in result.state_dict.values())
    model = build_model(
        config.model.name, config.model.options, small_data.input_shape, small_data.num_classes
    )
    model.load_state_dict(result.state_dict)
    model.eval()
    with torch.no_grad():
        predictions = model(small_data.normalize(small_data.val_x)).argmax(dim=1)
    accuracy = float((predictions == small_data.val_y).float().mean())
    assert accuracy == pytest.approx(result.metrics["accuracy"])


def test_training_learns(small_data: ImageData) -> None:
    result = train(tiny(epochs=5, lr=1e-2), data=small_data)
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert result.metrics["accuracy"] > 0.3


def test_train_is_deterministic(small_data: ImageData) -> None:
    config = tiny(epochs=2, dropout=0.2, seed=3)
    first = train(config, data=small_data)
    second = train(config, data=small_data)
    assert without_timings(first.history) == without_timings(second.history)
    assert first.confusion == second.confusion
    assert first.state_dict.keys() == second.state_dict.keys()
    for key, tensor in first.state_dict.items():
        assert torch.equal(tensor, second.state_dict[key]), key


def test_different_seed_gives_different_run(small_data: ImageData) -> None:
    first = train(tiny(seed=0), data=small_data)
    other = train(tiny(seed=1), data=small_data)
    assert first.history != other.history
    assert not torch.equal(first.state_dict["0.0.0.weight"], other.state_dict["0.0.0.weight"])


def test_the_largest_seed_the_config_takes_trains(small_data: ImageData) -> None:
    config = tiny(seed=MAX_SEED, imbalance="oversample", **{"pad_crop.p": 1.0, "mixup.p": 0.5})
    result = train(config, data=small_data)
    assert len(result.history) == 2 and math.isfinite(result.history[-1]["loss"])


def test_report_returning_true_stops_early(small_data: ImageData) -> None:
    report = Recorder(stop_at=1)
    result = train(tiny(epochs=4), report, data=small_data)
    assert result.pruned
    assert result.epochs_run == 1
    assert len(result.history) == 1
    assert len(report.calls) == 1
    assert result.metrics == report.calls[0][1]


def test_report_can_stop_at_a_later_epoch(small_data: ImageData) -> None:
    report = Recorder(stop_at=2)
    result = train(tiny(epochs=4), report, data=small_data)
    assert result.pruned
    assert result.epochs_run == 2
    assert [epoch for epoch, _ in report.calls] == [1, 2]


def test_should_stop_raises_training_interrupted(small_data: ImageData) -> None:
    polls: list[int] = []

    def should_stop() -> bool:
        polls.append(1)
        return len(polls) == 3

    report = Recorder()
    with pytest.raises(TrainingInterrupted, match="epoch 1"):
        train(tiny(epochs=2), report, data=small_data, should_stop=should_stop)
    assert len(polls) == 3
    assert report.calls == []


def test_should_stop_polled_every_batch(small_data: ImageData) -> None:
    polls: list[int] = []

    def should_stop() -> bool:
        polls.append(1)
        return False

    train(tiny(epochs=2, batch_size=100), data=small_data, should_stop=should_stop)
    # 301 samples in batches of 100: 100, 100, 100 and a single sample that is dropped.
    assert len(polls) == 2 * 3


def test_batch_size_larger_than_dataset(small_data: ImageData) -> None:
    result = train(tiny(epochs=1, batch_size=10_000), data=small_data)
    assert math.isfinite(result.history[0]["train_loss"])


@pytest.mark.parametrize("optimizer", OPTIMIZERS.names())
def test_every_optimizer_trains(small_data: ImageData, optimizer: str) -> None:
    result = train(tiny(epochs=1, optimizer=optimizer, lr=1e-2), data=small_data)
    assert math.isfinite(result.history[0]["train_loss"])
    assert math.isfinite(result.metrics["loss"])


def _decays(state: TrainState) -> list[tuple[float, int]]:
    """Each saved optimizer group's weight decay and parameter count."""
    groups = state.optimizer["param_groups"]
    return [(group["weight_decay"], len(group["params"])) for group in groups]


def test_norm_and_bias_can_be_left_out_of_weight_decay(small_data: ImageData) -> None:
    """Biases and batch-norm scales get a group of their own without decay, which a
    checkpoint saves and a resumed run restores exactly."""
    config = tiny(optimizer="sgd", weight_decay=0.1, decay_norm_and_bias=False)
    model = build_model(config.model.name, config.model.options, (1, 8, 8), 10)
    vectors = sum(1 for p in model.parameters() if p.ndim == 1)
    matrices = sum(1 for p in model.parameters() if p.ndim > 1)
    states: list[TrainState] = []
    full = train(config, data=small_data, checkpoint=states.append, checkpoint_interval=0.0)
    assert _decays(states[0]) == [(0.1, matrices), (0.0, vectors)] and vectors > 0

    resumed = train(config, data=small_data, resume=states[0])
    assert without_timings(resumed.history) == without_timings(full.history)

    states.clear()
    train(tiny(optimizer="sgd", weight_decay=0.1), data=small_data, checkpoint=states.append)
    assert _decays(states[0]) == [(0.1, matrices + vectors)]


def test_the_backbone_and_head_groups_each_split_off_their_vectors(
    small_data: ImageData,
) -> None:
    config = tiny(weight_decay=0.1, decay_norm_and_bias=False, backbone_lr_mult=0.5)
    states: list[TrainState] = []
    train(config, data=small_data, checkpoint=states.append, checkpoint_interval=0.0)
    groups = states[0].optimizer["param_groups"]
    assert [(g["name"], g["weight_decay"]) for g in groups] == [
        ("backbone", 0.1),
        ("backbone", 0.0),
        ("head", 0.1),
        ("head", 0.0),
    ]


@pytest.mark.parametrize("scheduler", SCHEDULERS.names())
def test_every_scheduler_trains(small_data: ImageData, scheduler: str) -> None:
    result = train(tiny(epochs=1, scheduler=scheduler, warmup_epochs=0.5), data=small_data)
    assert math.isfinite(result.history[0]["train_loss"])
    assert math.isfinite(result.metrics["loss"])


@pytest.mark.parametrize("loss", LOSSES.names())
def test_every_loss_trains(small_data: ImageData, loss: str) -> None:
    result = train(tiny(epochs=1, loss=loss, label_smoothing=0.1), data=small_data)
    assert math.isfinite(result.history[0]["train_loss"])
    assert math.isfinite(result.metrics["loss"])


def test_params_and_latency_are_recorded_every_epoch(small_data: ImageData) -> None:
    config = tiny(epochs=2)
    result = train(config, data=small_data)
    model = build_model(
        config.model.name, config.model.options, small_data.input_shape, small_data.num_classes
    )
    assert result.metrics["params"] == sum(p.numel() for p in model.parameters())
    for name in ("latency_ms", "batch_latency_ms"):
        assert math.isfinite(result.metrics[name]) and result.metrics[name] > 0
        # Measured once, before training: the same value in every epoch.
        assert len({row[name] for row in result.history}) == 1


def test_grad_clip_bounds_every_update(small_data: ImageData) -> None:
    """With plain SGD, each step moves the parameters by at most lr * grad_clip."""
    values = {"optimizer": "sgd", "momentum": 0.0, "lr": 0.1, "epochs": 1, "batch_size": 100}
    config = tiny(**values, grad_clip=1e-4)
    torch.manual_seed(config.seed)
    initial = build_model(
        config.model.name, config.model.options, small_data.input_shape, small_data.num_classes
    )
    names = [name for name, _ in initial.named_parameters()]

    def moved(result: TrainResult) -> float:
        start = dict(initial.named_parameters())
        squares = [(result.state_dict[n] - start[n].detach()).pow(2).sum() for n in names]
        return float(torch.stack(squares).sum().sqrt())

    steps = 3  # 301 samples in batches of 100; the trailing single sample is dropped
    clipped = moved(train(config, data=small_data))
    assert 0 < clipped <= steps * 0.1 * 1e-4 * (1 + 1e-4)
    assert moved(train(tiny(**values), data=small_data)) > 100 * clipped


def test_patience_stops_once_the_monitored_metric_stalls(small_data: ImageData) -> None:
    # The parameter count never improves after the first epoch.
    result = train(tiny(epochs=10, patience=2), data=small_data, monitor="params")
    assert result.stopped_early and not result.pruned
    assert result.epochs_run == 3
    assert len(result.history) == 3
    unlimited = train(tiny(epochs=4), data=small_data, monitor="params")
    assert unlimited.epochs_run == 4 and not unlimited.stopped_early


def test_unknown_monitor_is_refused(small_data: ImageData) -> None:
    with pytest.raises(ValueError, match="unknown metric 'acuracy'"):
        train(tiny(epochs=1), data=small_data, monitor="acuracy")


def test_early_stopping_counts_epochs_without_improvement() -> None:
    stopper = EarlyStopping(2, "maximize")
    assert [stopper.should_stop(v) for v in (0.5, 0.6, 0.6, 0.7, 0.1, math.nan)] == [
        False,
        False,
        False,
        False,
        False,
        True,
    ]
    lower = EarlyStopping(1, "minimize")
    assert [lower.should_stop(v) for v in (2.0, 1.0, 1.5)] == [False, False, True]
    never = EarlyStopping(0, "maximize")
    assert not any(never.should_stop(0.0) for _ in range(5))


def test_a_failing_plugin_metric_is_noted_and_fails_a_run_that_monitors_it(
    small_data: ImageData, monkeypatch: pytest.MonkeyPatch
) -> None:
    plugin_metrics(monkeypatch, {"broken": lambda e: 1 / 0})

    result = train(tiny(epochs=1), data=small_data)

    assert "broken" not in result.metrics and "broken" not in result.history[0]
    assert result.notes["metrics"] == (
        "left out: metric 'broken' (acme) failed: ZeroDivisionError: division by zero"
    )
    with pytest.raises(MetricFailedError, match="metric 'broken' \\(acme\\) failed"):
        train(tiny(epochs=1), data=small_data, monitor="broken")


def test_augmented_training_evaluates_unaugmented_validation_data(small_data: ImageData) -> None:
    """Mixing produces soft targets for the loss; validation images are left alone."""
    augment = {"mixup.p": 1.0, "erasing.p": 1.0, "erasing.max_area": 0.5, "affine.p": 1.0}
    config = tiny(epochs=1, **augment)
    assert set(config.augment) == {"mixup", "erasing", "affine"}
    result = train(config, data=small_data)
    assert math.isfinite(result.history[0]["train_loss"])
    model = build_model(
        config.model.name, config.model.options, small_data.input_shape, small_data.num_classes
    )
    model.load_state_dict(result.state_dict)
    model.eval()
    with torch.no_grad():
        predictions = model(small_data.normalize(small_data.val_x)).argmax(dim=1)
    accuracy = float((predictions == small_data.val_y).float().mean())
    assert accuracy == pytest.approx(result.metrics["accuracy"])


def test_a_run_notes_the_classes_without_validation_or_test_images(
    small_data: ImageData,
) -> None:
    """A class with one image stays in training after a stratified split: no score of the
    run covers it (balanced accuracy skips it, its recall reads 0 with support 0)."""
    keep = small_data.val_y != 9
    data = dataclasses.replace(
        small_data,
        val_x=small_data.val_x[keep],
        val_y=small_data.val_y[keep],
        test_x=small_data.val_x[small_data.val_y > 1],
        test_y=small_data.val_y[small_data.val_y > 1],
    )
    notes = train(tiny(epochs=1), data=data).notes
    assert notes["no_validation_images"] == [data.classes[9]]
    assert notes["no_test_images"] == [data.classes[0], data.classes[1]]
    complete = train(tiny(epochs=1), data=small_data).notes
    assert "no_validation_images" not in complete and "no_test_images" not in complete
    assert "no_training_images" not in complete


def test_a_run_notes_the_classes_without_training_images(small_data: ImageData) -> None:
    """Found by a tester: a torchvision source whose training files lack a class the test
    files hold said nothing of it; the model never predicts that class."""
    keep = small_data.train_y != 7
    data = dataclasses.replace(
        small_data, train_x=small_data.train_x[keep], train_y=small_data.train_y[keep]
    )
    assert train(tiny(epochs=1), data=data).notes["no_training_images"] == [data.classes[7]]


# --- losses, optimizers, schedules ---------------------------------------------------------


def test_focal_loss_with_zero_gamma_is_cross_entropy() -> None:
    torch.manual_seed(0)
    logits, targets = torch.randn(16, 5), torch.randint(0, 5, (16,))
    assert FocalLoss(0.0)(logits, targets) == pytest.approx(float(F.cross_entropy(logits, targets)))


def test_focal_loss_down_weights_easy_examples() -> None:
    logits = torch.tensor([[4.0, 0.0], [0.0, 0.5]])
    targets = torch.tensor([0, 0])
    focal = FocalLoss(2.0)(logits, targets)
    assert 0 < float(focal) < float(F.cross_entropy(logits, targets))


def test_build_loss_uses_its_options_and_class_weights() -> None:
    loss = build_loss("focal", {"gamma": 3.0, "label_smoothing": 0.1}, 10)
    assert isinstance(loss, FocalLoss)
    assert (loss.gamma, loss.label_smoothing) == (3.0, 0.1)
    weights = torch.linspace(0.5, 2.0, 10)
    ce = build_loss("cross_entropy", {"label_smoothing": 0.2}, 10, weights)
    assert isinstance(ce, WeightedCrossEntropy)
    assert ce.label_smoothing == 0.2
    assert torch.equal(ce.weight, weights)


def test_losses_accept_soft_targets() -> None:
    torch.manual_seed(0)
    logits, targets = torch.randn(8, 4), torch.randint(0, 4, (8,))
    soft = F.one_hot(targets, 4).float()
    for name in LOSSES.names():
        loss = build_loss(name, {}, 4)
        assert float(loss(logits, soft)) == pytest.approx(float(loss(logits, targets))), name


def test_focal_alpha_weights_classes() -> None:
    logits, targets = torch.tensor([[1.0, 0.0], [0.0, 0.0]]), torch.tensor([0, 1])
    alpha = torch.tensor([3.0, 1.0])
    weighted = FocalLoss(0.0, alpha=alpha)(logits, targets)
    losses = F.cross_entropy(logits, targets, reduction="none")
    expected = (3.0 * losses[0] + 1.0 * losses[1]) / (3.0 + 1.0)  # a weighted mean
    assert float(weighted) == pytest.approx(float(expected))


def test_sgd_uses_momentum_and_nesterov() -> None:
    model = torch.nn.Linear(2, 2)
    sgd = build_optimizer("sgd", {"momentum": 0.8}, model.parameters(), lr=0.05, weight_decay=0)
    group = sgd.param_groups[0]
    assert (group["lr"], group["momentum"], group["nesterov"]) == (0.05, 0.8, True)
    plain = build_optimizer("sgd", {"momentum": 0.0}, model.parameters(), lr=0.1, weight_decay=0)
    assert plain.param_groups[0]["nesterov"] is False
    no_nesterov = build_optimizer(
        "sgd", {"nesterov": False}, model.parameters(), lr=0.1, weight_decay=0
    )
    assert no_nesterov.param_groups[0]["nesterov"] is False


@pytest.mark.parametrize(
    ("name", "values"),
    [
        ("constant", [1.0, 1.0, 1.0]),
        ("cosine", [1.0, 0.5, 0.0]),
        ("linear", [1.0, 0.5, 0.0]),
        ("step", [1.0, 0.1, 0.01]),
        ("one_cycle", [0.04, 1.0, 4e-6]),
    ],
)
def test_schedules(name: str, values: list[float]) -> None:
    entry = SCHEDULERS.get(name)
    schedule = entry.factory(entry.parse_options({"pct_start": 0.5} if name == "one_cycle" else {}))
    assert [schedule(p) for p in (0.0, 0.5, 1.0)] == pytest.approx(values)


def _learning_rates(name: str, lr: float, total_steps: int, warmup_steps: int) -> list[float]:
    """The learning rate of each step of the schedule ``name``."""
    optimizer = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=lr)
    scheduler = build_scheduler(
        name, {}, optimizer, total_steps=total_steps, warmup_steps=warmup_steps
    )
    lrs = []
    for _ in range(total_steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def test_scheduler_warmup_then_decay() -> None:
    lrs = _learning_rates("linear", 1.0, total_steps=8, warmup_steps=4)
    assert lrs == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0, 0.75, 0.5, 0.25])


def test_one_cycle_runs_no_warmup_of_its_own() -> None:
    """one_cycle rises from peak / div_factor by itself: a linear warmup before it reached
    the peak, then dropped to peak / 25 and rose again."""
    lrs = _learning_rates("one_cycle", 0.01, total_steps=20, warmup_steps=5)
    peak = lrs.index(max(lrs))
    assert lrs[0] == pytest.approx(0.01 / 25)
    assert max(lrs) == pytest.approx(0.01)
    assert all(a <= b for a, b in itertools.pairwise(lrs[: peak + 1]))
    assert all(a >= b for a, b in itertools.pairwise(lrs[peak:]))
    assert ignores_warmup("one_cycle", {}) and not ignores_warmup("cosine", {})


def test_a_run_notes_the_warmup_one_cycle_ignores(small_data: ImageData) -> None:
    result = train(tiny(epochs=1, scheduler="one_cycle", warmup_epochs=0.5), data=small_data)
    assert "one_cycle" in result.notes["warmup"]
    assert "warmup" not in train(tiny(epochs=1, scheduler="one_cycle"), data=small_data).notes
    plain = train(tiny(epochs=1, scheduler="cosine", warmup_epochs=0.5), data=small_data)
    assert "warmup" not in plain.notes


# --- metrics -------------------------------------------------------------------------------

# True classes 0,0,0,0,1,1,2,2,2,2; confusion rows (true) x columns (predicted):
#   [[3, 1, 0],
#    [1, 1, 0],
#    [0, 1, 3]]
LABELS = torch.tensor([0, 0, 0, 0, 1, 1, 2, 2, 2, 2])
PREDICTIONS = torch.tensor([0, 0, 0, 1, 1, 0, 2, 2, 2, 1])
CONFUSION = [[3, 1, 0], [1, 1, 0], [0, 1, 3]]


def test_confusion_matrix() -> None:
    confusion = confusion_matrix(PREDICTIONS, LABELS, 3)
    assert confusion.dtype == torch.int64
    assert confusion.tolist() == CONFUSION


def test_confusion_matrix_counts_unseen_classes_as_zero() -> None:
    confusion = confusion_matrix(PREDICTIONS, LABELS, 5)
    assert confusion.shape == (5, 5)
    assert confusion[:3, :3].tolist() == CONFUSION
    assert int(confusion[3:].sum() + confusion[:, 3:].sum()) == 0


def test_compute_metrics_hand_made_example() -> None:
    metrics = compute_metrics(evaluation(confusion_matrix(PREDICTIONS, LABELS, 3), 1.25))
    assert set(metrics) == METRIC_NAMES == set(METRICS.names())
    assert metrics["accuracy"] == pytest.approx(0.7)
    # Recalls 3/4, 1/2, 3/4.
    assert metrics["balanced_accuracy"] == pytest.approx(2 / 3)
    assert metrics["worst_class_recall"] == pytest.approx(0.5)
    # F1s 2*3/(4+4), 2*1/(3+2), 2*3/(3+4).
    assert metrics["macro_f1"] == pytest.approx((0.75 + 0.4 + 6 / 7) / 3)
    assert metrics["loss"] == 1.25
    assert (metrics["params"], metrics["latency_ms"], metrics["batch_latency_ms"]) == (
        1234,
        0.5,
        20.0,
    )


def test_metrics_ignore_classes_absent_from_validation() -> None:
    with_absent = compute_metrics(evaluation(confusion_matrix(PREDICTIONS, LABELS, 4)))
    assert with_absent == pytest.approx(compute_metrics(evaluation(torch.tensor(CONFUSION))))


def test_perfect_predictions() -> None:
    metrics = compute_metrics(evaluation(confusion_matrix(LABELS, LABELS, 3)))
    for name in ("accuracy", "balanced_accuracy", "macro_f1", "worst_class_recall"):
        assert metrics[name] == pytest.approx(1.0), name


def test_metric_directions() -> None:
    for name in ("loss", "params", "latency_ms", "batch_latency_ms"):
        assert METRICS.get(name).factory.direction == "minimize"
    for name in ("accuracy", "balanced_accuracy", "macro_f1", "worst_class_recall"):
        assert METRICS.get(name).factory.direction == "maximize"


def test_per_class_report() -> None:
    report = per_class_report(torch.tensor(CONFUSION), ("zero", "one", "two"))
    assert report == [
        {"class": "zero", "precision": 0.75, "recall": 0.75, "f1": 0.75, "support": 4},
        {"class": "one", "precision": 0.333333, "recall": 0.5, "f1": 0.4, "support": 2},
        {"class": "two", "precision": 1.0, "recall": 0.75, "f1": 0.857143, "support": 4},
    ]


def test_per_class_report_class_never_predicted_nor_present() -> None:
    """Found by a tester: 0s for a class with no images contradicted the study's metrics,
    which leave it out, and drew it as a class never recognized."""
    report = per_class_report(torch.tensor([[2, 0], [0, 0]]), ("a", "b"))
    assert report[1] == {"class": "b", "precision": None, "recall": None, "f1": None, "support": 0}
    assert report[0]["f1"] == 1.0


def test_per_class_report_class_predicted_but_not_present() -> None:
    report = per_class_report(torch.tensor([[2, 1], [0, 0]]), ("a", "b"))
    assert report[1] == {"class": "b", "precision": 0.0, "recall": None, "f1": None, "support": 0}
    assert (report[0]["precision"], report[0]["recall"]) == (1.0, 0.666667)


def test_cpu_path_is_plain_fp32_and_deterministic(small_data: ImageData) -> None:
    accel = Accelerator.for_device(torch.device("cpu"), sample_dims=3)
    assert (accel.dtype, accel.channels_last, accel.fused, accel.scaler) == (
        None,
        True,  # fp32 in channels_last (tests/train/test_accel_cpu.py)
        False,
        None,
    )
    first, again = (train(tiny(epochs=1), data=small_data) for _ in range(2))
    untimed = [{k: v for k, v in row.items() if k not in TIMINGS} for row in first.history]
    assert untimed == [{k: v for k, v in row.items() if k not in TIMINGS} for row in again.history]
    assert all(torch.equal(first.state_dict[k], again.state_dict[k]) for k in first.state_dict)


@functools.cache
def compile_unavailable() -> str | None:
    """Why ``torch.compile`` cannot run here (no C++ compiler, unsupported Python), or None."""
    try:
        torch.compile(lambda x: x * 2 + 1)(torch.ones(4))
    except Exception as exc:
        lines = str(exc).strip().splitlines()
        return f"{type(exc).__name__}: {lines[0] if lines else ''}"
    return None


@pytest.mark.slow  # inductor compiles train and eval graphs: ~12 s warm cache, ~35 s cold (2 cores)
def test_compiled_model_matches_eager_on_cpu(small_data: ImageData) -> None:
    """``compile: true`` really compiles, trains, and matches eager training closely."""
    reason = compile_unavailable()
    if reason is not None:
        pytest.skip(f"torch.compile is unavailable on this platform: {reason}")
    aligned = dataclasses.replace(  # four full batches: no recompilation for a short one
        small_data, train_x=small_data.train_x[:256], train_y=small_data.train_y[:256]
    )
    config = {"epochs": 1, "width": 4, "depth": 1}
    eager = train(tiny(**config), data=aligned)
    compiled = train(tiny(**config, compile=True), data=aligned)
    assert compiled.notes == {"compile": "compiled"}
    assert set(compiled.state_dict) == set(eager.state_dict)  # no "_orig_mod." prefixes
    assert compiled.history[0]["train_loss"] == pytest.approx(
        eager.history[0]["train_loss"], rel=1e-3
    )
    assert compiled.metrics["accuracy"] == pytest.approx(eager.metrics["accuracy"], abs=0.05)


def test_train_loss_averages_over_the_images_that_were_trained_on(
    small_data: ImageData,
) -> None:
    # Three copies of one image: every batch has the same mean loss, so the epoch's
    # train loss must be that whether the trailing single image is dropped (batch 2) or
    # not (batch 3); counting the dropped one made it two thirds of it.
    same = dataclasses.replace(
        small_data,
        train_x=small_data.train_x[:1].repeat(3, 1, 1, 1),
        train_y=small_data.train_y[:1].repeat(3),
    )
    losses = [
        train(tiny(epochs=1, batch_size=size, lr=1e-9), data=same).history[0]["train_loss"]
        for size in (2, 3)
    ]
    assert losses[0] == pytest.approx(losses[1], rel=1e-4)


def test_a_run_whose_loss_diverges_fails_instead_of_scoring_garbage(
    small_data: ImageData,
) -> None:
    config = tiny(epochs=3, lr=10.0, weight_decay=1.0, optimizer="sgd", momentum=0.0)
    with pytest.raises(TrainingDiverged, match=r"training diverged at epoch \d \(validation loss"):
        train(config, data=small_data)


def test_augmentation_seeds_of_nearby_keys_are_unrelated() -> None:
    """A linear mix of seed, epoch and batch repeated draws: seed 0's epoch 101 was seed
    1's epoch 1 at batch 697, and batch 10,007 of an epoch was batch 0 of the next."""
    assert derived_seed(0, 101, 0) != derived_seed(1, 1, 697)
    assert derived_seed(7, 3, 10_007) != derived_seed(7, 4, 0)
    seeds = {
        derived_seed(seed, epoch, batch)
        for seed in range(3)
        for epoch in range(20)
        for batch in range(50)
    }
    assert len(seeds) == 3 * 20 * 50
    assert all(0 <= seed < 2**63 for seed in seeds)
    assert derived_seed(5, 2, 9) == derived_seed(5, 2, 9)
