"""Tests of the model registry and the configurable CNN."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError
from torch import nn

from automl.models import MODELS, build_model
from automl.models.cnn import MAX_WIDTH, build_cnn
from automl.train import TrialConfig


def conv_widths(model: nn.Module) -> list[int]:
    return [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]


def pool_count(model: nn.Module) -> int:
    return sum(isinstance(m, nn.MaxPool2d) for m in model.modules())


def test_cnn_is_registered() -> None:
    assert "cnn" in MODELS.names()
    assert MODELS.get("cnn") is build_cnn


@pytest.mark.parametrize("depth", [1, 2, 3, 5, 8])
@pytest.mark.parametrize(
    ("input_shape", "num_classes"), [((1, 8, 8), 10), ((3, 32, 32), 7)], ids=["8x8", "32x32x3"]
)
def test_cnn_output_shape(depth: int, input_shape: tuple[int, int, int], num_classes: int) -> None:
    torch.manual_seed(0)
    config = TrialConfig(width=8, depth=depth)
    model = build_model(config, input_shape, num_classes)
    model.eval()
    with torch.no_grad():
        out = model(torch.rand(4, *input_shape))
    assert out.shape == (4, num_classes)
    assert torch.isfinite(out).all()


def test_cnn_trains_on_a_batch_in_train_mode() -> None:
    model = build_model(TrialConfig(width=8, depth=3, dropout=0.5), (3, 32, 32), 5)
    model.train()
    out = model(torch.rand(2, 3, 32, 32))
    out.sum().backward()
    assert out.shape == (2, 5)
    assert all(p.grad is not None for p in model.parameters())


def test_cnn_widths_double_per_block_and_cap() -> None:
    model = build_model(TrialConfig(width=8, depth=4), (1, 8, 8), 10)
    assert conv_widths(model) == [8, 16, 32, 64]
    capped = build_model(TrialConfig(width=256, depth=3), (1, 8, 8), 10)
    assert conv_widths(capped) == [256, MAX_WIDTH, MAX_WIDTH]


def test_cnn_pools_only_while_the_image_is_large_enough() -> None:
    # 8x8 -> 4x4 -> 2x2, then no more pooling.
    assert pool_count(build_model(TrialConfig(width=4, depth=5), (1, 8, 8), 10)) == 2
    # 32 -> 16 -> 8 -> 4 -> 2.
    assert pool_count(build_model(TrialConfig(width=4, depth=6), (3, 32, 32), 10)) == 4


def test_cnn_kernel_size_and_dropout_are_used() -> None:
    model = build_model(TrialConfig(width=4, depth=2, kernel_size=5, dropout=0.3), (1, 8, 8), 10)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert all(conv.kernel_size == (5, 5) and conv.padding == (2, 2) for conv in convs)
    dropouts = [m for m in model.modules() if isinstance(m, nn.Dropout)]
    assert [d.p for d in dropouts] == [0.3]


def test_cnn_accepts_non_square_input() -> None:
    model = build_model(TrialConfig(width=4, depth=3), (3, 16, 24), 4)
    model.eval()
    with torch.no_grad():
        assert model(torch.rand(2, 3, 16, 24)).shape == (2, 4)


def test_unknown_model_rejected_by_trial_config() -> None:
    with pytest.raises(ValidationError, match=r"unknown model 'resnet9'.*valid choices: cnn"):
        TrialConfig(model="resnet9")


def test_close_model_name_suggested() -> None:
    with pytest.raises(ValidationError, match=r"did you mean 'cnn'\?"):
        TrialConfig(model="cnnn")
