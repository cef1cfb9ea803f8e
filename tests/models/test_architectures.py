"""Every registered architecture: builds for any input, trains a step, keeps the convention."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from automl.models import MODELS, backbone_stages, build_model
from automl.models.adapt import stem_stride
from automl.registry import Entry, EntryOptions

TINY: dict[str, dict[str, object]] = {
    "cnn": {"width": 4},
    "cnn_rnn": {"width": 4, "hidden": 8},
    "fast_resnet": {"width_mult": 0.0625},
    "mobilenet_v3_small": {"width_mult": 0.25},
    "mobilenet_v3_large": {"width_mult": 0.25},
    "rnn": {"hidden": 8},
}
"""Small options, so that every architecture trains a step in well under a second."""
CLIP_MODELS = {"frame_rnn", "frame_pool"}
"""Architectures for frame sequences: their samples are clips ``(T, C, H, W)``."""


def sample_shape(name: str, channels: int, height: int, width: int) -> tuple[int, ...]:
    """One sample's shape for ``name``: an image, or a clip of three frames."""
    image = (channels, height, width)
    return (3, *image) if name in CLIP_MODELS else image


def tiny(name: str, input_shape: tuple[int, ...], num_classes: int = 3) -> nn.Module:
    torch.manual_seed(0)
    return build_model(name, TINY.get(name, {}), input_shape, num_classes)


@pytest.mark.parametrize("size", [8, 28, 32, 64])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("name", MODELS.names())
def test_builds_and_trains_a_step(name: str, channels: int, size: int) -> None:
    shape = sample_shape(name, channels, size, size)
    model = tiny(name, shape, num_classes=3)
    images = torch.rand(2, *shape)
    with torch.no_grad():
        assert torch.isfinite(model.eval()(images[:1])).all()
    model.train()
    logits = model(images)
    assert logits.shape == (2, 3)
    nn.functional.cross_entropy(logits, torch.tensor([0, 2])).backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    before = [p.detach().clone() for p in model.parameters()]
    torch.optim.SGD(model.parameters(), lr=1e-3).step()
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True))


@pytest.mark.parametrize("name", MODELS.names())
def test_follows_the_backbone_and_head_convention(name: str) -> None:
    shape = sample_shape(name, 3, 16, 20)
    model = tiny(name, shape, num_classes=7)
    assert isinstance(model, nn.Sequential) and len(model) == 2
    backbone, head = model
    assert isinstance(head[-1], nn.Linear) and head[-1].out_features == 7
    features = backbone(torch.rand(2, *shape))
    assert features.shape == (2, head[-1].in_features)
    stages = backbone_stages(model)
    assert stages, f"{name} has no backbone stages"
    staged = [id(p) for stage in stages for p in stage.parameters()]
    assert sorted(staged) == sorted(id(p) for p in backbone.parameters())  # all, once each


def test_a_new_head_retargets_the_model() -> None:
    model = tiny("resnet18", (3, 32, 32), num_classes=10)
    model[1][-1] = nn.Linear(model[1][-1].in_features, 4)
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 4)


@pytest.mark.parametrize(
    ("size", "strides", "expected"),
    [
        (8, (1, 2, 4), 1),
        (32, (1, 2, 4), 1),
        (63, (1, 2, 4), 1),
        (64, (1, 2, 4), 2),
        (127, (1, 2, 4), 2),
        (128, (1, 2, 4), 4),
        (224, (1, 2, 4), 4),
        (224, (1, 2), 2),
    ],
)
def test_auto_stem_keeps_small_images_at_full_resolution(
    size: int, strides: tuple[int, ...], expected: int
) -> None:
    assert stem_stride("auto", (3, size, size), strides) == expected
    assert stem_stride(2, (3, size, size), strides) == 2


def test_resnet_stem_follows_the_image_size() -> None:
    small = tiny("resnet18", (1, 32, 32))[0]
    assert small.conv1.in_channels == 1
    assert (small.conv1.kernel_size, small.conv1.stride) == ((3, 3), (1, 1))
    assert isinstance(small.maxpool, nn.Identity)
    medium = tiny("resnet18", (3, 64, 64))[0]
    assert (medium.conv1.kernel_size, medium.conv1.stride) == ((7, 7), (2, 2))
    assert isinstance(medium.maxpool, nn.Identity)
    large = build_model("resnet34", {}, (3, 224, 224), 5)[0]
    assert (large.conv1.kernel_size, large.conv1.stride) == ((7, 7), (2, 2))
    assert isinstance(large.maxpool, nn.MaxPool2d)
    forced = build_model("resnet18", {"stem_stride": 4}, (3, 32, 32), 5)[0]
    assert isinstance(forced.maxpool, nn.MaxPool2d)


@pytest.mark.parametrize("name", ["mobilenet_v3_small", "efficientnet_b0"])
def test_mobile_stems_follow_the_image_size(name: str) -> None:
    small = tiny(name, (1, 32, 32))[0].features[0][0]
    assert (small.in_channels, small.stride) == (1, (1, 1))
    large = tiny(name, (3, 96, 96))[0].features[0][0]
    assert (large.in_channels, large.stride) == (3, (2, 2))


@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v3_small", "efficientnet_b0"])
def test_torchvision_backbones_keep_torchvision_names(arch: str) -> None:
    """A torchvision checkpoint loads into ``model[0]``: only the final layer is missing."""
    from torchvision import models

    reference = getattr(models, arch)(weights=None).state_dict()
    backbone = build_model(arch, {}, (3, 224, 224), 5)[0]
    missing = set(reference) - set(backbone.state_dict())
    assert set(backbone.state_dict()) <= set(reference)
    assert len(missing) == 2 and all(key.endswith(("weight", "bias")) for key in missing)
    backbone.load_state_dict(reference, strict=False)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
@pytest.mark.parametrize("name", ["rnn", "cnn_rnn"])
def test_recurrent_options_shape_the_reader(name: str, cell: str) -> None:
    options = {**TINY[name], "cell": cell, "layers": 2, "bidirectional": True}
    model = build_model(name, options, (1, 12, 12), 4)
    recurrent = next(m for m in model.modules() if isinstance(m, nn.RNNBase))
    assert recurrent.mode == cell.upper()
    assert (recurrent.num_layers, recurrent.bidirectional, recurrent.hidden_size) == (2, True, 8)
    assert model[1][-1].in_features == 2 * 8
    assert model(torch.rand(3, 1, 12, 12)).shape == (3, 4)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_rnn_trains_under_bfloat16_autocast_on_the_cpu(cell: str) -> None:
    # oneDNN refused an LSTM fed float32 rows under bfloat16 autocast (CPUs without
    # native bfloat16): every `precision: bf16` trial of `rnn` with `cell: lstm` failed.
    model = build_model("rnn", {"hidden": 8, "cell": cell}, (1, 8, 8), 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(torch.rand(4, 1, 8, 8))
    logits.float().sum().backward()
    assert logits.shape == (4, 3)
    assert all(p.grad is not None for p in model.parameters())


def test_rnn_reads_rows_in_order() -> None:
    """Reversing the rows changes the output: the image is read as a sequence."""
    model = build_model("rnn", {"hidden": 8}, (1, 6, 6), 2).eval()
    images = torch.rand(1, 1, 6, 6)
    with torch.no_grad():
        assert not torch.allclose(model(images), model(images.flip(-2)))


def test_fast_resnet_width_and_blocks() -> None:
    model = build_model("fast_resnet", {"width_mult": 0.25, "blocks": 2}, (3, 32, 32), 10)
    widths = [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert widths[0] == 16 and max(widths) == 128
    residuals = [m for m in model.modules() if type(m).__name__ == "Residual"]
    assert len(residuals) == 3 * 2


def test_unsupported_stem_stride_is_refused() -> None:
    with pytest.raises(ValueError, match="stem_stride"):
        build_model("mobilenet_v3_small", {"stem_stride": 4}, (3, 32, 32), 10)


def test_a_plugin_model_that_makes_no_module_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by a plugin author: the trial failed later, in words that never named it."""
    entry = Entry("blank", lambda options, shape, classes: None, EntryOptions, "No model.", "acme")
    monkeypatch.setattr(MODELS, "_entries", {**MODELS._entries, "blank": entry})

    with pytest.raises(TypeError, match=r"^model 'blank' \(acme\) made NoneType, not a torch"):
        build_model("blank", {}, (1, 8, 8), 10)
