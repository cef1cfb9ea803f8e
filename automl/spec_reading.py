"""Whether this process can read a study's stored spec.

Every stored spec was checked at submit, by the automl (and the plugins) of the process
that accepted it. A process of another version, or without those plugins, may not read
it: a newer automl stamped a later ``space_rules`` or wrote a field this version does not
know, or the spec names a plugin's entry not installed here. That is no fault of the
study's trials or post-study jobs: such a process leaves them to others (see
``UnreadableStudyError``) instead of failing them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from automl.data import DATASETS
from automl.pruners import PRUNERS
from automl.registry import Registry
from automl.samplers import SAMPLERS
from automl.spec import SPACE_RULES, StudySpec
from automl.train import METRICS
from automl.train.hyperparameters import UnknownHyperparameterError
from automl.train.trial_config import PIPELINES, SELECTABLE

WORKER = "this worker"
"""How messages name the reading process, unless it says otherwise (a proxy does)."""
PROXY = "the proxy"
"""How a proxy's messages name it."""


class UnreadableStudyError(RuntimeError):
    """This process cannot read a study's stored spec: a newer automl submitted it, or it
    names an entry that no registry of this process has (a plugin installed only where
    the API runs).

    Not the study's fault: its work goes back to the queue (or is never claimed) untouched,
    and a worker leaves the study to other workers until it restarts. Only its code and its
    plugins, both loaded once at start, decide what it can read, and a stored spec never
    changes: trying again later would only claim, give back and log the same again.

    Args:
        study_id: The study.
        problem: What this process lacks and what to do, after ``study N``.
    """

    def __init__(self, study_id: int, problem: str) -> None:
        super().__init__(f"study {study_id} {problem}")
        self.study_id = study_id
        self.problem = problem


def newer_automl(exc: ValidationError, reader: str = WORKER) -> str | None:
    """What in a stored spec refused with ``exc`` shows that a newer automl stored it (its
    ``space_rules`` past this version's, or a field this version does not know), or None
    if nothing does (a broken spec, which no automl could read).

    Every field was known where the spec was checked at submit, so an unknown one is a
    newer automl's (or a newer plugin's option).
    """
    for error in exc.errors():
        value = error.get("input")
        if error["loc"] == ("space_rules",) and type(value) is int and value > SPACE_RULES:
            return f"space rules {value}, {reader} knows {SPACE_RULES}"
    for error in exc.errors():
        if error["type"] == "extra_forbidden":
            field = ".".join(str(part) for part in error["loc"])
            return f"field {field!r}, unknown to {reader}"
    return None


def readable_spec(
    study_id: int,
    load: Callable[[], StudySpec],
    *,
    reader: str = WORKER,
    entries: bool = True,
) -> StudySpec:
    """The spec that ``load`` reads, if this process can read it.

    Args:
        study_id: The study whose spec ``load`` reads.
        load: Reads and validates the stored spec (it raises ``ValidationError`` if
            this version cannot).
        reader: This process, as the messages name it.
        entries: Whether to check that this process registers every entry the spec names
            (a proxy, which only hands the spec on, does not).

    Raises:
        UnreadableStudyError: If a newer automl stored it, or it names entries that no
            registry of this process has.
        ValidationError: If the spec is broken (no automl could read it).
    """
    try:
        spec = load()
    except ValidationError as exc:
        newer = newer_automl(exc, reader)
        if newer is None:
            raise
        advice = "upgrade automl here" if reader == WORKER else f"upgrade {reader}"
        raise UnreadableStudyError(
            study_id, f"needs a newer automl than {reader} ({newer}): {advice}"
        ) from None
    missing = (missing_entries(spec) or missing_options(spec)) if entries else []
    if missing:
        raise UnreadableStudyError(
            study_id,
            f"names {' and '.join(missing)} that no installed plugin of this worker "
            "registers: install the plugin (or a newer automl) here",
        )
    return spec


def check_readable(study_id: int, text: str, *, reader: str = WORKER, entries: bool = True) -> None:
    """Refuses a stored spec (JSON ``text``) that this process cannot read; one that no
    automl could read (broken) passes, to fail where it is used.

    Args:
        study_id: The study.
        text: Its stored spec.
        reader: As ``readable_spec``.
        entries: As ``readable_spec``.

    Raises:
        UnreadableStudyError: As ``readable_spec``.
    """
    with contextlib.suppress(ValidationError):  # a broken spec
        readable_spec(
            study_id,
            lambda: StudySpec.model_validate_json(text),
            reader=reader,
            entries=entries,
        )


def missing_entries(spec: StudySpec) -> list[str]:
    """The entries ``spec`` names that no registry of this process has (``model 'x'``).

    Every name was registered where the spec was checked at submit, so a missing one is
    an entry of a plugin (or of a newer automl) that this process lacks.
    """
    named: list[tuple[Registry[Any], str]] = [
        (DATASETS, spec.dataset.source),
        (SAMPLERS, spec.sampler.name),
        (PRUNERS, spec.pruner_or_default.name),
        *((METRICS, metric) for metric in spec.metrics),
        *((SELECTABLE[group], name) for group, names in spec.chosen.items() for name in names),
    ]
    missing = [f"{registry.kind} {name!r}" for registry, name in named if name not in registry]
    return list(dict.fromkeys(missing + _missing_pipeline_entries(spec)))


def missing_options(spec: StudySpec) -> list[str]:
    """The fixed and searched names of ``spec`` that no entry here takes (``option
    'my_net.act'``): the options of a plugin's (or a newer automl's) version that this
    process lacks. Call it once ``missing_entries`` found none.
    """
    missing = []
    for name in [*spec.fixed, *spec.params]:
        try:
            spec.hyperparameter(name)
        except UnknownHyperparameterError:
            missing.append(f"option {name!r}")
    return missing


def _missing_pipeline_entries(spec: StudySpec) -> list[str]:
    """The pipeline entries (augmentations) that the spec's qualified names set, such as
    ``hflip`` of ``hflip.p``, and that no registry of this process has.

    A qualified name's entry is a selector's choice or a pipeline's entry (the checks at
    submit resolved it); one that no selector of the spec can choose is a pipeline's.
    """
    chosen = {name for names in spec.chosen.values() for name in names}
    kind = " or ".join(registry.kind for registry in PIPELINES.values())
    missing = []
    for name in [*spec.fixed, *spec.params]:
        entry, dot, _ = name.partition(".")
        if dot and entry not in chosen and not any(entry in r for r in PIPELINES.values()):
            missing.append(f"{kind} {entry!r}")
    return missing
