"""``TrialConfig``: everything one training run needs, fully resolved.

A trial picks one entry of each selectable registry (model, optimizer, scheduler, loss,
imbalance strategy) with all of that entry's options, any number of augmentations with
theirs, and the general training hyperparameters.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)

from automl.data import DATASETS
from automl.models import MODELS
from automl.registry import RECORDED, Registry, within_strict_input
from automl.train.accel import Precision
from automl.train.augment import AUGMENTATIONS
from automl.train.imbalance import IMBALANCE
from automl.train.losses import LOSSES
from automl.train.optim import OPTIMIZERS, SCHEDULERS

SELECTABLE: dict[str, Registry[Any]] = {
    "model": MODELS,
    "optimizer": OPTIMIZERS,
    "scheduler": SCHEDULERS,
    "loss": LOSSES,
    "imbalance": IMBALANCE,
}
"""Hyperparameters that pick one entry of a registry, and that registry."""

PIPELINES: dict[str, Registry[Any]] = {"augment": AUGMENTATIONS}
"""Hyperparameter groups whose entries apply together, each when enabled."""


class DatasetConfig(BaseModel):
    """Which registered dataset to train on, and its options."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: Annotated[str, AfterValidator(DATASETS.validate)] = "digits"
    options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check_options(self, info: ValidationInfo) -> DatasetConfig:
        if not (info.context or {}).get(RECORDED):
            DATASETS.get(self.source).parse_options(self.options)
        return self


class Choice(BaseModel):
    """A registry entry picked for a trial, with every one of its options."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    options: dict[str, Any] = Field(default_factory=dict)


def _completed_by(registry: Registry[Any]) -> AfterValidator:
    """Checks a choice against ``registry`` and fills in the entry's option defaults."""

    def complete(choice: Choice, info: ValidationInfo) -> Choice:
        options = registry.get(choice.name).parse_options(choice.options, info.context)
        return Choice(name=choice.name, options=options.model_dump(mode="json"))

    return AfterValidator(complete)


def _complete_pipeline(registry: Registry[Any]) -> AfterValidator:
    def complete(pipeline: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
        return {
            name: registry.get(name).parse_options(options).model_dump(mode="json")
            for name, options in sorted(pipeline.items())
        }

    return AfterValidator(complete)


def _choice(name: str, registry: Registry[Any]) -> Any:
    return Field(Choice(name=name), validate_default=True, description=f"The {registry.kind}.")


MAX_SEED = 2**53 - 1
"""The largest training seed: Optuna keeps a searched integer as a float, exact up to 2**53
(``torch.manual_seed`` would take up to 2**64 - 1)."""


class TrialConfig(BaseModel):
    """A concrete training configuration: one point of a study's search space."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dataset: DatasetConfig = Field(default_factory=DatasetConfig)

    model: Annotated[Choice, _completed_by(MODELS)] = _choice("cnn", MODELS)
    optimizer: Annotated[Choice, _completed_by(OPTIMIZERS)] = _choice("adam", OPTIMIZERS)
    scheduler: Annotated[Choice, _completed_by(SCHEDULERS)] = _choice("constant", SCHEDULERS)
    loss: Annotated[Choice, _completed_by(LOSSES)] = _choice("cross_entropy", LOSSES)
    imbalance: Annotated[Choice, _completed_by(IMBALANCE)] = _choice("none", IMBALANCE)
    augment: Annotated[dict[str, dict[str, Any]], _complete_pipeline(AUGMENTATIONS)] = Field(
        default_factory=dict, description="Augmentations (name -> options) applied in training."
    )

    lr: float = Field(1e-3, gt=0, le=10, description="Peak learning rate.")
    weight_decay: float = Field(0.0, ge=0, le=1, description="Weight decay of the optimizer.")
    decay_norm_and_bias: bool = Field(
        True,
        description="Apply weight_decay to biases and normalization scales too (every "
        "parameter of one dimension); false decays only the weights of convolutions, linear "
        "and recurrent layers, as timm's and torchvision's training recipes do.",
    )
    warmup_epochs: float = Field(
        0.0,
        ge=0,
        le=1000,
        description="Epochs of linear learning-rate warmup (one_cycle, which warms up by "
        "itself, ignores it).",
    )
    epochs: int = Field(10, ge=1, le=10_000, description="Training epochs.")
    batch_size: int = Field(
        64,
        ge=2,
        le=65_536,
        description="Training batch size; at least 2, as batch norm cannot train on one image.",
    )
    grad_clip: float = Field(
        0.0, ge=0, le=1e6, description="Largest global gradient norm; 0 turns clipping off."
    )
    patience: int = Field(
        0,
        ge=0,
        le=10_000,
        description="Stop after this many epochs without a better objective; 0 turns it off.",
    )
    seed: int = Field(
        0,
        ge=0,
        le=MAX_SEED,
        description="Seed of initialization, batch order, augmentation. In a study each "
        "trial gets its own (from the study's seed and the trial's ticket) unless the spec "
        "fixes or searches it.",
    )
    restore_best: bool = Field(
        True,
        description="End with the weights and validation metrics of the epoch whose "
        "monitored metric (the study's first objective) was best, not the last epoch's.",
    )
    precise_bn: int = Field(
        256,
        ge=0,
        le=1_000_000,
        description="Training images (evenly spaced, not augmented) whose batch-norm "
        "statistics, under the current weights, replace the running averages before every "
        "validation; 0 keeps the running averages.",
    )
    compile: bool = Field(
        False, description="Compile the model with torch.compile (slow start, faster steps)."
    )

    @field_validator("batch_size", mode="wrap")
    @classmethod
    def _stored_batch_of_one(cls, value: Any, handler: ValidatorFunctionWrapHandler) -> int:
        """Batches of one are refused in what users submit (``strict_input``) only: a
        study or trial stored before (a cnn or rnn without batch norm trained with them)
        still runs, is scored and serves its model."""
        try:
            return int(handler(value))
        except ValidationError:
            if value == 1 and type(value) is int and not within_strict_input():
                return 1
            raise

    precision: Precision = Field(
        "auto",
        description="Arithmetic of training and scoring: auto (bf16 on GPUs with native "
        "bf16, else fp16 with gradient scaling; fp32 on the CPU), fp32, or bf16 (on the CPU "
        "too: faster with AMX or AVX512-BF16).",
    )


def stored_config(raw: Mapping[str, Any]) -> TrialConfig:
    """A configuration as a trial recorded it, validated except for its dataset options.

    Those options name data (a folder, a CSV) that may have moved or changed since the
    trial trained; what serves or describes its model (weights, classes, input statistics)
    was recorded with the trial and needs none of it. The dataset source must still be
    registered, and everything else validates as at submit time, but for bounds
    tightened since (a batch size of one, refused only in what users submit). Whatever
    loads the data validates the options then (``load_dataset``).

    Raises:
        pydantic.ValidationError: If the configuration no longer validates.
    """
    return TrialConfig.model_validate(raw, context={RECORDED: True})


GENERAL: tuple[str, ...] = tuple(
    name for name in TrialConfig.model_fields if name not in ("dataset", *SELECTABLE, *PIPELINES)
)
"""General training hyperparameters: names a spec may fix or search as they are."""


def flat_values(config: TrialConfig) -> dict[str, Any]:
    """A configuration as the flat names a spec uses: general values, selected entry names,
    their options bare (qualified ``entry.option`` if a name repeats) and augmentation
    options qualified (``hflip.p``)."""
    values: dict[str, Any] = {name: getattr(config, name) for name in GENERAL}
    for group in SELECTABLE:
        choice: Choice = getattr(config, group)
        values[group] = choice.name
    for group in SELECTABLE:
        choice = getattr(config, group)
        for option, value in choice.options.items():
            key = option if option not in values else f"{choice.name}.{option}"
            values[key] = value
    for name, options in config.augment.items():
        values.update({f"{name}.{option}": value for option, value in options.items()})
    return values
