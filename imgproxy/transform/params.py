"""Transform query parameters: parse, authorise (signature), validate and canonicalise.

`QueryParser(config).parse(raw_path, raw_query)` reads the RAW query string (as written in the URL,
so that the signature covers exactly what was sent) and returns `TransformOptions`, or `None` when
no recognised parameter is present (the original is then served untouched). Unknown parameters
(`?v=123`) are ignored and never reach `canonical`. Errors: `BadTransformParameter` (400) names
the parameter and what it must be, never the value given (the answer does not echo the client's
input), `BadSignature` (403).

Rules decided here (docs/transforms.md repeats them):
- A recognised parameter given twice (`?w=1&w=2`) is a 400 naming it: the signer and the server
  could otherwise read different values. Unknown parameters may repeat.
- A preset's parameters come first; explicit parameters add to them or override them.
- The signature is checked before any value (an unsigned caller learns nothing of the values).
  With `signing_key` set, any recognised parameter other than `preset` requires `s`; an `s` that
  is present is always checked, even beside a preset alone. Without a key, `allow_unsigned`
  decides; when false, only `preset` is accepted (and `s` is ignored).
- `dpr` is folded into the pixel size (`w=300&dpr=2` is `w=600`): the output box after `dpr` must
  fit `max_width` x `max_height`.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Final, TypeVar
from urllib.parse import unquote

from imgproxy.config import ConfigError, TransformConfig
from imgproxy.core.errors import BadSignature, BadTransformParameter
from imgproxy.transform.negotiate import FormatBucket, negotiate
from imgproxy.transform.signing import PARAMETERS, SIGNATURE, sign, sign_url, split_query, verify

__all__ = [
    "DEFAULT_QUALITY",
    "Color",
    "Fit",
    "Position",
    "QueryParser",
    "RequestedFormat",
    "TransformOptions",
    "apply_auto_format",
    "check_preset",
    "sign",
    "sign_url",
]

PRESET: Final = "preset"
PARSE_MEMO_ITEMS: Final = 4096  # (path, query) pairs whose options are remembered
# Longer pairs are parsed each time, not remembered: the memo's keys hold at most 4,096 x 512
# characters, about 3.5 MiB with Python's overhead and the options.
PARSE_MEMO_MAX_CHARS: Final = 512


class Fit(enum.StrEnum):
    """sharp's meanings: fit within, fill and crop, letterbox, stretch, cover without crop."""

    INSIDE = "inside"
    COVER = "cover"
    CONTAIN = "contain"
    FILL = "fill"
    OUTSIDE = "outside"


class Position(enum.StrEnum):
    """What `cover` keeps: a side or corner, the centre, or one of libvips' smart crops."""

    CENTER = "center"
    NORTH = "north"
    NORTHEAST = "northeast"
    EAST = "east"
    SOUTHEAST = "southeast"
    SOUTH = "south"
    SOUTHWEST = "southwest"
    WEST = "west"
    NORTHWEST = "northwest"
    ATTENTION = "attention"
    ENTROPY = "entropy"


class RequestedFormat(enum.StrEnum):
    """`fm` as asked: a format, `auto` (negotiated from `Accept`), or absent (`original`)."""

    JPEG = "jpeg"
    PNG = "png"
    WEBP = "webp"
    AVIF = "avif"
    AUTO = "auto"
    JSON = "json"  # facts about the source, not pixels (transform/info.py)
    ORIGINAL = "original"


# Encoder quality when `q` is absent; PNG is lossless (zlib compression instead).
DEFAULT_QUALITY: Final[Mapping[str, int]] = {"jpeg": 80, "webp": 80, "avif": 60, "gif": 80}


@dataclass(frozen=True, slots=True)
class Color:
    """An sRGB colour with alpha, 0-255 each."""

    red: int
    green: int
    blue: int
    alpha: int = 255

    @property
    def hex(self) -> str:
        """`rrggbb`, or `rrggbbaa` when not opaque."""
        rgb = f"{self.red:02x}{self.green:02x}{self.blue:02x}"
        return rgb if self.alpha == 255 else f"{rgb}{self.alpha:02x}"


WHITE: Final = Color(255, 255, 255)


@dataclass(frozen=True, slots=True)
class TransformOptions:
    """Validated, normalised transform options; `width`/`height` are output pixels (after `dpr`)."""

    width: int | None = None
    height: int | None = None
    fit: Fit = Fit.INSIDE
    position: Position = Position.CENTER
    enlarge: bool = False
    format: RequestedFormat = RequestedFormat.ORIGINAL
    quality: int | None = None
    background: Color = WHITE

    @property
    def canonical(self) -> str:
        """Every option that differs from its default, in a fixed order (`w=300&fit=cover&fm=auto`)."""
        return "&".join(self._parts(self.format.value, self.quality))

    def key(self, bucket: FormatBucket) -> str:
        """The options and the output bucket, as a cache key or ETag should hold them.

        `fm=auto` that chose WebP is the same variant as `fm=webp`; `q` is dropped where it
        changes nothing (PNG, or the format's default quality).
        """
        quality = self.quality
        if bucket is FormatBucket.PNG or quality == DEFAULT_QUALITY.get(bucket.value):
            quality = None
        return "&".join(self._parts(bucket.value, quality))

    def _parts(self, fm: str, quality: int | None) -> list[str]:
        parts: list[str] = []
        if self.width is not None:
            parts.append(f"w={self.width}")
        if self.height is not None:
            parts.append(f"h={self.height}")
        if self.fit is not Fit.INSIDE:
            parts.append(f"fit={self.fit.value}")
        if self.position is not Position.CENTER:
            parts.append(f"pos={self.position.value}")
        if self.enlarge:
            parts.append("enlarge=1")
        if fm != RequestedFormat.ORIGINAL.value:
            parts.append(f"fm={fm}")
        if quality is not None:
            parts.append(f"q={quality}")
        if self.background != WHITE:
            parts.append(f"bg={self.background.hex}")
        return parts

    @property
    def resizes(self) -> bool:
        """Whether a target size is given (else only the format or encoding changes)."""
        return self.width is not None or self.height is not None

    @property
    def reencodes_only(self) -> bool:
        """No size, quality or background: the source itself is right when the format matches."""
        return not self.resizes and self.quality is None and self.background == WHITE

    @property
    def varies_with_accept(self) -> bool:
        """Whether the answer depends on `Accept` (`fm=auto`): it must carry `Vary: Accept`."""
        return self.format is RequestedFormat.AUTO

    def bucket(self, accept: str | None, auto_avif: bool) -> FormatBucket:
        """The output format bucket for a request with this `Accept` header."""
        if self.format is RequestedFormat.AUTO:
            return negotiate(accept, auto_avif)
        return FormatBucket(self.format.value)


def _normalised(options: TransformOptions) -> TransformOptions:
    """One form per distinct output: options that cannot matter are set to their defaults."""
    if options.format is RequestedFormat.JSON:
        # The answer describes the source: no other option changes it, so none keys the cache.
        return TransformOptions(format=RequestedFormat.JSON)
    if options.width is None or options.height is None:
        # With one side (or none) every fit scales to it: there is no box to crop or fill.
        options = dataclasses.replace(options, fit=Fit.INSIDE)
        if not options.resizes:
            options = dataclasses.replace(options, enlarge=False)
    if options.fit is not Fit.COVER:
        options = dataclasses.replace(options, position=Position.CENTER)
    return options


_INTEGER: Final = re.compile(r"[0-9]{1,6}")
_DECIMAL: Final = re.compile(r"[0-9]{1,2}(\.[0-9]{1,3})?")
_HEX_COLOR: Final = re.compile(r"[0-9a-fA-F]{3}|[0-9a-fA-F]{6}|[0-9a-fA-F]{8}")
_FORMAT_ALIASES: Final = {"jpg": "jpeg"}
_POSITION_ALIASES: Final = {"centre": "center"}
MAX_DPR: Final = Decimal(4)


def _integer(name: str, value: str, low: int, high: int, high_name: str = "") -> int:
    if not _INTEGER.fullmatch(value) or not low <= int(value) <= high:
        bound = f"{high} (transform.{high_name})" if high_name else str(high)
        raise BadTransformParameter(name, f"must be an integer from {low} to {bound}")
    return int(value)


_Choice = TypeVar("_Choice", bound=enum.StrEnum)


def _choice(name: str, value: str, kind: type[_Choice], aliases: Mapping[str, str]) -> _Choice:
    lowered = value.lower()
    try:
        return kind(aliases.get(lowered, lowered))
    except ValueError:
        allowed = ", ".join(member.value for member in kind if member.value != "original")
        raise BadTransformParameter(name, f"must be one of {allowed}") from None


def _color(name: str, value: str) -> Color:
    if not _HEX_COLOR.fullmatch(value):
        raise BadTransformParameter(name, "must be a hex colour (rgb, rrggbb or rrggbbaa)")
    if len(value) == 3:
        value = "".join(digit * 2 for digit in value)
    channels = [int(value[i : i + 2], 16) for i in range(0, len(value), 2)]
    return Color(*channels)


def _box_side(values: Mapping[str, str], name: str, dpr: Decimal, limit: int, limit_name: str) -> int | None:
    if name not in values:
        return None
    size = _integer(name, values[name], 1, limit, limit_name)
    pixels = int((size * dpr).to_integral_value(ROUND_HALF_UP))
    if pixels > limit:
        raise BadTransformParameter(
            "dpr" if dpr != 1 else name,
            f"{name} x dpr is beyond transform.{limit_name} ({limit})",
        )
    return pixels


def build_options(values: Mapping[str, str], max_width: int, max_height: int) -> TransformOptions:
    """Validate decoded parameter values (name -> value, without `preset` and `s`) into options."""
    dpr = Decimal(1)
    if "dpr" in values:
        text = values["dpr"]
        if not _DECIMAL.fullmatch(text) or not 1 <= Decimal(text) <= MAX_DPR:
            raise BadTransformParameter("dpr", "must be a number from 1 to 4")
        dpr = Decimal(text)
    width = _box_side(values, "w", dpr, max_width, "max_width")
    height = _box_side(values, "h", dpr, max_height, "max_height")
    enlarge = False
    if "enlarge" in values:
        enlarge = bool(_integer("enlarge", values["enlarge"], 0, 1))
    options = TransformOptions(
        width=width,
        height=height,
        fit=_choice("fit", values["fit"], Fit, {}) if "fit" in values else Fit.INSIDE,
        position=(
            _choice("pos", values["pos"], Position, _POSITION_ALIASES) if "pos" in values else Position.CENTER
        ),
        enlarge=enlarge,
        format=(
            _choice("fm", values["fm"], RequestedFormat, _FORMAT_ALIASES)
            if "fm" in values
            else RequestedFormat.ORIGINAL
        ),
        quality=_integer("q", values["q"], 1, 100) if "q" in values else None,
        background=_color("bg", values["bg"]) if "bg" in values else WHITE,
    )
    if "fm" in values and options.format is RequestedFormat.ORIGINAL:  # "original" is not a value of fm
        raise BadTransformParameter("fm", "must be one of jpeg, png, webp, avif, auto, json")
    return _normalised(options)


def _recognised(raw_query: str) -> dict[str, str]:
    """Recognised parameters, name -> value exactly as written; a repeated one is a 400."""
    found: dict[str, str] = {}
    for name, value in split_query(raw_query):
        if name not in PARAMETERS:
            continue
        if name in found:
            raise BadTransformParameter(name, "given more than once")
        found[name] = value
    return found


def _preset_values(query: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for name, value in split_query(query):
        if name not in PARAMETERS or name in (PRESET, SIGNATURE):
            raise BadTransformParameter(name, "is not a parameter a preset can set")
        if name in values:
            raise BadTransformParameter(name, "given more than once")
        values[name] = unquote(value)
    return values


def check_presets(config: TransformConfig) -> None:
    """Raise `ConfigError` naming `transform.presets.<name>` for a preset the server could not
    serve: checked by the same parser that reads request queries, at start-up."""
    for name, query in config.presets.items():
        problem = check_preset(query, config)
        if problem is not None:
            raise ConfigError(f"transform.presets.{name}: {problem}")


def check_preset(query: str, config: TransformConfig) -> str | None:
    """Why this preset's query cannot be served (a message naming the parameter), or None."""
    try:
        values = _preset_values(query)
        if not values:
            return "sets no parameter"
        build_options(values, config.max_width, config.max_height)
    except BadTransformParameter as exc:
        return str(exc)
    return None


class QueryParser:
    """Turns a request's raw path and query into `TransformOptions` under one `[transform]` config."""

    def __init__(self, config: TransformConfig) -> None:
        self._config = config
        self._presets = {name: _preset_values(query) for name, query in config.presets.items()}
        # The answer for one (path, query) never changes (a signature verified once verifies every
        # time): remembered, so revalidations, ranges and HEADs do not parse and verify it again.
        # Refusals raise and are not remembered; long queries are not kept.
        self._remembered = functools.lru_cache(maxsize=PARSE_MEMO_ITEMS)(self._parse)

    def parse(self, raw_path: str, raw_query: str) -> TransformOptions | None:
        """Options for `raw_path` (as written after `/images/`) and `raw_query`; None: no transform.

        Does not look at `transform.enabled` or `auto_format` (see `apply_auto_format`).
        """
        if len(raw_path) + len(raw_query) > PARSE_MEMO_MAX_CHARS:
            return self._parse(raw_path, raw_query)
        return self._remembered(raw_path, raw_query)

    def _parse(self, raw_path: str, raw_query: str) -> TransformOptions | None:
        given = _recognised(raw_query)
        if not given:
            return None
        self._authorise(raw_path, given)
        values: dict[str, str] = {}
        if PRESET in given:
            preset = unquote(given[PRESET])
            if preset not in self._presets:
                raise BadTransformParameter(PRESET, "no such preset")
            values.update(self._presets[preset])
        for name, value in given.items():
            if name not in (PRESET, SIGNATURE):
                values[name] = unquote(value)
        if not values:  # `?s=...` alone, verified: nothing to do
            return None
        config = self._config
        return build_options(values, config.max_width, config.max_height)

    def _authorise(self, raw_path: str, given: Mapping[str, str]) -> None:
        config = self._config
        arbitrary = [name for name in given if name not in (PRESET, SIGNATURE)]
        if config.signing_key:
            if SIGNATURE not in given:
                if arbitrary:
                    raise BadSignature("missing signature (s)")
                return
            signature = unquote(given[SIGNATURE])
            if not verify(config.signing_key, raw_path, given.items(), signature):
                raise BadSignature("wrong signature (s)")
        elif arbitrary and not config.allow_unsigned:
            raise BadSignature("only presets are accepted (transform.allow_unsigned is false)")


def apply_auto_format(options: TransformOptions | None, config: TransformConfig) -> TransformOptions | None:
    """With `transform.auto_format`, a request without `fm` (a plain one too) gets `fm=auto`."""
    if not config.auto_format:
        return options
    if options is None:
        return TransformOptions(format=RequestedFormat.AUTO)
    if options.format is RequestedFormat.ORIGINAL:
        return dataclasses.replace(options, format=RequestedFormat.AUTO)
    return options
