"""Tests of the pruner registry: every pruner builds as its documented options say."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from automl.pruners import PRUNERS, build_pruner, trial_epochs
from automl.spec import StudySpec, load_spec


def test_percentile_without_options_prunes_at_its_documented_25th_percentile() -> None:
    # Optuna requires percentile; the spec's default never reached it.
    spec = load_spec({"name": "x", "pruner": {"name": "percentile"}})
    pruner = build_pruner(spec.pruner_or_default.name, spec.pruner_or_default.options)
    assert isinstance(pruner, optuna.pruners.PercentilePruner)
    assert pruner._percentile == 25.0
    assert build_pruner("percentile", {"percentile": 40.0})._percentile == 40.0


@pytest.mark.parametrize("name", [name for name in PRUNERS.names() if name != "threshold"])
def test_every_pruner_builds_with_its_documented_defaults(name: str) -> None:
    spec = load_spec({"name": "x", "pruner": {"name": name}})
    assert isinstance(build_pruner(name, spec.pruner_or_default.options), optuna.pruners.BasePruner)


def test_threshold_needs_a_bound_named_at_its_options() -> None:
    from automl.spec import SpecError

    with pytest.raises(SpecError) as info:
        load_spec({"name": "x", "pruner": {"name": "threshold"}})
    assert [error.path for error in info.value.errors] == ["pruner.options"]
    assert load_spec({"name": "x", "pruner": {"name": "threshold", "options": {"lower": 0.1}}})


def test_a_threshold_past_every_value_of_the_metric_is_refused() -> None:
    """Found by a tester: ``lower: 2`` with accuracy pruned every trial of the study."""
    from automl.spec import SpecError

    def errors(objective: str, **options: float) -> list[tuple[str, str]]:
        pruner = {"name": "threshold", "options": options}
        spec = {"name": "x", "pruner": pruner, "objective": {"metric": objective}}
        try:
            load_spec(spec)
        except SpecError as error:
            return [(e.path, e.msg) for e in error.errors]
        return []

    assert errors("accuracy", lower=2.0) == [
        ("pruner.options.lower", "lower 2.0 prunes every trial: accuracy lies in [0, 1]")
    ]
    assert errors("loss", upper=-1.0) == [
        ("pruner.options.upper", "upper -1.0 prunes every trial: loss lies in [0, inf]")
    ]
    assert errors("accuracy", lower=1.0) == errors("loss", upper=0.0) == []
    assert errors("accuracy", lower=1.0000001)[0][1].startswith("lower 1.0000001 prunes")
    assert errors("macro_f1", lower=0.2, upper=0.9) == []
    # A time or a count of weights never reaches 0: ``upper: 0`` prunes every trial too.
    assert errors("latency_ms", upper=0) == [
        ("pruner.options.upper", "upper 0 prunes every trial: latency_ms lies in (0, inf]")
    ]
    assert errors("params", upper=0.0)[0][0] == "pruner.options.upper"
    assert errors("params", upper=1.0) == errors("batch_latency_ms", upper=0.5) == []


ROOT = Path(__file__).resolve().parent.parent

GOOD, BAD = 0.9, 0.1


def report_epochs(trial: optuna.Trial, values: list[float]) -> list[int]:
    """Reports ``values`` as epochs 1, 2, ... (as a worker does); the epochs at which the
    pruner said to prune (the trial goes on, so every epoch is asked)."""
    pruned = []
    for epoch, value in enumerate(values, start=1):
        trial.report(value, epoch)
        if trial.should_prune():
            pruned.append(epoch)
    return pruned


def prune_epochs(
    pruner: optuna.pruners.BasePruner, finished: int = 3, epochs: int = 10
) -> list[int]:
    """The epochs at which a trial worse than ``finished`` earlier ones would be pruned."""
    study = optuna.create_study(direction="maximize", pruner=pruner)
    for _ in range(finished):
        trial = study.ask()
        report_epochs(trial, [GOOD] * epochs)
        study.tell(trial, GOOD)
    return report_epochs(study.ask(), [BAD] * epochs)


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("median", {"n_startup_trials": 0}),
        ("percentile", {"n_startup_trials": 0}),
        ("threshold", {"lower": 0.5}),
    ],
)
@pytest.mark.parametrize("warmup", [0, 1, 2, 4])
def test_n_warmup_steps_epochs_run_unjudged_and_the_next_can_prune(
    name: str, options: dict, warmup: int
) -> None:
    # Optuna counts steps from 0; epochs count from 1: n_warmup_steps: 1 protected nothing.
    pruner = build_pruner(name, {**options, "n_warmup_steps": warmup})
    assert prune_epochs(pruner) == list(range(warmup + 1, 11))


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("median", {"n_startup_trials": 0}),
        ("percentile", {"n_startup_trials": 0}),
        ("threshold", {"lower": 0.5}),
    ],
)
def test_interval_steps_checks_from_the_first_epoch_after_the_warmup(
    name: str, options: dict
) -> None:
    pruner = build_pruner(name, {**options, "n_warmup_steps": 2, "interval_steps": 3})
    assert prune_epochs(pruner) == [3, 6, 9]
    assert prune_epochs(build_pruner(name, {**options, "interval_steps": 2})) == [1, 3, 5, 7, 9]


def test_digits_quick_never_prunes_within_its_two_warmup_epochs() -> None:
    spec = load_spec(ROOT / "search_spaces" / "digits_quick.yaml")
    assert spec.pruner_or_default.options["n_warmup_steps"] == 2
    pruner = build_pruner(spec.pruner_or_default.name, spec.pruner_or_default.options)
    assert prune_epochs(pruner, finished=3, epochs=6)[0] == 3


@pytest.mark.parametrize(("startup", "first"), [(0, 2), (1, 2), (2, 3), (4, 5)])
def test_wilcoxon_n_startup_steps_epochs_run_unjudged(startup: int, first: int) -> None:
    # Optuna prunes once n_startup_steps epochs are paired with the best trial's (at epoch
    # k, not after it), and never with fewer than 2.
    pruner = build_pruner("wilcoxon", {"p_threshold": 0.5, "n_startup_steps": startup})
    assert prune_epochs(pruner, finished=1)[0] == first


def test_successive_halving_judges_a_rung_of_r_epochs_after_r_epochs() -> None:
    # Not translated: Optuna judges rung 0 at step min_resource, here after that many epochs.
    pruner = build_pruner("successive_halving", {"min_resource": 2, "reduction_factor": 2})
    assert prune_epochs(pruner)[0] == 2


def hyperband_brackets(pruner: optuna.pruners.BasePruner, epochs: int = 8) -> int:
    """The brackets Hyperband settles on once a trial of ``epochs`` epochs finished."""
    prune_epochs(pruner, finished=1, epochs=epochs)
    assert isinstance(pruner, optuna.pruners.HyperbandPruner)
    return pruner._n_brackets  # type: ignore[return-value]


def test_hyperband_auto_max_resource_is_the_trials_epochs() -> None:
    # 8 epochs, factor 3: floor(log3(8)) + 1 = 2 brackets; Optuna's auto (9) made 3.
    assert hyperband_brackets(build_pruner("hyperband", {}, epochs=8)) == 2
    assert hyperband_brackets(build_pruner("hyperband", {})) == 2  # from the finished trial
    assert hyperband_brackets(build_pruner("hyperband", {}, epochs=9)) == 3
    explicit = build_pruner("hyperband", {"max_resource": 27}, epochs=8)
    assert hyperband_brackets(explicit) == 4


@pytest.mark.parametrize(
    ("overrides", "epochs"),
    [
        ({}, 10),  # TrialConfig's default
        ({"fixed": {"epochs": 6}}, 6),
        ({"params": {"epochs": {"type": "int", "low": 2, "high": 11, "step": 3}}}, 11),
        ({"params": {"epochs": {"type": "categorical", "choices": [3, 8, 5]}}}, 8),
        (
            {
                "params": {
                    "optimizer": {"type": "categorical", "choices": ["adam", "sgd"]},
                    "epochs": {"type": "int", "low": 2, "high": 6, "when": {"optimizer": "sgd"}},
                }
            },
            10,  # adam trials train the default
        ),
    ],
)
def test_trial_epochs_is_the_most_a_trial_trains(overrides: dict, epochs: int) -> None:
    assert trial_epochs(load_spec({"name": "x", **overrides})) == epochs


def test_trial_epochs_of_a_stored_step_that_misses_high_is_the_last_step() -> None:
    # Refused at submit since; a study stored before still builds its pruner.
    stepped = {"type": "int", "low": 2, "high": 12, "step": 3}
    stored = StudySpec.model_validate({"name": "x", "params": {"epochs": stepped}})
    assert trial_epochs(stored) == 11


@pytest.mark.parametrize("name", PRUNERS.names())
def test_every_documented_number_default_reaches_optuna(name: str) -> None:
    entry = PRUNERS.get(name)
    options = {"lower": 0.5} if name == "threshold" else {}
    pruner = build_pruner(name, options)
    translated = {"n_warmup_steps", "n_startup_steps"}  # counted from epoch 1 (tests above)
    for option, info in entry.options.model_fields.items():
        default = info.get_default()
        if option in options or not isinstance(default, int | float):  # None, "auto"
            continue
        assert getattr(pruner, f"_{option}") == default + (option in translated), option
