"""The transform errors' rows of `app.ERROR_STATUS`: status, reason text (fixed words, never a
value the client sent nor libvips' message) and headers."""

from __future__ import annotations

import pytest

from imgproxy.core.errors import (
    BadSignature,
    BadTransformParameter,
    ImgproxyError,
    NotAnImage,
    SourceTooLarge,
    TransformBusy,
    TransformTimeout,
)
from imgproxy.http.statuses import error_response


@pytest.mark.parametrize(
    ("error", "status", "text"),
    [
        (
            BadTransformParameter("w", "must be an integer from 1 to 8192"),
            400,
            "bad transform parameter w: must be an integer from 1 to 8192\n",
        ),
        (BadSignature("missing signature (s)"), 403, "bad signature: missing signature (s)\n"),
        (
            NotAnImage("cannot decode", "VipsJpeg: Premature end of JPEG file"),
            422,
            "not an image: cannot decode\n",
        ),
        (
            SourceTooLarge("more pixels than transform.max_src_pixels (50000000)", "30000x30000 pixels"),
            422,
            "source image too large: more pixels than transform.max_src_pixels (50000000)\n",
        ),
        (TransformBusy(2.2), 429, "too many transforms waiting\n"),
        (TransformTimeout(10), 503, "transform timed out\n"),
    ],
)
def test_each_transform_error_has_its_status_and_says_why_in_our_words(
    error: ImgproxyError, status: int, text: str
) -> None:
    """The answer's status, and a body that says what was wrong (naming the parameter for a 400)
    in our own words: libvips' message and the source's figures stay out of it."""
    response = error_response(error)
    assert (response.status, response.text) == (status, text)
    assert response.headers["Cache-Control"] == "no-store"


def test_a_parameter_outside_our_set_is_not_named() -> None:
    """A 400 names a parameter only from our own set of names, never a spelling of the client's."""
    response = error_response(BadTransformParameter("<script>", "given more than once"))
    assert response.text == "bad transform parameter: given more than once\n"


def test_busy_carries_retry_after_in_whole_seconds() -> None:
    """A 429 says when to come back, rounded up to whole seconds."""
    assert error_response(TransformBusy(2.2)).headers["Retry-After"] == "3"
    assert error_response(TransformBusy(0.1)).headers["Retry-After"] == "1"
    assert "Retry-After" not in error_response(TransformTimeout(10)).headers
