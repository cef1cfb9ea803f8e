"""``automl predict`` and ``automl annotate``, on the local store and over the API."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient

from automl.api import create_app
from automl.api.routes import predict as predict_route
from automl.cli import client as cli_client
from automl.cli import predict_commands
from automl.config import Limits, Settings
from automl.data.manifest import read_manifest
from automl.delivery import inference
from tests.cli.local_store import Run, cli_runner, point_cli_at, trained_store
from tests.delivery.trained import digits_test_split, png_declaring, write_pngs


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path, int]:
    """A SQLite store with one trained digits study: (url, artifacts folder, study id)."""
    return trained_store(tmp_path_factory.mktemp("cli-trained"))


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, list[int]]:
    data = digits_test_split()
    assert data.test_x is not None and data.test_y is not None
    return data.test_x[:10], data.test_y[:10].tolist()


@pytest.fixture(autouse=True)
def _isolated(
    monkeypatch: pytest.MonkeyPatch, trained: tuple[str, Path, int], tmp_path: Path
) -> None:
    point_cli_at(monkeypatch, trained, tmp_path)


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Run:
    return cli_runner(capsys)


@pytest.fixture
def api_url(monkeypatch: pytest.MonkeyPatch, trained: tuple[str, Path, int]) -> Iterator[str]:
    """Routes the CLI's HTTP client to an in-process API over the same store."""
    url, artifacts, _ = trained
    app = create_app(Settings(storage=url, artifacts_dir=artifacts))
    base_url = "http://api.test"

    class InProcessHttpClient(cli_client.HttpClient):
        def __init__(self, url: str) -> None:
            super().__init__(url)
            self._http.close()
            self._http = TestClient(app, base_url=self.base_url)

    monkeypatch.setattr(predict_commands, "HttpClient", InProcessHttpClient)
    yield base_url
    app.state.store.close()


@pytest.fixture(params=["local", "http"])
def target(request: pytest.FixtureRequest) -> list[str]:
    """What a test's commands add to run on the local store, then over the API."""
    return ["--url", request.getfixturevalue("api_url")] if request.param == "http" else []


@pytest.fixture
def images(tmp_path: Path, digits: tuple[torch.Tensor, list[int]]) -> list[Path]:
    return write_pngs(digits[0], tmp_path / "images")


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    return lines[0]


def test_predict_prints_a_table(
    cli: Run,
    trained: tuple[str, Path, int],
    images: list[Path],
    digits: tuple[torch.Tensor, list[int]],
) -> None:
    _, _, study_id = trained

    code, out, err = cli("predict", str(study_id), *map(str, images))

    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith(f"study {study_id}, trial ")
    assert lines[0].endswith("(best trial)")
    assert lines[2].split() == ["FILE", "LABEL", "PROBABILITY", "NEXT"]
    rows = [line.split() for line in lines[4:]]
    assert [row[0] for row in rows] == [str(path) for path in images]
    correct = sum(row[1] == str(label) for row, label in zip(rows, digits[1], strict=True))
    assert correct >= 8


def test_predict_json_is_the_same_locally_and_over_http(
    cli: Run, trained: tuple[str, Path, int], images: list[Path], api_url: str
) -> None:
    _, _, study_id = trained

    local = cli("predict", str(study_id), *map(str, images[:3]), "--top", "2", "--json")
    remote = cli(
        "predict", str(study_id), *map(str, images[:3]), "--top", "2", "--json", "--url", api_url
    )

    assert local[0] == remote[0] == 0, local[2] + remote[2]
    local_body, remote_body = json.loads(local[1]), json.loads(remote[1])
    assert [len(p["top"]) for p in local_body["predictions"]] == [2, 2, 2]
    assert local_body == remote_body


def test_predictions_name_files_as_typed(
    cli: Run, trained: tuple[str, Path, int], images: list[Path], target: list[str]
) -> None:
    """Once two x.png from two folders were both called x.png."""
    _, _, study_id = trained
    same = []
    for folder in ("a", "b"):
        (images[0].parent / folder).mkdir()
        same.append(images[0].parent / folder / "x.png")
        same[-1].write_bytes(images[0].read_bytes())
    code, out, err = cli("predict", str(study_id), *map(str, same), "--json", *target)

    assert code == 0, err
    assert [p["file"] for p in json.loads(out)["predictions"]] == [str(path) for path in same]


def test_a_file_name_that_is_not_utf_8_is_shown_with_a_replacement_character(
    cli: Run, trained: tuple[str, Path, int], images: list[Path], target: list[str]
) -> None:
    """Found by a reviewer: ``--json`` ended in a serialization traceback."""
    _, _, study_id = trained
    odd = images[0].parent / os.fsdecode(b"caf\xe9.png")  # Latin-1, not UTF-8
    odd.write_bytes(images[0].read_bytes())

    code, out, err = cli("predict", str(study_id), str(odd), "--json", *target)
    table = cli("predict", str(study_id), str(odd), *target)

    assert code == table[0] == 0, err + table[2]
    assert json.loads(out)["predictions"][0]["file"] == str(odd.parent / "caf\ufffd.png")
    assert "caf\ufffd.png" in table[1]


def test_predict_refusals_are_one_line_exit_2(
    cli: Run,
    trained: tuple[str, Path, int],
    images: list[Path],
    tmp_path: Path,
    target: list[str],
) -> None:
    _, _, study_id = trained
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_declaring(20_000, 20_000))

    missing = cli("predict", str(study_id), "absent.png", *target)
    unknown = cli("predict", "999", str(images[0]), *target)
    bombed = cli("predict", str(study_id), str(images[0]), str(bomb), *target)

    assert missing[0] == unknown[0] == bombed[0] == 2
    assert "cannot read image absent.png" in one_error_line(missing[2])
    assert one_error_line(unknown[2]) == "error: study 999 not found"
    line = one_error_line(bombed[2])
    assert line.startswith(f"error: files[1]: image '{bomb}' has more than ")
    assert "max_image_pixels" in line


def test_predict_upload_limit_is_checked_before_reading(
    cli: Run,
    trained: tuple[str, Path, int],
    images: list[Path],
    monkeypatch: pytest.MonkeyPatch,
    api_url: str,
) -> None:
    """No file is read whole first (a 6 GB file was a MemoryError): over HTTP the files
    stream to the API, which refuses the upload (413) as it arrives, with its own limit."""
    _, _, study_id = trained
    monkeypatch.setenv("AUTOML_LIMIT_MAX_UPLOAD_BYTES", "10")  # the in-process API's
    monkeypatch.setattr(Path, "read_bytes", _never_read)

    code, _, err = cli("predict", str(study_id), str(images[0]), "--url", api_url)

    assert code == 2
    line = one_error_line(err)
    assert "max_upload_bytes" in line
    # Found by a tester: the API's 413 names no file; a request of one file is that file.
    assert line.startswith(f"error: files[0] '{images[0]}' alone: ")


def test_local_predict_classifies_any_number_of_files_from_disk(
    cli: Run,
    trained: tuple[str, Path, int],
    images: list[Path],
    monkeypatch: pytest.MonkeyPatch,
    api_url: str,
) -> None:
    """Found by a tester: a local run refused more than the API's 64 images per request."""
    _, _, study_id = trained
    for name in ("AUTOML_LIMIT_MAX_IMAGES", "AUTOML_LIMIT_MAX_UPLOAD_BYTES"):
        monkeypatch.setenv(name, "3")  # the in-process API's too
    monkeypatch.setattr(inference, "DECODE_CHUNK", 4)
    monkeypatch.setattr(Path, "read_bytes", _never_read)
    many = [str(path) for path in images] * 2

    code, out, err = cli("predict", str(study_id), *many, "--json")
    remote = cli("predict", str(study_id), *many, "--json", "--url", api_url)

    assert code == 0, err
    assert [p["file"] for p in json.loads(out)["predictions"]] == many
    assert remote[0] == 2 and "max_upload_bytes" in one_error_line(remote[2])


def test_predict_over_http_sends_any_number_of_files_in_requests_within_the_limits(
    cli: Run,
    trained: tuple[str, Path, int],
    images: list[Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    api_url: str,
) -> None:
    """Found by a tester: more than 1,024 files were "Too many open files" (all were open
    for one request, which the API's 64 images per request refused anyway)."""
    _, _, study_id = trained
    monkeypatch.setenv("AUTOML_LIMIT_MAX_IMAGES", "3")  # the in-process API's too
    open_now: list[int] = [0]
    most: list[int] = [0]
    real_open = predict_commands._open

    class Counted:
        def __init__(self, name: str) -> None:
            self.file = real_open(name)
            open_now[0] += 1
            most[0] = max(most[0], open_now[0])

        def __getattr__(self, name: str) -> object:
            return getattr(self.file, name)

        def __enter__(self) -> object:
            return self.file

        def __exit__(self, *exc: object) -> None:
            open_now[0] -= 1
            self.file.close()

    monkeypatch.setattr(predict_commands, "_open", Counted)
    many = [str(path) for path in images] * 2  # 20 files: 7 requests

    code, out, err = cli("predict", str(study_id), *many, "--json", "--url", api_url)
    local = cli("predict", str(study_id), *many, "--json")

    assert code == 0, err
    assert json.loads(out) == json.loads(local[1])
    assert most[0] == 3 and open_now[0] == 0

    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_declaring(20_000, 20_000))
    code, _, err = cli("predict", str(study_id), *many[:7], str(bomb), "--url", api_url)
    assert code == 2
    assert one_error_line(err).startswith(f"error: files[7]: image '{bomb}' has more than ")


def test_predict_over_http_counts_the_multipart_overhead_and_names_the_limits_it_split_by(
    cli: Run,
    trained: tuple[str, Path, int],
    images: list[Path],
    monkeypatch: pytest.MonkeyPatch,
    api_url: str,
) -> None:
    """Found by a reviewer: requests of files that added up to the limit were refused, the
    API counting the parts' headers too."""
    _, _, study_id = trained
    # Short names: a part's headers carry the name, and a long temporary path made a part
    # of one image alone larger than this limit.
    monkeypatch.chdir(images[0].parent)
    two = [path.name for path in images[:2]]
    limit = sum(Path(name).stat().st_size for name in two) + 150  # under their parts' headers
    monkeypatch.setenv("AUTOML_LIMIT_MAX_UPLOAD_BYTES", str(limit))

    code, out, err = cli("predict", str(study_id), *two, "--json", "--url", api_url)

    assert code == 0, err
    assert [p["file"] for p in json.loads(out)["predictions"]] == two

    monkeypatch.setenv("AUTOML_LIMIT_MAX_UPLOAD_BYTES", str(10**7))
    monkeypatch.setenv("AUTOML_LIMIT_MAX_IMAGES", "3")
    monkeypatch.setattr(predict_route, "Limits", lambda: Limits(max_images=2))  # the API's
    code, _, err = cli("predict", str(study_id), *two * 3, "--url", api_url)
    assert code == 2
    line = one_error_line(err)
    assert "max_images allows 2" in line and "AUTOML_LIMIT_MAX_IMAGES" in line


def test_predict_over_http_refuses_answers_of_two_models(
    cli: Run,
    trained: tuple[str, Path, int],
    images: list[Path],
    monkeypatch: pytest.MonkeyPatch,
    api_url: str,
) -> None:
    """A refit that lands between two requests serves the second: one answer would mix
    two models' predictions."""
    _, _, study_id = trained
    monkeypatch.setenv("AUTOML_LIMIT_MAX_IMAGES", "2")
    real_predict = cli_client.HttpClient.predict
    answers: list[int] = []

    def predict(self: cli_client.HttpClient, *args: object, **kwargs: object) -> object:
        answer = real_predict(self, *args, **kwargs)  # type: ignore[arg-type]
        answers.append(1)
        if len(answers) > 1:
            changed = answer.model.model_copy(update={"selection": "refit"})
            answer = answer.model_copy(update={"model": changed})
        return answer

    monkeypatch.setattr(cli_client.HttpClient, "predict", predict)
    paths = [str(path) for path in images[:4]]

    code, _, err = cli("predict", str(study_id), *paths, "--url", api_url)

    assert code == 1
    line = one_error_line(err)
    assert "the study's serving model changed while predicting" in line
    assert "run predict again" in line


def _never_read(path: Path) -> bytes:
    raise AssertionError(f"{path} was read")


def test_predict_refuses_what_is_not_a_regular_file(
    cli: Run,
    trained: tuple[str, Path, int],
    images: list[Path],
    tmp_path: Path,
    target: list[str],
) -> None:
    """Found by a tester: ``/dev/zero`` ended in a MemoryError traceback, a named pipe hung
    forever (both have size 0 to ``stat``)."""
    _, _, study_id = trained
    pipe = tmp_path / "pipe.png"
    os.mkfifo(pipe)

    for odd in ("/dev/zero", str(pipe)):
        code, _, err = cli("predict", str(study_id), str(images[0]), odd, *target)
        assert code == 2
        assert one_error_line(err) == f"error: cannot read image {odd}: not a regular file"


def test_predict_reads_a_folders_images(
    cli: Run, trained: tuple[str, Path, int], images: list[Path], tmp_path: Path, target: list[str]
) -> None:
    """Found by a tester: a folder was "not a regular file", though annotate reads one."""
    _, _, study_id = trained
    folder = images[0].parent
    (folder / "notes.txt").write_text("not an image")
    (folder / ".hidden.png").write_bytes(images[0].read_bytes())
    (folder / "inner").mkdir()
    (tmp_path / "empty").mkdir()

    code, out, err = cli("predict", str(study_id), str(folder), str(images[0]), "--json", *target)
    empty = cli("predict", str(study_id), str(tmp_path / "empty"), *target)

    assert code == 0, err
    files = [prediction["file"] for prediction in json.loads(out)["predictions"]]
    assert files == [*sorted(map(str, images)), str(images[0])]
    assert err.strip().splitlines()[-1] == (  # found by a tester: they went unmentioned
        f"warning: left out 2 entries of folder {folder} (not bmp, jpeg, jpg, png, webp "
        "files, or folders): inner/, notes.txt"
    )
    assert empty[0] == 2
    assert one_error_line(empty[2]) == (
        f"error: folder {tmp_path / 'empty'} has no images (bmp, jpeg, jpg, png, webp)"
    )


def test_annotate_writes_the_csv(
    cli: Run,
    trained: tuple[str, Path, int],
    data_root: Path,
    digits: tuple[torch.Tensor, list[int]],
    target: list[str],
) -> None:
    _, _, study_id = trained
    write_pngs(digits[0], data_root / "inbox")

    code, out, err = cli("annotate", str(study_id), "inbox", "--csv", "inbox/labels.csv", *target)

    assert code == 0, err
    assert "wrote inbox/labels.csv under the data root" in out
    assert "(10 images in inbox, least confident first)" in out
    with open(data_root / "inbox" / "labels.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 10
    confidences = [float(row["confidence"]) for row in rows]
    assert confidences == sorted(confidences)
    assert all((data_root / "inbox" / row["path"]).is_file() for row in rows)

    again = cli("annotate", str(study_id), "inbox", "--csv", "inbox/labels.csv", *target)
    replaced = cli(
        "annotate", str(study_id), "inbox", "--csv", "inbox/labels.csv", "--overwrite", *target
    )
    assert again[0] == 2
    assert "write_csv: 'inbox/labels.csv' exists" in one_error_line(again[2])
    assert replaced[0] == 0, replaced[2]


def test_annotate_writes_a_csv_that_image_csv_reads_with_links_and_quoted_names(
    cli: Run,
    trained: tuple[str, Path, int],
    data_root: Path,
    digits: tuple[torch.Tensor, list[int]],
    target: list[str],
) -> None:
    """Found by a tester: a link to an image in the folder gave two rows for one image,
    which image_csv refuses ("listed again"); a file named ``'=x.png`` was read back as
    ``=x.png``."""
    _, _, study_id = trained
    [first, second] = write_pngs(digits[0][:2], data_root / "inbox")
    first.rename(data_root / "inbox" / "'=x.png")
    (data_root / "inbox" / "link.png").symlink_to(second.name)

    code, _, err = cli("annotate", str(study_id), "inbox", "--csv", "inbox/labels.csv", *target)

    assert code == 0, err
    rows = read_manifest("inbox/labels.csv")
    assert sorted(path.name for path, _ in rows) == sorted(["'=x.png", second.name])


def test_annotate_traversal_is_one_line_exit_2(
    cli: Run,
    trained: tuple[str, Path, int],
    data_root: Path,
    target: list[str],
) -> None:
    _, _, study_id = trained
    code, _, err = cli("annotate", str(study_id), "../elsewhere", *target)

    assert code == 2
    assert one_error_line(err) == "error: path: '../elsewhere' must not contain '..'"


@pytest.mark.parametrize(
    ("selection", "how"),
    [
        ("best_trial", "(best trial)"),
        ("refit", "(refit on train + validation)"),
        ("pareto_front_first", "(first of the Pareto front)"),
    ],
)
def test_the_header_names_how_the_serving_model_was_chosen(selection: str, how: str) -> None:
    model = predict_commands.ServedModel(
        study_id=1, trial_number=7, selection=selection, classes=["a"], input_shape=[1, 8, 8]
    )
    assert predict_commands.served_text(model) == f"study 1, trial 7 {how}"
