"""The commands that work on studies through the local store or the API (``--url``).

This module imports no heavy library: against the API only httpx and pydantic load, so
``automl status --url ...`` starts fast. The store is opened only on the local path.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from automl.cli.arguments import MAX_ID
from automl.cli.bundle_commands import cmd_download_best
from automl.cli.errors import EXIT_BAD_INPUT, EXIT_OK, CliError
from automl.cli.http_client import HttpClient
from automl.cli.output import (
    best_text,
    failure_text,
    printable,
    printable_json,
    studies_table,
    study_text,
    trial_text,
    trials_table,
)
from automl.cli.wait_commands import check_timeout, wait_for
from automl.config import Settings
from automl.url_secrets import without_password
from automl.wording import counted, first_few

if TYPE_CHECKING:
    from automl.cli.client import Client
    from automl.spec import StudySpec
    from automl.store.views import StudyDetail


def client_for(settings: Settings, *, create: bool = False) -> Client:
    """The API's client with ``--url`` (``AUTOML_URL``), else the local store's (see
    ``open_store`` for ``create``)."""
    if settings.url:
        return HttpClient(settings.url)
    from automl.cli.client import LocalClient
    from automl.cli.local_store import open_store

    return LocalClient(open_store(settings, create=create))


def print_json(model: BaseModel, **dump: Any) -> None:
    """Prints a view as indented JSON (``dump``: more of ``model_dump_json``'s options)."""
    print(printable_json(model.model_dump_json(indent=2, **dump)))


def cmd_submit(args: argparse.Namespace, settings: Settings) -> int:
    """Submits a spec to the API (--url) or the local store."""
    path = Path(args.spec)
    # Once: a pipe (<(envsubst < spec.yaml), -) reads once.
    text = read_spec_text(path, settings.max_body_bytes)
    is_json = path.suffix == ".json"
    spec = None
    if not settings.url:
        from automl.spec import spec_from_text

        spec = spec_from_text(text, is_json=is_json)  # refused before a store is made for it
    if args.timeout is not None and not args.wait:
        raise CliError("--timeout goes with --wait", EXIT_BAD_INPUT)
    check_timeout(args.timeout)
    client = client_for(settings, create=True)
    study, replayed = client.submit(text, is_json, args.idempotency_key)
    # With --wait, stdout is the study as it ended (one JSON document with --json).
    out = sys.stderr if args.wait else sys.stdout
    if args.json and not args.wait:
        print_json(study)
    elif replayed:
        print(
            f"study {study.id} ({study.name}) was submitted before with this idempotency "
            f"key: {study.status.value}",
            file=out,
        )
    else:
        print(f"submitted study {study.id} ({study.name}): {study.status.value}", file=out)
    if spec is not None and not replayed:  # the data is this machine's (--url: the server's)
        warn_unread(spec)
    if args.wait:
        return wait_for(client, study.id, timeout=args.timeout, as_json=args.json)
    return EXIT_OK


def warn_unread(spec: StudySpec) -> None:
    """Warns on stderr of what the image folders' listing leaves out (as ``validate
    --data`` lists it): images in folders inside class folders are not read, unlike with
    torchvision's ``ImageFolder``."""
    try:
        notes = unread_notes(spec)
    except CliError as exc:  # the study is submitted: a warning, not a failure
        notes = [f"cannot list the image folders: {exc}"]
    for note in notes:
        print(f"warning: not read: {note}", file=sys.stderr)


def cmd_validate(args: argparse.Namespace, settings: Settings) -> int:
    """Checks a spec as submitting it would (fields, entries, options, the dataset's files
    under this machine's data root), submitting nothing: the spec as it would run, or its
    errors (exit 2)."""
    from automl.spec import spec_from_text

    path = Path(args.spec)
    spec = spec_from_text(
        read_spec_text(path, settings.max_body_bytes), is_json=path.suffix == ".json"
    )
    data = data_summary(spec) if args.data else None
    if args.json and data is not None:
        # The spec as it would be stored, beside what the data holds.
        stored = json.loads(spec.model_dump_json(exclude_none=True))
        print(printable_json(json.dumps({"spec": stored, "data": data}, indent=2)))
    elif args.json:
        print_json(spec, exclude_none=True)
    else:
        print(valid_text(spec) + (f"\n  data        {data_text(data)}" if data else ""))
    return EXIT_OK


_GAPS = (
    ("no_training_images", "untrained", "training", "the model never predicts {}"),
    ("no_validation_images", "unscored", "validation", "the metrics say nothing of {}"),
    ("no_test_images", "unscored", "test", "the metrics say nothing of {}"),
)
"""The classes a split lacks: the key of ``data_summary``, its line's label, the split,
and what follows."""


def data_summary(spec: StudySpec) -> dict[str, Any]:
    """Loads the spec's dataset as a trial would (decoding every image, into the decode
    cache the trials then read), and says what it holds: images per split, each class's
    training images, the classes a split lacks and what an image folder left out.

    Raises:
        CliError: If an image cannot be used (not an image, too many pixels...): exit 2.
    """
    import torch

    from automl.data import DatasetError, load_dataset

    try:
        data = load_dataset(spec.dataset.source, spec.dataset.options)
    except DatasetError as exc:
        raise CliError(f"invalid dataset: {exc}", EXIT_BAD_INPUT) from None
    counts = torch.bincount(data.train_y, minlength=data.num_classes).tolist()
    gaps = data.unscored_classes()
    return {
        "images": {
            "train": len(data.train_y),
            "validation": len(data.val_y),
            "test": None if data.test_y is None else len(data.test_y),
        },
        "classes": len(data.classes),
        "training_images_per_class": dict(zip(data.classes, counts, strict=True)),
        **{key: list(gaps.get(key) or []) for key, *_ in _GAPS},
        "not_read": unread_notes(spec),
    }


def data_text(summary: dict[str, Any]) -> str:
    """``data_summary`` in the lines of ``validate --data``."""
    images, per_class = summary["images"], summary["training_images_per_class"]
    fewest = min(per_class, key=per_class.__getitem__)
    test = "no" if images["test"] is None else str(images["test"])
    unscored = [
        f"\n  {label:<11} {counted(len(names), 'class', 'classes')} without {split} images "
        f"({printable(first_few([repr(name) for name in names], 5))}): "
        + consequence.format("it" if len(names) == 1 else "them")
        for key, label, split, consequence in _GAPS
        if (names := summary[key])
    ]
    return (
        f"{images['train']} training, {images['validation']} validation and {test} test "
        f"images of {summary['classes']} classes (fewest training images: {fewest!r}, "
        f"{per_class[fewest]})"
        + "".join(unscored)
        + "".join(f"\n  not read    {note}" for note in summary["not_read"])
    )


def unread_notes(spec: StudySpec) -> list[str]:
    """What an image folder's listing left out, per folder of the spec."""
    from automl.data import DatasetError
    from automl.data.folder import unread_note

    if spec.dataset.source != "image_folder":
        return []
    notes = []
    for key in ("path", "val_path", "test_path"):
        value = spec.dataset.options.get(key)
        try:
            note = unread_note(value) if isinstance(value, str) else None
        except DatasetError as exc:
            raise CliError(f"invalid dataset: {exc}", EXIT_BAD_INPUT) from None
        if note is not None:  # names from disk: not UTF-8, or with escape sequences
            notes.append(printable(f"{value}: {note}"))
    return notes


def valid_text(spec: StudySpec) -> str:
    """What a valid spec will run: objectives, budget, sampler, pruner and searched params."""
    objectives = ", ".join(
        f"{objective.metric} ({objective.resolved_direction})" for objective in spec.objective_list
    )
    sampler = spec.sampler.name + (
        f" (auto: {spec.sampler.chosen_by})" if spec.sampler.chosen_by else ""
    )
    if spec.sampler.name == "cmaes" and spec.params and not _cma_es_models_any(spec):
        sampler += " (no numeric param that always applies: every trial is drawn at random)"
    elif spec.sampler.name in JOINT_SPACE_SAMPLERS:
        drawn = _drawn_at_random(spec)
        if drawn:
            sampler += f" ({', '.join(drawn)}: may be drawn at random, outside its model)"
    if spec.pruner is not None:
        pruner = spec.pruner.name
    elif len(spec.objective_list) > 1:
        pruner = "none (several objectives cannot prune)"
    else:
        pruner = "median (the default)"
    conditions = {name: spec.conditions(name) for name in spec.params}  # implied ones too
    params = [
        f"{name} (when {_condition_text(conditions[name])})" if conditions[name] else name
        for name in spec.params
    ]
    lines = [
        f"{spec.name}: valid",
        f"  dataset     {spec.dataset.source}",
        f"  objectives  {objectives}",
        f"  trials      {spec.budget.n_trials}",
        f"  sampler     {sampler}",
        f"  pruner      {pruner}",
        f"  params      {', '.join(params) or 'none (fixed values only)'}",
    ]
    return "\n".join(lines)


JOINT_SPACE_SAMPLERS = frozenset({"cmaes", "gp", "nsga2", "qmc"})
"""Samplers that model only the params every trial has (Optuna's relative search space):
conditional params (and, for CMA-ES, categorical ones) go to a random sampler."""


def _drawn_at_random(spec: StudySpec) -> list[str]:
    """The searched params a ``JOINT_SPACE_SAMPLERS`` sampler leaves to chance."""
    from automl.spec import CategoricalParam

    return [
        name
        for name, param in spec.params.items()
        if spec.conditions(name)
        or (spec.sampler.name == "cmaes" and isinstance(param, CategoricalParam))
    ]


def _cma_es_models_any(spec: StudySpec) -> bool:
    """Whether CMA-ES models any searched param: Optuna's leaves categorical and
    conditional ones to its independent (random) sampler."""
    return len(_drawn_at_random(spec)) < len(spec.params)


def _condition_text(when: Mapping[str, object]) -> str:
    """``optimizer: sgd|rmsprop, scheduler: cosine``."""
    return ", ".join(
        f"{parent}: {'|'.join(map(str, values)) if isinstance(values, list) else values}"
        for parent, values in when.items()
    )


def read_spec_text(path: Path, max_bytes: int) -> str:
    """A spec file's text; ``-`` reads standard input. A leading byte-order mark (which
    Windows editors write) is dropped.

    Raises:
        CliError: If it cannot be read (missing, a folder, over ``max_bytes``, not UTF-8).
    """
    try:
        if str(path) == "-":
            if sys.stdin is None:
                raise CliError("no standard input to read the spec from", EXIT_BAD_INPUT)
            if sys.stdin.isatty():
                print("reading the spec from standard input (end with Ctrl-D)", file=sys.stderr)
            data = sys.stdin.buffer.read(max_bytes + 1)
        else:
            with path.open("rb") as handle:
                data = handle.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise CliError(
                f"spec file {path} is over {max_bytes} bytes (AUTOML_MAX_BODY_BYTES)",
                EXIT_BAD_INPUT,
            )
        return data.decode("utf-8").removeprefix("\ufeff")
    except FileNotFoundError:
        raise CliError(f"spec file not found: {path}", EXIT_BAD_INPUT) from None
    except IsADirectoryError:
        raise CliError(f"{path} is a folder, not a spec file", EXIT_BAD_INPUT) from None
    except UnicodeDecodeError:
        raise CliError(f"cannot read spec file {path}: not UTF-8 text", EXIT_BAD_INPUT) from None
    except OSError as exc:
        raise CliError(f"cannot read spec file {path}: {exc.strerror}", EXIT_BAD_INPUT) from None


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    """Lists studies, or shows one."""
    if args.study is None and args.limit < 1:
        raise CliError("--limit must be >= 1", EXIT_BAD_INPUT)
    if args.study is None and args.limit > MAX_ID:
        raise CliError(f"--limit must be <= {MAX_ID}", EXIT_BAD_INPUT)
    client = client_for(settings)
    if args.study is None:
        page = client.studies(args.limit)
        print_json(page) if args.json else print(studies_table(page))
    else:
        study = client.study(args.study)
        if args.json:
            print_json(study)
            return EXIT_OK
        print(study_text(study))
        if study.counts.fail:
            print(_first_failure(client, study.id))
    return EXIT_OK


FAILURES_READ = 50
"""Failed attempts ``status`` reads to find the first that failed for its configuration."""


def _first_failure(client: Client, study_id: int) -> str:
    """Why the study's first trial that failed for its configuration failed (else its
    first failed attempt: a lost worker's may have run again since), and where to read
    the others'."""
    failed = client.trials(study_id, state="fail", limit=FAILURES_READ).data
    own = [trial for trial in failed if trial.failure in ("error", "out_of_memory")]
    first = (own or failed or [None])[0]
    why = failure_text(first) if first is not None else None
    shown = f"trial {first.number}: {printable(why)}" if first is not None and why else "-"
    return (
        f"first failure: {shown}\n(automl trials {study_id} shows each; once its cause is "
        f"fixed, automl rerun-failed {study_id} runs them again)"
    )


def cmd_best(args: argparse.Namespace, settings: Settings) -> int:
    """Shows the best trial of a study; with ``--download DIR``, saves its model bundle."""
    _check_overwrite(args)
    if getattr(args, "download", None):
        return cmd_download_best(args, settings)
    best = client_for(settings).best(args.study)
    if args.json:
        print_json(best)
        return EXIT_OK
    print(best_text(best))
    if best.trials:
        command = ["automl", "trials", str(best.study_id), str(best.trials[0].number)]
        for flag, value in (("--storage", args.storage), ("--url", args.url)):
            if value:  # as this command was given them (a password hidden): the same store
                command += [flag, without_password(value)]
        print(f"\nper-class report: {shlex.join(command)}")
    return EXIT_OK


def _check_overwrite(args: argparse.Namespace) -> None:
    if args.overwrite and not args.download:
        raise CliError("--overwrite goes with --download DIR", EXIT_BAD_INPUT)


def cmd_cancel(args: argparse.Namespace, settings: Settings) -> int:
    """Cancels a study."""
    study = client_for(settings).cancel(args.study)
    return _show(args, study, f"study {study.id}: {study.status.value}")


def cmd_extend(args: argparse.Namespace, settings: Settings) -> int:
    """Adds trials to an active study's budget."""
    if args.add_trials < 1:
        raise CliError("--add-trials must be >= 1", EXIT_BAD_INPUT)
    study = client_for(settings).extend(args.study, args.add_trials)
    return _show(args, study, f"study {study.id}: {counted(study.n_trials, 'trial')}")


def cmd_resume(args: argparse.Namespace, settings: Settings) -> int:
    """Reopens a cancelled, failed or completed study."""
    if args.add_trials < 0:
        raise CliError("--add-trials must be >= 0", EXIT_BAD_INPUT)
    study = client_for(settings).resume(args.study, args.add_trials)
    return _show(args, study, _to_run(study))


def cmd_rerun_failed(args: argparse.Namespace, settings: Settings) -> int:
    """Queues a study's failed trials again."""
    study = client_for(settings).rerun_failed(args.study)
    return _show(args, study, _to_run(study))


def cmd_enqueue(args: argparse.Namespace, settings: Settings) -> int:
    """Queues configurations (JSON objects of param values) to try next."""
    configs = []
    for index, text in enumerate(args.configs):
        try:
            config = json.loads(text, object_pairs_hook=_unique_keys)
        except json.JSONDecodeError as exc:
            raise CliError(f"config {index + 1} is not JSON: {exc.msg}", EXIT_BAD_INPUT) from None
        except ValueError as exc:
            raise CliError(f"config {index + 1}: {exc}", EXIT_BAD_INPUT) from None
        if not isinstance(config, dict):
            raise CliError(f"config {index + 1} must be a JSON object", EXIT_BAD_INPUT)
        configs.append(config)
    study = client_for(settings).enqueue(args.study, configs)
    return _show(args, study, f"study {study.id}: {counted(len(configs), 'configuration')} queued")


def cmd_delete(args: argparse.Namespace, settings: Settings) -> int:
    """Deletes an ended study with its trials and artifacts."""
    client_for(settings).delete(args.study)
    if args.json:
        print(json.dumps({"study_id": args.study, "deleted": True}))
    else:
        print(f"study {args.study} deleted")
    return EXIT_OK


def _unique_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    """A JSON object, refusing a repeated key (as specs do) rather than keeping the last."""
    found = dict(pairs)
    if len(found) < len(pairs):
        seen: set[str] = set()
        repeated = next(key for key, _ in pairs if key in seen or seen.add(key))  # type: ignore[func-returns-value]
        raise ValueError(f"duplicate key {repeated!r}")
    return found


def cmd_trials(args: argparse.Namespace, settings: Settings) -> int:
    """Lists a study's trials in number order, or shows trial ``args.number`` in full: as
    text, or ``--json``."""
    _check_overwrite(args)
    if args.number is None and args.download:
        raise CliError("--download saves one trial's model: name its NUMBER", EXIT_BAD_INPUT)
    if args.number is not None:
        if args.state is not None or args.limit is not None:
            message = "--state and --limit list trials; a trial's NUMBER shows one"
            raise CliError(message, EXIT_BAD_INPUT)
        if args.download:
            return cmd_download_best(args, settings)
        client = client_for(settings)
        study = client.study(args.study)  # the names of its objectives, for the values
        trial = client.trial(args.study, args.number)
        if args.json:
            print_json(trial)
        else:
            print(trial_text(trial, study.id, study.metrics))
        return EXIT_OK
    page = client_for(settings).trials(
        args.study, state=args.state, limit=args.limit, intermediate_values=args.json
    )
    if args.json:
        print_json(page)
    else:
        print(trials_table(page))
    return EXIT_OK


def _show(args: argparse.Namespace, study: StudyDetail, line: str) -> int:
    """Prints a study as JSON with ``--json``, else ``line``."""
    if args.json:
        print_json(study)
    else:
        print(line)
    return EXIT_OK


def _to_run(study: StudyDetail) -> str:
    waiting = counted(study.counts.waiting, "trial")
    return f"study {study.id}: {study.status.value} ({waiting} to run)"
