"""``automl`` command line: argument parsing, dispatch and error reporting."""

from __future__ import annotations

import argparse
import difflib
import importlib
import logging
import os
import secrets
import sys
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import ValidationError

from automl import __version__
from automl.cli.arguments import (
    concurrency,
    count,
    idempotency_key,
    non_negative,
    poll_seconds,
    port_number,
    proxy_port,
    study_id,
    top_count,
    trial_number,
)
from automl.cli.dashboard_commands import DEFAULT_PORT
from automl.cli.errors import (
    EXIT_BAD_INPUT,
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    MAY_HAVE_CHANGED,
    CliError,
    may_have_submitted,
)
from automl.config import Limits, Settings, settings_error
from automl.delivery.schemas import MAX_TOP


class Parser(argparse.ArgumentParser):
    """argparse's parser, whose refusal of an unknown choice (a subcommand, a log level)
    suggests the closest one, as spec errors do."""

    def _check_value(self, action: argparse.Action, value: Any) -> None:
        choices = action.choices
        if choices is None or value in choices or not isinstance(value, str):
            super()._check_value(action, value)
            return
        names = [str(choice) for choice in choices]
        close = difflib.get_close_matches(value, names, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        message = f"invalid choice: {value!r}{hint}; valid choices: {', '.join(names)}"
        raise argparse.ArgumentError(action, message)


LOG_LEVELS = ["DEBUG", "INFO", "WARNING", "ERROR"]


HOST_HELP = (
    "interface to listen on (default: $AUTOML_HOST or 127.0.0.1; another needs an API key, "
    "see README)"
)
PORT_HELP = "port to listen on (default: $AUTOML_PORT or 8000)"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = Parser(prog="automl", description="Hyperparameter search for image recognition.")
    parser.add_argument("--version", action="version", version=f"automl {__version__}")
    log_level = {"choices": LOG_LEVELS, "help": "what to log (default INFO)"}
    parser.add_argument("--log-level", default="INFO", **log_level)  # type: ignore[arg-type]
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def storage_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument("--storage", help="SQLAlchemy URL (default: $AUTOML_STORAGE or SQLite)")

    def artifacts_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument("--artifacts-dir", help="weights folder (default: $AUTOML_ARTIFACTS_DIR)")

    def wait_args(p: argparse.ArgumentParser, what: str) -> None:
        if what:
            p.add_argument(
                "--wait",
                action="store_true",
                help=what + "0 once it completed, 1 if it failed, was cancelled or has no "
                "completed trial",
            )
        p.add_argument(
            "--timeout",
            type=float,
            metavar="S",
            help="stop waiting after S seconds (exit 1; the study goes on)",
        )

    def target_args(p: argparse.ArgumentParser) -> None:
        storage_arg(p)
        p.add_argument("--url", help="API base URL (default: $AUTOML_URL; else the local store)")
        p.add_argument("--json", action="store_true", help="print JSON")

    def worker_args(p: argparse.ArgumentParser, threads_default: str) -> None:
        p.add_argument("--device", help="auto, cpu, cuda or cuda:N (default: auto)")
        p.add_argument(
            "--threads",
            type=int,
            help="CPU threads per worker process (default: $AUTOML_THREADS, else "
            f"{threads_default})",
        )
        storage_arg(p)
        artifacts_arg(p)

    def device_layout_args(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--gpus", help="'all' or ids like 0,1: one worker process per GPU (and slot)"
        )
        p.add_argument(
            "--slots",
            type=int,
            default=1,
            help="trial processes per GPU, or sharing the CPU cores (default 1)",
        )

    serve = commands.add_parser("serve", help="run the REST API")
    serve.add_argument(
        "--host",
        help=HOST_HELP,
    )
    serve.add_argument("--port", type=port_number, help=PORT_HELP)
    serve.add_argument(
        "--workers",
        dest="api_workers",
        type=int,
        help="API processes sharing the port (default: $AUTOML_API_WORKERS or 1)",
    )
    serve.add_argument(
        "--no-access-log",
        action="store_true",
        help="log no line per request (automl's own lines stay)",
    )
    storage_arg(serve)
    artifacts_arg(serve)

    worker = commands.add_parser("worker", help="claim and train trials until stopped")
    worker_args(
        worker,
        "PyTorch's default, about one per core; with --slots or --gpus, the cores divided "
        "among the processes",
    )
    worker.add_argument("--study", type=study_id, help="only this study; exit once it ends")
    worker.add_argument(
        "--poll-interval",
        type=poll_seconds,
        help="seconds between looks for trials when idle (default: $AUTOML_POLL_INTERVAL or 2)",
    )
    worker.add_argument("--exit-when-idle", action="store_true", help="exit when nothing is queued")
    # A process of `worker --slots/--gpus`: its parent judges how the study ended, once.
    worker.add_argument("--supervised", action="store_true", help=argparse.SUPPRESS)
    device_layout_args(worker)

    proxy = commands.add_parser(
        "proxy", help="hold the database connections for many workers (gRPC)"
    )
    proxy.add_argument("--host", help="interface to listen on (default 127.0.0.1)")
    proxy.add_argument(
        "--port",
        type=proxy_port,
        default=13000,
        help="Optuna storage proxy port; coordination uses port + 1 (default 13000)",
    )
    proxy.add_argument(
        "--concurrency",
        type=concurrency,
        default=32,
        help="calls served at once per endpoint (default 32)",
    )
    proxy.add_argument(
        "--cached-studies",
        type=count,
        default=64,
        help="studies whose finished trials it keeps in memory (default 64; past them, a "
        "study is read again when a worker next reads it)",
    )
    storage_arg(proxy)
    artifacts_arg(proxy)

    up = commands.add_parser("up", help="run the API and N local workers; Ctrl-C stops all")
    worker_args(up, "the cores divided among the worker processes")
    up.add_argument("--workers", type=int, default=1, help="CPU worker processes (default 1)")
    device_layout_args(up)
    up.add_argument(
        "--host",
        help=HOST_HELP,
    )
    up.add_argument("--port", type=port_number, help=PORT_HELP)
    up.add_argument(
        "--dashboard", action="store_true", help="also run optuna-dashboard (automl dashboard)"
    )
    up.add_argument(
        "--dashboard-port",
        type=port_number,
        help=f"optuna-dashboard's port (default {DEFAULT_PORT}); implies --dashboard",
    )

    dashboard = commands.add_parser(
        "dashboard", help="run optuna-dashboard on automl's storage and artifact store"
    )
    dashboard.add_argument(
        "--host",
        dest="dashboard_host",
        metavar="HOST",
        help="interface to listen on (default 127.0.0.1)",
    )
    dashboard.add_argument(
        "--port",
        dest="dashboard_port",
        metavar="PORT",
        type=port_number,
        help=f"port to listen on (default {DEFAULT_PORT})",
    )
    dashboard.add_argument(
        "--allowed-hosts",
        metavar="NAMES",
        help="host names it answers under besides localhost, 127.0.0.1 and [::1], comma-"
        "separated, '*' for any (default: loopback names only when HOST is loopback, any "
        "name otherwise); others are refused, as DNS rebinding would send them",
    )
    storage_arg(dashboard)
    artifacts_arg(dashboard)

    run = commands.add_parser("run", help="submit SPEC locally and work it to completion")
    run.add_argument("spec", help="study spec (YAML or JSON)")
    worker_args(run, "PyTorch's default, about one per core")
    run.add_argument("--json", action="store_true", help="print the best trial as JSON")

    submit = commands.add_parser("submit", help="submit a study spec")
    submit.add_argument("spec", help="study spec (YAML or JSON)")
    submit.add_argument(
        "--idempotency-key",
        type=idempotency_key,
        # A new key each run: a submit cut off by a failing connection names it, so that
        # running it again with the key cannot submit twice.
        default=f"submit-{secrets.token_urlsafe(12)}",
        metavar="KEY",
        help="submit at most once: another submit with KEY (and the same spec) answers "
        "with the study the first one made (default: a new key each run)",
    )
    wait_args(submit, "then wait until the study (and its test evaluation, refit) ends; exit ")
    target_args(submit)

    wait = commands.add_parser(
        "wait",
        help="wait until a study (and its test evaluation, refit) ends; exit as run does",
    )
    wait.add_argument("study", type=study_id, help="study id")
    wait_args(wait, "")
    target_args(wait)

    validate = commands.add_parser(
        "validate",
        help="check a study spec as submit would (data under this machine's data root), "
        "submitting nothing",
    )
    validate.add_argument("spec", help="study spec (YAML or JSON; - reads standard input)")
    validate.add_argument("--json", action="store_true", help="print the spec as it would run")
    validate.add_argument(
        "--data",
        action="store_true",
        help="also decode every image as the first trial would (into the decode cache the "
        "trials read) and say what the dataset holds",
    )

    status = commands.add_parser("status", help="list studies, or show one")
    status.add_argument("study", nargs="?", type=study_id, help="study id")
    status.add_argument("--limit", type=int, default=20, help="studies to list (default 20)")
    target_args(status)

    best = commands.add_parser("best", help="show the best trial of a study")
    best.add_argument("study", type=study_id, help="study id")
    best.add_argument(
        "--download",
        metavar="DIR",
        help="save the best model's bundle in DIR: weights, model card, ONNX, TorchScript, "
        "predict.py",
    )
    best.add_argument(
        "--overwrite",
        action="store_true",
        help="with --download: write into a folder that is not empty",
    )
    target_args(best)
    artifacts_arg(best)

    trials = commands.add_parser(
        "trials", help="list a study's trials in number order, or show one in full"
    )
    trials.add_argument("study", type=study_id, help="study id")
    trials.add_argument(
        "number",
        nargs="?",
        type=trial_number,
        help="show this trial in full: params, metrics, per-class report, notes",
    )
    trials.add_argument(
        "--download",
        metavar="DIR",
        help="with NUMBER: save that trial's model bundle in DIR (as best --download does)",
    )
    trials.add_argument(
        "--overwrite",
        action="store_true",
        help="with --download: write into a folder that is not empty",
    )
    trials.add_argument(
        "--state", choices=["running", "complete", "pruned", "fail"], help="only this state"
    )
    trials.add_argument("--limit", type=count, help="trials to list (default: all)")
    target_args(trials)
    artifacts_arg(trials)

    export = commands.add_parser(
        "export",
        help="write a study to DIR: study.json, trials.csv, trials.json and the best "
        "model's bundle",
    )
    export.add_argument("study", type=study_id, help="study id")
    export.add_argument("directory", metavar="DIR", help="folder to write (new or empty)")
    export.add_argument(
        "--overwrite",
        action="store_true",
        help="write into a folder that is not empty (its model/ is replaced)",
    )
    target_args(export)
    artifacts_arg(export)

    report = commands.add_parser(
        "report",
        help="write a study's report, an HTML page of plots (history, importances, the "
        "best model's curves, confusion matrix, embeddings)",
    )
    report.add_argument("study", type=study_id, help="study id")
    report.add_argument(
        "--output",
        "-o",
        metavar="FILE",
        help="file to write (default study-ID-report.html; - for standard output)",
    )
    report.add_argument(
        "--overwrite", action="store_true", help="replace FILE even if it is not an automl report"
    )
    report.add_argument("--open", action="store_true", help="open it in a web browser")
    target_args(report)
    artifacts_arg(report)

    cancel = commands.add_parser("cancel", help="cancel a queued or running study")
    cancel.add_argument("study", type=study_id, help="study id")
    target_args(cancel)

    extend = commands.add_parser("extend", help="add trials to a queued or running study")
    extend.add_argument("study", type=study_id, help="study id")
    extend.add_argument("--add-trials", type=count, required=True, help="trials to add")
    target_args(extend)

    resume = commands.add_parser("resume", help="reopen a cancelled, failed or completed study")
    resume.add_argument("study", type=study_id, help="study id")
    resume.add_argument(
        "--add-trials", type=non_negative, default=0, help="trials to add (default 0)"
    )
    target_args(resume)

    rerun = commands.add_parser(
        "rerun-failed",
        help="queue a study's failed trials again (or its failed test evaluation)",
    )
    rerun.add_argument("study", type=study_id, help="study id")
    target_args(rerun)

    enqueue = commands.add_parser("enqueue", help="queue configurations to try next")
    enqueue.add_argument("study", type=study_id, help="study id")
    enqueue.add_argument(
        "configs", nargs="+", metavar="CONFIG", help="JSON object of param values: '{\"lr\": 0.01}'"
    )
    target_args(enqueue)

    refit = commands.add_parser(
        "refit",
        help="retrain an ended study's best configuration on train + validation (a worker "
        "runs it) and score it on the test split; the bundle and predict then serve it",
    )
    refit.add_argument("study", type=study_id, help="study id")
    target_args(refit)

    delete = commands.add_parser("delete", help="delete an ended study with its artifacts")
    delete.add_argument("study", type=study_id, help="study id")
    target_args(delete)

    predict = commands.add_parser("predict", help="classify image files with a study's best model")
    predict.add_argument("study", type=study_id, help="study id")
    predict.add_argument(
        "images",
        nargs="+",
        metavar="IMAGE",
        help="png, jpeg, webp or bmp files, or folders (their images)",
    )
    predict.add_argument(
        "--top", type=top_count, default=3, help=f"classes per image (default 3, at most {MAX_TOP})"
    )
    target_args(predict)
    artifacts_arg(predict)

    annotate = commands.add_parser(
        "annotate", help="suggest labels for a folder of images, least confident first"
    )
    annotate.add_argument("study", type=study_id, help="study id")
    annotate.add_argument("folder", help="folder of images, relative to the data root")
    annotate.add_argument(
        "--csv", help="write path,label,confidence rows for image_csv (under the data root)"
    )
    annotate.add_argument("--overwrite", action="store_true", help="replace an existing --csv")
    annotate.add_argument(
        "--top", type=top_count, default=3, help=f"classes per image (default 3, at most {MAX_TOP})"
    )
    target_args(annotate)
    artifacts_arg(annotate)

    listing = commands.add_parser(
        "list", help="what studies can name: registries, entries and their options"
    )
    listing.add_argument(
        "kind", nargs="?", help="one registry (models, optimizers...); default: all"
    )
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.add_argument(
        "--markdown", action="store_true", help="print the README's reference tables"
    )

    keys = commands.add_parser(
        "keys", help="API keys on the local store: create (the secret is shown once), list, revoke"
    )
    key_commands = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    key_create = key_commands.add_parser("create", help="create a key and print it, once")
    key_create.add_argument("--project", required=True, help="the project its studies belong to")
    key_create.add_argument(
        "--admin", action="store_true", help="sees and acts on every project's studies"
    )
    key_create.add_argument("--label", help="a note to tell keys apart (who, where)")
    storage_arg(key_create)
    key_list = key_commands.add_parser("list", help="list keys (never their secrets)")
    key_list.add_argument("--json", action="store_true", help="print JSON")
    storage_arg(key_list)
    key_revoke = key_commands.add_parser("revoke", help="revoke a key for good")
    key_revoke.add_argument("key_id", metavar="KEY_ID", help="the key's id (from `keys list`)")
    storage_arg(key_revoke)
    # Accepted after the command too (automl status 3 --log-level DEBUG); given there, it wins.
    for command in [*commands.choices.values(), *key_commands.choices.values()]:
        command.add_argument("--log-level", default=argparse.SUPPRESS, **log_level)  # type: ignore[arg-type]
    return parser


def settings_from(args: argparse.Namespace) -> Settings:
    """Environment settings overridden by the command's flags.

    Raises:
        CliError: If a setting is invalid (exit 2); the message names the variable or
            flag that set it, the value given and what is valid.
    """
    overrides = {
        key: value
        for key in (
            "storage",
            "artifacts_dir",
            "host",
            "port",
            "url",
            "device",
            "poll_interval",
            "threads",
            "api_workers",
        )
        if (value := getattr(args, key, None)) is not None
    }
    try:
        settings = Settings(**overrides)
        Limits()  # read by requests later: a bad AUTOML_LIMIT_* is refused at the start
    except ValidationError as exc:
        flags = {  # a value that a flag set is named by that flag
            key: "--workers" if key == "api_workers" else f"--{key.replace('_', '-')}"
            for key in overrides
        }
        raise CliError(f"invalid setting {settings_error(exc, flags)}", EXIT_BAD_INPUT) from None
    return settings


COMMANDS: dict[str, str] = {
    "serve": "automl.cli.commands:cmd_serve",
    "worker": "automl.cli.commands:cmd_worker",
    "proxy": "automl.cli.commands:cmd_proxy",
    "up": "automl.cli.commands:cmd_up",
    "run": "automl.cli.commands:cmd_run",
    "list": "automl.cli.commands:cmd_list",
    "dashboard": "automl.cli.dashboard_commands:cmd_dashboard",
    "submit": "automl.cli.study_commands:cmd_submit",
    "validate": "automl.cli.study_commands:cmd_validate",
    "status": "automl.cli.study_commands:cmd_status",
    "wait": "automl.cli.wait_commands:cmd_wait",
    "best": "automl.cli.study_commands:cmd_best",
    "trials": "automl.cli.study_commands:cmd_trials",
    "cancel": "automl.cli.study_commands:cmd_cancel",
    "extend": "automl.cli.study_commands:cmd_extend",
    "resume": "automl.cli.study_commands:cmd_resume",
    "rerun-failed": "automl.cli.study_commands:cmd_rerun_failed",
    "enqueue": "automl.cli.study_commands:cmd_enqueue",
    "delete": "automl.cli.study_commands:cmd_delete",
    "export": "automl.cli.export_commands:cmd_export",
    "report": "automl.cli.report_commands:cmd_report",
    "predict": "automl.cli.predict_commands:cmd_predict",
    "annotate": "automl.cli.predict_commands:cmd_annotate",
    "refit": "automl.cli.refit_commands:cmd_refit",
    "keys": "automl.cli.keys_commands:cmd_keys",
}
"""Each subcommand's function, ``module:function``, imported only when it runs.

A command run with ``--url`` (or ``AUTOML_URL``) talks to the API: its module must import
nothing heavy at the top (torch, optuna, the store), only inside its local branch.
"""


CHANGING_COMMANDS = frozenset(
    {
        "submit",
        "run",
        "cancel",
        "extend",
        "resume",
        "rerun-failed",
        "enqueue",
        "delete",
        "refit",
        "keys",
    }
)
"""Commands that change the store in one request: a database that fails under one may
have taken the change (its error says so)."""


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the CLI; returns the process exit code."""
    args = build_parser().parse_args(argv)
    _configure_logging(args.log_level)
    try:
        settings = settings_from(args)
        command = _load(COMMANDS[args.command])
        if settings.url and hasattr(args, "url"):
            return _run_against_api(command, args, settings)
        return _run_locally(command, args, settings)
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        # A submit interrupted after it was sent may have made its study: name its key.
        hint = may_have_submitted(args.idempotency_key) if args.command == "submit" else ""
        print(f"interrupted{hint}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader of stdout went away (``automl trials --json | head``): stop quietly,
        # and keep the interpreter's final flush from failing on the same pipe. (Network
        # clients raise their own errors, which never reach here as BrokenPipeError.)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILURE


Command = Callable[[argparse.Namespace, Settings], int]


def _load(target: str) -> Command:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)  # type: ignore[no-any-return]


def _run_against_api(command: Command, args: argparse.Namespace, settings: Settings) -> int:
    """A thin client: no plugins, no optuna, no store; only the API's errors to report."""
    from automl.cli.http_client import ClientError

    try:
        return command(args, settings)
    except ClientError as exc:
        hint = change_hint(args) if exc.may_have_arrived else ""
        raise CliError(f"{exc}{hint}", EXIT_BAD_INPUT if exc.bad_input else EXIT_FAILURE) from None


STORE_READING_COMMANDS = frozenset({"status", "trials", "best", "wait"})
"""Commands that only read the store's tables (``trials --download`` builds a model): they
load no plugins and import no spec models, registries or torch (``automl status``
answered in 3 s, half of it importing torch)."""


def _run_locally(command: Command, args: argparse.Namespace, settings: Settings) -> int:
    _quiet_optuna()
    if args.command in STORE_READING_COMMANDS and not getattr(args, "download", None):
        from automl.cli.local_store import store_errors_as_cli_errors as errors_as_cli_errors
    else:
        from automl.catalog import load_plugins
        from automl.cli.commands import errors_as_cli_errors  # imports torch

        load_plugins()
    with errors_as_cli_errors(getattr(args, "spec", None), change_hint(args)):
        return command(args, settings)


def change_hint(args: argparse.Namespace) -> str:
    """What to add to the error of a command cut off by a failing connection (to the
    database, or to the API after its request was sent): a change may have been made.
    Empty for a command that changes nothing."""
    if args.command not in CHANGING_COMMANDS or getattr(args, "keys_command", "") == "list":
        return ""
    if args.command == "submit":
        return may_have_submitted(args.idempotency_key)
    return MAY_HAVE_CHANGED


QUIET_LOGGERS = ("httpx", "httpcore", "torch")
"""Libraries whose INFO lines are noise unless ``--log-level DEBUG``: httpx logs every
request; torch, stopped while importing (before its own logging setup quiets it), logs its
FakeTensor cache statistics at exit."""


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if level != "DEBUG":
        for name in QUIET_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)


def _quiet_optuna() -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    optuna.logging.disable_default_handler()
    optuna.logging.enable_propagation()


if __name__ == "__main__":
    sys.exit(main())
