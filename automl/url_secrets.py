"""URLs with their passwords hidden, for messages and logs.

Light: no SQLAlchemy import, so the thin CLI commands use it too.
"""

from __future__ import annotations

import re

__all__ = ["without_password"]

_USER_PASSWORD = re.compile(r"^([\w+.-]+://[^:/@]*):.*@")
"""A URL's ``user:password@``: the password may hold ``/``, ``?`` or ``#``, which
``urlsplit`` would take for the end of the host, and (unescaped, which SQLAlchemy then
misreads) ``@``: everything up to the last ``@`` goes."""
_NO_SCHEME_PASSWORD = re.compile(r"([^\s:/@]+):[^\s@]*@")
"""``user:password@`` in text that is no URL (``postgresql//me:pw@db``, ``me:pw@db``)."""
_QUERY_PASSWORD = re.compile(r"([?&](?:ssl)?password=)[^&]*", re.IGNORECASE)
"""A ``password=`` (or libpq's ``sslpassword=``) query parameter."""


def without_password(url: str) -> str:
    """``url`` with its passwords shown as ``***``: that of its user part, and those of
    ``password=`` and ``sslpassword=`` query parameters.

    Args:
        url: A database, proxy or API URL, or any other text (returned as it is).

    Returns:
        The URL to print.
    """
    if "://" in url:
        shown = _USER_PASSWORD.sub(r"\1:***@", url, count=1)
    else:
        shown = _NO_SCHEME_PASSWORD.sub(r"\1:***@", url, count=1)
    return _QUERY_PASSWORD.sub(r"\1***", shown)
