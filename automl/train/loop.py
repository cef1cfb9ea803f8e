"""The training loop: ``train(config, report) -> TrainResult``.

Knows nothing of Optuna, HTTP or workers. Data lives on the device as uint8 tensors and
batches are index slices turned into normalized floats there, so there is no per-sample
Python in the hot loop and only uint8 crosses memory. Augmentation runs batched on the
device too, and the per-batch loop never makes the host wait for the device: the training
loss accumulates in a device tensor and ``should_stop`` is a host-side check, so a GPU
stays busy while Python queues the next batches (``AUTOML_SYNC_DEBUG=error`` enforces it,
see ``automl.train.accel``).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.nn import functional as F

from automl.data import ImageData, load_dataset
from automl.models import MODELS, build_model_with_report
from automl.models.transfer import frozen_batch_norms, param_groups
from automl.registry import BUILTIN_SOURCE
from automl.train.accel import (
    EMULATED_BF16,
    Accelerator,
    CompiledModel,
    cpu_has_native_bf16,
)
from automl.train.augment import build_pipeline
from automl.train.best_epoch import BestEpoch
from automl.train.checkpoint import CheckpointSink, TrainState, capture, restore
from automl.train.early_stopping import EarlyStopping
from automl.train.graphs import GraphedStep, graph_blocker
from automl.train.imbalance import IMBALANCE, ArtifactCache, TrainSplit, build_imbalance_plan
from automl.train.losses import LOSSES, build_loss
from automl.train.metrics import (
    METRICS,
    Direction,
    Evaluation,
    compute_metrics,
    confusion_matrix,
    dense_confusion,
    most_confused,
    per_class_report,
)
from automl.train.model_stats import profile_model
from automl.train.optim import (
    OPTIMIZERS,
    build_optimizer,
    build_scheduler,
    constant_learning_rate,
    ignores_warmup,
)
from automl.train.precise_bn import recompute_batch_norm
from automl.train.trial_config import TrialConfig

logger = logging.getLogger(__name__)

Reporter = Callable[[int, dict[str, float]], bool]
"""``report(epoch, metrics) -> stop``: called after each epoch; returning True prunes."""

AUTOCAST_NAMES = {torch.bfloat16: "bf16", torch.float16: "fp16"}
"""How a run's ``autocast`` note names its arithmetic."""

EVAL_BATCH = 1024


class TrainingInterrupted(Exception):
    """Raised when ``should_stop`` asked training to stop (e.g. the worker is shutting down)."""


@dataclass
class TrainResult:
    """What one training run produced."""

    metrics: dict[str, float]
    """Validation metrics of ``best_epoch``."""
    history: list[dict[str, float]]
    """Per-epoch ``epoch``, ``train_loss`` and validation metrics."""
    per_class: list[dict[str, Any]]
    confusion: list[list[int]] | None
    """The validation confusion matrix (None past ``DENSE_CONFUSION_CLASSES`` classes)."""
    most_confused: list[dict[str, Any]]
    """Its largest cells off the diagonal (``automl.train.metrics.most_confused``)."""
    epochs_run: int
    pruned: bool
    duration_s: float
    state_dict: dict[str, torch.Tensor] = field(repr=False)
    classes: tuple[str, ...] = ()
    dataset: ImageData | None = field(default=None, repr=False)
    """The data the run trained on, as loaded (the caller records its input facts)."""
    notes: dict[str, Any] = field(default_factory=dict)
    """What the imbalance strategy did (e.g. how long its generator trained); under
    ``compile``, whether the model ran compiled (``compile``: ``compiled`` or why not); on
    CUDA, whether the updates replayed from a CUDA graph (``cuda_graph``: ``replayed`` or
    why not), when the run qualified for one (``automl.train.graphs``); the classes without
    training, validation or test images (``no_training_images``, ``no_validation_images``,
    ``no_test_images``); whether
    ``warmup_epochs`` was ignored (``warmup``, for a schedule that warms up by itself);
    what a ``pretrained`` checkpoint loaded (``pretrained``); the arithmetic of a run under
    autocast (``autocast``: ``bf16`` or ``fp16``); a ``batch_size`` larger than an epoch's
    images, which trained with one batch of the whole epoch (``batch_size``); a
    ``freeze_k`` above the model's stages, which froze them all (``freeze_k``)."""
    stopped_early: bool = False
    """Whether ``patience`` epochs passed without a better monitored metric."""
    best_epoch: int = 0
    """The epoch whose weights and metrics these are: the last one run, or with
    ``restore_best`` the one with the best monitored metric (a pruned run: its last)."""


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
    on_data: Callable[[ImageData], None] | None = None,
    artifacts: ArtifactCache | None = None,
    monitor: str = "accuracy",
    direction: Direction | None = None,
    required: Collection[str] = (),
    checkpoint: CheckpointSink | None = None,
    checkpoint_interval: float | None = None,
    checkpoint_spacing: float = 0.0,
    resume: TrainState | None = None,
) -> TrainResult:
    """Trains one configuration and evaluates it on the validation split after each epoch.

    Deterministic for a given ``config.seed`` on the CPU. The model's parameter count and
    inference latency (batch 1 and 256, on ``device``) are measured once, before training,
    and reported with every epoch's metrics.

    With ``config.compile`` the model runs through ``torch.compile``; should compiling fail
    (no C compiler, unsupported platform), training continues eagerly, logs a warning and
    says why in ``notes["compile"]``.

    On CUDA the per-batch loop does not synchronize with the host, and full-size batches
    replay their whole update from a CUDA graph where ``automl.train.graphs`` allows; with
    ``AUTOML_SYNC_DEBUG`` set, every epoch but the first one a run trains (which autotunes
    cuDNN for each batch shape) is watched for synchronizing operations.

    Args:
        config: The configuration to train.
        report: Called after each epoch with the validation metrics; returning True
            stops training early (the result is then marked ``pruned``).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"``.
        should_stop: Polled after every batch; returning True raises ``TrainingInterrupted``.
        data: Preloaded data; by default ``config.dataset`` is loaded (cached per process).
        on_data: Called with the data (as loaded, on the CPU) before anything trains; the
            worker checks there that it is the study's. What it raises ends the run.
        artifacts: Where strategies keep what they train once (the ``gan`` generator);
            by default a folder under ``AUTOML_CACHE_DIR``.
        monitor: The metric that ``config.patience`` and ``config.restore_best`` watch
            (in ``direction``); the worker passes the study's first objective.
        direction: Whether ``monitor`` is better larger or smaller (None: the metric's
            own direction); the worker passes the study's.
        required: Metrics besides ``monitor`` the caller reads (the study's other
            objectives). A plugin's metric that fails is left out of the others, and
            ``notes["metrics"]`` says why.
        checkpoint: Given the training state after every epoch but the last, every
            ``checkpoint_interval`` seconds within an epoch, and before an interruption.
        checkpoint_interval: Seconds between checkpoints within one epoch (None: only at
            epoch ends).
        checkpoint_spacing: Least seconds since the last checkpoint for one at an epoch's
            end (0: every epoch): with short epochs, writing the whole training state each
            time would cost more than the work a kill could lose.
        resume: A state from ``checkpoint`` to continue from (same config): the result
            equals that of an uninterrupted run on the CPU; ``report`` is called for the
            remaining epochs only.

    Returns:
        The validation metrics and weights (on the CPU) of the last epoch, or with
        ``config.restore_best`` of the epoch whose ``monitor`` metric was best, and the
        per-epoch history.

    Raises:
        TrainingInterrupted: If ``should_stop`` returned True.
        UnknownNameError: If ``monitor`` is not a registered metric.
        MetricFailedError: If ``monitor`` or a ``required`` metric fails.
    """
    started = time.perf_counter()
    direction = direction or METRICS.get(monitor).factory.direction
    stopper = EarlyStopping(config.patience, direction)
    required, metric_failures = {monitor, *required}, dict[str, str]()
    best = BestEpoch(direction) if config.restore_best else None
    device = resolve_device(device)
    if data is None:
        data = load_dataset(config.dataset.source, config.dataset.options)
    if on_data is not None:
        on_data(data)
    dataset = data  # as loaded (on the CPU), for what the caller records about the input
    data = data.to(device)
    accel = Accelerator.for_device(device, len(data.input_shape), config.precision)

    torch.manual_seed(config.seed)
    model, model_notes = build_model_with_report(
        config.model.name, config.model.options, data.input_shape, data.num_classes
    )
    model = accel.model(model)
    model_stats = profile_model(model, data.input_shape, accel)
    split = TrainSplit(
        data.train_x,
        data.train_y,
        data.num_classes,
        config.seed,
        fingerprint=data.fingerprint,
        device=device,
        cache=artifacts,
    )
    plan = build_imbalance_plan(config.imbalance.name, config.imbalance.options, split)
    train_x, train_y = data.train_x, data.train_y
    if plan.extra_images is not None and plan.extra_labels is not None:
        train_x = torch.cat([train_x, plan.extra_images.to(device)])
        train_y = torch.cat([train_y, plan.extra_labels.to(device)])
    class_weights = None if plan.class_weights is None else plan.class_weights.to(device)
    loss_fn = plan.loss or build_loss(
        config.loss.name, config.loss.options, data.num_classes, class_weights
    )
    augment = build_pipeline(config.augment, data.num_classes)
    groups = _trainable_groups(model, config)
    trainable = [parameter for group in groups for parameter in group["params"]]
    runner = CompiledModel(model) if config.compile else model
    optimizer = build_optimizer(
        config.optimizer.name,
        config.optimizer.options,
        groups,
        lr=config.lr,
        weight_decay=config.weight_decay,
        fused=accel.fused,
    )
    n_train = len(train_y) if plan.epoch_size is None else plan.epoch_size
    batch_size = min(config.batch_size, n_train)
    steps_per_epoch = len(_batch_slices(n_train, batch_size))
    scheduler = build_scheduler(
        config.scheduler.name,
        config.scheduler.options,
        optimizer,
        total_steps=config.epochs * steps_per_epoch,
        warmup_steps=round(config.warmup_epochs * steps_per_epoch),
    )
    generator = torch.Generator(device=device).manual_seed(config.seed)

    history: list[dict[str, float]] = []
    first_epoch, skip, resumed_loss = 1, 0, 0.0
    stopped_before = False
    if resume is not None:
        restore(resume, model=model, optimizer=optimizer, scheduler=scheduler)
        _continue_order(generator, resume.epoch_generator, config.seed, resume.epoch + 1)
        history = [dict(entry) for entry in resume.history]
        for entry in history:  # early stopping continues where it was
            stopped_before = stopper.should_stop(entry[monitor])
        if best is not None and resume.best is None and history:
            best = None  # written before runs kept their best epoch: this one keeps its last
        if best is not None:
            best.load_state(resume.best, model)
        first_epoch, skip, resumed_loss = resume.epoch + 1, resume.batch, resume.loss_sum
        if stopped_before and resume.batch == 0:
            # Checkpointed at the end of the epoch that stopped it early: nothing to train.
            first_epoch = config.epochs + 1

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
            seed=config.seed,
            best=None if best is None else best.to_state(epoch_done if batches == 0 else None),
        )

    def forward_backward(images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        with accel.autocast():
            loss = loss_fn(runner(images), targets)
        accel.step(loss, optimizer, trainable, config.grad_clip)
        return loss.detach()  # keeps no autograd graph alive past its backward pass

    def train_step(images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """One update; repeated eagerly if compiling failed in the backward pass (the
        forward pass falls back by itself, and ``step`` zeroes the gradients first)."""
        try:
            return forward_backward(images, targets)
        except Exception as exc:
            if not isinstance(runner, CompiledModel) or not runner.fall_back(exc):
                raise
            return forward_backward(images, targets)

    blocker = graph_blocker(
        device,
        scaled=accel.scaler is not None,
        compiled=config.compile,
        constant_lr=constant_learning_rate(
            config.scheduler.name,
            total_steps=config.epochs * steps_per_epoch,
            warmup_steps=round(config.warmup_epochs * steps_per_epoch),
        ),
        plugins=_plugin_parts(config),
    )
    graphed: GraphedStep | None = None
    update = train_step
    if blocker is None:
        accel.autocast_cache = False
        graphed = update = GraphedStep(train_step, optimizer, batch_size, accel.allow_syncs)

    metrics: dict[str, float] = {}
    confusion = torch.zeros(data.num_classes, data.num_classes, dtype=torch.int64)
    pruned, stopped_early = False, stopped_before and first_epoch > config.epochs
    last_checkpoint = time.monotonic()
    # Images per epoch that updates see (a trailing single image is left out).
    trained_per_epoch = sum(stop - start for start, stop in _batch_slices(n_train, batch_size))
    held = frozen_batch_norms(model) if config.model.options.get("freeze_bn_stats") else []
    for epoch in range(first_epoch, config.epochs + 1):
        model.train()
        for norm in held:  # precise_bn leaves layers in inference mode as they are
            norm.eval()
        epoch_generator = generator.get_state()
        if plan.sampler is None:
            order = torch.randperm(n_train, device=device, generator=generator)
        else:
            order = plan.sampler(epoch, generator).to(device)
        loss_sum = torch.full((), resumed_loss if skip else 0.0, device=device)
        watch = accel.watch_syncs() if epoch > first_epoch else contextlib.nullcontext()
        with watch:
            for batch, (start, stop) in enumerate(_batch_slices(len(order), batch_size)):
                if batch < skip:
                    continue  # done before the checkpoint this run resumed from
                index = order[start:stop]
                images, targets = data.to_unit(train_x[index]), train_y[index]
                if augment is not None:
                    images, targets = augment(
                        images, targets, _batch_generator(config, epoch, batch, device)
                    )
                loss = update(accel.batch(data.standardize(images)), targets)
                scheduler.step()
                # A step a grad scaler skipped (fp16 overflow) leaves the weights finite:
                # its loss stays out of the sum; real divergence shows in validation.
                loss_sum += torch.nan_to_num(loss.detach(), 0.0, 0.0, 0.0) * (stop - start)
                stopping = should_stop is not None and should_stop()
                due = checkpoint_interval is not None and (
                    time.monotonic() - last_checkpoint >= checkpoint_interval
                )
                if checkpoint is not None and (stopping or due):
                    with accel.allow_syncs():  # a checkpoint copies the state to the host
                        checkpoint(state(epoch - 1, batch + 1, epoch_generator, float(loss_sum)))
                    last_checkpoint = time.monotonic()
                if stopping:
                    raise TrainingInterrupted(f"stopped during epoch {epoch}")
        skip = 0
        recompute_batch_norm(
            model, data.train_x, config.precise_bn, data.normalize, accel, chunk=EVAL_BATCH
        )
        confusion, val_loss = evaluate(
            runner, data.val_x, data.val_y, data.num_classes, accel, data.normalize
        )
        metrics = compute_metrics(
            Evaluation(confusion, val_loss, model_stats), required, metric_failures
        )
        train_loss = float(loss_sum) / trained_per_epoch
        _require_finite(epoch, metrics["loss"])
        history.append({"epoch": epoch, "train_loss": train_loss, **metrics})
        if best is not None:
            best.offer(epoch, metrics, metrics[monitor], confusion, model)
        spaced = time.monotonic() - last_checkpoint >= checkpoint_spacing
        if checkpoint is not None and epoch < config.epochs and spaced:
            checkpoint(state(epoch, 0, generator.get_state(), 0.0))
            last_checkpoint = time.monotonic()
        if report is not None and report(epoch, metrics):
            pruned = True
            break
        if stopper.should_stop(metrics[monitor]):
            stopped_early = True
            break
    if not metrics:  # resumed after the last epoch: nothing left to train
        confusion, val_loss = evaluate(
            runner, data.val_x, data.val_y, data.num_classes, accel, data.normalize
        )
        metrics = compute_metrics(
            Evaluation(confusion, val_loss, model_stats), required, metric_failures
        )
    best_epoch = int(history[-1]["epoch"]) if history else 0
    if best is not None and not pruned and best.restore(model, best_epoch):
        assert best.epoch is not None and best.confusion is not None
        metrics, confusion, best_epoch = dict(best.metrics), best.confusion, best.epoch
    notes = dict(plan.notes) | dataset.unscored_classes()
    left_out = [message for name, message in metric_failures.items() if name not in metrics]
    if left_out:  # of the epoch whose metrics the run ends with
        notes["metrics"] = "left out: " + "; ".join(left_out)
    if config.warmup_epochs and ignores_warmup(config.scheduler.name, config.scheduler.options):
        notes["warmup"] = f"ignored: {config.scheduler.name} warms up by itself"
    if graphed is not None:
        notes["cuda_graph"] = _graph_note(graphed)
    if isinstance(runner, CompiledModel):
        notes["compile"] = (
            "compiled" if runner.compiled else f"failed, trained eagerly: {runner.failure}"
        )
    notes |= model_notes
    if accel.dtype is not None:  # the scores are those of reduced-precision arithmetic
        notes["autocast"] = AUTOCAST_NAMES.get(accel.dtype, str(accel.dtype))
        if accel.device.type == "cpu" and cpu_has_native_bf16() is False:
            notes["bf16"] = EMULATED_BF16
    if batch_size < config.batch_size:
        notes["batch_size"] = _batch_size_note(config.batch_size, batch_size)

    return TrainResult(
        metrics=metrics,
        history=history,
        per_class=per_class_report(confusion, data.classes),
        confusion=dense_confusion(confusion),
        most_confused=most_confused(confusion, data.classes),
        epochs_run=len(history),
        pruned=pruned,
        duration_s=time.perf_counter() - started,
        state_dict={k: v.detach().cpu() for k, v in model.state_dict().items()},
        classes=data.classes,
        dataset=dataset,
        notes=notes,
        stopped_early=stopped_early,
        best_epoch=best_epoch,
    )


@torch.inference_mode()
def evaluate(
    model: torch.nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    accel: Accelerator | None = None,
    prepare: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> tuple[torch.Tensor, float]:
    """Returns the confusion matrix and the mean cross-entropy of ``model`` on a split.

    Runs without autograd at a large batch. ``prepare`` turns each stored batch into model
    input (e.g. ``ImageData.normalize``).
    """
    accel = accel or Accelerator(images.device)
    model.eval()
    predictions, loss_sum = [], torch.zeros((), device=images.device)
    for start, stop in _batch_slices(len(labels), EVAL_BATCH, drop_single=False):
        batch = images[start:stop]
        batch = accel.batch(prepare(batch) if prepare is not None else batch)
        with accel.autocast():
            logits = model(batch).float()
        loss_sum += F.cross_entropy(logits, labels[start:stop], reduction="sum")
        predictions.append(logits.argmax(dim=1))
    confusion = confusion_matrix(torch.cat(predictions), labels, num_classes)
    return confusion, float(loss_sum) / max(len(labels), 1)


def _plugin_parts(config: TrialConfig) -> list[str]:
    """The parts of a training update that plugins provide, e.g. ``["loss 'mine'"]``."""
    parts = (
        (MODELS, config.model.name),
        (OPTIMIZERS, config.optimizer.name),
        (LOSSES, config.loss.name),
        (IMBALANCE, config.imbalance.name),
    )
    return [
        f"{registry.kind} {name!r}"
        for registry, name in parts
        if registry.get(name).source != BUILTIN_SOURCE
    ]


def _batch_size_note(configured: int, used: int) -> str:
    """Why a run trained with batches smaller than its config's: an epoch had fewer images
    (e.g. under ``undersample``), so 256 and 1024 trained alike."""
    return f"cut from {configured} to {used}, the images in one epoch"


def _graph_note(graphed: GraphedStep) -> str:
    """How a run's updates went: replayed from a CUDA graph, or eagerly and why."""
    if graphed.failure is not None:
        return f"failed, trained eagerly: {graphed.failure}"
    return "replayed" if graphed.replaying else "not captured: too few full-size batches"


def _continue_order(generator: torch.Generator, saved: torch.Tensor, seed: int, epoch: int) -> None:
    """Continues the shuffling from a checkpoint's generator state, taken at the start of
    ``epoch``.

    A checkpoint written on another kind of device cannot: a CUDA generator's state (16
    bytes) does not fit a CPU one (5,056) or the other way round. The orders from ``epoch``
    on are then drawn from the trial's seed and ``epoch``; a run resumed mid-epoch trains
    the rest of that epoch on a new order (a few images twice, a few not at all).
    """
    if saved.numel() == generator.get_state().numel():
        generator.set_state(saved)
        return
    logger.info("checkpoint from another kind of device: epoch %d's order drawn anew", epoch)
    generator.manual_seed(derived_seed(seed, epoch))


def _batch_generator(
    config: TrialConfig, epoch: int, batch: int, device: torch.device
) -> torch.Generator:
    """The augmentation randomness of one batch: fixed by seed, epoch and batch, so a run
    resumed mid-epoch draws exactly what an uninterrupted one would."""
    return torch.Generator(device=device).manual_seed(derived_seed(config.seed, epoch, batch))


def derived_seed(*keys: int) -> int:
    """A seed of 63 bits for the stream that ``keys`` name, hashed so that nearby keys
    (seeds 0 and 1; batch 10,007 of one epoch and batch 0 of the next) draw unrelated
    numbers, as a linear mix of them would not."""
    digest = hashlib.blake2b(repr(keys).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


def _trainable_groups(model: torch.nn.Module, config: TrialConfig) -> list[dict[str, Any]]:
    """Parameter groups of the unfrozen parameters; the backbone gets its own learning rate
    when the architecture's ``backbone_lr_mult`` asks for one, and biases and normalization
    scales their own group without weight decay unless ``decay_norm_and_bias``."""
    mult = config.model.options.get("backbone_lr_mult", 1.0)
    if mult != 1.0:
        groups = param_groups(model, config.lr, mult)
    else:
        groups = [{"params": [p for p in model.parameters() if p.requires_grad]}]
    if config.decay_norm_and_bias or config.weight_decay == 0:
        return groups
    return [part for group in groups for part in _without_decay_on_vectors(group)]


def _without_decay_on_vectors(group: dict[str, Any]) -> list[dict[str, Any]]:
    """``group`` split in two: its matrices and kernels, then its parameters of one
    dimension (biases, normalization scales and shifts) with ``weight_decay`` 0. An empty
    part is dropped."""
    decayed = [p for p in group["params"] if p.ndim > 1]
    kept = [p for p in group["params"] if p.ndim <= 1]
    parts = [{**group, "params": decayed}, {**group, "params": kept, "weight_decay": 0.0}]
    return [part for part in parts if part["params"]]


class TrainingDiverged(FloatingPointError):
    """The validation loss is no longer a number: the weights diverged."""


def _require_finite(epoch: int, val_loss: float) -> None:
    """Ends a run whose weights diverged: every later metric would score garbage (the
    argmax of NaN logits is class 0) as a result.

    Raises:
        TrainingDiverged: If the validation loss is NaN or infinite.
    """
    if not math.isfinite(val_loss):
        raise TrainingDiverged(
            f"training diverged at epoch {epoch} (validation loss {val_loss:g}); try a lower "
            "lr, grad_clip or another precision"
        )


def _batch_slices(n: int, batch_size: int, drop_single: bool = True) -> list[tuple[int, int]]:
    """Slices ``[0, n)`` into batches; a trailing batch of one sample is dropped in training
    because batch norm cannot normalize a single sample."""
    slices = [(start, min(start + batch_size, n)) for start in range(0, n, batch_size)]
    if drop_single and len(slices) > 1 and slices[-1][1] - slices[-1][0] == 1:
        slices.pop()
    return slices


__all__ = [
    "Reporter",
    "TrainResult",
    "TrainingDiverged",
    "TrainingInterrupted",
    "evaluate",
    "resolve_device",
    "train",
]
