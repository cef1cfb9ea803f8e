"""URLs printed without their passwords."""

from __future__ import annotations

import pytest

from automl.url_secrets import without_password


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://me:secret@db:5432/automl", "postgresql://me:***@db:5432/automl"),
        ("postgresql://me@db/automl", "postgresql://me@db/automl"),
        ("sqlite:///a b.db", "sqlite:///a b.db"),
        ("postgresql://me:p/s?s#x@db/automl", "postgresql://me:***@db/automl"),
        ("postgresql://db:5432/automl", "postgresql://db:5432/automl"),
        (
            "postgresql://db/automl?user=me&password=x&sslmode=require",
            "postgresql://db/automl?user=me&password=***&sslmode=require",
        ),
        (
            "postgresql://db/a?sslpassword=x&PASSWORD=y",
            "postgresql://db/a?sslpassword=***&PASSWORD=***",
        ),
        ("postgresql+bogus://u:S3cret@h/x", "postgresql+bogus://u:***@h/x"),
        ("grpc://u:S3cret@proxy:50051", "grpc://u:***@proxy:50051"),
        ("http://user:Pa55w0rd@gpu-box:8000", "http://user:***@gpu-box:8000"),
        (
            "http://gpu-box:8000/studies?password_hint=1",
            "http://gpu-box:8000/studies?password_hint=1",
        ),
        ("foo", "foo"),
        # A reviewer: an unescaped "@" in the password left its tail, and text that is no
        # URL its whole password.
        ("postgresql://me:p@ss@db/x", "postgresql://me:***@db/x"),
        ("postgresql//me:S3cret@db/x", "postgresql//me:***@db/x"),
        ("me:S3cret@db/x", "me:***@db/x"),
        ("sqlite:///C:/data/a.db", "sqlite:///C:/data/a.db"),
    ],
)
def test_passwords_are_hidden(url: str, shown: str) -> None:
    """Found by testers: the best hint, the run's first line, errors on a bad URL and the
    dashboard's first line repeated the URL typed, password and all."""
    assert without_password(url) == shown
