"""Model cards: what a trained model is, what it expects, how well it did, and its limits.

A card is JSON assembled from the trial's attributes when it is asked for, so it always
holds the latest of them (test metrics arrive once the study completes) and nothing about a
trial is stored twice. The one part only training can know, the worker records when a
trial completes (``model_input`` into ``automl.input``, ``library_versions`` into
``automl.libraries``): the input shape, how image files were turned into arrays, the
training split's normalization statistics and the dataset's fingerprint. For trials from
before that, ``trial_input`` loads the dataset again. A refit model's card is its trial's,
with the refit's test metrics and a ``refit`` section (``automl.delivery.refit``).

Preprocessing, exactly as training did it (``automl.data.decode`` and
``ImageData.normalize``):

1. decode the file, orient it by its EXIF tag, convert it to grayscale (``L``) or RGB
   (a JPEG much larger than the input decodes at a reduced scale, Pillow's ``draft``);
2. if its size differs, resize with bilinear filtering: ``fit: crop`` scales it to cover
   ``height x width`` and cuts the center (``ImageOps.fit``), ``pad`` scales it to fit
   inside and pads with black (``ImageOps.pad``); sources of fixed-size arrays (``digits``,
   ``mnist``, ``cifar10``...) count as ``crop`` to their own size;
3. as float32 ``(C, H, W)``: divide by 255, subtract ``mean`` and divide by ``std`` per
   channel.
"""

from __future__ import annotations

import functools
import importlib.metadata
import platform
from collections.abc import Mapping, Sequence
from typing import Any

from optuna.trial import FrozenTrial

from automl.data import DATASETS, ImageData, load_dataset
from automl.data.decode import Preprocess
from automl.data.files import ImageOptions
from automl.registry import BUILTIN_SOURCE
from automl.store import attrs
from automl.train.augment import AUGMENTATIONS
from automl.train.trial_config import SELECTABLE, TrialConfig, stored_config

CARD_FORMAT = "automl.model_card/1"
LIBRARIES = ("automl", "torch", "torchvision", "optuna", "numpy", "pillow", "safetensors")
"""Distributions whose versions a card records."""
FEW_SAMPLES = 20
"""Below this many evaluation images of a class, its scores are flagged as uncertain."""
NAMED_TIES = 5
"""Classes tied for the lowest or highest recall that the limits name; more are counted."""
NAMED_FEW = 20
"""Classes with few evaluation images that the limits name; more are counted (the
per-class scores name them all)."""


def preprocess_of(
    source: str, options: Mapping[str, Any], input_shape: Sequence[int]
) -> Preprocess:
    """How a dataset turns an image file into a uint8 array: the file sources' own options,
    else cover-and-crop to the sample's size in its channels (step 2 of the module).

    Args:
        source: The registered dataset name.
        options: Its options.
        input_shape: One sample's shape, ``(C, H, W)`` or ``(T, C, H, W)``.
    """
    parsed = DATASETS.get(source).parse_options(dict(options))
    if isinstance(parsed, ImageOptions):
        return parsed.preprocess
    channels, height, width = (int(size) for size in input_shape[-3:])
    return Preprocess(
        height=height, width=width, fit="crop", channels="grayscale" if channels == 1 else "rgb"
    )


def library_versions(config: TrialConfig | None = None) -> dict[str, str]:
    """Versions of Python and of the libraries that train and export models, and of the
    plugin packages whose entries ``config`` uses (its model, dataset, loss...)."""
    versions = dict(_library_versions())
    if config is not None:
        for package in sorted(_plugin_packages(config)):
            versions.setdefault(package, _version(package) or "unknown")
    return versions


def _plugin_packages(config: TrialConfig) -> set[str]:
    """The packages, other than automl, that registered an entry ``config`` uses."""
    used = [
        (DATASETS, config.dataset.source),
        *((SELECTABLE[group], getattr(config, group).name) for group in SELECTABLE),
        *((AUGMENTATIONS, name) for name in config.augment),
    ]
    return {
        registry.get(name).source
        for registry, name in used
        if name in registry and registry.get(name).source != BUILTIN_SOURCE
    }


@functools.cache
def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return None


@functools.cache
def _library_versions() -> tuple[tuple[str, str], ...]:
    # Read once per process: package metadata is slow to read and does not change.
    versions = [("python", platform.python_version())]
    versions += [(name, version) for name in LIBRARIES if (version := _version(name))]
    return tuple(versions)


def model_input(config: TrialConfig, data: ImageData) -> dict[str, Any]:
    """What a model trained on ``data`` takes, for its card (``automl.input``).

    Returns:
        ``shape`` (one sample), ``channels``, ``height``, ``width``, ``frames`` (None for
        still images), ``color`` and ``fit`` (the decoding), ``scale``, ``mean`` and
        ``std`` (the normalization) and ``dataset`` (source, options, fingerprint).
    """
    shape = [int(size) for size in data.input_shape]
    prep = preprocess_of(config.dataset.source, config.dataset.options, shape)
    return {
        "shape": shape,
        "channels": shape[-3],
        "height": shape[-2],
        "width": shape[-1],
        "frames": shape[0] if len(shape) == 4 else None,
        "color": prep.channels,
        "fit": prep.fit,
        "scale": 255.0,
        "mean": [float(value) for value in data.mean.tolist()],
        "std": [float(value) for value in data.std.tolist()],
        "dataset": {
            "source": config.dataset.source,
            "options": dict(config.dataset.options),
            "fingerprint": data.fingerprint,
        },
    }


def trial_config(trial: FrozenTrial) -> TrialConfig:
    """The trial's full configuration, as recorded (``stored_config``: its dataset options
    are not checked against the data, which a card does not read).

    Raises:
        LookupError: If the trial kept none (it never started training).
        pydantic.ValidationError: If it no longer validates.
    """
    raw = trial.user_attrs.get(attrs.CONFIG)
    if raw is None:
        raise LookupError(f"trial {trial.number} kept no configuration")
    return stored_config(raw)


def trial_input(trial: FrozenTrial, config: TrialConfig) -> dict[str, Any]:
    """The trial's ``model_input``: as recorded, or (older trials) from its dataset again.

    Raises:
        DatasetError: If an older trial's dataset cannot be loaded here.
        pydantic.ValidationError: If an older trial's dataset options no longer validate
            (its folder was removed).
    """
    recorded = trial.user_attrs.get(attrs.INPUT)
    if recorded is not None:
        return dict(recorded)
    return model_input(config, load_dataset(config.dataset.source, config.dataset.options))


def build_card(
    trial: FrozenTrial,
    *,
    study_id: int,
    study_name: str,
    metrics: Sequence[str],
    directions: Sequence[str],
    model_in: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The model card of a completed trial (JSON-ready).

    Args:
        trial: The trial, with its automl attributes.
        study_id: Its study.
        study_name: The study's name.
        metrics: The study's objective metrics.
        directions: Their directions.
        model_in: The trial's ``model_input`` (default: ``trial_input``).

    Raises:
        LookupError: If the trial kept no configuration.
    """
    user_attrs = trial.user_attrs
    config = trial_config(trial)
    model_in = dict(model_in if model_in is not None else trial_input(trial, config))
    dataset = model_in.pop("dataset", None)
    classes = [str(name) for name in user_attrs.get(attrs.CLASSES, [])]
    validation = user_attrs.get(attrs.METRICS) or {}
    test = user_attrs.get(attrs.TEST_METRICS)
    values = trial.values or []
    refit = user_attrs.get(attrs.REFIT)
    return {
        "format": CARD_FORMAT,
        "model": {
            "study_id": study_id,
            "study_name": study_name,
            "trial_number": trial.number,
            "architecture": config.model.name,
            "architecture_options": dict(config.model.options),
            "parameters": int(validation["params"]) if "params" in validation else None,
            "refit": refit is not None,
        },
        "refit": refit,
        "hyperparameters": config.model_dump(mode="json"),
        "epoch": user_attrs.get(attrs.BEST_EPOCH),
        "searched_params": dict(trial.params),
        "classes": classes,
        "input": {**model_in, "preprocessing": preprocessing_steps(model_in)},
        "objectives": [
            {"metric": metric, "direction": direction, "value": value}
            for metric, direction, value in zip(metrics, directions, values, strict=False)
        ],
        "metrics": {
            "validation": validation,
            "validation_per_class": user_attrs.get(attrs.PER_CLASS),
            "validation_confusion": user_attrs.get(attrs.CONFUSION),
            "validation_most_confused": user_attrs.get(attrs.MOST_CONFUSED),
            "test": test,
            "test_per_class": user_attrs.get(attrs.TEST_PER_CLASS),
            "test_confusion": user_attrs.get(attrs.TEST_CONFUSION),
            "test_most_confused": user_attrs.get(attrs.TEST_MOST_CONFUSED),
        },
        "dataset": dataset,
        "libraries": {"training": user_attrs.get(attrs.LIBRARIES)},
        "intended_use_and_limits": intended_use(
            classes,
            model_in,
            dataset,
            user_attrs.get(attrs.TEST_PER_CLASS) or user_attrs.get(attrs.PER_CLASS) or [],
            split="test" if user_attrs.get(attrs.TEST_PER_CLASS) else "validation",
            autocast=(user_attrs.get(attrs.NOTES) or {}).get("autocast")
            or ("bf16" if config.precision == "bf16" else None),
            precision=config.precision,
        ),
    }


def preprocessing_steps(model_in: Mapping[str, Any]) -> list[str]:
    """The preprocessing of one image file, as sentences (module docstring, steps 1-3)."""
    height, width = model_in["height"], model_in["width"]
    mode = "grayscale (Pillow mode L)" if model_in["channels"] == 1 else "RGB"
    # Width first, as image sizes (and automl's own messages) are written.
    box = f"{width}x{height} ({width} wide, {height} high)"
    resize = (
        f"scale to cover {box} (bilinear) and crop the center"
        if model_in["fit"] == "crop"
        else f"scale to fit inside {box} (bilinear) and pad with black"
    )
    frames = model_in.get("frames")
    layout = f"(T, C, H, W), the clip's {frames} frames in order" if frames else "(C, H, W)"
    each = "each frame: " if frames else ""
    return [
        f"{each}decode, orient by the EXIF tag, composite transparent pixels onto white, "
        f"convert to {mode}",
        f"if the size differs: {resize}",
        f"as float32 {layout}: divide by 255, then per channel subtract mean and divide by std",
    ]


def recall_gaps(per_class: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """How unevenly the model recognizes its classes (None without a per-class report).

    Classes without evaluation images (support 0) have no recall and are left out.

    Args:
        per_class: Per-class rows (``class``, ``recall``, ``support``) in class order.

    Returns:
        ``mean`` recall; ``lowest`` and ``highest``: the row of the first class, in class
        order, with the lowest (highest) recall; ``lowest_classes`` and
        ``highest_classes``: every class that ties for it, in class order; their ``gap``;
        and ``by_class``: every class's recall, support and gap to the best, worst first.
    """
    rows = [row for row in per_class if row.get("support", 0) > 0]
    if not rows:
        return None
    low = min(float(row["recall"]) for row in rows)
    best = max(float(row["recall"]) for row in rows)
    scored = [
        {
            "class": str(row["class"]),
            "recall": float(row["recall"]),
            "support": int(row["support"]),
            "gap_to_best": round(best - float(row["recall"]), 6),
        }
        for row in rows
    ]
    lowest = [row for row in scored if row["recall"] == low]
    highest = [row for row in scored if row["recall"] == best]
    by_class = sorted(scored, key=lambda row: (row["recall"], row["class"]))
    return {
        "mean": round(sum(row["recall"] for row in by_class) / len(by_class), 6),
        "lowest": lowest[0],
        "lowest_classes": [row["class"] for row in lowest],
        "highest": highest[0],
        "highest_classes": [row["class"] for row in highest],
        "gap": round(best - low, 6),
        "by_class": by_class,
    }


def _named(classes: Sequence[str]) -> str:
    """``class 'a'``, ``classes 'a', 'b'``, or past ``NAMED_TIES`` a count."""
    if len(classes) == 1:
        return f"class {classes[0]!r}"
    if len(classes) > NAMED_TIES:
        return f"{len(classes)} classes"
    return "classes " + ", ".join(repr(name) for name in classes)


def _served(autocast: str, precision: str) -> str:
    """How the service runs a model whose scores were measured in ``autocast``."""
    if precision == autocast:
        return "as the service serves it"
    # ``auto`` chose it on the GPU that trained the model; a CPU runs ``auto`` in fp32.
    return "as the service serves it on such a GPU (in fp32 on a CPU)"


def _dataset_named(dataset: Mapping[str, Any] | None) -> str:
    """The dataset as the card's text names it: ``dataset 'digits'``, or with the folder or
    CSV it read (``image_folder 'pets'``), which says more than the source's name."""
    if not dataset:
        return "its training data"
    options = dataset.get("options") or {}
    place = options.get("path") if isinstance(options, Mapping) else None
    if isinstance(place, str):
        return f"{dataset['source']} {place!r}"
    return f"dataset {dataset['source']!r}"


def intended_use(
    classes: Sequence[str],
    model_in: Mapping[str, Any],
    dataset: Mapping[str, Any] | None,
    per_class: Sequence[Mapping[str, Any]],
    split: str,
    autocast: str | None = None,
    precision: str = "auto",
) -> dict[str, Any]:
    """The card's "intended use and limits": what the model is for, what it is not, how
    unevenly it recognizes its classes (per-class recall gaps) on ``split``, and whether
    its scores were measured in the reduced precision ``autocast`` (``bf16``, ``fp16``)
    while the exported files run in fp32 (and the service too, on a CPU, unless the
    trial's ``precision`` asked for bf16 itself)."""
    source = _dataset_named(dataset)
    kind = "clips of frames" if model_in.get("frames") else "images"
    color = "grayscale" if model_in.get("channels") == 1 else "RGB"
    shown = ", ".join(classes[:10]) + (", ..." if len(classes) > 10 else "")
    gaps = recall_gaps(per_class)
    limits = [
        f"It was trained and selected on {source}; {kind} unlike those (other "
        "cameras, scanners, sizes, backgrounds, colors) may be classified much worse.",
        "It has no 'none of these' answer: anything it is shown gets one of its "
        f"{len(classes)} classes.",
    ]
    if split == "validation":
        limits.append(
            "No test split scored it: its validation scores also chose it among the "
            "trials, so they overstate how well it does on new images."
        )
    if autocast is not None:
        limits.append(
            f"Its scores were measured in {autocast} (autocast), {_served(autocast, precision)}; "
            "the exported files hold fp32 weights and run in fp32, so their probabilities "
            "differ slightly (up to about 1e-2), and a few borderline images may change "
            "class (on digits' test split: one)."
        )
    if gaps is not None and len(gaps["highest_classes"]) == len(gaps["by_class"]):
        limits.append(
            f"Per-class recall on the {split} split is {gaps['highest']['recall']:.3f} for "
            f"each of the {len(gaps['by_class'])} classes with {split} images: no class "
            "was missed more often than another on these images."
        )
    elif gaps is not None:
        low, high = gaps["lowest"], gaps["highest"]
        limits.append(
            f"Per-class recall on the {split} split ranges from {low['recall']:.3f} "
            f"({_named(gaps['lowest_classes'])}) to {high['recall']:.3f} "
            f"({_named(gaps['highest_classes'])}), a gap of {gaps['gap']:.3f}: images of "
            "the weaker classes are missed more often; check that this is acceptable for "
            "each class before relying on it."
        )
    scored = gaps["by_class"] if gaps is not None else []
    few = [f"{row['class']} ({row['support']})" for row in scored if row["support"] < FEW_SAMPLES]
    # A class without images (a single image stays in training) has no recall to show.
    few += [
        f"{row['class']} (no {split} images)" for row in per_class if row.get("support", 0) == 0
    ]
    if few:
        named = ", ".join(few[:NAMED_FEW]) + (
            f", and {len(few) - NAMED_FEW} more" if len(few) > NAMED_FEW else ""
        )
        limits.append(
            f"Classes with fewer than {FEW_SAMPLES} {split} images (their count) have "
            f"uncertain scores: {named}."
        )
    return {
        "intended_use": (
            f"Classifying {color} {kind} into {len(classes)} classes ({shown}) of the "
            f"kind in dataset {source!r}, preprocessed as 'input.preprocessing' says."
        ),
        "limits": limits,
        "recall_split": split,
        "recall": gaps,
    }


__all__ = [
    "CARD_FORMAT",
    "build_card",
    "intended_use",
    "library_versions",
    "model_input",
    "preprocess_of",
    "preprocessing_steps",
    "recall_gaps",
    "trial_config",
    "trial_input",
]
