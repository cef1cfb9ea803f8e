"""``automl keys create|list|revoke``: API keys, on the local store (``--storage``).

Keys are managed where the database is, never over the API: whoever runs these commands
can already read the database. A key's secret is printed once, at creation, and only a
hash of it is stored.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from automl.cli.errors import EXIT_BAD_INPUT, EXIT_OK, CliError
from automl.cli.output import table
from automl.config import Settings

if TYPE_CHECKING:
    from automl.store import Store
    from automl.store.keys import ApiKey

MAX_LABEL = 256
"""Longest label, in characters (its column's width)."""


def cmd_keys(args: argparse.Namespace, settings: Settings) -> int:
    """Runs ``automl keys create``, ``list`` or ``revoke`` on the configured store."""
    from automl.cli.local_store import open_store
    from automl.store.keys import ApiKeyError

    store = open_store(settings, create=args.keys_command == "create")
    try:
        if args.keys_command == "create":
            return _create(store, args.project, args.admin, args.label)
        if args.keys_command == "list":
            return _list(store, args.json)
        return _revoke(store, args.key_id)
    except ApiKeyError as exc:
        raise CliError(str(exc), EXIT_BAD_INPUT) from None
    finally:
        store.close()


def _create(store: Store, project: str, admin: bool, label: str | None) -> int:
    """Prints the token alone on stdout (``export AUTOML_API_KEY=$(automl keys create ...)``),
    what it is on stderr."""
    from automl.store.keys import create_key

    if label is not None and len(label) > MAX_LABEL:
        raise CliError(f"--label is longer than {MAX_LABEL} characters", EXIT_BAD_INPUT)
    key, token = create_key(store, project, admin=admin, label=label)
    scope = "every project (admin)" if admin else f"project {project!r}"
    print(f"created key {key.key_id} for {scope}:", file=sys.stderr)
    print(token)
    print("Save it now (send it as AUTOML_API_KEY): it cannot be shown again.", file=sys.stderr)
    return EXIT_OK


def _list(store: Store, as_json: bool) -> int:
    from automl.store.keys import list_keys

    keys = list_keys(store)
    if as_json:
        # The shape of every other list (status, trials): a page of data and its count.
        listed = [_key_json(key) for key in keys]
        print(json.dumps({"data": listed, "count": len(listed)}, indent=2))
        return EXIT_OK
    if not keys:
        print("no API keys: the API is open to anyone who reaches it (`automl keys create`)")
        return EXIT_OK
    rows = [
        (
            key.key_id,
            key.project,
            "yes" if key.admin else "no",
            key.label,
            _when(key.created_at),
            "active" if key.active else f"revoked {_when(key.revoked_at)}",
        )
        for key in keys
    ]
    print(table(["KEY ID", "PROJECT", "ADMIN", "LABEL", "CREATED", "STATUS"], rows))
    return EXIT_OK


def _revoke(store: Store, key_id: str) -> int:
    from automl.store.keys import revoke_key

    key = revoke_key(store, key_id)
    print(
        f"revoked key {key.key_id} (project {key.project!r}); the API refuses it within "
        "AUTOML_AUTH_CACHE_S seconds (1 by default)"
    )
    return EXIT_OK


def _key_json(key: ApiKey) -> dict[str, object]:
    return {
        "key_id": key.key_id,
        "project": key.project,
        "admin": key.admin,
        "label": key.label,
        "created_at": _json_time(key.created_at),
        "revoked_at": _json_time(key.revoked_at),
        "active": key.active,
    }


def _json_time(timestamp: float | None) -> str | None:
    """A time as the API's views write it: ISO 8601 in UTC, ending in ``Z``."""
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, UTC).isoformat().replace("+00:00", "Z")


def _when(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")
