"""A study that searches several architectures: its spec validates, and every choice trains."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from automl.data import ImageData, load_dataset
from automl.models import build_model
from automl.space import build_config
from automl.spec import load_spec
from automl.train import train
from automl.train.model_stats import count_parameters

FAMILIES = ["cnn", "fast_resnet", "resnet18", "mobilenet_v3_small", "rnn", "cnn_rnn"]


@pytest.fixture(scope="module")
def digits() -> ImageData:
    full = load_dataset("digits")
    return replace(
        full,
        train_x=full.train_x[:96],
        train_y=full.train_y[:96],
        val_x=full.val_x[:48],
        val_y=full.val_y[:48],
    )


SPEC = {
    "name": "families",
    "objectives": [{"metric": "accuracy"}, {"metric": "latency_ms"}],
    "budget": {"n_trials": 6},
    "sampler": {"name": "nsga2", "seed": 0},
    "fixed": {"epochs": 1, "batch_size": 32, "width": 4, "hidden": 8, "width_mult": 0.25},
    "params": {
        "model": {"type": "categorical", "choices": FAMILIES},
        "dropout": {"type": "float", "low": 0.0, "high": 0.3},
        "cell": {"type": "categorical", "choices": ["gru", "lstm"]},
        "lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True},
    },
}


def test_spec_searching_several_architectures_validates() -> None:
    spec = load_spec(SPEC)
    assert sorted(spec.conditions("cell")["model"]) == ["cnn_rnn", "rnn"]
    assert "model" not in spec.conditions("dropout")  # every family has a dropout
    assert spec.directions == ["maximize", "minimize"]


@pytest.mark.parametrize("model", FAMILIES)
def test_each_architecture_of_the_search_trains_one_trial(model: str, digits: ImageData) -> None:
    spec = load_spec(SPEC)
    values = {"model": model, "dropout": 0.1, "lr": 3e-3}
    if model in ("rnn", "cnn_rnn"):
        values["cell"] = "lstm"
    config = build_config(spec, values)
    assert config.model.name == model and config.model.options["dropout"] == 0.1
    result = train(config, data=digits, monitor=spec.metrics[0])
    assert result.epochs_run == 1
    for metric in spec.metrics:
        assert math.isfinite(result.metrics[metric])
    built = build_model(model, config.model.options, digits.input_shape, digits.num_classes)
    assert result.metrics["params"] == count_parameters(built)
