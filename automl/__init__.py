"""automl: hyperparameter search for image recognition on Optuna's SQL store."""

__version__ = "0.1.0"
