"""The transform workloads as URLs: one case per row of the in-process limit, for imgproxy and thumbor.

Each case is a `bench.transforms.limit.Case` (source, box, format, quality) written as an imgproxy
query and as a thumbor path. A cold run must make a new variant with every request and yet the
same work: each URL carries a number `n` in a parameter that IS part of both servers' cache keys
but cannot change the output. For a box that the source's height bounds (4:3 and 3:2 sources into
300x200), `n` is the box's width from the case's width up; for the 800 px wide case (no height),
`n` is a box height from just above the resized height up (1920x1280 into 800 x n is 800x533 for
every n >= 534). So request i of a cold run asks for box width (or height) `first + i`, an output
of exactly the warm case's pixel size. Warm runs ask for `n = first` only.

`fm=json` normalises every other parameter away (one description per source), so its cold runs
vary the source instead: `n` is in the blob name, `tx/json/<n>.jpg`, copies of one source seeded
as distinct blobs (`bench.transforms.seed`); the warm URL is copy 0.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from .limit_cases import CASES, Case

PLACEHOLDER: Final = "{n}"
SOURCE_PREFIX: Final = "tx/"  # blob names under this prefix in the bench container
JSON_PREFIX: Final = SOURCE_PREFIX + "json/"  # fm=json's copies of its source, one per cold request


@dataclass(frozen=True, slots=True)
class TransformCase:
    """One workload: `limit` (what the in-process loop does) as an imgproxy and a thumbor URL."""

    slug: str
    limit: Case
    first: int  # the warm URL's `n`; cold request i uses first + 1 + i and up
    varies: str  # "width" or "height": which side of the box `n` is; "source": which copy (fm=json)
    thumbor: bool = True  # whether thumbor 7.8 (Pillow engine, no cairosvg) can do the case

    @property
    def blob(self) -> str:
        """The warm URL's source blob."""
        return json_blob(self.first) if self.varies == "source" else SOURCE_PREFIX + self.limit.source

    @property
    def content_type(self) -> str:
        return "application/json" if self.limit.fmt == "json" else f"image/{self.limit.fmt}"

    def imgproxy_template(self) -> str:
        """`/images/<blob>?...` with `{n}` where the varying side goes (last, for the Lua script)."""
        case = self.limit
        if self.varies == "source":
            return f"/images/{JSON_PREFIX}{PLACEHOLDER}.jpg?fm={case.fmt}"
        params = [f"fm={case.fmt}"]
        if case.quality:
            params.append(f"q={case.quality}")
        if self.varies == "width":
            params += [f"h={case.height}", f"w={PLACEHOLDER}"]
        else:
            params += [f"w={case.width}", f"h={PLACEHOLDER}"]
        return f"/images/{self.blob}?" + "&".join(params)

    def thumbor_template(self, static_host: str) -> str:
        """`/unsafe/fit-in/WxH/filters:.../<host>/<file>`: thumbor's fit-in is imgproxy's `inside`."""
        case = self.limit
        if not self.thumbor:
            raise ValueError(f"thumbor cannot do {self.slug}")
        box = f"{PLACEHOLDER}x{case.height}" if self.varies == "width" else f"{case.width}x{PLACEHOLDER}"
        filters = []
        # Only a JPEG source stays JPEG in thumbor unless told otherwise (a HEIC's answer is HEIF).
        if case.fmt != "jpeg" or not case.source.endswith(".jpg"):
            filters.append(f"format({case.fmt})")
        if case.quality:
            filters.append(f"quality({case.quality})")
        filter_part = "filters:" + ":".join(filters) + "/" if filters else ""
        return f"/unsafe/fit-in/{box}/{filter_part}{static_host}/{case.source}"


def json_blob(n: int) -> str:
    """Copy `n` of fm=json's source."""
    return f"{JSON_PREFIX}{n}.jpg"


def fill(template: str, n: int) -> str:
    """The URL path of `template` for the number `n`."""
    prefix, suffix = split(template)
    return f"{prefix}{n}{suffix}"


def split(template: str) -> tuple[str, str]:
    """(before, after) the single `{n}` of a template."""
    prefix, sep, suffix = template.partition(PLACEHOLDER)
    if not sep or PLACEHOLDER in suffix:
        raise ValueError(f"{template!r} must hold {PLACEHOLDER} exactly once")
    return prefix, suffix


def _by_name(name: str) -> Case:
    return next(case for case in CASES if case.name == name)


TRANSFORM_CASES: Final = {
    case.slug: case
    for case in (
        TransformCase("12mp-jpeg", _by_name("12 MP JPEG -> 300x200 JPEG q80"), 300, "width"),
        TransformCase("12mp-webp", _by_name("12 MP JPEG -> 300x200 WebP q80"), 300, "width"),
        TransformCase("2.5mp-800-jpeg", _by_name("2.5 MP JPEG -> 800 px JPEG q80"), 534, "height"),
        TransformCase("png-alpha", _by_name("1 MP PNG (alpha) -> 300x200 PNG"), 300, "width"),
        TransformCase("12mp-avif", _by_name("12 MP JPEG -> 300x200 AVIF q60"), 300, "width"),
        # thumbor reads HEIC with pillow-heif in its venv; it draws SVG only with cairosvg (not there),
        # and has no description with placeholders (its /meta is the operations it would run).
        TransformCase("heic-12mp-jpeg", _by_name("12 MP HEIC -> 300x200 JPEG q80"), 300, "width"),
        TransformCase("svg-512-png", _by_name("SVG -> 512 px PNG"), 321, "height", thumbor=False),
        TransformCase("2.5mp-json", _by_name("2.5 MP JPEG -> fm=json"), 0, "source", thumbor=False),
    )
}
# `make bench`'s default: each new input case adds over a minute (cold, thumbor, limit, warm runs).
DEFAULT_CASES: Final = ("12mp-jpeg", "12mp-webp", "2.5mp-800-jpeg", "png-alpha", "12mp-avif")
JSON_COPIES_PER_REPEAT: Final = 500  # more than a 10 s cold run of fm=json answers on two cores

# The memory figure: 16 concurrent cold transforms of 24 MP JPEGs, a mix of what a site asks for
# (the same mix as the engine's memory test), each of a different source blob.
RSS_SOURCE: Final = "photo-24mp.jpg"
RSS_REQUESTS: Final = 16
RSS_QUERIES: Final = (
    "w=300&h=200&fm=jpeg",
    "w=800&fm=webp",
    "w=1600&fm=jpeg",
    "w=400&h=400&fit=cover&pos=attention&fm=webp",
)


def rss_blob(index: int) -> str:
    return f"{SOURCE_PREFIX}rss/{index:02d}-{RSS_SOURCE}"


def with_comment(jpeg: bytes, text: str) -> bytes:
    """`jpeg` with a COM segment after SOI: other bytes (another blob, ETag, cache entry), same pixels.

    Sixteen distinct 24 MP sources then cost one encode instead of sixteen.
    """
    if jpeg[:2] != b"\xff\xd8":
        raise ValueError("not a JPEG")
    payload = text.encode()
    return jpeg[:2] + b"\xff\xfe" + struct.pack(">H", len(payload) + 2) + payload + jpeg[2:]
