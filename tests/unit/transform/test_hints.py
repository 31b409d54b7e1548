"""`transform.hints`: the width hint read from the headers, its rung on the ladder, which options
take it, and the headers of an answer it can change."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict

from imgproxy.config.sections import DEFAULT_WIDTH_LADDER
from imgproxy.transform.hints import hint_headers, hint_rung, rung, takes_hints, width_hint, with_width
from imgproxy.transform.params import Fit, RequestedFormat, TransformOptions, build_options


@pytest.mark.parametrize(
    ("width", "expected"),
    [(1, 160), (160, 160), (161, 320), (333, 480), (480, 480), (481, 640), (2559, 2560), (2560, 2560)],
)
def test_a_width_is_rounded_up_to_the_next_rung(width: int, expected: int) -> None:
    """A width on a rung stays; between two it takes the higher one."""
    assert rung(width, DEFAULT_WIDTH_LADDER) == expected


@pytest.mark.parametrize("width", [2561, 4000, 999_999])
def test_a_width_above_the_top_rung_is_the_top_rung(width: int) -> None:
    """Beyond the ladder a hint gets the top rung, never a new variant."""
    assert rung(width, DEFAULT_WIDTH_LADDER) == 2560


def test_a_one_rung_ladder_always_gives_that_rung() -> None:
    """A ladder of one width makes every hint that width."""
    assert [rung(w, (600,)) for w in (1, 600, 601)] == [600, 600, 600]


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Sec-CH-Width": "333"}, 333),
        ({"sec-ch-width": " 333 "}, 333),
        ({"Width": "700"}, 700),
        ({"Sec-CH-Width": "333", "Width": "700"}, 333),  # the standard name wins
        ({"Sec-CH-Width": "abc", "Width": "700"}, 700),  # a bad one is skipped, not an error
        ({"Sec-CH-Width": "999999"}, 999_999),
        ({}, None),
        ({"Sec-CH-DPR": "2"}, None),  # DPR alone gives no width
        ({"DPR": "2"}, None),
    ],
)
def test_width_hint_reads_sec_ch_width_then_width(headers: dict[str, str], expected: int | None) -> None:
    """`Sec-CH-Width` first, else `Width`; names case-insensitively (as aiohttp gives them)."""
    assert width_hint(CIMultiDict(headers)) == expected


@pytest.mark.parametrize(
    "value", ["0", "-1", "1.5", "", "1e3", "1000000", "333, 480", "0x10", "+3", "\uff13\uff13\uff13", "33 3"]
)
def test_bad_hint_values_are_ignored(value: str) -> None:
    """Not a positive integer of at most six ASCII digits: no width (the request goes on as if
    no hint had been sent), whichever of the two names carries it."""
    assert width_hint(CIMultiDict({"Sec-CH-Width": value})) is None
    assert width_hint(CIMultiDict({"Width": value})) is None


def test_hint_rung_combines_reading_and_rounding() -> None:
    """The rung of a request's hint, None without a valid one; a DPR hint changes nothing."""
    ladder = DEFAULT_WIDTH_LADDER
    assert hint_rung(CIMultiDict({"Sec-CH-Width": "333", "Sec-CH-DPR": "2"}), ladder) == 480
    assert hint_rung(CIMultiDict({"Width": "3000"}), ladder) == 2560
    assert hint_rung(CIMultiDict({"Sec-CH-DPR": "2"}), ladder) is None


@pytest.mark.parametrize(
    ("values", "takes"),
    [
        ({"fm": "webp"}, True),
        ({"q": "50"}, True),
        ({"dpr": "2"}, True),  # dpr without a size sets nothing
        ({"w": "300"}, False),
        ({"h": "200"}, False),  # h chose the box: a hint would change what fit means
        ({"w": "300", "h": "200", "fit": "cover"}, False),
        ({"fm": "json"}, False),  # describes the source: one variant whatever the width
    ],
)
def test_only_options_without_a_size_take_a_hint(values: dict[str, str], takes: bool) -> None:
    """Options that name `w` or `h` keep their size; the others may take a hint's width."""
    assert takes_hints(build_options(values, 8192, 8192)) is takes


def test_with_width_sets_the_width_and_keeps_the_rest() -> None:
    """The hinted options are the options of `w=<rung>` with the same format and quality, so the
    variant is the one an explicit `w` names (one cache entry for both)."""
    options = build_options({"fm": "webp", "q": "50"}, 8192, 8192)
    hinted = with_width(options, 480)
    assert hinted == TransformOptions(width=480, fit=Fit.INSIDE, format=RequestedFormat.WEBP, quality=50)
    assert hinted == build_options({"w": "480", "fm": "webp", "q": "50"}, 8192, 8192)
    assert with_width(options, None) is options


def test_hint_headers_list_the_hints_and_accept_when_negotiated() -> None:
    """`Vary` names both width hints (and `Accept` first for `fm=auto`); `Accept-CH` asks for
    `Sec-CH-Width` only (DPR chooses nothing)."""
    assert hint_headers(False) == {"Vary": "Sec-CH-Width, Width", "Accept-CH": "Sec-CH-Width"}
    assert hint_headers(True) == {"Vary": "Accept, Sec-CH-Width, Width", "Accept-CH": "Sec-CH-Width"}
