"""The training loop: ``train(config, report) -> TrainResult``.

Knows nothing of Optuna, HTTP or workers. Data lives on the device as tensors and
batches are index slices, so there is no per-sample Python in the hot loop.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.nn import functional as F

from automl.data import ImageData, load_dataset
from automl.models import build_model
from automl.train.checkpoint import CheckpointSink, TrainState, capture, restore
from automl.train.config import TrialConfig
from automl.train.losses import build_loss
from automl.train.metrics import compute_metrics, confusion_matrix, per_class_report
from automl.train.optim import build_optimizer, build_scheduler

Reporter = Callable[[int, dict[str, float]], bool]
"""``report(epoch, metrics) -> stop``: called after each epoch; returning True prunes."""

EVAL_BATCH = 1024


class TrainingInterrupted(Exception):
    """Raised when ``should_stop`` asked training to stop (e.g. the worker is shutting down)."""


@dataclass
class TrainResult:
    """What one training run produced."""

    metrics: dict[str, float]
    """Validation metrics after the last epoch run."""
    history: list[dict[str, float]]
    """Per-epoch ``epoch``, ``train_loss`` and validation metrics."""
    per_class: list[dict[str, Any]]
    confusion: list[list[int]]
    epochs_run: int
    pruned: bool
    duration_s: float
    state_dict: dict[str, torch.Tensor] = field(repr=False)
    classes: tuple[str, ...] = ()


def resolve_device(device: str | torch.device) -> torch.device:
    """Turns ``"auto"`` into CUDA when available (else CPU) and checks the device exists.

    Raises:
        ValueError: If the name is not a device, or names a CUDA device this machine lacks.
    """
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"invalid device {device!r}; use auto, cpu, cuda or cuda:N") from None
    if resolved.type == "cuda":
        available = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (resolved.index or 0) >= available:
            raise ValueError(f"device {device!r} is not available ({available} CUDA devices)")
    elif resolved.type != "cpu":
        raise ValueError(f"unsupported device {device!r}; use auto, cpu, cuda or cuda:N")
    return resolved


def train(
    config: TrialConfig,
    report: Reporter | None = None,
    *,
    device: str | torch.device = "cpu",
    should_stop: Callable[[], bool] | None = None,
    data: ImageData | None = None,
    checkpoint: CheckpointSink | None = None,
    checkpoint_interval: float | None = None,
    resume: TrainState | None = None,
) -> TrainResult:
    """Trains one configuration and evaluates it on the validation split after each epoch.

    Deterministic for a given ``config.seed`` on the CPU.

    Args:
        config: The configuration to train.
        report: Called after each epoch with the validation metrics; returning True
            stops training early (the result is then marked ``pruned``).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"``.
        should_stop: Polled after every batch; returning True raises ``TrainingInterrupted``.
        data: Preloaded data; by default ``config.dataset`` is loaded (cached per process).
        checkpoint: Given the training state after every epoch but the last, every
            ``checkpoint_interval`` seconds within an epoch, and before an interruption.
        checkpoint_interval: Seconds between checkpoints within one epoch (None: only at
            epoch ends).
        resume: A state from ``checkpoint`` to continue from (same config): the result
            equals that of an uninterrupted run on the CPU; ``report`` is called for the
            remaining epochs only.

    Returns:
        The final metrics, the per-epoch history and the trained weights (on the CPU).

    Raises:
        TrainingInterrupted: If ``should_stop`` returned True.
    """
    started = time.perf_counter()
    device = resolve_device(device)
    if data is None:
        data = load_dataset(config.dataset.source, config.dataset.options)
    data = data.to(device)
    on_cuda = device.type == "cuda"

    torch.manual_seed(config.seed)
    model = build_model(config, data.input_shape, data.num_classes).to(device)
    if on_cuda:
        model = model.to(memory_format=torch.channels_last)
    loss_fn = build_loss(config, data.num_classes)
    optimizer = build_optimizer(config, model)
    n_train = len(data.train_y)
    batch_size = min(config.batch_size, n_train)
    steps_per_epoch = len(_batch_slices(n_train, batch_size))
    scheduler = build_scheduler(config, optimizer, steps_per_epoch)
    generator = torch.Generator(device=device).manual_seed(config.seed)

    history: list[dict[str, float]] = []
    first_epoch, skip, resumed_loss = 1, 0, 0.0
    if resume is not None:
        restore(resume, model=model, optimizer=optimizer, scheduler=scheduler)
        generator.set_state(resume.epoch_generator)
        history = [dict(entry) for entry in resume.history]
        first_epoch, skip, resumed_loss = resume.epoch + 1, resume.batch, resume.loss_sum

    def state(epoch_done: int, batches: int, epoch_rng: torch.Tensor, loss: float) -> TrainState:
        return capture(
            epoch=epoch_done,
            batch=batches,
            model=model,
            optimizer=optimizer,
            scheduler=scheduler,
            epoch_generator=epoch_rng,
            loss_sum=loss,
            history=history,
        )

    metrics: dict[str, float] = {}
    confusion = torch.zeros(data.num_classes, data.num_classes, dtype=torch.int64)
    pruned = False
    last_checkpoint = time.monotonic()
    for epoch in range(first_epoch, config.epochs + 1):
        model.train()
        epoch_generator = generator.get_state()
        order = torch.randperm(n_train, device=device, generator=generator)
        loss_sum = torch.full((), resumed_loss if skip else 0.0, device=device)
        for batch, (start, stop) in enumerate(_batch_slices(n_train, batch_size)):
            if batch < skip:
                continue  # done before the checkpoint this run resumed from
            index = order[start:stop]
            with _autocast(on_cuda):
                loss = loss_fn(model(data.train_x[index]), data.train_y[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            loss_sum += loss.detach() * (stop - start)
            stopping = should_stop is not None and should_stop()
            due = checkpoint_interval is not None and (
                time.monotonic() - last_checkpoint >= checkpoint_interval
            )
            if checkpoint is not None and (stopping or due):
                checkpoint(state(epoch - 1, batch + 1, epoch_generator, float(loss_sum)))
                last_checkpoint = time.monotonic()
            if stopping:
                raise TrainingInterrupted(f"stopped during epoch {epoch}")
        skip = 0
        confusion, val_loss = evaluate(model, data.val_x, data.val_y, data.num_classes, on_cuda)
        metrics = compute_metrics(confusion, val_loss)
        history.append({"epoch": epoch, "train_loss": float(loss_sum) / n_train, **metrics})
        if checkpoint is not None and epoch < config.epochs:
            checkpoint(state(epoch, 0, generator.get_state(), 0.0))
            last_checkpoint = time.monotonic()
        if report is not None and report(epoch, metrics):
            pruned = True
            break
    if not metrics:  # resumed after the last epoch: nothing left to train
        confusion, val_loss = evaluate(model, data.val_x, data.val_y, data.num_classes, on_cuda)
        metrics = compute_metrics(confusion, val_loss)

    return TrainResult(
        metrics=metrics,
        history=history,
        per_class=per_class_report(confusion, data.classes),
        confusion=confusion.tolist(),
        epochs_run=len(history),
        pruned=pruned,
        duration_s=time.perf_counter() - started,
        state_dict={k: v.detach().cpu() for k, v in model.state_dict().items()},
        classes=data.classes,
    )


@torch.inference_mode()
def evaluate(
    model: torch.nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    on_cuda: bool = False,
) -> tuple[torch.Tensor, float]:
    """Returns the confusion matrix and the mean cross-entropy of ``model`` on a split."""
    model.eval()
    predictions, loss_sum = [], torch.zeros((), device=images.device)
    for start, stop in _batch_slices(len(labels), EVAL_BATCH, drop_single=False):
        with _autocast(on_cuda):
            logits = model(images[start:stop]).float()
        loss_sum += F.cross_entropy(logits, labels[start:stop], reduction="sum")
        predictions.append(logits.argmax(dim=1))
    confusion = confusion_matrix(torch.cat(predictions), labels, num_classes)
    return confusion, float(loss_sum) / max(len(labels), 1)


def _batch_slices(n: int, batch_size: int, drop_single: bool = True) -> list[tuple[int, int]]:
    """Slices ``[0, n)`` into batches; a trailing batch of one sample is dropped in training
    because batch norm cannot normalize a single sample."""
    slices = [(start, min(start + batch_size, n)) for start in range(0, n, batch_size)]
    if drop_single and len(slices) > 1 and slices[-1][1] - slices[-1][0] == 1:
        slices.pop()
    return slices


def _autocast(enabled: bool) -> contextlib.AbstractContextManager[Any]:
    if enabled:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


__all__ = ["Reporter", "TrainResult", "TrainingInterrupted", "evaluate", "resolve_device", "train"]
