"""Imbalanced-data strategies, registered by name with their options.

A strategy looks at the training split only (never validation or test) and returns an
``ImbalancePlan``: per-class loss weights, a per-epoch sampling of training indices, a
replacement loss, and synthetic samples to add. ``gan`` trains a class-conditional
generator once per data fingerprint and ``gan_seed`` and keeps it in an ``ArtifactCache``, so
every trial that picks it reuses the same generator.
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol

import torch
from filelock import FileLock
from pydantic import Field

from automl.config import current_settings
from automl.data import imbalance as sampling
from automl.data.cache import ARTIFACTS, mark_used
from automl.data.gan import generator_state, load_generator, synthesize, train_gan
from automl.registry import AppliesWhen, EntryOptions, Registry
from automl.train.losses import FocalLoss, LossFn

logger = logging.getLogger("automl.train")

EpochSampler = Callable[[int, torch.Generator], torch.Tensor]
"""``sample(epoch, generator) -> indices`` of the training samples of one epoch."""


class ArtifactCache(Protocol):
    """Keeps what is expensive to make (a trained generator) for every trial to reuse."""

    def get_or_create(self, key: str, create: Callable[[], bytes]) -> bytes:
        """The bytes stored under ``key``, made by ``create`` (once) if missing."""
        ...


class LocalArtifactCache:
    """An ``ArtifactCache`` in a folder: one file per key, written once under a file lock.

    Args:
        directory: Defaults to ``<AUTOML_CACHE_DIR>/artifacts``.
    """

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory or current_settings().cache_dir / ARTIFACTS

    def get_or_create(self, key: str, create: Callable[[], bytes]) -> bytes:
        """Reads ``key``, or makes it while other processes wait for it."""
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"{key}.bin"
        with FileLock(str(path) + ".lock"):
            if path.exists():
                mark_used(path)
                return path.read_bytes()
            content = create()
            partial = path.with_suffix(".partial")
            with open(partial, "wb") as handle:
                handle.write(content)
                handle.flush()
                os.fsync(handle.fileno())
            partial.replace(path)
            return content


@dataclass(frozen=True)
class TrainSplit:
    """What a strategy may look at: the training split only, never validation or test."""

    images: torch.Tensor
    """uint8 images ``(N, ...)``."""
    labels: torch.Tensor
    """int64 labels ``(N,)``."""
    num_classes: int
    seed: int
    fingerprint: str = ""
    """Identifies the data (keys what strategies cache)."""
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    cache: ArtifactCache | None = None


@dataclass(frozen=True)
class ImbalancePlan:
    """How training compensates for rare classes."""

    class_weights: torch.Tensor | None = None
    """Per-class loss weights ``(num_classes,)``, or None for unweighted."""
    sampler: EpochSampler | None = None
    """Indices of each epoch, or None for a plain shuffle of every sample."""
    epoch_size: int | None = None
    """Samples per epoch that ``sampler`` draws (required with a sampler)."""
    loss: LossFn | None = None
    """Replaces the configured loss (the ``focal`` strategy)."""
    extra_images: torch.Tensor | None = None
    """Synthetic uint8 samples added to the training split."""
    extra_labels: torch.Tensor | None = None
    notes: dict[str, Any] = field(default_factory=dict)
    """What the strategy did, for the trial's record (e.g. generator training time)."""


class ImbalanceFactory(Protocol):
    """Builds the plan of a strategy for a training split."""

    def __call__(self, options: Any, split: TrainSplit) -> ImbalancePlan: ...


IMBALANCE: Registry[ImbalanceFactory] = Registry(
    "imbalance strategy", group="automl.imbalance", qualifies=True
)

WeightScheme = Literal["inverse", "effective_number"]


class ClassWeightOptions(EntryOptions):
    """Options of the ``class_weights`` strategy."""

    APPLIES_WHEN: ClassVar[Mapping[str, AppliesWhen]] = {
        "beta": AppliesWhen("weighting", ("effective_number",)),
    }

    weighting: WeightScheme = Field(
        "inverse", description="Inverse class frequency, or effective number of samples."
    )
    beta: float = Field(
        0.999,
        ge=0.9,
        lt=1,
        description="Effective-number beta (Cui et al., 2019); only with weighting: "
        "effective_number.",
    )


class FocalStrategyOptions(EntryOptions):
    """Options of the ``focal`` strategy."""

    focal_gamma: float = Field(2.0, ge=0, le=10, description="Focusing exponent.")
    focal_alpha: bool = Field(True, description="Weight classes by inverse frequency (alpha).")


class GanOptions(EntryOptions):
    """Options of the ``gan`` strategy."""

    SAMPLES: ClassVar[frozenset[str] | None] = frozenset({"images"})

    target_ratio: float = Field(
        1.0, gt=0, le=1, description="Top every class up to this share of the largest."
    )
    gan_steps: int = Field(400, ge=1, le=100_000, description="Generator training steps.")
    gan_seed: int = Field(
        0,
        ge=0,
        le=2**32 - 1,
        description="Seed of the generator's training (not the trial's, so every trial "
        "reuses one generator).",
    )


def _weights(counts: torch.Tensor, weighting: str, beta: float) -> torch.Tensor:
    if weighting == "effective_number":
        return sampling.effective_number_weights(counts, beta)
    return sampling.inverse_frequency_weights(counts)


@IMBALANCE.register("none")
def no_strategy(opts: EntryOptions, split: TrainSplit) -> ImbalancePlan:
    """Train on the data as it is."""
    return ImbalancePlan()


@IMBALANCE.register("oversample")
def oversample(opts: EntryOptions, split: TrainSplit) -> ImbalancePlan:
    """Class-balanced sampling: each epoch tops rare classes up with repeats."""
    counts = sampling.class_counts(split.labels, split.num_classes)
    present = int((counts > 0).sum())
    labels = split.labels.to(split.device)

    def sample(epoch: int, generator: torch.Generator) -> torch.Tensor:
        return sampling.oversample_indices(labels, split.num_classes, generator)

    return ImbalancePlan(sampler=sample, epoch_size=present * int(counts.max()))


@IMBALANCE.register("undersample")
def undersample(opts: EntryOptions, split: TrainSplit) -> ImbalancePlan:
    """Each epoch keeps as many samples of every class as the rarest class has."""
    counts = sampling.class_counts(split.labels, split.num_classes)
    present = counts[counts > 0]
    labels = split.labels.to(split.device)

    def sample(epoch: int, generator: torch.Generator) -> torch.Tensor:
        return sampling.undersample_indices(labels, split.num_classes, generator)

    per_class = int(present.min())
    if per_class < FEW_PER_CLASS:
        logger.warning(
            "undersample keeps %d image(s) of each class per epoch (its rarest class has "
            "no more): oversample or class_weights learn from more",
            per_class,
        )
    notes = {"undersample_per_class": per_class, "undersample_of": len(labels)}
    return ImbalancePlan(sampler=sample, epoch_size=len(present) * per_class, notes=notes)


FEW_PER_CLASS = 10
"""Fewer images a class than this per epoch, and undersampling warns."""


@IMBALANCE.register("class_weights", options=ClassWeightOptions)
def class_weights(opts: ClassWeightOptions, split: TrainSplit) -> ImbalancePlan:
    """Loss weighted per class by inverse frequency or effective number of samples."""
    counts = sampling.class_counts(split.labels, split.num_classes)
    return ImbalancePlan(class_weights=_weights(counts, opts.weighting, opts.beta))


@IMBALANCE.register("focal", options=FocalStrategyOptions)
def focal(opts: FocalStrategyOptions, split: TrainSplit) -> ImbalancePlan:
    """Focal loss (replacing the configured loss), with per-class alpha by default."""
    counts = sampling.class_counts(split.labels, split.num_classes)
    alpha = sampling.focal_alpha(counts) * split.num_classes if opts.focal_alpha else None
    if alpha is not None:
        alpha = alpha.to(split.device)
    return ImbalancePlan(loss=FocalLoss(opts.focal_gamma, alpha=alpha))


@IMBALANCE.register("gan", options=GanOptions)
def gan(opts: GanOptions, split: TrainSplit) -> ImbalancePlan:
    """Class-conditional GAN samples top rare classes up (one GAN per training split).

    The generator is trained once on the training split and reused by every trial.
    """
    counts = sampling.class_counts(split.labels, split.num_classes)
    wanted = sampling.gan_topup_counts(counts, opts.target_ratio)
    if int(wanted.sum()) == 0:
        return ImbalancePlan(notes={"gan_samples": 0})
    key = f"gan-{split.fingerprint[:32]}-{opts.gan_seed}-{opts.gan_steps}"
    trained_seconds: list[float] = []

    def create() -> bytes:
        trained = train_gan(
            split.images,
            split.labels,
            split.num_classes,
            steps=opts.gan_steps,
            seed=opts.gan_seed,
            device=split.device,
        )
        trained_seconds.append(trained.seconds)
        logger.info("trained the class-conditional GAN in %.1fs", trained.seconds)
        buffer = io.BytesIO()
        torch.save({**generator_state(trained.generator), "seconds": trained.seconds}, buffer)
        return buffer.getvalue()

    cache = split.cache or LocalArtifactCache()
    state = torch.load(io.BytesIO(cache.get_or_create(key, create)), weights_only=True)
    generator = load_generator(state)
    images, labels = synthesize(generator, wanted, seed=split.seed)
    notes = {
        "gan_samples": len(labels),
        "gan_train_seconds": round(float(state.get("seconds", 0.0)), 3),
        "gan_trained_here": bool(trained_seconds),
    }
    return ImbalancePlan(extra_images=images, extra_labels=labels, notes=notes)


def build_imbalance_plan(name: str, options: Mapping[str, Any], split: TrainSplit) -> ImbalancePlan:
    """Builds the plan of the strategy ``name`` with its ``options``."""
    entry = IMBALANCE.get(name)
    return entry.factory(entry.parse_options(options), split)
