"""Tables for `decide` and `resolve_range`: RFC 9110 preconditions and ranges, no I/O."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from aiohttp.helpers import ETag
from aiohttp.test_utils import make_mocked_request

from imgproxy.core.blob import BlobMeta
from imgproxy.http.semantics import AnswerKind, Conditions, Decision, decide, resolve_range

MODIFIED = datetime(2026, 5, 1, 12, 0, 0, 500_000, tzinfo=UTC)
META = BlobMeta(size=1000, etag='"0xABC"', last_modified=MODIFIED, content_type="image/png")
PARTIAL, FULL = AnswerKind.PARTIAL, AnswerKind.FULL


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        ("bytes=0-99", 1000, Decision(PARTIAL, 0, 99)),
        ("bytes=0-0", 1000, Decision(PARTIAL, 0, 0)),
        ("bytes=990-", 1000, Decision(PARTIAL, 990, 999)),
        ("bytes=-10", 1000, Decision(PARTIAL, 990, 999)),
        ("bytes=-5000", 1000, Decision(PARTIAL, 0, 999)),
        ("bytes=500-5000", 1000, Decision(PARTIAL, 500, 999)),
        ("Bytes=1-2", 1000, Decision(PARTIAL, 1, 2)),
        (" bytes=1-2 ", 1000, Decision(PARTIAL, 1, 2)),
        ("bytes=1000-", 1000, Decision(AnswerKind.RANGE_NOT_SATISFIABLE)),
        ("bytes=1000-2000", 1000, Decision(AnswerKind.RANGE_NOT_SATISFIABLE)),
        ("bytes=-0", 1000, Decision(AnswerKind.RANGE_NOT_SATISFIABLE)),
        ("bytes=0-", 0, Decision(AnswerKind.RANGE_NOT_SATISFIABLE)),
        ("bytes=-1", 0, Decision(AnswerKind.RANGE_NOT_SATISFIABLE)),
        ("bytes=5-1", 1000, None),
        ("bytes=0-1,5-9", 1000, None),
        ("bytes=", 1000, None),
        ("bytes=-", 1000, None),
        ("bytes=a-b", 1000, None),
        ("bytes=+1-2", 1000, None),
        ("bytes = 1-2", 1000, None),
        ("items=1-2", 1000, None),
        ("", 1000, None),
        ("bytes=000000000000000000000000000001-2", 1000, Decision(PARTIAL, 1, 2)),
        ("bytes=" + "9" * 5000 + "-", 1000, Decision(AnswerKind.RANGE_NOT_SATISFIABLE)),
        ("bytes=-" + "9" * 5000, 1000, Decision(PARTIAL, 0, 999)),
        ("bytes=0-" + "9" * 5000, 1000, Decision(PARTIAL, 0, 999)),
        ("bytes=" + "9" * 5000 + "-1", 1000, None),
    ],
)
def test_resolve_range_table(header: str, size: int, expected: Decision | None) -> None:
    """Each Range form resolves to the span RFC 9110 section 14.1.2 gives, 416, or is ignored."""
    assert resolve_range(header, size) == expected


def etags(*values: str, weak: bool = False) -> tuple[ETag, ...]:
    return tuple(ETag(value=v, is_weak=weak) for v in values)


@pytest.mark.parametrize(
    ("conditions", "outcome"),
    [
        (Conditions(), FULL),
        (Conditions(if_none_match=etags("0xABC")), AnswerKind.NOT_MODIFIED),
        (Conditions(if_none_match=etags("0xABC", weak=True)), AnswerKind.NOT_MODIFIED),
        (Conditions(if_none_match=etags("other", "0xABC")), AnswerKind.NOT_MODIFIED),
        (Conditions(if_none_match=etags("*")), AnswerKind.NOT_MODIFIED),
        (Conditions(if_none_match=etags("other")), FULL),
        (Conditions(if_modified_since=MODIFIED.replace(microsecond=0)), AnswerKind.NOT_MODIFIED),
        (Conditions(if_modified_since=datetime(2027, 1, 1, tzinfo=UTC)), AnswerKind.NOT_MODIFIED),
        (Conditions(if_modified_since=datetime(2025, 1, 1, tzinfo=UTC)), FULL),
        # If-None-Match takes precedence over If-Modified-Since (section 13.2.2).
        (Conditions(if_none_match=etags("other"), if_modified_since=MODIFIED), FULL),
        (Conditions(if_match=etags("0xABC")), FULL),
        (Conditions(if_match=etags("*")), FULL),
        (Conditions(if_match=etags("0xABC", weak=True)), AnswerKind.PRECONDITION_FAILED),
        (Conditions(if_match=etags("other")), AnswerKind.PRECONDITION_FAILED),
        (Conditions(if_unmodified_since=datetime(2025, 1, 1, tzinfo=UTC)), AnswerKind.PRECONDITION_FAILED),
        (Conditions(if_unmodified_since=MODIFIED.replace(microsecond=0)), FULL),
        # If-Match decides before If-None-Match.
        (Conditions(if_match=etags("other"), if_none_match=etags("0xABC")), AnswerKind.PRECONDITION_FAILED),
    ],
)
def test_preconditions_table(conditions: Conditions, outcome: AnswerKind) -> None:
    """Preconditions are evaluated in the order and with the comparisons of RFC 9110."""
    assert decide(conditions, META).outcome is outcome


@pytest.mark.parametrize(
    ("if_range", "outcome"),
    [
        (None, PARTIAL),
        ('"0xABC"', PARTIAL),
        ('W/"0xABC"', FULL),
        ('"0xOLD"', FULL),
        ("Fri, 01 May 2026 12:00:00 GMT", PARTIAL),
        ("Fri, 01 May 2026 12:00:01 GMT", FULL),
        ("not a date", FULL),
    ],
)
def test_if_range_table(if_range: str | None, outcome: AnswerKind) -> None:
    """If-Range honours the range only for a strong ETag match or the exact date."""
    conditions = Conditions(range="bytes=0-9", if_range=if_range)
    assert decide(conditions, META).outcome is outcome


def test_head_ignores_range() -> None:
    """Range is defined for GET only."""
    assert decide(Conditions(method="HEAD", range="bytes=0-9"), META) == Decision(FULL, 0, 999)


def test_not_modified_wins_over_range() -> None:
    """A matching If-None-Match answers 304 even with a Range header."""
    conditions = Conditions(range="bytes=0-9", if_none_match=etags("0xABC"))
    assert decide(conditions, META).outcome is AnswerKind.NOT_MODIFIED


@pytest.mark.parametrize(
    ("headers", "plain"),
    [
        ({}, True),
        ({"User-Agent": "x", "Accept": "*/*"}, True),
        ({"If-Range": '"0xABC"'}, True),  # If-Range without Range changes nothing
        ({"Range": "bytes=0-1"}, False),
        ({"if-none-match": '"0xABC"'}, False),
        ({"If-Modified-Since": "Fri, 01 May 2026 12:00:00 GMT"}, False),
        ({"If-Match": "*"}, False),
        ({"If-Unmodified-Since": "Fri, 01 May 2026 12:00:00 GMT"}, False),
    ],
)
def test_plain_requests_skip_parsing_and_decide_full(headers: dict[str, str], plain: bool) -> None:
    """Without conditional or Range headers `from_request` gives the shared plain Conditions."""
    request = make_mocked_request("GET", "/images/x.png", headers=headers)
    conditions = Conditions.from_request(request)
    assert conditions.plain is plain
    if plain:
        assert decide(conditions, META) == Decision(FULL, 0, 999)
