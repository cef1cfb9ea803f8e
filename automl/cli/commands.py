"""The CLI commands. Each takes parsed arguments and settings and returns an exit code."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from optuna.trial import FrozenTrial
from pydantic import BaseModel

from automl.cli.client import Client, ClientError, HttpClient, LocalClient
from automl.cli.errors import EXIT_BAD_INPUT, EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK, CliError
from automl.cli.output import (
    best_text,
    entries_text,
    registries_text,
    studies_table,
    study_text,
)
from automl.config import Settings
from automl.spec import SpecError, load_spec
from automl.store import (
    NoBestTrialError,
    QueuedTrialStorage,
    StorageError,
    StudyNotFoundError,
    StudyStateError,
    StudyStatus,
    TrialNotFoundError,
    best_trials,
    create_storage,
    get_study,
    submit_study,
)
from automl.train import resolve_device
from automl.worker import InvalidDeviceError, Worker, WorkerOptions


def dispatch(args: argparse.Namespace, settings: Settings) -> int:
    """Runs the command named by ``args.command``, turning known errors into ``CliError``."""
    command: Callable[[argparse.Namespace, Settings], int] = COMMANDS[args.command]
    with _errors_as_cli_errors(getattr(args, "spec", None)):
        return command(args, settings)


@contextmanager
def _errors_as_cli_errors(spec_path: str | None) -> Iterator[None]:
    try:
        yield
    except SpecError as exc:
        where = f"{spec_path}: " if spec_path else ""
        raise CliError(f"invalid spec {where}{exc}", EXIT_BAD_INPUT) from None
    except (StudyNotFoundError, TrialNotFoundError, NoBestTrialError, StudyStateError) as exc:
        raise CliError(str(exc), EXIT_BAD_INPUT) from None
    except ClientError as exc:
        raise CliError(str(exc), EXIT_BAD_INPUT if exc.bad_input else EXIT_FAILURE) from None
    except StorageError as exc:
        raise CliError(str(exc), EXIT_FAILURE) from None
    except InvalidDeviceError as exc:
        raise CliError(str(exc), EXIT_BAD_INPUT) from None


def open_storage(settings: Settings) -> QueuedTrialStorage:
    """Opens the configured storage."""
    return create_storage(settings.storage)


def _client(settings: Settings) -> Client:
    if settings.url:
        return HttpClient(settings.url)
    return LocalClient(open_storage(settings))


def _print_json(model: BaseModel) -> None:
    print(model.model_dump_json(indent=2))


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    """Runs the REST API with uvicorn until interrupted."""
    import uvicorn

    from automl.api import create_app

    app = create_app(settings, open_storage(settings))
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=args.log_level.lower())
    return EXIT_OK


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    """Claims and trains trials until SIGINT/SIGTERM (or idle, with --exit-when-idle)."""
    worker = Worker(
        open_storage(settings),
        WorkerOptions(
            device=settings.device,
            study_id=args.study,
            poll_interval=settings.poll_interval,
            exit_when_idle=args.exit_when_idle,
            artifacts_dir=settings.artifacts_dir,
            seed_offset=args.seed_offset,
            threads=settings.threads,
        ),
    )
    worker.install_signal_handlers()
    worker.run()
    return EXIT_OK


def cmd_up(args: argparse.Namespace, settings: Settings) -> int:
    """Runs the API and ``--workers`` worker processes; Ctrl-C stops them all."""
    from automl.cli.supervisor import run_services

    if args.workers < 0:
        raise CliError("--workers must be >= 0", EXIT_BAD_INPUT)
    open_storage(settings)  # create the schema once, before the children race to
    return run_services(settings, args.workers, args.log_level)


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    """Submits a spec to the local store and works it to completion in this process."""
    spec = load_spec(Path(args.spec))
    try:
        resolve_device(settings.device)  # before submitting: a bad device leaves no study
    except ValueError as exc:
        raise CliError(str(exc), EXIT_BAD_INPUT) from None
    storage = open_storage(settings)
    study = submit_study(storage, spec)
    level = logging.getLogger().getEffectiveLevel()
    logging.getLogger("automl.worker").setLevel(max(level, logging.WARNING))
    progress = _Progress(study.n_trials, study.name, study.metrics[0])
    worker = Worker(
        storage,
        WorkerOptions(
            device=settings.device,
            study_id=study.id,
            exit_when_idle=True,
            artifacts_dir=settings.artifacts_dir,
            seed_offset=0,
            threads=settings.threads,
        ),
        on_trial_end=progress.update,
    )
    print(
        f"study {study.id} ({study.name}): {study.n_trials} trials on {worker.device}, "
        f"storage {settings.storage}",
        file=sys.stderr,
    )
    worker.install_signal_handlers()
    try:
        worker.run()
    finally:
        progress.close()
    if worker.stopping:
        print(f"interrupted: resume with `automl worker --study {study.id}`", file=sys.stderr)
        return EXIT_INTERRUPTED
    final = get_study(storage, study.id)
    if final.status != StudyStatus.COMPLETED:
        raise CliError(f"study {study.id} {final.status.value}: {final.status_reason}")
    best = best_trials(storage, study.id)
    if args.json:
        _print_json(best)
    else:
        print(study_text(final) + "\n\n" + best_text(best))
    return EXIT_OK


class _Progress:
    """A progress bar on a terminal; one line per trial otherwise (logs, CI)."""

    def __init__(self, total: int, name: str, metric: str) -> None:
        self.total, self.metric, self.done = total, metric, 0
        self.best: float | None = None
        self.bar = None
        if sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=name, unit="trial", file=sys.stderr)

    def update(self, study_id: int, trial: FrozenTrial) -> None:
        self.done += 1
        value = trial.values[0] if trial.values else None
        if value is not None and trial.state.name == "COMPLETE":
            self.best = value if self.best is None else self._better(value, self.best)
        state = trial.state.name.lower()
        shown = f"{value:.4f}" if value is not None else "-"
        best = f"{self.best:.4f}" if self.best is not None else "-"
        if self.bar is not None:
            self.bar.set_postfix_str(f"last {state} {shown}, best {self.metric} {best}")
            self.bar.update(1)
        else:
            print(
                f"trial {trial.number} {state}: {self.metric} {shown} "
                f"[{self.done}/{self.total}, best {best}]",
                file=sys.stderr,
                flush=True,
            )

    def _better(self, a: float, b: float) -> float:
        return min(a, b) if self.metric == "loss" else max(a, b)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def cmd_submit(args: argparse.Namespace, settings: Settings) -> int:
    """Submits a spec to the API (--url) or the local store."""
    path = Path(args.spec)
    client = _client(settings)
    if isinstance(client, LocalClient) and not path.is_file():
        raise CliError(f"spec file not found: {path}", EXIT_BAD_INPUT)
    study = client.submit(path)
    if args.json:
        _print_json(study)
    else:
        print(f"submitted study {study.id} ({study.name}): {study.status.value}")
    return EXIT_OK


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    """Lists studies, or shows one."""
    client = _client(settings)
    if args.study is None:
        if args.limit < 1:
            raise CliError("--limit must be >= 1", EXIT_BAD_INPUT)
        page = client.studies(args.limit)
        _print_json(page) if args.json else print(studies_table(page))
    else:
        study = client.study(args.study)
        _print_json(study) if args.json else print(study_text(study))
    return EXIT_OK


def cmd_best(args: argparse.Namespace, settings: Settings) -> int:
    """Shows the best trial of a study."""
    best = _client(settings).best(args.study)
    _print_json(best) if args.json else print(best_text(best))
    return EXIT_OK


def cmd_cancel(args: argparse.Namespace, settings: Settings) -> int:
    """Cancels a study."""
    study = _client(settings).cancel(args.study)
    _print_json(study) if args.json else print(f"study {study.id}: {study.status.value}")
    return EXIT_OK


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    """Lists registries, or one registry's entries with their options."""
    from automl.catalog import REGISTRIES, catalog, describe_registry, markdown_reference

    if args.markdown:
        print(markdown_reference(), end="")
        return EXIT_OK
    if args.kind is not None and args.kind not in REGISTRIES:
        raise CliError(
            f"unknown registry {args.kind!r}; valid choices: {', '.join(REGISTRIES)}",
            EXIT_BAD_INPUT,
        )
    if args.json:
        data = catalog() if args.kind is None else describe_registry(args.kind)
        print(json.dumps(data, indent=2, default=str))
    elif args.kind is None:
        print(registries_text(catalog()))
    else:
        print(entries_text(args.kind, describe_registry(args.kind)))
    return EXIT_OK


COMMANDS: dict[str, Callable[[argparse.Namespace, Settings], int]] = {
    "serve": cmd_serve,
    "worker": cmd_worker,
    "up": cmd_up,
    "run": cmd_run,
    "submit": cmd_submit,
    "status": cmd_status,
    "best": cmd_best,
    "cancel": cmd_cancel,
    "list": cmd_list,
}
