"""``automl export``'s CSV: what a spreadsheet shows of it."""

from __future__ import annotations

import csv
import io

from automl.cli.export_commands import trials_csv
from automl.store.views import StudyDetail, TrialSummary


def test_text_a_spreadsheet_would_run_as_a_formula_stays_text() -> None:
    """Param values can come from file names (pretrained checkpoints): once raw formulas."""
    study = StudyDetail.model_construct(metrics=["accuracy"])
    trial = TrialSummary(
        number=0,
        state="complete",
        params={"pretrained": '=HYPERLINK("http:x","click").safetensors', "lr": -0.5, "a": "@1"},
        values=[-1.0],
        intermediate_values={},
    )
    [header, row] = list(csv.reader(io.StringIO(trials_csv(study, [trial]))))
    cells = dict(zip(header, row, strict=True))
    assert cells["param.pretrained"] == '\'=HYPERLINK("http:x","click").safetensors'
    assert cells["param.a"] == "'@1"
    assert (cells["param.lr"], cells["value.accuracy"]) == ("-0.5", "-1.0")  # numbers as they are
