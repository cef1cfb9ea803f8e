"""Transfer learning: safe checkpoint loading, channel adaptation, head, freezing, groups."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn
from torchvision.models import resnet18

from automl.models import build_model
from automl.models.transfer import (
    CheckpointError,
    adapt_input_channels,
    backbone_stages,
    check_pretrained,
    freeze,
    load_checkpoint,
    load_pretrained,
    param_groups,
    replace_head,
    resolve_checkpoint,
)


@pytest.fixture
def roots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    data, torch_home = tmp_path / "data", tmp_path / "torch_home"
    data.mkdir()
    monkeypatch.setenv("AUTOML_DATA_ROOT", str(data))
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    return data, torch_home


def cnn(channels: int, classes: int) -> nn.Module:
    torch.manual_seed(channels * 100 + classes)
    return build_model("cnn", {"width": 4, "depth": 3}, (channels, 16, 16), classes)


def test_cnn_checkpoint_in_safetensors_and_torch_formats(roots: tuple[Path, Path]) -> None:
    data, _ = roots
    source = cnn(3, 10)
    (data / "weights").mkdir()
    save_file(source.state_dict(), str(data / "weights" / "cnn.safetensors"))
    torch.save({"state_dict": source.state_dict()}, data / "weights" / "cnn.pt")
    for name in ("weights/cnn.safetensors", "weights/cnn.pt"):
        state = load_checkpoint(name)
        target = cnn(1, 4)  # grayscale input, 4 classes
        report = load_pretrained(target, state)
        assert report.adapted == ["0.0.0.weight"]
        assert report.skipped == ["1.0.weight", "1.0.bias"]  # the head is sized for 10 classes
        assert "0.1.0.weight" in report.loaded
        assert torch.equal(target.state_dict()["0.1.0.weight"], source.state_dict()["0.1.0.weight"])
        summed = source.state_dict()["0.0.0.weight"].sum(dim=1, keepdim=True)
        assert torch.equal(target.state_dict()["0.0.0.weight"], summed)


def test_grayscale_adaptation_keeps_the_response() -> None:
    conv = nn.Conv2d(3, 5, 3)
    gray = nn.Conv2d(1, 5, 3)
    gray.weight.data = adapt_input_channels(conv.weight.data, 1)
    gray.bias.data = conv.bias.data
    image = torch.rand(2, 1, 8, 8)
    assert torch.allclose(gray(image), conv(image.expand(-1, 3, -1, -1)), atol=1e-5)
    assert adapt_input_channels(gray.weight.data, 3).shape == (5, 3, 3, 3)
    with pytest.raises(ValueError, match="from 3 to 2"):
        adapt_input_channels(conv.weight.data, 2)


def test_hub_cache_name_and_refusals(roots: tuple[Path, Path]) -> None:
    data, torch_home = roots
    (torch_home / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(resnet18(weights=None).state_dict(), torch_home / "hub" / "checkpoints" / "r18.pth")
    assert resolve_checkpoint("r18.pth") == torch_home / "hub" / "checkpoints" / "r18.pth"
    assert check_pretrained("r18.pth") == "r18.pth"
    cases = {
        "missing.pt": "not found under the data root or in the torch hub cache",
        "sub/missing.pt": "'sub/missing.pt' not found under the data root",
        "../torch_home/hub/checkpoints/r18.pth": "must not contain '..'",
        str(torch_home / "hub" / "checkpoints" / "r18.pth"): "outside the data root",
        "weights.pkl": "must end in .safetensors, .pt, .pth, .bin",
    }
    for reference, message in cases.items():
        with pytest.raises(CheckpointError, match=message):
            check_pretrained(reference)
    (data / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"cannot read checkpoint 'junk\.pt'"):
        load_checkpoint("junk.pt")


def test_pickled_objects_are_refused(roots: tuple[Path, Path]) -> None:
    data, _ = roots
    torch.save({"model": nn.Linear(2, 2)}, data / "module.pt")  # a whole module: needs pickle
    with pytest.raises(CheckpointError, match=r"cannot read checkpoint 'module\.pt'"):
        load_checkpoint("module.pt")


def test_torchvision_resnet18_checkpoint_loads_into_the_backbone(
    roots: tuple[Path, Path],
) -> None:
    """A torchvision checkpoint (bare backbone keys) on a grayscale 64 px, 3-class task."""
    data, _ = roots
    torch.manual_seed(0)
    torch.save(resnet18(weights=None).state_dict(), data / "r18.pt")
    model = build_model("resnet18", {}, (1, 64, 64), 3)
    report = load_pretrained(model, load_checkpoint("r18.pt"))
    assert report.adapted == ["0.conv1.weight"]
    assert "0.layer4.1.bn2.weight" in report.loaded
    assert report.skipped == ["1.0.weight", "1.0.bias"]  # our head, sized for 3 classes
    stages = backbone_stages(model)
    assert len(stages) == 6  # conv1, bn1, layer1..layer4
    frozen = freeze(model, "first_k", k=3)
    assert frozen and all(name.startswith(("0.conv1", "0.bn1", "0.layer1")) for name in frozen)
    assert not model[0].layer1[0].conv1.weight.requires_grad
    assert model[0].layer2[0].conv1.weight.requires_grad and model[1][0].weight.requires_grad
    with pytest.raises(ValueError, match=r"k must be in \[0, 6\]"):
        freeze(model, "first_k", k=7)


def test_pretrained_options_build_a_loaded_frozen_model(roots: tuple[Path, Path]) -> None:
    data, _ = roots
    torch.manual_seed(1)
    source = build_model("resnet18", {}, (3, 32, 32), 10)
    torch.save(source.state_dict(), data / "ours.pt")
    options = {"pretrained": "ours.pt", "freeze": "backbone", "backbone_lr_mult": 0.1}
    model = build_model("resnet18", options, (3, 32, 32), 4)
    assert torch.equal(model[0].conv1.weight, source[0].conv1.weight)
    assert not any(p.requires_grad for p in model[0].parameters())
    assert all(p.requires_grad for p in model[1].parameters())


def test_a_checkpoint_that_matches_nothing_is_refused(roots: tuple[Path, Path]) -> None:
    """A checkpoint of another architecture once trained from scratch without a word."""
    data, _ = roots
    save_file({"foo": torch.zeros(3)}, str(data / "other.safetensors"))
    torch.save(cnn(3, 10).state_dict(), data / "cnn.pt")

    with pytest.raises(CheckpointError, match=r"matches none of the model's \d+ weights"):
        build_model("resnet18", {"pretrained": "other.safetensors"}, (3, 32, 32), 4)
    with pytest.raises(CheckpointError, match=r"its keys: 0\.0\.0\.weight"):
        build_model("resnet18", {"pretrained": "cnn.pt"}, (3, 32, 32), 4)


def test_frozen_backbone_stays_fixed_while_the_head_trains(roots: tuple[Path, Path]) -> None:
    model = cnn(3, 10)
    head = replace_head(model, 2)
    frozen = freeze(model, "backbone")
    assert set(frozen) == {n for n, _ in model.named_parameters()} - {"1.0.weight", "1.0.bias"}
    groups = param_groups(model, lr=0.1, backbone_lr_mult=0.1)
    assert [group["name"] for group in groups] == ["head"]
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer = torch.optim.SGD(groups, lr=0.1)
    model.train()
    for _ in range(2):
        loss = nn.functional.cross_entropy(
            model(torch.rand(8, 3, 16, 16)), torch.randint(0, 2, (8,))
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    for name, parameter in model.named_parameters():
        changed = not torch.equal(parameter, before[name])
        assert changed == (name in {"1.0.weight", "1.0.bias"}), name
    assert head.weight.requires_grad


def test_param_groups_scale_the_backbone_lr() -> None:
    model = cnn(3, 10)
    freeze(model, "none")
    groups = param_groups(model, lr=0.01, backbone_lr_mult=0.1)
    assert [(g["name"], g["lr"]) for g in groups] == [
        ("backbone", pytest.approx(0.001)),
        ("head", 0.01),
    ]
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    assert len(backbone_stages(model)) == 3
    freeze(model, "first_k", k=1)
    groups = param_groups(model, lr=0.01)
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters())) - 3  # conv, bn
