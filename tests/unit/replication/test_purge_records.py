"""The purge log's reading of stream ids and its verdict on a follower's position: pure, no server."""

from __future__ import annotations

import pytest

from imgproxy.replication.purge_records import lost_reason, stream_id


def test_stream_ids_compare_as_numbers_not_as_text() -> None:
    """9-0 comes before 10-0 and 1-9 before 1-10 (as text both orders are the other way round)."""
    ids = [stream_id(text) for text in ("9-0", "10-0", "1-9", "1-10")]
    assert ids == [(9, 0), (10, 0), (1, 9), (1, 10)]
    assert sorted(["10-0", "9-0", "1-10", "1-9"], key=lambda text: stream_id(text) or (0, 0)) == [
        "1-9",
        "1-10",
        "9-0",
        "10-0",
    ]
    assert stream_id("18446744073709551615-18446744073709551615") == (2**64 - 1, 2**64 - 1)


@pytest.mark.parametrize(
    "text", ["", "1", "1-", "-1", "a-b", "1-2-3", " 1-0", "1-0 ", "\uff11-0", "18446744073709551616-0"]
)
def test_anything_but_a_complete_stream_id_is_refused(text: str) -> None:
    """No sequence, extra parts, blanks, non-ASCII digits, or beyond 64 bits: not an id."""
    assert stream_id(text) is None


@pytest.mark.parametrize(
    ("epoch", "generated", "last_entry", "lost"),
    [
        pytest.param("e1", (5, 0), (5, 0), False, id="at-the-end"),
        pytest.param("e1", (5, 0), (0, 0), False, id="at-the-end-of-a-stream-trimmed-empty"),
        pytest.param("e1", (9, 0), (9, 0), False, id="entries-to-read"),
        pytest.param("e1", (9, 0), (4, 0), True, id="appended-then-trimmed-empty"),
        pytest.param("e1", (9, 0), (5, 0), True, id="appended-then-trimmed-back-to-our-id"),
        pytest.param("e1", (4, 7), (4, 7), True, id="stream-went-back"),
        pytest.param("e2", (5, 0), (5, 0), True, id="another-epoch"),
        pytest.param(None, (0, 0), (0, 0), True, id="epoch-gone"),
    ],
)
def test_a_follower_at_5_0_has_lost_entries_only_when_the_stream_says_so(
    epoch: str | None, generated: tuple[int, int], last_entry: tuple[int, int], lost: bool
) -> None:
    """Lost: another epoch, the stream's last id behind the follower's, or ahead with nothing left
    to read after it; otherwise it reads on."""
    assert (lost_reason("e1", (5, 0), epoch, generated, last_entry) is not None) is lost
