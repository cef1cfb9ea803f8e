"""How a spec is told that a name it fixes or searches does not resolve: an option of
entries the study cannot choose is named as such, not as an unknown (misspelt) name."""

from __future__ import annotations

from pathlib import Path

import pytest

from automl.spec import FieldError, SpecError, load_spec, spec_from_text
from tests.api.conftest import close_client, make_client

BETA1_WITH_SGD = """
name: x
params:
  beta1: {type: float, low: 0.8, high: 0.99}
  optimizer: {type: categorical, choices: [sgd]}
"""
BETA1_MESSAGE = (
    "'beta1' is an option of optimizer adam, adamw, which this study cannot choose "
    "(optimizer: sgd); fix or search 'optimizer' to include one of them, or drop 'beta1'"
)


def spec_errors(text: str) -> list[FieldError]:
    """The errors of loading the YAML ``text`` as the API reads a request body."""
    with pytest.raises(SpecError) as info:
        spec_from_text(text, is_json=False)
    return info.value.errors


def test_an_option_of_entries_the_study_cannot_choose_says_so() -> None:
    errors = spec_errors(BETA1_WITH_SGD)
    assert [(error.path, error.msg) for error in errors] == [("params.beta1", BETA1_MESSAGE)]


def test_a_bare_option_beside_the_default_entry_names_the_default() -> None:
    """``momentum`` belongs to sgd and rmsprop; a study that leaves the optimizer alone
    trains adam."""
    errors = spec_errors("name: x\nfixed: {momentum: 0.9}\n")
    assert [(error.path, error.msg) for error in errors] == [
        (
            "fixed.momentum",
            "'momentum' is an option of optimizer rmsprop, sgd, which this study cannot "
            "choose (optimizer: adam); fix or search 'optimizer' to include one of them, "
            "or drop 'momentum'",
        )
    ]


def test_an_option_of_one_entry_asks_to_include_it() -> None:
    errors = spec_errors("name: x\nfixed: {nesterov: false}\n")
    assert [(error.path, error.msg) for error in errors] == [
        (
            "fixed.nesterov",
            "'nesterov' is an option of optimizer sgd, which this study cannot choose "
            "(optimizer: adam); fix or search 'optimizer' to include it, or drop 'nesterov'",
        )
    ]


def test_a_misspelt_name_is_still_unknown_with_a_suggestion() -> None:
    errors = spec_errors("name: x\nfixed: {wdth: 16}\n")
    assert errors[0].path == "fixed.wdth"
    assert errors[0].msg.startswith("unknown hyperparameter 'wdth' (did you mean 'width'?)")


def test_the_api_refuses_it_as_a_422_at_the_field(sqlite_url: str, tmp_path: Path) -> None:
    client = make_client(sqlite_url, tmp_path / "artifacts")
    try:
        response = client.post(
            "/studies", content=BETA1_WITH_SGD, headers={"content-type": "application/yaml"}
        )
    finally:
        close_client(client)
    assert response.status_code == 422, response.text
    assert [(error["loc"], error["msg"]) for error in response.json()["detail"]] == [
        (["body", "params", "beta1"], BETA1_MESSAGE)
    ]


def test_a_shared_option_value_that_only_some_entries_take_names_them_and_the_way_out() -> None:
    """Found by a tester: ``stem_stride: 4`` with resnet18 and mobilenet_v3_small was "Input
    should be 'auto', 1 or 2", though resnet18 takes 4 (only MobileNet does not)."""
    models = {"type": "categorical", "choices": ["resnet18", "mobilenet_v3_small"]}
    for where, data in (
        ("fixed.stem_stride", {"fixed": {"stem_stride": 4}}),
        (
            "params.stem_stride.choices[1]",
            {"params": {"stem_stride": {"type": "categorical", "choices": [1, 4]}}},
        ),
    ):
        spec = {"name": "x", **data}
        spec["params"] = {"model": models, **spec.get("params", {})}
        with pytest.raises(SpecError) as raised:
            load_spec(spec)
        assert str(raised.value) == (
            f"{where}: Input should be 'auto', 1 or 2 (got 4) for mobilenet_v3_small; to set "
            "it for resnet18 alone, name it resnet18.stem_stride"
        )
    fixed = load_spec(
        {"name": "x", "params": {"model": models}, "fixed": {"resnet18.stem_stride": 4}}
    )
    assert fixed.fixed == {"resnet18.stem_stride": 4}
