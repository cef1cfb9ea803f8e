"""What a dataset's samples are, and which models, augmentations and strategies take them.

A dataset gives ``images`` (samples ``(C, H, W)``) or ``clips`` (``(T, C, H, W)``, from
``frame_sequences``); its registration says which. An entry says what it works on with
``SAMPLES`` on its options class; otherwise its registry's rule holds: models and
augmentations take images (they convolve or transform one frame), other entries
(optimizers, losses, resampling strategies) take either. A spec that pairs a dataset with
an entry that cannot take its samples is refused at submit, instead of failing every
trial with a shape error from deep inside torch.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from automl.data import DATASETS
from automl.registry import Registry
from automl.train.trial_config import PIPELINES, SELECTABLE, TrialConfig

if TYPE_CHECKING:
    from automl.spec import StudySpec

IMAGES, CLIPS = "images", "clips"
SHAPES = {IMAGES: "images (C, H, W)", CLIPS: "clips (T, C, H, W)"}
IMAGES_ONLY = ("model", "augment")
"""Groups whose entries take images unless they say otherwise."""

Loc = tuple[str | int, ...]


def dataset_samples(source: str) -> str | None:
    """``images`` or ``clips`` for a registered dataset source; None for an unknown one."""
    if source not in DATASETS:
        return None
    return DATASETS.get(source).factory.samples


def takes(group: str, name: str, samples: str) -> bool:
    """Whether entry ``name`` of ``group`` (``model``, ``augment``...) works on ``samples``;
    True for a name no registry knows (the name checks report it)."""
    registry: Registry[Any] = {**SELECTABLE, **PIPELINES}[group]
    if name not in registry:
        return True
    declared = registry.get(name).options.SAMPLES
    if declared is not None:
        return samples in declared
    return samples == IMAGES or group not in IMAGES_ONLY


def sample_problems(spec: StudySpec) -> list[tuple[Loc, str]]:
    """Where ``spec`` picks an entry that cannot take its dataset's samples.

    Returns:
        ``(field path, message)`` pairs; empty when everything fits.
    """
    samples = dataset_samples(spec.dataset.source)
    if samples is None:
        return []
    source = f"dataset {spec.dataset.source!r} gives {SHAPES[samples]}"
    problems = []
    for group in SELECTABLE:
        for loc, name, default in _picked(spec, group):
            if not takes(group, name, samples):
                fitting = _fitting(group, samples)
                problems.append((loc, _message(group, name, default, source, fitting)))
    for loc, name in _augmentations(spec):
        if not takes("augment", name, samples):
            problems.append(
                (loc, f"augmentation {name!r} takes {_kinds('augment', name)}; {source}")
            )
    return problems


def _picked(spec: StudySpec, group: str) -> Iterator[tuple[Loc, str, bool]]:
    """The entries of selector ``group`` a study may train with, each with where it is
    named (the default entry: where the selector would be set) and whether it is the
    default one the spec does not name."""
    param = spec.params.get(group)
    choices = getattr(param, "choices", None)
    if choices is not None:
        for index, choice in enumerate(choices):
            yield ("params", group, "choices", index), str(choice), False
    elif group in spec.fixed:
        yield ("fixed", group), str(spec.fixed[group]), False
    default = _default(group)
    explicit = choices is not None or group in spec.fixed
    conditional = choices is not None and bool(getattr(param, "when", None))
    if default is not None and (not explicit or conditional):
        where: Loc = ("params", group, "when") if conditional else ("fixed", group)
        yield where, default, True


def _default(group: str) -> str | None:
    field = TrialConfig.model_fields[group]
    return getattr(field.default, "name", None)


def _augmentations(spec: StudySpec) -> Iterator[tuple[Loc, str]]:
    """Each augmentation the spec turns on, with where it is first named (one whose
    ``p`` is 0, fixed or by default, never runs)."""
    seen: set[str] = set()
    for section, names in (("fixed", spec.fixed), ("params", spec.params)):
        for name in names:
            entry, _, option = name.partition(".")
            if not option or entry in seen or entry not in PIPELINES["augment"]:
                continue
            if not _may_run(spec, entry):
                continue
            seen.add(entry)
            yield (section, name), entry


def _may_run(spec: StudySpec, entry: str) -> bool:
    """Whether augmentation ``entry`` may apply to some image: its ``p`` searched, fixed
    above 0, or left at a default above 0."""
    name = f"{entry}.p"
    if name in spec.params:
        return True
    if name in spec.fixed:
        return bool(spec.fixed[name])
    field = PIPELINES["augment"].get(entry).options.model_fields.get("p")
    return field is None or bool(field.get_default())


def _fitting(group: str, samples: str) -> list[str]:
    registry: Registry[Any] = SELECTABLE[group]
    return [name for name in registry.names() if takes(group, name, samples)]


def _kinds(group: str, name: str) -> str:
    return " and ".join(SHAPES[kind] for kind in (IMAGES, CLIPS) if takes(group, name, kind))


def _message(group: str, name: str, default: bool, source: str, fitting: list[str]) -> str:
    advice = f": use {', '.join(fitting)}" if fitting else ""
    which = f"the default {group}" if default else group
    return f"{which} {name!r} takes {_kinds(group, name)}; {source}{advice}"
