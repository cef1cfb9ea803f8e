"""CSV cells a spreadsheet shows as text, and image_csv reads back as written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from automl.csv_cells import as_text_cell, from_text_cell
from automl.data.manifest import read_manifest
from tests.data.conftest import write_image


@pytest.mark.parametrize(
    ("text", "cell"),
    [
        ('=HYPERLINK("http:x")', '\'=HYPERLINK("http:x")'),
        ("+1", "'+1"),
        ("-1", "'-1"),
        ("@SUM(1)", "'@SUM(1)"),
        ("\tx", "'\tx"),
        ("cat", "cat"),
        ("'quoted", "'quoted"),
        ("", ""),
        # Found by a tester: a file named '=x.png was written as is and read back as =x.png.
        ("'=x.png", "''=x.png"),
        ("''-1", "'''-1"),
    ],
)
def test_text_cells_round_trip(text: str, cell: str) -> None:
    assert as_text_cell(text) == cell
    assert from_text_cell(cell) == text


def test_image_csv_reads_what_annotate_wrote(data_root: Path) -> None:
    """annotate neutralizes names starting like formulas; its CSV still trains as it is."""
    pixels = np.zeros((4, 4), np.uint8)
    write_image(data_root / "inbox" / "=1+2.png", pixels)
    write_image(data_root / "inbox" / "b.png", pixels)
    (data_root / "inbox" / "labels.csv").write_text(
        "path,label,confidence\n'=1+2.png,'-1,0.5\nb.png,cat,0.9\n"
    )
    rows = read_manifest("inbox/labels.csv")
    assert [(path.name, label) for path, label in rows] == [("=1+2.png", "-1"), ("b.png", "cat")]
