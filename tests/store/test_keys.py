"""API keys: hashed, shown once, revoked for good; both backends."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from automl.store import Store, tables
from automl.store.keys import (
    ApiKeyError,
    authenticate,
    create_key,
    keys_exist,
    list_keys,
    revoke_key,
)


def test_a_key_opens_until_revoked_and_its_secret_is_not_stored(store: Store) -> None:
    assert not keys_exist(store)
    key, token = create_key(store, "vision", label="ci")
    assert keys_exist(store)
    assert token.startswith(f"automl_{key.key_id}_")
    principal = authenticate(store, token)
    assert principal is not None
    assert (principal.project, principal.admin, principal.key_id) == ("vision", False, key.key_id)
    with store.read() as connection:
        stored = connection.execute(sa.select(tables.api_keys)).one()
    secret = token.split("_", 2)[2]  # the secret itself may hold "_"
    assert len(secret) == 43
    assert secret not in str(tuple(stored)) and token not in str(tuple(stored))
    revoked = revoke_key(store, key.key_id)
    assert not revoked.active
    assert authenticate(store, token) is None
    assert not keys_exist(store)
    with pytest.raises(ApiKeyError, match="already revoked"):
        revoke_key(store, key.key_id)


@pytest.mark.parametrize(
    "token",
    ["", "automl", "Bearer x", "automl_0123456789abcdef_" + "A" * 43, "automl_zz_" + "a" * 43],
)
def test_malformed_or_unknown_tokens_are_refused(store: Store, token: str) -> None:
    create_key(store, "vision")
    assert authenticate(store, token) is None


def test_a_right_id_with_a_wrong_secret_is_refused(store: Store) -> None:
    _, token = create_key(store, "vision", admin=True)
    forged = token[:-1] + ("A" if token[-1] != "A" else "B")
    assert authenticate(store, forged) is None
    assert authenticate(store, token).admin  # type: ignore[union-attr]


def test_listing_and_bad_input(store: Store) -> None:
    first, _ = create_key(store, "a")
    second, _ = create_key(store, "b", admin=True)
    assert [(k.key_id, k.project, k.admin) for k in list_keys(store)] == [
        (first.key_id, "a", False),
        (second.key_id, "b", True),
    ]
    with pytest.raises(ApiKeyError, match="invalid project"):
        create_key(store, "../etc")
    with pytest.raises(ApiKeyError, match="invalid project"):
        create_key(store, "a\n")
    with pytest.raises(ApiKeyError, match="no key 'nope'"):
        revoke_key(store, "nope")
