"""CUDA paths of the trainer (bf16 autocast, channels_last); skipped without a GPU."""

from __future__ import annotations

import pytest
import torch

from automl.train import resolve_device, train
from automl.train.hyperparameters import flat_config

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]


def test_trains_on_cuda_and_returns_cpu_weights() -> None:
    result = train(flat_config({"epochs": 3, "width": 16, "lr": 3e-3}), device="cuda")
    assert result.metrics["accuracy"] > 0.8
    assert all(tensor.device.type == "cpu" for tensor in result.state_dict.values())


def test_auto_device_picks_cuda() -> None:
    assert resolve_device("auto").type == "cuda"


def test_cuda_reports_every_epoch() -> None:
    epochs: list[int] = []
    train(
        flat_config({"epochs": 2, "width": 8}),
        lambda e, _: epochs.append(e) or False,
        device="cuda",
    )
    assert epochs == [1, 2]
