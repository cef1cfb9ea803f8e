"""API keys on every route but ``/health``, and projects: who a request is, what it sees.

Once any active key exists, a request needs ``Authorization: Bearer <key>``; a missing,
unknown or revoked key is a 401. Without keys every request is anonymous in project
``default``, but only where that is safe: an API on a non-loopback host without
``allow_anonymous`` (``Settings.keys_required``) answers 401 until a key exists, so
revoking the last key closes it rather than opening it to anyone.

A study of another project answers 404 on every route whose path names a ``study_id``
(an admin key sees all): ``authorize`` runs for each router the app includes, so a route
added later gets the check without asking for it.

Lookups are remembered for ``Settings.auth_cache_s`` (1 s by default) in each API
process: a request with a known key costs no query, and a revoked key stops working
within that time. A study's project is read on every request (one primary-key query):
ids of deleted studies can be reused, so an answer kept would outlive its study.
"""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import TypeAdapter, ValidationError
from starlette.concurrency import run_in_threadpool

from automl.api.params import StudyId
from automl.store import DEFAULT_PROJECT, Store, StudyNotFoundError, study_project
from automl.store.keys import Principal, authenticate, is_key_shaped, keys_exist

ANONYMOUS = Principal(project=DEFAULT_PROJECT, admin=False)
"""Every request while no active key exists."""

MAX_CACHED_TOKENS = 1024
"""Tokens remembered at once; more (a flood of made-up keys) empties the memory."""

BEARER = HTTPBearer(
    auto_error=False,
    description="An API key from `automl keys create` (the CLI sends $AUTOML_API_KEY): "
    "required once any key exists, and always on a server that requires keys.",
)

_CHALLENGE = {"WWW-Authenticate": "Bearer"}
_STUDY_ID: TypeAdapter[int] = TypeAdapter(StudyId)


class KeyCache:
    """What the database said about keys, kept for ``ttl`` seconds (0: nothing kept)."""

    def __init__(self, store: Store, ttl: float) -> None:
        self._store, self._ttl = store, ttl
        self._any: tuple[float, bool] | None = None
        self._tokens: dict[str, tuple[float, Principal | None]] = {}

    def fresh_any(self) -> bool | None:
        """Whether any active key exists, if known recently; None otherwise."""
        if self._any is not None and time.monotonic() < self._any[0]:
            return self._any[1]
        return None

    def load_any(self) -> bool:
        """Asks the database whether any active key exists (blocking)."""
        exists = keys_exist(self._store)
        self._any = (time.monotonic() + self._ttl, exists)
        return exists

    def fresh(self, token: str) -> tuple[bool, Principal | None]:
        """``(known, principal)``: the token's principal (None: invalid), if known recently."""
        entry = self._tokens.get(token)
        if entry is not None and time.monotonic() < entry[0]:
            return True, entry[1]
        return False, None

    def load(self, token: str) -> Principal | None:
        """Looks the token up in the database (blocking). Only a token shaped like a key
        is remembered: made-up tokens of any size would otherwise be kept (1024 of them)."""
        principal = authenticate(self._store, token)
        if self._ttl > 0 and is_key_shaped(token):
            if len(self._tokens) >= MAX_CACHED_TOKENS:
                self._tokens.clear()
            self._tokens[token] = (time.monotonic() + self._ttl, principal)
        return principal


async def authorize(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)],
) -> Principal:
    """The request's principal; refuses (404) a study of another project.

    Raises:
        HTTPException: 401 for a missing, unknown or revoked key while keys exist, and
            for every request while none exists on an API that requires keys.
        StudyNotFoundError: The path's study is another project's, or, for a key that
            sees one project, none.
    """
    cache: KeyCache = request.app.state.key_cache
    keys_required: bool = request.app.state.settings.keys_required
    principal = await _principal(cache, credentials, keys_required)
    study_id = _study_id(request)
    if study_id is not None and not principal.admin:
        project = await run_in_threadpool(study_project, request.app.state.store, study_id)
        # For a key, a study that does not exist answers as another project's does,
        # whatever else the request holds (a 422 for its body would tell the two apart).
        # Without keys there is no one to hide from: the route answers (422 or 404).
        missing_for_a_key = project is None and principal.key_id is not None
        if missing_for_a_key or (project is not None and project != principal.project):
            raise StudyNotFoundError(study_id)
    return principal


async def _principal(
    cache: KeyCache, credentials: HTTPAuthorizationCredentials | None, keys_required: bool
) -> Principal:
    if credentials is None:
        exists = cache.fresh_any()
        if exists is None:
            exists = await run_in_threadpool(cache.load_any)
        if not exists and keys_required:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "no API key exists, and this API listens on a non-loopback address: create "
                "one with `automl keys create --project P` (or set AUTOML_ALLOW_ANONYMOUS=true "
                "to let anyone in)",
                headers=_CHALLENGE,
            )
        if exists:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "API key required: send 'Authorization: Bearer <key>' (the CLI sends "
                "$AUTOML_API_KEY; `automl keys create` makes one)",
                headers=_CHALLENGE,
            )
        return ANONYMOUS
    known, principal = cache.fresh(credentials.credentials)
    if not known:
        principal = await run_in_threadpool(cache.load, credentials.credentials)
    if principal is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "invalid API key: unknown or revoked",
            headers=_CHALLENGE,
        )
    return principal


def _study_id(request: Request) -> int | None:
    """The path's study id, read as the route reads it (``+7`` and `` 7`` are 7), when the
    route has one and it is valid (an invalid one is the route's own 422)."""
    raw = request.path_params.get("study_id")
    if raw is None:
        return None
    try:
        return _STUDY_ID.validate_python(raw)
    except ValidationError:
        return None


PrincipalDep = Annotated[Principal, Depends(authorize)]
"""The request's principal (cached per request: the router's check already ran)."""
