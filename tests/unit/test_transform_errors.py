"""The transform errors' rows of `app.ERROR_STATUS`: status, reason text and headers."""

from __future__ import annotations

import pytest

from imgproxy.app import error_response
from imgproxy.errors import (
    BadSignature,
    BadTransformParameter,
    ImgproxyError,
    NotAnImage,
    SourceTooLarge,
    TransformBusy,
    TransformTimeout,
)


@pytest.mark.parametrize(
    ("error", "status", "fragment"),
    [
        (
            BadTransformParameter("w", "must be an integer"),
            400,
            "bad transform parameter w: must be an integer",
        ),
        (BadSignature("missing signature (s)"), 403, "bad signature: missing signature (s)"),
        (NotAnImage("Premature end of JPEG file"), 422, "not an image: Premature end"),
        (SourceTooLarge("30000x30000 pixels"), 422, "source image too large: 30000x30000"),
        (TransformBusy(2.2), 429, "too many transforms waiting"),
        (TransformTimeout(10), 503, "transform timed out"),
    ],
)
def test_each_transform_error_has_its_status_and_says_why(
    error: ImgproxyError, status: int, fragment: str
) -> None:
    """The answer's status, and a body that says what was wrong (naming the parameter for a 400)."""
    response = error_response(error)
    assert response.status == status
    assert response.text is not None and fragment in response.text
    assert response.headers["Cache-Control"] == "no-store"


def test_busy_carries_retry_after_in_whole_seconds() -> None:
    """A 429 says when to come back, rounded up to whole seconds."""
    assert error_response(TransformBusy(2.2)).headers["Retry-After"] == "3"
    assert error_response(TransformBusy(0.1)).headers["Retry-After"] == "1"
    assert "Retry-After" not in error_response(TransformTimeout(10)).headers
