"""Client Hints (`transform.client_hints`): a sizeless transform's width from the browser's hint.

A request that names a transform (a parameter or a preset) but no size (`w`, `h`) takes its width
from `Sec-CH-Width`, else the legacy `Width`, rounded up to the next rung of
`transform.width_ladder` (the top rung above it): a hint can make at most one variant per rung.
Both hints are in physical pixels (they include the device pixel ratio: RFC 8942's registry, the
WICG Client Hints for responsive images), so `Sec-CH-DPR` / `DPR` choose nothing: alone they give
no width, beside a width hint they are already in it, and we do not let them multiply an explicit
`w` (a signed URL would then mean different sizes on different screens, and every `w` times every
DPR would be a variant). A hint that is not a positive integer of at most six digits is ignored
(a header the browser sent, not the client's request: never a 400).

Pure functions; the web layer applies them (`web.images`) and the hot path's memo keys a hinted
variant by its rung (`transform.variants.HotKeys`). Plain requests (no transform parameter) are
never resized by a hint.
"""

from __future__ import annotations

import bisect
import dataclasses
import re
from collections.abc import Mapping, Sequence
from typing import Final

from imgproxy.transform.params import RequestedFormat, TransformOptions

SEC_CH_WIDTH: Final = "Sec-CH-Width"
WIDTH: Final = "Width"  # the legacy name (Chrome before 67, the 2015-2017 drafts)
WIDTH_HINTS: Final = (SEC_CH_WIDTH, WIDTH)  # read in this order: the first valid one counts
ACCEPT_CH: Final = "Accept-CH"
# Asked for on the answers a hint can change; browsers heed it on the page's own response only,
# so the page must ask too (docs/transforms.md#client-hints).
ACCEPTED_HINTS: Final = SEC_CH_WIDTH
VARY_HINTS: Final = f"{SEC_CH_WIDTH}, {WIDTH}"
_HINT: Final = re.compile(r"[0-9]{1,6}")


def width_hint(headers: Mapping[str, str]) -> int | None:
    """The width hint in physical pixels (`Sec-CH-Width`, else `Width`), or None: none is valid."""
    for name in WIDTH_HINTS:
        value = headers.get(name)
        if value is None:
            continue
        value = value.strip(" \t")  # optional whitespace around a field value (RFC 9110 5.5)
        if _HINT.fullmatch(value) and int(value) >= 1:
            return int(value)
    return None


def rung(width: int, ladder: Sequence[int]) -> int:
    """The smallest rung of `ladder` (ascending) at least `width`; the top rung above them all."""
    index = bisect.bisect_left(ladder, width)
    return ladder[index] if index < len(ladder) else ladder[-1]


def hint_rung(headers: Mapping[str, str], ladder: Sequence[int]) -> int | None:
    """The rung a request's width hint chooses, or None (no valid hint)."""
    width = width_hint(headers)
    return None if width is None else rung(width, ladder)


def takes_hints(options: TransformOptions) -> bool:
    """Whether these (explicitly given) options leave the size to a hint: neither `w` nor `h`, and
    pixels asked for (`fm=json` describes the source whatever the width).

    A request that names `h` chose its box (a hint beside it would change what `fit` meant).
    """
    return not options.resizes and options.format is not RequestedFormat.JSON


def with_width(options: TransformOptions, width: int | None) -> TransformOptions:
    """`options` at the hinted `width` (as if `w` were given), or unchanged when there is none."""
    return options if width is None else dataclasses.replace(options, width=width)


def hint_headers(vary_accept: bool) -> dict[str, str]:
    """`Vary` and `Accept-CH` of an answer a hint can change (`Accept` too when `fm=auto`)."""
    vary = f"Accept, {VARY_HINTS}" if vary_accept else VARY_HINTS
    return {"Vary": vary, ACCEPT_CH: ACCEPTED_HINTS}
