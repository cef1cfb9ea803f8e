"""Tests of the catalog: every registry described from the code, plugins, README tables."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from automl.catalog import REGISTRIES, catalog, describe_registry, markdown_reference
from automl.cli.output import entries_text
from automl.train.trial_config import GENERAL, PIPELINES, SELECTABLE

ROOT = Path(__file__).resolve().parents[1]


def test_catalog_lists_every_entry_of_every_registry_with_its_options() -> None:
    described = catalog()["registries"]
    assert set(described) == set(REGISTRIES)
    for kind, registry in REGISTRIES.items():
        entries = {entry["name"]: entry for entry in described[kind]}
        assert set(entries) == set(registry.names()), kind
        for name, entry in entries.items():
            options = registry.get(name).options.model_fields
            assert [option["name"] for option in entry["options"]] == list(options)
            assert entry["description"], f"{kind} {name!r} needs a description"


PROMISED = {
    "datasets": {"digits", "image_folder", "image_csv", "mnist", "fashion_mnist", "cifar10"}
    | {"cifar100", "frame_sequences"},
    "models": {"cnn", "resnet18", "resnet34", "mobilenet_v3_small", "mobilenet_v3_large"}
    | {"efficientnet_b0", "fast_resnet", "rnn", "cnn_rnn", "frame_rnn"},
    "optimizers": {"sgd", "adam", "adamw", "rmsprop"},
    "schedulers": {"one_cycle", "cosine", "step", "constant"},
    "losses": {"cross_entropy", "focal"},
    "augmentations": {"hflip", "resized_crop", "pad_crop", "affine", "color_jitter"}
    | {"randaugment", "trivialaugment", "erasing", "mixup", "cutmix"},
    "imbalance": {"none", "oversample", "undersample", "class_weights", "focal", "gan"},
    "metrics": {"accuracy", "balanced_accuracy", "macro_f1", "worst_class_recall", "params"}
    | {"latency_ms"},
    "samplers": {"tpe", "gp", "random", "grid", "cmaes", "brute_force", "auto", "nsga2"},
    "pruners": {"median", "hyperband", "successive_halving", "none"},
}
"""What the README and the issues promise users by name, written out by hand: the catalog
is generated from the registries, so only a list kept apart from them notices an entry
or a whole registry going missing."""


def test_every_promised_entry_is_registered() -> None:
    assert set(REGISTRIES) == set(PROMISED)
    for kind, names in PROMISED.items():
        missing = names - set(REGISTRIES[kind].names())
        assert not missing, f"{kind} lacks {sorted(missing)}"


def test_selectable_options_say_which_choice_they_apply_under() -> None:
    [cnn] = [entry for entry in describe_registry("models") if entry["name"] == "cnn"]
    width = next(option for option in cnn["options"] if option["name"] == "width")
    assert width["applies_when"] == {"model": "cnn"}
    assert width["range"] == {"ge": 1, "le": 512}
    [hflip] = [entry for entry in describe_registry("augmentations") if entry["name"] == "hflip"]
    assert hflip["options"][0]["spec_name"] == "hflip.p"


def test_metrics_say_their_direction_and_bounds() -> None:
    """Found by a plugin author: an objective's direction and a threshold's range were
    nowhere to read."""
    metrics = {entry["name"]: entry for entry in describe_registry("metrics")}
    assert (metrics["accuracy"]["direction"], metrics["accuracy"]["bounds"]) == (
        "maximize",
        [0.0, 1.0],
    )
    assert (metrics["loss"]["direction"], metrics["loss"]["bounds"]) == ("minimize", [0.0, None])
    assert "direction" not in describe_registry("models")[0]


def test_no_entry_option_shadows_a_general_hyperparameter_or_selector() -> None:
    reserved = {*GENERAL, *SELECTABLE}
    for kind, registry in {**SELECTABLE, **PIPELINES}.items():
        for entry in registry.entries():
            clash = reserved & set(entry.options.model_fields)
            assert not clash, f"{kind} {entry.name!r} options shadow {clash}"


def test_a_bare_option_name_belongs_to_one_registry() -> None:
    """A bare spec name (``width``, ``momentum``) must resolve without qualification in any
    study, so no two selectable registries declare the same option name."""
    owners: dict[str, set[str]] = {}
    for group, registry in SELECTABLE.items():
        for entry in registry.entries():
            for option in entry.options.model_fields:
                owners.setdefault(option, set()).add(group)
    shared = {option: sorted(groups) for option, groups in owners.items() if len(groups) > 1}
    assert not shared, f"option names declared by several registries: {shared}"


def test_readme_reference_tables_are_generated_from_the_code() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    begin, end = "<!-- registries:begin -->\n", "<!-- registries:end -->"
    section = readme[readme.index(begin) + len(begin) : readme.index(end)]
    assert section == markdown_reference(), (
        "README.md is stale: regenerate its reference tables with `automl list --markdown`"
    )


def test_descriptions_are_whole_and_bounds_and_types_readable() -> None:
    """Once ``gan``'s description stopped mid-parenthesis, a seed's bound read
    ``<=4.29497e+09`` and ``size``'s type ``any``."""
    for kind in REGISTRIES:
        for entry in describe_registry(kind):
            text = entry["description"]
            assert text.count("(") == text.count(")"), (kind, entry["name"], text)
    listed = entries_text("datasets", describe_registry("datasets"))
    assert "<=4294967295" in listed and "e+09" not in listed
    assert "int or [int, int]" in listed


def test_readme_lists_every_general_hyperparameter() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    start = readme.index("- a **general** training hyperparameter:")
    listed = readme[start : readme.index(";", start)].split(":", 1)[1]
    assert [name.strip(" `\n") for name in listed.split(",")] == list(GENERAL)


PLUGIN_MODULE = """
    from pydantic import Field
    from torch import nn

    from automl.models import MODELS
    from automl.registry import EntryOptions


    class TinyMlpOptions(EntryOptions):
        hidden: int = Field(16, ge=1, le=256, description="Hidden units.")


    @MODELS.register("tiny_mlp", options=TinyMlpOptions)
    def build(opts, input_shape, num_classes):
        '''A one-hidden-layer perceptron from a plugin.'''
        size = 1
        for side in input_shape:
            size *= side
        hidden = nn.Linear(size, opts.hidden)
        return nn.Sequential(nn.Flatten(), hidden, nn.ReLU(), nn.Linear(opts.hidden, num_classes))
"""


@pytest.fixture
def plugin_dir(tmp_path: Path) -> Path:
    """A site folder with an installed-looking plugin package and a broken one."""
    info = tmp_path / "acme_models-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-models\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[automl.models]\ntiny = acme_models\n[automl.losses]\nbroken = acme_broken\n"
    )
    (tmp_path / "acme_models.py").write_text(textwrap.dedent(PLUGIN_MODULE))
    (tmp_path / "acme_broken.py").write_text("import no_such_module_here\n")
    return tmp_path


def run_automl(plugin_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(plugin_dir), str(ROOT)])}
    return subprocess.run(
        [sys.executable, "-m", "automl", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=plugin_dir,
        timeout=120,
    )


def test_plugins_are_loaded_listed_with_their_package_and_usable_in_a_study(
    plugin_dir: Path,
) -> None:
    listed = run_automl(plugin_dir, "list", "--json")
    assert listed.returncode == 0, listed.stderr
    data = json.loads(listed.stdout)
    [tiny] = [entry for entry in data["registries"]["models"] if entry["name"] == "tiny_mlp"]
    assert tiny["source"] == "acme-models"
    assert tiny["options"][0]["name"] == "hidden"
    assert "ModuleNotFoundError" in data["plugin_errors"]["losses"]["broken"]
    assert "losses plugin" not in listed.stdout  # the warning goes to the log, not the JSON

    spec = plugin_dir / "plugin.yaml"
    spec.write_text(
        "name: plugin\nbudget: {n_trials: 1}\nsampler: {name: random, seed: 0}\n"
        "fixed: {model: tiny_mlp, hidden: 8, epochs: 1}\n"
    )
    ran = run_automl(plugin_dir, "run", str(spec), "--device", "cpu", "--json")
    assert ran.returncode == 0, ran.stderr
    [best] = json.loads(ran.stdout)["trials"]
    assert best["config"]["model"] == {"name": "tiny_mlp", "options": {"hidden": 8}}
    assert "broken" in ran.stderr  # a broken plugin is reported by name, not a crash
