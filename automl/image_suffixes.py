"""The file name endings read as images: light, so that the CLI can list a folder's images
without importing the data package (torch)."""

from __future__ import annotations

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp"})
"""File name endings read as images (case-insensitive); other files are ignored."""

SUFFIX_LIST = ", ".join(sorted(suffix.lstrip(".") for suffix in IMAGE_SUFFIXES))
"""``IMAGE_SUFFIXES`` as messages write them: ``bmp, jpeg, jpg, png, webp``."""
