"""``automl`` command line: argument parsing, dispatch and error reporting."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from pydantic import ValidationError

from automl import __version__
from automl.cli.errors import EXIT_BAD_INPUT, EXIT_INTERRUPTED, CliError
from automl.config import Settings


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(
        prog="automl", description="Hyperparameter search for image recognition."
    )
    parser.add_argument("--version", action="version", version=f"automl {__version__}")
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def storage_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument("--storage", help="SQLAlchemy URL (default: $AUTOML_STORAGE or SQLite)")

    def artifacts_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument("--artifacts-dir", help="weights folder (default: $AUTOML_ARTIFACTS_DIR)")

    def target_args(p: argparse.ArgumentParser) -> None:
        storage_arg(p)
        p.add_argument("--url", help="API base URL (default: $AUTOML_URL; else the local store)")
        p.add_argument("--json", action="store_true", help="print JSON")

    def worker_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--device", help="auto, cpu, cuda or cuda:N (default: auto)")
        p.add_argument("--threads", type=int, help="CPU threads per worker (default: all)")
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
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument(
        "--workers",
        dest="api_workers",
        type=int,
        help="API processes sharing the port (default: $AUTOML_API_WORKERS or 1)",
    )
    storage_arg(serve)
    artifacts_arg(serve)

    worker = commands.add_parser("worker", help="claim and train trials until stopped")
    worker_args(worker)
    worker.add_argument("--study", type=int, help="only this study; exit once it ends")
    worker.add_argument("--poll-interval", type=float, help="seconds between polls when idle")
    worker.add_argument("--exit-when-idle", action="store_true", help="exit when nothing is queued")
    device_layout_args(worker)

    proxy = commands.add_parser(
        "proxy", help="hold the database connections for many workers (gRPC)"
    )
    proxy.add_argument("--host", help="interface to listen on (default 127.0.0.1)")
    proxy.add_argument(
        "--port",
        type=int,
        default=13000,
        help="Optuna storage proxy port; coordination uses port + 1 (default 13000)",
    )
    proxy.add_argument(
        "--concurrency", type=int, default=32, help="calls served at once per endpoint"
    )
    storage_arg(proxy)
    artifacts_arg(proxy)

    up = commands.add_parser("up", help="run the API and N local workers; Ctrl-C stops all")
    worker_args(up)
    up.add_argument("--workers", type=int, default=1, help="CPU worker processes (default 1)")
    device_layout_args(up)
    up.add_argument("--host")
    up.add_argument("--port", type=int)

    run = commands.add_parser("run", help="submit SPEC locally and work it to completion")
    run.add_argument("spec", help="study spec (YAML or JSON)")
    worker_args(run)
    run.add_argument("--json", action="store_true", help="print the best trial as JSON")

    submit = commands.add_parser("submit", help="submit a study spec")
    submit.add_argument("spec", help="study spec (YAML or JSON)")
    target_args(submit)

    status = commands.add_parser("status", help="list studies, or show one")
    status.add_argument("study", nargs="?", type=int, help="study id")
    status.add_argument("--limit", type=int, default=20, help="studies to list (default 20)")
    target_args(status)

    best = commands.add_parser("best", help="show the best trial of a study")
    best.add_argument("study", type=int, help="study id")
    best.add_argument(
        "--download",
        metavar="DIR",
        help="save the best model's bundle in DIR: weights, model card, ONNX, TorchScript, "
        "predict.py",
    )
    target_args(best)
    artifacts_arg(best)

    cancel = commands.add_parser("cancel", help="cancel a queued or running study")
    cancel.add_argument("study", type=int, help="study id")
    target_args(cancel)

    extend = commands.add_parser("extend", help="add trials to a queued or running study")
    extend.add_argument("study", type=int, help="study id")
    extend.add_argument("--add-trials", type=int, required=True, help="trials to add")
    target_args(extend)

    resume = commands.add_parser("resume", help="reopen a cancelled, failed or completed study")
    resume.add_argument("study", type=int, help="study id")
    resume.add_argument("--add-trials", type=int, default=0, help="trials to add (default 0)")
    target_args(resume)

    rerun = commands.add_parser("rerun-failed", help="queue a study's failed trials again")
    rerun.add_argument("study", type=int, help="study id")
    target_args(rerun)

    enqueue = commands.add_parser("enqueue", help="queue configurations to try next")
    enqueue.add_argument("study", type=int, help="study id")
    enqueue.add_argument(
        "configs", nargs="+", metavar="CONFIG", help="JSON object of param values: '{\"lr\": 0.01}'"
    )
    target_args(enqueue)

    delete = commands.add_parser("delete", help="delete an ended study with its artifacts")
    delete.add_argument("study", type=int, help="study id")
    target_args(delete)

    predict = commands.add_parser("predict", help="classify image files with a study's best model")
    predict.add_argument("study", type=int, help="study id")
    predict.add_argument("images", nargs="+", metavar="IMAGE", help="png, jpeg, webp or bmp files")
    predict.add_argument("--top", type=int, default=3, help="classes per image (default 3)")
    target_args(predict)
    artifacts_arg(predict)

    annotate = commands.add_parser(
        "annotate", help="suggest labels for a folder of images, least confident first"
    )
    annotate.add_argument("study", type=int, help="study id")
    annotate.add_argument("folder", help="folder of images, relative to the data root")
    annotate.add_argument(
        "--csv", help="write path,label,confidence rows for image_csv (under the data root)"
    )
    annotate.add_argument("--overwrite", action="store_true", help="replace an existing --csv")
    annotate.add_argument("--top", type=int, default=3, help="classes per image (default 3)")
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
    return parser


def settings_from(args: argparse.Namespace) -> Settings:
    """Environment settings overridden by the command's flags."""
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
        return Settings(**overrides)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, error['loc']))}: {error['msg']}"
            for error in exc.errors(include_url=False)
        )
        raise CliError(f"invalid setting {problems}", EXIT_BAD_INPUT) from None


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the CLI; returns the process exit code."""
    args = build_parser().parse_args(argv)
    _configure_logging(args.log_level)
    from automl.catalog import load_plugins
    from automl.cli import commands  # heavy imports (torch, optuna) only after parsing

    load_plugins()

    try:
        return commands.dispatch(args, settings_from(args))
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    optuna.logging.disable_default_handler()
    optuna.logging.enable_propagation()


if __name__ == "__main__":
    sys.exit(main())
