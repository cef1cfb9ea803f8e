"""Everything a study can name, described from the registries themselves.

``GET /registries``, ``automl list`` and the README's reference tables are all generated
from here, so an entry is described once: in its options model and docstring.
"""

from __future__ import annotations

import math
from typing import Any

from automl.data import DATASETS
from automl.pruners import PRUNERS
from automl.registry import Registry, describe_options, range_text
from automl.samplers import SAMPLERS
from automl.train import METRICS
from automl.train.trial_config import PIPELINES, SELECTABLE, TrialConfig

REGISTRIES: dict[str, Registry[Any]] = {
    "datasets": DATASETS,
    "models": SELECTABLE["model"],
    "optimizers": SELECTABLE["optimizer"],
    "schedulers": SELECTABLE["scheduler"],
    "losses": SELECTABLE["loss"],
    "augmentations": PIPELINES["augment"],
    "imbalance": SELECTABLE["imbalance"],
    "metrics": METRICS,
    "samplers": SAMPLERS,
    "pruners": PRUNERS,
}
"""Every registry, by the plural name users look it up with."""

_SELECTOR_OF = {id(registry): group for group, registry in SELECTABLE.items()}


def load_plugins() -> dict[str, dict[str, str]]:
    """Loads third-party entries of every registry from their entry points.

    Returns:
        The plugins that failed, per registry: entry-point name -> error.
    """
    for registry in REGISTRIES.values():
        registry.load_plugins()
    return {kind: dict(r.plugin_errors) for kind, r in REGISTRIES.items() if r.plugin_errors}


def describe_registry(kind: str) -> list[dict[str, Any]]:
    """The entries of one registry with their options; an option of a selectable entry
    says which choice it applies under (``{"model": "cnn"}``).

    Raises:
        KeyError: If ``kind`` is not a registry.
    """
    registry = REGISTRIES[kind]
    selector = _SELECTOR_OF.get(id(registry))
    entries = registry.describe()
    for entry in entries:
        if registry is METRICS:  # what an objective and a threshold pruner need to know
            metric = METRICS.get(entry["name"]).factory
            entry["direction"] = metric.direction
            entry["bounds"] = [bound if math.isfinite(bound) else None for bound in metric.bounds]
        for option in entry["options"]:
            if selector is not None:
                option["applies_when"] = {selector: entry["name"]}
            elif kind == "augmentations":
                option["spec_name"] = f"{entry['name']}.{option['name']}"
    return entries


def describe_hyperparameters() -> list[dict[str, Any]]:
    """The general training hyperparameters (``lr``, ``epochs``...) and the selectors."""
    general = [
        vars(info)
        for info in describe_options(TrialConfig)
        if info.name not in ("dataset", *SELECTABLE, *PIPELINES)
    ]
    selectors = [
        {
            "name": group,
            "type": "categorical",
            "default": TrialConfig.model_fields[group].get_default().name,
            "choices": registry.names(),
            "range": {},
            "description": f"Which {registry.kind} to use.",
            "required": False,
        }
        for group, registry in SELECTABLE.items()
    ]
    return general + selectors


def catalog() -> dict[str, Any]:
    """Every registry and the general hyperparameters, for ``GET /registries``."""
    return {
        "hyperparameters": describe_hyperparameters(),
        "registries": {kind: describe_registry(kind) for kind in REGISTRIES},
        "plugin_errors": {
            kind: dict(registry.plugin_errors)
            for kind, registry in REGISTRIES.items()
            if registry.plugin_errors
        },
    }


def markdown_reference() -> str:
    """The README's reference tables: general hyperparameters, then every registry."""
    lines = [
        "| hyperparameter | type | default | description |",
        "| --- | --- | --- | --- |",
    ]
    for info in describe_hyperparameters():
        kind = " \\| ".join(map(str, info["choices"])) if info["choices"] else info["type"]
        lines.append(f"| `{info['name']}` | {kind} | `{info['default']}` | {info['description']} |")
    for kind in REGISTRIES:
        lines += ["", f"**{kind}**", "", "| name | description | options |", "| --- | --- | --- |"]
        for entry in describe_registry(kind):
            options = "<br>".join(_option_markdown(option) for option in entry["options"])
            lines.append(f"| `{entry['name']}` | {entry['description']} | {options or '-'} |")
    return "\n".join(lines) + "\n"


def _option_markdown(option: dict[str, Any]) -> str:
    name = option.get("spec_name") or option["name"]
    kind = " \\| ".join(map(str, option["choices"])) if option["choices"] else option["type"]
    bounds = range_text(option["range"], ", ", " ")
    detail = ", ".join(part for part in (kind, bounds, f"default `{option['default']}`") if part)
    return f"`{name}` ({detail}): {option['description']}"
