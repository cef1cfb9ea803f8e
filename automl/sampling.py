"""How a study's configurations are chosen: the exact grid and the ``auto`` rule.

The grid is the set of cells that the spec's categorical and stepped params span, where
a conditional param adds its values only to the cells in which it applies. Cell ``k`` of
a study is fixed by the spec alone (a seeded permutation when ``n_trials`` is smaller than
the grid), so the store can hand out budget unit ``k`` as cell ``k``, exactly once, however
many workers race.

``auto`` picks a sampler from the space, the budget and the objectives (``resolve_auto``):

1. several objectives: NSGA-II, or multi-objective TPE where a param is conditional
   (NSGA-II, as GP, models only the params every trial has: it would draw those at random);
2. a finite space (every param categorical or stepped) whose grid the budget covers, and
   no warm start: the grid, with ``n_trials`` lowered to the number of cells;
3. a small numeric space (at most ``GP_MAX_PARAMS`` float/int params, no categorical
   ones, so none conditional) and a small budget (at most ``GP_MAX_TRIALS`` trials):
   Gaussian-process BO;
4. otherwise: multivariate TPE (grouped, for conditional spaces) with constant liar, so
   that several workers sharing the study spread out.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence
from decimal import Decimal
from functools import lru_cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from automl.spec import StudySpec

MAX_GRID_CELLS = 100_000
"""Default largest grid (the ``max_grid_cells`` limit); cells are enumerated when a study
starts."""
MODEL_STARTUP_TRIALS = 10
"""The random trials that ``tpe`` and ``gp`` start with (their ``n_startup_trials``
default): ``auto`` names a budget of no more than these random search, which it is."""
GP_MAX_PARAMS = 8
GP_MAX_TRIALS = 200


class GridError(ValueError):
    """The spec's space has no finite grid, or a grid too large."""


def param_count(param: Any) -> int | float:
    """How many values one spec param has on a grid, counted without listing them
    (``math.inf`` when a float step is too fine to count).

    Raises:
        GridError: If the param is continuous (a float without ``step``).
    """
    if param.type == "categorical":
        return len(param.choices)
    if param.type == "int":
        return max(0, (param.high - param.low) // (param.step or 1) + 1)
    if param.step is None:
        raise GridError("is continuous; give it a step or make it categorical")
    steps = (param.high - param.low) / param.step + 1e-9
    return math.floor(steps) + 1 if math.isfinite(steps) else math.inf


def param_values(param: Any) -> list[Any]:
    """The finite values of one spec param (``param_count`` of them: check it first).

    Raises:
        GridError: If the param is continuous (a float without ``step``).
    """
    if param.type == "categorical":
        return list(param.choices)
    if param.type == "int":
        return list(range(param.low, param.high + 1, param.step or 1))
    count = int(param_count(param))
    # In decimal, as the spec writes them: 0.1 * 3 is 0.3 (not 0.30000000000000004), at
    # any scale (1000 + 3 * 0.001, or steps of 1e-13, which rounding to digits lost).
    low, step = Decimal(repr(param.low)), Decimal(repr(param.step))
    return [min(float(low + index * step), param.high) for index in range(count)]


def iter_cells(spec: StudySpec) -> Iterator[dict[str, Any]]:
    """Every cell of the spec's grid, in a fixed order (parents before children).

    Raises:
        GridError: If a param is continuous.
    """
    order = spec.param_order()
    values = {name: param_values(spec.params[name]) for name in order}
    conditions = {name: spec.conditions(name) for name in order}

    def expand(index: int, cell: dict[str, Any]) -> Iterator[dict[str, Any]]:
        if index == len(order):
            yield dict(cell)
            return
        name = order[index]
        applies = all(cell.get(parent) in allowed for parent, allowed in conditions[name].items())
        if not applies:
            yield from expand(index + 1, cell)
            return
        for value in values[name]:
            cell[name] = value
            yield from expand(index + 1, cell)
        del cell[name]

    return expand(0, {})


def grid_size(spec: StudySpec, limit: int = MAX_GRID_CELLS) -> int:
    """The number of cells of the spec's grid.

    Raises:
        GridError: If a param is continuous, or the grid has more than ``limit`` cells.
    """
    count = 0
    for _ in iter_cells(spec):
        count += 1
        if count > limit:
            raise GridError(f"the grid has more than {limit:,} cells")
    return count


@lru_cache(maxsize=16)
def _study_cells(spec_json: str, spec_type: type[StudySpec]) -> tuple[dict[str, Any], ...]:
    spec = spec_type.model_validate_json(spec_json)
    cells = list(iter_cells(spec))
    if spec.budget.n_trials < len(cells):
        seed = spec.sampler.seed if spec.sampler.seed is not None else 0
        cells = random.Random(seed).sample(cells, spec.budget.n_trials)
    return tuple(cells)


def grid_cell(spec: StudySpec, index: int) -> dict[str, Any]:
    """Cell ``index`` (0-based) of a grid study: all cells in order when the budget equals
    the grid, else ``n_trials`` distinct cells in a seeded random order.

    Raises:
        IndexError: If ``index`` is outside the study's budget.
    """
    cells = _study_cells(spec.model_dump_json(), type(spec))
    if not 0 <= index < len(cells):
        raise IndexError(f"grid cell {index} is outside the study's {len(cells)} cells")
    return dict(cells[index])


def check_grid(
    spec: StudySpec, limit: int = MAX_GRID_CELLS
) -> list[tuple[tuple[str | int, ...], str]]:
    """Problems that stop ``spec`` from running as an exact grid (or a brute-force search,
    which needs the same finite space), as ``(loc, message)``."""
    problems: list[tuple[tuple[str | int, ...], str]] = []
    too_many = False
    for name, param in spec.params.items():
        try:
            # One param's values are counted before any is listed: a step of 1e-12, or an
            # int range of 10**30, would otherwise be built in memory.
            too_many = too_many or param_count(param) > limit
        except GridError as exc:
            problems.append((("params", name), f"{spec.sampler.name} sampler: {exc}"))
    if problems:
        return problems
    try:
        if too_many:
            raise GridError(f"the grid has more than {limit:,} cells")
        size = grid_size(spec, limit)
    except GridError as exc:
        return [(("sampler", "name"), f"{exc} (max_grid_cells); narrow the space")]
    if spec.budget.n_trials > size:
        message = f"the grid has {size} cells, fewer than n_trials ({spec.budget.n_trials})"
        problems.append((("budget", "n_trials"), f"{message}; use n_trials <= {size}"))
    return problems


def resolve_auto(
    spec: StudySpec, grid_limit: int = MAX_GRID_CELLS
) -> tuple[str, dict[str, Any], int, str]:
    """The sampler ``auto`` picks for ``spec`` (a grid only up to ``grid_limit`` cells).

    Returns:
        ``(sampler name, its options, n_trials to run, the reason in words)``.
    """
    n_trials = spec.budget.n_trials
    small = (
        f"{n_trials} trials, no more than the {MODEL_STARTUP_TRIALS} random trials a "
        "model-based sampler starts with: random search"
    )
    conditional = [name for name in spec.params if spec.conditions(name)]
    tpe_options = {"multivariate": True, "group": True, "constant_liar": True}
    if len(spec.objective_list) > 1:
        if n_trials <= MODEL_STARTUP_TRIALS:
            return "random", {}, n_trials, small
        if conditional:
            reason = (
                f"several objectives, conditional params ({', '.join(conditional)}): "
                "multi-objective TPE (NSGA-II would draw them at random)"
            )
            return "tpe", tpe_options, n_trials, reason
        return "nsga2", {}, n_trials, "several objectives: NSGA-II"
    params: Sequence[Any] = list(spec.params.values())
    finite = all(_count(param) <= grid_limit for param in params)
    if params and finite and spec.warm_start is None and not spec.enqueue:
        try:
            size = grid_size(spec, grid_limit)
        except GridError:
            size = None
        if size is not None and size <= n_trials:
            reason = f"finite space of {size} cells within the budget: exact grid"
            if size < n_trials:
                reason += f" (n_trials lowered from {n_trials} to {size})"
            return "grid", {}, size, reason
    if n_trials <= MODEL_STARTUP_TRIALS:
        return "random", {}, n_trials, small
    numeric = [param for param in params if param.type in ("float", "int")]
    if params and len(numeric) == len(params) <= GP_MAX_PARAMS and n_trials <= GP_MAX_TRIALS:
        reason = (
            f"{len(numeric)} numeric params, {n_trials} trials: Gaussian-process Bayesian "
            "optimization"
        )
        return "gp", {}, n_trials, reason
    reason = "general space: multivariate TPE with constant liar (parallel workers spread out)"
    return "tpe", tpe_options, n_trials, reason


def _count(param: Any) -> int | float:
    """A param's number of grid values, counted (an int range of 10**15 is never listed);
    ``math.inf`` for a continuous one."""
    try:
        return param_count(param)
    except GridError:
        return math.inf
