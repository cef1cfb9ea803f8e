"""The ``automl`` command line, in-process (``main([...])``) and as the installed script."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy
import yaml
from fastapi.testclient import TestClient

from automl import __version__
from automl.api import create_app
from automl.cli import bundle_commands, http_client, report_commands, study_commands
from automl.cli import client as cli_client
from automl.cli.errors import MAY_HAVE_CHANGED, may_have_submitted
from automl.cli.main import build_parser, main
from automl.config import Settings
from automl.spec import validate_spec
from automl.store import attrs, open_store
from tests.cli.local_store import READ_ONLY_COMMANDS
from tests.conftest import free_port, tiny_spec_data
from tests.data.conftest import write_class_folder

RUN_SPEC = tiny_spec_data(name="cli-run", budget={"n_trials": 2, "max_failed": 0})


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, sqlite_url: str, tmp_path: Path) -> Iterator[None]:
    """Points the CLI at a fresh SQLite file; restores what ``run`` changes in-process."""
    for field in Settings.model_fields:
        monkeypatch.delenv(f"AUTOML_{field.upper()}", raising=False)
    monkeypatch.setenv("AUTOML_STORAGE", sqlite_url)
    monkeypatch.setenv("AUTOML_ARTIFACTS_DIR", str(tmp_path / "artifacts"))
    monkeypatch.setenv("AUTOML_DEVICE", "cpu")
    monkeypatch.chdir(tmp_path)
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    worker_logger = logging.getLogger("automl.worker")
    level = worker_logger.level
    yield
    for sig, handler in handlers.items():
        signal.signal(sig, handler)
    worker_logger.setLevel(level)


def write_spec(path: Path, data: dict[str, Any]) -> Path:
    """Writes ``data`` as a YAML spec file."""
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


@pytest.fixture
def spec_file(tmp_path: Path) -> Path:
    """A tiny valid spec file."""
    return write_spec(tmp_path / "tiny.yaml", tiny_spec_data())


@pytest.fixture
def bad_spec_file(tmp_path: Path) -> Path:
    """A spec file whose ``params.lr.low`` exceeds its ``high``."""
    data = tiny_spec_data()
    data["params"]["lr"]["low"] = 1.0
    return write_spec(tmp_path / "bad.yaml", data)


Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Run:
    """Runs ``main(args)``; returns (exit code, stdout, stderr)."""

    def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main(list(args))
        out, err = capsys.readouterr()
        return code, out, err

    return run


def one_error_line(err: str) -> str:
    """The single ``error: ...`` line of stderr."""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    return lines[0]


def _no_store_here(cli: Run) -> bool:
    """Whether ``automl status`` finds no SQLite store (nothing created one)."""
    code, _, err = cli("status")
    return code == 2 and one_error_line(err).startswith("error: no store at ")


# --- submit / status / best / cancel on the local store --------------------------------------


@pytest.mark.parametrize(
    "command",
    READ_ONLY_COMMANDS,
)
def test_a_missing_sqlite_file_is_named_not_created(
    cli: Run, tmp_path: Path, command: list[str]
) -> None:
    typo = tmp_path / "atuoml.db"

    code, out, err = cli(*command, "--storage", f"sqlite:///{typo}")

    assert (code, out) == (2, "")
    assert one_error_line(err).startswith(f"error: no store at {typo}: nothing was submitted")
    assert not typo.exists()


def test_commands_that_write_create_the_sqlite_file(cli: Run, spec_file: Path) -> None:
    assert _no_store_here(cli)
    assert cli("keys", "create", "--project", "p")[0] == 0
    assert cli("status", "--json")[0] == 0
    assert cli("submit", str(spec_file), "--storage", "sqlite:///second.db")[0] == 0
    assert cli("status", "1", "--storage", "sqlite:///second.db")[0] == 0


def test_submit_prints_study_id(cli: Run, spec_file: Path) -> None:
    code, out, err = cli("submit", str(spec_file))

    assert code == 0, err
    assert out.strip() == "submitted study 1 (tiny): queued"


def test_submit_json(cli: Run, spec_file: Path) -> None:
    code, out, _ = cli("submit", str(spec_file), "--json")

    assert code == 0
    study = json.loads(out)
    assert (study["id"], study["status"], study["counts"]["waiting"]) == (1, "queued", 3)


def test_submit_with_storage_flag(cli: Run, spec_file: Path, tmp_path: Path) -> None:
    other = f"sqlite:///{tmp_path / 'other.db'}"

    code, out, _ = cli("submit", str(spec_file), "--storage", other)

    assert code == 0
    assert out.startswith("submitted study 1")
    _, listed, _ = cli("status", "--storage", other, "--json")
    assert json.loads(listed)["count"] == 1
    assert _no_store_here(cli)


def test_submit_invalid_spec_is_exit_2(cli: Run, bad_spec_file: Path) -> None:
    code, out, err = cli("submit", str(bad_spec_file))

    assert code == 2
    assert out == ""
    assert "params.lr.low" in one_error_line(err)
    assert _no_store_here(cli)  # nothing was created for it


def test_submit_missing_file_is_exit_2(cli: Run) -> None:
    code, _, err = cli("submit", "nowhere.yaml")

    assert code == 2
    assert "nowhere.yaml" in one_error_line(err)


def test_validate_shows_what_the_spec_would_run_and_submits_nothing(
    cli: Run, spec_file: Path, tmp_path: Path
) -> None:
    auto = tiny_spec_data() | {"sampler": {"name": "auto"}}
    auto["params"]["momentum"]["when"] = {"optimizer": ["sgd", "adam"]}
    auto_file = write_spec(tmp_path / "auto.yaml", auto)

    code, out, err = cli("validate", str(spec_file))
    as_json = cli("validate", str(auto_file), "--json")

    assert code == 0, err
    assert out.splitlines() == [
        "tiny: valid",
        "  dataset     digits",
        "  objectives  accuracy (maximize)",
        "  trials      3",
        "  sampler     random",
        "  pruner      none",
        "  params      lr, momentum (when optimizer: sgd), optimizer",
    ]
    assert as_json[0] == 0, as_json[2]
    resolved = json.loads(as_json[1])
    assert resolved["sampler"]["name"] == "random"  # auto's pick for 3 trials
    assert "chosen_by" in resolved["sampler"]
    assert _no_store_here(cli)


def test_validate_data_decodes_the_images_and_refuses_unusable_ones(
    cli: Run, tmp_path: Path, data_root: Path
) -> None:
    """Found by a tester: a text file named .png validated, then failed every trial."""
    write_class_folder(data_root / "mine", {"a": 6, "b": 3})
    dataset = {"source": "image_folder", "options": {"path": "mine", "size": 8}}
    spec = write_spec(tmp_path / "mine.yaml", tiny_spec_data(name="mine", dataset=dataset))

    code, out, err = cli("validate", str(spec), "--data")

    assert code == 0, err
    [data] = [line for line in out.splitlines() if line.startswith("  data ")]
    assert re.fullmatch(
        r"  data +\d+ training, \d+ validation and no test images of 2 classes "
        r"\(fewest training images: 'b', \d+\)",
        data,
    ), data
    (data_root / "mine" / "a" / "fake.png").write_text("not an image")
    assert cli("validate", str(spec))[0] == 0  # file names only, as submit checks them
    code, out, err = cli("validate", str(spec), "--data")
    assert (code, out) == (2, "")
    line = one_error_line(err)
    assert line.startswith("error: invalid dataset: ") and "mine/a/fake.png" in line, line


def test_validate_data_names_the_classes_a_split_has_no_images_of(
    cli: Run, tmp_path: Path, data_root: Path
) -> None:
    """Found by a tester: validate said "valid"; only the trials' notes said later that
    the metrics left out a class whose single image the split kept for training."""
    write_class_folder(data_root / "mine", {"a": 6, "b": 6, "single": 1})
    options = {"path": "mine", "size": 8, "val_fraction": 0.3, "test_fraction": 0.3}
    spec = tiny_spec_data(name="mine", dataset={"source": "image_folder", "options": options})

    code, out, err = cli("validate", str(write_spec(tmp_path / "mine.yaml", spec)), "--data")

    assert code == 0, err
    assert [line for line in out.splitlines() if line.startswith("  unscored ")] == [
        "  unscored    1 class without validation images ('single'): the metrics say nothing of it",
        "  unscored    1 class without test images ('single'): the metrics say nothing of it",
    ]
    # Found by a scripting tester: --json left out what --data found.
    code, out, err = cli("validate", str(tmp_path / "mine.yaml"), "--data", "--json")
    assert code == 0, err
    shown = json.loads(out)
    assert shown["spec"]["name"] == "mine"
    data = shown["data"]
    assert data["classes"] == 3 and sum(data["images"].values()) == 13
    assert data["training_images_per_class"]["single"] == 1
    assert data["no_validation_images"] == data["no_test_images"] == ["single"]
    assert data["no_training_images"] == [] and data["not_read"] == []


def test_validate_data_says_which_files_an_image_folder_leaves_out(
    cli: Run, tmp_path: Path, data_root: Path
) -> None:
    """Found by a tester: images in folders inside class folders (which torchvision's
    ImageFolder reads) and files beside the class folders were left out without a word."""
    write_class_folder(data_root / "mine", {"a": 6, "b": 3})
    write_class_folder(data_root / "mine" / "a" / "sub", {"deeper": 2})
    (data_root / "mine" / "b" / "old").mkdir()
    (data_root / "mine" / "stray.jpg").write_bytes(b"")
    (data_root / "mine" / "b" / "notes.txt").write_text("x")
    (data_root / "mine" / "b" / "scan.TIFF").write_bytes(b"")
    (data_root / "mine" / "b" / ".DS_Store").write_bytes(b"")  # hidden: nothing to say
    (data_root / "mine" / "b" / "gone.png").symlink_to(data_root / "nowhere.png")
    dataset = {"source": "image_folder", "options": {"path": "mine", "size": 8}}
    spec = write_spec(tmp_path / "mine.yaml", tiny_spec_data(name="mine", dataset=dataset))

    code, out, err = cli("validate", str(spec), "--data")

    assert code == 0, err
    [note] = [line for line in out.splitlines() if line.startswith("  not read ")]
    assert note == (
        "  not read    mine: 2 folders inside class folders (a/sub, b/old): images must sit "
        "directly in their class folder; 1 file beside the class folders (stray.jpg); "
        "1 image name that no file holds (b/gone.png): links to nothing; "
        "2 files of other types in class folders (.tiff: 1, .txt: 1; images are bmp, jpeg, jpg, "
        "png, webp)"
    )
    # A tester: submit and run said nothing of them.
    warning = "warning: not read: " + note.removeprefix("  not read    ")
    code, out, err = cli("submit", str(spec))
    assert code == 0, err
    assert err.splitlines() == [warning]
    one_trial = tiny_spec_data(name="mine", dataset=dataset, budget={"n_trials": 1})
    code, out, err = cli("run", str(write_spec(tmp_path / "run.yaml", one_trial)))
    assert code == 0, err
    assert warning in err.splitlines()


RANDOM = " (no numeric param that always applies: every trial is drawn at random)"
OUTSIDE = "may be drawn at random, outside its model)"


@pytest.mark.parametrize(
    ("sampler", "params", "caveat"),
    [
        ("cmaes", ["optimizer", "momentum"], RANDOM),
        ("cmaes", ["optimizer"], RANDOM),
        ("cmaes", ["optimizer", "lr", "momentum"], " (optimizer, momentum: " + OUTSIDE),
        ("qmc", ["optimizer", "lr", "momentum"], " (momentum: " + OUTSIDE),
        ("gp", ["optimizer", "lr", "momentum"], " (momentum: " + OUTSIDE),
        ("gp", ["optimizer", "lr"], ""),
        # Found by a tester: NSGA-II too keeps only the params every trial has.
        ("nsga2", ["optimizer", "lr", "momentum"], " (momentum: " + OUTSIDE),
        ("tpe", ["optimizer", "momentum"], ""),
    ],
)
def test_validate_says_what_a_sampler_leaves_to_chance(
    sampler: str, params: list[str], caveat: str
) -> None:
    """Found by testers: CMA-ES over categorical and conditional params alone ran a
    random search, and QMC drew conditional params at random, and nothing said so."""
    data = tiny_spec_data(sampler={"name": sampler, "seed": 0})
    data["params"] = {name: data["params"][name] for name in params}
    sampler_line = study_commands.valid_text(validate_spec(data)).splitlines()[4]

    assert sampler_line == f"  sampler     {sampler}{caveat}"


def test_validate_shows_the_conditions_it_implies() -> None:
    """Found by a tester: ``momentum`` applies to ``sgd`` only without a ``when``, and
    validate listed it as if it always applied."""
    data = tiny_spec_data()
    del data["params"]["momentum"]["when"]

    params_line = study_commands.valid_text(validate_spec(data)).splitlines()[6]

    assert params_line == "  params      optimizer, lr, momentum (when optimizer: sgd)"


def test_a_change_cut_off_by_the_database_may_have_been_made_and_says_so(
    cli: Run, spec_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by a tester: a retried ``extend`` whose connection was cut after its commit
    added its trials twice; the error gave no hint that the first had taken effect."""
    assert cli("submit", str(spec_file))[0] == 0

    def cut(*args: object, **kwargs: object) -> None:
        raise sqlalchemy.exc.OperationalError("COMMIT", {}, Exception("server closed"))

    monkeypatch.setattr(cli_client.store_api, "extend_study", cut)
    monkeypatch.setattr(cli_client, "get_study", cut)
    code, _, err = cli("extend", "1", "--add-trials", "1")
    read = cli("status", "1")

    assert code == 1
    said = "error: storage unavailable: (builtins.Exception) server closed"
    assert one_error_line(err) == said + MAY_HAVE_CHANGED
    assert read[0] == 1
    assert one_error_line(read[2]) == said


def _key_in(error_line: str) -> str:
    """The idempotency key a cut-off submit names."""
    return error_line.split("--idempotency-key=")[1].split()[0]


def test_a_submit_cut_off_by_the_database_names_a_key_that_submits_at_most_once(
    cli: Run, spec_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A submit whose commit answer was lost took effect: run again as told, it answers
    with that study instead of submitting a second one."""
    submit = cli_client.store_api.submit_or_replay

    def committed_then_cut(*args: Any, **kwargs: Any) -> Any:
        submit(*args, **kwargs)
        raise sqlalchemy.exc.OperationalError("COMMIT", {}, Exception("server closed"))

    monkeypatch.setattr(cli_client.store_api, "submit_or_replay", committed_then_cut)
    code, _, err = cli("submit", str(spec_file))
    monkeypatch.setattr(cli_client.store_api, "submit_or_replay", submit)
    key = _key_in(one_error_line(err))
    again = cli("submit", str(spec_file), "--idempotency-key", key)
    listed = json.loads(cli("status", "--json")[1])

    assert code == 1
    assert one_error_line(err) == (
        "error: storage unavailable: (builtins.Exception) server closed" + may_have_submitted(key)
    )
    assert again[:2] == (
        0,
        "study 1 (tiny) was submitted before with this idempotency key: queued\n",
    )
    assert listed["count"] == 1


def test_each_submit_has_its_own_key_and_a_reused_key_needs_the_same_spec(
    cli: Run, spec_file: Path, tmp_path: Path
) -> None:
    other = write_spec(tmp_path / "other.yaml", tiny_spec_data(name="other"))
    first = cli("submit", str(spec_file))
    second = cli("submit", str(spec_file))
    keyed = cli("submit", str(spec_file), "--idempotency-key", "k-1")
    repeated = cli("submit", str(spec_file), "--idempotency-key", "k-1")
    conflict = cli("submit", str(other), "--idempotency-key", "k-1")

    assert [first[1], second[1], keyed[1], repeated[1]] == [
        "submitted study 1 (tiny): queued\n",
        "submitted study 2 (tiny-2): queued\n",
        "submitted study 3 (tiny-3): queued\n",
        # A tester: a repeat said "submitted" as if it had made another study.
        "study 3 (tiny-3) was submitted before with this idempotency key: queued\n",
    ]
    assert conflict[0] == 2
    assert one_error_line(conflict[2]) == (
        "error: Idempotency-Key 'k-1' was already used for study 3 with a different spec"
    )


def test_a_submit_interrupted_after_it_was_sent_names_its_key(
    cli: Run, spec_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    with monkeypatch.context() as patched:
        patched.setattr(cli_client.store_api, "submit_or_replay", interrupted)
        code, _, err = cli("submit", str(spec_file), "--idempotency-key=-it's-mine")
    # What the shell makes of the command the error gives (a key may start with "-").
    [told] = shlex.split(err.split("command with ")[1].split(" to submit")[0])
    again = cli("submit", str(spec_file), told)

    assert code == 130
    assert err.strip() == "interrupted" + may_have_submitted("-it's-mine")
    assert told == "--idempotency-key=-it's-mine"
    assert again[:2] == (0, "submitted study 1 (tiny): queued\n")  # the first never ran


@pytest.mark.parametrize("key", ["", "two words", "k" * 257, "caf\u00e9"])
def test_a_key_no_header_can_carry_is_a_usage_error(
    cli: Run, spec_file: Path, key: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["submit", str(spec_file), "--idempotency-key", key])

    assert exc.value.code == 2
    last = capsys.readouterr().err.splitlines()[-1]
    assert last.startswith("automl submit: error: argument --idempotency-key: "), last
    assert _no_store_here(cli)


def test_validate_names_every_problem_in_one_line_exit_2(cli: Run, bad_spec_file: Path) -> None:
    code, out, err = cli("validate", str(bad_spec_file))

    assert (code, out) == (2, "")
    assert "params.lr.low" in one_error_line(err)


class _Stdin:
    """Standard input holding ``data`` as bytes (what ``sys.stdin.buffer`` reads)."""

    def __init__(self, data: bytes) -> None:
        self.buffer = io.BytesIO(data)

    def isatty(self) -> bool:
        return False


def test_submit_reads_a_pipe_once_and_standard_input(
    cli: Run, spec_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once `automl submit <(envsubst < spec.yaml)` said the file was not found (it is no
    regular file), and `-` was taken for a file name."""
    fifo = tmp_path / "spec.fifo"
    os.mkfifo(fifo)
    writer = subprocess.Popen(["sh", "-c", f"cat '{spec_file}' > '{fifo}'"])
    try:
        piped = cli("submit", str(fifo))
    finally:
        writer.wait(timeout=30)
    monkeypatch.setattr(sys, "stdin", _Stdin(spec_file.read_bytes()))
    standard_input = cli("submit", "-")
    folder = cli("submit", str(tmp_path))

    assert piped[:2] == (0, "submitted study 1 (tiny): queued\n"), piped[2]
    assert standard_input[:2] == (0, "submitted study 2 (tiny-2): queued\n"), standard_input[2]
    assert folder[0] == 2
    assert one_error_line(folder[2]) == f"error: {tmp_path} is a folder, not a spec file"


def test_a_spec_on_standard_input_is_refused_in_one_line_when_unreadable(
    cli: Run, spec_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once closed standard input was a traceback, and bytes that are not UTF-8 a YAML
    error about character #xdcff (or, with --url, a traceback)."""
    monkeypatch.setattr(sys, "stdin", None)
    closed = cli("submit", "-")
    monkeypatch.setattr(sys, "stdin", _Stdin(b"name: \xff\n"))
    binary = cli("submit", "-")
    monkeypatch.setenv("AUTOML_MAX_BODY_BYTES", "1000")
    big = tmp_path / "big.yaml"
    big.write_text("name: x\n" + "# padding\n" * 200)
    oversized = cli("submit", str(big))

    assert one_error_line(closed[2]) == "error: no standard input to read the spec from"
    assert one_error_line(binary[2]) == "error: cannot read spec file -: not UTF-8 text"
    assert one_error_line(oversized[2]) == (
        f"error: spec file {big} is over 1000 bytes (AUTOML_MAX_BODY_BYTES)"
    )
    assert closed[0] == binary[0] == oversized[0] == 2


def test_a_json_spec_saved_with_a_byte_order_mark_is_read(
    cli: Run, spec_file: Path, tmp_path: Path
) -> None:
    """Windows editors start UTF-8 files with a byte-order mark, which JSON refuses."""
    spec = tmp_path / "spec.json"
    spec.write_text("\ufeff" + json.dumps(yaml.safe_load(spec_file.read_text())), "utf-8")

    code, out, err = cli("submit", str(spec))

    assert code == 0, err
    assert out.startswith("submitted study 1")


def test_status_lists_studies(cli: Run, spec_file: Path) -> None:
    cli("submit", str(spec_file))
    cli("submit", str(spec_file))

    code, out, _ = cli("status")

    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["ID", "NAME", "STATUS", "TRIALS", "BEST", "CREATED"]
    assert lines[2].split()[:5] == ["2", "tiny-2", "queued", "0/3", "-"]
    assert lines[3].split()[:5] == ["1", "tiny", "queued", "0/3", "-"]
    assert lines[-1] == "(2 of 2 studies)"


def test_status_limit(cli: Run, spec_file: Path) -> None:
    cli("submit", str(spec_file))
    cli("submit", str(spec_file))

    code, out, _ = cli("status", "--limit", "1", "--json")

    assert code == 0
    page = json.loads(out)
    assert page["count"] == 2
    assert [study["id"] for study in page["data"]] == [2]


def test_status_limit_zero_is_exit_2(cli: Run) -> None:
    code, _, err = cli("status", "--limit", "0")

    assert code == 2
    assert one_error_line(err) == "error: --limit must be >= 1"


def test_status_of_one_study(cli: Run, spec_file: Path) -> None:
    cli("submit", str(spec_file))

    code, out, _ = cli("status", "1")

    assert code == 0
    assert out.splitlines()[0] == "study 1: tiny"
    assert "status:    queued" in out
    assert "objective: accuracy (maximize)" in out
    assert "0/3 finished" in out


def test_status_of_one_study_json(cli: Run, spec_file: Path) -> None:
    cli("submit", str(spec_file))

    code, out, _ = cli("status", "1", "--json")

    assert code == 0
    study = json.loads(out)
    assert study["id"] == 1
    assert study["status"] == "queued"
    assert study["spec"]["name"] == "tiny"


def test_status_of_unknown_study_is_exit_2(cli: Run, spec_file: Path) -> None:
    cli("submit", str(spec_file))
    code, out, err = cli("status", "99")

    assert code == 2
    assert out == ""
    assert one_error_line(err) == "error: study 99 not found"


def test_best_before_completion_is_exit_1(cli: Run, spec_file: Path) -> None:
    """Nothing is wrong with the input (once exit 2, as for an unknown study)."""
    cli("submit", str(spec_file))

    code, out, err = cli("best", "1")
    report = cli("report", "1")
    model = cli("best", "1", "--download", "model")

    assert code == 1
    assert out == ""
    assert one_error_line(err) == "error: study 1 has no completed trial yet"
    assert model[0] == 1
    assert "has no completed trial yet" in one_error_line(model[2])
    assert report[0] == 1  # a tester: the same message was exit 2 from report
    assert one_error_line(report[2]) == "error: study 1 has no completed trial yet"


def test_cancel(cli: Run, spec_file: Path) -> None:
    cli("submit", str(spec_file))

    code, out, _ = cli("cancel", "1")
    again, _, err = cli("cancel", "1")

    assert code == 0
    assert out.strip() == "study 1: cancelled"
    assert again == 2
    assert one_error_line(err) == "error: study 1 is already cancelled"
    _, status, _ = cli("status", "1", "--json")
    assert json.loads(status)["status"] == "cancelled"


@pytest.mark.parametrize("over_http", [False, True], ids=["local", "http"])
def test_lifecycle_commands(cli: Run, spec_file: Path, api_url: str, over_http: bool) -> None:
    target = ["--url", api_url] if over_http else []
    cli("submit", str(spec_file), *target)

    assert cli("extend", "1", "--add-trials", "2", *target)[:2] == (0, "study 1: 5 trials\n")
    code, out, err = cli("enqueue", "1", '{"lr": 0.005}', '{"lr": 0.006}', *target)
    assert (code, out) == (0, "study 1: 2 configurations queued\n"), err
    bad = cli("enqueue", "1", '{"lr": 7}', *target)
    assert bad[0] == 2
    assert "configs[0].lr" in one_error_line(bad[2])
    not_json = cli("enqueue", "1", "{lr", *target)
    assert (not_json[0], one_error_line(not_json[2])) == (
        2,
        "error: config 1 is not JSON: Expecting property name enclosed in double quotes",
    )
    twice = cli("enqueue", "1", '{"lr": 0.005, "lr": 0.006}', *target)
    assert (twice[0], one_error_line(twice[2])) == (2, "error: config 1: duplicate key 'lr'")
    cli("cancel", "1", *target)
    assert cli("extend", "1", "--add-trials", "1", *target)[0] == 2
    code, out, _ = cli("resume", "1", "--add-trials", "1", *target)
    assert (code, out) == (0, "study 1: queued (6 trials to run)\n")
    no_failed = cli("rerun-failed", "1", *target)
    assert (no_failed[0], one_error_line(no_failed[2])) == (
        2,
        "error: study 1 has no failed trials (nor a failed test evaluation)",
    )
    assert cli("delete", "1", *target)[0] == 2  # still active
    cli("cancel", "1", *target)
    assert cli("delete", "1", *target)[:2] == (0, "study 1 deleted\n")
    assert one_error_line(cli("status", "1", *target)[2]) == "error: study 1 not found"
    cli("submit", str(spec_file), *target)
    cli("cancel", "2", *target)
    code, out, _ = cli("delete", "2", "--json", *target)
    assert (code, json.loads(out)) == (0, {"study_id": 2, "deleted": True})


def test_cancel_unknown_study_is_exit_2(cli: Run, spec_file: Path) -> None:
    cli("submit", str(spec_file))
    code, _, err = cli("cancel", "5")

    assert code == 2
    assert one_error_line(err) == "error: study 5 not found"


# --- run -------------------------------------------------------------------------------------


def test_run_completes_and_prints_best(cli: Run, tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "run.yaml", RUN_SPEC)

    code, out, err = cli("run", str(spec))

    assert code == 0, err
    assert "study 1: cli-run" in out
    assert "status:    completed" in out
    assert "2/2 finished" in out
    assert "best trial #" in out
    assert "of study 1: accuracy=" in out
    assert out.count("PARAM") == 1
    assert "METRIC" in out
    assert "optimizer" in out
    assert "lr" in out
    progress = [line for line in err.splitlines() if line.startswith("trial ")]
    assert len(progress) == 2
    assert all("[" in line and "best" in line for line in progress)
    assert list((tmp_path / "artifacts").rglob("*")), "weights were not saved"

    _, best, _ = cli("best", "1", "--json")
    [trial] = json.loads(best)["trials"]
    assert trial["state"] == "complete"
    assert 0.0 < trial["metrics"]["accuracy"] <= 1.0


def test_an_interrupted_run_says_how_to_resume_on_its_own_store(
    cli: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by a tester: the hint left out ``--storage`` and ``--artifacts-dir``, so the
    worker it named opened (and created) another store."""
    from automl.worker import Worker

    monkeypatch.setattr(Worker, "run", lambda self: self.stop() or 0)  # Ctrl-C at once
    spec = write_spec(tmp_path / "run.yaml", RUN_SPEC)
    other = f"sqlite:///{tmp_path / 'other db.db'}"

    code, _, err = cli("run", str(spec), "--storage", other, "--artifacts-dir", "arts")

    assert code == 130
    hint = err.splitlines()[-1]
    assert hint == (
        f"interrupted: resume with `automl worker --study 1 --storage '{other}' "
        "--artifacts-dir arts`"
    )
    assert shlex.split(hint.split("`")[1])[5] == other


def test_a_run_stopped_after_its_last_trial_reports_the_study(
    cli: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by a tester: Ctrl-C just after the last trial said "interrupted: resume..."
    (exit 130) for a completed study."""
    from automl.worker import Worker

    real_run = Worker.run

    def then_stopped(self: Worker) -> int:
        ran = real_run(self)
        self.stop()
        return ran

    monkeypatch.setattr(Worker, "run", then_stopped)
    code, out, err = cli("run", str(write_spec(tmp_path / "run.yaml", RUN_SPEC)))

    assert code == 0, err
    assert "status:    completed" in out and "interrupted" not in err


def test_a_run_stopped_before_its_test_evaluation_says_how_to_resume(
    cli: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reviewer: a Ctrl-C once the trials had ended the study, before its test
    evaluation ran, printed the study (exit 0) with nobody left to evaluate it."""
    from automl.store import StudyStatus, get_study
    from automl.worker import Worker

    def stopped_when_done(self: Worker, *, always: bool = False) -> bool:
        if get_study(self.store, 1).status == StudyStatus.COMPLETED:
            self.stop()  # Ctrl-C as the post-study jobs come due
        return False

    monkeypatch.setattr(Worker, "_post_study_job", stopped_when_done)
    data = dict(RUN_SPEC, dataset={"source": "digits", "options": {"test_fraction": 0.2}})
    code, out, err = cli("run", str(write_spec(tmp_path / "run.yaml", data)))

    assert (code, out) == (130, ""), err
    assert err.splitlines()[-1] == "interrupted: resume with `automl worker --study 1`"
    code, out, _ = cli("best", "1")
    assert code == 0 and "test split: pending" in out, out


def test_weights_that_cannot_be_read_are_one_error_line(
    cli: Run, tmp_path: Path, sqlite_url: str
) -> None:
    """Found by a tester: `predict`, `best --download`, `export` and `report` printed a
    traceback for a weights file they may not read."""
    assert cli("run", str(write_spec(tmp_path / "run.yaml", RUN_SPEC)))[0] == 0
    store = open_store(sqlite_url, artifacts_dir=tmp_path / "artifacts")
    try:
        for trial in store.storage.get_all_trials(1):
            weights = tmp_path / "artifacts" / trial.user_attrs[attrs.WEIGHTS]
            weights.unlink()
            weights.mkdir()  # unreadable as a file, for root too
    finally:
        store.close()

    download = ("best", "1", "--download", str(tmp_path / "bundle"))
    for command in (download, ("export", "1", str(tmp_path / "out"))):
        code, _, err = cli(*command)
        assert code == 1, command
        line = one_error_line(err)
        assert re.fullmatch(
            r"error: the weights of trial \d+ cannot be read from the artifact store "
            r"\(\S+\): Is a directory",
            line,
        ), line


@pytest.mark.parametrize("max_failed", [5, 0], ids=["all-failed", "study-failed"])
def test_run_says_why_its_trials_failed(
    cli: Run,
    tmp_path: Path,
    data_root: Path,
    max_failed: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A truncated image fails every trial: each progress line and the final error say
    why (it was only in ``trials --json``), and the exit is 1, not 2 (bad CLI input)."""
    write_class_folder(data_root / "broken", {"a": 6, "b": 6})
    image = data_root / "broken" / "a" / "0.png"
    image.write_bytes(image.read_bytes()[:40])
    data = tiny_spec_data(
        name="broken",
        dataset={"source": "image_folder", "options": {"path": "broken", "size": 8}},
        budget={"n_trials": 2, "max_failed": max_failed},
    )

    code, out, err = cli("run", str(write_spec(tmp_path / "broken.yaml", data)))

    assert code == 1, err
    assert out == ""
    progress = [line for line in err.splitlines() if line.startswith("trial ")]
    assert progress and all("cannot decode image 'broken/a/0.png'" in line for line in progress)
    # Each failure once: the worker's own WARNING line per trial is not logged beside it.
    assert not [r for r in caplog.records if r.name == "automl.worker.trials"]
    final = err.splitlines()[-1]
    assert final.startswith("error: study 1 "), err
    assert "trial 0 failed: DatasetError: cannot decode image 'broken/a/0.png'" in final
    assert str(data_root) not in err, "the data root's own path is not shown"
    assert ".py:" not in err, "nor where in automl the data's problem was found"

    # Found by a tester: only `run` said why; `trials` and `status` showed a bare "fail".
    code, listed, _ = cli("trials", "1")
    assert code == 0
    header, _, first = listed.splitlines()[:3]
    assert header.split()[-1] == "WHY"
    assert first.split()[1] == "fail"
    assert "error: DatasetError: cannot decode image 'broken/a/0.png'" in first
    code, status, _ = cli("status", "1")
    assert code == 0
    assert "first failure: trial 0: error: DatasetError: cannot decode image" in status
    assert "automl rerun-failed 1 runs them again" in status


def test_run_json(cli: Run, tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "run.yaml", RUN_SPEC)

    code, out, _ = cli("run", str(spec), "--json")

    assert code == 0
    best = json.loads(out)
    assert best["study_id"] == 1
    assert best["metrics"] == ["accuracy"]
    assert len(best["trials"]) == 1


def test_run_invalid_spec_is_one_line_exit_2(cli: Run, bad_spec_file: Path) -> None:
    code, out, err = cli("run", str(bad_spec_file))

    assert code == 2
    assert out == ""
    line = one_error_line(err)
    assert "params.lr.low" in line
    assert str(bad_spec_file) in line
    assert _no_store_here(cli)


def test_run_missing_file_is_one_line_exit_2(cli: Run) -> None:
    code, out, err = cli("run", "missing.yaml")

    assert code == 2
    assert out == ""
    assert "missing.yaml" in one_error_line(err)


def test_run_unknown_device_is_exit_2(cli: Run, spec_file: Path) -> None:
    code, _, err = cli("run", str(spec_file), "--device", "tpu")

    assert code == 2
    assert "tpu" in one_error_line(err)


def test_run_unknown_device_leaves_no_study(cli: Run, spec_file: Path) -> None:
    code, _, _ = cli("run", str(spec_file), "--device", "tpu")

    assert code == 2
    assert _no_store_here(cli)


# --- the API as target (--url) ---------------------------------------------------------------


def test_unreachable_url_is_exit_1(cli: Run) -> None:
    url = f"http://127.0.0.1:{free_port()}"

    code, out, err = cli("status", "--url", url)

    assert code == 1
    assert out == ""
    line = one_error_line(err)
    assert line.startswith(f"error: cannot reach the API at {url}")


def test_the_password_of_an_api_url_is_never_repeated(cli: Run) -> None:
    """Found by a security review: ``--url http://user:pass@...`` came back whole."""
    port = free_port()
    code, out, err = cli("status", "--url", f"http://user:Pa55w0rd@127.0.0.1:{port}")
    assert (code, out) == (1, "")
    assert one_error_line(err).startswith("error: cannot reach the API at http://user:***@")
    code, _, err = cli("status", "--url", "ftp://user:Pa55w0rd@host")
    assert code == 2 and "Pa55w0rd" not in err and "ftp://user:***@host" in err


def test_an_api_that_does_not_answer_in_time_is_named_so(
    cli: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by a tester: an API drawing a long report was called unreachable ("timed
    out"); it was up, and busy."""
    monkeypatch.setattr(http_client, "HTTP_TIMEOUT_S", 0.2)
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts, never answers
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"

        code, _, err = cli("status", "--url", url)

    assert code == 1
    assert one_error_line(err) == (
        f"error: the API at {url} did not answer GET /studies within 0.2 s"
    )


def test_unreachable_url_from_env_is_exit_1(cli: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTOML_URL", f"http://127.0.0.1:{free_port()}")

    code, _, err = cli("best", "1")

    assert code == 1
    assert "cannot reach the API" in one_error_line(err)


@pytest.fixture
def api_url(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[str]:
    """Routes the CLI's HTTP client to an in-process API app on its own SQLite file."""
    app = create_app(
        Settings(storage=f"sqlite:///{tmp_path / 'api.db'}", artifacts_dir=tmp_path / "api-art")
    )
    base_url = "http://api.test"

    class InProcessHttpClient(cli_client.HttpClient):
        def __init__(self, url: str) -> None:
            super().__init__(url)
            self._http.close()
            self._http = TestClient(app, base_url=self.base_url)

    monkeypatch.setattr(study_commands, "HttpClient", InProcessHttpClient)
    monkeypatch.setattr(report_commands, "HttpClient", InProcessHttpClient)
    monkeypatch.setattr(bundle_commands, "HttpClient", InProcessHttpClient)
    yield base_url
    app.state.store.close()


def test_a_repeated_submit_over_http_says_it_was_submitted_before(
    cli: Run, api_url: str, spec_file: Path
) -> None:
    first = cli("submit", str(spec_file), "--idempotency-key", "k", "--url", api_url)
    again = cli("submit", str(spec_file), "--idempotency-key", "k", "--url", api_url)

    assert first[:2] == (0, "submitted study 1 (tiny): queued\n")
    assert again[:2] == (
        0,
        "study 1 (tiny) was submitted before with this idempotency key: queued\n",
    )


def test_submit_and_status_over_http(cli: Run, api_url: str, spec_file: Path) -> None:
    code, out, err = cli("submit", str(spec_file), "--url", api_url)

    assert code == 0, err
    assert out.strip() == "submitted study 1 (tiny): queued"
    _, listed, _ = cli("status", "--url", api_url, "--json")
    assert json.loads(listed)["count"] == 1
    assert _no_store_here(cli), "--url must not touch the local store"
    _, one, _ = cli("status", "1", "--url", api_url)
    assert one.splitlines()[0] == "study 1: tiny"


def test_status_over_http_pages_past_the_apis_largest_page(
    cli: Run, api_url: str, spec_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by a tester: `status --limit 1001 --url` failed ("limit: Input should be less
    than or equal to 1000"), and nothing reached past the newest 1,000 studies."""
    for _ in range(5):
        assert cli("submit", str(spec_file), "--url", api_url)[0] == 0
    monkeypatch.setattr(http_client, "API_PAGE", 2)

    code, listed, err = cli("status", "--url", api_url, "--json", "--limit", "4")
    assert code == 0, err
    assert [s["id"] for s in json.loads(listed)["data"]] == [5, 4, 3, 2]
    every = json.loads(cli("status", "--url", api_url, "--json", "--limit", "1001")[1])
    assert ([s["id"] for s in every["data"]], every["count"]) == ([5, 4, 3, 2, 1], 5)


@pytest.fixture
def lose_answers(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], None]:
    """Makes the CLI's requests with ``method`` reach the API, then lose its answer (the
    connection drops after the API has done the work)."""

    sent = TestClient.request

    def lose(method: str) -> None:
        def cut(client: Any, verb: str, *args: Any, **kwargs: Any) -> Any:
            answer = sent(client, verb, *args, **kwargs)
            if verb == method:
                raise httpx.RemoteProtocolError("Server disconnected without sending a response")
            return answer

        monkeypatch.setattr(TestClient, "request", cut)

    return lose


def test_a_submit_whose_answer_was_lost_over_http_names_a_key_that_submits_at_most_once(
    cli: Run, api_url: str, spec_file: Path, lose_answers: Callable[[str], None]
) -> None:
    lose_answers("POST")
    code, _, err = cli("submit", str(spec_file), "--url", api_url)
    key = _key_in(one_error_line(err))
    lose_answers("none")
    again = cli("submit", str(spec_file), "--url", api_url, "--idempotency-key", key)
    listed = json.loads(cli("status", "--url", api_url, "--json")[1])

    assert code == 1
    assert one_error_line(err) == (
        f"error: cannot reach the API at {api_url}: Server disconnected without sending a "
        "response" + may_have_submitted(key)
    )
    assert again[:2] == (
        0,
        "study 1 (tiny) was submitted before with this idempotency key: queued\n",
    )
    assert listed["count"] == 1


def test_a_change_whose_answer_was_lost_over_http_may_have_been_made_and_says_so(
    cli: Run, api_url: str, spec_file: Path, lose_answers: Callable[[str], None]
) -> None:
    assert cli("submit", str(spec_file), "--url", api_url)[0] == 0
    lose_answers("POST")
    code, _, err = cli("extend", "1", "--add-trials", "1", "--url", api_url)
    lose_answers("none")
    read = cli("status", "1", "--url", api_url, "--json")

    assert code == 1
    assert one_error_line(err).endswith(
        "Server disconnected without sending a response" + MAY_HAVE_CHANGED
    )
    assert json.loads(read[1])["n_trials"] == tiny_spec_data()["budget"]["n_trials"] + 1


def test_a_submit_that_reached_no_api_says_nothing_was_made(cli: Run, spec_file: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"

    code, _, err = cli("submit", str(spec_file), "--url", url)

    assert code == 1
    assert one_error_line(err).startswith(f"error: cannot reach the API at {url}: ")
    assert "--idempotency-key" not in err
    assert "may have been" not in err


@pytest.mark.filterwarnings("ignore:You should not use the 'timeout' argument")  # TestClient
def test_errors_over_http_are_one_line(
    cli: Run, api_url: str, spec_file: Path, bad_spec_file: Path
) -> None:
    invalid = cli("submit", str(bad_spec_file), "--url", api_url)
    unknown = cli("status", "3", "--url", api_url)
    cli("submit", str(spec_file), "--url", api_url)
    no_best = cli("best", "1", "--url", api_url)
    no_model = cli("best", "1", "--download", "model", "--url", api_url)
    no_report = cli("report", "1", "-o", "r.html", "--url", api_url)
    unknown_best = cli("best", "3", "--url", api_url)
    cli("cancel", "1", "--url", api_url)
    cancelled = cli("cancel", "1", "--url", api_url)
    missing = cli("submit", "absent.yaml", "--url", api_url)

    assert invalid[0] == 2
    assert one_error_line(invalid[2]).startswith("error: params.lr.low: ")
    assert unknown[0] == 2
    assert one_error_line(unknown[2]) == "error: study 3 not found"
    assert no_best[0] == 1  # not a bad input: the study is there
    assert no_report[0] == 1, no_report  # a reviewer: exit 2 over the API, 1 locally
    assert "has no completed trial yet" in one_error_line(no_report[2])
    assert one_error_line(no_best[2]) == "error: study 1 has no completed trial yet"
    assert no_model[0] == 1, no_model  # a tester: exit 2 over the API, 1 locally
    assert "has no completed trial yet" in one_error_line(no_model[2])
    assert unknown_best[0] == 2
    assert one_error_line(unknown_best[2]) == "error: study 3 not found"
    assert cancelled[0] == 2
    assert one_error_line(cancelled[2]) == "error: study 1 is already cancelled"
    assert missing[0] == 2
    assert "absent.yaml" in one_error_line(missing[2])


# --- argument errors -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "level"),
    [
        (["status"], "INFO"),
        (["--log-level", "ERROR", "status"], "ERROR"),
        (["status", "3", "--log-level", "DEBUG"], "DEBUG"),
        (["--log-level", "ERROR", "keys", "list", "--log-level", "DEBUG"], "DEBUG"),
    ],
)
def test_the_log_level_is_taken_before_or_after_the_command(args: list[str], level: str) -> None:
    """Found by a README walkthrough: ``automl status 3 --url U --log-level DEBUG`` was a
    usage error; only ``automl --log-level DEBUG status ...`` worked."""
    assert build_parser().parse_args(args).log_level == level


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["frobnicate"],
        ["status", "abc"],
        ["best"],
        ["run"],
        ["status", "--limit", "x"],
        ["--log-level", "LOUD", "status"],
        ["status", "--log-level", "LOUD"],
    ],
    ids=[
        "no-command",
        "unknown-command",
        "non-int-id",
        "best-no-id",
        "run-no-spec",
        "bad-int",
        "bad-level",
        "bad-level-after",
    ],
)
def test_usage_errors_exit_2(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(args)

    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: automl")
    assert "error:" in err


@pytest.mark.parametrize(
    ("variable", "value", "command", "message"),
    [
        # As a flag, argparse refuses it (exit 2).
        (
            "AUTOML_PORT",
            "70000",
            "serve",
            "AUTOML_PORT=70000: Input should be less than or equal to 65535",
        ),
        # Once a traceback at submit in the CLI, and a 500 from a server that had started.
        (
            "AUTOML_LIMIT_MAX_TRIALS",
            "abc",
            "serve",
            "AUTOML_LIMIT_MAX_TRIALS=abc: Input should be a valid integer, unable to parse string "
            "as an integer",
        ),
        # Once an OverflowError from the idle worker's wait.
        (
            "AUTOML_POLL_INTERVAL",
            "1e10",
            "worker",
            "AUTOML_POLL_INTERVAL=1e10: Input should be less than ",
        ),
        # A rule between settings names no field of its own (once "setting : Value error, ").
        (
            "AUTOML_GRACE_PERIOD",
            "5",
            "worker",
            "AUTOML_GRACE_PERIOD=5: must exceed twice AUTOML_HEARTBEAT_INTERVAL (10 s)",
        ),
    ],
    ids=["port", "limit", "poll-interval", "grace-period"],
)
def test_invalid_setting_is_exit_2(
    cli: Run,
    monkeypatch: pytest.MonkeyPatch,
    variable: str,
    value: str,
    command: str,
    message: str,
) -> None:
    monkeypatch.setenv(variable, value)

    code, _, err = cli(command)

    assert code == 2
    assert one_error_line(err).startswith(f"error: invalid setting {message}")


def test_serve_workers_start_the_app_factory_with_the_same_settings(
    cli: Run, monkeypatch: pytest.MonkeyPatch, sqlite_url: str
) -> None:
    from automl.cli.api_server import ApiProcesses

    monkeypatch.setattr(os, "environ", dict(os.environ))  # what serve exports, undone after
    os.environ.pop("NO_COLOR", None)
    os.environ["TERM"] = "xterm-256color"
    configs: list[Any] = []

    def run(self: ApiProcesses) -> None:  # as if stopped by SIGTERM at once
        configs.append(self.config)
        self.sockets[0].close()
        self.stopped_by = signal.SIGTERM

    monkeypatch.setattr(ApiProcesses, "run", run)
    port = free_port()

    code, _, err = cli("serve", "--workers", "3", "--port", str(port), "--no-access-log")

    assert code == 0, err
    [config] = configs
    assert config.app == "automl.api.app:create_app"
    assert config.factory is True
    assert (config.workers, config.port, config.access_log) == (3, port, False)
    rebuilt = Settings()  # what each process's create_app() reads
    assert (rebuilt.storage, rebuilt.port, rebuilt.api_workers) == (sqlite_url, port, 3)
    assert config.use_colors is None  # uvicorn's choice: colors on a terminal

    # Found by a tester: NO_COLOR and TERM=dumb still got uvicorn's colored log.
    for name, value in (("NO_COLOR", "1"), ("TERM", "dumb")):
        with monkeypatch.context() as patched:
            patched.setitem(os.environ, name, value)
            assert cli("serve", "--workers", "2", "--port", str(free_port()))[0] == 0
        assert configs[-1].use_colors is False


def test_serve_workers_that_stop_by_themselves_failed_to_start(
    cli: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    """uvicorn's supervisor stops by itself only when its processes cannot start (it
    returned, and serve exited 0)."""
    from automl.cli.api_server import ApiProcesses

    monkeypatch.setattr(os, "environ", dict(os.environ))
    monkeypatch.setattr(ApiProcesses, "run", lambda self: self.sockets[0].close())

    code, _, err = cli("serve", "--workers", "2", "--port", str(free_port()))

    assert code == 1
    assert err.splitlines()[-1] == "error: the API processes failed to start (see the log above)"


@pytest.mark.slow
def test_serve_workers_serve_one_port_from_several_processes(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "AUTOML_STORAGE": f"sqlite:///{tmp_path / 'automl.db'}"}
    command = [sys.executable, "-m", "automl", "--log-level", "WARNING", "serve"]
    process = subprocess.Popen(
        [*command, "--workers", "2", "--port", str(port)],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, process.stdout.read().decode()  # type: ignore[union-attr]
            try:
                if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "serve --workers 2 never answered"
            time.sleep(0.3)
        submitted = httpx.post(f"{url}/studies", json=tiny_spec_data(), timeout=30)
        assert submitted.status_code == 201, submitted.text
        for _ in range(10):  # whichever process answers sees the same store
            listed = httpx.get(f"{url}/studies", timeout=30).json()
            assert [study["id"] for study in listed["data"]] == [submitted.json()["id"]]
        children = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
        assert len(children) >= 2
        os.killpg(process.pid, signal.SIGINT)
        assert process.wait(timeout=30) == 130  # Ctrl-C, as for every command (once 0)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--version"])

    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"automl {__version__}"


# --- the installed console script ------------------------------------------------------------


def _automl_command() -> list[str]:
    script = shutil.which("automl")
    return [script] if script else [sys.executable, "-m", "automl"]


def test_console_script_version() -> None:
    result = subprocess.run(
        [*_automl_command(), "--version"], capture_output=True, text=True, timeout=120
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"automl {__version__}"


def test_console_script_run(tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "run.yaml", RUN_SPEC)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOML_")}

    result = subprocess.run(
        [
            *_automl_command(),
            "run",
            str(spec),
            "--storage",
            f"sqlite:///{tmp_path / 'script.db'}",
            "--artifacts-dir",
            str(tmp_path / "script-artifacts"),
            "--device",
            "cpu",
        ],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=tmp_path,
        env=env,
    )

    assert result.returncode == 0, result.stderr
    assert "status:    completed" in result.stdout
    assert "best trial #" in result.stdout
    assert "accuracy=" in result.stdout
    assert "study 1 (cli-run): 2 trials on cpu" in result.stderr
    assert (tmp_path / "script.db").is_file()
    assert not (tmp_path / "automl.db").exists(), "--storage was ignored"


def test_python_dash_m_usage_error_exit_2() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "automl", "status", "notanumber"],
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 2
    assert "usage: automl" in result.stderr


# --- list ----------------------------------------------------------------------------------


def test_list_shows_registries_and_one_registry(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "optimizers" in out and "adam, adamw, rmsprop, sgd" in out
    assert main(["list", "models"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("models:") and "cnn:" in out and "width" in out
    assert main(["list", "optimizers", "--json"]) == 0
    assert {entry["name"] for entry in json.loads(capsys.readouterr().out)} >= {"sgd", "adam"}


def test_list_unknown_registry_is_bad_input(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "widgets"]) == 2
    assert capsys.readouterr().err.startswith("error: unknown registry 'widgets'; valid choices:")


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("AUTOML_CUDA_GRAPHS", "maybe"),
        ("AUTOML_CPU_CHANNELS_LAST", "2"),
        ("AUTOML_SYNC_DEBUG", "x"),
    ],
)
def test_a_bad_device_setting_stops_run_and_worker_with_one_line(
    cli: Run,
    spec_file: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    variable: str,
    value: str,
) -> None:
    """Checked before anything is submitted or claimed, not as a failure of every trial."""
    monkeypatch.setenv(variable, value)
    for args in (("run", str(spec_file)), ("worker", "--exit-when-idle")):
        code, _, err = cli(*args)
        assert code == 2
        assert variable in one_error_line(err) and repr(value) in err
    monkeypatch.delenv(variable)
    _, listed, _ = cli("status", "--json")
    assert json.loads(listed)["count"] == 0  # run submitted nothing


def test_a_worker_says_where_it_keeps_weights_and_what_it_cannot_run(
    cli: Run,
    spec_file: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Found by a tester: a worker with another artifact store than the API's, one whose
    AUTOML_DATA_ROOT was wrong, and one asked for an ended study all started without a word
    (the second failed every image-folder trial it claimed)."""
    cli("submit", str(spec_file))
    cli("cancel", "1")
    monkeypatch.setenv("AUTOML_DATA_ROOT", str(tmp_path / "nowhere"))

    with caplog.at_level(logging.INFO, "automl.worker"):
        code, _, err = cli("worker", "--study", "1", "--exit-when-idle")

    # Found by a scripting tester: it exited 0 on a cancelled study, where `run` (which
    # names `worker --study` to resume with) exits 1.
    assert code == 1
    assert one_error_line(err) == "error: study 1 cancelled: cancelled by request"
    assert "study 1 already ended (cancelled): nothing to train" in caplog.text
    assert f"artifacts: folder {(tmp_path / 'artifacts').resolve()}" in caplog.text
    root = f"the data root {tmp_path / 'nowhere'} (AUTOML_DATA_ROOT) is not a folder"
    assert root in caplog.text


@pytest.mark.slow
def test_worker_processes_for_one_study_judge_its_end_once(cli: Run, spec_file: Path) -> None:
    """Found by a reviewer: each process of ``worker --slots K --study ID`` exited 1 on a
    cancelled study, which the supervisor took for a crash and restarted, again and
    again. Its processes now leave that to it: one error line, exit 1, no restart."""
    cli("submit", str(spec_file))
    cli("cancel", "1")
    started = time.monotonic()

    code, _, err = cli("worker", "--study", "1", "--slots", "2", "--device", "cpu")

    assert code == 1, err
    assert err.splitlines()[-1] == "error: study 1 cancelled: cancelled by request"
    assert "restarting" not in err
    assert time.monotonic() - started < 90


def test_run_progress_counts_attempts_that_end_their_ticket_and_ranks_only_automls(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Once a worker stopped by Ctrl-C showed `trial 1 fail ... [2/6]`, though the
    attempt was released and status said failed 0."""
    from optuna.trial import TrialState, create_trial

    from automl.cli.commands import _Progress
    from automl.store import attrs

    progress = _Progress(3, "x", ["accuracy"], ["maximize"])
    stopped = create_trial(
        state=TrialState.FAIL, user_attrs={attrs.ERROR: "worker stopping: during epoch 4"}
    )
    stopped.number = 1
    done = create_trial(state=TrialState.COMPLETE, value=0.9)
    done.number = 2

    told = create_trial(state=TrialState.COMPLETE, value=1.0)  # a made-up value
    told.number = 3

    progress.update(1, stopped, "released")
    progress.update(1, done, "complete")
    progress.update(1, told, "ended_outside")
    progress.update(1, done, "complete")

    lines = capsys.readouterr().err.splitlines()
    assert lines == [
        "trial 1 stopped before its end: worker stopping: during epoch 4",
        "trial 2 complete: accuracy 0.9000 [1/3, best 0.9000]",
        "trial 3 was ended complete by another tool while it trained (never ranked) [2/3]",
        "trial 2 complete: accuracy 0.9000 [3/3, best 0.9000]",  # 1.0 is not the best
    ]


def test_run_progress_takes_the_best_by_direction_and_shows_every_objective(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Found by a tester: with several objectives each line said "best" of the first one
    alone; and "best" was the largest value of any metric but loss (latency_ms too)."""
    from optuna.trial import TrialState, create_trial

    from automl.cli.commands import _Progress

    fast, slow = (create_trial(state=TrialState.COMPLETE, value=v) for v in (1.5, 3.0))
    fast.number, slow.number = 0, 1
    progress = _Progress(2, "x", ["latency_ms"], ["minimize"])
    progress.update(1, fast, "complete")
    progress.update(1, slow, "complete")
    two = _Progress(1, "x", ["accuracy", "latency_ms"], ["maximize", "minimize"])
    both = create_trial(state=TrialState.COMPLETE, values=[0.875, 2.5])
    both.number = 2
    two.update(1, both, "complete")

    assert capsys.readouterr().err.splitlines() == [
        "trial 0 complete: latency_ms 1.5000 [1/2, best 1.5000]",
        "trial 1 complete: latency_ms 3.0000 [2/2, best 1.5000]",
        "trial 2 complete: accuracy 0.8750, latency_ms 2.5000 [1/1]",
    ]


@pytest.mark.parametrize(("stop", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 0)])
def test_a_worker_exits_130_after_ctrl_c_and_0_after_sigterm(
    tmp_path: Path, stop: signal.Signals, code: int
) -> None:
    """Ctrl-C is 130 for every command, as the README says (a worker exited 0); SIGTERM
    (docker stop, systemd) is a clean stop."""
    log = tmp_path / "worker.log"
    command = [*_automl_command(), "worker", "--poll-interval", "0.2", "--device", "cpu"]
    command += ["--storage", f"sqlite:///{tmp_path / 'w.db'}", "--artifacts-dir", str(tmp_path)]
    with log.open("wb") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while "started on" not in log.read_text():
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        process.send_signal(stop)
        assert process.wait(timeout=60) == code, log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_download_without_a_trial_number_is_refused(cli: Run, tmp_path: Path) -> None:
    code, _, err = cli("trials", "1", "--download", str(tmp_path / "model"))

    assert code == 2
    assert one_error_line(err) == "error: --download saves one trial's model: name its NUMBER"
    assert not (tmp_path / "model").exists()


def test_overwrite_without_download_is_refused(cli: Run) -> None:
    """Found by a tester: ``best 1 --overwrite`` ignored the flag without a word."""
    for command in (("best", "1"), ("trials", "1", "0"), ("trials", "1")):
        code, _, err = cli(*command, "--overwrite")

        assert code == 2, command
        assert one_error_line(err) == "error: --overwrite goes with --download DIR"
