"""``automl export ID DIR``: a study, every trial and its best model, as plain files.

Writes ``study.json`` (spec, status, best trials), ``trials.json`` (every trial),
``trials.csv`` (one row per trial: values, params and metrics as columns) and, when the
best trial kept its weights, the model bundle in ``model/``; should that model fail to
bundle, the other files are still written and the command says why in one ``error:`` line
and exits 2. Everything is read before anything is written, and a new folder is written
as a hidden sibling (``.DIR.partial-*``) renamed into place at the end, so neither a
failure nor a killed process leaves a half-written folder (a killed one may leave that
sibling behind). Into a folder that already exists (empty, or with ``--overwrite``) files
are written in place. Against the API (``--url``) nothing heavy is imported.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import os
import shutil
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from automl.cli.bundle_commands import (
    card_section,
    fetch_bundle,
    remove_earlier_bundle,
    unpack_bundle,
)
from automl.cli.errors import EXIT_BAD_INPUT, EXIT_OK, CliError
from automl.cli.http_client import ClientError
from automl.cli.output import selection_text
from automl.cli.study_commands import client_for
from automl.config import Settings
from automl.csv_cells import as_text_cell
from automl.store.attrs import RefitState
from automl.store.views import BestTrials, StudyDetail, TrialSummary
from automl.wording import counted

MODEL_DIR = "model"


def cmd_export(args: argparse.Namespace, settings: Settings) -> int:
    """Exports study ``args.study`` into the folder ``args.directory``."""
    directory = Path(args.directory)
    _check_target(directory, args.overwrite)
    client = client_for(settings)
    study = client.study(args.study)
    trials = client.trials(args.study, intermediate_values=True).data
    best = client.best(args.study) if study.counts.complete else None
    bundle, no_model = _bundle(settings, args.study, best)
    files = {
        "study.json": _json({"study": _dump(study), "best": _dump(best)}),
        "trials.json": _json([_dump(trial) for trial in trials]),
        "trials.csv": trials_csv(study, trials),
    }
    with _staging(directory) as folder:
        written = [_write(folder, name, text) for name, text in files.items()]
        card: dict[str, Any] = {}
        if bundle is not None:  # an earlier export's model (maybe another study's) replaced
            model_files, card = unpack_bundle(bundle, folder / MODEL_DIR, replace=True)
            written += model_files
        elif remove_earlier_bundle(folder / MODEL_DIR):  # and none left without a new one
            with contextlib.suppress(OSError):  # not empty: the user's files stay
                (folder / MODEL_DIR).rmdir()
        names = [str(path.relative_to(folder)) for path in written]
    failed = bundle is None and _has_weights(best)
    if args.json:
        print(json.dumps({"directory": str(directory), "files": names, "no_model": no_model}))
    else:
        why = selection_text(card_section(card, "bundle").get("selection"))
        model = (
            f"the model of trial {card_section(card, 'model').get('trial_number')}"
            f"{f' ({why})' if why else ''} in {MODEL_DIR}/"
            if bundle is not None
            else f"no model ({no_model})"
        )
        print(
            f"study {study.id} ({study.name}, {study.status.value}): wrote study.json, "
            f"trials.json and trials.csv ({counted(len(trials), 'trial')}) and {model} to "
            f"{directory}"
        )
    if failed:
        print(f"error: {MODEL_DIR}/ not written: {no_model}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return EXIT_OK


def _has_weights(best: BestTrials | None) -> bool:
    """Whether the model that serves the study kept weights: a bundle was due."""
    if best is None or not best.trials:
        return False
    refit_done = best.refit is not None and best.refit.state == RefitState.DONE
    return refit_done or best.trials[0].weights_available


def trials_csv(study: StudyDetail, trials: list[TrialSummary]) -> str:
    """One row per trial: number, state, a value column per objective, times, failure,
    then a ``param.NAME`` column per parameter and a ``metric.NAME`` column per metric."""
    params = sorted({name for trial in trials for name in trial.params})
    metrics = sorted({name for trial in trials for name in trial.metrics or {}})
    header = ["number", "state", *(f"value.{metric}" for metric in study.metrics)]
    header += ["duration_s", "datetime_start", "datetime_complete", "failure"]
    header += [f"param.{name}" for name in params] + [f"metric.{name}" for name in metrics]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for trial in trials:
        values = list(trial.values or [])
        values += [None] * (len(study.metrics) - len(values))
        row: list[Any] = [trial.number, trial.state, *values[: len(study.metrics)]]
        row += [trial.duration_s, trial.datetime_start, trial.datetime_complete, trial.failure]
        row += [trial.params.get(name) for name in params]
        row += [(trial.metrics or {}).get(name) for name in metrics]
        writer.writerow(["" if cell is None else _csv_cell(cell) for cell in row])
    return out.getvalue()


def _csv_cell(value: Any) -> Any:
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return as_text_cell(value) if isinstance(value, str) else value  # e.g. a file name


def _check_target(directory: Path, overwrite: bool) -> None:
    if directory.exists() and not directory.is_dir():
        raise CliError(f"{directory} exists and is not a folder", EXIT_BAD_INPUT)
    if directory.is_dir() and any(directory.iterdir()) and not overwrite:
        raise CliError(
            f"{directory} is not empty; choose a new folder or pass --overwrite", EXIT_BAD_INPUT
        )


@contextlib.contextmanager
def _staging(directory: Path) -> Iterator[Path]:
    """The folder to write the export into: a new hidden sibling renamed to ``directory``
    when the block succeeds (removed when it fails), or ``directory`` itself if it exists."""
    if directory.is_dir():
        yield directory
        return
    staging = directory.parent / f".{directory.name}.partial-{uuid.uuid4().hex[:12]}"
    try:
        staging.mkdir(parents=True)
    except OSError as exc:
        raise CliError(f"cannot write {directory}: {exc.strerror}", EXIT_BAD_INPUT) from None
    try:
        yield staging
        os.replace(staging, directory)  # one rename: the folder appears complete
    except OSError as exc:
        raise CliError(f"cannot write {directory}: {exc.strerror}", EXIT_BAD_INPUT) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _bundle(
    settings: Settings, study_id: int, best: BestTrials | None
) -> tuple[bytes | None, str | None]:
    """The best model's bundle, or None with the reason there is none."""
    if best is None:
        return None, "no completed trial"
    try:
        return fetch_bundle(settings, study_id), None
    except ClientError as exc:
        if not exc.bad_input:
            raise
        return None, str(exc)
    except CliError as exc:
        if exc.code != EXIT_BAD_INPUT:
            raise
        return None, str(exc)


def _dump(model: Any) -> Any:
    return None if model is None else model.model_dump(mode="json")


def _json(data: Any) -> str:
    return json.dumps(data, indent=2) + "\n"


def _write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    try:
        directory.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise CliError(f"cannot write {path}: {exc.strerror}", EXIT_BAD_INPUT) from None
    return path
