"""Serving a study's model: the chosen trial, training's preprocessing, the cache, limits."""

from __future__ import annotations

import copy
import dataclasses
import io
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from automl import file_clock
from automl.config import Limits
from automl.data import load_dataset
from automl.delivery import annotate, inference
from automl.delivery.annotate import annotate_folder
from automl.delivery.bundle import build_bundle
from automl.delivery.inference import (
    InputRejectedError as Rejected,
)
from automl.delivery.inference import (
    ModelCache,
    ModelUnavailableError,
    ServingModel,
    Upload,
    check_images,
    check_uploads,
    dataset_stats,
    load_serving_model,
    predict_uploads,
    preprocessing,
    serving_trial,
)
from automl.delivery.inference import (
    UploadTooLargeError as TooLarge,
)
from automl.delivery.schemas import AnnotateRequest
from automl.store import Store, attrs, best_trials
from automl.train.accel import Accelerator
from automl.train.trial_config import TrialConfig
from tests.conftest import store_at
from tests.delivery.trained import (
    DIGITS_OPTIONS,
    digits_test_split,
    in_process_argmax,
    png_bytes,
    png_declaring,
    train_study,
    write_pngs,
)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Store, int]]:
    """A store holding one trained digits study."""
    root = tmp_path_factory.mktemp("trained")
    store = store_at(f"sqlite:///{root / 'automl.db'}", root)
    yield store, train_study(store)
    store.close()


def identity_model(config: TrialConfig) -> ServingModel:
    """A ``ServingModel`` of ``config``'s dataset whose network returns its input."""
    data = dataset_stats(config)
    accel = Accelerator(torch.device("cpu"))
    return ServingModel(torch.nn.Identity(), data, preprocessing(config, data), accel)


# --- preprocessing equals training's ----------------------------------------------------------


def test_digits_upload_decodes_to_the_training_tensor() -> None:
    """A digit written as an 8x8 PNG (0-16 stored as 0-255) decodes to the very tensor
    training saw, and is normalized with the training split's statistics."""
    config = TrialConfig.model_validate(
        {"dataset": {"source": "digits", "options": DIGITS_OPTIONS}}
    )
    model = identity_model(config)
    data = digits_test_split()
    assert data.test_x is not None

    decoded = [
        model.decode(png_bytes(image), f"{i}.png", ("files", i), 10_000)
        for i, image in enumerate(data.test_x[:50])
    ]

    assert np.array_equal(np.stack(decoded), data.test_x[:50].numpy())
    assert torch.equal(model.data.mean, data.mean)
    assert torch.equal(model.data.std, data.std)
    assert model.data.input_shape == (1, 8, 8)
    assert len(model.data.train_x) == 0, "the serving copy keeps no images"


def test_other_sizes_and_modes_become_the_input_shape() -> None:
    config = TrialConfig.model_validate({"dataset": {"source": "digits"}})
    model = identity_model(config)
    photo = Image.effect_noise((40, 30), 60).convert("RGB")
    black_png = png_bytes(torch.zeros(1, 8, 8, dtype=torch.uint8), mode="RGB")
    buffer = io.BytesIO()
    photo.save(buffer, "WEBP")

    decoded = model.decode(buffer.getvalue(), "photo.webp", ("files", 0), 10_000)
    black = model.decode(black_png, "black.png", ("files", 1), 10_000)

    assert decoded.shape == black.shape == (1, 8, 8)
    assert decoded.dtype == np.uint8
    assert not black.any()


def write_folder(root: Path, name: str, per_class: int) -> None:
    rng = np.random.default_rng(len(name))
    for label in ("cat", "dog"):
        folder = root / name / label
        folder.mkdir(parents=True)
        for index in range(per_class):
            pixels = rng.integers(0, 256, (30 + 4 * index, 20, 3), dtype=np.uint8)
            Image.fromarray(pixels, mode="RGB").save(folder / f"{index}.png")


def test_image_folder_uploads_decode_as_the_dataset_did(data_root: Path) -> None:
    """For file sources, the dataset's own size, fit and channels apply: each training file
    sent as an upload gives the training tensor, byte for byte."""
    write_folder(data_root, "train", per_class=3)
    write_folder(data_root, "val", per_class=1)
    options = {
        "path": "train",
        "val_path": "val",
        "size": [6, 10],
        "fit": "pad",
        "channels": "grayscale",
    }
    config = TrialConfig.model_validate({"dataset": {"source": "image_folder", "options": options}})
    model = identity_model(config)
    data = load_dataset("image_folder", options)
    files = sorted((data_root / "train").glob("*/*.png"))

    decoded = [
        model.decode(path.read_bytes(), path.name, ("files", i), 10_000)
        for i, path in enumerate(files)
    ]

    assert (model.prep.height, model.prep.width, model.prep.fit) == (6, 10, "pad")
    assert model.classes == ("cat", "dog")
    assert np.array_equal(np.stack(decoded), data.train_x.numpy())
    assert torch.equal(model.data.mean, data.mean)


# --- the served trial --------------------------------------------------------------------------


def test_predictions_agree_with_the_trained_model(trained: tuple[Store, int]) -> None:
    store, study_id = trained
    data = digits_test_split()
    assert data.test_x is not None and data.test_y is not None
    images, labels = data.test_x[:30], data.test_y[:30].tolist()
    uploads = [Upload(f"{i}.png", png_bytes(image)) for i, image in enumerate(images)]

    result = predict_uploads(store, study_id, uploads, top=2)

    best = best_trials(store, study_id).trials[0]
    assert result.model.trial_number == best.number
    assert (result.model.selection, result.model.note) == ("best_trial", None)
    top1 = [int(p.top[0].label) for p in result.predictions]
    assert sum(a == b for a, b in zip(top1, labels, strict=True)) >= 24
    assert top1 == in_process_argmax(store, study_id, best.number, images)
    assert all(len(p.top) == 2 for p in result.predictions)


def test_serving_uses_the_precision_the_trial_trained_in(trained: tuple[Store, int]) -> None:
    store, study_id = trained
    served = serving_trial(store, study_id)
    as_trained = load_serving_model(store, served)
    trial = copy.deepcopy(served.trial)
    trial.set_user_attr(attrs.CONFIG, {**trial.user_attrs[attrs.CONFIG], "precision": "bf16"})
    in_bf16 = load_serving_model(store, dataclasses.replace(served, study_id=-1, trial=trial))
    assert (as_trained.accel.dtype, in_bf16.accel.dtype) == (None, torch.bfloat16)
    data = digits_test_split()
    assert data.test_x is not None
    full, reduced = as_trained.probabilities(data.test_x), in_bf16.probabilities(data.test_x)
    assert reduced.dtype == torch.float32 and not torch.equal(full, reduced)
    assert (full.argmax(dim=1) == reduced.argmax(dim=1)).float().mean() >= 0.95


def test_multi_objective_serves_the_first_of_the_pareto_front(tmp_path: Path) -> None:
    store = store_at(f"sqlite:///{tmp_path / 'automl.db'}", tmp_path)
    try:
        study_id = train_study(
            store,
            name="pareto",
            objective=None,
            objectives=[{"metric": "accuracy"}, {"metric": "params"}],
            budget={"n_trials": 2, "max_failed": 0},
            fixed={"epochs": 1, "depth": 1, "batch_size": 128, "lr": 0.01, "optimizer": "adam"},
            params={"width": {"type": "int", "low": 4, "high": 16}},
            pruner={"name": "none"},
        )
        front = sorted(trial.number for trial in best_trials(store, study_id).trials)

        serving = serving_trial(store, study_id)
        png = png_bytes(torch.zeros(1, 8, 8, dtype=torch.uint8))
        result = predict_uploads(store, study_id, [Upload("a.png", png)])
        bundle = build_bundle(store, study_id)
    finally:
        store.close()

    assert serving.trial.number == front[0] == bundle.trial_number
    # Found by a tester: only predict said why this trial of the front serves.
    assert bundle.card["bundle"]["selection"] == "pareto_front_first"
    assert serving.selection == "pareto_front_first"
    assert serving.note is not None and "Pareto front" in serving.note
    assert result.model.selection == "pareto_front_first"
    assert result.model.trial_number == front[0]


def test_annotate_orders_by_confidence(trained: tuple[Store, int], data_root: Path) -> None:
    store, study_id = trained
    data = digits_test_split()
    assert data.test_x is not None
    write_pngs(data.test_x[:12], data_root / "new")

    result = annotate_folder(store, study_id, AnnotateRequest(path="new", top=1))

    assert result.count == len(result.suggestions) == 12
    confidences = [s.confidence for s in result.suggestions]
    assert confidences == sorted(confidences)
    assert all(len(s.top) == 1 for s in result.suggestions)
    assert len({s.path for s in result.suggestions}) == 12


def test_annotate_removes_what_killed_writes_of_its_csv_left(
    trained: tuple[Store, int], data_root: Path
) -> None:
    """A kill -9 mid-write left a hidden temporary beside the CSV for good."""
    store, study_id = trained
    data = digits_test_split()
    assert data.test_x is not None
    write_pngs(data.test_x[:2], data_root / "inbox")
    stale = data_root / "inbox" / ".labels.csv.0123456789abcdef.tmp"
    fresh = data_root / "inbox" / ".labels.csv.fedcba9876543210.tmp"  # a write in progress
    other = data_root / "inbox" / ".other.csv.0123456789abcdef.tmp"
    for leftover in (stale, fresh, other):
        leftover.write_text("path,label\n")
    hour_ago = time.time() - file_clock.STALE_SIBLING_S - 1
    for old in (stale, other):
        os.utime(old, (hour_ago, hour_ago))

    annotate_folder(store, study_id, AnnotateRequest(path="inbox", write_csv="inbox/labels.csv"))

    assert (data_root / "inbox" / "labels.csv").read_text().startswith("path,label,confidence")
    assert not stale.exists()
    assert fresh.exists() and other.exists()  # another write's, and another CSV's


def test_annotate_checks_the_csv_path_again_after_classifying(
    trained: tuple[Store, int], data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by a security review: the CSV's path was checked before classifying (which
    can take minutes) and written without a second look; a folder on its way swapped for
    a link out of the data root in between had it written outside."""
    store, study_id = trained
    data = digits_test_split()
    assert data.test_x is not None
    write_pngs(data.test_x[:2], data_root / "top" / "inbox")
    outside = tmp_path / "outside"
    outside.mkdir()
    classify = annotate.classify_files

    def classify_then_swap(*args: object, **kwargs: object) -> object:
        result = classify(*args, **kwargs)
        (data_root / "top").rename(data_root / "moved")
        (data_root / "top").symlink_to(outside, target_is_directory=True)
        return result

    monkeypatch.setattr(annotate, "classify_files", classify_then_swap)
    request = AnnotateRequest(path="top/inbox", write_csv="top/labels.csv")

    with pytest.raises(Rejected, match="outside the data root") as info:
        annotate_folder(store, study_id, request)

    assert info.value.field == ("write_csv",)
    assert list(outside.iterdir()) == []


# --- limits ------------------------------------------------------------------------------------


def small_png() -> bytes:
    return png_bytes(torch.zeros(1, 8, 8, dtype=torch.uint8))


@pytest.mark.parametrize(
    ("uploads", "limits", "error", "expected"),
    [
        ([], Limits(), Rejected, "send one or more images"),
        ([Upload("a.png", small_png())] * 3, Limits(max_images=2), Rejected, "max_images"),
        ([Upload("a.png", b"x" * 100)], Limits(max_upload_bytes=99), TooLarge, "max_upload_bytes"),
        ([Upload("b.png", png_declaring(10**5, 10**5))], Limits(), Rejected, "max_image_pixels"),
        ([Upload("c.png", small_png())], Limits(max_image_pixels=63), Rejected, "8x8 = 64"),
        ([Upload("d.gif", b"GIF89a")], Limits(), Rejected, "not a png, jpeg, webp or bmp"),
    ],
    ids=["none", "count", "bytes", "bomb", "pixels", "format"],
)
def test_uploads_over_a_limit_are_refused(
    uploads: list[Upload], limits: Limits, error: type[Exception], expected: str
) -> None:
    with pytest.raises(error) as caught:
        check_uploads(uploads, limits)

    assert expected in str(caught.value)


def truncated_png() -> bytes:
    """A PNG whose header reads but whose pixels cannot be decoded."""
    buffer = io.BytesIO()
    Image.effect_noise((64, 64), 50).save(buffer, "PNG")
    return buffer.getvalue()[:200]


def test_every_upload_over_a_limit_is_named_in_one_refusal() -> None:
    good = Upload("a.png", small_png())
    uploads = [good, Upload("b.gif", b"GIF89a"), good, Upload("c.png", png_declaring(10**5, 10**5))]

    with pytest.raises(Rejected) as caught:
        check_uploads(uploads, Limits())

    message = str(caught.value)
    assert caught.value.field == ("files",)
    assert message.startswith("2 files cannot be used: 'b.gif' is not a png")
    assert "image 'c.png' has more than" in message


def test_predict_names_every_image_it_cannot_decode(trained: tuple[Store, int]) -> None:
    store, study_id = trained
    uploads = [Upload("good.png", small_png()), Upload("x.png", truncated_png())]
    uploads.append(Upload("y.png", truncated_png()))

    with pytest.raises(Rejected) as caught:
        predict_uploads(store, study_id, uploads)

    assert caught.value.field == ("files",)
    assert str(caught.value).startswith("2 files cannot be used: cannot decode image 'x.png'")
    assert "; cannot decode image 'y.png'" in str(caught.value)
    assert predict_uploads(store, study_id, uploads[:1]).predictions[0].file == "good.png"


def test_annotate_names_every_bad_image_of_a_stage_in_one_refusal(
    trained: tuple[Store, int], data_root: Path
) -> None:
    store, study_id = trained
    data = digits_test_split()
    assert data.test_x is not None
    write_pngs(data.test_x[:3], data_root / "inbox")
    for name in ("a.png", "b.png"):
        (data_root / "inbox" / name).write_bytes(truncated_png())
    (data_root / "other").mkdir()
    for name in ("c.png", "d.png"):
        (data_root / "other" / name).write_bytes(b"text")

    with pytest.raises(Rejected) as decoding:
        annotate_folder(store, study_id, AnnotateRequest(path="inbox"))
    with pytest.raises(Rejected) as headers:
        annotate_folder(store, study_id, AnnotateRequest(path="other"))

    assert str(decoding.value).startswith(
        "2 files cannot be used: cannot decode image 'inbox/a.png'"
    )
    assert "cannot decode image 'inbox/b.png'" in str(decoding.value)
    assert str(headers.value).startswith("2 files cannot be used: 'other/c.png' is not a png")
    assert "'other/d.png' is not a png" in str(headers.value)


# --- the model cache --------------------------------------------------------------------------


def test_cache_loads_each_model_once_under_concurrency() -> None:
    cache = ModelCache(size=2)
    loaded: list[str] = []
    sentinel = object()

    def load() -> ServingModel:
        loaded.append("a")
        time.sleep(0.05)
        return sentinel  # type: ignore[return-value]

    results: list[object] = []
    threads = [
        threading.Thread(target=lambda: results.append(cache.get(("a",), load))) for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert loaded == ["a"]
    assert cache.loads == 1
    assert results == [sentinel] * 8


def test_cache_drops_the_least_recently_used() -> None:
    cache = ModelCache(size=2)
    made = {key: object() for key in "abc"}

    def get(key: str) -> object:
        return cache.get((key,), lambda: made[key])  # type: ignore[return-value,arg-type]

    get("a"), get("b"), get("a"), get("c")  # b is the least recently used
    loads = cache.loads
    get("a"), get("c")
    assert cache.loads == loads
    get("b")
    assert cache.loads == loads + 1


def test_failed_load_is_not_cached() -> None:
    cache = ModelCache()

    def fail() -> ServingModel:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        cache.get(("x",), fail)
    assert cache.get(("x",), lambda: "ok") == "ok"  # type: ignore[arg-type,return-value,comparison-overlap]


def test_weights_that_are_not_finite_are_not_served(
    trained: tuple[Store, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Stored before diverged runs were refused: NaN logits argmax to class 0 and their
    # probabilities break every answer that carries them.
    store, study_id = trained
    real = inference.load_state_dict

    def diverged(*args: object, **kwargs: object) -> dict[str, torch.Tensor]:
        state = real(*args, **kwargs)  # type: ignore[arg-type]
        return {
            name: torch.full_like(t, float("nan")) if t.is_floating_point() else t
            for name, t in state.items()
        }

    monkeypatch.setattr(inference, "load_state_dict", diverged)
    inference.MODELS.clear()
    serving = serving_trial(store, study_id)
    refused = r"are not finite \(its training diverged, or the file was damaged since\)"
    with pytest.raises(ModelUnavailableError, match=refused):
        load_serving_model(store, serving)
    inference.MODELS.clear()
    # Nor shipped in a bundle, whose predict.py printed NaN probabilities (a tester).
    with pytest.raises(ModelUnavailableError, match=refused):
        build_bundle(store, study_id)


def _noise_png(size: int) -> bytes:
    buffer = io.BytesIO()
    Image.effect_noise((size, size), 50).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.mark.parametrize(("budget", "named"), [(10_000, 3), (5_000, 2)])
def test_the_decoding_that_names_every_bad_file_stops_at_the_pixel_limit(
    budget: int, named: int
) -> None:
    """Found by review: once one file was refused, every other file of the request was
    decoded to look for more, however many and however large (a cheap 422 became up to
    64 full decodes)."""
    whole, cut = _noise_png(64), _noise_png(64)[:300]  # 4,096 pixels each
    images = [
        (b"not an image", "text.png", ("files", 0)),
        (whole, "whole.png", ("files", 1)),
        (cut, "cut.png", ("files", 2)),
    ]
    with pytest.raises(Rejected) as refused:
        check_images(images, ("files",), budget)
    message = str(refused.value)
    assert ("cut.png" in message) == (named == 3)  # the second decode was past the budget
    assert "'text.png' is not a png" in message


def test_past_the_pixel_limit_the_decoding_goes_on_with_smaller_files() -> None:
    large, cut = _noise_png(64), _noise_png(16)[:120]  # 4,096 and 256 pixels
    images = [
        (b"not an image", "text.png", ("files", 0)),
        (large, "large.png", ("files", 1)),
        (cut, "cut.png", ("files", 2)),
    ]
    with pytest.raises(Rejected) as refused:
        check_images(images, ("files",), 5_000)  # the large one fits alone, not with cut
    assert "cut.png" in str(refused.value)
    with pytest.raises(Rejected) as refused:
        check_images(images, ("files",), 4_095)  # the large one is refused by its header
    assert "large.png" in str(refused.value)
