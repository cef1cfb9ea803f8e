"""The model card's intended use and limits, from a per-class report."""

from __future__ import annotations

from typing import Any

from automl.delivery.card import intended_use

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
