"""Text in the report's plots that the installed fonts can draw.

matplotlib draws a character no font of its family has as an empty box (and warns, once
per figure): two class names in Chinese then look alike. Installed CJK fonts are added
after matplotlib's own as fallbacks (matplotlib picks a font per character), and the
characters that no font here has are written as escapes (``\\u72d7``), as the CLI writes
characters it cannot print: still told apart, and found in the page's text.
"""

from __future__ import annotations

import functools

from matplotlib import font_manager, rcParams
from matplotlib.ft2font import FT2Font

FALLBACK_FAMILIES = (
    "Noto Sans CJK SC",
    "Noto Sans CJK JP",
    "Noto Sans CJK KR",
    "Source Han Sans SC",
    "WenQuanYi Zen Hei",
    "Droid Sans Fallback",
    "Microsoft YaHei",
    "PingFang SC",
    "Hiragino Sans",
    "Arial Unicode MS",
)
"""Fonts with CJK characters, by how often they are installed (Linux, Windows, macOS)."""


@functools.cache
def use_fallback_fonts() -> tuple[str, ...]:
    """Adds the installed ``FALLBACK_FAMILIES`` after matplotlib's sans-serif fonts (once
    per process); the fonts plots draw with, in order."""
    installed = {entry.name for entry in font_manager.fontManager.ttflist}
    extra = [family for family in FALLBACK_FAMILIES if family in installed]
    rcParams["font.sans-serif"] = [*rcParams["font.sans-serif"], *extra]
    return tuple(family for family in rcParams["font.sans-serif"] if family in installed)


@functools.cache
def _drawable_code_points() -> frozenset[int]:
    points: set[int] = set()
    for family in use_fallback_fonts():
        properties = font_manager.FontProperties(family=family)
        try:
            path = font_manager.findfont(properties, fallback_to_default=False)
            points.update(FT2Font(path).get_charmap())
        except (OSError, ValueError, RuntimeError):  # a font file that cannot be read
            continue
    return frozenset(points)


def drawable(text: str) -> str:
    """``text`` with each character that no installed font can draw written as an escape
    (``\\u72d7``); spaces and ASCII as they are."""
    if text.isascii():
        return text
    known = _drawable_code_points()
    if not known:  # no font could be read: leave the text to matplotlib
        return text
    return "".join(
        c if c.isascii() or ord(c) in known else c.encode("unicode_escape").decode() for c in text
    )
