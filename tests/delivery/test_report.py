"""The study report: every plot inline as a PNG, notes where a plot cannot be drawn, the
best model's embeddings, and user-supplied names escaped."""

from __future__ import annotations

import base64
import html
import io
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import FrozenTrial, TrialState, create_trial
from PIL import Image

from automl.delivery import plot_text, study_report
from automl.delivery import report as report_module
from automl.delivery.embeddings import Embeddings, pca_2d, subsample, tsne_2d
from automl.delivery.inference import ServingTrial, load_serving_model
from automl.delivery.report import (
    MAX_LABEL_CHARS,
    MAX_LABELED_CLASSES,
    MOST_CONFUSED_SHOWN,
    SECTIONS,
    ReportData,
    Unavailable,
    confusion_figure,
    embedding_figure,
    importance_sample,
    importances_note,
    param_importances,
    per_class_figure,
    render_report,
    slice_figure,
)
from automl.delivery.study_report import gather_report, study_report_html
from automl.spec import validate_spec
from automl.store import (
    NoBestTrialError,
    RefitState,
    RefitView,
    Store,
    StudyNotFoundError,
    attrs,
    claim,
    get_study,
    optuna_rows,
    queue_refit,
    resume_study,
    submit_study,
)
from tests.conftest import store_at
from tests.delivery.trained import REPORTED_STUDY, TRAINED_SPEC, digits_test_split, train_study
from tests.store.conftest import drive

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def reported(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Store, int]]:
    """A store with a completed three-trial digits study of two parameters."""
    root = tmp_path_factory.mktemp("reported")
    store = store_at(f"sqlite:///{root / 'automl.db'}", root)
    yield store, train_study(store, **REPORTED_STUDY)
    store.close()


def sections(page: str) -> dict[str, str]:
    """Section id -> its inner HTML."""
    found = dict(re.findall(r'<section id="([^"]+)">(.*?)</section>', page, re.S))
    assert list(found) == list(SECTIONS), "sections missing or out of order"
    return found


def inline_png(section: str) -> Image.Image:
    """The section's one inline image, decoded (fails if it has none or it is no PNG)."""
    sources = re.findall(r'<img [^>]*src="data:image/png;base64,([A-Za-z0-9+/=]+)"', section)
    assert len(sources) == 1, section[:300]
    data = base64.b64decode(sources[0], validate=True)
    assert data.startswith(PNG_SIGNATURE)
    image = Image.open(io.BytesIO(data), formats=["PNG"])
    image.load()
    return image


def test_report_inlines_every_plot_as_png(reported: tuple[Store, int]) -> None:
    store, study_id = reported
    page = study_report_html(store, study_id)
    assert page.startswith("<!DOCTYPE html>")
    assert "http://" not in page and "https://" not in page, "the page must load nothing"
    for key, body in sections(page).items():
        assert f"<h2>{SECTIONS[key]}</h2>" in body
        assert 'class="note"' not in body, f"{key}: {body[:300]}"
        width, height = inline_png(body).size
        assert width > 200 and height > 150, key
    assert f"Study {study_id}: reported" in page


def test_embeddings_are_backbone_features_of_validation_images(
    reported: tuple[Store, int],
) -> None:
    store, study_id = reported
    report = gather_report(store, study_id, max_points=50)
    embeddings = report.embeddings
    assert embeddings is not None, report.embeddings_note
    served = load_serving_model(store, ServingTrial(study_id, report.best, "best_trial"))
    data = digits_test_split()
    assert embeddings.features.shape == (50, served.model[1][-1].in_features)
    assert embeddings.total == len(data.val_y)
    assert embeddings.classes == data.classes
    index = torch.from_numpy(subsample(len(data.val_y), 50))
    assert embeddings.labels.tolist() == data.val_y[index].tolist()
    # They are the head's input: the head maps them to the whole model's logits.
    with torch.no_grad():
        logits = served.model(data.normalize(data.val_x[index]))
        from_features = served.model[1](torch.from_numpy(embeddings.features))
    torch.testing.assert_close(from_features, logits, rtol=1e-4, atol=1e-4)
    assert pca_2d(embeddings.features).shape == tsne_2d(embeddings.features).shape == (50, 2)


def test_unknown_study_and_study_without_completed_trial_raise(tmp_path: Any) -> None:
    store = store_at(f"sqlite:///{tmp_path / 'automl.db'}", tmp_path)
    try:
        with pytest.raises(StudyNotFoundError):
            study_report_html(store, 999)
        study_id = submit_study(store, validate_spec(TRAINED_SPEC)).id
        with pytest.raises(NoBestTrialError):
            study_report_html(store, study_id)
    finally:
        store.close()


# --- pure rendering of made-up data --------------------------------------------------------


HOSTILE_CLASSES = ("<img src=x onerror=alert(1)>", "$\\frac{a}{$", "a&b", 'q"uote')


def made_up_trial(number: int, params: dict[str, Any], value: float) -> FrozenTrial:
    distributions = {
        name: CategoricalDistribution(["x", "<y>"])
        if isinstance(v, str)
        else FloatDistribution(1e-4, 1.0, log=True)
        for name, v in params.items()
    }
    confusion = [[5, 1, 0, 0], [0, 4, 2, 0], [1, 0, 6, 0], [0, 0, 1, 3]]
    trial = create_trial(
        state=TrialState.COMPLETE,
        params=params,
        distributions=distributions,
        value=value,
        user_attrs={
            attrs.CLASSES: list(HOSTILE_CLASSES),
            attrs.CONFUSION: confusion,
            attrs.PER_CLASS: [
                {"class": name, "precision": 0.5, "recall": 0.25 * (i + 1), "support": 5}
                for i, name in enumerate(HOSTILE_CLASSES)
            ],
            attrs.HISTORY: [
                {"epoch": 1, "train_loss": 1.2, "loss": 1.0, "accuracy": 0.5, "latency_ms": 0.2},
                {"epoch": 2, "train_loss": 0.8, "loss": 0.9, "accuracy": 0.6, "latency_ms": 0.2},
            ],
        },
    )
    trial.number = number
    return trial


def made_up_embeddings() -> Embeddings:
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(len(HOSTILE_CLASSES)), 10)
    features = rng.normal(size=(len(labels), 6)).astype(np.float32) + labels[:, None]
    return Embeddings(features, labels, HOSTILE_CLASSES, total=len(labels))


def made_up_report(trials: list[FrozenTrial], **fields: Any) -> ReportData:
    best = max(trials, key=lambda trial: trial.value or 0.0)
    defaults: dict[str, Any] = {
        "study_id": 7,
        "study_name": "<script>alert('name')</script>",
        "status": "completed",
        "directions": ["maximize"],
        "metrics": ["accuracy"],
        "trials": trials,
        "best": best,
        "embeddings": made_up_embeddings(),
    }
    return ReportData(**{**defaults, **fields})


def test_user_supplied_names_are_escaped() -> None:
    params = [{"<b>lr</b>": 0.01 * (i + 1), "kind": "<y>" if i % 2 else "x"} for i in range(4)]
    trials = [made_up_trial(i, p, 0.5 + 0.1 * i) for i, p in enumerate(params)]
    page = render_report(made_up_report(trials))
    for raw in ("<script>", "<b>lr</b>", "<y>", "<img src=x", 'q"uote'):
        assert raw not in page
    assert "&lt;script&gt;alert(&#x27;name&#x27;)&lt;/script&gt;" in page
    assert "&lt;b&gt;lr&lt;/b&gt;" in page and "&lt;y&gt;" in page
    for key, body in sections(page).items():  # mathtext-like class names draw as text
        assert 'class="note"' not in body, f"{key}: {body[:300]}"
        inline_png(body)


def test_the_summary_names_why_attempts_failed() -> None:
    """Once "1 fail" for a cancelled attempt, which the study's own counts leave out."""
    trials = [made_up_trial(i, {"lr": 0.01 * (i + 1)}, 0.5) for i in range(2)]
    for number, failure in ((2, "cancelled"), (3, "worker_lost"), (4, "error")):
        failed = create_trial(state=TrialState.FAIL, user_attrs={attrs.FAILURE: failure})
        failed.number = number
        trials.append(failed)
    page = render_report(made_up_report(trials))
    assert "5 trials (2 complete, 1 fail, 1 fail: cancelled, 1 fail: worker lost)" in page
    # Found by a tester: the report counted 6 trials where status said 3 of 3 finished.
    counted = render_report(made_up_report(trials, finished=(3, 4)))
    assert (
        "3 of 4 trials finished; 5 attempts (2 complete, 1 fail, 1 fail: cancelled, 1 fail: "
        "worker lost)"
    ) in counted


def test_the_summary_says_what_serves_and_the_test_metrics() -> None:
    """Found by a tester: a refit study's report showed validation plots only, and never
    said that predictions come from the refit model."""
    trials = [made_up_trial(i, {"lr": 0.01 * (i + 1)}, 0.5 + i / 10) for i in range(2)]
    trials[1].user_attrs[attrs.TEST_METRICS] = {"accuracy": 0.875, "loss": 0.3}
    served = "Predictions and the bundle serve the refit model: trial 1's configuration"

    page = render_report(made_up_report(trials, served_note=served))

    assert f'<p class="note">{html.escape(served)}</p>' in page
    assert "<p>On the test split: accuracy 0.875.</p>" in page
    assert "On the test split" not in render_report(made_up_report(trials[:1]))


def test_slice_panels_share_one_colour_scale() -> None:
    """Once per panel: trial 3, alone in a conditional panel, was drawn as trial 0."""
    params = [{"lr": 0.01 * (i + 1), **({"momentum": 0.5} if i == 3 else {})} for i in range(4)]
    trials = [made_up_trial(i, p, 0.5 + 0.1 * i) for i, p in enumerate(params)]
    figure = slice_figure(made_up_report(trials))
    panels = {axes.get_title(): axes.collections[0] for axes in figure.axes if axes.get_title()}
    assert set(panels) == {"lr", "momentum"}
    assert {(p.norm.vmin, p.norm.vmax) for p in panels.values()} == {(0, 3)}


def test_the_slice_plots_name_the_parameters_they_leave_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Once a study of 14 parameters showed 12 slice plots and said nothing of the others."""
    # Two panels draw in a tenth of the time twelve take (1.7 s).
    monkeypatch.setattr("automl.delivery.report.MAX_SLICE_PARAMS", 2)
    names = ["a", "b", "z<&>"]
    trials = []
    for number in range(2):  # no per-epoch or per-class records: only two plots to draw
        trial = create_trial(
            params=dict.fromkeys(names, 0.1 * (number + 1)),
            distributions=dict.fromkeys(names, FloatDistribution(0.0, 1.0)),
            value=0.5 + 0.1 * number,
        )
        trial.number = number
        trials.append(trial)
    slices = sections(render_report(made_up_report(trials, embeddings=None)))["slice-plots"]
    inline_png(slices)
    assert (
        '<p class="note">Slice plots show the first 2 of 3 parameters by name; '
        "not plotted (1): z&lt;&amp;&gt;.</p>" in slices
    )
    # With every parameter plotted there is no note: test_report_inlines_every_plot_as_png.


def test_importances_are_computed_again_only_when_the_completed_trials_change(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Found by a scale tester: a running study's report is drawn again whenever a trial
    starts or ends, and fANOVA took 10 s of every 30 s reload at 2,000 trials."""
    monkeypatch.setattr(report_module, "_importances", OrderedDict())

    def trial(number: int) -> FrozenTrial:
        made = create_trial(
            params={"a": 0.1 * number, "b": (number * 7 % 9) / 9},
            distributions=dict.fromkeys("ab", FloatDistribution(0.0, 1.0)),
            value=0.5 + 0.05 * number,
        )
        made.number = number
        return made

    computed: list[int] = []
    real = report_module.get_param_importances

    def counting(study: Any, **kwargs: Any) -> dict[str, float]:
        computed.append(len(study.trials))
        return real(study, **kwargs)

    trees: list[int] = []
    evaluator = report_module.FanovaImportanceEvaluator

    def recording_trees(**kwargs: Any) -> Any:
        trees.append(kwargs["n_trees"])
        return evaluator(**kwargs)

    monkeypatch.setattr(report_module, "get_param_importances", counting)
    monkeypatch.setattr(report_module, "FanovaImportanceEvaluator", recording_trees)
    trials = [trial(number) for number in range(5)]
    running = create_trial(state=TrialState.RUNNING)
    running.number = 5

    first = param_importances(made_up_report(trials))
    assert param_importances(made_up_report([*trials, running])) == first
    assert computed == [5]
    param_importances(made_up_report([*trials, trial(5)]))
    assert computed == [5, 6]
    other = [trial(number) for number in range(5)]
    other[0].params["a"] = 0.9  # the same numbers and values, another study's parameters
    param_importances(made_up_report(other))
    assert computed == [5, 6, 5]
    assert trees == [report_module.FANOVA_TREES] * 3


def test_importances_of_a_large_study_come_from_a_sample_and_say_so(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Found by a tester: importances used every trial, 163 s for 5,000 (the API's
    threads busy all along, /health unanswered); 10,000 would take about 10 minutes."""
    monkeypatch.setattr(report_module, "MAX_IMPORTANCE_TRIALS", 6)
    trials = []
    for number in range(9):
        trial = create_trial(
            params={"a": 0.1 * number, "b": (number * 7 % 9) / 9},
            distributions=dict.fromkeys("ab", FloatDistribution(0.0, 1.0)),
            value=0.5 + 0.05 * number,
        )
        trial.number = number
        trials.append(trial)
    used: list[list[float]] = []
    real = report_module.get_param_importances

    def recording(study: Any, **kwargs: Any) -> dict[str, float]:
        used.append([trial.params["a"] for trial in study.trials])
        return real(study, **kwargs)

    monkeypatch.setattr(report_module, "get_param_importances", recording)
    data = made_up_report(trials, embeddings=None)

    section = sections(render_report(data))["param-importances"]
    inline_png(section)
    assert '<p class="note">Computed from a random sample of 6 of the 9 completed trials.</p>' in (
        section
    )
    assert len(used[0]) == 6 and used[0] == sorted(used[0])  # in number order
    again = [trial.params["a"] for trial in importance_sample(trials)]
    assert used[0] == again  # the same sample for the same trials
    assert importances_note(made_up_report(trials[:6])) is None


def test_long_class_names_are_cut_in_figures() -> None:
    """Once a 3,000-character class name made a 24,654 x 24,570 px confusion matrix."""
    trial = made_up_trial(0, {"lr": 0.01}, 0.5)
    long = ["L" * 3000, *HOSTILE_CLASSES[1:]]
    trial.user_attrs[attrs.CLASSES] = long
    figure = confusion_figure(trial)
    labels = [label.get_text() for label in figure.axes[0].get_yticklabels()]
    assert labels[0] == "L" * (MAX_LABEL_CHARS - 1) + "\u2026"
    assert max(len(label) for label in labels) <= MAX_LABEL_CHARS
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", bbox_inches="tight")  # as the report saves it
    assert max(Image.open(buffer).size) < 1500


def test_characters_no_installed_font_has_are_written_as_escapes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Found by a tester: two Chinese class names were two rows of empty boxes, and each
    report warned four times of the missing glyphs."""
    monkeypatch.setattr(plot_text, "_drawable_code_points", lambda: frozenset(map(ord, "Güns")))
    trial = made_up_trial(0, {"lr": 0.01}, 0.5)
    trial.user_attrs[attrs.CLASSES] = ["Güns 狗", "Güns 猫", "cat"]
    trial.user_attrs[attrs.CONFUSION] = [[1, 0, 0], [0, 1, 0], [0, 0, 1]]

    figure = confusion_figure(trial)

    labels = [label.get_text() for label in figure.axes[0].get_yticklabels()]
    assert labels == ["Güns \\u72d7", "Güns \\u732b", "cat"]


def test_the_installed_fonts_draw_what_they_have() -> None:
    drawn = plot_text.use_fallback_fonts()
    assert drawn  # matplotlib ships DejaVu Sans
    assert plot_text.drawable("Güns ñ €") == "Güns ñ €"  # DejaVu Sans has them
    if not set(drawn) & set(plot_text.FALLBACK_FAMILIES):  # no CJK font on this machine
        assert plot_text.drawable("狗") == "\\u72d7"


def test_past_the_dense_limit_the_report_shows_the_most_frequent_mistakes() -> None:
    trial = made_up_trial(0, {"lr": 0.01}, 0.5)
    del trial.user_attrs[attrs.CONFUSION]
    trial.user_attrs[attrs.MOST_CONFUSED] = [
        {"true": f"c{i}", "predicted": f"c{i + 1}", "count": 40 - i} for i in range(40)
    ]
    figure = confusion_figure(trial)
    labels = [label.get_text() for label in figure.axes[0].get_yticklabels()]
    assert labels[:2] == ["c0 -> c1", "c1 -> c2"] and len(labels) == MOST_CONFUSED_SHOWN
    trial.user_attrs[attrs.MOST_CONFUSED] = []
    with pytest.raises(Unavailable, match="made no mistake"):
        confusion_figure(trial)


def test_with_many_classes_the_figures_stay_readable_and_quick() -> None:
    """At 1,000 classes the per-class chart was 2,000 unlabeled bars and the embeddings
    took a scatter call per class (seconds)."""
    classes = tuple(f"k{i:04d}" for i in range(1000))
    trial = made_up_trial(0, {"lr": 0.01}, 0.5)
    trial.user_attrs[attrs.PER_CLASS] = [
        {"class": name, "precision": 0.5, "recall": (i * 7 % 1000) / 1000, "support": 3}
        for i, name in enumerate(classes)
    ]
    figure = per_class_figure(trial)
    labels = [label.get_text() for label in figure.axes[0].get_xticklabels()]
    assert labels[:2] == ["k0000", "k0143"] and len(labels) == MAX_LABELED_CLASSES
    assert figure.axes[0].get_title() == "The 40 classes of 1000 with the lowest recall"

    rng = np.random.default_rng(0)
    labels_of = np.arange(2000) % 1000
    embeddings = Embeddings(rng.normal(size=(2000, 6)).astype(np.float32), labels_of, classes, 2000)
    data = made_up_report([trial], embeddings=embeddings)
    figure = embedding_figure(pca_2d(embeddings.features), data, "x", "y", "PCA")
    assert len(figure.axes[0].collections) == 1 and figure.axes[0].get_legend() is None


def test_a_class_without_validation_images_is_named_not_drawn_at_zero() -> None:
    """Found by a tester: a class kept in training only (one image) was drawn at 0."""
    trial = made_up_trial(0, {"lr": 0.01}, 0.5)
    trial.user_attrs[attrs.PER_CLASS] = [
        {"class": "cat", "precision": 1.0, "recall": 0.5, "f1": 0.667, "support": 4},
        {"class": "dog", "precision": None, "recall": 0.0, "f1": 0.0, "support": 2},
        {"class": "solo", "precision": None, "recall": None, "f1": None, "support": 0},
    ]
    axes = per_class_figure(trial).axes[0]
    assert [label.get_text() for label in axes.get_xticklabels()] == ["cat", "dog"]
    assert axes.get_xlabel() == "not shown, no validation images: solo"
    heights = [bar.get_height() for bar in axes.patches]
    assert heights == [1.0, 0.0, 0.5, 0.0]  # precision bars, then recall bars

    trial.user_attrs[attrs.PER_CLASS] = trial.user_attrs[attrs.PER_CLASS][2:]
    with pytest.raises(Unavailable, match="no validation images to score"):
        per_class_figure(trial)


def test_importances_show_a_note_with_one_parameter_or_few_trials() -> None:
    one_param = [made_up_trial(i, {"lr": 0.01 * (i + 1)}, 0.5 + 0.1 * i) for i in range(4)]
    found = sections(render_report(made_up_report(one_param)))
    assert "share 1 (lr)" in found["param-importances"]
    assert "<img" not in found["param-importances"]
    inline_png(found["slice-plots"])

    two = [made_up_trial(i, {"a": 0.1 * (i + 1), "b": 0.2}, 0.5) for i in range(2)]
    found = sections(render_report(made_up_report(two)))
    assert "at least 3 completed trials; this study has 2" in found["param-importances"]


def test_importances_of_trials_that_all_scored_the_same_are_a_note(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Found by a tester: on easy data every trial reached 1.0, and fANOVA's error came
    out as a traceback on the console (and "could not be drawn" in the page)."""
    tied = [
        made_up_trial(i, {"lr": 0.01 * (i + 1), "dropout": 0.1 * (i + 1)}, 1.0) for i in range(4)
    ]
    found = sections(render_report(made_up_report(tied)))
    assert "the completed trials all scored the same" in found["param-importances"]
    assert "could not be drawn" not in found["param-importances"]
    assert "Traceback" not in caplog.text and "failed" not in caplog.text


def test_missing_embeddings_show_their_reason() -> None:
    trials = [made_up_trial(i, {"a": 0.1 * (i + 1)}, 0.5) for i in range(2)]
    note = "No embeddings of trial 1: trial 1 kept no weights"
    found = sections(render_report(made_up_report(trials, embeddings=None, embeddings_note=note)))
    for key in ("embeddings-pca", "embeddings-tsne"):
        assert note in found[key] and "<img" not in found[key]
    inline_png(found["confusion-matrix"])


def test_the_cache_renders_a_study_once_until_it_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = store_at(f"sqlite:///{tmp_path / 'cache.db'}", tmp_path)
    try:
        study_id = train_study(store, name="cached", fixed={**TRAINED_SPEC["fixed"], "epochs": 1})
        renders: list[str] = []
        render = study_report.study_report_html

        def counting(store: Store, wanted: int) -> str:
            renders.append(get_study(store, wanted).status.value)
            return render(store, wanted)

        monkeypatch.setattr(study_report, "study_report_html", counting)
        cache = study_report.ReportCache(size=1)
        pages = [cache.html(store, study_id) for _ in range(3)]
        assert renders == ["completed"] and pages[0] == pages[1] == pages[2]

        # A refit ends after its study: its state is part of what the report shows.
        queue_refit(store, study_id)
        cache.html(store, study_id)
        assert renders == ["completed", "completed"]
        del renders[0]

        # Active again: rendered once more, then kept while no trial starts or ends (a
        # study of thousands of trials takes a minute to render).
        resume_study(store, study_id, add_trials=1)
        cache.html(store, study_id)
        cache.html(store, study_id)
        assert renders == ["completed", "queued"]
        claim(store, "w", study_id)
        cache.html(store, study_id)
        assert renders == ["completed", "queued", "running"]

        # A tester: its Optuna study deleted with another tool, the old report was served.
        with store.write() as connection:
            optuna_rows.put_study_attrs(connection, study_id, {attrs.CREATED_AT: "moved"})
        with pytest.raises(NoBestTrialError, match="deleted outside automl"):
            cache.html(store, study_id)

        # Requests for a report being rendered wait for that render.
        drawn, finish = [], threading.Event()

        def slow(store: Store, wanted: int) -> str:
            drawn.append(wanted)
            finish.wait(10)
            return "page"

        monkeypatch.setattr(study_report, "study_report_html", slow)
        cache = study_report.ReportCache()
        with ThreadPoolExecutor(4) as pool:
            asked = [pool.submit(cache.html, store, study_id) for _ in range(4)]
            time.sleep(0.3)  # all four asked while the first draws
            finish.set()
            assert [future.result(10) for future in asked] == ["page"] * 4
        assert drawn == [study_id]  # the one drawing served all four
    finally:
        store.close()


def test_the_report_reads_no_trials_history_or_reports_but_the_best_trials(
    store: Store, tiny_spec: Any
) -> None:
    """A study of 20,000 trials took 14 s and 1.4 GB to load for its report: the plots read
    states, values and params, and only the best trial's history and reports."""
    study_id = submit_study(store, tiny_spec(budget={"n_trials": 4, "max_failed": 9})).id
    started = drive(store, study_id, [0.4, 0.9, TrialState.FAIL, 0.6])
    best = started[1][1]
    bulky = optuna_rows.trial_user_attributes
    with store.write() as connection:
        for _, trial_id in started:
            optuna_rows.put_trial_attrs(connection, trial_id, {attrs.HISTORY: []})
        connection.execute(  # what no loader can parse: reading it would fail the report
            bulky.update()
            .where(bulky.c.trial_id != best, bulky.c.key == attrs.HISTORY)
            .values(value_json="{not json")
        )

    report = gather_report(store, study_id)

    assert report.best.number == 1 and report.best.user_attrs[attrs.HISTORY] == []
    assert [trial.number for trial in report.trials] == [0, 1, 2, 3]
    assert [trial.user_attrs for trial in report.trials] == [{}, {}, {attrs.FAILURE: "error"}, {}]
    assert "4 of 4 trials finished; 4 attempts (3 complete, 1 fail)" in render_report(report)


def test_the_refit_note_says_whether_the_refit_serves() -> None:
    """A review: after a resume found a better trial, the report still said the refit of
    the old one served."""
    done = RefitView(state=RefitState.DONE, trial=3, epochs=4, test_metrics={"accuracy": 0.9})
    failed = RefitView(state=RefitState.FAILED, note="out of memory")

    serving = study_report._refit_note(done, serves=True)
    assert serving is not None and serving.startswith(
        "Predictions and the bundle serve the refit model: trial 3's configuration retrained "
        "on train + validation for 4 epochs, test accuracy 0.9000."
    )
    assert study_report._refit_note(done, serves=False) == (
        "The refit of trial 3 does not serve: that trial is no longer the best, so "
        "predictions and the bundle use the best trial's own weights."
    )
    assert study_report._refit_note(failed, serves=False) == (
        "Refit on train + validation: failed: out of memory."
    )
    assert study_report._refit_note(None, serves=False) is None
