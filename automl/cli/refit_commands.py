"""``automl refit ID``: queue the refit of an ended study's best configuration.

Against the API (``--url``) it is one request; on the local store one transaction. The
refit itself runs on a worker (``automl worker``), which retrains the best trial's
configuration on train + validation and scores it on the test split.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from automl.cli.errors import EXIT_OK
from automl.cli.http_client import HttpClient
from automl.config import Settings


def cmd_refit(args: argparse.Namespace, settings: Settings) -> int:
    """Queues the refit (idempotent) and prints its state: a line, or ``--json``."""
    if settings.url:
        view = HttpClient(settings.url).refit(args.study)
    else:
        from automl.cli.local_store import open_store
        from automl.store import queue_refit

        store = open_store(settings)
        try:
            view = queue_refit(store, args.study).model_dump(mode="json")
        finally:
            store.close()
    print(json.dumps(view, indent=2) if args.json else refit_text(args.study, view))
    return EXIT_OK


def refit_text(study_id: int, view: dict[str, Any]) -> str:
    """One line: the refit's state and, once done, its test accuracy."""
    state = view["state"]
    if state == "done":
        accuracy = (view.get("test_metrics") or {}).get("accuracy")
        scored = f", test accuracy {accuracy:.4f}" if accuracy is not None else ""
        return (
            f"study {study_id}: refit done (trial {view['trial']}, {view['epochs']} epochs"
            f"{scored}); the bundle and predict serve it"
        )
    if state == "failed":
        return f"study {study_id}: refit failed: {view.get('note')}"
    return (
        f"study {study_id}: refit {state}; a worker retrains the best trial on train + validation"
    )
