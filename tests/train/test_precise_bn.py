"""``precise_bn``: batch-norm statistics recomputed with the current weights before scoring."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
from torch import nn

from automl.data import ImageData, load_dataset
from automl.train import train
from automl.train.accel import Accelerator
from automl.train.evaluation import restore_model
from automl.train.hyperparameters import flat_config
from automl.train.precise_bn import evenly_spaced, recompute_batch_norm

CPU = Accelerator(torch.device("cpu"))


def unit(images: torch.Tensor) -> torch.Tensor:
    return images.float() / 255


def stored_images(count: int, *shape: int) -> torch.Tensor:
    return torch.randint(0, 256, (count, *shape), dtype=torch.uint8, generator=torch.Generator())


def conv_bn() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten())


def test_the_statistics_are_the_chosen_images_under_the_current_weights() -> None:
    model, images = conv_bn(), stored_images(50, 3, 6, 6)
    bn = model[1]
    bn.num_batches_tracked.fill_(7)
    assert recompute_batch_norm(model, images, 20, unit, CPU)
    features = model[0](unit(images[evenly_spaced(50, 20, images.device)]))
    assert torch.allclose(bn.running_mean, features.mean((0, 2, 3)), atol=1e-6)
    assert torch.allclose(bn.running_var, features.var((0, 2, 3)), atol=1e-6)
    assert bn.momentum == 0.1 and int(bn.num_batches_tracked) == 7 and model.training


@pytest.mark.parametrize("old", [5.0, math.inf, math.nan])  # non-finite: an fp16 overflow
def test_recomputing_gives_the_same_statistics_whatever_they_were(old: float) -> None:
    model, images = conv_bn(), stored_images(30, 3, 6, 6)
    recompute_batch_norm(model, images, 16, unit, CPU)
    first = (model[1].running_mean.clone(), model[1].running_var.clone())
    model[1].running_mean.fill_(old)
    model[1].running_var.fill_(old)
    model[1].num_batches_tracked.fill_(7)
    recompute_batch_norm(model, images, 16, unit, CPU)
    assert torch.allclose(model[1].running_mean, first[0], atol=1e-6)
    assert torch.allclose(model[1].running_var, first[1], atol=1e-6)


def test_dropout_is_off_and_interleaved_chunks_are_averaged() -> None:
    model = nn.Sequential(nn.Dropout(0.9), nn.BatchNorm1d(5))
    images = stored_images(10, 5)
    assert recompute_batch_norm(model, images, 10, unit, CPU, chunk=4)
    pieces = [unit(images[start::3]) for start in range(3)]  # 4, 3 and 3 images
    expected_mean = torch.stack([piece.mean(0) for piece in pieces]).mean(0)
    expected_var = torch.stack([piece.var(0) for piece in pieces]).mean(0)
    assert torch.allclose(model[1].running_mean, expected_mean, atol=1e-6)
    assert torch.allclose(model[1].running_var, expected_var, atol=1e-6)
    assert model.training and model[0].training  # every module back in its mode


def test_chunks_of_a_split_sorted_by_class_each_see_every_class() -> None:
    # Folders list their images class by class: contiguous chunks would each see a few
    # classes, and averaging their variances would miss the spread between classes.
    images = torch.cat([torch.full((1024, 1), 20), torch.full((1024, 1), 220)]).to(torch.uint8)
    model = nn.Sequential(nn.BatchNorm1d(1))
    assert recompute_batch_norm(model, images, 2048, unit, CPU, chunk=1024)
    pooled = unit(images).var()
    assert torch.allclose(model[0].running_var, pooled.reshape(1), rtol=1e-3)


def test_a_one_image_tail_is_never_passed_alone() -> None:
    model = nn.Sequential(nn.BatchNorm1d(5))  # a batch of one would raise in train mode
    assert recompute_batch_norm(model, stored_images(5, 5), 5, unit, CPU, chunk=4)


def test_a_batch_norm_kept_in_eval_mode_keeps_its_statistics() -> None:
    model = conv_bn()
    model[1].running_mean.fill_(0.5)
    model[1].eval()  # frozen batch norm: it normalizes with these statistics in training too
    assert not recompute_batch_norm(model, stored_images(8, 3, 6, 6), 8, unit, CPU)
    assert torch.equal(model[1].running_mean, torch.full((4,), 0.5))
    assert model.training and not model[1].training


def test_a_layer_without_a_batch_counter_is_recomputed() -> None:
    model = conv_bn()
    model[1].num_batches_tracked = None
    assert recompute_batch_norm(model, stored_images(8, 3, 6, 6), 8, unit, CPU)
    assert model[1].num_batches_tracked is None and model[1].momentum == 0.1


@pytest.mark.parametrize(
    ("model", "count"),
    [
        (nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)), 0),  # turned off
        (nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)), 1),  # too few to normalize
        (nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, track_running_stats=False)), 8),
        (nn.Sequential(nn.Conv2d(3, 4, 3), nn.GroupNorm(2, 4)), 8),
    ],
)
def test_nothing_is_recomputed_without_tracked_statistics_or_images(
    model: nn.Module, count: int
) -> None:
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    assert not recompute_batch_norm(model, stored_images(8, 3, 6, 6), count, unit, CPU)
    after = model.state_dict()
    assert all(torch.equal(before[name], after[name]) for name in before)


def test_evenly_spaced_covers_the_split_and_never_repeats() -> None:
    cpu = torch.device("cpu")
    assert evenly_spaced(10, 4, cpu).tolist() == [0, 3, 6, 9]
    assert evenly_spaced(3, 256, cpu).tolist() == [0, 1, 2]
    spread = evenly_spaced(1000, 300, cpu)
    assert spread[0] == 0 and spread[-1] == 999 and len(spread.unique()) == 300


@pytest.fixture(scope="module")
def digits() -> ImageData:
    full = load_dataset("digits")
    return replace(full, train_x=full.train_x[:400], train_y=full.train_y[:400])


def test_training_is_unchanged_and_the_kept_statistics_are_precise(digits: ImageData) -> None:
    values = {"epochs": 2, "width": 8, "batch_size": 64, "lr": 0.05, "optimizer": "sgd"}
    lagging = train(flat_config({**values, "precise_bn": 0, "restore_best": False}), data=digits)
    config = flat_config({**values, "restore_best": False})
    precise = train(config, data=digits)
    kept = restore_model(config, precise.state_dict, digits.input_shape, digits.num_classes)
    kept.train()  # as training leaves it: the layers whose statistics training updates
    for name, _ in kept.named_parameters():  # the same updates: only evaluation's buffers differ
        assert torch.equal(lagging.state_dict[name], precise.state_dict[name]), name
    assert [e["train_loss"] for e in lagging.history] == [e["train_loss"] for e in precise.history]
    assert lagging.history[-1]["accuracy"] != precise.history[-1]["accuracy"]
    means = [name for name in precise.state_dict if name.endswith("running_mean")]
    assert means and not torch.equal(lagging.state_dict[means[0]], precise.state_dict[means[0]])
    assert recompute_batch_norm(kept, digits.train_x, config.precise_bn, digits.normalize, CPU)
    for name in means:  # the kept statistics are already those of the final weights
        assert torch.allclose(kept.state_dict()[name], precise.state_dict[name], atol=1e-5), name
