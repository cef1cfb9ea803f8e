"""API keys: created once (the secret is shown only then), stored hashed, revoked for good.

A key reads ``automl_<key id>_<secret>``. The id is public (it names the key in listings
and revocations); only a SHA-256 of the secret is stored, and a presented key is checked
by id, then by a constant-time comparison of hashes. Keys are random 256-bit secrets, so a
fast hash is enough; there is nothing to recover from the table.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

import sqlalchemy as sa

from automl.store import tables
from automl.store.status import now
from automl.store.storage import Store

PREFIX = "automl"
PROJECT_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_TOKEN = re.compile(rf"^{PREFIX}_([0-9a-f]{{16}})_([A-Za-z0-9_-]{{43}})$")


class ApiKeyError(ValueError):
    """A key cannot be created or revoked as asked (the message says why)."""


@dataclass(frozen=True)
class ApiKey:
    """A key as listed: never its secret."""

    key_id: str
    project: str
    admin: bool
    label: str | None
    created_at: float
    revoked_at: float | None

    @property
    def active(self) -> bool:
        """Whether the key still opens the API."""
        return self.revoked_at is None


@dataclass(frozen=True)
class Principal:
    """Who a request is: a project, and whether it sees every project."""

    project: str
    admin: bool
    key_id: str | None = None


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_key(
    store: Store, project: str, *, admin: bool = False, label: str | None = None
) -> tuple[ApiKey, str]:
    """Creates a key for ``project``.

    Returns:
        The key and its token (``automl_<id>_<secret>``), which is not kept anywhere.

    Raises:
        ApiKeyError: If the project name is not valid.
    """
    if not PROJECT_PATTERN.fullmatch(project):
        raise ApiKeyError(
            f"invalid project {project!r}: use 1-128 letters, digits, '-', '_' or '.'"
        )
    key_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
    with store.write() as connection:
        created = now(connection)
        connection.execute(
            tables.api_keys.insert().values(
                key_id=key_id,
                secret_hash=_hash(secret),
                project=project,
                admin=admin,
                label=label,
                created_at=created,
            )
        )
    key = ApiKey(key_id, project, admin, label, created, None)
    return key, f"{PREFIX}_{key_id}_{secret}"


def list_keys(store: Store) -> list[ApiKey]:
    """Every key, oldest first (revoked ones too, marked)."""
    with store.read() as connection:
        rows = connection.execute(
            sa.select(tables.api_keys).order_by(tables.api_keys.c.created_at)
        ).all()
    return [
        ApiKey(r.key_id, r.project, bool(r.admin), r.label, r.created_at, r.revoked_at)
        for r in rows
    ]


def revoke_key(store: Store, key_id: str) -> ApiKey:
    """Revokes a key for good.

    Args:
        store: The store.
        key_id: The key's id, or its whole token (whose secret is then never repeated).

    Raises:
        ApiKeyError: If there is no such key, or it was already revoked.
    """
    token = _TOKEN.fullmatch(key_id)
    if token is not None:
        key_id = token.group(1)
    elif key_id.startswith(f"{PREFIX}_"):
        raise ApiKeyError("not a key: give the key's id (automl keys list) or its whole token")
    with store.write() as connection:
        at = now(connection)
        done = connection.execute(
            tables.api_keys.update()
            .where(tables.api_keys.c.key_id == key_id, tables.api_keys.c.revoked_at.is_(None))
            .values(revoked_at=at)
        )
        if done.rowcount != 1:
            exists = connection.scalar(
                sa.select(tables.api_keys.c.key_id).where(tables.api_keys.c.key_id == key_id)
            )
            raise ApiKeyError(
                f"key {key_id} is already revoked" if exists else f"no key {key_id!r}"
            )
    [key] = [k for k in list_keys(store) if k.key_id == key_id]
    return key


def keys_exist(store: Store) -> bool:
    """Whether any active key exists (then every API route but /health needs one)."""
    with store.read() as connection:
        return (
            connection.scalar(
                sa.select(tables.api_keys.c.key_id)
                .where(tables.api_keys.c.revoked_at.is_(None))
                .limit(1)
            )
            is not None
        )


def is_key_shaped(token: str) -> bool:
    """Whether ``token`` has the shape of a key (``automl_<id>_<secret>``, 84 characters)."""
    return _TOKEN.fullmatch(token) is not None


def authenticate(store: Store, token: str) -> Principal | None:
    """The principal of an active key's token, or None for anything else."""
    match = _TOKEN.fullmatch(token)
    if match is None:
        return None
    key_id, secret = match.groups()
    with store.read() as connection:
        row = connection.execute(
            sa.select(tables.api_keys).where(tables.api_keys.c.key_id == key_id)
        ).first()
    if row is None or row.revoked_at is not None:
        return None
    if not hmac.compare_digest(row.secret_hash, _hash(secret)):
        return None
    return Principal(project=row.project, admin=bool(row.admin), key_id=key_id)
