"""The image_folder and image_csv sources: layout, preprocessing, splits, statistics, errors."""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from automl.data import DatasetError, forget_loaded, load_dataset
from automl.data import folder as folder_module
from automl.data.folder import ImageFolderOptions, plan_image_folder
from automl.spec import SpecError, validate_spec
from tests.data.conftest import write_class_folder, write_image


def submit_errors(source: str, options: dict[str, object]) -> list[str]:
    """The ``path: message`` lines a spec with these dataset options gets."""
    try:
        validate_spec({"name": "x", "dataset": {"source": source, "options": options}})
    except SpecError as exc:
        return [str(error) for error in exc.errors]
    return []


def test_loads_class_folders(data_root: Path) -> None:
    write_class_folder(data_root / "pets", {"cat": 10, "dog": 10, "emu": 5})
    data = load_dataset("image_folder", {"path": "pets", "size": 4, "val_fraction": 0.2})
    assert data.classes == ("cat", "dog", "emu")
    assert data.train_x.dtype == torch.uint8 and data.train_y.dtype == torch.int64
    assert data.train_x.shape[1:] == (3, 4, 4) and data.input_shape == (3, 4, 4)
    assert len(data.train_y) + len(data.val_y) == 25
    assert torch.bincount(data.val_y).tolist() == [2, 2, 1]
    assert not data.has_test
    scaled = data.train_x.double() / 255
    expected_mean = scaled.mean(dim=(0, 2, 3))
    assert data.mean.tolist() == pytest.approx(expected_mean.tolist(), abs=1e-5)
    assert data.std.tolist() == pytest.approx(
        scaled.std(dim=(0, 2, 3), unbiased=False).tolist(), abs=1e-5
    )
    assert data.mean[0] > data.mean[2]  # class 0 (cat) is tinted red, more images than emu (blue)


def test_explicit_val_and_test_folders(data_root: Path) -> None:
    write_class_folder(data_root / "set" / "train", {"a": 6, "b": 4})
    write_class_folder(data_root / "set" / "val", {"a": 2, "b": 2}, seed=1)
    write_class_folder(data_root / "set" / "test", {"b": 3}, seed=2)
    options = {"path": "set/train", "val_path": "set/val", "test_path": "set/test", "size": 5}
    data = load_dataset("image_folder", options)
    assert (len(data.train_y), len(data.val_y), len(data.test_y)) == (10, 4, 3)
    assert data.has_test and data.test_x.shape == (3, 3, 5, 5)
    assert data.test_y.tolist() == [1, 1, 1]  # labels follow the training folder's classes


def test_test_fraction_splits_off_a_stratified_test_set(data_root: Path) -> None:
    write_class_folder(data_root / "pets", {"cat": 20, "dog": 10})
    data = load_dataset(
        "image_folder", {"path": "pets", "size": 2, "val_fraction": 0.2, "test_fraction": 0.2}
    )
    assert torch.bincount(data.test_y).tolist() == [4, 2]
    assert torch.bincount(data.val_y).tolist() == [4, 2]
    assert torch.bincount(data.train_y).tolist() == [12, 6]
    other = load_dataset(
        "image_folder",
        {"path": "pets", "size": 2, "val_fraction": 0.2, "test_fraction": 0.2, "seed": 1},
    )
    assert other.fingerprint != data.fingerprint
    assert not torch.equal(other.test_x, data.test_x)


def test_every_image_format_and_grayscale(data_root: Path) -> None:
    gray = np.full((6, 6), 200, np.uint8)
    for i, suffix in enumerate([".png", ".jpg", ".JPEG", ".webp", ".bmp"]):
        write_image(
            data_root / "fmt" / "x" / f"{i}{suffix}",
            gray,
            **({"lossless": True} if suffix == ".webp" else {}),
        )
        write_image(data_root / "fmt" / "y" / f"{i}{suffix}", gray // 4)
    (data_root / "fmt" / "x" / "notes.txt").write_text("ignored")
    data = load_dataset(
        "image_folder", {"path": "fmt", "size": 6, "channels": "grayscale", "val_fraction": 0.4}
    )
    assert data.train_x.shape[1:] == (1, 6, 6)
    assert len(data.train_y) + len(data.val_y) == 10
    x_images = torch.cat([data.train_x[data.train_y == 0], data.val_x[data.val_y == 0]])
    assert (x_images.int() - 200).abs().max() <= 3  # jpeg is lossy by a few levels


def test_crop_keeps_the_center_and_pad_adds_black_bars(data_root: Path) -> None:
    wide = np.zeros((4, 12, 3), np.uint8)
    wide[:, :4] = (255, 0, 0)
    wide[:, 4:8] = (0, 255, 0)
    wide[:, 8:] = (0, 0, 255)
    for name in ("a", "b"):
        for i in range(2):
            write_image(data_root / "wide" / name / f"{i}.png", wide)
    crop = load_dataset(
        "image_folder", {"path": "wide", "size": 4, "fit": "crop", "val_fraction": 0.5}
    )
    assert crop.train_x[0, :, 2, 2].tolist() == [0, 255, 0]
    assert crop.train_x[0, 1].min() == 255  # only the green middle is left
    pad = load_dataset(
        "image_folder", {"path": "wide", "size": [6, 12], "fit": "pad", "val_fraction": 0.5}
    )
    assert pad.train_x.shape[1:] == (3, 6, 12)
    assert (
        pad.train_x[0, :, 0].max() == 0 and pad.train_x[0, :, -1].max() == 0
    )  # bars top and bottom
    assert pad.train_x[0, :, 3, 0].tolist() == [255, 0, 0]


def test_a_missing_folder_says_what_was_likely_meant(
    data_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by a tester: "not found under the data root" alone, for the mistakes new
    users make (the root's own name in front, another case, no data root at all)."""
    write_class_folder(data_root / "mine", {"a": 2, "b": 2})
    prefix = "dataset.options.path: folder"
    where = "not found under the data root (AUTOML_DATA_ROOT; a spec's paths are relative to it)"
    assert submit_errors("image_folder", {"path": f"{data_root.name}/mine"}) == [
        f"{prefix} '{data_root.name}/mine' {where}; did you mean 'mine'?"
    ]
    assert submit_errors("image_folder", {"path": "Mine"}) == [
        f"{prefix} 'Mine' {where}; did you mean 'mine'?"
    ]
    assert submit_errors("image_folder", {"path": "other"}) == [f"{prefix} 'other' {where}"]
    write_class_folder(data_root / "Pets" / "train", {"a": 2, "b": 2})
    for written in ("pets/train", f"{data_root.name}/pets/Train"):  # a parent's case too
        assert submit_errors("image_folder", {"path": written}) == [
            f"{prefix} '{written}' {where}; did you mean 'Pets/train'?"
        ]
    outside = data_root.parent / f"{data_root.name}-outside"
    (outside / "secret").mkdir(parents=True)
    (data_root / "link").symlink_to(outside)
    assert submit_errors("image_folder", {"path": "Link/SECRET"}) == [  # nothing told of it
        f"{prefix} 'Link/SECRET' {where}"
    ]
    monkeypatch.setenv("AUTOML_DATA_ROOT", str(data_root / "nowhere"))
    assert submit_errors("image_folder", {"path": "mine"}) == [
        f"{prefix} 'mine' not found: the data root (AUTOML_DATA_ROOT) does not exist"
    ]


def test_submit_errors_for_bad_folders(data_root: Path) -> None:
    (data_root / "empty").mkdir()
    (data_root / "flat").mkdir()
    write_image(data_root / "flat" / "0.png", np.zeros((2, 2), np.uint8))
    write_class_folder(data_root / "holes", {"a": 2})
    (data_root / "holes" / "b").mkdir()
    (data_root / "holes" / "b" / "readme.txt").write_text("not an image")
    write_class_folder(data_root / "other", {"yak": 1, "zebra": 1})
    cases = {
        "missing": "dataset.options.path: folder 'missing' not found under the data root",
        "empty": "dataset.options.path: folder 'empty' has no class folders",
        "flat": "dataset.options.path: folder 'flat' has no class folders",
        "holes": "dataset.options.path: class 'b' has no images (bmp, jpeg, jpg, png, webp) in",
    }
    for path, message in cases.items():
        errors = submit_errors("image_folder", {"path": path})
        assert len(errors) == 1 and errors[0].startswith(message), errors
    assert submit_errors("image_folder", {"path": "other", "val_path": "holes"}) == [
        "dataset.options.val_path: class folder 'a' is not a class of path; valid classes: "
        "yak, zebra"
    ]
    assert submit_errors(
        "image_folder", {"path": "other", "val_fraction": 0.5, "test_fraction": 0.5}
    ) == ["dataset.options: val_fraction + test_fraction must be below 1"]
    assert submit_errors("image_folder", {}) == ["dataset.options.path: Field required"]


def test_a_class_folder_whose_accents_are_encoded_otherwise_is_named_as_such(
    data_root: Path,
) -> None:
    """Found by a tester: a validation folder copied from macOS (NFD names) was refused
    as "class folder 'Güns' is not a class of path; valid classes: Güns, ..."."""
    nfc, nfd = "G\u00fcns", "Gu\u0308ns"
    write_class_folder(data_root / "train", {nfc: 2, "cat": 2})
    write_class_folder(data_root / "val", {nfd: 1, "cat": 1})

    errors = submit_errors("image_folder", {"path": "train", "val_path": "val"})

    assert errors == [
        f"dataset.options.val_path: class folder {nfd!r} differs from path's class {nfc!r} "
        "only in how its accents are encoded ('Gu\\u0308ns' against 'G\\xfcns': Unicode "
        "NFD and NFC, as copies between macOS and other systems may write file names); "
        "rename one of the two folders"
    ]


def test_class_folders_that_differ_only_in_accent_encoding_or_end_spaces_are_refused(
    data_root: Path,
) -> None:
    """Found by a tester: 'café' written twice (NFC, NFD) became two classes, each printed
    'café' in every report and prediction; 'cat' and 'cat ' likewise."""
    nfc, nfd = "caf\u00e9", "cafe\u0301"
    write_class_folder(data_root / "accents", {nfc: 2, nfd: 2})
    write_class_folder(data_root / "spaces", {"cat": 2, "cat ": 2})

    assert submit_errors("image_folder", {"path": "accents"}) == [
        "dataset.options.path: folder 'accents': class folders 'cafe\\u0301' and "
        "'caf\\xe9' differ only in how their accents are encoded (Unicode NFC and NFD, as "
        "copies between macOS and other systems may write file names), so they would be "
        "two classes that read alike; rename one of the two"
    ]
    assert submit_errors("image_folder", {"path": "spaces"}) == [
        "dataset.options.path: folder 'spaces': class folders 'cat' and 'cat ' differ only "
        "in spaces at their ends, so they would be two classes that read alike; rename one "
        "of the two"
    ]
    # A study stored before the check still loads its data.
    assert load_dataset("image_folder", {"path": "spaces", "size": 4}).classes == ("cat", "cat ")


def test_the_metadata_folder_of_a_zip_made_on_macos_is_no_class(data_root: Path) -> None:
    """Found by a tester: unzipped, such a dataset was refused as "class '__MACOSX' has
    no images" (it holds ``._`` files only)."""
    write_class_folder(data_root / "pets", {"cat": 4, "dog": 4})
    metadata = data_root / "pets" / "__MACOSX" / "cat"
    metadata.mkdir(parents=True)
    (metadata / "._0.png").write_bytes(b"\x00\x05\x16\x07")

    assert submit_errors("image_folder", {"path": "pets"}) == []
    assert load_dataset("image_folder", {"path": "pets", "size": 4}).classes == ("cat", "dog")


def test_a_folder_of_split_folders_given_as_path_is_named_as_such(data_root: Path) -> None:
    """Found by a tester: ``path: messy`` (above train/, val/, test/) said only "class
    'test' has no images"."""
    for split in ("train", "val", "test"):
        write_class_folder(data_root / "messy" / split, {"cat": 2, "dog": 2})

    assert submit_errors("image_folder", {"path": "messy"}) == [
        "dataset.options.path: class 'test' has no images (bmp, jpeg, jpg, png, webp) in "
        "'messy'; test, train, val look like splits, each holding class folders: set path: "
        "messy/train and give the others as val_path and test_path"
    ]


def test_csv_labels_that_differ_only_in_accent_encoding_are_refused(data_root: Path) -> None:
    write_class_folder(data_root / "imgs", {"a": 4})
    rows = [
        f"imgs/a/{i}.png,{label}" for i, label in enumerate(["caf\u00e9"] * 2 + ["cafe\u0301"] * 2)
    ]
    (data_root / "labels.csv").write_text("path,label\n" + "\n".join(rows) + "\n")

    (error,) = submit_errors("image_csv", {"path": "labels.csv"})

    assert error.startswith(
        "dataset.options.path: CSV file 'labels.csv': labels 'cafe\\u0301' and 'caf\\xe9' "
        "differ only in how their accents are encoded"
    )


def test_a_single_class_is_refused_at_submit_and_load(data_root: Path) -> None:
    write_class_folder(data_root / "mono", {"red": 4})
    (data_root / "mono.csv").write_text("path,label\nmono/red/0.png,red\nmono/red/1.png,red\n")
    message = "needs at least 2 classes (found 1: 'red')"
    assert submit_errors("image_folder", {"path": "mono"}) == [
        f"dataset.options.path: folder 'mono' {message}"
    ]
    assert submit_errors("image_csv", {"path": "mono.csv"}) == [
        f"dataset.options.path: CSV file 'mono.csv' {message}"
    ]
    with pytest.raises(ValueError, match=re.escape(f"folder 'mono' {message}")):
        load_dataset("image_folder", {"path": "mono"})
    # Options that skipped validation still cannot plan (fingerprint) or load the data.
    unchecked = ImageFolderOptions.model_construct(path="mono")
    with pytest.raises(DatasetError, match=re.escape(f"image_folder: the training data {message}")):
        plan_image_folder(unchecked)


def test_data_that_decodes_past_the_dataset_limit_is_refused_at_submit_and_load(
    data_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by a tester: 2048x2048 digits (22.6 GB decoded) were accepted, and the worker
    that held them went down."""
    write_class_folder(data_root / "pets", {"cat": 3, "dog": 3})
    write_class_folder(data_root / "pets-val", {"cat": 1, "dog": 1})
    options = {"path": "pets", "val_path": "pets-val", "size": [10, 20], "channels": "rgb"}
    # 8 images x 3 x 10 x 20 = 4,800 bytes
    monkeypatch.setenv("AUTOML_LIMIT_MAX_DATASET_BYTES", "4799")

    [error] = submit_errors("image_folder", options)
    with pytest.raises(DatasetError) as loading:
        load_dataset("image_folder", options)

    assert error == (
        "dataset.options: 8 images at 10x20 (rgb) decode to 4,800 bytes; max_dataset_bytes "
        "allows 4,799 (AUTOML_LIMIT_MAX_DATASET_BYTES): use a smaller size, grayscale or "
        "fewer files"
    )
    assert str(loading.value) == error.removeprefix("dataset.options: ")
    monkeypatch.setenv("AUTOML_LIMIT_MAX_DATASET_BYTES", "4800")
    assert submit_errors("image_folder", options) == []
    assert submit_errors("image_folder", {**options, "size": 40, "channels": "grayscale"})


def test_sixteen_bit_pngs_scale_to_eight_bits_not_white(data_root: Path) -> None:
    for name, value in (("dark", 8000), ("bright", 56000)):
        for i in range(3):
            write_image(data_root / "deep" / name / f"{i}.png", np.full((6, 6), value, np.uint16))
    for channels, count in (("grayscale", 1), ("rgb", 3)):
        data = load_dataset(
            "image_folder", {"path": "deep", "size": 6, "channels": channels, "val_fraction": 0.34}
        )
        images = torch.cat([data.train_x, data.val_x])
        labels = torch.cat([data.train_y, data.val_y])
        assert images.shape[1] == count
        assert data.classes == ("bright", "dark")
        assert images[labels == 0].unique().tolist() == [218]  # 56000 >> 8
        assert images[labels == 1].unique().tolist() == [31]  # 8000 >> 8


def test_corrupt_image_error_names_the_file(data_root: Path) -> None:
    write_class_folder(data_root / "pets", {"cat": 3, "dog": 3})
    (data_root / "pets" / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    assert submit_errors("image_folder", {"path": "pets"}) == []  # found only while decoding
    with pytest.raises(DatasetError, match=r"^cannot decode image 'pets/dog/broken.png': "):
        load_dataset("image_folder", {"path": "pets", "size": 4})
    truncated = (data_root / "pets" / "cat" / "0.png").read_bytes()[:40]
    (data_root / "pets" / "dog" / "broken.png").unlink()
    (data_root / "pets" / "cat" / "0.png").write_bytes(truncated)
    with pytest.raises(DatasetError, match=r"'pets/cat/0.png'") as caught:
        load_dataset("image_folder", {"path": "pets", "size": 4})
    assert "\n" not in str(caught.value)


def test_a_failed_load_of_unchanged_data_fails_again_without_decoding(
    data_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every trial of a study loads the same data: one bad file must not be decoded up to
    # again by each of them (up to max_failed trials), until the data changes.
    write_class_folder(data_root / "pets", {"cat": 3, "dog": 3})
    broken = data_root / "pets" / "dog" / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    options = {"path": "pets", "size": 4}
    with pytest.raises(DatasetError, match=r"broken\.png") as first:
        load_dataset("image_folder", options)
    calls = []
    real = folder_module.load_plan
    monkeypatch.setattr(folder_module, "load_plan", lambda *a: calls.append(a) or real(*a))
    with pytest.raises(DatasetError) as again:
        load_dataset("image_folder", options)
    assert str(again.value) == str(first.value) and calls == []

    broken.unlink()  # fixed: loads anew
    assert load_dataset("image_folder", options).classes == ("cat", "dog")
    assert len(calls) == 1


# --- image_csv -----------------------------------------------------------------------------


def test_csv_paths_are_relative_to_the_csv(data_root: Path) -> None:
    files = write_class_folder(data_root / "shots" / "img", {"x": 4, "y": 4})
    rows = [f"img/{label}/{path.name},{label}" for label, paths in files.items() for path in paths]
    (data_root / "shots" / "train.csv").write_text(
        "label,path\n" + "\n".join(",".join(reversed(row.split(","))) for row in rows[1:]) + "\n"
    )
    (data_root / "shots" / "test.csv").write_text(f"path,label\n{rows[0]}\n")
    data = load_dataset(
        "image_csv",
        {"path": "shots/train.csv", "test_path": "shots/test.csv", "size": 3, "val_fraction": 0.3},
    )
    assert data.classes == ("x", "y")
    assert len(data.train_y) + len(data.val_y) == 7
    assert data.test_y.tolist() == [0]


def test_csv_submit_errors(data_root: Path) -> None:
    write_class_folder(data_root / "img", {"x": 1, "y": 1})
    (data_root / "bad_header.csv").write_text("file,class\nimg/x/0.png,x\n")
    (data_root / "missing_image.csv").write_text("path,label\nimg/x/9.png,x\n")
    (data_root / "not_image.csv").write_text("path,label\nbad_header.csv,x\n")
    (data_root / "empty.csv").write_text("path,label\n")
    (data_root / "good.csv").write_text("path,label\nimg/x/0.png,x\nimg/y/0.png,y\n")
    (data_root / "other_label.csv").write_text("path,label\nimg/x/0.png,z\n")
    assert submit_errors("image_csv", {"path": "bad_header.csv"}) == [
        "dataset.options.path: CSV file 'bad_header.csv' needs a header row with 'path' and "
        "'label' columns (found 'file', 'class')"
    ]
    # Found by a tester: no hint at a header in capitals, or at semicolons.
    (data_root / "capitals.csv").write_text("Path, Label\nimg/x/0.png,x\n")
    (data_root / "semicolons.csv").write_text("path;label\nimg/x/0.png;x\n")
    assert submit_errors("image_csv", {"path": "capitals.csv"}) == [
        "dataset.options.path: CSV file 'capitals.csv' needs a header row with 'path' and "
        "'label' columns (found 'Path' and ' Label': write them in lower case, without spaces)"
    ]
    assert submit_errors("image_csv", {"path": "semicolons.csv"}) == [
        "dataset.options.path: CSV file 'semicolons.csv' needs a header row with 'path' and "
        "'label' columns (found one column 'path;label': separate the columns with commas)"
    ]
    assert submit_errors("image_csv", {"path": "missing_image.csv"}) == [
        "dataset.options.path: missing_image.csv line 2: image 'img/x/9.png' not found"
    ]
    (data_root / "windows.csv").write_text("path,label\nimg\\x\\0.png,x\nimg\\y\\9.png,y\n")
    (data_root / "escape.csv").write_text("path,label\n..\\outside.png,x\n")
    (data_root.parent / "outside.png").write_bytes(b"")
    assert submit_errors("image_csv", {"path": "windows.csv"}) == [  # a tester: no hint
        "dataset.options.path: windows.csv line 2: image 'img\\\\x\\\\0.png' not found; paths "
        "separate folders with / (a \\ is part of a file name here)"
    ]
    assert submit_errors("image_csv", {"path": "escape.csv"}) == [  # no hint out of the root
        "dataset.options.path: escape.csv line 2: image '..\\\\outside.png' not found"
    ]
    assert "is not a png, jpg" in submit_errors("image_csv", {"path": "not_image.csv"})[0]
    assert submit_errors("image_csv", {"path": "empty.csv"}) == [
        "dataset.options.path: CSV file 'empty.csv' lists no images"
    ]
    assert submit_errors("image_csv", {"path": "nope.csv"}) == [
        "dataset.options.path: CSV file 'nope.csv' not found under the data root "
        "(AUTOML_DATA_ROOT; a spec's paths are relative to it)"
    ]
    assert submit_errors("image_csv", {"path": "good.csv", "val_path": "other_label.csv"}) == [
        "dataset.options.val_path: label 'z' is not a label of path; valid labels: x, y"
    ]
    (data_root / "twice.csv").write_text(
        "path,label\nimg/x/0.png,x\nimg/y/0.png,y\n./img/x/0.png,y\n"
    )
    assert submit_errors("image_csv", {"path": "twice.csv"}) == [
        "dataset.options.path: twice.csv line 4: image './img/x/0.png' is listed again (first "
        "on line 2); list each image once"
    ]


def _age_folders(folder: Path, seconds: float = 60.0) -> None:
    """Moves the modification time of ``folder`` and its class folders into the past."""
    past = time.time() - seconds
    for path in (folder, *[child for child in folder.iterdir() if child.is_dir()]):
        os.utime(path, (past, past))


def test_settled_listing_is_reused_until_a_folder_changes(
    data_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_class_folder(data_root / "pets", {"cat": 3, "dog": 2})
    _age_folders(data_root / "pets")
    monkeypatch.setattr(folder_module._ListingMemo, "SETTLE_S", 0.0)  # ctime is now
    listings = []
    real_image_files = folder_module.image_files

    def counting_image_files(*args: object, **kwargs: object) -> list[Path]:
        listings.append(args[0])
        return real_image_files(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(folder_module, "image_files", counting_image_files)
    first = folder_module.scan_class_folder("pets")
    assert len(listings) == 2
    assert folder_module.scan_class_folder("pets") == first and len(listings) == 2

    write_image(data_root / "pets" / "dog" / "9.png", np.zeros((6, 8, 3), np.uint8))
    _, files = folder_module.scan_class_folder("pets")
    assert len(listings) == 4 and [len(found) for found in files] == [3, 3]
    (data_root / "pets" / "cat" / "0.png").unlink()
    _age_folders(data_root / "pets")
    assert [len(found) for found in folder_module.scan_class_folder("pets")[1]] == [2, 3]
    shutil.rmtree(data_root / "pets" / "dog")
    assert folder_module.scan_class_folder("pets")[0] == ["cat"]

    before = len(listings)
    write_image(data_root / "pets" / "cat" / "7.png", np.zeros((6, 8, 3), np.uint8))
    _age_folders(data_root / "pets")  # a copy tool restoring the old modification times
    assert [len(found) for found in folder_module.scan_class_folder("pets")[1]] == [3]
    assert len(listings) == before + 1  # the change time gave it away
    monkeypatch.setattr(folder_module._ListingMemo, "MAX_AGE_S", 0.0)
    folder_module.scan_class_folder("pets")
    assert len(listings) == before + 2  # too old to trust


def test_fresh_listing_is_not_remembered(data_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_class_folder(data_root / "pets", {"cat": 2, "dog": 2})  # modified just now
    listings = []
    real_image_files = folder_module.image_files
    monkeypatch.setattr(
        folder_module,
        "image_files",
        lambda *args, **kwargs: listings.append(args[0]) or real_image_files(*args, **kwargs),
    )
    folder_module.scan_class_folder("pets")
    folder_module.scan_class_folder("pets")
    assert len(listings) == 4  # a change within the same timestamp tick could be missed


def test_splits_that_share_images_are_refused(data_root: Path) -> None:
    write_class_folder(data_root / "base", {"a": 3, "b": 3})
    write_class_folder(data_root / "val", {"a": 1, "b": 1}, seed=1)
    (data_root / "alias").symlink_to(data_root / "base", target_is_directory=True)
    shared = "shares 6 images with path ('base/a/0.png', 'base/a/1.png', ...); a split must not "
    shared += "hold another split's images"
    assert submit_errors(
        "image_folder", {"path": "base", "val_path": "base", "test_path": "base"}
    ) == [
        f"dataset.options.val_path: {shared}",
        f"dataset.options.test_path: {shared}",
    ]
    assert submit_errors("image_folder", {"path": "base", "val_path": "alias"}) == [
        f"dataset.options.val_path: {shared}"
    ]
    assert submit_errors(
        "image_folder", {"path": "base", "val_path": "val", "test_path": "val"}
    ) == [
        "dataset.options.test_path: shares 2 images with val_path ('val/a/0.png', 'val/b/0.png'); "
        "a split must not hold another split's images"
    ]
    assert submit_errors("image_folder", {"path": "base", "val_path": "val"}) == []


def test_a_stored_study_with_shared_splits_still_loads(data_root: Path) -> None:
    """Refused at submit only: a study queued before the check keeps training and serving."""
    write_class_folder(data_root / "base", {"a": 3, "b": 3})
    data = load_dataset("image_folder", {"path": "base", "val_path": "base", "size": 8})
    assert len(data.train_y) == len(data.val_y) == 6


def test_csv_splits_that_share_images_are_refused(data_root: Path) -> None:
    write_class_folder(data_root / "img", {"x": 2, "y": 2})
    (data_root / "alias").symlink_to(data_root / "img", target_is_directory=True)
    (data_root / "train.csv").write_text(
        "path,label\nimg/x/0.png,x\nimg/x/1.png,x\nimg/y/0.png,y\n"
    )
    (data_root / "val.csv").write_text("path,label\nimg/y/1.png,y\nalias/x/1.png,x\n")
    assert submit_errors("image_csv", {"path": "train.csv", "val_path": "val.csv"}) == [
        "dataset.options.val_path: shares 1 image with path ('img/x/1.png'); a split must not "
        "hold another split's images"
    ]


def test_csv_label_of_spaces_only_is_refused(data_root: Path) -> None:
    write_class_folder(data_root / "img", {"x": 1, "y": 1})
    (data_root / "blank.csv").write_text("path,label\nimg/x/0.png,x\nimg/y/0.png,  \n")
    (data_root / "short.csv").write_text("path,label\nimg/x/0.png,x\nimg/y/0.png\n")
    for name in ("blank.csv", "short.csv"):
        assert submit_errors("image_csv", {"path": name}) == [
            f"dataset.options.path: {name} line 3: path and label must not be empty"
        ]


def link_files(sources: list[Path], folder: Path, link: str) -> None:
    """``folder/<i>.png`` for each source file: a symlink (``link="symlink"``) or a hard link."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, source in enumerate(sources):
        if link == "symlink":
            os.symlink(source, folder / f"{i}.png")
        else:
            os.link(source, folder / f"{i}.png")


def test_split_files_linked_to_training_images_are_refused(data_root: Path) -> None:
    """Once only folder symlinks were resolved: linked files passed as new images."""
    train = write_class_folder(data_root / "leak" / "train", {"a": 6, "b": 6})
    for cls in ("a", "b"):
        link_files(train[cls][:2], data_root / "leak" / "test" / cls, "symlink")
        link_files(train[cls][2:4], data_root / "leak" / "val" / cls, "hardlink")
    options = {"path": "leak/train", "val_path": "leak/val", "test_path": "leak/test"}
    assert submit_errors("image_folder", options) == [
        "dataset.options.val_path: shares 4 images with path ('leak/val/a/0.png', "
        "'leak/val/a/1.png', ...); a split must not hold another split's images",
        "dataset.options.test_path: shares 4 images with path ('leak/test/a/0.png', "
        "'leak/test/a/1.png', ...); a split must not hold another split's images",
    ]


def test_an_image_in_two_class_folders_is_refused(data_root: Path) -> None:
    """Found by a tester: a symlinked class folder (or a linked file) trained one image as
    two classes at once, and put copies in training and validation both."""
    files = write_class_folder(data_root / "twice", {"h": 4, "v": 4})
    os.symlink(data_root / "twice" / "v", data_root / "twice" / "v_again")
    assert submit_errors("image_folder", {"path": "twice"}) == [
        "dataset.options.path: image 'twice/v_again/0.png' is 'twice/v/0.png' again (a link; "
        "4 images in all): each image must be listed once"
    ]
    os.unlink(data_root / "twice" / "v_again")
    os.link(files["h"][0], data_root / "twice" / "v" / "h0.png")
    assert submit_errors("image_folder", {"path": "twice"}) == [
        "dataset.options.path: image 'twice/v/h0.png' is 'twice/h/0.png' again (a link): each "
        "image must be listed once"
    ]
    os.unlink(data_root / "twice" / "v" / "h0.png")
    assert submit_errors("image_folder", {"path": "twice"}) == []


def test_a_csv_listing_one_image_under_two_names_is_refused(data_root: Path) -> None:
    write_class_folder(data_root / "img", {"x": 2, "y": 2})
    os.link(data_root / "img" / "x" / "1.png", data_root / "img" / "copy.png")
    (data_root / "train.csv").write_text(
        "path,label\nimg/x/0.png,x\nimg/x/1.png,x\nimg/y/0.png,y\nimg/copy.png,y\n"
    )
    assert submit_errors("image_csv", {"path": "train.csv"}) == [
        "dataset.options.path: image 'img/copy.png' is 'img/x/1.png' again (a link): each image "
        "must be listed once"
    ]


def test_csv_split_listing_a_hard_link_of_a_training_image_is_refused(data_root: Path) -> None:
    write_class_folder(data_root / "img", {"x": 2, "y": 2})
    os.link(data_root / "img" / "x" / "1.png", data_root / "img" / "copy.png")
    (data_root / "train.csv").write_text(
        "path,label\nimg/x/0.png,x\nimg/x/1.png,x\nimg/y/0.png,y\n"
    )
    (data_root / "val.csv").write_text("path,label\nimg/y/1.png,y\nimg/copy.png,x\n")
    assert submit_errors("image_csv", {"path": "train.csv", "val_path": "val.csv"}) == [
        "dataset.options.val_path: shares 1 image with path ('img/copy.png'); a split must not "
        "hold another split's images"
    ]


def test_csv_row_with_more_fields_than_the_header_is_refused(data_root: Path) -> None:
    """Once the extra fields went silently under ``None``: ``golden`` trained as a label."""
    write_class_folder(data_root / "img", {"x": 2, "y": 2})
    rows = "path,label\nimg/x/0.png,x\nimg/x/1.png,x\nimg/y/0.png,y\n"
    (data_root / "extra.csv").write_text(rows + "img/y/1.png,y,extra\n")
    (data_root / "comma.csv").write_text(rows + "img/y/1.png,golden, retriever\n")
    (data_root / "padded.csv").write_text(rows.replace(",x\n", ",x,,\n") + "img/y/1.png,y,\n")
    assert submit_errors("image_csv", {"path": "extra.csv"}) == [
        "dataset.options.path: extra.csv line 5: has more fields than the header (path, label): "
        "'extra'; quote a value that holds a comma"
    ]
    assert submit_errors("image_csv", {"path": "comma.csv"}) == [
        "dataset.options.path: comma.csv line 5: has more fields than the header (path, label): "
        "' retriever'; quote a value that holds a comma"
    ]
    assert submit_errors("image_csv", {"path": "padded.csv"}) == []  # empty cells: padding


def test_the_artifact_folder_inside_the_data_is_no_class(
    data_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``AUTOML_DATA_ROOT=.`` and ``path: .``: ``automl run`` writes its weights into the
    data folder, and once every later trial failed with "class 'automl-artifacts' has no
    images"."""
    write_class_folder(data_root, {"a": 3, "b": 3})
    monkeypatch.chdir(data_root)
    monkeypatch.delenv("AUTOML_ARTIFACTS_DIR", raising=False)  # the default, in the cwd
    monkeypatch.setenv("AUTOML_DATA_ROOT", ".")
    (data_root / "automl-artifacts" / "1").mkdir(parents=True)
    (data_root / "automl-artifacts" / "1" / "weights.safetensors").write_bytes(b"w")
    assert submit_errors("image_folder", {"path": ".", "size": 4}) == []
    assert load_dataset("image_folder", {"path": ".", "size": 4}).classes == ("a", "b")


def test_the_cache_folder_inside_the_data_is_no_class(
    data_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once the second load failed: "class 'cache' has no images"."""
    write_class_folder(data_root, {"a": 3, "b": 3})
    monkeypatch.setenv("AUTOML_CACHE_DIR", str(data_root / "cache"))
    assert load_dataset("image_folder", {"path": ".", "size": 4}).classes == ("a", "b")
    assert list((data_root / "cache").glob("*.pt"))
    forget_loaded()
    assert submit_errors("image_folder", {"path": ".", "size": 4}) == []
    assert load_dataset("image_folder", {"path": ".", "size": 4}).classes == ("a", "b")


EMPTY_VALIDATION = (
    "the validation split has no samples: every class has 2 images, and the test split "
    "(test_fraction 0.2) took its share of each class first, leaving none the 2 images a class "
    "needs to give one to validation; add images, give val_path or test_path, or set "
    "test_fraction to 0"
)


def test_a_test_split_that_leaves_no_validation_images_is_refused_at_submit(
    data_root: Path,
) -> None:
    """Once accepted: every trial then failed with "the validation split has no samples;
    add images", which did not say why."""
    write_class_folder(data_root / "pairs", {f"c{i:02}": 2 for i in range(30)}, size=(2, 2))
    options = {"path": "pairs", "size": 2, "test_fraction": 0.2}
    assert submit_errors("image_folder", options) == [f"dataset.options: {EMPTY_VALIDATION}"]
    with pytest.raises(DatasetError) as caught:
        load_dataset("image_folder", options)  # a study stored before the check
    assert str(caught.value) == f"image_folder: {EMPTY_VALIDATION}"
    rows = "".join(f"pairs/c{i:02}/{j}.png,c{i:02}\n" for i in range(30) for j in range(2))
    (data_root / "pairs.csv").write_text("path,label\n" + rows)
    csv_options = {**options, "path": "pairs.csv"}
    assert submit_errors("image_csv", csv_options) == [f"dataset.options: {EMPTY_VALIDATION}"]
    assert submit_errors("image_folder", {**options, "test_fraction": 0}) == []
    assert submit_errors("image_folder", {**options, "val_path": "pairs"}) == [
        "dataset.options.val_path: shares 60 images with path ('pairs/c00/0.png', "
        "'pairs/c00/1.png', ...); a split must not hold another split's images"
    ]  # not refused for its split sizes: nothing is drawn


def test_an_empty_split_says_which_classes_are_too_small(data_root: Path) -> None:
    write_class_folder(data_root / "ones", {"a": 1, "b": 1, "c": 1})
    with pytest.raises(DatasetError) as caught:
        load_dataset("image_folder", {"path": "ones", "size": 2})
    assert str(caught.value) == (
        "image_folder: the validation split has no samples: every class has 1 image, and a "
        "class needs 2 images to give one to validation; add images or give val_path"
    )
    write_class_folder(data_root / "val", {"a": 1}, seed=1)
    with pytest.raises(DatasetError) as caught:
        load_dataset(
            "image_folder", {"path": "ones", "val_path": "val", "size": 2, "test_fraction": 0.5}
        )
    assert str(caught.value) == (
        "image_folder: the test split has no samples: every class has 1 image, and a class "
        "needs 2 images to give one to the test split; add images, give test_path, or set "
        "test_fraction to 0"
    )
    write_class_folder(data_root / "mixed", {"a": 1, "b": 2, "c": 2, "d": 1, "e": 1})
    assert submit_errors("image_folder", {"path": "mixed", "test_fraction": 0.1}) == [
        "dataset.options: the validation split has no samples: the smallest classes have 1 "
        "image (3 classes: 'a', 'd', ...), and the test split (test_fraction 0.1) took its share "
        "of each class first, leaving none the 2 images a class needs to give one to validation; "
        "add images, give val_path or test_path, or set test_fraction to 0"
    ]


def test_a_load_that_failed_on_the_system_is_tried_again(
    data_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Permissions, a full disk or a network hiccup are fixed without touching the files:
    # the next trial must load again instead of getting the remembered error.
    write_class_folder(data_root / "pets", {"cat": 3, "dog": 3})
    real = folder_module.load_plan
    calls = []

    def denied(*args: object) -> object:
        calls.append(args)
        if len(calls) == 1:
            try:
                raise PermissionError(13, "Permission denied")
            except PermissionError:
                raise DatasetError("cannot read 'pets/cat/0.png': Permission denied") from None
        return real(*args)

    monkeypatch.setattr(folder_module, "load_plan", denied)
    options = {"path": "pets", "size": 4}
    with pytest.raises(DatasetError, match="Permission denied"):
        load_dataset("image_folder", options)
    assert load_dataset("image_folder", options).classes == ("cat", "dog")
    assert len(calls) == 2
