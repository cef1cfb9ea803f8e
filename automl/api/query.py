"""Refusing query parameters that a route does not take.

FastAPI ignores them: ``GET /studies?state=running`` (the trial lists' name for the
filter, not the study list's ``status``) answered every study, unfiltered, and the client
could not tell. Every route refuses them instead (422 naming the parameter). A parameter
given twice is refused too: FastAPI kept the last (``?status=completed&status=cancelled``
listed only the cancelled studies), and no route takes a list.
"""

from __future__ import annotations

from typing import NoReturn

from fastapi import Request
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute

_TAKEN = "_automl_query_parameters"
"""The attribute that keeps a route's query parameters, worked out at its first request
(routes are not hashable: no dictionary can key them)."""


def refuse_unknown_query(request: Request) -> None:
    """An app-wide dependency: a 422 for the first query parameter the route does not take,
    or that is given more than once.

    Raises:
        RequestValidationError: ``query.state``: ``unknown query parameter 'state'; this
            route takes limit, offset, status``; ``query.status``: ``query parameter
            'status' is given 2 times; give it once``.
    """
    route = request.scope.get("route")
    if not request.query_params or not isinstance(route, APIRoute):
        return
    taken: frozenset[str] | None = getattr(route, _TAKEN, None)
    if taken is None:
        taken = frozenset(_query_names(route.dependant))
        setattr(route, _TAKEN, taken)
    for name in request.query_params:
        if name not in taken:
            takes = ", ".join(sorted(taken)) or "no query parameters"
            _refuse(
                name,
                f"unknown query parameter {name!r}; this route takes {takes}",
                "extra_forbidden",
            )
        given = len(request.query_params.getlist(name))
        if given > 1:
            _refuse(
                name,
                f"query parameter {name!r} is given {given} times; give it once",
                "value_error",
            )


def _refuse(name: str, message: str, kind: str) -> NoReturn:
    raise RequestValidationError([{"loc": ("query", name), "msg": message, "type": kind}])


def _query_names(dependant: Dependant) -> set[str]:
    """The query parameters of a route's dependant and of the dependencies it has."""
    names = {param.alias for param in dependant.query_params}
    for dependency in dependant.dependencies:
        names |= _query_names(dependency)
    return names
