"""Training: ``train(config, report) -> TrainResult``, independent of Optuna and HTTP."""

from automl.train.augment import AUGMENTATIONS
from automl.train.imbalance import IMBALANCE
from automl.train.loop import Reporter, TrainingInterrupted, TrainResult, resolve_device, train
from automl.train.losses import LOSSES
from automl.train.metrics import METRICS, Metric
from automl.train.optim import OPTIMIZERS, SCHEDULERS
from automl.train.trial_config import GENERAL, Choice, DatasetConfig, TrialConfig

__all__ = [
    "AUGMENTATIONS",
    "GENERAL",
    "IMBALANCE",
    "LOSSES",
    "METRICS",
    "OPTIMIZERS",
    "SCHEDULERS",
    "Choice",
    "DatasetConfig",
    "Metric",
    "Reporter",
    "TrainResult",
    "TrainingInterrupted",
    "TrialConfig",
    "resolve_device",
    "train",
]
