"""Commands that only read the store (``automl status``, ``automl trials``, ``automl best``)
run without the spec's models, the registries or torch, and say the same as with them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from automl.spec import validate_spec
from automl.store import Store, open_store, submit_study
from tests.conftest import tiny_spec_data
from tests.store.conftest import drive

HEAVY = ("torch", "torchvision", "sklearn", "automl.spec", "automl.catalog")
"""What the commands that read the store's tables must not import."""

READ = """
import json, sys
from automl.cli.main import main
codes = [main(args) for args in json.loads(sys.argv[1])]
heavy = sorted(name for name in {heavy!r} if name in sys.modules)
print(json.dumps({{"codes": codes, "heavy": heavy}}), file=sys.stderr)
"""


def _store_with_trials(url: str, tmp_path: Path) -> tuple[int, int]:
    """A study with three trials, and one with none."""
    store: Store = open_store(url, artifacts_dir=tmp_path / "artifacts")
    try:
        spec = validate_spec(tiny_spec_data(objective={"metric": "loss"}))
        study_id = submit_study(store, spec).id
        drive(store, study_id, [0.7, 0.2, 0.5])
        empty = submit_study(store, spec).id
    finally:
        store.close()
    return study_id, empty


def _read(commands: list[list[str]], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", READ.format(heavy=HEAVY), json.dumps(commands)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
    )


def test_status_and_trials_import_no_spec_registry_or_torch(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'automl.db'}"
    study_id = str(_store_with_trials(url, tmp_path)[0])
    commands = [
        ["status", "--storage", url],
        ["trials", study_id, "--storage", url],
        ["trials", study_id, "1", "--storage", url],
        ["status", study_id, "--storage", url, "--json"],
        ["status", "7", "--storage", url],
        ["trials", study_id, "1", "--limit", "2", "--storage", url],
    ]

    done = _read(commands, tmp_path)

    *errors, summary = done.stderr.splitlines()
    assert json.loads(summary) == {"codes": [0, 0, 0, 0, 2, 2], "heavy": []}, done.stderr
    assert errors == [
        "error: study 7 not found",
        "error: --state and --limit list trials; a trial's NUMBER shows one",
    ]
    assert f"trial #1 of study {study_id}: complete, loss=0.2" in done.stdout
    detail = json.loads(done.stdout[done.stdout.index("\n{") :])
    assert detail["directions"] == ["minimize"]  # loss's own: the spec names none
    assert detail["best_value"] == 0.2


def test_best_imports_no_spec_registry_or_torch(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'automl.db'}"
    study_id, empty = map(str, _store_with_trials(url, tmp_path))
    commands = [
        ["best", study_id, "--storage", url],
        ["best", empty, "--storage", url],
        ["best", study_id, "--storage", url, "--json"],
    ]

    done = _read(commands, tmp_path)

    *errors, summary = done.stderr.splitlines()
    assert json.loads(summary) == {"codes": [0, 1, 0], "heavy": []}, done.stderr
    assert errors == [f"error: study {empty} has no completed trial yet"]
    assert f"best trial #1 of study {study_id}: loss=0.2\n" in done.stdout
    assert f"per-class report: automl trials {study_id} 1 --storage {url}" in done.stdout
    best = json.loads(done.stdout[done.stdout.index("\n{") :])
    assert (best["directions"], best["metrics"]) == (["minimize"], ["loss"])
    assert [trial["number"] for trial in best["trials"]] == [1]
