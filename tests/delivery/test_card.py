"""The model card's intended use and limits, from a per-class report."""

from __future__ import annotations

from typing import Any

import pytest

from automl.delivery.card import intended_use, library_versions, preprocessing_steps
from automl.models import MODELS
from automl.models.cnn import CnnOptions
from automl.registry import Entry
from automl.train.hyperparameters import flat_config

MODEL_IN = {"channels": 1, "height": 8, "width": 8, "fit": "crop"}


def row(name: str, recall: float, support: int) -> dict[str, Any]:
    return {"class": name, "precision": recall, "recall": recall, "f1": recall, "support": support}


def test_classes_without_test_images_are_listed_as_uncertain() -> None:
    """A class whose only image stayed in training has support 0: its recall of 0.0 is no
    score, and the card must not leave it out of the classes it cannot vouch for."""
    per_class = [row("a", 0.9, 50), row("b", 0.5, 4), row("c", 0.0, 0)]
    card = intended_use(["a", "b", "c"], MODEL_IN, {"source": "x"}, per_class, split="test")
    [line] = [line for line in card["limits"] if "uncertain" in line]
    # Once "b, c (no test images)": read as if b had none either.
    assert line == (
        "Classes with fewer than 20 test images (their count) have uncertain scores: b (4), "
        "c (no test images)."
    )
    assert [r["class"] for r in card["recall"]["by_class"]] == ["b", "a"]  # 0 support: no recall


def test_the_dataset_is_named_by_its_folder_where_it_has_one() -> None:
    """Found by a tester: "trained ... on dataset 'image_folder'" named the source only."""
    per_class = [row("a", 0.9, 50), row("b", 0.5, 20)]
    folder = {"source": "image_folder", "options": {"path": "pets", "size": 32}}
    for dataset, named in [
        (folder, "on image_folder 'pets';"),
        ({"source": "digits", "options": {}}, "on dataset 'digits';"),
        (None, "on its training data;"),
    ]:
        card = intended_use(["a", "b"], MODEL_IN, dataset, per_class, split="test")
        assert named in card["limits"][0], card["limits"][0]


def test_no_class_is_uncertain_with_enough_images() -> None:
    per_class = [row("a", 0.9, 50), row("b", 0.5, 20)]
    card = intended_use(["a", "b"], MODEL_IN, None, per_class, split="validation")
    assert not any("uncertain" in line for line in card["limits"])


def test_scores_measured_under_autocast_say_the_fp32_exports_differ() -> None:
    per_class = [row("a", 0.9, 50), row("b", 0.8, 50)]
    plain = intended_use(["a", "b"], MODEL_IN, None, per_class, split="test")
    reduced = intended_use(["a", "b"], MODEL_IN, None, per_class, split="test", autocast="bf16")

    assert not any("autocast" in line for line in plain["limits"])
    [line] = [line for line in reduced["limits"] if "autocast" in line]
    assert line.startswith("Its scores were measured in bf16 (autocast)") and "fp32" in line


@pytest.mark.parametrize(
    ("autocast", "precision", "served"),
    [
        ("bf16", "bf16", "as the service serves it;"),  # bf16 asked for: on any device
        ("bf16", "auto", "as the service serves it on such a GPU (in fp32 on a CPU);"),
        ("fp16", "auto", "as the service serves it on such a GPU (in fp32 on a CPU);"),
    ],
)
def test_the_autocast_line_says_where_the_service_serves_it_so(
    autocast: str, precision: str, served: str
) -> None:
    """Found by review: a GPU run under ``auto`` measured in bf16 said "as the service
    serves it", while an API on a CPU runs ``auto`` in fp32."""
    per_class = [row("a", 0.9, 50), row("b", 0.8, 50)]
    card = intended_use(
        ["a", "b"], MODEL_IN, None, per_class, "test", autocast=autocast, precision=precision
    )
    [line] = [line for line in card["limits"] if "autocast" in line]
    assert f"in {autocast} (autocast), {served}" in line


def recall_line(card: dict[str, Any]) -> str:
    [line] = [line for line in card["limits"] if line.startswith("Per-class recall")]
    return line


def test_classes_tied_for_the_highest_recall_are_all_named() -> None:
    """Four classes at recall 1.0 once showed as "1.000 (class '7')", the last of them."""
    recalls = {"0": 1.0, "1": 0.95, "2": 0.97, "3": 1.0, "4": 1.0, "7": 1.0, "8": 0.914}
    per_class = [row(name, recall, 50) for name, recall in recalls.items()]
    card = intended_use(list(recalls), MODEL_IN, None, per_class, split="test")

    assert recall_line(card).startswith(
        "Per-class recall on the test split ranges from 0.914 (class '8') to 1.000 "
        "(classes '0', '3', '4', '7'), a gap of 0.086:"
    )
    gaps = card["recall"]
    assert gaps["highest"]["class"] == "0"  # one class, as before: the first tied one
    assert gaps["highest_classes"] == ["0", "3", "4", "7"]
    assert gaps["lowest"]["class"] == "8" and gaps["lowest_classes"] == ["8"]


def test_classes_tied_for_the_lowest_recall_follow_the_class_order() -> None:
    """Ties list classes in the model's class order, not by name ('10' sorts before '2')."""
    per_class = [row("2", 0.5, 50), row("10", 0.5, 50), row("3", 0.9, 50)]
    card = intended_use(["2", "10", "3"], MODEL_IN, None, per_class, split="test")

    assert "from 0.500 (classes '2', '10') to 0.900 (class '3')" in recall_line(card)
    assert card["recall"]["lowest"]["class"] == "2"
    assert card["recall"]["lowest_classes"] == ["2", "10"]


def test_many_tied_classes_are_counted() -> None:
    names = [f"c{index}" for index in range(12)]
    per_class = [row(name, 1.0, 50) for name in names] + [row("weak", 0.8, 50)]
    card = intended_use([*names, "weak"], MODEL_IN, None, per_class, split="validation")

    assert "from 0.800 (class 'weak') to 1.000 (12 classes), a gap of 0.200" in recall_line(card)
    assert card["recall"]["highest_classes"] == names


def test_equal_recall_for_every_class_claims_no_range() -> None:
    per_class = [row("a", 1.0, 50), row("b", 1.0, 50), row("c", 0.0, 0)]
    card = intended_use(["a", "b", "c"], MODEL_IN, None, per_class, split="test")

    assert recall_line(card) == (
        "Per-class recall on the test split is 1.000 for each of the 2 classes with test "
        "images: no class was missed more often than another on these images."
    )
    gaps = card["recall"]
    assert gaps["gap"] == 0 and gaps["lowest_classes"] == gaps["highest_classes"] == ["a", "b"]


@pytest.mark.parametrize(
    ("fit", "step"),
    [
        ("crop", "scale to cover 16x12 (16 wide, 12 high) (bilinear) and crop the center"),
        ("pad", "scale to fit inside 16x12 (16 wide, 12 high) (bilinear) and pad with black"),
    ],
)
def test_the_preprocessing_names_the_size_width_first_as_image_sizes_are(
    fit: str, step: str
) -> None:
    """Found by a tester: ``size: [12, 16]`` (height, width) read "fit inside 12x16", while
    every message names an image's size width first ("is 70000x1 pixels")."""
    model_in = {"height": 12, "width": 16, "channels": 3, "fit": fit}
    assert f"if the size differs: {step}" in preprocessing_steps(model_in)


def test_the_libraries_name_the_plugin_packages_a_trial_used(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Found by a plugin author: a card of a plugin's model named automl's libraries only,
    not the plugin the weights need to be built again."""
    cnn = MODELS.get("cnn")
    entry = Entry("acme_net", cnn.factory, CnnOptions, "A plugin's net.", "pytest")
    monkeypatch.setattr(MODELS, "_entries", {**MODELS._entries, "acme_net": entry})

    versions = library_versions(flat_config({"model": "acme_net"}))

    assert versions["pytest"] == pytest.__version__
    assert versions["torch"] and "pytest" not in library_versions(flat_config({}))
    gone = Entry("gone_net", cnn.factory, CnnOptions, "A plugin's net.", "no-such-package")
    monkeypatch.setattr(MODELS, "_entries", {**MODELS._entries, "gone_net": gone})
    assert library_versions(flat_config({"model": "gone_net"}))["no-such-package"] == "unknown"
