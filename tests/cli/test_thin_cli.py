"""``automl trials`` and ``automl export``, locally and against a real ``automl serve``, and
the thin client: commands run with ``--url`` import no training or storage library."""

from __future__ import annotations

import argparse
import csv
import importlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from PIL import Image

from automl.cli.main import COMMANDS, build_parser, main
from automl.config import Settings
from tests.conftest import free_port, tiny_spec_data, wait_healthy
from tests.forked import ForkedProcess

HEAVY = ("torch", "torchvision", "optuna", "sklearn", "sqlalchemy")
"""What a command against the API must never import."""

RUN_SPEC = tiny_spec_data(name="thin", budget={"n_trials": 3, "max_failed": 0})


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No ``AUTOML_*`` variable of the caller's leaks into the commands."""
    for field in Settings.model_fields:
        monkeypatch.delenv(f"AUTOML_{field.upper()}", raising=False)
    monkeypatch.chdir(tmp_path)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "automl", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def _in_process(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def _one_error_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    return lines[0]


def test_every_subcommand_has_a_function() -> None:
    parser = build_parser()
    [subparsers] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]

    assert set(COMMANDS) == set(subparsers.choices)
    for target in COMMANDS.values():
        module, _, name = target.partition(":")
        assert callable(getattr(importlib.import_module(module), name)), target


# --- locally, no server ----------------------------------------------------------------------


@pytest.fixture
def queued(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> list[str]:
    """``--storage``/``--artifacts-dir`` flags of a fresh store holding one queued study."""
    flags = ["--storage", f"sqlite:///{tmp_path / 'local.db'}"]
    spec = tmp_path / "tiny.yaml"
    spec.write_text(yaml.safe_dump(tiny_spec_data()), encoding="utf-8")
    code, _, err = _in_process(capsys, "submit", str(spec), *flags)
    assert code == 0, err
    return flags


def test_trials_of_a_study_without_trials(
    queued: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _in_process(capsys, "trials", "1", *queued)

    assert code == 0, err
    assert out.splitlines()[0].split() == ["#", "STATE", "VALUE", "DURATION", "PARAMS"]
    assert out.splitlines()[-1] == "(0 of 0 trials)"


def test_trials_and_export_of_unknown_study_are_one_line_exit_2(
    queued: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trials = _in_process(capsys, "trials", "7", *queued)
    export = _in_process(capsys, "export", "7", str(tmp_path / "out"), *queued)

    assert trials[0] == export[0] == 2
    assert _one_error_line(trials[2]) == _one_error_line(export[2]) == "error: study 7 not found"
    assert not (tmp_path / "out").exists(), "a failed export writes nothing"


def test_export_of_a_study_without_completed_trials_has_no_model(
    queued: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _in_process(capsys, "export", "1", str(tmp_path / "out"), *queued, "--json")

    assert code == 0, err
    report = json.loads(out)
    assert report["files"] == ["study.json", "trials.json", "trials.csv"]
    assert report["no_model"] == "no completed trial"
    study = json.loads((tmp_path / "out" / "study.json").read_text())
    assert study["best"] is None
    assert study["study"]["status"] == "queued"
    assert study["study"]["spec"]["name"] == "tiny"
    assert json.loads((tmp_path / "out" / "trials.json").read_text()) == []


def test_export_refuses_a_folder_that_is_not_empty_or_a_file(
    queued: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    full = tmp_path / "full"
    (full / "model").mkdir(parents=True)
    (full / "keep.txt").write_text("mine")
    (full / "model" / "model_card.json").write_text('{"study_id": 99}')  # an older export's
    (full / "model" / "notes.txt").write_text("mine")
    file = tmp_path / "file.txt"
    file.write_text("mine")

    refused = _in_process(capsys, "export", "1", str(full), *queued)
    not_a_folder = _in_process(capsys, "export", "1", str(file), *queued)
    overwritten = _in_process(capsys, "export", "1", str(full), *queued, "--overwrite")

    assert refused[0] == 2
    assert "is not empty" in _one_error_line(refused[2])
    assert "--overwrite" in refused[2]
    assert not_a_folder[0] == 2
    assert "not a folder" in _one_error_line(not_a_folder[2])
    # Found by a tester: best --download onto a file said "File exists".
    download = _in_process(capsys, "best", "1", "--download", str(file), *queued)
    assert download[0] == 2
    assert _one_error_line(download[2]) == f"error: {file} is a file; --download names a folder"
    assert file.read_text() == "mine"
    assert overwritten[0] == 0, overwritten[2]
    assert sorted(p.name for p in full.iterdir()) == [
        "keep.txt",
        "model",
        "study.json",
        "trials.csv",
        "trials.json",
    ]
    # No model of another study; found by a tester: the user's own file went with it.
    assert [p.name for p in (full / "model").iterdir()] == ["notes.txt"]


def test_export_under_a_file_is_one_error_line(
    queued: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "file.txt").write_text("mine")

    code, _, err = _in_process(capsys, "export", "1", str(tmp_path / "file.txt" / "out"), *queued)

    assert code == 2
    assert _one_error_line(err).startswith(f"error: cannot write {tmp_path / 'file.txt' / 'out'}")
    assert (tmp_path / "file.txt").read_text() == "mine"
    assert [p for p in tmp_path.iterdir() if "out" in p.name] == []


def test_a_new_export_folder_appears_only_when_complete(
    queued: list[str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Interrupted between two files: no ``out`` folder, and the hidden sibling it was
    written in is removed (a kill -9 would leave only that sibling)."""
    from automl.cli import export_commands

    target = tmp_path / "out"
    seen: list[bool] = []
    real_write = export_commands._write

    def write_then_die(directory: Path, name: str, text: str) -> Path:
        seen.append(target.exists())
        path = real_write(directory, name, text)
        if name == "trials.json":
            raise KeyboardInterrupt  # stands in for a kill between two files
        return path

    monkeypatch.setattr(export_commands, "_write", write_then_die)
    interrupted = _in_process(capsys, "export", "1", str(target), *queued)
    assert interrupted[0] != 0
    assert seen == [False, False]
    assert not target.exists()
    assert [p for p in tmp_path.iterdir() if p.name.startswith(".out")] == []

    monkeypatch.setattr(export_commands, "_write", real_write)
    code, _, err = _in_process(capsys, "export", "1", str(target), *queued)
    assert code == 0, err
    assert sorted(p.name for p in target.iterdir()) == ["study.json", "trials.csv", "trials.json"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []


# --- against a real server -------------------------------------------------------------------


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, list[str]]]:
    """A completed 3-trial study, served by a real ``automl serve``: (URL, local flags).

    Both ``automl run`` and ``automl serve`` are forked (``tests.forked``): the thin
    client's own import checks run in fresh interpreters of their own.
    """
    root = tmp_path_factory.mktemp("served")
    flags = ["--storage", f"sqlite:///{root / 'api.db'}", "--artifacts-dir", str(root / "art")]
    spec = root / "run.yaml"
    spec.write_text(yaml.safe_dump(RUN_SPEC), encoding="utf-8")
    run_log = root / "run.log"
    ran = ForkedProcess(
        ["run", str(spec), "--device", "cpu", *flags],
        {**os.environ, "OMP_NUM_THREADS": "1"},
        run_log,
    )
    assert ran.wait(timeout=240) == 0, run_log.read_text()
    port = free_port()
    log = root / "serve.log"
    server = ForkedProcess(["serve", "--port", str(port), *flags], {**os.environ}, log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, server, log.read_text, 90)
        yield url, flags
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


THIN_RUN = """
import json, sys
from automl.cli.main import main
codes = [main(args) for args in json.loads(sys.argv[1])]
heavy = sorted(name for name in {heavy!r} if name in sys.modules)
print(json.dumps({{"codes": codes, "heavy": heavy}}), file=sys.stderr)
"""


@pytest.mark.slow
def test_commands_against_the_api_import_no_heavy_library_and_log_nothing(
    served: tuple[str, list[str]], tmp_path: Path
) -> None:
    url, _ = served
    commands = [
        ["status", "--url", url],
        ["status", "1", "--url", url],
        ["trials", "1", "--url", url],
        ["trials", "1", "0", "--url", url],
        ["trials", "1", "0", "--download", str(tmp_path / "trial0"), "--url", url],
        ["best", "1", "--url", url],
        ["wait", "1", "--url", url],
        ["export", "1", str(tmp_path / "out"), "--url", url],
        ["best", "1", "--download", str(tmp_path / "bundle"), "--url", url],
        ["report", "1", "-o", str(tmp_path / "report.html"), "--url", url],
        ["predict", "1", str(tmp_path / "digit.png"), "--url", url],
    ]
    Image.new("L", (8, 8)).save(tmp_path / "digit.png")
    done = subprocess.run(
        [sys.executable, "-c", THIN_RUN.format(heavy=HEAVY), json.dumps(commands)],
        capture_output=True,
        text=True,
        timeout=120,
    )

    *logged, result = done.stderr.splitlines()
    assert json.loads(result) == {"codes": [0] * len(commands), "heavy": []}, done.stderr
    assert logged == [], "no library log lines by default"
    assert "(3 of 3 trials)" in done.stdout
    assert "study 1: thin" in done.stdout
    assert (tmp_path / "out" / "model" / "model_card.json").is_file()
    assert (tmp_path / "bundle" / "model.onnx").is_file()
    card = json.loads((tmp_path / "trial0" / "model_card.json").read_text())
    assert (card["model"]["trial_number"], card["bundle"]["selection"]) == (0, "chosen")
    assert "optimization-history" in (tmp_path / "report.html").read_text()


@pytest.mark.slow
def test_debug_log_level_shows_the_http_requests(served: tuple[str, list[str]]) -> None:
    url, _ = served

    done = _cli("--log-level", "DEBUG", "status", "--url", url)

    assert done.returncode == 0, done.stderr
    assert "HTTP Request: GET" in done.stderr


@pytest.mark.slow
def test_trials_over_the_api_equal_the_local_store(
    served: tuple[str, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    url, flags = served

    remote = _cli("trials", "1", "--url", url, "--json")
    local = _in_process(capsys, "trials", "1", *flags[:2], "--json")
    table = _cli("trials", "1", "--url", url)
    two = _cli("trials", "1", "--url", url, "--limit", "2", "--json")
    pruned = _cli("trials", "1", "--url", url, "--state", "pruned", "--json")
    one = _cli("trials", "1", "2", "--url", url, "--json")
    one_here = _in_process(capsys, "trials", "1", "2", *flags[:2], "--json")

    assert remote.returncode == local[0] == 0, remote.stderr + local[2]
    assert json.loads(remote.stdout) == json.loads(local[1])
    page = json.loads(remote.stdout)
    assert page["count"] == 3
    assert [trial["number"] for trial in page["data"]] == [0, 1, 2]
    assert all(trial["intermediate_values"] for trial in page["data"])  # JSON keeps curves
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["#", "STATE", "VALUE", "DURATION", "PARAMS"]
    assert lines[2].startswith("0  complete")
    assert "lr=" in lines[2]
    assert lines[-1] == "(3 of 3 trials)"
    assert [trial["number"] for trial in json.loads(two.stdout)["data"]] == [0, 1]
    assert json.loads(two.stdout)["count"] == 3
    assert json.loads(pruned.stdout) == {"data": [], "count": 0}
    assert one.returncode == one_here[0] == 0, one.stderr + one_here[2]
    assert json.loads(one.stdout) == json.loads(one_here[1])
    assert json.loads(one.stdout)["per_class"]  # what the table leaves out


@pytest.mark.slow
def test_export_over_the_api_equals_the_local_export(
    served: tuple[str, list[str]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url, flags = served
    remote, local = tmp_path / "remote", tmp_path / "local"

    done = _cli("export", "1", str(remote), "--url", url)
    code, _, err = _in_process(capsys, "export", "1", str(local), *flags)

    assert done.returncode == 0, done.stderr
    assert code == 0, err
    assert "(best trial) in model/" in done.stdout
    for name in ("study.json", "trials.json", "trials.csv"):
        assert (remote / name).read_text() == (local / name).read_text(), name
    study = json.loads((remote / "study.json").read_text())
    assert study["study"]["status"] == "completed"
    assert study["study"]["spec"]["name"] == "thin"
    [best] = study["best"]["trials"]
    trials = json.loads((remote / "trials.json").read_text())
    assert [trial["number"] for trial in trials] == [0, 1, 2]
    assert all(trial["intermediate_values"] for trial in trials)  # an export is whole
    rows = list(csv.DictReader((remote / "trials.csv").open()))
    assert [row["number"] for row in rows] == ["0", "1", "2"]
    assert {row["state"] for row in rows} == {"complete"}
    assert float(rows[best["number"]]["value.accuracy"]) == pytest.approx(best["values"][0])
    assert rows[0]["param.lr"] == str(trials[0]["params"]["lr"])
    assert "metric.accuracy" in rows[0]
    bundle = sorted(path.name for path in (remote / "model").iterdir())
    assert bundle == sorted(path.name for path in (local / "model").iterdir())
    assert {"model_card.json", "model.onnx", "predict.py"} <= set(bundle)


@pytest.mark.slow
def test_errors_over_the_api_are_one_line(served: tuple[str, list[str]], tmp_path: Path) -> None:
    url, _ = served
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")

    trials = _cli("trials", "9", "--url", url)
    export = _cli("export", "9", str(tmp_path / "new"), "--url", url)
    full = _cli("export", "1", str(tmp_path / "full"), "--url", url)

    assert trials.returncode == export.returncode == full.returncode == 2
    assert _one_error_line(trials.stderr) == "error: study 9 not found"
    assert _one_error_line(export.stderr) == "error: study 9 not found"
    assert "is not empty" in _one_error_line(full.stderr)
    assert not (tmp_path / "new").exists()
