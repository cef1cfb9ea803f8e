"""Training: ``train(config, report) -> TrainResult``, independent of Optuna and HTTP."""

from automl.train.config import HYPERPARAMETERS, DatasetConfig, TrialConfig
from automl.train.loop import Reporter, TrainingInterrupted, TrainResult, resolve_device, train
from automl.train.losses import LOSSES
from automl.train.metrics import METRICS, Metric
from automl.train.optim import OPTIMIZERS, SCHEDULERS

__all__ = [
    "HYPERPARAMETERS",
    "LOSSES",
    "METRICS",
    "OPTIMIZERS",
    "SCHEDULERS",
    "DatasetConfig",
    "Metric",
    "Reporter",
    "TrainResult",
    "TrainingInterrupted",
    "TrialConfig",
    "resolve_device",
    "train",
]
