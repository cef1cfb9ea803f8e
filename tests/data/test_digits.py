"""Tests of the digits dataset, stratified splits and the in-process dataset cache."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from automl.data import ImageData, load_dataset, stratified_split
from automl.registry import UnknownNameError

N_DIGITS = 1797


@pytest.fixture(scope="module")
def digits() -> ImageData:
    return load_dataset("digits")


def class_counts(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    return torch.bincount(labels, minlength=num_classes)


def test_digits_shapes_and_dtypes(digits: ImageData) -> None:
    n_train, n_val = len(digits.train_y), len(digits.val_y)
    assert n_train + n_val == N_DIGITS
    assert digits.train_x.shape == (n_train, 1, 8, 8)
    assert digits.val_x.shape == (n_val, 1, 8, 8)
    assert digits.train_x.dtype == torch.uint8
    assert digits.train_y.dtype == torch.int64
    assert digits.val_y.shape == (n_val,)
    assert digits.input_shape == (1, 8, 8)


def test_digits_classes(digits: ImageData) -> None:
    assert digits.classes == tuple(str(i) for i in range(10))
    assert digits.num_classes == 10
    assert set(digits.train_y.tolist()) == set(range(10))
    assert set(digits.val_y.tolist()) == set(range(10))


def test_digits_scaled_to_full_uint8_range(digits: ImageData) -> None:
    from sklearn.datasets import load_digits

    raw = torch.tensor(load_digits().images)
    values = set(torch.cat([digits.train_x.flatten(), digits.val_x.flatten()]).tolist())
    assert (
        values
        == {round(v * 255 / 16) for v in range(17)}
        == set((raw * 255 / 16).round().int().unique().tolist())
    )
    assert digits.train_x.max() == 255 and digits.train_x.min() == 0


def test_digits_statistics_are_of_the_training_split(digits: ImageData) -> None:
    scaled = digits.train_x.double() / 255
    assert digits.mean.tolist() == pytest.approx([float(scaled.mean())], abs=1e-5)
    assert digits.std.tolist() == pytest.approx([float(scaled.std(unbiased=False))], abs=1e-5)
    normalized = digits.normalize(digits.train_x)
    assert normalized.dtype == torch.float32
    assert float(normalized.mean()) == pytest.approx(0.0, abs=1e-4)
    assert float(normalized.std(unbiased=False)) == pytest.approx(1.0, abs=1e-4)
    assert not digits.has_test


def test_digits_options_change_split() -> None:
    data = load_dataset("digits", {"val_fraction": 0.5, "seed": 1})
    assert abs(len(data.val_y) - N_DIGITS / 2) <= 10
    other = load_dataset("digits", {"val_fraction": 0.5, "seed": 2})
    assert not torch.equal(data.val_x, other.val_x)


# --- stratified_split ----------------------------------------------------------------------


def imbalanced_labels() -> torch.Tensor:
    counts = [100, 50, 20, 10, 5]
    return torch.cat([torch.full((n,), cls, dtype=torch.int64) for cls, n in enumerate(counts)])


def test_split_keeps_class_proportions() -> None:
    labels = imbalanced_labels()
    train_idx, val_idx = stratified_split(labels, 0.2, seed=0)
    val_counts = class_counts(labels[val_idx], 5).tolist()
    train_counts = class_counts(labels[train_idx], 5).tolist()
    assert val_counts == [20, 10, 4, 2, 1]
    assert train_counts == [80, 40, 16, 8, 4]


def test_split_is_disjoint_and_complete() -> None:
    labels = imbalanced_labels()
    train_idx, val_idx = stratified_split(labels, 0.3, seed=4)
    train, val = set(train_idx.tolist()), set(val_idx.tolist())
    assert not train & val
    assert train | val == set(range(len(labels)))
    assert len(train_idx) == len(train) and len(val_idx) == len(val)


def test_split_differs_across_seeds() -> None:
    labels = imbalanced_labels()
    _, val_a = stratified_split(labels, 0.2, seed=0)
    _, val_b = stratified_split(labels, 0.2, seed=1)
    assert not torch.equal(val_a, val_b)
    assert class_counts(labels[val_a], 5).tolist() == class_counts(labels[val_b], 5).tolist()


def test_split_keeps_one_of_each_side_for_small_classes() -> None:
    labels = torch.tensor([0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2])
    for fraction in (0.01, 0.5, 0.99):
        for seed in range(3):
            train_idx, val_idx = stratified_split(labels, fraction, seed=seed)
            train = class_counts(labels[train_idx], 3).tolist()
            val = class_counts(labels[val_idx], 3).tolist()
            # A class of two gives one sample to each side; a single sample stays in training.
            assert (train[0], val[0]) == (1, 1)
            assert train[1] >= 1 and val[1] >= 1
            assert (train[2], val[2]) == (1, 0)
            assert sorted(train_idx.tolist() + val_idx.tolist()) == list(range(len(labels)))


# --- load_dataset --------------------------------------------------------------------------


def test_load_dataset_caches() -> None:
    assert load_dataset("digits") is load_dataset("digits")
    options = {"val_fraction": 0.25, "seed": 9}
    cached = load_dataset("digits", options)
    assert load_dataset("digits", dict(reversed(list(options.items())))) is cached
    assert load_dataset("digits", {"val_fraction": 0.25, "seed": 10}) is not cached


def test_load_dataset_rejects_unknown_source() -> None:
    with pytest.raises(UnknownNameError, match=r"unknown dataset 'mnst'.*did you mean 'mnist'"):
        load_dataset("mnst")


@pytest.mark.parametrize(
    "options",
    [{"val_fraction": 0.0}, {"val_fraction": 1.0}, {"val_frac": 0.1}, {"seed": "s"}],
)
def test_load_dataset_rejects_invalid_options(options: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        load_dataset("digits", options)


def test_digits_test_fraction_holds_out_a_stratified_test_split(digits: ImageData) -> None:
    data = load_dataset("digits", {"test_fraction": 0.2})
    assert data.has_test and data.test_x is not None and data.test_y is not None
    n_train, n_val, n_test = len(data.train_y), len(data.val_y), len(data.test_y)
    assert n_train + n_val + n_test == N_DIGITS
    assert abs(n_test - N_DIGITS * 0.2) <= 5 and abs(n_val - N_DIGITS * 0.2) <= 5
    assert data.test_x.shape == (n_test, 1, 8, 8)
    total = class_counts(torch.cat([data.train_y, data.val_y, data.test_y]), 10)
    test = class_counts(data.test_y, 10)
    assert all(abs(int(test[c]) - int(total[c]) * 0.2) <= 1 for c in range(10))
    assert data.fingerprint != digits.fingerprint


def test_digits_without_test_split_keeps_its_split_and_fingerprint(digits: ImageData) -> None:
    import hashlib
    import json

    legacy = json.dumps(["digits", {"val_fraction": 0.2, "seed": 0}], sort_keys=True)
    assert digits.fingerprint == hashlib.sha256(legacy.encode()).hexdigest()
    explicit = load_dataset("digits", {"test_fraction": 0.0})
    assert torch.equal(explicit.val_y, digits.val_y) and explicit.test_x is None
    with pytest.raises(ValidationError, match="must be below 1"):
        load_dataset("digits", {"val_fraction": 0.5, "test_fraction": 0.5})
