"""Unit tests for `imgproxy.transform.negotiate`: the Accept header picks the `fm=auto` bucket."""

from __future__ import annotations

from typing import Final

import pytest

from imgproxy.transform.negotiate import FormatBucket, accepted_types, negotiate

# What browsers send for an <img> (and curl's default), as of their 2024-2025 releases.
CHROME: Final = "image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8"
SAFARI: Final = (
    "image/webp,image/avif,image/jxl,image/heic,image/heic-sequence,video/*;q=0.8,"
    "image/png,image/svg+xml,image/*;q=0.8,*/*;q=0.5"
)
SAFARI_14: Final = "image/png,image/svg+xml,image/*;q=0.8,video/*;q=0.8,*/*;q=0.5"
FIREFOX: Final = "image/avif,image/webp,image/png,image/svg+xml,image/*;q=0.8,*/*;q=0.5"
CURL: Final = "*/*"
CHROME_NAVIGATION: Final = (
    "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,image/apng,"
    "*/*;q=0.8,application/signed-exchange;v=b3;q=0.7"
)


@pytest.mark.parametrize(
    ("accept", "auto_avif", "bucket"),
    [
        pytest.param(CHROME, True, FormatBucket.AVIF, id="chrome-avif-on"),
        pytest.param(CHROME, False, FormatBucket.WEBP, id="chrome-avif-off"),
        pytest.param(SAFARI, True, FormatBucket.AVIF, id="safari-avif-on"),
        pytest.param(SAFARI, False, FormatBucket.WEBP, id="safari-avif-off"),
        pytest.param(SAFARI_14, True, FormatBucket.SOURCE, id="safari-14"),
        pytest.param(FIREFOX, True, FormatBucket.AVIF, id="firefox-avif-on"),
        pytest.param(FIREFOX, False, FormatBucket.WEBP, id="firefox-avif-off"),
        pytest.param(CURL, True, FormatBucket.SOURCE, id="curl"),
        pytest.param(CHROME_NAVIGATION, False, FormatBucket.WEBP, id="chrome-navigation"),
    ],
)
def test_real_browser_headers(accept: str, auto_avif: bool, bucket: FormatBucket) -> None:
    """Chrome, Safari and Firefox get AVIF (when on) or WebP; curl and old Safari the source's family."""
    assert negotiate(accept, auto_avif) is bucket


def test_missing_or_empty_accept_gets_the_source_family() -> None:
    """No Accept header at all is the same as `*/*`."""
    assert negotiate(None, auto_avif=True) is FormatBucket.SOURCE
    assert negotiate("", auto_avif=True) is FormatBucket.SOURCE


def test_q_zero_means_not_acceptable() -> None:
    """`image/webp;q=0` refuses WebP even though `*/*` would take anything."""
    assert negotiate("image/webp;q=0,*/*", auto_avif=False) is FormatBucket.SOURCE
    assert negotiate("image/avif;q=0,image/webp", auto_avif=True) is FormatBucket.WEBP
    assert negotiate("image/avif; q=0.0 , image/webp;q=0.000", auto_avif=True) is FormatBucket.SOURCE


def test_a_low_but_positive_q_still_lists_the_type() -> None:
    """Any q above 0 makes a type acceptable."""
    assert negotiate("image/webp;q=0.1", auto_avif=False) is FormatBucket.WEBP


def test_wildcards_do_not_list_a_format() -> None:
    """`image/*` names no format explicitly: it is not a promise that WebP displays."""
    assert negotiate("image/*", auto_avif=True) is FormatBucket.SOURCE


def test_media_types_and_parameter_names_are_case_insensitive() -> None:
    """`IMAGE/WEBP; Q=1` is image/webp (RFC 9110 section 8.3.1)."""
    assert negotiate("IMAGE/WEBP; Q=1", auto_avif=False) is FormatBucket.WEBP


@pytest.mark.parametrize("weight", ["abc", "2", "-1", ""])
def test_unreadable_or_out_of_range_weights_count_as_zero(weight: str) -> None:
    """A q-value that is not a number from 0 to 1 does not make a format acceptable."""
    assert negotiate(f"image/webp;q={weight}", auto_avif=False) is FormatBucket.SOURCE


def test_accepted_types_lists_named_types_with_positive_weight() -> None:
    """The parsed set: lower-cased, wildcards and q=0 left out, other parameters ignored."""
    assert accepted_types("Image/AVIF;q=0.5, image/webp;q=0, image/*, */*, text/html;level=1") == {
        "image/avif",
        "text/html",
    }


def test_garbage_is_tolerated() -> None:
    """Malformed elements are skipped, never an error."""
    assert negotiate(",,;;,webp,image/webp;;q=1;,", auto_avif=False) is FormatBucket.WEBP


def test_a_long_accept_is_read_as_a_short_one_is() -> None:
    """An Accept too long to be remembered still chooses its bucket, every time it comes."""
    accept = "image/webp," + ",".join(f"image/x-{i}" for i in range(40))
    assert len(accept) > 256
    for _ in range(2):
        assert negotiate(accept, auto_avif=False) is FormatBucket.WEBP
        assert (
            negotiate(accept.replace("image/webp", "image/webp;q=0"), auto_avif=False) is FormatBucket.SOURCE
        )
