"""CUDA paths of the trainer (autocast, channels_last, fused, compile); skipped without a GPU."""

from __future__ import annotations

import pytest
import torch

from automl.models import build_model
from automl.train import train
from automl.train.accel import Accelerator
from automl.train.hyperparameters import flat_config

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]


def test_trains_on_cuda_and_returns_cpu_weights() -> None:
    result = train(flat_config({"epochs": 3, "width": 16, "lr": 3e-3}), device="cuda")
    assert result.metrics["accuracy"] > 0.8
    assert all(tensor.device.type == "cpu" for tensor in result.state_dict.values())


def test_cuda_reports_every_epoch() -> None:
    epochs: list[int] = []
    train(
        flat_config({"epochs": 2, "width": 8}),
        lambda e, _: epochs.append(e) or False,
        device="cuda",
    )
    assert epochs == [1, 2]


def test_accelerator_on_cuda_uses_mixed_precision_channels_last_and_fused_optimizers() -> None:
    device = torch.device("cuda")
    accel = Accelerator.for_device(device, sample_dims=3)
    assert accel.dtype in (torch.bfloat16, torch.float16) and accel.channels_last and accel.fused
    assert torch.backends.cudnn.benchmark
    model = accel.model(build_model("cnn", {"width": 8}, (3, 32, 32), 10))
    conv = model[0][0][0].weight
    assert conv.is_contiguous(memory_format=torch.channels_last)
    batch = accel.batch(torch.rand(4, 3, 32, 32, device=device))
    assert batch.is_contiguous(memory_format=torch.channels_last)
    with accel.autocast():
        assert model(batch).dtype == accel.dtype
    clips = Accelerator.for_device(device, sample_dims=4)
    assert not clips.channels_last


def test_fp16_path_scales_gradients() -> None:
    accel = Accelerator(torch.device("cuda"), dtype=torch.float16)
    assert accel.scaler is not None
    model = torch.nn.Linear(4, 2).cuda()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    before = model.weight.detach().clone()
    with accel.autocast():
        loss = model(torch.rand(8, 4, device="cuda")).float().pow(2).mean()
    accel.step(loss, optimizer, list(model.parameters()), grad_clip=1.0)
    assert not torch.equal(before, model.weight)


def test_compiled_model_trains_on_cuda() -> None:
    result = train(flat_config({"epochs": 1, "width": 8, "compile": True}), device="cuda")
    assert result.metrics["accuracy"] > 0.1
    assert not any(key.startswith("_orig_mod") for key in result.state_dict)
