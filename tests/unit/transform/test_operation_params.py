"""Unit tests for the geometry and filter parameters (`rect`, `rot`, `flip`, `pos=fp:X,Y`, `blur`,
`sharp`) in `imgproxy.transform.params` and `values`: parsing, normalisation, canonical forms, keys,
refusals and signatures."""

from __future__ import annotations

import types
from decimal import Decimal
from typing import Any

import pytest

from imgproxy.config import TransformConfig
from imgproxy.core.errors import BadSignature, BadTransformParameter
from imgproxy.transform.negotiate import FormatBucket
from imgproxy.transform.params import (
    Fit,
    Flip,
    FocalPoint,
    Position,
    QueryParser,
    Rect,
    TransformOptions,
    check_preset,
)
from imgproxy.transform.signing import PARAMETERS, canonical_string, sign

KEY = "test-signing-key"


def settings(**overrides: Any) -> TransformConfig:
    """A [transform] section that takes unsigned parameters unless overridden."""
    values: dict[str, Any] = {
        "enabled": True,
        "allow_unsigned": True,
        "presets": types.MappingProxyType({"crop": "rect=0,0,10,10&rot=90"}),
    }
    values.update(overrides)
    return TransformConfig(**values)


def options(query: str, **overrides: Any) -> TransformOptions:
    """Parse `query`, which must give options."""
    parsed = QueryParser(settings(**overrides)).parse("photos/cat.jpg", query)
    assert parsed is not None
    return parsed


def bad(query: str, parameter: str) -> str:
    """Assert that `query` is refused naming `parameter`; return the reason."""
    with pytest.raises(BadTransformParameter) as excinfo:
        QueryParser(settings()).parse("photos/cat.jpg", query)
    assert excinfo.value.parameter == parameter
    return excinfo.value.reason


def test_every_operation_is_read() -> None:
    """All six land in the options with their meaning."""
    parsed = options("rect=1,2,30,40&rot=90&flip=h&w=10&h=10&fit=cover&pos=fp:0.25,1&blur=1.5&sharp=0.75")
    assert parsed == TransformOptions(
        width=10,
        height=10,
        fit=Fit.COVER,
        rect=Rect(1, 2, 30, 40),
        rotate=90,
        flip=Flip.H,
        focal=FocalPoint(Decimal("0.25"), Decimal(1)),
        blur=Decimal("1.5"),
        sharpen=Decimal("0.75"),
    )


def test_every_new_name_is_recognised_and_signed() -> None:
    """The names are in signing's PARAMETERS: a signature covers them and a change breaks it."""
    assert {"rect", "rot", "flip", "blur", "sharp", "pos"} <= PARAMETERS
    pairs = [("sharp", "1"), ("rot", "90"), ("w", "5"), ("rect", "0,0,1,1"), ("flip", "h"), ("blur", "2")]
    assert canonical_string("a.jpg", pairs) == "a.jpg?blur=2&flip=h&rect=0,0,1,1&rot=90&sharp=1&w=5"
    signed = "rect=0,0,10,10&rot=90&blur=2&s=" + sign(KEY, "photos/cat.jpg", "rect=0,0,10,10&rot=90&blur=2")
    assert options(signed, signing_key=KEY).rotate == 90
    for changed in ("rot=90", "blur=2", "rect=0,0,10,10"):
        tampered = signed.replace(changed, changed[:-1] + "1")
        with pytest.raises(BadSignature):
            options(tampered, signing_key=KEY)
    with pytest.raises(BadSignature):
        options(signed + "&sharp=1", signing_key=KEY)


def test_canonical_order_is_fixed_and_after_the_older_parameters() -> None:
    """Whatever the order in the URL, one canonical string; the new parts come after the old ones,
    so the keys of variants made before them do not change."""
    query = "sharp=1&blur=2.50&flip=h&rot=270&rect=5,6,7,8&w=100&h=50&fit=cover&pos=fp:0.500,0.1&fm=webp"
    expected = "w=100&h=50&fit=cover&pos=fp:0.5,0.1&fm=webp&rect=5,6,7,8&rot=270&flip=h&blur=2.5&sharp=1"
    assert options(query).canonical == expected
    reordered = "&".join(reversed(query.split("&")))
    assert options(reordered).canonical == expected
    assert options(query).key(FormatBucket.WEBP) == expected
    assert options("w=300").canonical == "w=300"


@pytest.mark.parametrize(
    ("query", "same_as"),
    [
        ("flip=hv", "rot=180"),
        ("rot=180&flip=hv", ""),
        ("flip=v", "rot=180&flip=h"),
        ("rot=90&flip=v", "rot=270&flip=h"),
        ("rot=270&flip=hv", "rot=90"),
        ("FLIP=h", ""),  # names are matched as written: FLIP is unknown
        ("flip=H", "flip=h"),
    ],
)
def test_turns_and_mirrors_have_one_form(query: str, same_as: str) -> None:
    """A vertical mirror is a horizontal one after a half turn, and both mirrors are a half turn:
    each distinct output has one canonical form (and so one cache entry)."""
    assert options(f"{query}&fm=png") == options(f"{same_as}&fm=png".lstrip("&"))


def test_a_focal_point_counts_only_with_cover() -> None:
    """`pos=fp:` is dropped without `fit=cover`, like every other `pos`; with it, it is kept."""
    assert options("w=10&h=10&pos=fp:0.1,0.9") == options("w=10&h=10")
    assert options("w=10&pos=fp:0.1,0.9&fit=cover") == options("w=10")
    cover = options("w=10&h=10&fit=cover&pos=fp:0.1,0.9")
    assert (cover.position, cover.focal) == (Position.CENTER, FocalPoint(Decimal("0.1"), Decimal("0.9")))
    assert cover.canonical == "w=10&h=10&fit=cover&pos=fp:0.1,0.9"
    assert options("w=10&h=10&fit=cover&pos=FP:0,1.000").canonical == "w=10&h=10&fit=cover&pos=fp:0,1"


def test_decimals_are_written_in_their_shortest_form() -> None:
    """`blur=2.50` and `blur=2.5` are one variant; `sharp=10.00` is `sharp=10`."""
    assert options("blur=2.50") == options("blur=2.5")
    assert options("blur=100").canonical == "blur=100"
    assert options("sharp=10.00").canonical == "sharp=10"
    assert options("blur=0.3").canonical == "blur=0.3"


def test_an_operation_alone_is_a_transform_not_a_reencode() -> None:
    """With no size, each operation still changes the pixels: never the original's bytes."""
    for query in ("rect=0,0,1,1", "rot=90", "flip=h", "blur=1", "sharp=1"):
        assert not options(query).reencodes_only, query
    assert options("fm=webp").reencodes_only


def test_a_preset_can_set_the_operations() -> None:
    """Presets are read by the same parser: operations are valid preset parameters."""
    assert check_preset("rect=0,0,10,10&rot=90&blur=1", TransformConfig()) is None
    assert check_preset("rot=45", TransformConfig()) == "rot: must be one of 90, 180, 270"
    parsed = options("preset=crop")
    assert (parsed.rect, parsed.rotate) == (Rect(0, 0, 10, 10), 90)


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ("rect=0,0,0,10", "rect"),
        ("rect=0,0,10,0", "rect"),
        ("rect=0,0,10", "rect"),
        ("rect=0,0,10,10,10", "rect"),
        ("rect=-1,0,10,10", "rect"),
        ("rect=0.5,0,10,10", "rect"),
        ("rect=0;0;10;10", "rect"),
        ("rect=", "rect"),
        ("rect=0,0,1234567,1", "rect"),
        ("rot=0", "rot"),
        ("rot=45", "rot"),
        ("rot=360", "rot"),
        ("rot=-90", "rot"),
        ("rot=090", "rot"),
        ("flip=x", "flip"),
        ("flip=vh", "flip"),
        ("flip=", "flip"),
        ("pos=fp:1.1,0", "pos"),
        ("pos=fp:0,2", "pos"),
        ("pos=fp:0.1234,0", "pos"),
        ("pos=fp:0.5", "pos"),
        ("pos=fp:-0.1,0.5", "pos"),
        ("pos=fp:", "pos"),
        ("pos=fp", "pos"),
        ("blur=0.29", "blur"),
        ("blur=100.01", "blur"),
        ("blur=0", "blur"),
        ("blur=1.234", "blur"),
        ("blur=soft", "blur"),
        ("blur=1e1", "blur"),
        ("sharp=0.2", "sharp"),
        ("sharp=10.5", "sharp"),
        ("sharp=", "sharp"),
    ],
)
def test_bad_values_are_refused_naming_the_parameter(query: str, parameter: str) -> None:
    """A bad value is a 400 that names the parameter and what it must be, not the value."""
    reason = bad(query, parameter)
    value = query.partition("=")[2]
    assert len(value) < 4 or value not in reason  # short ones may be in the words by chance


@pytest.mark.parametrize("name", ["rect", "rot", "flip", "blur", "sharp"])
def test_a_repeated_operation_is_refused(name: str) -> None:
    """`?rot=90&rot=180` is a 400 naming it (a signer and the server could read different values)."""
    value = {"rect": "0,0,1,1", "rot": "90", "flip": "h", "blur": "1", "sharp": "1"}[name]
    assert "more than once" in bad(f"{name}={value}&{name}={value}", name)


def test_percent_encoded_commas_are_read() -> None:
    """Values are percent-decoded first: `rect=1%2C2%2C3%2C4` is `rect=1,2,3,4`."""
    assert options("rect=1%2C2%2C3%2C4").rect == Rect(1, 2, 3, 4)
    assert options("w=1&h=1&fit=cover&pos=fp%3A0.5%2C0.5").focal == FocalPoint(Decimal("0.5"), Decimal("0.5"))


def test_the_bounds_are_inclusive() -> None:
    """0.3 and the maximum are accepted for blur and sharp; 0 and 1 for a focal point."""
    assert options("blur=0.3&sharp=0.3").blur == Decimal("0.3")
    assert options("blur=100&sharp=10").sharpen == Decimal(10)
    assert options("w=1&h=1&fit=cover&pos=fp:0,1").focal == FocalPoint(Decimal(0), Decimal(1))
