"""``TrialConfig``: everything one training run needs, fully resolved."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from automl.data import DATASETS
from automl.models import MODELS
from automl.train.losses import LOSSES
from automl.train.optim import OPTIMIZERS, SCHEDULERS


class DatasetConfig(BaseModel):
    """Which registered dataset to train on, and its options."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: Annotated[str, AfterValidator(DATASETS.validate)] = "digits"
    options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check_options(self) -> DatasetConfig:
        DATASETS.get(self.source).options.model_validate(self.options)
        return self


class TrialConfig(BaseModel):
    """A concrete training configuration: one point of a study's search space.

    Every field except ``dataset`` is a hyperparameter a study may fix or search.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    dataset: DatasetConfig = Field(default_factory=DatasetConfig)

    model: Annotated[str, AfterValidator(MODELS.validate)] = "cnn"
    width: int = Field(32, ge=1, le=512, description="Channels of the first conv block.")
    depth: int = Field(2, ge=1, le=8, description="Number of conv blocks.")
    kernel_size: int = Field(3, ge=1, le=11)
    dropout: float = Field(0.0, ge=0, lt=1)

    optimizer: Annotated[str, AfterValidator(OPTIMIZERS.validate)] = "adam"
    lr: float = Field(1e-3, gt=0, le=10, description="Peak learning rate.")
    momentum: float = Field(0.9, ge=0, lt=1, description="For sgd and rmsprop.")
    weight_decay: float = Field(0.0, ge=0, le=1)
    scheduler: Annotated[str, AfterValidator(SCHEDULERS.validate)] = "constant"
    warmup_epochs: float = Field(0.0, ge=0, le=1000)

    loss: Annotated[str, AfterValidator(LOSSES.validate)] = "cross_entropy"
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    focal_gamma: float = Field(2.0, ge=0, le=10, description="For the focal loss.")

    epochs: int = Field(10, ge=1, le=10_000)
    batch_size: int = Field(64, ge=1, le=65_536)
    seed: int = Field(0, ge=0, description="Seed of initialization and batch order.")


HYPERPARAMETERS: tuple[str, ...] = tuple(
    name for name in TrialConfig.model_fields if name != "dataset"
)
"""Names a study may fix or search."""
