"""A study's report as one self-contained HTML page: data in, HTML out.

``render_report`` draws each plot with matplotlib's Agg canvas (no pyplot, so no global
figure state shared between threads) and inlines it as a base64 PNG; the page loads nothing
else. Each plot sits in a ``<section>`` with a stable id (``SECTIONS``). A plot that cannot
be drawn (too few trials for importances, no embeddings) shows a short note instead.
Every string that comes from users (study, class and parameter names) is HTML-escaped, and
``$`` is escaped in plot text so that matplotlib never reads a name as mathtext.
"""

from __future__ import annotations

import base64
import html
import io
import logging
import math
import random
import threading
import warnings
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from optuna.distributions import CategoricalDistribution
from optuna.importance import FanovaImportanceEvaluator, get_param_importances
from optuna.trial import FrozenTrial, TrialState

from automl.delivery.embeddings import DegenerateEmbeddingsError, Embeddings, pca_2d, tsne_2d
from automl.delivery.plot_text import drawable, use_fallback_fonts
from automl.store import attrs
from automl.wording import counted

logger = logging.getLogger("automl.delivery")

SECTIONS: dict[str, str] = {
    "optimization-history": "Optimization history",
    "param-importances": "Parameter importances",
    "slice-plots": "Objective by parameter (slice plots)",
    "learning-curves": "Best model: learning curves",
    "confusion-matrix": "Best model: confusion matrix, or past 50 classes its most frequent "
    "mistakes (validation)",
    "per-class": "Best model: per-class precision and recall (validation)",
    "embeddings-pca": "Best model: PCA of penultimate-layer embeddings (validation)",
    "embeddings-tsne": "Best model: t-SNE of penultimate-layer embeddings (validation)",
}
"""Section id -> heading, in page order. The ids are stable: tests and links use them."""

MIN_IMPORTANCE_TRIALS = 3
"""Completed trials needed before parameter importances mean anything."""

MAX_IMPORTANCE_TRIALS = 300
"""Completed trials that parameter importances are computed from: a larger study's are a
random sample of this many. fANOVA's time grows faster than the trials (on a busy 2-core
machine, 64 trees: 2 s for 200, 7-9 s for 500, 21-28 s for 1,000, minutes for 5,000, all
while the API waits); ``benchmarks/bench_importances.py`` measures what the sample and
``FANOVA_TREES`` cost, and how far they move the importances from all trials' (a sample
of 200 moved one by up to 0.23, of 300 by 0.06)."""

FANOVA_TREES = 32
"""Trees of the fANOVA forest (Optuna's default: 64): half as many take half the time,
and move the importances less than the sample does."""

IMPORTANCES_KEPT = 16
"""Studies whose last importances a process keeps: a running study's report is drawn
again whenever a trial starts or ends, and its importances change only when one
completes."""

MAX_SLICE_PARAMS = 12
"""Slice plots show this many parameters (the first by name); a note names the others."""

MAX_ANNOTATED_CLASSES = 15
"""Confusion matrices with more classes show colors without the counts."""

MAX_LABELED_CLASSES = 40
"""Plots with more classes drop the class names from their axes and legends."""

MOST_CONFUSED_SHOWN = 30
"""Mistakes the report shows for a model whose confusion matrix was not kept whole."""


@dataclass(frozen=True)
class ReportData:
    """Everything the report shows.

    Attributes:
        study_id: The study.
        study_name: Its name (user-supplied).
        status: Its lifecycle status.
        directions: ``maximize`` or ``minimize``, one per objective.
        metrics: The objective metric names, one per objective.
        trials: Every trial of the study.
        best: The trial the model sections describe (with its automl user attributes).
        best_note: Why that trial (several objectives, say), or None.
        embeddings: Its validation embeddings, or None (then ``embeddings_note`` says why).
        embeddings_note: Why there are no embeddings.
        finished: Units of the budget that ended, and the budget (``TrialCounts``): the
            trials listed count every attempt, reruns and retries included.
        served_note: What serves the study's predictions when it is not the best trial
            itself (a refit), or None.
    """

    study_id: int
    study_name: str
    status: str
    directions: Sequence[str]
    metrics: Sequence[str]
    trials: Sequence[FrozenTrial]
    best: FrozenTrial
    best_note: str | None = None
    embeddings: Embeddings | None = None
    embeddings_note: str | None = None
    finished: tuple[int, int] | None = None
    served_note: str | None = None


class Unavailable(Exception):
    """A plot cannot be drawn; the message is shown in its section."""


def render_report(data: ReportData) -> str:
    """The report of ``data`` as a self-contained HTML page."""
    use_fallback_fonts()
    projections = _Projections(data.embeddings, data.embeddings_note or "No embeddings.")
    draw: dict[str, Callable[[], Figure]] = {
        "optimization-history": lambda: history_figure(data),
        "param-importances": lambda: importances_figure(data),
        "slice-plots": lambda: slice_figure(data),
        "learning-curves": lambda: learning_curves_figure(data.best),
        "confusion-matrix": lambda: confusion_figure(data.best),
        "per-class": lambda: per_class_figure(data.best),
        "embeddings-pca": lambda: embedding_figure(
            projections.pca(), data, "PCA 1", "PCA 2", "PCA"
        ),
        "embeddings-tsne": lambda: embedding_figure(
            projections.tsne(), data, "t-SNE 1", "t-SNE 2", "t-SNE"
        ),
    }
    notes = {"param-importances": importances_note(data), "slice-plots": slice_note(data)}
    sections = [_section(key, SECTIONS[key], draw[key], notes.get(key)) for key in SECTIONS]
    return _page(data, "\n".join(sections))


class _Projections:
    """The 2-D projections of the embeddings, computed when first drawn; degenerate
    embeddings (identical or non-finite features) show why as the section's note."""

    def __init__(self, embeddings: Embeddings | None, missing: str) -> None:
        self.embeddings, self.missing = embeddings, missing

    def pca(self) -> np.ndarray:
        return self._project(pca_2d)

    def tsne(self) -> np.ndarray:
        return self._project(tsne_2d)

    def _project(self, projection: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        try:
            return projection(self._features())
        except DegenerateEmbeddingsError as exc:
            raise Unavailable(str(exc)) from exc

    def _features(self) -> np.ndarray:
        if self.embeddings is None:
            raise Unavailable(self.missing)
        return self.embeddings.features


def _section(key: str, title: str, draw: Callable[[], Figure], note: str | None = None) -> str:
    """The section ``key``: its plot, then ``note`` if any; or why the plot is missing."""
    try:
        body = f'<img alt="{_esc(title)}" src="data:image/png;base64,{_png_base64(draw())}">'
        if note:
            body += f'\n<p class="note">{_esc(note)}</p>'
    except Unavailable as exc:
        body = f'<p class="note">{_esc(str(exc))}</p>'
    except Exception as exc:  # one broken plot must not cost the whole page
        logger.exception("report section %s failed", key)
        body = f'<p class="note">This plot could not be drawn: {_esc(str(exc))}</p>'
    return f'<section id="{key}">\n<h2>{_esc(title)}</h2>\n{body}\n</section>'


def _png_base64(figure: Figure) -> str:
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _esc(text: object) -> str:
    return html.escape(str(text), quote=True)


MAX_LABEL_CHARS = 40
"""Longer class names, parameter values... are cut in figures, which grow with them."""


def _state_label(trial: FrozenTrial) -> str:
    """``complete``, ``pruned``, ``fail``..., with why an attempt failed when it was not
    its configuration (``fail: worker lost``, ``fail: cancelled``): those are retried or
    dropped, not counted as failed trials of the study."""
    state = trial.state.name.lower()
    failure = trial.user_attrs.get(attrs.FAILURE)
    if state == "fail" and isinstance(failure, str) and failure != "error":
        return f"fail: {failure.replace('_', ' ')}"
    return state


def _plain(text: object) -> str:
    """``text`` for matplotlib, which would otherwise render ``$...$`` as mathtext, cut
    to ``MAX_LABEL_CHARS``, its characters no installed font has written as escapes."""
    shown = str(text)
    if len(shown) > MAX_LABEL_CHARS:
        shown = shown[: MAX_LABEL_CHARS - 1] + "\u2026"
    return drawable(shown).replace("$", r"\$")


def _param(value: object) -> object:
    return f"{value:.6g}" if isinstance(value, float) else value


def _value(value: float | None) -> str:
    return "-" if value is None else f"{value:.6g}"


# --- page --------------------------------------------------------------------------------------

REPORT_POLICY = (
    "default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'; "
    "form-action 'none'"
)
"""What a report page may load: its own inline style and plots, nothing else (no script,
no request anywhere), in a browser that opens the saved file too. Every name in it is
escaped; this is the second line of defence."""

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1100px; color: #222; }
h1 { margin-bottom: 0.2rem; }
section { margin: 2rem 0; border-top: 1px solid #ddd; }
img { max-width: 100%; }
table { border-collapse: collapse; }
td, th { padding: 0.2rem 0.8rem; border-bottom: 1px solid #eee; text-align: left; }
.note { color: #666; font-style: italic; }
"""


def _test_line(data: ReportData) -> str:
    """The best trial's objective metrics on the test split, once the completed study's
    test evaluation measured them (the table above is validation)."""
    test = data.best.user_attrs.get(attrs.TEST_METRICS)
    if not isinstance(test, dict):
        return ""
    values = [test.get(metric) for metric in data.metrics]
    shown = ", ".join(
        f"{_esc(metric)} {_value(value if isinstance(value, int | float) else None)}"
        for metric, value in zip(data.metrics, values, strict=True)
    )
    return f"<p>On the test split: {shown}.</p>"


def _page(data: ReportData, sections: str) -> str:
    best = data.best
    values = best.values or []
    objectives = "".join(
        f"<tr><th>{_esc(metric)} ({_esc(direction)})</th><td>{_value(value)}</td></tr>"
        for metric, direction, value in zip(data.metrics, data.directions, values, strict=False)
    )
    params = "".join(
        f"<tr><th>{_esc(name)}</th><td>{_esc(_param(value))}</td></tr>"
        for name, value in sorted(best.params.items())
    )
    counts = Counter(_state_label(trial) for trial in data.trials)
    states = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
    listed = f"({_esc(states)})"
    if data.finished is None:
        runs = f"{counted(len(data.trials), 'trial')} {listed}"
    else:  # as automl status counts them: one per unit of the budget
        done, budget = data.finished
        attempts = counted(len(data.trials), "attempt")  # a rerun or a retry is one more
        runs = f"{done} of {counted(budget, 'trial')} finished; {attempts} {listed}"
    note = "".join(
        f'<p class="note">{_esc(text)}</p>' for text in (data.best_note, data.served_note) if text
    )
    test = _test_line(data)
    name = _esc(data.study_name)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{REPORT_POLICY}">
<title>automl report: study {data.study_id} ({name})</title>
<style>{_STYLE}</style>
</head>
<body>
<header id="summary">
<h1>Study {data.study_id}: {name}</h1>
<p>Status {_esc(data.status)}; {runs}.</p>
<h2>Best trial: {best.number}</h2>
{note}
<table>{objectives}{params}</table>
{test}
</header>
{sections}
</body>
</html>
"""


# --- study plots -------------------------------------------------------------------------------


def _completed(trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    return [
        trial
        for trial in trials
        if trial.state == TrialState.COMPLETE
        and trial.values
        and all(math.isfinite(value) for value in trial.values)
    ]


def history_figure(data: ReportData) -> Figure:
    """Each objective's value per completed trial, with the best so far."""
    completed = _completed(data.trials)
    if not completed:
        raise Unavailable("no completed trial")
    count = len(data.metrics)
    figure = Figure(figsize=(9, 3.5 * count), layout="constrained")
    for index, (metric, direction) in enumerate(zip(data.metrics, data.directions, strict=True)):
        axes = figure.add_subplot(count, 1, index + 1)
        numbers = [trial.number for trial in completed]
        values = [trial.values[index] for trial in completed]
        better = max if direction == "maximize" else min
        best_so_far = list(values)
        for i in range(1, len(values)):
            best_so_far[i] = better(best_so_far[i - 1], values[i])
        axes.scatter(numbers, values, s=18, label="trial", color="tab:blue")
        axes.step(numbers, best_so_far, where="post", color="tab:red", label="best so far")
        axes.set_xlabel("trial number")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_ylabel(_plain(f"{metric} ({direction})"))
        axes.grid(alpha=0.3)
        axes.legend(loc="best")
    return figure


def param_importances(data: ReportData) -> dict[str, float]:
    """Each parameter's importance to the first objective (fANOVA), most important first.

    Raises:
        Unavailable: With fewer than ``MIN_IMPORTANCE_TRIALS`` completed trials or fewer
            than two parameters that every completed trial has.
    """
    completed = _completed(data.trials)
    if len(completed) < MIN_IMPORTANCE_TRIALS:
        raise Unavailable(
            f"Parameter importances need at least {MIN_IMPORTANCE_TRIALS} completed trials; "
            f"this study has {len(completed)}."
        )
    shared = set.intersection(*(set(trial.params) for trial in completed))
    if len(shared) < 2:
        raise Unavailable(
            f"Parameter importances compare two or more parameters; the completed trials "
            f"share {len(shared)} ({', '.join(sorted(shared)) or 'none'})."
        )
    sample = importance_sample(completed)
    if len({trial.values[0] for trial in sample}) < 2:
        raise Unavailable(SAME_SCORE)
    key = (
        data.study_id,
        tuple(data.directions),
        tuple(sorted(shared)),
        tuple(
            (trial.number, trial.values[0], *(trial.params[name] for name in sorted(shared)))
            for trial in sample
        ),
    )
    with _importances_lock:
        if key in _importances:
            _importances.move_to_end(key)
            return dict(_importances[key])
    importances = _fanova(sample, data.directions, sorted(shared))
    with _importances_lock:
        _importances[key] = importances
        while len(_importances) > IMPORTANCES_KEPT:
            _importances.popitem(last=False)
    return dict(importances)


_importances: OrderedDict[tuple[Any, ...], dict[str, float]] = OrderedDict()
_importances_lock = threading.Lock()


def _fanova(
    sample: Sequence[FrozenTrial], directions: Sequence[str], params: list[str]
) -> dict[str, float]:
    """fANOVA's importance of each of ``params`` to the first objective of ``sample``.

    Raises:
        Unavailable: If the importances are undefined (every trial scored the same, as
            far as the parameters tell).
    """
    study = optuna.create_study(directions=list(directions))  # in memory
    study.add_trials(sample)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna's ExperimentalWarning and small-sample notes
        try:
            importances = get_param_importances(
                study,
                evaluator=FanovaImportanceEvaluator(n_trees=FANOVA_TREES, seed=0),
                params=params,
                target=lambda trial: trial.values[0],
            )
        except RuntimeError as exc:
            if "zero total variance" not in str(exc):
                raise
            raise Unavailable(SAME_SCORE) from None  # no split of any tree changes the score
    if any(not math.isfinite(value) for value in importances.values()):
        raise Unavailable(SAME_SCORE)
    return {name: float(value) for name, value in importances.items()}


SAME_SCORE = (
    "Parameter importances are undefined: the completed trials all scored the same "
    "(or their parameters explain none of the differences)."
)


def importance_sample(completed: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    """The completed trials that importances are computed from: all of them, or a random
    sample of ``MAX_IMPORTANCE_TRIALS`` (the same for the same trials), in number order."""
    if len(completed) <= MAX_IMPORTANCE_TRIALS:
        return list(completed)
    sample = random.Random(len(completed)).sample(list(completed), MAX_IMPORTANCE_TRIALS)
    return sorted(sample, key=lambda trial: trial.number)


def importances_note(data: ReportData) -> str | None:
    """That importances come from a sample of the completed trials, or None (all of them)."""
    count = len(_completed(data.trials))
    if count <= MAX_IMPORTANCE_TRIALS:
        return None
    return (
        f"Computed from a random sample of {MAX_IMPORTANCE_TRIALS} of the {count} completed trials."
    )


def importances_figure(data: ReportData) -> Figure:
    """A horizontal bar per parameter, most important on top."""
    importances = param_importances(data)
    names = list(importances)[::-1]
    figure = Figure(figsize=(8, 0.5 * len(names) + 1.5), layout="constrained")
    axes = figure.add_subplot()
    axes.barh([_plain(name) for name in names], [importances[name] for name in names])
    axes.set_xlabel(_plain(f"importance for {data.metrics[0]} (fANOVA)"))
    axes.grid(axis="x", alpha=0.3)
    return figure


def slice_params(data: ReportData) -> tuple[list[str], list[str]]:
    """The parameters of the completed trials, by name: those the slice plots show (at most
    ``MAX_SLICE_PARAMS``) and those left out."""
    names = sorted({name for trial in _completed(data.trials) for name in trial.params})
    return names[:MAX_SLICE_PARAMS], names[MAX_SLICE_PARAMS:]


def slice_note(data: ReportData) -> str | None:
    """What the slice plots leave out, or None when they show every parameter."""
    shown, left_out = slice_params(data)
    if not left_out:
        return None
    return (
        f"Slice plots show the first {len(shown)} of {len(shown) + len(left_out)} parameters "
        f"by name; not plotted ({len(left_out)}): {', '.join(left_out)}."
    )


def slice_figure(data: ReportData) -> Figure:
    """The first objective against each parameter, one panel per parameter (at most
    ``MAX_SLICE_PARAMS``, the first by name: ``slice_note`` names the others)."""
    completed = _completed(data.trials)
    names, _ = slice_params(data)
    if not names:
        raise Unavailable("The completed trials have no searched parameters.")
    numbers_seen = [trial.number for trial in completed]  # one colour scale for every panel
    scale = {"vmin": min(numbers_seen), "vmax": max(numbers_seen)}
    columns = min(3, len(names))
    rows = math.ceil(len(names) / columns)
    figure = Figure(figsize=(4 * columns, 3.2 * rows), layout="constrained")
    for index, name in enumerate(names):
        axes = figure.add_subplot(rows, columns, index + 1)
        having = [trial for trial in completed if name in trial.params]
        distribution = having[-1].distributions[name]
        y = [trial.values[0] for trial in having]
        numbers = [trial.number for trial in having]
        if isinstance(distribution, CategoricalDistribution):
            choices = list(distribution.choices)
            x = [choices.index(trial.params[name]) for trial in having]
            axes.set_xticks(range(len(choices)), [_plain(choice) for choice in choices])
        else:
            x = [trial.params[name] for trial in having]
            if getattr(distribution, "log", False):
                axes.set_xscale("log")
        points = axes.scatter(x, y, c=numbers, cmap="viridis", s=18, **scale)
        axes.set_title(_plain(name))
        axes.tick_params(axis="x", which="both", labelrotation=30, labelsize="small")
        if index % columns == 0:
            axes.set_ylabel(_plain(data.metrics[0]))
        axes.grid(alpha=0.3)
    figure.colorbar(points, ax=figure.axes, label="trial number", ticks=MaxNLocator(integer=True))
    return figure


# --- best-model plots --------------------------------------------------------------------------


def learning_curves_figure(trial: FrozenTrial) -> Figure:
    """Per-epoch losses, and the validation metrics between 0 and 1, of ``trial``."""
    history: list[Mapping[str, Any]] = trial.user_attrs.get(attrs.HISTORY) or []
    if not history:
        raise Unavailable(f"Trial {trial.number} recorded no per-epoch history.")
    epochs = [entry.get("epoch", index + 1) for index, entry in enumerate(history)]
    keys = [key for key in history[0] if key != "epoch"]
    series = {key: [entry.get(key) for entry in history] for key in keys}
    losses = [key for key in keys if "loss" in key]
    scores = [
        key
        for key in keys
        if key not in losses
        and not key.endswith("_ms")  # latencies may fall in [0, 1] too
        and all(isinstance(v, int | float) and 0 <= v <= 1 for v in series[key])
    ]
    figure = Figure(figsize=(11, 3.8), layout="constrained")
    for position, (chosen, label) in enumerate(((losses, "loss"), (scores, "score"))):
        axes = figure.add_subplot(1, 2, position + 1)
        for key in chosen:
            axes.plot(epochs, series[key], marker="o", markersize=3, label=_plain(key))
        axes.set_xlabel("epoch")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_ylabel(label)
        axes.grid(alpha=0.3)
        if chosen:
            axes.legend(loc="best", fontsize="small")
    return figure


def _classes(trial: FrozenTrial, count: int) -> list[str]:
    names = [str(name) for name in trial.user_attrs.get(attrs.CLASSES) or []]
    return names if len(names) == count else [str(index) for index in range(count)]


def confusion_figure(trial: FrozenTrial) -> Figure:
    """The validation confusion matrix: rows true, columns predicted classes."""
    confusion = trial.user_attrs.get(attrs.CONFUSION)
    if not confusion:
        mistakes = trial.user_attrs.get(attrs.MOST_CONFUSED)
        if mistakes is not None:  # past DENSE_CONFUSION_CLASSES classes
            return most_confused_figure(mistakes)
        raise Unavailable(f"Trial {trial.number} recorded no confusion matrix.")
    matrix = np.asarray(confusion, dtype=np.int64)
    count = len(matrix)
    classes = _classes(trial, count)
    size = min(4 + 0.45 * count, 16)
    figure = Figure(figsize=(size + 1.5, size), layout="constrained")
    axes = figure.add_subplot()
    image = axes.imshow(matrix, cmap="Blues")
    figure.colorbar(image, ax=axes, fraction=0.046)
    if count <= MAX_LABELED_CLASSES:
        labels = [_plain(name) for name in classes]
        axes.set_xticks(range(count), labels, rotation=90)
        axes.set_yticks(range(count), labels)
    if count <= MAX_ANNOTATED_CLASSES:
        threshold = matrix.max() / 2
        for (row, column), value in np.ndenumerate(matrix):
            color = "white" if value > threshold else "black"
            axes.text(column, row, str(value), ha="center", va="center", color=color)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    return figure


def most_confused_figure(mistakes: Sequence[Mapping[str, Any]]) -> Figure:
    """The most frequent mistakes (true -> predicted), for a model of more classes than a
    matrix can show."""
    shown = list(mistakes[:MOST_CONFUSED_SHOWN])
    if not shown:
        raise Unavailable("The best model made no mistake on the validation split.")
    figure = Figure(figsize=(8, 1.5 + 0.3 * len(shown)), layout="constrained")
    axes = figure.add_subplot()
    labels = [f"{_plain(str(m['true']))} -> {_plain(str(m['predicted']))}" for m in shown]
    axes.barh(range(len(shown)), [int(m["count"]) for m in shown], color="tab:blue")
    axes.set_yticks(range(len(shown)), labels)
    axes.invert_yaxis()
    axes.set_xlabel("validation images (true class -> predicted class)")
    axes.set_title(f"The {len(shown)} most frequent mistakes")
    return figure


def per_class_figure(trial: FrozenTrial) -> Figure:
    """Precision and recall of each class, side by side."""
    every: list[Mapping[str, Any]] = trial.user_attrs.get(attrs.PER_CLASS) or []
    if not every:
        raise Unavailable(f"Trial {trial.number} recorded no per-class report.")
    # A class without validation images has no recall (None; 0 in reports before that).
    rows = [row for row in every if int(row.get("support", 0)) > 0]
    if not rows:
        raise Unavailable(f"Trial {trial.number} had no validation images to score.")
    absent = [str(row.get("class")) for row in every if int(row.get("support", 0)) == 0]
    if len(rows) > MAX_LABELED_CLASSES:  # unlabeled bars by the thousand say nothing
        rows = sorted(rows, key=lambda row: float(row.get("recall") or 0.0))
        rows = rows[:MAX_LABELED_CLASSES]
    names = [str(row.get("class")) for row in rows]
    positions = np.arange(len(rows))
    figure = Figure(figsize=(min(4 + 0.5 * len(rows), 20), 4), layout="constrained")
    axes = figure.add_subplot()
    width = 0.4
    # Precision None (nothing predicted as the class, in reports of older versions): 0.
    precision = [float(row.get("precision") or 0.0) for row in rows]
    recall = [float(row.get("recall") or 0.0) for row in rows]
    axes.bar(positions - width / 2, precision, width, label="precision")
    axes.bar(positions + width / 2, recall, width, label="recall")
    if len(rows) <= MAX_LABELED_CLASSES:
        axes.set_xticks(positions, [_plain(name) for name in names], rotation=90)
    axes.set_ylim(0, 1.05)
    axes.set_ylabel("validation score")
    axes.grid(axis="y", alpha=0.3)
    axes.legend(loc="lower right")
    scored = len(every) - len(absent)
    if len(rows) < scored:
        axes.set_title(f"The {len(rows)} classes of {scored} with the lowest recall")
    if absent:
        shown = ", ".join(_plain(name) for name in absent[:5])
        more = f" and {len(absent) - 5} more" if len(absent) > 5 else ""
        axes.set_xlabel(f"not shown, no validation images: {shown}{more}")
    return figure


def embedding_figure(
    points: np.ndarray, data: ReportData, x_label: str, y_label: str, method: str
) -> Figure:
    """A scatter of 2-D projected embeddings coloured by true class."""
    embeddings = data.embeddings
    if embeddings is None:
        raise Unavailable(data.embeddings_note or "No embeddings.")
    figure = Figure(figsize=(8, 6.5), layout="constrained")
    axes = figure.add_subplot()
    count = len(embeddings.classes)
    cmap = figure_cmap(count)
    if count > MAX_LABELED_CLASSES:  # no legend: one call (one per class took seconds)
        colors = cmap(np.asarray(embeddings.labels) % cmap.N)
        axes.scatter(points[:, 0], points[:, 1], s=12, color=colors)
    for index, name in enumerate(embeddings.classes if count <= MAX_LABELED_CLASSES else ()):
        chosen = embeddings.labels == index
        if chosen.any():
            axes.scatter(
                points[chosen, 0],
                points[chosen, 1],
                s=12,
                color=cmap(index % cmap.N),
                label=_plain(name),
            )
    axes.set_xlabel(x_label)
    axes.set_ylabel(y_label)
    shown = len(embeddings.labels)
    axes.set_title(
        f"{method} of {shown} of {embeddings.total} validation images, coloured by class"
    )
    if count <= MAX_LABELED_CLASSES:
        axes.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize="small")
    return figure


def figure_cmap(count: int) -> Any:
    """A qualitative colormap with enough distinct colors for ``count`` classes."""
    return colormaps["tab10" if count <= 10 else "tab20"]


__all__ = [
    "SECTIONS",
    "ReportData",
    "Unavailable",
    "param_importances",
    "render_report",
]
