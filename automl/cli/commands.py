"""The CLI commands that run the service locally (serve, worker, proxy, up, run, list).

Each takes parsed arguments and settings and returns an exit code. This module imports
torch and optuna; the commands that can talk to the API live in light modules
(``study_commands``, ``export_commands``...), and ``automl.cli.main.COMMANDS`` names them all.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path

from optuna.trial import FrozenTrial

from automl.cli.errors import (
    EXIT_BAD_INPUT,
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    CliError,
)
from automl.cli.local_store import open_store, store_errors_as_cli_errors
from automl.cli.output import (
    best_text,
    entries_text,
    registries_text,
    study_text,
)
from automl.cli.ports import require_free_port
from automl.cli.stops import StopSignals
from automl.cli.study_commands import print_json, read_spec_text, warn_unread
from automl.cli.wait_commands import outcome_problem
from automl.config import Settings, is_loopback, is_proxy_url
from automl.spec import spec_from_text
from automl.store import (
    Backoff,
    StorageError,
    StorageUnavailableError,
    Store,
    StudyStatus,
    attrs,
    best_trials,
    get_study,
    is_transient,
    submit_study,
)
from automl.store.storage import sqlite_file
from automl.train import resolve_device
from automl.train.accel import check_device_settings
from automl.url_secrets import without_password
from automl.wording import counted
from automl.worker import (
    Coordinator,
    DeviceFaultError,
    InvalidDeviceError,
    Worker,
    WorkerOptions,
)
from automl.worker.coordinator import CoordinatorTooOldError
from automl.worker.loop import UnusableFolderError, check_folders
from automl.worker.runner import ENDED_OUTSIDE

logger = logging.getLogger("automl.cli")


@contextmanager
def errors_as_cli_errors(spec_path: str | None, cut_off_hint: str = "") -> Iterator[None]:
    """``store_errors_as_cli_errors``, and a worker's device errors as ``CliError``s."""
    with store_errors_as_cli_errors(spec_path, cut_off_hint):
        try:
            yield
        except InvalidDeviceError as exc:
            raise CliError(str(exc), EXIT_BAD_INPUT) from None
        except DeviceFaultError as exc:
            raise CliError(str(exc), EXIT_FAILURE) from None


def _open_store_waiting(settings: Settings, logger_name: str = "automl.worker") -> Store:
    """Opens the store, waiting (with backoff, logged to ``logger_name``) while the
    database is unreachable; a refusal that waiting cannot fix (a database or role that is
    not there, a wrong password) raises at once."""
    backoff = Backoff(logging.getLogger(logger_name))
    while True:
        try:
            return open_store(settings, create=True)
        except StorageError as exc:
            if not exc.transient:
                raise
            time.sleep(backoff.failed(exc, "opening the store"))


def _connect_proxy_waiting(url: str) -> Coordinator:
    """Connects to ``automl proxy``, waiting (with backoff) until it answers.

    Raises:
        CliError: If the URL is invalid or the proxy is too old for this worker.
    """
    from automl.proxy import ProxyTooOldError, RemoteCoordinator

    try:
        coordinator = RemoteCoordinator.from_url(url)
    except ValueError as exc:
        raise CliError(str(exc), EXIT_BAD_INPUT) from None
    backoff = Backoff(logging.getLogger("automl.worker"))
    while True:
        try:
            coordinator.ping(timeout=10)
            return coordinator
        except StorageUnavailableError as exc:
            time.sleep(backoff.failed(exc, "connecting to the proxy"))
        except ProxyTooOldError as exc:  # "automl proxy at H:P is too old for this worker"
            coordinator.close()
            raise CliError(str(exc), EXIT_FAILURE) from None


def cmd_proxy(args: argparse.Namespace, settings: Settings) -> int:
    """Serves Optuna's gRPC storage proxy and automl's coordination for many workers, until
    SIGINT (exit 130) or SIGTERM (0)."""
    import threading

    from automl.proxy import ProxyError, ProxyServer

    store = _open_store_waiting(settings)
    server = ProxyServer(
        store,
        args.host or "127.0.0.1",
        args.port,
        threads=args.concurrency,
        cached_studies=args.cached_studies,
        grace=settings.grace_period,
        reap_interval=settings.reap_interval,
    )
    try:
        server.start()
    except ProxyError as exc:
        raise CliError(str(exc), EXIT_FAILURE) from None
    host = args.host or "127.0.0.1"
    if not is_loopback(host):
        logger.warning(
            "automl proxy on %s has no authentication: anyone who reaches ports %d and %d "
            "reads and changes every project's studies, weights and artifacts (firewall them "
            "to the worker network)",
            host,
            args.port,
            server.coordination_port,
        )
    stop = threading.Event()
    with StopSignals(lambda _: stop.set()) as stops:
        print(
            f"automl proxy: workers use AUTOML_STORAGE=grpc://{args.host or '127.0.0.1'}:"
            f"{args.port} (coordination on port {server.coordination_port})",
            file=sys.stderr,
        )
        stop.wait()
    server.stop()
    store.close()
    return stops.exit_code


def _worker_options(settings: Settings, **overrides: object) -> WorkerOptions:
    options: dict[str, object] = {
        "device": settings.device,
        "poll_interval": settings.poll_interval,
        "threads": settings.threads,
        "heartbeat_interval": settings.heartbeat_interval,
        "grace_period": settings.grace_period,
        "reap_interval": settings.reap_interval,
        "checkpoint_interval": settings.checkpoint_interval,
        "checkpoint_spacing": settings.checkpoint_spacing,
        "slot_group": settings.slot_group,
    }
    options.update(overrides)
    return WorkerOptions(**options)  # type: ignore[arg-type]


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    """Runs the REST API with uvicorn until SIGINT (exit 130) or SIGTERM (0).

    With ``--workers N`` (``AUTOML_API_WORKERS``), N processes serve the same port, each
    with its own app, store and reaper, built from these settings: one process runs
    Python on one core at a time, however many threads it has.
    """
    from automl.api import create_app
    from automl.cli.api_server import serve_app, serve_processes

    require_free_port(settings.host, settings.port)
    store = _store_checked_for_exposure(settings)
    log_level = args.log_level.lower()
    try:
        access_log = not args.no_access_log
        if settings.api_workers == 1:
            return serve_app(create_app(settings, store), settings, log_level, access_log)
        store.close()  # it checked the store and created the schema once, before the processes
        os.environ.update(settings_environment(settings))  # what each process's create_app reads
        return serve_processes(settings, log_level, access_log)
    except SystemExit as exc:  # uvicorn's own startup failure (3): the log above says why
        if exc.code in (None, 0):
            return EXIT_OK
        raise CliError("the API server failed to start (see the log above)") from None


def _store_checked_for_exposure(settings: Settings) -> Store:
    """The store, once ``check_exposure`` allowed serving on ``settings.host``; waits for
    a database that is unreachable at start (restarting, or the network not up yet), as
    workers do, rather than take ``automl up`` down with it."""
    from automl.cli.exposure import check_exposure

    store = _open_store_waiting(settings, "automl.api")
    try:
        check_exposure(settings, store)
    except CliError:
        store.close()
        raise
    return store


def settings_environment(settings: Settings) -> dict[str, str]:
    """``AUTOML_*`` variables that make ``Settings()`` in a child process equal ``settings``."""
    env = {}
    for name, value in settings.model_dump(exclude_none=True).items():
        env[f"AUTOML_{name.upper()}"] = str(value)
    return env


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    """Claims and trains trials until SIGINT/SIGTERM (or idle, with --exit-when-idle).

    With ``AUTOML_STORAGE=grpc://host:port`` the worker goes through ``automl proxy``
    and holds no database connection (the proxy runs the reaper).
    """
    if args.gpus is not None or args.slots != 1:
        return _run_worker_processes(args, settings)
    options = _worker_options(settings, study_id=args.study, exit_when_idle=args.exit_when_idle)
    log = logging.getLogger("automl.worker")
    if "data_root" in settings.model_fields_set and not settings.data_root.is_dir():
        log.warning(
            "the data root %s (AUTOML_DATA_ROOT) is not a folder here: trials of image "
            "folders and CSV files fail on this worker until it is",
            settings.data_root.resolve(),
        )
    store: Store | None = None
    if is_proxy_url(settings.storage):
        coordinator = _connect_proxy_waiting(settings.storage)
        options.reap_interval = None
        worker = Worker(None, options, coordinator=coordinator)
    else:
        store = _open_store_waiting(settings)
        if args.study is not None:
            study = get_study(store, args.study)  # an unknown study is an error (exit 2)
            if not study.status.is_active:
                log.info(
                    "study %s already ended (%s): nothing to train; its test evaluation or "
                    "refit runs here if one is due",
                    study.id,
                    study.status.value,
                )
        worker = Worker(store, options)
        # Which store: a worker started in another folder than the submit waits forever;
        # one with another artifact store than the API's keeps weights the API never finds.
        file = sqlite_file(settings.storage)
        shown = without_password(settings.storage) if file is None else str(file.resolve())
        log.info("worker store: %s; artifacts: %s", shown, artifacts_text(store.artifacts))
    worker.install_signal_handlers()
    try:
        worker.run()
    except CoordinatorTooOldError as exc:  # the proxy was replaced by an older one
        raise CliError(str(exc), EXIT_FAILURE) from None
    if args.study is not None and not args.supervised and not worker.stopping:
        _require_good_end(args, settings, store, worker.coordinator)
    # Ctrl-C is 130 as for every command; SIGTERM (docker stop, systemd) a clean stop.
    return EXIT_INTERRUPTED if worker.stopped_by == signal.SIGINT else EXIT_OK


def _require_good_end(
    args: argparse.Namespace,
    settings: Settings,
    store: Store | None,
    coordinator: Coordinator | None = None,
) -> None:
    """Exits as ``run`` does once ``worker --study`` saw its study end: a pipeline that
    runs it (``run`` names it to resume with) tells a cancelled or failed study from a
    completed one. Behind a proxy only the status is known.

    Raises:
        CliError: If the study did not complete with a completed trial (exit 1).
    """
    if store is not None:
        final = get_study(store, args.study)
        problem, active = outcome_problem(final), final.status.is_active
    else:
        if coordinator is None:
            coordinator = _connect_proxy_waiting(settings.storage)
        status = coordinator.status(args.study)
        active = status is not None and status.is_active
        problem = None
        if status != StudyStatus.COMPLETED:
            shown = "gone" if status is None else status.value
            problem = f"study {args.study} {shown}" + (": this worker left it" if active else "")
    # With --exit-when-idle it leaves what other workers still run to them.
    if problem is not None and not (args.exit_when_idle and active):
        raise CliError(problem, EXIT_FAILURE)


def artifacts_text(artifacts: object) -> str:
    """Where an artifact store keeps weights: a folder, the database, a bucket."""
    from automl.store import FolderArtifactStore, SqlArtifactStore

    if isinstance(artifacts, FolderArtifactStore):
        return f"folder {artifacts.directory.resolve()}"
    if isinstance(artifacts, SqlArtifactStore):
        return "the database (sql)"
    bucket = getattr(artifacts, "bucket", None)  # Optuna's Boto3ArtifactStore
    return f"s3 bucket {bucket}" if isinstance(bucket, str) else type(artifacts).__name__


def _run_worker_processes(args: argparse.Namespace, settings: Settings) -> int:
    """``automl worker --gpus/--slots``: one worker process per GPU and slot."""
    from automl.cli.supervisor import run_children, worker_children

    extra: list[str] = []
    if args.study is not None:
        extra += ["--study", str(args.study), "--supervised"]
    if args.exit_when_idle:
        extra.append("--exit-when-idle")
    if args.poll_interval is not None:
        extra += ["--poll-interval", str(args.poll_interval)]
    gpus = _gpus(args)
    _check_worker_device(settings.device if gpus is None else None)
    if not is_proxy_url(settings.storage):  # one refusal (exit 2), not one per process
        store = _open_store_waiting(settings)
        try:
            _check_worker_folders(settings, store)
        finally:
            store.close()
    with tempfile.TemporaryDirectory(prefix="automl-slots-") as slot_dir:
        children = worker_children(
            settings,
            args.log_level,
            gpus=gpus,
            slots=args.slots,
            extra=extra,
            slot_dir=Path(slot_dir),
        )
        logger.info("starting %d worker process(es)", len(children))
        code = run_children(children, stop_all_when_one_exits=False)
    if code == EXIT_OK and args.study is not None:
        store = None if is_proxy_url(settings.storage) else _open_store_waiting(settings)
        try:
            _require_good_end(args, settings, store)
        finally:
            if store is not None:
                store.close()
    return code


def _gpus(args: argparse.Namespace) -> list[str] | None:
    from automl.cli.supervisor import resolve_gpus

    if args.slots < 1:
        raise CliError("--slots must be >= 1", EXIT_BAD_INPUT)
    if args.gpus is None:
        return None
    try:
        return resolve_gpus(args.gpus)
    except ValueError as exc:
        raise CliError(str(exc), EXIT_BAD_INPUT) from None


def _check_worker_device(device: str | None) -> None:
    """Refuses, before any process starts, a device (or device setting) that every worker
    process would refuse at its start: one line, exit 2.

    Args:
        device: The workers' ``--device``; None where ``--gpus`` chose theirs (checked by
            ``resolve_gpus``), so that only the ``AUTOML_*`` device settings are read.

    Raises:
        CliError: Naming the device or the setting, and what is valid.
    """
    try:
        if device is not None:
            resolve_device(device)
        check_device_settings()
    except ValueError as exc:
        raise CliError(str(exc), EXIT_BAD_INPUT) from None


def cmd_up(args: argparse.Namespace, settings: Settings) -> int:
    """Runs the API and its worker processes; Ctrl-C stops them all.

    Workers: ``--workers`` on the CPU, or ``--slots`` per GPU with ``--gpus``.
    """
    from automl.cli.dashboard_commands import DEFAULT_PORT as DASHBOARD_PORT
    from automl.cli.supervisor import (
        DASHBOARD_HOST,
        dashboard_child,
        run_children,
        serve_child,
        worker_children,
    )

    if args.workers < 0:
        raise CliError("--workers must be >= 0", EXIT_BAD_INPUT)
    gpus = _gpus(args)
    if gpus is not None or args.workers > 0:  # no server starts for workers that would not
        _check_worker_device(settings.device if gpus is None else None)
    require_free_port(settings.host, settings.port)
    dashboard_port = None
    if args.dashboard or args.dashboard_port is not None:
        dashboard_port = args.dashboard_port or DASHBOARD_PORT
        if dashboard_port == settings.port:
            raise CliError(
                f"--dashboard-port {dashboard_port} is the API's port; choose another",
                EXIT_BAD_INPUT,
            )
        require_free_port(settings.host, dashboard_port, "--dashboard-port")
    # Create the schema once, before the children race to; refuse an exposed anonymous API.
    store = _store_checked_for_exposure(settings)
    try:
        if gpus is not None or args.workers > 0:
            _check_worker_folders(settings, store)  # once, not a refusal per child
    finally:
        store.close()
    with tempfile.TemporaryDirectory(prefix="automl-slots-") as slot_dir:
        workers = []
        if gpus is not None or args.workers > 0:
            slots = args.slots if gpus is not None else args.workers * args.slots
            workers = worker_children(
                settings, args.log_level, gpus=gpus, slots=slots, slot_dir=Path(slot_dir)
            )
        logger.info(
            # It answers once uvicorn logs "running on": seconds later (imports, a busy CPU).
            "starting the API on http://%s:%s and %d worker(s); Ctrl-C stops all",
            settings.host,
            settings.port,
            len(workers),
        )
        children = [serve_child(settings, args.log_level), *workers]
        if dashboard_port is not None:
            children.append(dashboard_child(settings, args.log_level, dashboard_port))
            logger.info("optuna-dashboard on http://%s:%s", DASHBOARD_HOST, dashboard_port)
        return run_children(children, stop_all_when_one_exits=True)


def _check_worker_folders(settings: Settings, store: Store) -> None:
    """Refuses a cache or artifact folder no worker could write in (exit 2).

    Raises:
        CliError: Naming the folder and its setting.
    """
    try:
        check_folders(settings.cache_dir, store.artifacts)
    except UnusableFolderError as exc:
        raise CliError(str(exc), EXIT_BAD_INPUT) from None


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    """Submits a spec to the local store and works it to completion in this process."""
    path = Path(args.spec)
    text = read_spec_text(path, settings.max_body_bytes)
    spec = spec_from_text(text, is_json=path.suffix == ".json")
    _check_worker_device(settings.device)  # before submitting: a bad device leaves no study
    store = open_store(settings, create=True)
    _check_worker_folders(settings, store)  # before submitting: leaves no study behind
    study = submit_study(store, spec)
    warn_unread(spec)
    worker = Worker(
        store,
        # Not exiting when idle: a trial another worker on this store took (``automl up``
        # in another terminal) is waited for, and run here if that worker dies.
        _worker_options(settings, study_id=study.id),
        on_trial_end=lambda *ended: progress.update(*ended),
        on_wait=lambda: progress.say(WAITING_FOR_OTHERS),
    )
    print(
        f"study {study.id} ({study.name}): {counted(study.n_trials, 'trial')} on {worker.device}, "
        f"storage {without_password(settings.storage)}",
        file=sys.stderr,
    )
    progress = _Progress(study.n_trials, study.name, study.metrics, study.directions)
    worker.install_signal_handlers()
    try:
        with _progress_logging(), progress.logs_above():
            worker.run()
    finally:
        progress.close()
    # Stopped after the last trial ended the study (and its test evaluation, refit): its
    # result follows, for there is nothing to resume.
    if worker.stopping and _left_work(store, study.id):
        print(f"interrupted: resume with `{_resume_command(args, study.id)}`", file=sys.stderr)
        return EXIT_INTERRUPTED
    final = get_study(store, study.id)
    problem = outcome_problem(final)
    if problem is not None:
        raise CliError(problem + ("" if final.status.is_active else progress.first_error_text()))
    best = best_trials(store, study.id)
    if args.json:
        print_json(best)
    else:
        print(study_text(final) + "\n\n" + best_text(best))
    return EXIT_OK


WAITING_FOR_OTHERS = (
    "nothing left to claim here: waiting for the trials other workers run "
    "(Ctrl-C stops waiting; they go on)"
)


def _left_work(store: Store, study_id: int) -> bool:
    """Whether an interrupted ``run`` left its study work that a worker resumes: trials,
    or (the study completed) its test evaluation or refit; also when the store cannot be
    read to tell."""
    try:
        study = get_study(store, study_id)
        if study.status.is_active:
            return True
        if study.counts.complete == 0:
            return False
        best = best_trials(store, study_id)
    except Exception as exc:
        if is_transient(exc):
            return True
        raise
    evaluation, refit = best.test_evaluation, best.refit
    return (evaluation is not None and evaluation.state in UNFINISHED_EVALUATION) or (
        refit is not None and refit.state in UNFINISHED_REFIT
    )


UNFINISHED_EVALUATION = frozenset({attrs.EvaluationState.PENDING, attrs.EvaluationState.RUNNING})
UNFINISHED_REFIT = frozenset({attrs.RefitState.QUEUED, attrs.RefitState.RUNNING})


def _resume_command(args: argparse.Namespace, study_id: int) -> str:
    """The worker command that resumes ``run``'s study: with the store and artifacts
    folder ``run`` was given (without them, it would open another store)."""
    words = ["automl", "worker", "--study", str(study_id)]
    for flag, value in (("--storage", args.storage), ("--artifacts-dir", args.artifacts_dir)):
        if value is not None:
            words += [flag, value]
    return shlex.join(words)


@contextmanager
def _progress_logging() -> Iterator[None]:
    """While ``run`` shows its own progress: the worker's and the store's INFO lines hidden,
    and the worker's line per trial too (the progress says how each trial ended, failures
    with their reason)."""
    level = logging.getLogger().getEffectiveLevel()
    loggers = {
        logging.getLogger("automl.worker"): max(level, logging.WARNING),
        logging.getLogger("automl.store"): max(level, logging.WARNING),  # weights retention
        logging.getLogger("automl.worker.trials"): max(level, logging.ERROR),
    }
    before = {logger: logger.level for logger in loggers}
    for logger, quiet in loggers.items():
        logger.setLevel(quiet)
    try:
        yield
    finally:
        for logger, old in before.items():
            logger.setLevel(old)


FINISHED = ("complete", "pruned", "fail")
"""How an attempt ends its ticket (a trial of the budget finished)."""
RESUMED = {
    "released": "stopped before its end",
    "lost": "was taken back by the reaper",
    "rejected": "ended after its ticket had",
}


class _Progress:
    """A progress bar on a terminal; one line per trial otherwise (logs, CI)."""

    def __init__(self, total: int, name: str, metrics: list[str], directions: list[str]) -> None:
        self.total, self.metric, self.done = total, metrics[0], 0
        self.minimize = directions[0] == "minimize"
        # With several objectives no one value is best: each trial's values are shown.
        self.several = metrics if len(metrics) > 1 else None
        self.best: float | None = None
        self.first_error: tuple[int, str] | None = None
        self.bar = None
        if sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=name, unit="trial", file=sys.stderr)

    def logs_above(self) -> AbstractContextManager[object]:
        """While the bar shows: log lines written above it, not over it."""
        if self.bar is None:
            return nullcontext()
        from tqdm.contrib.logging import logging_redirect_tqdm

        return logging_redirect_tqdm()

    def update(self, study_id: int, trial: FrozenTrial, result: str) -> None:
        if result == ENDED_OUTSIDE:
            self.done += 1
            if self.bar is not None:
                self.bar.update(1)
            state = trial.state.name.lower()
            self.say(
                f"trial {trial.number} was ended {state} by another tool while it trained "
                f"(never ranked) [{self.done}/{self.total}]"
            )
            return
        if result not in FINISHED:  # the ticket is the queue's or the reaper's to end
            why = trial.user_attrs.get(attrs.ERROR) or result
            self.say(f"trial {trial.number} {RESUMED.get(result, result)}: {why}")
            return
        self.done += 1
        value = trial.values[0] if trial.values else None
        if value is not None and trial.state.name == "COMPLETE":
            self.best = value if self.best is None else self._better(value, self.best)
        state = trial.state.name.lower()
        shown = f"{value:.4f}" if value is not None else "-"
        best = f"{self.best:.4f}" if self.best is not None else "-"
        if self.several is not None:  # "best" of the first objective alone misled
            values = trial.values or [None] * len(self.several)
            shown = ", ".join(
                f"{metric} {'-' if v is None else f'{v:.4f}'}"
                for metric, v in zip(self.several, values, strict=False)
            )
        error = trial.user_attrs.get(attrs.ERROR) if trial.state.name == "FAIL" else None
        if error and self.first_error is None:
            self.first_error = (trial.number, str(error))
        if self.bar is not None:
            if self.several is not None:
                self.bar.set_postfix_str(f"last {state}: {shown}")
            else:
                self.bar.set_postfix_str(f"last {state} {shown}, best {self.metric} {best}")
            self.bar.update(1)
            if error:
                self.bar.write(f"trial {trial.number} failed: {error}", file=sys.stderr)
        else:
            why = f" ({error})" if error else ""
            line = (
                f"trial {trial.number} {state}: {shown} [{self.done}/{self.total}]{why}"
                if self.several is not None
                else f"trial {trial.number} {state}: {self.metric} {shown} "
                f"[{self.done}/{self.total}, best {best}]{why}"
            )
            print(line, file=sys.stderr, flush=True)

    def say(self, line: str) -> None:
        """Writes a line above the bar (or as a line without one)."""
        if self.bar is not None:
            self.bar.write(line, file=sys.stderr)
        else:
            print(line, file=sys.stderr, flush=True)

    def first_error_text(self) -> str:
        """``; trial N failed: ERROR`` for the first failure seen, else nothing."""
        if self.first_error is None:
            return ""
        number, error = self.first_error
        return f"; trial {number} failed: {error}"

    def _better(self, a: float, b: float) -> float:
        return min(a, b) if self.minimize else max(a, b)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


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
