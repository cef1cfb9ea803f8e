"""Transfer learning: safe checkpoint loading, channel adaptation, head, freezing, groups."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError
from safetensors.torch import save_file
from torch import nn
from torchvision.models import resnet18

from automl.data import ImageData, load_dataset
from automl.models import MODELS, build_model
from automl.models.transfer import (
    CheckpointError,
    LoadReport,
    TransferOptions,
    adapt_input_channels,
    apply_transfer,
    backbone_stages,
    check_pretrained,
    freeze,
    load_checkpoint,
    load_pretrained,
    param_groups,
    replace_head,
    resolve_checkpoint,
)
from automl.registry import strict_input
from automl.spec import SpecError, validate_spec
from automl.train import train
from automl.train.hyperparameters import flat_config
from automl.train.trial_config import TrialConfig, stored_config
from tests.models.test_architectures import TINY


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
        assert report.head == ["1.0.weight", "1.0.bias"] and not report.skipped
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
        "weights.pkl": "must be a file ending in .safetensors, .pt, .pth, .bin",
        "imagenet": "must be a file ending in",
        # Found by a tester: the URL's // was folded, and it was "not found".
        "https://download.pytorch.org/models/r18.pth": (
            "'https://download.pytorch.org/models/r18.pth' is a URL; automl downloads no"
        ),
    }
    for reference, message in cases.items():
        with pytest.raises(CheckpointError, match=message):
            check_pretrained(reference)
    (data / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"cannot read checkpoint 'junk\.pt'"):
        load_checkpoint("junk.pt")


def test_a_checkpoint_path_that_is_no_file_is_named_for_what_it_is(
    roots: tuple[Path, Path],
) -> None:
    """Left alone once: a folder or a named pipe called ``x.pt`` was "not found"; a pipe
    is never opened (its read would block the API)."""
    data, torch_home = roots
    (data / "folder.pt").mkdir()
    os.mkfifo(data / "pipe.pt")
    (torch_home / "hub" / "checkpoints" / "cached.pth").mkdir(parents=True)

    for reference, message in {
        "folder.pt": "checkpoint 'folder.pt' is a folder: name a checkpoint file",
        "pipe.pt": "checkpoint 'pipe.pt' is not a regular file",
        "cached.pth": "checkpoint 'cached.pth' is a folder",
    }.items():
        with pytest.raises(CheckpointError, match=message):
            check_pretrained(reference)


def test_a_file_that_cannot_be_a_checkpoint_is_refused_before_any_trial(
    roots: tuple[Path, Path],
) -> None:
    """Found by a tester: a garbage file named .safetensors or .pt was accepted at submit,
    and every trial then failed reading it."""
    data, _ = roots
    save_file({"w": torch.zeros(2)}, str(data / "good.safetensors"))
    torch.save({"w": torch.zeros(2)}, data / "good.pt")
    truncated = (data / "good.safetensors").read_bytes()[:12]
    files = {
        "empty.pt": b"",
        "junk.pt": b"not a checkpoint",
        "junk.safetensors": b"not a checkpoint",
        "cut.safetensors": truncated,
        "none.safetensors": _safetensors_without_tensors(),
        "pickle.pt": b"\x80" + b"junk" * 100,
        "zip.pt": b"PK\x03\x04" + b"junk" * 100,
    }
    for name, content in files.items():
        (data / name).write_bytes(content)

    assert check_pretrained("good.safetensors") == "good.safetensors"
    assert check_pretrained("good.pt") == "good.pt"
    for protocol in (2, 3):
        legacy = f"legacy{protocol}.pt"
        torch.save(
            {"w": torch.zeros(2)},
            data / legacy,
            _use_new_zipfile_serialization=False,
            pickle_protocol=protocol,
        )
        assert check_pretrained(legacy) == legacy
    reasons = {}
    for name in files:
        with pytest.raises(CheckpointError) as refused:
            check_pretrained(name)
        reasons[name] = str(refused.value)
    assert reasons["empty.pt"] == "checkpoint 'empty.pt' is empty (0 bytes)"
    assert reasons["junk.pt"] == (
        "cannot read checkpoint 'junk.pt': not a torch file (torch.save writes a zip "
        "archive or a pickle)"
    )
    assert reasons["junk.safetensors"] == (
        "cannot read checkpoint 'junk.safetensors': not a safetensors file"
    )
    assert reasons["pickle.pt"] == reasons["junk.pt"].replace("junk", "pickle")
    assert reasons["zip.pt"] == reasons["junk.pt"].replace("junk", "zip")
    assert reasons["cut.safetensors"].startswith("cannot read checkpoint 'cut.safetensors': ")
    assert reasons["none.safetensors"] == (
        "cannot read checkpoint 'none.safetensors': it holds no tensors"
    )


def test_a_recorded_configuration_needs_its_pretrained_file_no_more(
    roots: tuple[Path, Path],
) -> None:
    """Serving, bundles and cards read a trial's configuration back: the checkpoint it
    started from may be gone since (its weights are the trial's own)."""
    data, _ = roots
    save_file({"w": torch.zeros(2)}, str(data / "start.safetensors"))
    raw = flat_config({"model": "cnn", "pretrained": "start.safetensors"}).model_dump(mode="json")
    (data / "start.safetensors").unlink()

    assert stored_config(raw).model.options["pretrained"] == "start.safetensors"
    with pytest.raises(ValidationError, match="not found"):
        TrialConfig.model_validate(raw)  # a new trial still needs it


def _safetensors_without_tensors() -> bytes:
    header = b'{"__metadata__":{"a":"b"}}'
    return len(header).to_bytes(8, "little") + header


def test_pickled_objects_are_refused_at_submit_and_load_in_one_line(
    roots: tuple[Path, Path],
) -> None:
    """Found by a tester: a whole model saved with torch.save(model) passed validate, then
    failed every trial with the first line of torch's message (terminal styles in it, and
    options this service never takes)."""
    data, _ = roots
    torch.save({"model": nn.Linear(2, 2)}, data / "module.pt")  # a whole module: needs pickle
    expected = (
        "cannot read checkpoint 'module.pt': it holds pickled Python objects "
        "(torch.nn.modules.linear.Linear), not only tensors (a whole model saved with "
        "torch.save(model)?), which are never unpickled here: save model.state_dict() "
        "instead, or convert it to safetensors"
    )
    for read in (check_pretrained, load_checkpoint):
        with strict_input(), pytest.raises(CheckpointError) as refused:
            read("module.pt")
        assert str(refused.value) == expected
    # Outside a submit (a worker reading its trial's configuration) only the file's start
    # is read: the trial's own load refuses it as above.
    assert check_pretrained("module.pt") == "module.pt"


def test_a_damaged_pickle_is_not_called_a_whole_model(roots: tuple[Path, Path]) -> None:
    """The reviewer's catch: one byte changed in a state dict's pickle read as "it holds
    pickled Python objects (a whole model ...)"."""
    data, _ = roots
    torch.save({"w": torch.zeros(2)}, data / "good.pt")
    with zipfile.ZipFile(data / "good.pt") as source:
        entries = {info.filename: source.read(info) for info in source.infolist()}
    [pickled] = [name for name in entries if name.endswith("data.pkl")]
    entries[pickled] = entries[pickled][:2] + b"\xfe" + entries[pickled][3:]
    with zipfile.ZipFile(data / "damaged.pt", "w") as target:
        for name, content in entries.items():
            target.writestr(name, content)

    with strict_input(), pytest.raises(CheckpointError) as refused:
        check_pretrained("damaged.pt")

    message = str(refused.value)
    assert message.startswith("cannot read checkpoint 'damaged.pt': ")
    assert message.endswith("(the file may be damaged)") and "whole model" not in message


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
    assert report.head == ["1.0.weight", "1.0.bias"] and not report.skipped
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

    with pytest.raises(CheckpointError, match=r"matches none of the model's \d+ backbone weights"):
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


@pytest.mark.parametrize("precise_bn", [0, 256])
def test_a_frozen_backbone_keeps_its_weights_but_not_its_batch_norm_statistics(
    precise_bn: int,
) -> None:
    """What the README says of ``freeze: backbone``: freezing stops gradients, and the
    running statistics follow the training data (recomputed too, under ``precise_bn``)."""
    data = load_dataset("digits")
    values = {"epochs": 1, "width": 4, "depth": 1, "batch_size": 64, "freeze": "backbone"}
    config = flat_config({**values, "precise_bn": precise_bn})
    torch.manual_seed(config.seed)
    initial = build_model(
        config.model.name, config.model.options, data.input_shape, data.num_classes
    ).state_dict()
    trained = train(config, data=data).state_dict
    backbone = [name for name in initial if name.startswith("0.")]
    moved = {name for name in backbone if not torch.equal(trained[name], initial[name])}
    assert moved == {"0.0.1.running_mean", "0.0.1.running_var", "0.0.1.num_batches_tracked"}


@pytest.mark.parametrize("precise_bn", [0, 256])
def test_freeze_bn_stats_keeps_a_frozen_backbone_whole(precise_bn: int) -> None:
    """``freeze_bn_stats``: the frozen stages' batch norms stay in inference mode, so
    nothing of the backbone moves, running statistics included (``precise_bn`` too)."""
    data = load_dataset("digits")
    values = {"epochs": 1, "width": 4, "depth": 2, "batch_size": 64, "freeze": "first_k"}
    config = flat_config(
        {**values, "freeze_k": 1, "freeze_bn_stats": True, "precise_bn": precise_bn}
    )
    torch.manual_seed(config.seed)
    initial = build_model(
        config.model.name, config.model.options, data.input_shape, data.num_classes
    ).state_dict()

    trained = train(config, data=data).state_dict

    moved = {name for name in initial if not torch.equal(trained[name], initial[name])}
    first_stage = {name for name in initial if name.startswith("0.0.")}
    assert first_stage and not moved & first_stage
    assert {"0.1.1.running_mean", "0.1.0.weight"} <= moved  # the stage that trains


def test_freeze_bn_stats_applies_only_where_something_is_frozen() -> None:
    with pytest.raises(SpecError, match="'freeze_bn_stats' applies only where freeze is"):
        validate_spec({"name": "x", "fixed": {"freeze_bn_stats": True}})


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


@pytest.mark.parametrize("name", MODELS.names())
def test_the_head_is_never_loaded_even_when_its_shape_matches(name: str) -> None:
    """Same classes on both sides: the head's shapes match, and it once came from the
    checkpoint."""
    shape = (3, 1, 16, 16) if name in {"frame_rnn", "frame_pool"} else (1, 16, 16)
    torch.manual_seed(0)
    source = build_model(name, TINY.get(name, {}), shape, 5)
    torch.manual_seed(1)
    target = build_model(name, TINY.get(name, {}), shape, 5)
    fresh = {f"1.{key}": value.clone() for key, value in target[1].state_dict().items()}

    report = load_pretrained(target, source.state_dict())

    assert report.head == list(fresh) and fresh
    after = target.state_dict()
    assert all(torch.equal(after[key], value) for key, value in fresh.items())
    assert report.loaded and not report.skipped and not report.adapted
    assert all(torch.equal(after[key], source.state_dict()[key]) for key in report.loaded)


def test_the_cnn_example_checkpoint_leaves_the_head_new(roots: tuple[Path, Path]) -> None:
    data, _ = roots
    source = cnn(1, 10)
    save_file(source.state_dict(), str(data / "shapes.safetensors"))
    options = {"width": 4, "depth": 3, "pretrained": "shapes.safetensors"}
    model = build_model("cnn", options, (1, 16, 16), 10)
    assert torch.equal(model[0][0][0].weight, source[0][0][0].weight)
    assert not torch.equal(model[1][0].weight, source[1][0].weight)


def test_another_width_is_refused_naming_both_shapes(roots: tuple[Path, Path]) -> None:
    """Only 0-dim ``num_batches_tracked`` and the head's bias matched, which counted as a
    load: the trial trained from scratch."""
    data, _ = roots
    save_file(cnn(1, 10).state_dict(), str(data / "w4.safetensors"))
    options = {"width": 8, "depth": 3, "pretrained": "w4.safetensors"}
    with pytest.raises(CheckpointError) as caught:
        build_model("cnn", options, (1, 16, 16), 10)
    message = str(caught.value)
    assert "'w4.safetensors' matches none of the model's 15 backbone weights" in message
    assert "its keys: 0.0.0.weight" in message and "the model's: 0.0.0.weight" in message
    assert "0.0.0.weight is (4, 1, 3, 3) there, (8, 1, 3, 3) here" in message


def test_a_partial_load_is_reported(roots: tuple[Path, Path]) -> None:
    data, _ = roots
    shallow = build_model("cnn", {"width": 4, "depth": 2}, (3, 16, 16), 10)
    save_file(shallow.state_dict(), str(data / "shallow.safetensors"))
    deep = build_model("cnn", {"width": 4, "depth": 3}, (1, 16, 16), 4)

    report = load_pretrained(
        deep, load_checkpoint("shallow.safetensors"), source="shallow.safetensors"
    )

    assert (len(report.loaded), len(report.adapted), len(report.skipped)) == (9, 1, 5)
    assert report.summary() == (
        "loaded 10 of 15 backbone tensors from shallow.safetensors (1 with its input "
        "channels adapted; skipped: 0.2.0.weight, 0.2.1.weight, 0.2.1.bias and 2 more)"
    )
    assert (
        LoadReport(loaded=["a"], source="x.pt").summary()
        == "loaded 1 of 1 backbone tensors from x.pt"
    )


def _digits_64() -> ImageData:
    """64 training and 32 validation images of digits: a run in a fraction of a second."""
    full = load_dataset("digits")
    return ImageData(
        full.train_x[:64],
        full.train_y[:64],
        full.val_x[:32],
        full.val_y[:32],
        full.classes,
        full.mean,
        full.std,
        "digits-64",
    )


def test_the_load_report_is_a_trial_note(roots: tuple[Path, Path]) -> None:
    data, _ = roots
    save_file(
        build_model("cnn", {"width": 4, "depth": 1}, (1, 8, 8), 10).state_dict(),
        str(data / "c.safetensors"),
    )
    small = _digits_64()
    config = flat_config({"epochs": 1, "width": 4, "depth": 2, "pretrained": "c.safetensors"})
    result = train(config, data=small)
    assert result.notes["pretrained"] == (
        "loaded 5 of 10 backbone tensors from c.safetensors "
        "(skipped: 0.1.0.weight, 0.1.1.weight, 0.1.1.bias and 2 more)"
    )


def test_unreadable_checkpoints_say_why(roots: tuple[Path, Path]) -> None:
    data, _ = roots
    state = cnn(3, 10).state_dict()
    (data / "empty.bin").write_bytes(b"")
    torch.save(state, data / "pickled.safetensors")
    torch.save(state, data / "legacy.safetensors", _use_new_zipfile_serialization=False)
    save_file(state, str(data / "safe.pt"))
    (data / "text.safetensors").write_bytes(b"hello, I am no checkpoint at all")
    cases = {
        "empty.bin": r"'empty\.bin' is empty \(0 bytes\)",
        "pickled.safetensors": r"'pickled\.safetensors': not a safetensors file .*save.*\.pt",
        "legacy.safetensors": r"'legacy\.safetensors': not a safetensors file .*torch\.save",
        "safe.pt": r"'safe\.pt': .*a safetensors file: name it \.safetensors",
        "text.safetensors": r"'text\.safetensors': not a safetensors file$",
    }
    for name, message in cases.items():
        with pytest.raises(CheckpointError, match=message):
            load_checkpoint(name)


def test_a_freeze_k_above_the_model_s_stages_freezes_them_all_and_says_so() -> None:
    # Found by exploratory testing: freeze_k searched beside depth failed every trial whose
    # k exceeded its depth (an error counted towards max_failed).
    small = _digits_64()
    values = {"epochs": 1, "width": 4, "depth": 2, "freeze": "first_k", "freeze_k": 3}
    result = train(flat_config(values), data=small)
    assert result.notes["freeze_k"] == "3 is more than the model's 2 stages: froze all 2"
    within = train(flat_config({**values, "freeze_k": 2}), data=small)
    assert "freeze_k" not in within.notes
    # Both froze every stage: the same seed trains the same head to the same scores.
    scores = [{k: v for k, v in h.items() if "latency" not in k} for h in result.history]
    assert scores == [{k: v for k, v in h.items() if "latency" not in k} for h in within.history]


@pytest.mark.parametrize("mode", ["backbone", "first_k"])
def test_freezing_without_pretrained_weights_says_the_frozen_weights_are_random(mode: str) -> None:
    model = build_model("cnn", {"depth": 2, "width": 4}, (1, 8, 8), 3)
    notes = apply_transfer(model, TransferOptions(freeze=mode))
    assert notes == {
        "freeze": f"freeze: {mode} without pretrained weights: the frozen stages keep their "
        "random initial weights"
    }
    assert apply_transfer(model, TransferOptions(freeze="none")) == {}
