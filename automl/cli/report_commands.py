"""``automl report ID``: a study's report, an HTML page of plots, written to a file.

Against the API (``--url``) the server draws the page and only the HTML travels (nothing
here imports torch, optuna or matplotlib); on the local store it is drawn in this process.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import sys
import webbrowser
from pathlib import Path

from automl.cli.errors import EXIT_BAD_INPUT, EXIT_FAILURE, EXIT_OK, CliError
from automl.cli.http_client import HttpClient
from automl.config import Settings
from automl.file_clock import remove_stale_siblings


def cmd_report(args: argparse.Namespace, settings: Settings) -> int:
    """Writes the report of ``args.study`` to ``args.output`` (``-``: standard output);
    ``--open`` shows it."""
    if args.output == "-":
        flags = [flag for flag in ("open", "json", "overwrite") if getattr(args, flag)]
        if flags:
            named = " and ".join(f"--{flag}" for flag in flags)
            verb = "goes" if len(flags) == 1 else "go"
            raise CliError(
                f"--output - writes the page itself; {named} {verb} with a file", EXIT_BAD_INPUT
            )
        page = _page(settings, args.study)
        sys.stdout.write(page)
        sys.stdout.flush()
        return EXIT_OK
    path = Path(args.output or f"study-{args.study}-report.html")
    if path.is_dir():
        raise CliError(f"--output {path} is a folder; name a file", EXIT_BAD_INPUT)
    if not path.parent.is_dir():  # before the page is drawn, which takes seconds
        raise CliError(f"cannot write {path}: no folder {path.parent}", EXIT_BAD_INPUT)
    if path.exists() and not args.overwrite and not _is_report(path):
        message = (
            f"{path} exists and is not an automl report; name another file or pass --overwrite"
        )
        raise CliError(message, EXIT_BAD_INPUT)
    page = _page(settings, args.study)
    remove_stale_siblings(path, ".partial-")  # a killed report's
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        partial.write_text(page, encoding="utf-8")
        os.replace(partial, path)  # never a cut-off page under the name, even on a full disk
    except OSError as exc:
        partial.unlink(missing_ok=True)
        code = EXIT_FAILURE if exc.errno in (errno.ENOSPC, errno.EDQUOT) else EXIT_BAD_INPUT
        raise CliError(f"cannot write {path}: {exc.strerror}", code) from None
    if args.json:
        print(json.dumps({"study_id": args.study, "file": str(path)}))
    else:
        print(f"study {args.study}: wrote the report to {path}")
    if args.open:
        webbrowser.open(path.resolve().as_uri())
    return EXIT_OK


REPORT_MARK = b"<title>automl report: "
"""What every report has near its top: a file with it is an earlier report, replaced."""


def _is_report(path: Path) -> bool:
    try:
        with path.open("rb") as file:
            return REPORT_MARK in file.read(512)
    except OSError:
        return False


def _page(settings: Settings, study_id: int) -> str:
    """The report's HTML, from the API (``--url``) or drawn here."""
    if settings.url:
        return HttpClient(settings.url).report(study_id)
    return _draw_locally(settings, study_id)


def _draw_locally(settings: Settings, study_id: int) -> str:
    from automl.cli.local_store import open_store
    from automl.delivery.study_report import study_report_html

    store = open_store(settings)
    try:
        return study_report_html(store, study_id)
    finally:
        store.close()
