"""Unit tests for `imgproxy.http.paths.parse_blob_path`: what a request may name inside the container."""

from __future__ import annotations

import pytest

from imgproxy.core.errors import BadPath
from imgproxy.http.paths import MAX_PATH_CHARS, parse_blob_path, parse_blob_path_cached


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param("cat.jpg", "cat.jpg", id="simple"),
        pytest.param("a/b/c.png", "a/b/c.png", id="nested"),
        pytest.param("a%20b.png", "a b.png", id="percent-encoded-space"),
        pytest.param("caf%C3%A9.jpg", "café.jpg", id="percent-encoded-utf8"),
        pytest.param("café.jpg", "café.jpg", id="literal-non-ascii"),
        pytest.param("a%2Fb", "a/b", id="encoded-slash-decodes-to-separator"),
        pytest.param("a%2fb", "a/b", id="lowercase-encoded-slash"),
        pytest.param("...", "...", id="three-dots-is-a-name"),
        pytest.param(".hidden/..x/x..", ".hidden/..x/x..", id="dots-inside-names"),
        pytest.param("a+b.png", "a+b.png", id="plus-is-not-space"),
        pytest.param("100%.png", "100%.png", id="stray-percent-kept"),
        pytest.param("x" * MAX_PATH_CHARS, "x" * MAX_PATH_CHARS, id="exactly-max-length"),
    ],
)
def test_accepts_and_decodes_valid_path(raw: str, expected: str) -> None:
    """A valid path is accepted and returned percent-decoded."""
    assert parse_blob_path(raw) == expected


@pytest.mark.parametrize(
    ("raw", "reason_contains"),
    [
        pytest.param("", "empty", id="empty"),
        pytest.param("..", "'..'", id="dotdot"),
        pytest.param(".", "'.'", id="dot"),
        pytest.param("a/../b", "'..'", id="dotdot-segment"),
        pytest.param("../x", "'..'", id="leading-dotdot"),
        pytest.param("a/..", "'..'", id="trailing-dotdot"),
        pytest.param("a/%2e%2e/b", "'..'", id="encoded-dotdot"),
        pytest.param("%2E%2E/x", "'..'", id="uppercase-encoded-dotdot"),
        pytest.param("a%2F..%2Fb", "'..'", id="encoded-slash-dotdot"),
        pytest.param("a/%2e/b", "'.'", id="encoded-dot"),
        pytest.param("a/./b", "'.'", id="dot-segment"),
        pytest.param("a//b", "empty segment", id="double-slash"),
        pytest.param("/a", "empty segment", id="leading-slash"),
        pytest.param("a/", "empty segment", id="trailing-slash"),
        pytest.param("a%2F%2Fb", "empty segment", id="encoded-double-slash"),
        pytest.param("a\\b", "backslash", id="backslash"),
        pytest.param("a%5Cb", "backslash", id="encoded-backslash"),
        pytest.param("a%5c..%5cb", "backslash", id="encoded-backslash-traversal"),
        pytest.param("a%00b", "control", id="nul"),
        pytest.param("a%0Ab", "control", id="newline"),
        pytest.param("a%0Db", "control", id="carriage-return"),
        pytest.param("a%09b", "control", id="tab"),
        pytest.param("a%1Fb", "control", id="unit-separator"),
        pytest.param("a%7Fb", "control", id="del"),
        pytest.param("%C2%80", "control", id="c1-first"),
        pytest.param("%C2%85", "control", id="c1-next-line"),
        pytest.param("%C2%9F", "control", id="c1-last"),
        pytest.param("%ff", "UTF-8", id="invalid-utf8-byte"),
        pytest.param("%C3", "UTF-8", id="truncated-utf8"),
        pytest.param("%C0%AE%C0%AE/x", "UTF-8", id="overlong-dots"),
        pytest.param("%ED%A0%80", "UTF-8", id="utf8-surrogate"),
        pytest.param("x" * (MAX_PATH_CHARS + 1), "longer than", id="one-over-max-length"),
        pytest.param("%41" * (MAX_PATH_CHARS + 1), "longer than", id="encoded-one-over-max-length"),
        pytest.param("x" * 100_000, "longer than", id="huge"),
    ],
)
def test_refuses_invalid_path(raw: str, reason_contains: str) -> None:
    """An unacceptable path raises BadPath whose reason says why."""
    with pytest.raises(BadPath) as excinfo:
        parse_blob_path(raw)
    assert reason_contains in excinfo.value.reason
    assert str(excinfo.value) == excinfo.value.reason


def test_accepts_c1_boundary_neighbours() -> None:
    """Characters just outside the refused control ranges (space, U+00A0) are accepted."""
    assert parse_blob_path("a%20b") == "a b"
    assert parse_blob_path("a%C2%A0b") == "a\u00a0b"


def test_length_limit_counts_decoded_characters() -> None:
    """A path of exactly MAX_PATH_CHARS characters is accepted even when every one is percent-encoded."""
    assert parse_blob_path("%41" * MAX_PATH_CHARS) == "A" * MAX_PATH_CHARS


def test_max_length_path_of_encoded_non_ascii_characters_is_accepted() -> None:
    """A 1024-character path of percent-encoded 'é' (6 raw characters each) is within the limit."""
    assert parse_blob_path("%C3%A9" * MAX_PATH_CHARS) == "é" * MAX_PATH_CHARS


def test_max_length_path_of_four_byte_characters_is_accepted() -> None:
    """A 1024-character path of percent-encoded 4-byte characters (12 raw characters each) is accepted."""
    assert parse_blob_path("%F0%9F%98%80" * MAX_PATH_CHARS) == "\U0001f600" * MAX_PATH_CHARS


def test_one_over_max_length_of_multibyte_characters_is_refused() -> None:
    """1025 percent-encoded multi-byte characters exceed the limit after decoding."""
    with pytest.raises(BadPath, match="longer than"):
        parse_blob_path("%C3%A9" * (MAX_PATH_CHARS + 1))


def test_cached_parse_gives_the_same_answers_and_never_remembers_a_refusal() -> None:
    """The memoized parser returns what the parser returns, and bad paths are refused every time."""
    assert parse_blob_path_cached("a/b%20c.png") == parse_blob_path("a/b%20c.png") == "a/b c.png"
    for _ in range(2):
        with pytest.raises(BadPath):
            parse_blob_path_cached("a/../b.png")
    long_raw = "a" * 300  # past the memo's length bound: parsed directly
    assert parse_blob_path_cached(long_raw) == long_raw
