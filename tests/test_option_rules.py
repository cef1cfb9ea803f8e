"""Tests of ``APPLIES_WHEN``: an entry option that matters only for some values of another
option of its entry is searched only where it applies, and refused where it never does.

Found by exploratory testing: ``beta`` of ``class_weights`` beside the default ``weighting:
inverse``, ``freeze_k`` beside ``freeze: none`` and ``nesterov`` beside ``momentum: 0``
were accepted, even searched, and trained exactly as without them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import optuna
import pytest
from pydantic import Field

from automl.catalog import REGISTRIES
from automl.registry import AppliesWhen, Entry, EntryOptions
from automl.samplers import SAMPLERS
from automl.sampling import grid_size, iter_cells
from automl.space import suggest
from automl.spec import SpecError, StudySpec, load_spec, validate_spec
from automl.train.augment.base import AugmentOptions
from automl.train.optim import SCHEDULERS
from tests.conftest import tiny_spec_data
from tests.data.conftest import write_class_folder

CLASS_WEIGHTS = {"imbalance": "class_weights"}
WEIGHTING = {"type": "categorical", "choices": ["inverse", "effective_number"]}
BETA = {"type": "float", "low": 0.9, "high": 0.99}
FREEZE_K = {"type": "int", "low": 1, "high": 2}
FLAGS = {"type": "categorical", "choices": [True, False]}


def spec_errors(data: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(SpecError) as info:
        load_spec({"name": "x", **data})
    return {error.path: error.msg for error in info.value.errors}


def stored_under(spec: StudySpec, space_rules: int) -> StudySpec:
    """``spec`` as a study submitted under ``space_rules`` reads it back."""
    return StudySpec.model_validate_json(
        json.dumps(spec.model_dump(mode="json") | {"space_rules": space_rules})
    )


def random_trials(spec: StudySpec, count: int = 40) -> list[tuple[dict[str, Any], Any]]:
    """``(params, config)`` of ``count`` trials a random sampler suggests for ``spec``."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trials = []
    for _ in range(count):
        trial = study.ask()
        config = suggest(trial, spec, seed=0)
        trials.append((trial.params, config))
        study.tell(trial, 0.5)
    return trials


# --- refused where it never applies ---------------------------------------------------------


def test_beta_beside_the_default_inverse_weighting_is_refused() -> None:
    message = (
        "'beta' applies only where weighting is effective_number (weighting is inverse, its "
        "default), so it never applies"
    )
    assert spec_errors({"fixed": {**CLASS_WEIGHTS, "beta": 0.9}}) == {"fixed.beta": message}
    assert spec_errors({"fixed": CLASS_WEIGHTS, "params": {"beta": BETA}}) == {
        "params.beta": message
    }
    fixed = {**CLASS_WEIGHTS, "weighting": "inverse", "class_weights.beta": 0.9}
    assert spec_errors({"fixed": fixed}) == {
        "fixed.class_weights.beta": "'class_weights.beta' applies only where weighting is "
        "effective_number (weighting is fixed at inverse), so it never applies"
    }
    fixed = {**CLASS_WEIGHTS, "weighting": "effective_number", "beta": 0.9}
    assert load_spec({"name": "x", "fixed": fixed}).fixed == fixed


def test_freeze_k_beside_a_freeze_other_than_first_k_is_refused() -> None:
    assert spec_errors({"fixed": {"freeze_k": 2}}) == {
        "fixed.freeze_k": "'freeze_k' applies only where freeze is first_k (freeze is none, "
        "its default), so it never applies"
    }
    never = {"type": "categorical", "choices": ["none", "backbone"]}
    assert spec_errors({"params": {"freeze": never, "freeze_k": FREEZE_K}}) == {
        "params.freeze_k": "'freeze_k' applies only where freeze is first_k (freeze is "
        "searched among none, backbone), so it never applies"
    }
    fixed = {"model": "resnet18", "resnet18.freeze": "first_k", "resnet18.freeze_k": 2}
    assert load_spec({"name": "x", "fixed": fixed}).fixed == fixed


def test_backbone_lr_mult_beside_a_frozen_backbone_is_refused() -> None:
    assert spec_errors({"fixed": {"freeze": "backbone", "backbone_lr_mult": 0.1}}) == {
        "fixed.backbone_lr_mult": "'backbone_lr_mult' applies only where freeze is none or "
        "first_k (freeze is fixed at backbone), so it never applies"
    }


def test_nesterov_beside_a_momentum_of_zero_is_refused() -> None:
    fixed = {"optimizer": "sgd", "momentum": 0.0, "nesterov": True}
    assert spec_errors({"fixed": fixed}) == {
        "fixed.nesterov": "'nesterov' applies only where momentum is above 0 (momentum is "
        "fixed at 0.0), so it never applies"
    }
    zero = {"type": "categorical", "choices": [0.0]}
    params = {"momentum": zero, "nesterov": FLAGS}
    errors = spec_errors({"fixed": {"optimizer": "sgd"}, "params": params})
    assert errors == {
        "params.nesterov": "'nesterov' applies only where momentum is above 0 (momentum is "
        "searched among 0.0), so it never applies"
    }
    # A range from 0 holds momenta either way: nesterov is searched throughout.
    params["momentum"] = {"type": "float", "low": 0.0, "high": 0.9}
    spec = load_spec({"name": "x", "fixed": {"optimizer": "sgd"}, "params": params})
    assert spec.conditions("nesterov") == {}


def test_an_invalid_value_of_the_option_named_is_reported_once() -> None:
    assert spec_errors({"fixed": {"freeze": "thaw", "freeze_k": 2}}) == {
        "fixed.freeze": """Input should be 'none', 'backbone' or 'first_k' (got "thaw")"""
    }


def test_a_when_that_rules_the_condition_out_is_refused() -> None:
    freeze = {"type": "categorical", "choices": ["none", "first_k"]}
    freeze_k = {**FREEZE_K, "when": {"freeze": "none"}}
    assert spec_errors({"params": {"freeze": freeze, "freeze_k": freeze_k}}) == {
        "params.freeze_k": "'freeze_k' applies only where freeze is first_k, and is searched "
        "only where freeze is one of ['none'], so it never applies"
    }


def test_a_grid_whose_conditions_form_a_cycle_is_refused_not_crashed() -> None:
    # freeze_k applies where freeze is first_k; this freeze applies where freeze_k is 1.
    params = {
        "freeze": {"type": "categorical", "choices": ["none", "first_k"], "when": {"freeze_k": 1}},
        "freeze_k": {"type": "categorical", "choices": [1, 2]},
    }
    grid = {"sampler": {"name": "grid"}, "budget": {"n_trials": 2}, "params": params}
    assert spec_errors(grid) == {"params": "conditions form a cycle: freeze -> freeze_k -> freeze"}


# --- searched only where it applies ---------------------------------------------------------


def test_beta_is_searched_only_where_weighting_is_effective_number() -> None:
    # beta is listed first: its condition puts weighting before it.
    params = {"beta": BETA, "weighting": WEIGHTING}
    spec = load_spec({"name": "x", "fixed": CLASS_WEIGHTS, "params": params})
    assert spec.conditions("beta") == {"weighting": ["effective_number"]}
    assert spec.param_order() == ["weighting", "beta"]
    trials = random_trials(spec)
    assert {params["weighting"] for params, _ in trials} == {"inverse", "effective_number"}
    for params, config in trials:
        assert ("beta" in params) == (params["weighting"] == "effective_number"), params
        assert config.imbalance.options["beta"] == params.get("beta", 0.999)


def test_nesterov_is_searched_only_with_sgd_and_a_momentum_above_zero() -> None:
    params = {
        "optimizer": {"type": "categorical", "choices": ["sgd", "rmsprop"]},
        "momentum": {"type": "categorical", "choices": [0.0, 0.9]},
        "nesterov": FLAGS,
    }
    spec = load_spec({"name": "x", "params": params})
    assert spec.conditions("nesterov") == {"optimizer": ["sgd"], "momentum": [0.9]}
    for params, _ in random_trials(spec):
        applies = params["optimizer"] == "sgd" and params["momentum"] > 0
        assert ("nesterov" in params) == applies, params


def test_entries_whose_own_value_rules_the_option_out_imply_no_selector_value() -> None:
    # cnn keeps freeze: none, so freeze_k can only ever apply to resnet18.
    model = {"type": "categorical", "choices": ["cnn", "rnn", "resnet18"]}
    fixed = {"resnet18.freeze": "first_k"}
    spec = load_spec(
        {"name": "x", "fixed": fixed, "params": {"model": model, "freeze_k": FREEZE_K}}
    )
    assert spec.conditions("freeze_k") == {"model": ["resnet18"]}
    for params, _ in random_trials(spec):
        assert ("freeze_k" in params) == (params["model"] == "resnet18"), params
    assert stored_under(spec, 3).conditions("freeze_k") == {"model": ["cnn", "resnet18"]}


def test_grid_cells_count_an_option_only_where_it_applies() -> None:
    params = {
        "freeze": {"type": "categorical", "choices": ["none", "backbone", "first_k"]},
        "freeze_k": {"type": "int", "low": 1, "high": 3},
        "backbone_lr_mult": {"type": "categorical", "choices": [0.5, 1.0]},
    }
    data = {"sampler": {"name": "grid"}, "budget": {"n_trials": 9}, "params": params}
    spec = load_spec({"name": "x", **data})
    cells = list(iter_cells(spec))
    # none: 2 multipliers; backbone: nothing else applies; first_k: 3 stages x 2 multipliers.
    assert len(cells) == grid_size(spec) == 2 + 1 + 6
    assert [cell for cell in cells if cell["freeze"] == "backbone"] == [{"freeze": "backbone"}]
    assert all("freeze_k" not in cell for cell in cells if cell["freeze"] != "first_k")
    # A grid study submitted before the rule keeps the cells its tickets were issued by.
    old = stored_under(spec, 3)
    assert grid_size(old) == 3 * 3 * 2
    assert old.conditions("freeze_k") == old.conditions("backbone_lr_mult") == {}


MAGNITUDE = {"type": "categorical", "choices": [3, 9, 15]}


def test_an_augmentation_option_beside_its_p_of_zero_is_refused() -> None:
    # Found by exploratory testing: mixup.alpha was sampled and recorded in every trial
    # while mixup.p stayed at its default 0, which turns mixup off.
    alpha = {"type": "float", "low": 0.1, "high": 1.0}
    assert spec_errors({"params": {"mixup.alpha": alpha}}) == {
        "params.mixup.alpha": "'mixup.alpha' applies only where mixup.p is above 0 (mixup.p "
        "is 0.0, its default), so it never applies"
    }
    fixed = {"randaugment.p": 0.0, "randaugment.magnitude": 20}
    assert spec_errors({"fixed": fixed}) == {
        "fixed.randaugment.magnitude": "'randaugment.magnitude' applies only where "
        "randaugment.p is above 0 (randaugment.p is fixed at 0.0), so it never applies"
    }
    fixed["randaugment.p"] = 0.5
    assert load_spec({"name": "x", "fixed": fixed}).fixed == fixed
    # A range of p holds values above 0 almost everywhere: the option is searched throughout.
    params = {"mixup.p": {"type": "float", "low": 0.0, "high": 1.0}, "mixup.alpha": alpha}
    assert load_spec({"name": "x", "params": params}).conditions("mixup.alpha") == {}


def test_an_augmentation_option_is_searched_only_where_its_p_is_above_zero() -> None:
    params = {"randaugment.p": {"type": "categorical", "choices": [0.0, 1.0]}}
    params["randaugment.magnitude"] = MAGNITUDE
    spec = load_spec({"name": "x", "params": params})
    assert spec.conditions("randaugment.magnitude") == {"randaugment.p": [1.0]}
    for trial_params, _ in random_trials(spec):
        applies = trial_params["randaugment.p"] > 0
        assert ("randaugment.magnitude" in trial_params) == applies, trial_params
    grid = load_spec(
        {"name": "x", "sampler": {"name": "grid"}, "budget": {"n_trials": 4}, "params": params}
    )
    # p = 0 is one configuration, not one per magnitude it ignores.
    assert list(iter_cells(grid)) == [
        {"randaugment.p": 0.0},
        *({"randaugment.p": 1.0, "randaugment.magnitude": m} for m in (3, 9, 15)),
    ]
    # A study submitted before the rule keeps the cells its tickets were issued by.
    old = stored_under(grid, 4)
    assert grid_size(old) == 6
    assert old.conditions("randaugment.magnitude") == {}


def test_an_enqueued_config_must_give_the_option_its_condition_names() -> None:
    params = {"freeze": {"type": "categorical", "choices": ["none", "first_k"]}}
    params["freeze_k"] = FREEZE_K
    errors = spec_errors({"params": params, "enqueue": [{"freeze_k": 2}]})
    assert errors == {
        "enqueue[0].freeze_k": "applies only when freeze is one of ['first_k']: give freeze too"
    }
    spec = load_spec({"name": "x", "params": params, "enqueue": [{"freeze": "first_k"}]})
    assert spec.enqueue == [{"freeze": "first_k"}]


# --- declarations ---------------------------------------------------------------------------


TRANSFER_MODELS = ["cnn", "resnet18", "resnet34", "efficientnet_b0"]
TRANSFER_MODELS += ["mobilenet_v3_small", "mobilenet_v3_large"]
DECLARED = {
    ("imbalance", "class_weights"): {"beta": "weighting"},
    ("optimizers", "sgd"): {"nesterov": "momentum"},
    **{
        ("models", model): {
            "freeze_k": "freeze",
            "backbone_lr_mult": "freeze",
            "freeze_bn_stats": "freeze",
        }
        for model in TRANSFER_MODELS
    },
    **{
        ("datasets", source): {"val_fraction": "val_path", "test_fraction": "test_path"}
        for source in ("image_folder", "image_csv", "frame_sequences")
    },
}
"""Every declared condition: entry -> option -> the option it depends on (augmentations,
whose every option but ``p`` depends on ``p``, apart)."""


def test_the_declared_conditions_are_named_in_their_descriptions() -> None:
    declared = {}
    for kind, registry in REGISTRIES.items():
        for entry in registry.entries():
            rules = entry.options.APPLIES_WHEN
            if kind == "augmentations":
                assert {name: rule.option for name, rule in rules.items()} == {
                    name: "p" for name in entry.options.model_fields if name != "p"
                }, entry.name
                assert "change nothing" in str(entry.options.model_fields["p"].description)
                continue
            if rules:
                declared[(kind, entry.name)] = {name: rule.option for name, rule in rules.items()}
            for name, rule in rules.items():
                text = entry.options.model_fields[name].description or ""
                assert rule.option in text, (kind, entry.name, name, text)
    assert declared == DECLARED


def test_a_condition_that_names_no_option_or_value_fails_where_it_is_declared() -> None:
    with pytest.raises(TypeError, match=r"'b': 'z' is no value of 'a'"):

        class _NoSuchValue(EntryOptions):
            APPLIES_WHEN: ClassVar = {"b": AppliesWhen("a", ("z",))}
            a: bool = Field(False, description="A flag.")
            b: int = Field(1, description="A count.")

    with pytest.raises(TypeError, match=r"'b' -> 'c' names no other option"):

        class _NoSuchOption(EntryOptions):
            APPLIES_WHEN: ClassVar = {"b": AppliesWhen("c", (True,))}
            b: int = Field(1, description="A count.")


def test_a_flag_is_no_number_to_a_condition() -> None:
    rule = AppliesWhen("a", (1,))
    assert rule.admits(1) and rule.admits(1.0)
    assert not rule.admits(True)
    assert not AppliesWhen("a", above=0).admits(True)


class _RuledSamplerOptions(EntryOptions):
    """A sampler whose ``swap`` matters only while ``cross`` is above 0."""

    APPLIES_WHEN: ClassVar = {"swap": AppliesWhen("cross", above=0)}
    cross: float = Field(0.0, ge=0, le=1, description="Crossover rate.")
    swap: float = Field(0.5, ge=0, le=1, description="Swap rate; only with cross above 0.")


def test_an_entry_option_given_where_its_condition_fails_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    entry = Entry(
        "ruled",
        lambda options, seed: optuna.samplers.RandomSampler(seed=seed),
        _RuledSamplerOptions,
        "A sampler for this test.",
    )
    monkeypatch.setitem(SAMPLERS._entries, "ruled", entry)
    errors = spec_errors({"sampler": {"name": "ruled", "options": {"swap": 0.2}}})
    assert errors == {
        "sampler.options.swap": "'swap' applies only where cross is above 0 (cross is 0.0, "
        "its default), so it never applies"
    }
    options = {"swap": 0.2, "cross": 0}
    assert spec_errors({"sampler": {"name": "ruled", "options": options}}) == {
        "sampler.options.swap": "'swap' applies only where cross is above 0 (cross is 0), "
        "so it never applies"
    }
    options["cross"] = 0.5
    assert load_spec({"name": "x", "sampler": {"name": "ruled", "options": options}})


def test_a_split_fraction_beside_the_split_s_own_folder_is_refused(data_root: Path) -> None:
    write_class_folder(data_root / "pets" / "train", {"a": 4, "b": 4})
    write_class_folder(data_root / "pets" / "val", {"a": 2, "b": 2}, seed=1)
    given = {"path": "pets/train", "val_path": "pets/val"}
    dataset = {"source": "image_folder", "options": {**given, "val_fraction": 0.3}}
    with pytest.raises(SpecError) as refused:
        validate_spec(tiny_spec_data(dataset=dataset))
    [error] = refused.value.errors
    assert error.path == "dataset.options.val_fraction"
    assert error.msg.startswith("'val_fraction' applies only where val_path is null")
    dataset = {"source": "image_folder", "options": given}
    assert validate_spec(tiny_spec_data(dataset=dataset)).dataset.options == given


def test_an_augmentation_keeps_a_rule_it_declares_itself() -> None:
    class _ModedOptions(AugmentOptions):
        APPLIES_WHEN: ClassVar = {"strength": AppliesWhen("mode", ("b",))}
        mode: str = Field("a", description="A mode.")
        strength: float = Field(0.5, description="Only with mode b.")

    rules = _ModedOptions.APPLIES_WHEN
    assert rules["strength"] == AppliesWhen("mode", ("b",))
    assert rules["mode"] == AppliesWhen("p", above=0, since=5)


def test_a_plugin_schedule_without_defaults_breaks_no_other_spec(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Whether a schedule warms up by itself is read by building it with its defaults:
    one that cannot be built so counts as one that does not."""

    class _PeriodOptions(EntryOptions):
        period: int = Field(description="Required: no default.")

    entry = Entry("periodic", lambda options: lambda progress: 1.0, _PeriodOptions, "A test.")
    monkeypatch.setitem(SCHEDULERS._entries, "periodic", entry)
    assert load_spec({"name": "x", "fixed": {"lr": 0.01}}).fixed == {"lr": 0.01}
    warmup = {"type": "float", "low": 0.0, "high": 1.0}
    scheduler = {"type": "categorical", "choices": ["periodic", "one_cycle"]}
    spec = load_spec({"name": "x", "params": {"scheduler": scheduler, "warmup_epochs": warmup}})
    assert spec.conditions("warmup_epochs") == {"scheduler": ["periodic"]}
