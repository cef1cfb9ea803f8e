"""``POST /studies/{id}/predict`` and ``/annotate``: right answers, limits, confined paths."""

from __future__ import annotations

import csv
import io
import os
import stat
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from automl.api.app import PREDICTIONS_AT_ONCE
from automl.api.routes import predict as predict_routes
from automl.data import DATASETS
from automl.data.manifest import read_manifest
from automl.delivery.inference import MODELS, InputRejectedError
from tests.api.conftest import close_client, make_client
from tests.delivery.trained import (
    digits_test_split,
    in_process_argmax,
    png_bytes,
    png_declaring,
    train_study,
    write_pngs,
)

N_IMAGES = 30

Files = list[tuple[str, tuple[str, bytes, str]]]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, int]]:
    """A client whose store holds a trained digits study."""
    root = tmp_path_factory.mktemp("served")
    client = make_client(f"sqlite:///{root / 'automl.db'}", root / "artifacts")
    study_id = train_study(client.app.state.store)  # type: ignore[attr-defined]
    yield client, study_id
    close_client(client)


@pytest.fixture(scope="module")
def test_images() -> tuple[torch.Tensor, list[int]]:
    """The first test-split digits (never trained on) and their labels."""
    data = digits_test_split()
    assert data.test_x is not None and data.test_y is not None
    return data.test_x[:N_IMAGES], data.test_y[:N_IMAGES].tolist()


def files_of(images: torch.Tensor) -> Files:
    return [
        ("files", (f"digit{i:02d}.png", png_bytes(image), "image/png"))
        for i, image in enumerate(images)
    ]


def artifact_files(client: TestClient) -> set[Path]:
    folder = client.app.state.settings.artifacts_dir  # type: ignore[attr-defined]
    return {path for path in Path(folder).rglob("*") if path.is_file()}


def error_messages(response: httpx.Response) -> list[tuple[list[Any], str]]:
    return [(error["loc"], error["msg"]) for error in response.json()["detail"]]


# --- predictions ---------------------------------------------------------------------------


def test_predict_agrees_with_the_trained_model(
    served: tuple[TestClient, int], test_images: tuple[torch.Tensor, list[int]]
) -> None:
    client, study_id = served
    images, labels = test_images

    response = client.post(f"/studies/{study_id}/predict", files=files_of(images))

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"]["study_id"] == study_id
    assert body["model"]["selection"] == "best_trial"
    assert body["model"]["classes"] == [str(digit) for digit in range(10)]
    assert body["model"]["input_shape"] == [1, 8, 8]
    predictions = body["predictions"]
    assert [p["file"] for p in predictions] == [f"digit{i:02d}.png" for i in range(N_IMAGES)]
    top1 = [int(p["top"][0]["label"]) for p in predictions]
    accuracy = sum(a == b for a, b in zip(top1, labels, strict=True)) / N_IMAGES
    assert accuracy >= 0.8, f"top-1 accuracy {accuracy:.2f}: preprocessing differs from training"
    store = client.app.state.store  # type: ignore[attr-defined]
    assert top1 == in_process_argmax(store, study_id, body["model"]["trial_number"], images)
    for prediction in predictions:
        probabilities = [score["probability"] for score in prediction["top"]]
        assert len(probabilities) == 3
        assert probabilities == sorted(probabilities, reverse=True)
        assert 0 < sum(probabilities) <= 1 + 1e-6


def test_predict_top_and_larger_rgb_images(
    served: tuple[TestClient, int], test_images: tuple[torch.Tensor, list[int]]
) -> None:
    """Any size and mode is decoded as training decodes: converted, then scaled to 8x8."""
    client, study_id = served
    images, _ = test_images
    same = png_bytes(images[0])
    buffer = io.BytesIO()
    larger = Image.open(io.BytesIO(same)).convert("RGB").resize((24, 24))
    larger.save(buffer, "JPEG", quality=95)

    response = client.post(
        f"/studies/{study_id}/predict",
        params={"top": 10},
        files=[("files", ("a.png", same, "image/png")), ("files", ("b.jpg", buffer.getvalue()))],
    )

    assert response.status_code == 200, response.text
    first, second = response.json()["predictions"]
    assert len(first["top"]) == 10
    assert sum(score["probability"] for score in first["top"]) == pytest.approx(1, abs=1e-5)
    assert second["file"] == "b.jpg"


@pytest.mark.parametrize(
    ("parts", "field", "what"),
    [
        ({"files": ("a.png", b"x"), "file": ("b.png", b"x")}, "file", "field"),
        ({"files": ("a.png", b"x"), "top": (None, b"2")}, "top", "form field"),
    ],
    ids=["misnamed-file", "form-value"],
)
def test_parts_other_than_files_are_refused(
    served: tuple[TestClient, int], parts: dict[str, Any], field: str, what: str
) -> None:
    """Found by a tester: ``-F file=@a.png`` (not ``files``) was served, as any part."""
    client, study_id = served
    response = client.post(f"/studies/{study_id}/predict", files=parts)

    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", field]
    assert error["msg"] == (
        f"unexpected {what} {field!r}: send the images as files in field 'files' "
        "(curl -F files=@a.png)"
    )


def test_model_is_loaded_once(
    served: tuple[TestClient, int], test_images: tuple[torch.Tensor, list[int]]
) -> None:
    client, study_id = served
    files = files_of(test_images[0][:2])
    MODELS.clear()
    loads = MODELS.loads

    for _ in range(3):
        assert client.post(f"/studies/{study_id}/predict", files=files).status_code == 200

    assert MODELS.loads == loads + 1


def test_predict_unknown_study_is_404(served: tuple[TestClient, int]) -> None:
    client, _ = served
    png = png_bytes(torch.zeros(1, 8, 8, dtype=torch.uint8))

    response = client.post("/studies/999/predict", files=[("files", ("a.png", png))])

    assert response.status_code == 404
    assert response.json() == {"detail": "study 999 not found"}


def test_predict_before_a_trial_completed_is_404(client: TestClient, submit: Any) -> None:
    study_id = submit()["id"]
    png = png_bytes(torch.zeros(1, 8, 8, dtype=torch.uint8))

    response = client.post(f"/studies/{study_id}/predict", files=[("files", ("a.png", png))])

    assert response.status_code == 404
    assert "no completed trial" in response.json()["detail"]


def test_openapi_declares_the_routes(served: tuple[TestClient, int]) -> None:
    client, _ = served
    paths = client.get("/openapi.json").json()["paths"]

    predict = paths["/studies/{study_id}/predict"]["post"]
    annotate = paths["/studies/{study_id}/annotate"]["post"]

    assert "multipart/form-data" in predict["requestBody"]["content"]
    assert {"200", "404", "409", "413", "422"} <= set(predict["responses"])
    assert predict["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Predictions"
    }
    assert annotate["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Annotations"
    }
    for operation in (predict, annotate):
        errors = operation["responses"]
        assert errors["422"]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/HTTPValidationError"
        }
        assert errors["404"]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/ErrorDetail"
        }


# --- limits: refused with the documented status, before any work ---------------------------


def test_upload_over_the_limit_is_413(
    served: tuple[TestClient, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    client, study_id = served
    monkeypatch.setenv("AUTOML_LIMIT_MAX_UPLOAD_BYTES", "2000")
    before = artifact_files(client)
    files = [("files", ("big.png", os.urandom(4000), "image/png"))]

    response = client.post(f"/studies/{study_id}/predict", files=files)

    assert response.status_code == 413
    assert "max_upload_bytes: 2000" in response.json()["detail"]
    assert artifact_files(client) == before


def test_streamed_upload_over_the_limit_is_413(
    served: tuple[TestClient, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a Content-Length the body is counted as it arrives."""
    client, study_id = served
    monkeypatch.setenv("AUTOML_LIMIT_MAX_UPLOAD_BYTES", "2000")
    request = httpx.Request(
        "POST", "http://x/", files=[("files", ("big.png", os.urandom(4000), "image/png"))]
    )
    body = request.read()

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 500):
            yield body[start : start + 500]

    response = client.post(
        f"/studies/{study_id}/predict",
        content=chunks(),
        headers={"content-type": request.headers["content-type"]},
    )

    assert response.status_code == 413
    assert "max_upload_bytes" in response.json()["detail"]


def test_too_many_images_is_422(
    served: tuple[TestClient, int],
    test_images: tuple[torch.Tensor, list[int]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client, study_id = served
    monkeypatch.setenv("AUTOML_LIMIT_MAX_IMAGES", "2")
    MODELS.clear()
    loads = MODELS.loads

    response = client.post(f"/studies/{study_id}/predict", files=files_of(test_images[0][:3]))

    assert response.status_code == 422
    [(loc, message)] = error_messages(response)
    assert loc == ["body", "files"]
    assert "max_images allows 2" in message
    assert MODELS.loads == loads, "refused before the model loads"


def test_many_image_parts_are_refused_without_reading_them_all(
    served: tuple[TestClient, int],
) -> None:
    """Found by a tester: a 20 MB body of 300,000 empty parts was parsed whole (10 s and
    400 MB on the event loop) before the image count was checked."""
    client, study_id = served
    files = [("files", (f"{i}.png", b"", "image/png")) for i in range(5_000)]

    response = client.post(f"/studies/{study_id}/predict", files=files)

    assert response.status_code == 422
    [(loc, message)] = error_messages(response)
    assert loc == ["body", "files"]
    assert message.startswith("more than 64 images; max_images allows 64 per request")


def test_slow_predictions_leave_the_other_routes_their_threads(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by a tester: five predict requests of slow images (within every limit) held all
    of the API's threads for minutes; another project's ``GET /studies/9`` took 290 s."""
    running = threading.Semaphore(0)
    release = threading.Event()

    def slow_predict(*args: object, **kwargs: object) -> None:
        running.release()
        release.wait(60)
        raise InputRejectedError("released", ("files",))

    monkeypatch.setattr(predict_routes, "predict_uploads", slow_predict)
    client = make_client(sqlite_url, tmp_path / "artifacts", api_threads=2)
    image = [("files", ("a.png", png_bytes(torch.zeros(1, 8, 8, dtype=torch.uint8)), "image/png"))]
    try:
        with client, ThreadPoolExecutor(6) as pool:
            predictions = [
                pool.submit(client.post, "/studies/1/predict", files=image) for _ in range(5)
            ]
            for _ in range(PREDICTIONS_AT_ONCE):
                assert running.acquire(timeout=30)
            listing = pool.submit(client.get, "/studies").result(timeout=30)
            assert listing.status_code == 200
            assert not running.acquire(timeout=0.5), "more predictions at once than allowed"
            release.set()
            assert [p.result(timeout=60).status_code for p in predictions] == [422] * 5
    finally:
        release.set()
        close_client(client)


@pytest.mark.parametrize(
    ("width", "height"),
    [(8000, 8000), (100_000, 100_000)],
    ids=["over-the-limit", "over-pillows-own-limit"],
)
def test_decompression_bomb_is_422(served: tuple[TestClient, int], width: int, height: int) -> None:
    """A tiny file that declares a huge image is refused from its header alone."""
    client, study_id = served
    ok = png_bytes(torch.zeros(1, 8, 8, dtype=torch.uint8))
    files = [("files", ("ok.png", ok)), ("files", ("bomb.png", png_declaring(width, height)))]

    response = client.post(f"/studies/{study_id}/predict", files=files)

    assert response.status_code == 422
    [(loc, message)] = error_messages(response)
    assert loc == ["body", "files", 1]
    assert "'bomb.png'" in message
    assert "max_image_pixels" in message


@pytest.mark.parametrize(("width", "height"), [(1, 65_536), (70_000, 2)])
def test_a_side_over_65535_pixels_is_422(
    served: tuple[TestClient, int], width: int, height: int
) -> None:
    """Found by a tester: 1 x 40,000,000 PNGs (78 KB, within max_image_pixels) took 1.3 s
    each to decode, row by row; 64 of them a request held the API for over a minute."""
    client, study_id = served
    files = [("files", ("strip.png", png_declaring(width, height)))]

    response = client.post(f"/studies/{study_id}/predict", files=files)

    assert response.status_code == 422
    [(loc, message)] = error_messages(response)
    assert loc == ["body", "files", 0]
    assert message == f"image 'strip.png' is {width}x{height} pixels; no side may be over 65535"


def test_pixel_limit_is_a_setting(
    served: tuple[TestClient, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    client, study_id = served
    monkeypatch.setenv("AUTOML_LIMIT_MAX_IMAGE_PIXELS", "63")
    png = png_bytes(torch.zeros(1, 8, 8, dtype=torch.uint8))

    response = client.post(f"/studies/{study_id}/predict", files=[("files", ("a.png", png))])

    assert response.status_code == 422
    assert "has 8x8 = 64 pixels; max_image_pixels allows 63" in response.text


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"not an image at all", "is not a png, jpeg, webp or bmp image"),
        (b"GIF89a\x01\x00\x01\x00\x00\x00\x00;", "is not a png, jpeg, webp or bmp image"),
        (None, "cannot decode image"),
        (b"", "is empty (0 bytes)"),
    ],
    ids=["text", "gif", "truncated", "empty"],
)
def test_undecodable_image_is_422(
    served: tuple[TestClient, int], content: bytes | None, expected: str
) -> None:
    client, study_id = served
    if content is None:
        content = truncated_png()

    response = client.post(f"/studies/{study_id}/predict", files=[("files", ("x.png", content))])

    assert response.status_code == 422
    [(loc, message)] = error_messages(response)
    assert loc == ["body", "files", 0]
    assert "'x.png'" in message
    assert expected in message


def truncated_png() -> bytes:
    """A PNG whose header is whole and whose pixels are cut off."""
    buffer = io.BytesIO()
    Image.effect_noise((64, 64), 50).save(buffer, "PNG")
    return buffer.getvalue()[:200]


def test_every_bad_file_of_a_request_is_named_at_once(served: tuple[TestClient, int]) -> None:
    """Found by a tester: a truncated file passes the header checks, so it was only named
    by the next request, once the files refused from their headers were fixed."""
    client, study_id = served
    ok = png_bytes(torch.zeros(1, 8, 8, dtype=torch.uint8))
    files = [
        ("files", ("ok.png", ok)),
        ("files", ("cut.png", truncated_png())),
        ("files", ("text.png", b"not an image at all")),
        ("files", ("empty.png", b"")),
    ]

    response = client.post(f"/studies/{study_id}/predict", files=files)

    assert response.status_code == 422
    [(loc, message)] = error_messages(response)
    assert loc == ["body", "files"]
    assert message.startswith("3 files cannot be used: cannot decode image 'cut.png': ")
    assert "; 'text.png' is not a png" in message and "; 'empty.png' is empty" in message


@pytest.mark.parametrize(
    "request_args",
    [
        {"json": {"files": []}},
        {"files": [("note", (None, "no file"))]},
        {"content": b"--b\r\nbroken", "headers": {"content-type": "multipart/form-data"}},
    ],
    ids=["json", "no-files", "malformed"],
)
def test_request_without_images_is_422(
    served: tuple[TestClient, int], request_args: dict[str, Any]
) -> None:
    client, study_id = served

    response = client.post(f"/studies/{study_id}/predict", **request_args)

    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"][0] == "body"


def test_top_out_of_range_is_422(served: tuple[TestClient, int]) -> None:
    client, study_id = served
    png = png_bytes(torch.zeros(1, 8, 8, dtype=torch.uint8))

    response = client.post(
        f"/studies/{study_id}/predict", params={"top": 0}, files=[("files", ("a.png", png))]
    )

    assert response.status_code == 422


# --- annotation assist ---------------------------------------------------------------------


@pytest.fixture
def unlabeled(data_root: Path, test_images: tuple[torch.Tensor, list[int]]) -> Path:
    """The test digits as PNGs in ``<data root>/inbox``, without labels."""
    write_pngs(test_images[0], data_root / "inbox")
    return data_root / "inbox"


def test_annotate_suggests_one_label_per_image_least_confident_first(
    served: tuple[TestClient, int],
    unlabeled: Path,
    test_images: tuple[torch.Tensor, list[int]],
) -> None:
    client, study_id = served

    response = client.post(f"/studies/{study_id}/annotate", json={"path": "inbox"})

    assert response.status_code == 200, response.text
    body = response.json()
    suggestions = body["suggestions"]
    assert body["folder"] == "inbox"
    assert body["count"] == len(suggestions) == N_IMAGES
    assert body["csv"] is None
    assert sorted(s["path"] for s in suggestions) == [
        f"inbox/digit{i:03d}.png" for i in range(N_IMAGES)
    ]
    confidences = [s["confidence"] for s in suggestions]
    assert confidences == sorted(confidences)
    truth = {f"inbox/digit{i:03d}.png": str(label) for i, label in enumerate(test_images[1])}
    correct = sum(s["label"] == truth[s["path"]] for s in suggestions)
    assert correct >= 0.8 * N_IMAGES
    for suggestion in suggestions:
        assert suggestion["label"] == suggestion["top"][0]["label"]
        assert suggestion["confidence"] == suggestion["top"][0]["probability"]
    assert not any(unlabeled.glob("*.csv")), "nothing written without write_csv"


def test_annotate_writes_a_csv_that_image_csv_reads(
    served: tuple[TestClient, int], unlabeled: Path, data_root: Path
) -> None:
    client, study_id = served

    response = client.post(
        f"/studies/{study_id}/annotate", json={"path": "inbox", "write_csv": "labels.csv"}
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["csv"] == "labels.csv"
    with open(data_root / "labels.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    suggestions = body["suggestions"]
    assert [row["path"] for row in rows] == [s["path"] for s in suggestions]
    assert [row["label"] for row in rows] == [s["label"] for s in suggestions]
    assert [float(row["confidence"]) for row in rows] == pytest.approx(
        [s["confidence"] for s in suggestions], abs=1e-6
    )
    read = read_manifest("labels.csv")
    assert [(path, label) for path, label in read] == [
        (data_root / s["path"], s["label"]) for s in suggestions
    ]
    options = {"path": "labels.csv", "size": 8, "channels": "grayscale"}
    DATASETS.get("image_csv").parse_options(options)  # a valid image_csv dataset


def test_annotate_csv_inside_the_folder_and_overwrite(
    served: tuple[TestClient, int], unlabeled: Path
) -> None:
    client, study_id = served
    url = f"/studies/{study_id}/annotate"
    body = {"path": "inbox", "write_csv": "inbox/labels.csv"}

    first = client.post(url, json=body)
    again = client.post(url, json=body)
    replaced = client.post(url, json={**body, "overwrite": True})

    assert first.status_code == 200, first.text
    assert again.status_code == 422
    assert error_messages(again)[0][0] == ["body", "write_csv"]
    assert "exists" in error_messages(again)[0][1]
    assert replaced.status_code == 200
    rows = read_manifest("inbox/labels.csv")
    assert len(rows) == N_IMAGES
    assert rows[0][0].parent == unlabeled
    assert [p.name for p in unlabeled.iterdir() if p.suffix == ".csv"] == ["labels.csv"]


def test_annotate_csv_is_readable_as_any_new_file_and_keeps_a_replaced_files_mode(
    served: tuple[TestClient, int], unlabeled: Path
) -> None:
    """Once every CSV came out 0600: workers running as another user could not read it."""
    client, study_id = served
    url = f"/studies/{study_id}/annotate"
    body = {"path": "inbox", "write_csv": "inbox/labels.csv"}
    umask = os.umask(0o022)
    try:
        assert client.post(url, json=body).status_code == 200
        created = stat.S_IMODE((unlabeled / "labels.csv").stat().st_mode)
        (unlabeled / "labels.csv").chmod(0o640)
        assert client.post(url, json={**body, "overwrite": True}).status_code == 200
        replaced = stat.S_IMODE((unlabeled / "labels.csv").stat().st_mode)
    finally:
        os.umask(umask)
    assert (created, replaced) == (0o644, 0o640)
    assert [p.name for p in unlabeled.iterdir() if p.suffix in (".csv", ".tmp")] == ["labels.csv"]


def test_annotate_too_many_images_is_422(
    served: tuple[TestClient, int], unlabeled: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, study_id = served
    monkeypatch.setenv("AUTOML_LIMIT_MAX_ANNOTATE_IMAGES", "5")

    response = client.post(
        f"/studies/{study_id}/annotate", json={"path": "inbox", "write_csv": "inbox/labels.csv"}
    )

    assert response.status_code == 422
    [(loc, message)] = error_messages(response)
    assert loc == ["body", "path"]
    assert f"has {N_IMAGES} images; max_annotate_images allows 5" in message
    assert not (unlabeled / "labels.csv").exists()


def test_annotate_bomb_in_the_folder_is_422(
    served: tuple[TestClient, int], unlabeled: Path
) -> None:
    client, study_id = served
    (unlabeled / "zz-bomb.png").write_bytes(png_declaring(20_000, 20_000))

    response = client.post(
        f"/studies/{study_id}/annotate", json={"path": "inbox", "write_csv": "out.csv"}
    )

    assert response.status_code == 422
    [(_, message)] = error_messages(response)
    assert "'inbox/zz-bomb.png'" in message
    assert "max_image_pixels" in message
    assert not (unlabeled.parent / "out.csv").exists()


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("path", "../outside", "must not contain '..'"),
        ("path", "inbox/../../outside", "must not contain '..'"),
        ("path", "/etc", "outside the data root"),
        ("path", "%2e%2e/outside", "percent-encoded"),
        ("path", "inbox\x00", "NUL"),
        ("path", "link-out", "outside the data root"),
        ("path", "missing", "not found"),
        ("path", "inbox/digit000.png", "is not a folder"),
        ("write_csv", "../labels.csv", "must not contain '..'"),
        ("write_csv", "/tmp/labels.csv", "outside the data root"),
        ("write_csv", "link-out/labels.csv", "outside the data root"),
        ("write_csv", "labels.txt", "must name a .csv file"),
        ("write_csv", "elsewhere/labels.csv", "not found"),
        ("write_csv", "inbox/sub/labels.csv", "not found"),
        ("write_csv", "other/labels.csv", "in the annotated folder or a folder above it"),
        ("write_csv", "inbox/a\nb.csv", "unprintable character U+000A in the file name"),
        ("write_csv", "inbox/a\u200bb.csv", "unprintable character U+200B"),
    ],
)
def test_annotate_paths_are_confined(
    served: tuple[TestClient, int],
    unlabeled: Path,
    data_root: Path,
    tmp_path: Path,
    field: str,
    value: str,
    expected: str,
) -> None:
    client, study_id = served
    outside = tmp_path / "outside"
    outside.mkdir()
    (data_root / "link-out").symlink_to(outside, target_is_directory=True)
    (data_root / "other").mkdir()
    body = {"path": "inbox", field: value}
    before = {p for p in tmp_path.rglob("*")}

    response = client.post(f"/studies/{study_id}/annotate", json=body)

    assert response.status_code == 422, response.text
    [(loc, message)] = error_messages(response)
    assert loc == ["body", field]
    assert expected in message
    assert {p for p in tmp_path.rglob("*")} == before, "a refused request writes nothing"


def test_annotate_symlinked_image_out_of_the_root_is_422(
    served: tuple[TestClient, int], unlabeled: Path, tmp_path: Path
) -> None:
    client, study_id = served
    secret = tmp_path / "secret.png"
    Image.new("L", (8, 8)).save(secret)
    (unlabeled / "leak.png").symlink_to(secret)

    response = client.post(f"/studies/{study_id}/annotate", json={"path": "inbox"})

    assert response.status_code == 422
    assert "symlink outside the data root" in error_messages(response)[0][1]


def test_annotate_unknown_field_is_422(served: tuple[TestClient, int], unlabeled: Path) -> None:
    client, study_id = served

    response = client.post(f"/studies/{study_id}/annotate", json={"path": "inbox", "csv": "x"})

    assert response.status_code == 422
