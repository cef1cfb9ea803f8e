"""The example-data command: digits as an image folder (optionally imbalanced), RGB shapes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from automl.data import load_dataset
from automl.examples import MINORITY_CLASSES, main


def count_images(folder: Path) -> dict[str, int]:
    return {d.name: len(list(d.glob("*.png"))) for d in sorted(folder.iterdir())}


def test_digits_folder_loads_with_its_own_splits(data_root: Path, capsys) -> None:
    assert main(["digits-folder", str(data_root / "digits")]) == 0
    assert "wrote" in capsys.readouterr().out
    counts = {
        split: count_images(data_root / "digits" / split) for split in ("train", "val", "test")
    }
    assert sum(sum(c.values()) for c in counts.values()) == 1797
    assert sum(counts["test"].values()) == pytest.approx(1797 * 0.2, abs=2)
    options = {
        "path": "digits/train",
        "val_path": "digits/val",
        "test_path": "digits/test",
        "size": 8,
        "channels": "grayscale",
    }
    data = load_dataset("image_folder", options)
    assert data.classes == tuple(str(i) for i in range(10))
    assert data.train_x.shape[1:] == (1, 8, 8) and data.has_test
    digits = load_dataset("digits")
    assert set(data.train_x.unique().tolist()) <= set(digits.train_x.unique().tolist())


def test_imbalanced_digits_cut_three_classes_and_balance_test(data_root: Path) -> None:
    assert main(["digits-folder", str(data_root / "imb"), "--imbalanced"]) == 0
    train = count_images(data_root / "imb" / "train")
    test = count_images(data_root / "imb" / "test")
    majority = min(n for name, n in train.items() if int(name) not in MINORITY_CLASSES)
    for cls in MINORITY_CLASSES:
        assert train[str(cls)] <= 0.12 * majority
    assert len(set(test.values())) == 1  # balanced
    assert len(set(count_images(data_root / "imb" / "val").values())) > 1  # left as split


def test_rgb_folder_and_refusing_a_non_empty_destination(data_root: Path, capsys) -> None:
    dest = data_root / "shapes"
    assert (
        main(["rgb-folder", str(dest), "--per-class", "3", "--classes", "4", "--size", "16"]) == 0
    )
    assert count_images(dest) == {"circle": 3, "cross": 3, "square": 3, "triangle": 3}
    data = load_dataset("image_folder", {"path": "shapes", "size": 16, "val_fraction": 0.34})
    assert data.train_x.shape[1:] == (3, 16, 16)
    assert torch.all(data.std > 0)
    assert main(["rgb-folder", str(dest)]) == 2
    assert "exists and is not an empty folder" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["rgb-folder", "x", "--per-class", "-5"], "-5 is out of range: images per class"),
        (["rgb-folder", "x", "--size", "0"], "0 is out of range: sizes are 8 to 1024"),
        (["moving-shapes", "x", "--clips", "0"], "0 is out of range: clip counts"),
        (["moving-shapes", "x", "--frames", "0"], "0 is out of range: frame counts"),
        (["digits-folder", "x", "--seed", "-1"], "-1 is out of range: seeds"),
    ],
)
def test_bad_arguments_are_one_line_exit_2(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [argv[0], str(tmp_path / argv[1]), *argv[2:]]
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_a_file_as_destination_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "spec.yaml").write_text("name: x\n")
    assert main(["digits-folder", str(tmp_path / "spec.yaml")]) == 2
    assert "exists and is not an empty folder" in capsys.readouterr().err
    assert (tmp_path / "spec.yaml").read_text() == "name: x\n"


def test_an_unwritable_destination_is_one_line_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "file").write_text("")
    assert main(["rgb-folder", str(tmp_path / "file" / "below"), "--per-class", "1"]) == 1
    assert capsys.readouterr().err.startswith(f"error: cannot write {tmp_path / 'file' / 'below'}")
