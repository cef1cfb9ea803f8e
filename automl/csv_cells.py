"""CSV cells that spreadsheets show as text: the files automl writes are opened in them.

A spreadsheet runs a cell that starts with ``=``, ``+``, ``-``, ``@`` (or a tab or carriage
return) as a formula; names automl writes come from users' files (class folders, image
and checkpoint file names), so such text gets a leading ``'``, which spreadsheets hide.
"""

from __future__ import annotations

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
"""What a spreadsheet runs as a formula at the start of a cell."""


def as_text_cell(text: str) -> str:
    """``text``, with a leading ``'`` if a spreadsheet would run it as a formula, or if it
    is such text with its quotes already (a file named ``'=x.png``): so that
    ``from_text_cell`` gives back exactly ``text``."""
    return "'" + text if text.lstrip("'").startswith(FORMULA_STARTS) else text


def from_text_cell(text: str) -> str:
    """The text ``as_text_cell`` wrote (``'=x`` reads as ``=x``, ``''=x`` as ``'=x``);
    other text unchanged."""
    if text.startswith("'") and text.lstrip("'").startswith(FORMULA_STARTS):
        return text[1:]
    return text
