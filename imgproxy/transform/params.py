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

Reading each value is `values`' job; its types (`Fit`, `Position`, `RequestedFormat`, `Color`,
`Rect`, `Flip`, `FocalPoint`) stay importable from here.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Final
from urllib.parse import unquote

from imgproxy.config import ConfigError, TransformConfig
from imgproxy.core.errors import BadSignature, BadTransformParameter
from imgproxy.transform import values as read
from imgproxy.transform.negotiate import FormatBucket, negotiate
from imgproxy.transform.signing import PARAMETERS, SIGNATURE, sign, sign_url, split_query, verify
from imgproxy.transform.values import WHITE, Color, Fit, Flip, FocalPoint, Position, Rect, RequestedFormat

__all__ = [
    "DEFAULT_QUALITY",
    "Color",
    "Fit",
    "Flip",
    "FocalPoint",
    "Position",
    "QueryParser",
    "Rect",
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


# Encoder quality when `q` is absent; PNG is lossless (zlib compression instead).
DEFAULT_QUALITY: Final[Mapping[str, int]] = {"jpeg": 80, "webp": 80, "avif": 60, "gif": 80}


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
    rect: Rect | None = None  # in the source's upright pixels; applied first
    rotate: int = 0  # clockwise degrees, after `rect`
    flip: Flip | None = None  # after `rotate`
    focal: FocalPoint | None = None  # `pos=fp:X,Y` (then `position` stays CENTER)
    blur: Decimal | None = None  # gaussian sigma, on the output
    sharpen: Decimal | None = None  # sigma, after `blur`

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
        if self.focal is not None:
            parts.append(f"pos={self.focal.text}")
        elif self.position is not Position.CENTER:
            parts.append(f"pos={self.position.value}")
        if self.enlarge:
            parts.append("enlarge=1")
        if fm != RequestedFormat.ORIGINAL.value:
            parts.append(f"fm={fm}")
        if quality is not None:
            parts.append(f"q={quality}")
        if self.background != WHITE:
            parts.append(f"bg={self.background.hex}")
        return parts + self._operation_parts()

    def _operation_parts(self) -> list[str]:
        # After the older parameters, so that the keys of variants made before these existed stay.
        parts: list[str] = []
        if self.rect is not None:
            parts.append(f"rect={self.rect.text}")
        if self.rotate:
            parts.append(f"rot={self.rotate}")
        if self.flip is not None:
            parts.append(f"flip={self.flip.value}")
        if self.blur is not None:
            parts.append(f"blur={read.decimal_text(self.blur)}")
        if self.sharpen is not None:
            parts.append(f"sharp={read.decimal_text(self.sharpen)}")
        return parts

    @property
    def resizes(self) -> bool:
        """Whether a target size is given (else only the format or encoding changes)."""
        return self.width is not None or self.height is not None

    @property
    def changes_pixels(self) -> bool:
        """Whether a crop, turn, mirror or filter is asked for (besides any resize)."""
        operations = (self.rect, self.flip, self.blur, self.sharpen)
        return self.rotate != 0 or any(value is not None for value in operations)

    @property
    def reencodes_only(self) -> bool:
        """No size, quality, background nor operation: the source itself is right when the format matches."""
        return (
            not self.resizes and self.quality is None and self.background == WHITE and not self.changes_pixels
        )

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
        options = dataclasses.replace(options, position=Position.CENTER, focal=None)
    return _turned(options)


def _turned(options: TransformOptions) -> TransformOptions:
    """One form per turn and mirror: a vertical mirror after turning by r is a horizontal one after
    turning by r + 180, and both mirrors are a half turn; so only `flip=h` remains, and a half turn
    with both mirrors is nothing at all."""
    rotate, flip = options.rotate, options.flip
    if flip in (Flip.V, Flip.HV):
        rotate = (rotate + 180) % 360
        flip = Flip.H if flip is Flip.V else None
    return dataclasses.replace(options, rotate=rotate, flip=flip)


_FORMAT_ALIASES: Final = {"jpg": "jpeg"}
_POSITION_ALIASES: Final = {"centre": "center"}
MAX_DPR: Final = Decimal(4)
# The readers' old private names (the parsing of values lives in `values`).
_integer, _choice, _color = read.integer, read.choice, read.color


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
    dpr = read.dpr(values["dpr"], MAX_DPR) if "dpr" in values else Decimal(1)
    width = _box_side(values, "w", dpr, max_width, "max_width")
    height = _box_side(values, "h", dpr, max_height, "max_height")
    enlarge = False
    if "enlarge" in values:
        enlarge = bool(_integer("enlarge", values["enlarge"], 0, 1))
    options = TransformOptions(
        width=width,
        height=height,
        fit=_choice("fit", values["fit"], Fit, {}) if "fit" in values else Fit.INSIDE,
        position=_position(values),
        enlarge=enlarge,
        format=(
            _choice("fm", values["fm"], RequestedFormat, _FORMAT_ALIASES)
            if "fm" in values
            else RequestedFormat.ORIGINAL
        ),
        quality=_integer("q", values["q"], 1, 100) if "q" in values else None,
        background=_color("bg", values["bg"]) if "bg" in values else WHITE,
        rect=read.rect(values["rect"]) if "rect" in values else None,
        rotate=read.rotation(values["rot"]) if "rot" in values else 0,
        flip=_choice("flip", values["flip"], Flip, {}) if "flip" in values else None,
        focal=read.focal_point(values["pos"]) if "pos" in values else None,
        blur=read.sigma("blur", values["blur"], read.MAX_BLUR) if "blur" in values else None,
        sharpen=read.sigma("sharp", values["sharp"], read.MAX_SHARPEN) if "sharp" in values else None,
    )
    if "fm" in values and options.format is RequestedFormat.ORIGINAL:  # "original" is not a value of fm
        raise BadTransformParameter("fm", "must be one of jpeg, png, webp, avif, auto, json")
    return _normalised(options)


def _position(values: Mapping[str, str]) -> Position:
    # `fp:X,Y` is read into `focal`; `position` then keeps its default.
    if "pos" not in values or read.focal_point(values["pos"]) is not None:
        return Position.CENTER
    return _choice("pos", values["pos"], Position, _POSITION_ALIASES)


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
