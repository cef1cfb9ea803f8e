"""Tests of the model registry and the configurable CNN."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError
from torch import nn

from automl.catalog import describe_registry
from automl.models import build_model
from automl.models.cnn import MAX_WIDTH
from automl.train import TrialConfig


def cnn(input_shape: tuple[int, ...], num_classes: int, **options: object) -> nn.Module:
    return build_model("cnn", options, input_shape, num_classes)


def conv_widths(model: nn.Module) -> list[int]:
    return [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]


def pool_count(model: nn.Module) -> int:
    return sum(isinstance(m, nn.MaxPool2d) for m in model.modules())


@pytest.mark.parametrize("depth", [1, 2, 3, 5, 8])
@pytest.mark.parametrize(
    ("input_shape", "num_classes"), [((1, 8, 8), 10), ((3, 32, 32), 7)], ids=["8x8", "32x32x3"]
)
def test_cnn_output_shape(depth: int, input_shape: tuple[int, int, int], num_classes: int) -> None:
    torch.manual_seed(0)
    model = cnn(input_shape, num_classes, width=8, depth=depth)
    model.eval()
    with torch.no_grad():
        out = model(torch.rand(4, *input_shape))
    assert out.shape == (4, num_classes)
    assert torch.isfinite(out).all()


def test_cnn_trains_on_a_batch_in_train_mode() -> None:
    model = cnn((3, 32, 32), 5, width=8, depth=3, dropout=0.5)
    model.train()
    out = model(torch.rand(2, 3, 32, 32))
    out.sum().backward()
    assert out.shape == (2, 5)
    assert all(p.grad is not None for p in model.parameters())


def test_cnn_widths_double_per_block_and_cap() -> None:
    model = cnn((1, 8, 8), 10, width=8, depth=4)
    assert conv_widths(model) == [8, 16, 32, 64]
    capped = cnn((1, 8, 8), 10, width=256, depth=3)
    assert conv_widths(capped) == [256, MAX_WIDTH, MAX_WIDTH]


@pytest.mark.parametrize("name", ["cnn", "cnn_rnn"])
def test_the_width_cap_is_in_the_description_the_catalog_lists(name: str) -> None:
    """``width: 300, depth: 3`` builds [300, 512, 512]: "doubling" alone hid the cap."""
    model = build_model(name, {"width": 300, "depth": 3}, (1, 8, 8), 10)
    assert conv_widths(model) == [300, MAX_WIDTH, MAX_WIDTH]
    entry = next(entry for entry in describe_registry("models") if entry["name"] == name)
    width = next(option for option in entry["options"] if option["name"] == "width")
    assert f"doubles them, up to {MAX_WIDTH}" in width["description"]
    assert width["range"]["le"] == MAX_WIDTH


def test_cnn_pools_only_while_the_image_is_large_enough() -> None:
    # 8x8 -> 4x4 -> 2x2, then no more pooling.
    assert pool_count(cnn((1, 8, 8), 10, width=4, depth=5)) == 2
    # 32 -> 16 -> 8 -> 4 -> 2.
    assert pool_count(cnn((3, 32, 32), 10, width=4, depth=6)) == 4


def test_cnn_kernel_size_and_dropout_are_used() -> None:
    model = cnn((1, 8, 8), 10, width=4, depth=2, kernel_size=5, dropout=0.3)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert all(conv.kernel_size == (5, 5) and conv.padding == (2, 2) for conv in convs)
    dropouts = [m for m in model.modules() if isinstance(m, nn.Dropout)]
    assert [d.p for d in dropouts] == [0.3]


def test_cnn_accepts_non_square_input() -> None:
    model = cnn((3, 16, 24), 4, width=4, depth=3)
    model.eval()
    with torch.no_grad():
        assert model(torch.rand(2, 3, 16, 24)).shape == (2, 4)


def test_batch_norm_and_pooling_options() -> None:
    plain = cnn((1, 8, 8), 10, width=4, depth=2, batch_norm=False, pooling="avg")
    assert not any(isinstance(m, nn.BatchNorm2d) for m in plain.modules())
    assert all(conv.bias is not None for conv in plain.modules() if isinstance(conv, nn.Conv2d))
    assert sum(isinstance(m, nn.AvgPool2d) for m in plain.modules()) == 2
    assert pool_count(plain) == 0


def test_unknown_model_and_bad_options_rejected_by_trial_config() -> None:
    with pytest.raises(ValidationError, match=r"unknown model 'resnet9'.*valid choices: cnn"):
        TrialConfig(model={"name": "resnet9"})
    with pytest.raises(ValidationError, match=r"did you mean 'cnn'\?"):
        TrialConfig(model={"name": "cnnn"})
    with pytest.raises(ValidationError, match="less than or equal to 8"):
        TrialConfig(model={"name": "cnn", "options": {"depth": 9}})


def test_trial_config_fills_in_model_defaults() -> None:
    config = TrialConfig(model={"name": "cnn", "options": {"width": 8}})
    assert config.model.options == {
        "width": 8,
        "depth": 2,
        "kernel_size": 3,
        "dropout": 0.0,
        "batch_norm": True,
        "pooling": "max",
        "pretrained": None,
        "freeze": "none",
        "freeze_k": 1,
        "backbone_lr_mult": 1.0,
        "freeze_bn_stats": False,
    }
