"""Plain-text rendering of studies and trials for the terminal."""

from __future__ import annotations

import json
import sys
import unicodedata
from collections.abc import Sequence
from typing import Any

from automl.registry import range_text
from automl.store.attrs import EvaluationState
from automl.store.views import (
    BestTrials,
    JobState,
    Page,
    RefitView,
    StudyDetail,
    StudySummary,
    TrialDetail,
    TrialSummary,
)
from automl.wording import counted


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Left-aligned columns separated by two spaces."""
    cells = [[str(h) for h in headers]] + [[_cell(value) for value in row] for row in rows]
    widths = [max(display_width(row[i]) for row in cells) for i in range(len(headers))]
    lines = [
        "  ".join(value + " " * (widths[i] - display_width(value)) for i, value in enumerate(row))
        for row in cells
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(line.rstrip() for line in lines)


def display_width(text: str) -> int:
    """The columns ``text`` takes on a terminal: two for a wide character (CJK, most
    emoji), none for a combining mark (a class name in NFD) or a zero-width one (an emoji
    sequence's joiner), one for the others."""
    if text.isascii():
        return len(text)
    return sum(_char_width(c) for c in text)


def _char_width(c: str) -> int:
    if unicodedata.combining(c) or unicodedata.category(c) == "Cf":
        return 0
    return 2 if unicodedata.east_asian_width(c) in "WF" else 1


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    return printable(str(value))


def printable(text: str) -> str:
    """``text`` with characters a terminal would act on (escape sequences, newlines,
    direction overrides) shown as escapes: names come from users' files."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


def studies_table(page: Page[StudySummary]) -> str:
    """One line per study; a PROJECT column when a study of the page is not in the
    default project (a key that sees several projects lists them together)."""
    default = StudySummary.model_fields["project"].default
    projects = any(s.project != default for s in page.data)
    rows = [
        (
            s.id,
            s.name,
            *((s.project,) if projects else ()),
            s.status.value,
            f"{s.counts.finished}/{s.n_trials}",
            s.best_value,
            s.created_at.strftime("%Y-%m-%d %H:%M") if s.created_at else None,
        )
        for s in page.data
    ]
    header = ("ID", "NAME", *(("PROJECT",) if projects else ()), "STATUS", "TRIALS", "BEST")
    shown = f"{len(page.data)} of {page.count} studies"
    return table((*header, "CREATED"), rows) + f"\n({shown})"


def study_text(study: StudyDetail) -> str:
    """A study's status, progress and best value."""
    counts = study.counts
    objective = ", ".join(
        f"{m} ({d})" for m, d in zip(study.metrics, study.directions, strict=True)
    )
    lines = [
        f"study {study.id}: {study.name}",
        f"status:    {study.status.value}"
        + (f" ({study.status_reason})" if study.status_reason else ""),
        f"objective: {objective}",
        *([f"seed:      {study.seed}"] if study.seed is not None else []),
        f"trials:    {counts.finished}/{study.n_trials} finished "
        f"(complete {counts.complete}, pruned {counts.pruned}, failed {counts.fail}; "
        f"running {counts.running}, waiting {counts.waiting}"
        + (f", cancelled {counts.cancelled}" if counts.cancelled else "")
        + ")",
    ]
    if study.best_value is not None:
        lines.append(f"best:      {study.best_value:.6g}")
    if study.pareto_front_size:
        front = counted(study.pareto_front_size, "trial")
        lines.append(f"best:      {front} on the Pareto front")
    if study.warm_start is not None:
        lines.append(f"warm start: {_warm_start_text(study.warm_start)}")
    for label, job in (("test split", study.test_evaluation), ("refit", study.refit)):
        if job is not None:
            lines.append(f"{label + ':':<10} {_job_text(job)}")
    return "\n".join(lines)


def _job_text(job: JobState) -> str:
    """``running on worker w-1 (last beat 20:31:07 UTC)``, ``failed: why``, ``done``."""
    text = job.state
    if job.worker is not None:
        text += f" on worker {job.worker}"
        if job.since is not None:
            text += f" (last beat {job.since:%H:%M:%S} UTC)"
    return f"{text}: {job.note}" if job.note else text


def _warm_start_text(note: dict[str, Any]) -> str:
    """What a warm start queued and left out, in one line (``status --json``: the lists)."""
    sources = note.get("studies")
    studies = ", ".join(map(str, sources)) if isinstance(sources, list) else ""
    text = f"{counted(_count(note.get('enqueued')), 'configuration')} from studies "
    text += studies or "none found"
    left_out = [
        f"{_count(note.get(key))} {why}"
        for key, why in (
            ("duplicates", "the same as one before"),
            ("nothing_fits", "with no param this space takes"),
            ("over_budget", "past the budget"),
        )
        if _count(note.get(key))
    ]
    if left_out:
        text += f"; left out: {', '.join(left_out)}"
    dropped = note.get("dropped")
    if isinstance(dropped, list) and dropped:
        text += f"; {counted(len(dropped), 'param value')} dropped"
    return printable(text)


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def best_text(best: BestTrials) -> str:
    """The best trial(s): values, params and metrics as tables, with the test split's
    metrics in their own column once the study's test evaluation stored them."""
    evaluation = best.test_evaluation
    # Test metrics beside an evaluation not done are an earlier one's (the study was
    # resumed; scoring again is due, or failed): they may no longer hold.
    earlier = evaluation is not None and evaluation.state != EvaluationState.DONE
    blocks = []
    if len(best.metrics) > 1:
        objectives = ", ".join(
            f"{metric} ({direction})"
            for metric, direction in zip(best.metrics, best.directions, strict=False)
        )
        front = counted(best.count if best.count is not None else len(best.trials), "trial")
        blocks.append(f"Pareto front of study {best.study_id}: {front} ({objectives})")
    kind = "best trial" if len(best.metrics) == 1 else "Pareto trial"
    for trial in best.trials:
        header = f"{kind} #{trial.number} of study {best.study_id}: "
        header += _values_text(best.metrics, trial.values)
        params = table(("PARAM", "VALUE"), sorted(trial.params.items()))
        parts = [header, params, _metrics_table(trial, "EARLIER TEST" if earlier else "TEST")]
        if trial.notes:
            parts.append(_notes_text(trial.notes))
        blocks.append("\n\n".join(parts))
    if evaluation is not None and earlier:
        note = f": {evaluation.note}" if evaluation.note else ""
        if any(trial.test_metrics for trial in best.trials):
            note += " (EARLIER TEST: from the evaluation before the study was resumed)"
        blocks.append(f"test split: {evaluation.state.value}{note}")
    if best.refit is not None:
        blocks.append(_refit_text(best.refit, best.metrics))
    return "\n\n".join(blocks)


def _refit_text(refit: RefitView, objectives: Sequence[str]) -> str:
    """The refit's state; once done, its test scores (the study's objectives that are
    test metrics, and accuracy) and per-class report: the refit is the model that serves,
    not the trial above it."""
    metrics = refit.test_metrics or {}
    shown = [name for name in dict.fromkeys(["accuracy", *objectives]) if name in metrics]
    if refit.trial is not None and shown and refit.state == "done":
        epochs = counted(refit.epochs or 0, "epoch")
        scores = ", ".join(f"{name} {_score(metrics[name])}" for name in shown)
        detail = f": trial {refit.trial}, {epochs}, test {scores}"
    else:
        detail = f": {refit.note}" if refit.note else ""
    text = f"refit on train + validation: {refit.state.value}{detail}"
    if refit.state == "done" and refit.test_per_class:
        text += "\n\nrefit, test split, per class:\n" + _per_class_table(refit.test_per_class)
    return text


def _score(value: float) -> str:
    """A share (accuracy) to 4 places; an amount (params, latency_ms) to 6 digits."""
    return f"{value:.4f}" if abs(value) <= 1 else f"{value:.6g}"


def _values_text(metrics: Sequence[str], values: Sequence[float | None] | None) -> str:
    return ", ".join(
        f"{metric}={value:.6g}" if value is not None else f"{metric}=-"
        for metric, value in zip(metrics, values or [], strict=False)
    )


def _metrics_table(trial: TrialDetail, test_heading: str = "TEST") -> str:
    """Validation metrics, beside the test split's once they were measured."""
    validation = trial.metrics or {}
    if trial.test_metrics is None:
        return table(("METRIC", "VALUE"), sorted(validation.items()))
    test = trial.test_metrics
    names = sorted(set(validation) | set(test))
    return table(
        ("METRIC", "VALIDATION", test_heading),
        [(n, validation.get(n), test.get(n)) for n in names],
    )


def trial_text(trial: TrialDetail, study_id: int, metrics: Sequence[str]) -> str:
    """One trial in full: state and values, params, metrics, the per-class report and
    most frequent mistakes of each split measured, and the trial's notes."""
    header = f"trial #{trial.number} of study {study_id}: {printable(trial.state)}"
    if trial.values:
        header += f", {_values_text(metrics, trial.values)}"
    lines = [header]
    if trial.failure or trial.error:
        lines.append(f"failed: {printable(trial.failure or 'error')}")
        lines += [f"  {printable(line)}" for line in (trial.error or "").strip().splitlines()]
    if trial.best_epoch is not None:
        lines.append(
            f"weights of epoch {trial.best_epoch}"
            + ("" if trial.weights_available else " (not kept)")
        )
    blocks = ["\n".join(lines)]
    if trial.params:
        blocks.append(table(("PARAM", "VALUE"), sorted(trial.params.items())))
    if trial.metrics or trial.test_metrics:
        blocks.append(_metrics_table(trial))
    for split, rows, mistakes in (
        ("validation", trial.per_class, trial.most_confused),
        ("test", trial.test_per_class, trial.test_most_confused),
    ):
        if rows:
            blocks.append(f"{split} split, per class:\n" + _per_class_table(rows))
        if mistakes:
            shown = ", ".join(
                f"{_cell(m.get('true'))} as {_cell(m.get('predicted'))} ({_cell(m.get('count'))})"
                for m in mistakes[:MISTAKES_SHOWN]
            )
            blocks.append(f"{split} split, most frequent mistakes: {shown}")
    if trial.notes:
        blocks.append(_notes_text(trial.notes))
    return "\n\n".join(blocks)


MISTAKES_SHOWN = 5
"""Most frequent mistakes a trial's text names (``--json``: all that were kept)."""


CLASSES_SHOWN = 50
"""Classes a trial's per-class table lists, in the model's order (``--json``: all)."""


def _per_class_table(rows: Sequence[dict[str, Any]]) -> str:
    columns = ("class", "precision", "recall", "f1", "support")
    shown = [[row.get(c) for c in columns] for row in rows[:CLASSES_SHOWN]]
    text = table([c.upper() for c in columns], shown)
    if len(rows) > CLASSES_SHOWN:
        text += f"\n({len(rows) - CLASSES_SHOWN} more classes: --json lists them)"
    return text


def _notes_text(notes: dict[str, Any]) -> str:
    """What the trial noted about its run (a batch size cut, classes without images...)."""
    lines = [f"  {printable(key)}: {_note(value)}" for key, value in sorted(notes.items())]
    return "notes:\n" + "\n".join(lines)


def _note(value: Any) -> str:
    return printable(value if isinstance(value, str) else json.dumps(value))


def trials_table(page: Page[TrialSummary]) -> str:
    """One line per trial: number, state, value(s), duration and params, and why it
    failed when one of them did."""
    rows: list[tuple[Any, ...]] = [
        (
            t.number,
            t.state,
            ", ".join(_cell(value) for value in t.values) if t.values else None,
            f"{t.duration_s:.1f}s" if t.duration_s is not None else None,
            " ".join(f"{name}={_cell(value)}" for name, value in sorted(t.params.items())),
        )
        for t in page.data
    ]
    header: tuple[str, ...] = ("#", "STATE", "VALUE", "DURATION", "PARAMS")
    if any(t.failure or t.error for t in page.data):
        header += ("WHY",)
        rows = [(*row, failure_text(t)) for row, t in zip(rows, page.data, strict=True)]
    shown = f"{len(page.data)} of {page.count} trials"
    return table(header, rows) + f"\n({shown})"


WHY_CHARS = 120
"""Most characters of a failed trial's error a table shows (``trials --json``: all)."""


def failure_text(trial: TrialSummary) -> str | None:
    """Why a trial failed, in one short line: its failure kind and error's first line."""
    if not trial.failure and not trial.error:
        return None
    error = (trial.error or "").strip().splitlines()[0] if (trial.error or "").strip() else ""
    if len(error) > WHY_CHARS:
        error = error[: WHY_CHARS - 3] + "..."
    return ": ".join(part for part in (trial.failure, error) if part)


def registries_text(catalog: dict[str, Any]) -> str:
    """The general hyperparameters, then each registry's entry names."""
    general = table(
        ("HYPERPARAMETER", "TYPE", "DEFAULT", "DESCRIPTION"),
        [
            (h["name"], h["type"], h["default"], h["description"])
            for h in catalog["hyperparameters"]
        ],
    )
    registries = table(
        ("REGISTRY", "ENTRIES"),
        [
            (kind, ", ".join(e["name"] for e in entries))
            for kind, entries in catalog["registries"].items()
        ],
    )
    hint = "(automl list KIND shows a registry's entries and their options)"
    return f"{general}\n\n{registries}\n{hint}"


def entries_text(kind: str, entries: list[dict[str, Any]]) -> str:
    """Each entry of a registry with its description and options."""
    blocks = []
    for entry in entries:
        source = "" if entry["source"] == "automl" else f" [{entry['source']}]"
        header = f"{entry['name']}{source}: {entry['description']}"
        if "direction" in entry:  # a metric
            header += f" ({entry['direction']})"
        if entry["options"]:
            rows = [
                (
                    option.get("spec_name") or option["name"],
                    option["type"]
                    if not option["choices"]
                    else "|".join(map(str, option["choices"])),
                    option["default"],
                    range_text(option["range"]),
                    option["description"],
                )
                for option in entry["options"]
            ]
            header += "\n" + table(("OPTION", "TYPE", "DEFAULT", "RANGE", "DESCRIPTION"), rows)
        blocks.append(header)
    return f"{kind}:\n\n" + "\n\n".join(blocks)


def printable_json(text: str) -> str:
    """JSON text as stdout can print it: non-ASCII characters escaped (``\\u00fc``), which
    keeps it JSON, where stdout's encoding has no room for them (``LC_ALL=C``,
    ``PYTHONIOENCODING=ascii``); printing them raised after a command had done its work."""
    try:
        text.encode(sys.stdout.encoding or "utf-8")
    except (UnicodeEncodeError, LookupError):
        return json.dumps(json.loads(text), indent=2, ensure_ascii=True)
    return text


SELECTIONS = {
    "best_trial": "best trial",
    "refit": "refit on train + validation",
    "pareto_front_first": "first of the Pareto front",
    "chosen": "asked for by number",
}
"""How each kind of serving model (``ServedModel.selection``) is named."""


def selection_text(selection: object) -> str:
    """Why a trial serves, in words (an unknown kind as it is, escaped); empty where an
    older server's bundle does not say."""
    if not isinstance(selection, str) or not selection:
        return ""
    return SELECTIONS.get(selection, printable(selection))
