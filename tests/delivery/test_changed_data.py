"""Serving and bundling a model from what its trial stored, after its training folder
changed or was removed: only a trial from before ``automl.input`` reads the data again."""

from __future__ import annotations

import io
import json
import shutil
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from automl.cli.main import main
from automl.data import load_dataset
from automl.data.base import forget_loaded
from automl.delivery import embeddings
from automl.delivery.bundle import build_bundle
from automl.delivery.embeddings import validation_embeddings
from automl.delivery.inference import (
    MODELS,
    ModelUnavailableError,
    Upload,
    load_serving_model,
    predict_uploads,
    serving_trial,
)
from automl.store import Store, attrs
from automl.worker import runner
from tests.conftest import store_at
from tests.delivery.trained import TRAINED_SPEC, train_study

COLOURS = {"blue": (30, 40, 210), "green": (30, 200, 40), "red": (220, 30, 30)}
OPTIONS = {"path": "colours", "size": 16}
FOLDER_STUDY: dict[str, Any] = {
    "name": "colours",
    "dataset": {"source": "image_folder", "options": OPTIONS},
    "fixed": {**TRAINED_SPEC["fixed"], "epochs": 1, "batch_size": 16},
}
"""``train_study`` overrides: one trial, one epoch on 3 colour classes x 12 images."""


def colour_png(rgb: tuple[int, int, int], seed: int) -> bytes:
    """A noisy 16x16 PNG of one colour."""
    noise = np.random.default_rng(seed).integers(-25, 26, (16, 16, 3))
    pixels = np.clip(np.asarray(rgb) + noise, 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="RGB").save(buffer, "PNG")
    return buffer.getvalue()


def write_colours(root: Path, per_class: int = 12) -> None:
    for index, (name, rgb) in enumerate(COLOURS.items()):
        folder = root / "colours" / name
        folder.mkdir(parents=True)
        for number in range(per_class):
            (folder / f"{number:02d}.png").write_bytes(colour_png(rgb, 100 * index + number))


def add_white_images(root: Path, count: int = 40) -> None:
    """Images that shift the folder's mean and std; the class names stay the same."""
    for number in range(count):
        Image.new("RGB", (16, 16), (255, 255, 255)).save(
            root / "colours" / "red" / f"w{number}.png"
        )


UPLOADS = [
    Upload("red.png", colour_png(COLOURS["red"], 7)),
    Upload("blue.png", colour_png(COLOURS["blue"], 8)),
]


def probabilities(store: Store, study_id: int) -> list[list[float]]:
    """Each upload's class probabilities, from a model loaded anew (not the cache)."""
    MODELS.clear()
    result = predict_uploads(store, study_id, UPLOADS, top=len(COLOURS))
    return [
        [score.probability for score in sorted(p.top, key=lambda s: s.index)]
        for p in result.predictions
    ]


def card_of(data: bytes) -> dict[str, Any]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return json.loads(archive.read("model_card.json"))


@pytest.fixture
def store(tmp_path: Path) -> Any:
    opened = store_at(f"sqlite:///{tmp_path / 'automl.db'}", tmp_path)
    yield opened
    opened.close()
    MODELS.clear()


def _cli(capsys: pytest.CaptureFixture[str], tmp_path: Path, *args: str) -> tuple[int, str, str]:
    flags = ["--storage", f"sqlite:///{tmp_path / 'automl.db'}"]
    flags += ["--artifacts-dir", str(tmp_path / "artifacts")]
    capsys.readouterr()
    code = main(["--log-level", "WARNING", *args, *flags])
    out, err = capsys.readouterr()
    return code, out, err


def test_predictions_keep_the_recorded_normalization_when_the_folder_changes(
    data_root: Path, store: Store
) -> None:
    write_colours(data_root)
    study_id = train_study(store, **FOLDER_STUDY)
    trial = serving_trial(store, study_id).trial
    recorded = trial.user_attrs[attrs.INPUT]
    before = probabilities(store, study_id)

    add_white_images(data_root)
    now = load_dataset("image_folder", OPTIONS)
    assert now.mean.tolist() != pytest.approx(recorded["mean"]), "the folder's stats moved"
    after = probabilities(store, study_id)

    assert after == before
    served = load_serving_model(store, serving_trial(store, study_id))
    assert served.data.mean.tolist() == pytest.approx(recorded["mean"], abs=0)
    assert served.data.std.tolist() == pytest.approx(recorded["std"], abs=0)
    assert served.classes == tuple(COLOURS)
    assert (served.prep.height, served.prep.width, served.prep.channels) == (16, 16, "rgb")
    card = card_of(build_bundle(store, study_id).data)
    assert card["input"]["mean"] == recorded["mean"]  # what the bundle's predict.py uses


def test_embeddings_refuse_a_dataset_whose_classes_changed(data_root: Path, store: Store) -> None:
    """Serving no longer reads the dataset, so it no longer notices a renamed class; the
    embeddings, which plot the current validation images under the model's classes, do."""
    write_colours(data_root)
    study_id = train_study(store, **FOLDER_STUDY)
    serving = serving_trial(store, study_id)
    assert validation_embeddings(store, serving).classes == tuple(COLOURS)

    (data_root / "colours" / "red").rename(data_root / "colours" / "crimson")
    forget_loaded()

    with pytest.raises(ModelUnavailableError, match="dataset changed since it trained"):
        validation_embeddings(store, serving)


def test_embeddings_of_a_dataset_too_large_to_decode_in_the_api_are_refused(
    data_root: Path, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by a tester: one report request made the API decode a study's whole dataset
    (every split: 176 MB and 1.1 GB of memory for a folder at size 320; 16 GiB allowed)."""
    write_colours(data_root)
    study_id = train_study(store, **FOLDER_STUDY)
    serving = serving_trial(store, study_id)
    record = serving.trial.user_attrs[attrs.DATA]
    decoded = sum(record["images"].values()) * 3 * 16 * 16
    monkeypatch.setattr(embeddings, "MAX_DECODED_BYTES", decoded)
    assert validation_embeddings(store, serving).classes == tuple(COLOURS)  # at the limit
    forget_loaded()
    monkeypatch.setattr(embeddings, "MAX_DECODED_BYTES", decoded - 1)
    loads: list[str] = []
    monkeypatch.setattr(embeddings, "load_dataset", lambda source, _: loads.append(source))

    with pytest.raises(ModelUnavailableError, match="MiB decoded; embeddings are made for"):
        validation_embeddings(store, serving)

    assert loads == []  # refused from the trial's record, before anything was decoded


def test_a_removed_folder_still_serves_bundles_and_exports(
    data_root: Path, store: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_colours(data_root)
    study_id = train_study(store, **FOLDER_STUDY)
    before, bundle = probabilities(store, study_id), build_bundle(store, study_id)

    shutil.rmtree(data_root / "colours")

    assert probabilities(store, study_id) == before
    rebuilt = build_bundle(store, study_id)
    assert {**card_of(rebuilt.data), "libraries": None} == {**bundle.card, "libraries": None}
    download = _cli(capsys, tmp_path, "best", str(study_id), "--download", str(tmp_path / "dl"))
    assert download[0] == 0, download[2]
    assert (tmp_path / "dl" / "model.onnx").is_file()
    export = _cli(capsys, tmp_path, "export", str(study_id), str(tmp_path / "out"), "--json")
    assert export[0] == 0, export[2]
    assert json.loads(export[1])["no_model"] is None
    assert (tmp_path / "out" / "model" / "model_card.json").is_file()


def test_a_trial_from_before_recorded_input_needs_its_data_and_says_so_in_one_line(
    data_root: Path,
    store: Store,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    write_colours(data_root)
    with monkeypatch.context() as older_worker:  # as workers did before automl.input
        older_worker.setattr(runner._Attempt, "_model_input", lambda *_: {})
        study_id = train_study(store, **FOLDER_STUDY)
    assert attrs.INPUT not in serving_trial(store, study_id).trial.user_attrs
    served = load_serving_model(store, serving_trial(store, study_id))
    assert torch.equal(served.data.mean, load_dataset("image_folder", OPTIONS).mean)

    shutil.rmtree(data_root / "colours")
    MODELS.clear()

    expected = "folder 'colours' not found under the data root"
    for build in (
        lambda: predict_uploads(store, study_id, UPLOADS),
        lambda: build_bundle(store, study_id),
    ):
        with pytest.raises(ModelUnavailableError) as caught:
            build()
        message = str(caught.value)
        assert expected in message and "\n" not in message and "pydantic" not in message
    code, _, err = _cli(capsys, tmp_path, "best", str(study_id), "--download", str(tmp_path / "dl"))
    assert code == 2 and err.count("\n") == 1 and expected in err, err
    code, out, err = _cli(capsys, tmp_path, "export", str(study_id), str(tmp_path / "out"))
    assert code == 2
    assert err.startswith("error: model/ not written: ") and err.count("\n") == 1, err
    assert expected in err and "pydantic" not in err
    assert "no model (" in out
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == [
        "study.json",
        "trials.csv",
        "trials.json",
    ]
