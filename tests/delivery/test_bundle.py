"""The best model's bundle: its contents, its card, and predict.py in a Python without automl."""

from __future__ import annotations

import copy
import hashlib
import importlib.metadata
import io
import json
import os
import runpy
import shutil
import subprocess
import sysconfig
import threading
import venv
import zipfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
import pytest
import safetensors.torch
import torch
from fastapi.testclient import TestClient
from PIL import Image

from automl.api import create_app
from automl.cli import bundle_commands
from automl.cli import client as cli_client
from automl.cli.main import main
from automl.config import Limits, Settings
from automl.data.decode import decode_image
from automl.delivery.bundle import Bundle, BundleCache, build_bundle
from automl.delivery.card import CARD_FORMAT, preprocess_of, trial_input
from automl.delivery.card import trial_config as config_of
from automl.delivery.schemas import ImagePrediction
from automl.examples import write_moving_shapes
from automl.store import (
    WeightsNotFoundError,
    attrs,
    get_frozen_trial,
    load_state_dict,
    optuna_rows,
    submit_study,
)
from automl.train.evaluation import restore_model
from tests.conftest import store_at, tiny_spec_data
from tests.delivery.trained import (
    TRAINED_SPEC,
    digits_test_split,
    in_process_argmax,
    png_declaring,
    train_study,
    write_pngs,
)
from tests.store.conftest import drive

FILES = ["model.onnx", "model.safetensors", "model.torchscript.pt", "model_card.json", "predict.py"]
N_IMAGES = 60


class Trained:
    """A store with one trained digits study (with a test split) and its bundle."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.url = f"sqlite:///{root / 'automl.db'}"
        self.artifacts_dir = root / "artifacts"
        self.store = store_at(self.url, root)
        # 3 epochs: about 94% test accuracy, in a few seconds.
        self.study_id = train_study(self.store, fixed={**TRAINED_SPEC["fixed"], "epochs": 3})
        self.bundle: Bundle = build_bundle(self.store, self.study_id)
        self.folder = root / "bundle"
        with zipfile.ZipFile(io.BytesIO(self.bundle.data)) as archive:
            archive.extractall(self.folder)
        self.trial = get_frozen_trial(self.store, self.study_id, self.bundle.trial_number)
        self.card: dict[str, Any] = json.loads((self.folder / "model_card.json").read_text())

    @contextmanager
    def app(self) -> Iterator[TestClient]:
        """A client of the API over the same database and artifacts."""
        settings = Settings(storage=self.url, artifacts_dir=self.artifacts_dir)
        client = TestClient(create_app(settings, reap=False))
        try:
            yield client
        finally:
            client.close()
            client.app.state.store.close()  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trained]:
    made = Trained(tmp_path_factory.mktemp("bundle"))
    yield made
    made.store.close()


@pytest.fixture(scope="module")
def no_automl_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv's Python that sees this environment's packages (numpy, Pillow,
    onnxruntime, torch) but not automl: the site-packages folder is added by a plain path
    line, so the ``.pth`` files in it (automl's editable install) are never run."""
    root = tmp_path_factory.mktemp("venv")
    venv.create(root, with_pip=False, symlinks=os.name != "nt")
    python = root / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    site = subprocess.run(
        [python, "-I", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(site, "system-packages.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python


def _run(python: Path, cwd: Path, code: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "AUTOML_"))}
    return subprocess.run(
        [str(python), "-I", "-c", code, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _predict(python: Path, folder: Path, images: list[Path], block: str | None) -> list[str]:
    """Runs the bundle's predict.py (with module ``block`` made unimportable); returns the
    top class of each image."""
    code = (
        "import sys, runpy\n"
        + (f"sys.modules[{block!r}] = None\n" if block else "")
        + "sys.argv = ['predict.py', *sys.argv[1:]]\n"
        + "runpy.run_path('predict.py', run_name='__main__')\n"
    )
    done = _run(python, folder, code, *map(str, images))
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    # The API's (and `automl predict --json`'s) shape: ImagePrediction.
    assert [ImagePrediction.model_validate(line).file for line in lines] == list(map(str, images))
    for line in lines:
        probabilities = [entry["probability"] for entry in line["top"]]
        assert len(probabilities) == 3 and probabilities == sorted(probabilities, reverse=True)
        assert [int(entry["label"]) for entry in line["top"]] == [e["index"] for e in line["top"]]
    return [line["top"][0]["label"] for line in lines]


def _images(trained: Trained, folder: Path) -> tuple[list[Path], torch.Tensor, list[Path]]:
    """Test images as 8x8 grayscale PNGs (the training size), and a few as larger RGB
    JPEGs (decoded, converted and resized as training would)."""
    data = digits_test_split()
    assert data.test_x is not None
    images = data.test_x[:N_IMAGES]
    pngs = write_pngs(images, folder / "png")
    jpegs = []
    for index in range(8):
        pixels = images[index, 0].numpy()
        big = Image.fromarray(pixels).resize((40, 30), Image.Resampling.NEAREST)
        path = folder / f"big{index}.jpg"
        big.convert("RGB").save(path, quality=95)
        jpegs.append(path)
    return pngs, images, jpegs


def images_labels(count: int) -> list[int]:
    """The labels of the first ``count`` test images."""
    labels = digits_test_split().test_y
    assert labels is not None
    return labels[:count].tolist()


def _in_process_classes(trained: Trained, paths: list[Path]) -> list[str]:
    """automl's own decoding, normalization and model, on image files."""
    config = config_of(trained.trial)
    data = digits_test_split()
    prep = preprocess_of(config.dataset.source, config.dataset.options, data.input_shape)
    arrays = torch.from_numpy(np.stack([decode_image(str(path), prep) for path in paths]))
    model = restore_model(
        config, load_state_dict(trained.trial, trained.store.artifacts), (1, 8, 8), 10
    )
    with torch.no_grad():
        indices = model(data.normalize(arrays)).argmax(dim=1).tolist()
    return [data.classes[index] for index in indices]


# --- contents -----------------------------------------------------------------------------------


def test_the_bundle_holds_weights_card_exports_and_a_predict_script(trained: Trained) -> None:
    with zipfile.ZipFile(io.BytesIO(trained.bundle.data)) as archive:
        assert sorted(archive.namelist()) == FILES
    assert trained.bundle.filename == (
        f"study{trained.study_id}-trial{trained.bundle.trial_number}-model.zip"
    )
    weights = safetensors.torch.load_file(trained.folder / "model.safetensors")
    stored = load_state_dict(trained.trial, trained.store.artifacts)
    assert weights.keys() == stored.keys()
    assert all(torch.equal(weights[name], stored[name]) for name in stored)
    # Short enough to read through: numpy and Pillow decoding as training, then the model.
    assert len((trained.folder / "predict.py").read_text().splitlines()) < 160
    exports = trained.card["bundle"]["exports"]
    assert exports["onnx"]["file"] == "model.onnx" and exports["onnx"]["error"] is None
    assert exports["torchscript"]["file"] == "model.torchscript.pt"


def test_the_model_card_describes_model_input_metrics_and_limits(trained: Trained) -> None:
    card, trial = trained.card, trained.trial
    data = digits_test_split()
    user_attrs = trial.user_attrs
    assert card["format"] == CARD_FORMAT
    assert card["model"]["architecture"] == "cnn"
    assert card["model"]["trial_number"] == trial.number
    assert card["model"]["parameters"] == user_attrs[attrs.METRICS]["params"]
    assert card["hyperparameters"] == user_attrs[attrs.CONFIG]  # every hyperparameter
    assert card["epoch"] == user_attrs[attrs.BEST_EPOCH]  # whose weights these are
    assert card["searched_params"] == trial.params
    assert card["classes"] == list(data.classes) == [str(digit) for digit in range(10)]
    given = card["input"]
    assert given["shape"] == [1, 8, 8] and (given["height"], given["width"]) == (8, 8)
    assert (given["channels"], given["color"], given["fit"], given["frames"]) == (
        1,
        "grayscale",
        "crop",
        None,
    )
    assert given["mean"] == pytest.approx(data.mean.tolist(), abs=0)
    assert given["std"] == pytest.approx(data.std.tolist(), abs=0)
    assert len(given["preprocessing"]) == 3
    assert card["dataset"] == {
        "source": "digits",
        "options": {"test_fraction": 0.2, "seed": 0},
        "fingerprint": data.fingerprint,
    }
    metrics = card["metrics"]
    assert metrics["validation"] == user_attrs[attrs.METRICS]
    assert metrics["validation_per_class"] == user_attrs[attrs.PER_CLASS]
    assert metrics["test"] == user_attrs[attrs.TEST_METRICS] and metrics["test"]["accuracy"] > 0
    assert metrics["test_per_class"] == user_attrs[attrs.TEST_PER_CLASS]
    assert card["objectives"] == [
        {"metric": "accuracy", "direction": "maximize", "value": trial.values[0]}
    ]
    for kind in ("training", "export"):
        assert card["libraries"][kind]["torch"] == importlib.metadata.version("torch")
        assert card["libraries"][kind]["automl"] == importlib.metadata.version("automl")

    limits = card["intended_use_and_limits"]
    assert limits["recall_split"] == "test"
    recalls = {row["class"]: row["recall"] for row in metrics["test_per_class"]}
    gaps = limits["recall"]
    assert gaps["lowest"]["recall"] == min(recalls.values())
    assert gaps["highest"]["recall"] == max(recalls.values())
    assert gaps["gap"] == pytest.approx(max(recalls.values()) - min(recalls.values()))
    assert [row["class"] for row in gaps["by_class"]] == sorted(
        recalls, key=lambda name: (recalls[name], name)
    )
    assert any("Per-class recall on the test split" in line for line in limits["limits"])


def test_a_trial_without_recorded_input_gets_the_same_card_input(trained: Trained) -> None:
    older = copy.deepcopy(trained.trial)
    older.user_attrs = {k: v for k, v in older.user_attrs.items() if k != attrs.INPUT}
    recorded = trained.trial.user_attrs[attrs.INPUT]
    assert trial_input(older, config_of(older)) == recorded  # from the dataset again


# --- predictions without automl ------------------------------------------------------------------


def test_predict_py_without_automl_agrees_with_the_service(
    trained: Trained, no_automl_python: Path, tmp_path: Path
) -> None:
    isolated = _run(no_automl_python, trained.folder, "import automl")
    assert isolated.returncode != 0 and "No module named 'automl'" in isolated.stderr

    pngs, images, jpegs = _images(trained, tmp_path)
    classes = trained.card["classes"]
    expected = [
        classes[i]
        for i in in_process_argmax(trained.store, trained.study_id, trained.trial.number, images)
    ]
    # onnxruntime, numpy and Pillow only: torch cannot even be imported.
    assert _predict(no_automl_python, trained.folder, pngs, block="torch") == expected
    labels = [str(label) for label in images_labels(N_IMAGES)]
    assert sum(e == label for e, label in zip(expected, labels, strict=True)) > 40  # it learned
    # Larger RGB JPEGs: converted, resized and cropped as training would have.
    assert _predict(no_automl_python, trained.folder, jpegs, block="torch") == (
        _in_process_classes(trained, jpegs)
    )
    # Without onnxruntime, the TorchScript export answers the same.
    assert _predict(no_automl_python, trained.folder, pngs, block="onnxruntime") == expected

    # The same images through the API's predict endpoint.
    with trained.app() as client:
        files = [("files", (path.name, path.read_bytes(), "image/png")) for path in pngs]
        response = client.post(f"/studies/{trained.study_id}/predict", files=files)
    assert response.status_code == 200, response.text
    served = response.json()
    assert served["model"]["trial_number"] == trained.trial.number
    assert [p["top"][0]["label"] for p in served["predictions"]] == expected


def _predict_script(
    python: Path, folder: Path, paths: list[Path]
) -> subprocess.CompletedProcess[str]:
    return _run(python, folder, PREDICT_CODE, *map(str, paths))


PREDICT_CODE = (
    "import sys, runpy\n"
    "sys.argv = ['predict.py', *sys.argv[1:]]\n"
    "runpy.run_path('predict.py', run_name='__main__')\n"
)


def test_predict_py_reports_each_bad_file_in_one_line_and_classifies_the_rest(
    trained: Trained, no_automl_python: Path, tmp_path: Path
) -> None:
    data = digits_test_split()
    assert data.test_x is not None
    good = write_pngs(data.test_x[:2], tmp_path / "good")
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good[0].read_bytes()[:60])
    text, empty, folder = tmp_path / "notes.txt", tmp_path / "empty.png", tmp_path / "folder"
    text.write_text("not an image")
    empty.write_bytes(b"")
    folder.mkdir()
    bad = [tmp_path / "missing.png", truncated, text, empty, folder]

    done = _predict_script(no_automl_python, trained.folder, [good[0], *bad, good[1]])

    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    errors = done.stderr.splitlines()
    assert [line.split(": ")[1] for line in errors] == [str(path) for path in bad], errors
    assert all(line.startswith("error: ") and len(line.split(": ")) >= 3 for line in errors)
    assert "no such file" in errors[0] and "is a directory" in errors[-1]
    assert errors[3] == f"error: {empty}: the file is empty (0 bytes)"
    printed = [json.loads(line)["file"] for line in done.stdout.splitlines()]
    assert printed == [str(good[0]), str(good[1])]
    alone = _predict_script(no_automl_python, trained.folder, good)
    assert alone.returncode == 0 and alone.stdout == done.stdout


def test_predict_py_refuses_a_large_image_in_one_line(
    trained: Trained, no_automl_python: Path, tmp_path: Path
) -> None:
    """Found by a tester: an image past Pillow's own limit (89.5 million pixels) printed
    Pillow's two-line DecompressionBombWarning before predict.py's refusal."""
    large = tmp_path / "large.png"
    large.write_bytes(png_declaring(10_000, 10_000))

    done = _predict_script(no_automl_python, trained.folder, [large])

    assert done.returncode == 1
    assert done.stderr == f"error: {large}: 10000x10000 pixels: more than 40000000\n"


def test_predict_py_refuses_a_side_over_65535_and_a_fifo_in_one_line_each(
    trained: Trained, no_automl_python: Path, tmp_path: Path
) -> None:
    """Found by a tester: ``automl predict`` refused both, while predict.py classified a
    70000x1 image and waited forever on a FIFO."""
    wide, fifo = tmp_path / "wide.png", tmp_path / "fifo.png"
    wide.write_bytes(png_declaring(70_000, 1))
    os.mkfifo(fifo)

    done = _predict_script(no_automl_python, trained.folder, [wide, fifo])

    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"error: {wide}: 70000x1 pixels: a side > 65535",
        f"error: {fifo}: not a regular file",
    ]


def test_predict_py_runs_the_model_on_a_few_hundred_images_at_a_time(
    trained: Trained, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    """Found by a tester: predict.py decoded every image given before running the model
    once: 1.2 GB for 8,000 images of 3x12x16, hundreds of times that at 224x224."""
    data = digits_test_split()
    assert data.test_x is not None
    [image] = write_pngs(data.test_x[:1], tmp_path / "images")
    script = runpy.run_path(str(trained.folder / "predict.py"), run_name="bundle")
    main = script["main"]
    model = main.__globals__["runner"]()
    batches: list[int] = []

    def counting() -> Callable[[Any], Any]:
        def run(batch: Any) -> Any:
            batches.append(len(batch))
            return model(batch)

        return run

    monkeypatch.setitem(main.__globals__, "runner", counting)
    assert main([str(image)] * 600) == 0

    assert batches == [256, 256, 88]
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 600 and len(set(lines)) == 1


def test_predict_py_keeps_the_pixel_limit_the_bundle_was_built_with(
    trained: Trained, no_automl_python: Path, tmp_path: Path
) -> None:
    """Found by a tester: predict.py refused images the service, built with a raised
    ``AUTOML_LIMIT_MAX_IMAGE_PIXELS``, classified (its limit was the default's)."""
    assert trained.card["bundle"]["max_image_pixels"] == Limits().max_image_pixels
    assert trained.card["bundle"]["selection"] == "best_trial"
    folder = tmp_path / "bundle"
    shutil.copytree(trained.folder, folder)
    card = json.loads((folder / "model_card.json").read_text())
    card["bundle"]["max_image_pixels"] = 50
    (folder / "model_card.json").write_text(json.dumps(card))
    data = digits_test_split()
    assert data.test_x is not None
    [image] = write_pngs(data.test_x[:1], tmp_path / "images")

    done = _predict_script(no_automl_python, folder, [image])

    assert (done.returncode, done.stderr) == (1, f"error: {image}: 8x8 pixels: more than 50\n")


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_predict_py_help_is_its_usage_not_a_file(
    trained: Trained, no_automl_python: Path, flag: str
) -> None:
    done = _predict_script(no_automl_python, trained.folder, [Path(flag)])
    assert (done.returncode, done.stderr) == (0, "")
    assert "python predict.py IMAGE [IMAGE ...]" in done.stdout


@pytest.mark.parametrize(
    ("missing", "needed"),
    [
        (("onnxruntime", "torch"), "needs onnxruntime (or torch) to run the model"),
        (("numpy",), "needs numpy and Pillow"),
        (("PIL",), "needs numpy and Pillow"),
    ],
)
def test_predict_py_names_the_packages_it_misses(
    trained: Trained,
    no_automl_python: Path,
    tmp_path: Path,
    missing: tuple[str, ...],
    needed: str,
) -> None:
    """Found by a tester: without onnxruntime and torch, a fresh machine's first run ended
    in a traceback naming torch only."""
    data = digits_test_split()
    assert data.test_x is not None
    [image] = write_pngs(data.test_x[:1], tmp_path)
    blocked = "".join(f"sys.modules[{name!r}] = None\n" for name in missing)

    done = _run(
        no_automl_python, trained.folder, "import sys\n" + blocked + PREDICT_CODE, str(image)
    )

    assert done.returncode == 1 and "Traceback" not in done.stderr
    [line] = done.stderr.splitlines()
    assert line.startswith(f"predict.py {needed}") and "pip install" in line


def test_predict_py_scales_16_bit_grayscale_to_8_bits(
    trained: Trained, no_automl_python: Path, tmp_path: Path
) -> None:
    """A 16-bit PNG of a digit (each 8-bit value v stored as v * 257) classifies as the
    8-bit PNG does: its top 8 bits are kept, not its values clipped at 255."""
    data = digits_test_split()
    assert data.test_x is not None
    images = data.test_x[:8]
    eight = write_pngs(images, tmp_path / "eight")
    sixteen = []
    for index, image in enumerate(images):
        wide = Image.fromarray(image[0].numpy().astype(np.uint16) * 257)
        assert wide.mode == "I;16"
        path = tmp_path / f"sixteen{index}.png"
        wide.save(path)
        sixteen.append(path)

    by_eight = _predict_script(no_automl_python, trained.folder, eight)
    by_sixteen = _predict_script(no_automl_python, trained.folder, sixteen)

    assert by_eight.returncode == by_sixteen.returncode == 0, by_sixteen.stderr
    tops = [
        [json.loads(line)["top"] for line in run.stdout.splitlines()]
        for run in (by_eight, by_sixteen)
    ]
    assert tops[0] == tops[1]


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_onnx_and_torchscript_outputs_match_pytorch(trained: Trained) -> None:
    data = digits_test_split()
    assert data.test_x is not None
    batch = data.normalize(data.test_x[:64])
    model = restore_model(
        config_of(trained.trial),
        load_state_dict(trained.trial, trained.store.artifacts),
        (1, 8, 8),
        10,
    )
    with torch.no_grad():
        reference = model(batch).numpy()
    session = onnxruntime.InferenceSession(
        str(trained.folder / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    scripted = torch.jit.load(str(trained.folder / "model.torchscript.pt"))
    for size in (1, 7, 64):  # the batch size is free
        onnx_logits = session.run(["logits"], {"images": batch[:size].numpy()})[0]
        np.testing.assert_allclose(onnx_logits, reference[:size], rtol=1e-4, atol=1e-4)
        with torch.no_grad():
            script_logits = scripted(batch[:size]).numpy()
        np.testing.assert_allclose(script_logits, reference[:size], rtol=1e-5, atol=1e-5)
        assert (onnx_logits.argmax(1) == reference[:size].argmax(1)).all()


# --- REST and CLI ---------------------------------------------------------------------------------


def test_get_best_model_returns_the_bundle(trained: Trained) -> None:
    no_weights = submit_study(trained.store, _spec("no-weights")).id
    drive(trained.store, no_weights, [0.5])  # completed, but kept no weights
    pending = submit_study(trained.store, _spec("pending")).id
    with trained.app() as client:
        response = client.get(f"/studies/{trained.study_id}/best/model")
        not_done = client.get(f"/studies/{pending}/best/model")
        gone = client.get(f"/studies/{no_weights}/best/model")
        unknown = client.get("/studies/9999/best/model")

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/zip"
    assert trained.bundle.filename in response.headers["content-disposition"]
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        assert sorted(archive.namelist()) == FILES
        served = json.loads(archive.read("model_card.json"))
    served["libraries"].pop("export")
    trained_card = {**trained.card, "libraries": dict(trained.card["libraries"])}
    trained_card["libraries"].pop("export")
    assert served == trained_card
    assert (not_done.status_code, not_done.json()) == (
        404,
        {"detail": f"study {pending} has no completed trial yet"},
    )
    assert (gone.status_code, gone.json()) == (404, {"detail": "trial 0 kept no weights"})
    assert unknown.status_code == 404


def _spec(name: str) -> Any:
    from automl.spec import validate_spec

    return validate_spec(tiny_spec_data(name=name))


def test_cli_best_download_writes_the_bundle_locally_and_over_http(
    trained: Trained, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    for name in list(os.environ):
        if name.startswith("AUTOML_"):
            monkeypatch.delenv(name)
    local = tmp_path / "local"
    target = ["--storage", trained.url, "--artifacts-dir", str(trained.artifacts_dir)]
    code = main(["best", str(trained.study_id), "--download", str(local), *target])
    out = capsys.readouterr().out
    assert code == 0, out
    assert sorted(path.name for path in local.iterdir()) == FILES
    assert f"trial {trained.trial.number}" in out and "predict.py IMAGE" in out

    remote = tmp_path / "remote"
    with trained.app() as api:

        class InProcessHttpClient(cli_client.HttpClient):
            def __init__(self, url: str) -> None:
                super().__init__(url)
                self._http.close()
                self._http = api

        monkeypatch.setattr(bundle_commands, "HttpClient", InProcessHttpClient)
        args = ["best", str(trained.study_id), "--download", str(remote), "--url", "http://a"]
        code = main([*args, "--json"])
    assert code == 0
    written = json.loads(capsys.readouterr().out)
    assert written == {
        "directory": str(remote),
        "files": FILES,
        "study_id": trained.study_id,
        "trial_number": trained.trial.number,
        "selection": "best_trial",
    }
    local_card = json.loads((local / "model_card.json").read_text())
    remote_card = json.loads((remote / "model_card.json").read_text())
    assert local_card["model"] == remote_card["model"]
    assert (local / "model.safetensors").read_bytes() == (remote / "model.safetensors").read_bytes()

    code = main(["best", "9999", "--download", str(tmp_path / "none"), *target])
    assert code == 2
    assert "study 9999 not found" in capsys.readouterr().err

    # A folder with other files is left alone unless --overwrite, as export does.
    (local / "model_card.json").write_text("mine")
    code = main(["best", str(trained.study_id), "--download", str(local), *target])
    assert code == 2
    assert "is not empty; choose a new folder or pass --overwrite" in capsys.readouterr().err
    assert (local / "model_card.json").read_text() == "mine"
    code = main(["best", str(trained.study_id), "--download", str(local), "--overwrite", *target])
    assert code == 0
    assert json.loads((local / "model_card.json").read_text())["model"] == local_card["model"]


def test_the_weights_route_names_the_format(trained: Trained) -> None:
    legacy = io.BytesIO()
    torch.save({"w": torch.arange(3.0)}, legacy)
    trained.store.artifacts.write("legacy-weights", io.BytesIO(legacy.getvalue()))
    older = submit_study(trained.store, _spec("older")).id
    [(_, trial_id)] = drive(trained.store, older, [0.5])
    with trained.store.write() as connection:  # as a release before safetensors kept them
        optuna_rows.put_trial_attrs(connection, trial_id, {attrs.WEIGHTS: "legacy-weights"})

    with trained.app() as client:
        new = client.get(f"/studies/{trained.study_id}/trials/{trained.trial.number}/weights")
        old = client.get(f"/studies/{older}/trials/0/weights")

    assert new.status_code == 200
    assert f"trial{trained.trial.number}.safetensors" in new.headers["content-disposition"]
    weights = safetensors.torch.load(new.content)
    assert weights.keys() == load_state_dict(trained.trial, trained.store.artifacts).keys()
    assert old.status_code == 200
    assert f"study{older}-trial0.pt" in old.headers["content-disposition"]
    assert old.content == legacy.getvalue()
    assert torch.equal(
        torch.load(io.BytesIO(old.content), weights_only=True)["w"], torch.arange(3.0)
    )


def test_a_clip_models_bundle_offers_no_image_command(
    data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    """Once a clip model's card and `best --download` offered `predict.py IMAGE`, which
    refuses clips, and described the input as (C, H, W)."""
    write_moving_shapes(data_root / "clips", clips=6, frames=2, size=8, seed=0)
    store = store_at(f"sqlite:///{tmp_path / 'clips.db'}", tmp_path)
    try:
        study_id = train_study(
            store,
            name="clips",
            dataset={
                "source": "frame_sequences",
                "options": {"path": "clips", "size": 8, "frames": 2},
            },
            budget={"n_trials": 1, "max_failed": 0},
            fixed={"model": "frame_pool", "epochs": 1, "width": 4, "depth": 1, "batch_size": 8},
            params={},
        )
        card = build_bundle(store, study_id).card
    finally:
        store.close()

    assert card["bundle"]["predict"] is None
    assert card["bundle"]["input_layout"] == "float32 (N, T, C, H, W)"
    assert "(T, C, H, W), the clip's 2 frames in order" in card["input"]["preprocessing"][-1]


# --- the serving process's cache -----------------------------------------------------------------


def test_the_cache_builds_a_bundle_once_for_concurrent_first_requests(trained: Trained) -> None:
    cache = BundleCache()
    together = threading.Barrier(4)

    def download(_: int) -> Bundle:
        together.wait()
        return cache.get(trained.store, trained.study_id)

    with ThreadPoolExecutor(4) as pool:
        bundles = list(pool.map(download, range(4)))

    assert cache.builds == 1 and len(cache) == 1
    assert all(bundle is bundles[0] for bundle in bundles)
    assert bundles[0].digest == hashlib.sha256(bundles[0].data).hexdigest()
    assert bundles[0].card == trained.card  # what build_bundle builds
    with zipfile.ZipFile(io.BytesIO(bundles[0].data)) as archive:
        assert sorted(archive.namelist()) == FILES


def test_a_bundle_over_the_caches_byte_budget_is_served_but_not_kept(trained: Trained) -> None:
    cache = BundleCache(max_bytes=len(trained.bundle.data) // 2)
    first, second = (cache.get(trained.store, trained.study_id) for _ in range(2))

    assert cache.builds == 2 and len(cache) == 0
    assert first.filename == second.filename == trained.bundle.filename


def test_a_trial_without_weights_or_card_is_refused_for_its_weights(trained: Trained) -> None:
    """The cache reads the card before the weights; the missing weights are still the error."""
    no_weights = submit_study(trained.store, _spec("no-weights-cached")).id
    drive(trained.store, no_weights, [0.5])
    with pytest.raises(WeightsNotFoundError, match="trial 0 kept no weights"):
        BundleCache().get(trained.store, no_weights)
