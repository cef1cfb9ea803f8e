"""Optuna samplers, registered by name with their options.

A spec's ``sampler.options`` are checked against the entry's options model (types and
ranges) at submit time, and every option reaches Optuna with the default its model
documents filled in: Optuna's own defaults differ in places (TPE's ``multivariate`` is off
for several objectives) and may change between releases.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import optuna
from pydantic import Field

from automl.registry import MAX_COUNT, EntryOptions, Registry

SamplerFactory = Callable[[dict[str, Any], int | None], optuna.samplers.BaseSampler]

SAMPLERS: Registry[SamplerFactory] = Registry("sampler")


class TpeOptions(EntryOptions):
    """Options of the TPE sampler."""

    n_startup_trials: int = Field(
        10, ge=0, le=MAX_COUNT, description="Random trials before TPE starts."
    )
    n_ei_candidates: int = Field(
        24, ge=1, le=1_000_000, description="Candidates scored per suggestion."
    )
    multivariate: bool = Field(True, description="Model the parameters jointly.")
    group: bool = Field(False, description="Split conditional spaces into groups.")
    constant_liar: bool = Field(
        True, description="Treat running trials as bad, so parallel workers spread out."
    )


class GpOptions(EntryOptions):
    """Options of the Gaussian-process sampler."""

    n_startup_trials: int = Field(
        10, ge=0, le=MAX_COUNT, description="Random trials before the GP starts."
    )
    deterministic_objective: bool = Field(False, description="Assume noise-free objectives.")


class QmcOptions(EntryOptions):
    """Options of the quasi-Monte Carlo sampler."""

    qmc_type: Literal["sobol", "halton"] = Field("sobol", description="Low-discrepancy sequence.")
    scramble: bool = Field(False, description="Randomize the sequence.")


class Nsga2Options(EntryOptions):
    """Options of the NSGA-II sampler."""

    population_size: int = Field(50, ge=2, le=MAX_COUNT, description="Trials per generation.")
    mutation_prob: float | None = Field(
        None, ge=0, le=1, description="Mutation probability (default: 1 / number of params)."
    )
    crossover_prob: float = Field(0.9, ge=0, le=1, description="Crossover probability.")
    swapping_prob: float = Field(0.5, ge=0, le=1, description="Uniform crossover swap rate.")


class CmaEsOptions(EntryOptions):
    """Options of the CMA-ES sampler."""

    n_startup_trials: int = Field(
        1, ge=0, le=MAX_COUNT, description="Random trials before CMA-ES starts."
    )
    sigma0: float | None = Field(
        None,
        gt=0,
        description="Initial step size, as a share of each param's range (default: 1/6).",
    )
    use_separable_cma: bool = Field(False, description="Diagonal covariance (faster).")
    with_margin: bool = Field(False, description="CMA-ES with margin, for integer params.")
    lr_adapt: bool = Field(False, description="Adapt the learning rate (noisy objectives).")


class BruteForceOptions(EntryOptions):
    """Options of the brute-force sampler."""

    avoid_premature_stop: bool = Field(
        False, description="Keep exploring branches that pruned or failed trials left."
    )


class _BruteForce(optuna.samplers.BruteForceSampler):
    """Optuna's brute force without its ``study.stop()`` once every cell has run.

    Workers tell results outside ``study.optimize``, where ``stop`` raises (after the
    trial was stored), so the worker took its own told result for a lost one and the
    ticket stayed running; the budget, at most the space's cells (checked at submit), ends
    the study instead.
    """

    def after_trial(
        self,
        study: optuna.Study,
        trial: optuna.trial.FrozenTrial,
        state: optuna.trial.TrialState,
        values: Sequence[float] | None,
    ) -> None:
        study.stop = _no_stop  # type: ignore[method-assign]
        try:
            super().after_trial(study, trial, state, values)
        finally:
            del study.stop


def _no_stop() -> None:
    """The study ends when its budget is spent."""


def _cma_es(options: dict[str, Any], seed: int | None) -> optuna.samplers.BaseSampler:
    """Optuna's ``CmaEsSampler``, quiet about what its description already says: it
    draws categorical and conditional params at random (Optuna logs that for every param
    of every trial, as each trial builds its sampler anew)."""
    if options["sigma0"] is None:
        # Optuna's default; not passed, as Optuna 6 removes the argument.
        options = {name: value for name, value in options.items() if name != "sigma0"}
    with warnings.catch_warnings():
        # Deprecated in Optuna 4.9 with no replacement (its FutureWarning came every trial).
        warnings.filterwarnings("ignore", message=".*`sigma0`", category=FutureWarning)
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False, **options)


def _gp(options: dict[str, Any], seed: int | None) -> optuna.samplers.BaseSampler:
    """Optuna's ``GPSampler``, quiet about what its description already says: it draws
    conditional params at random (logged for every such param of every trial)."""
    return optuna.samplers.GPSampler(seed=seed, warn_independent_sampling=False, **options)


def _seeded(sampler_class: type[optuna.samplers.BaseSampler]) -> SamplerFactory:
    """A factory passing the spec's seed and options to ``sampler_class``."""

    def factory(options: dict[str, Any], seed: int | None) -> optuna.samplers.BaseSampler:
        return sampler_class(seed=seed, **options)  # type: ignore[call-arg]

    return factory


SAMPLERS.add(
    "tpe",
    _seeded(optuna.samplers.TPESampler),
    options=TpeOptions,
    description="Tree-structured Parzen estimator: Bayesian, handles conditional spaces.",
)
SAMPLERS.add(
    "random",
    _seeded(optuna.samplers.RandomSampler),
    description="Independent uniform sampling.",
)
SAMPLERS.add(
    "gp",
    _gp,
    options=GpOptions,
    description=(
        "Gaussian-process Bayesian optimization: small budgets (at most 1,000 trials), "
        "continuous spaces; conditional params are drawn at random."
    ),
)
SAMPLERS.add(
    "qmc",
    _seeded(optuna.samplers.QMCSampler),
    options=QmcOptions,
    description="Quasi-Monte Carlo: space-filling, no model.",
)
SAMPLERS.add(
    "cmaes",
    _cma_es,
    options=CmaEsOptions,
    description=(
        "CMA-ES evolution strategy: numeric spaces, larger budgets; categorical and "
        "conditional params are drawn at random."
    ),
)
SAMPLERS.add(
    "brute_force",
    _seeded(_BruteForce),
    options=BruteForceOptions,
    description=(
        "Optuna's exhaustive search of a finite space (n_trials at most its configurations); "
        "several workers may repeat one (see grid)."
    ),
)
SAMPLERS.add(
    "grid",
    # The claim hands every trial its cell as fixed params, so the sampler never chooses.
    _seeded(optuna.samplers.RandomSampler),
    description="Exact grid over the categorical and stepped params: each cell runs once.",
)
SAMPLERS.add(
    "auto",
    _seeded(optuna.samplers.TPESampler),
    description="Picks grid, GP, TPE or NSGA-II from the space, budget and objectives.",
)
SAMPLERS.add(
    "nsga2",
    _seeded(optuna.samplers.NSGAIISampler),
    options=Nsga2Options,
    description=(
        "NSGA-II genetic algorithm for several objectives; conditional params are drawn at "
        "random (tpe models them)."
    ),
)

SINGLE_OBJECTIVE_SAMPLERS = frozenset({"cmaes"})
"""Samplers that optimize one objective: Optuna's ``CmaEsSampler`` refuses a study with
several (every other registered sampler takes them; ``auto`` picks NSGA-II or, for a
space with conditional params, TPE for them)."""

SAMPLER_MAX_TRIALS = {"gp": 1000}
"""The most trials a study of these samplers may have. ``gp`` fits its Gaussian process to
every completed trial before each new one, a cost that grows with the cube of their
number: on a 2-core machine, 8 s of CPU per trial at 1,000 trials, 60 s at 2,000 (a
tester's 20,000-trial study would never have ended)."""


def max_trials_message(name: str) -> str:
    """Why a study of ``name`` (a key of ``SAMPLER_MAX_TRIALS``) cannot have more trials."""
    return (
        f"sampler {name} refits its model to every completed trial before each new one, a "
        "cost that grows with the cube of their number (about 8 s of CPU per trial at "
        f"1,000 trials, a minute at 2,000): at most {SAMPLER_MAX_TRIALS[name]:,} trials; "
        "use tpe for a longer search"
    )


SHARED_SEED_SAMPLERS = frozenset({"qmc"})
"""Samplers whose seed must be the same in every worker (QMC scrambles one sequence that
all workers walk through); the others get a different seed per trial."""


def build_sampler(
    name: str, options: Mapping[str, Any], seed: int | None, trial_seed: int | None = None
) -> optuna.samplers.BaseSampler:
    """Builds the sampler ``name`` with ``options`` (checked by its options model, every
    option passed with its documented default).

    Args:
        name: The sampler's registered name.
        options: Its options.
        seed: Its seed (for ``SHARED_SEED_SAMPLERS``, the same in every worker).
        trial_seed: A seed of this trial alone, for what a shared-seed sampler draws
            outside its shared sequence: QMC leaves conditional params to an independent
            sampler, which would otherwise draw the same value in every trial.

    Raises:
        UnknownNameError: If ``name`` is not registered.
        pydantic.ValidationError: If an option is unknown or of the wrong type or range.
        TypeError, ValueError: If Optuna refuses the combination of options.
    """
    entry = SAMPLERS.get(name)
    checked = entry.parse_options(options).model_dump()
    with warnings.catch_warnings():
        # Offered on purpose: a warning per trial in every worker's log is noise.
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if name == "qmc" and trial_seed is not None:
            independent = optuna.samplers.RandomSampler(seed=trial_seed)
            return optuna.samplers.QMCSampler(seed=seed, independent_sampler=independent, **checked)
        return entry.factory(checked, seed)
