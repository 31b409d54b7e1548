"""Unit tests for `imgproxy.transform.params` and `imgproxy.transform.signing`: parsing, canonical forms,
presets, signatures and their rules."""

from __future__ import annotations

import types
from typing import Any

import pytest

from imgproxy.config import TransformConfig
from imgproxy.core.errors import BadSignature, BadTransformParameter
from imgproxy.transform.negotiate import FormatBucket
from imgproxy.transform.params import (
    Color,
    Fit,
    Position,
    QueryParser,
    RequestedFormat,
    TransformOptions,
    apply_auto_format,
    check_preset,
)
from imgproxy.transform.signing import canonical_string, sign, sign_url, verify

KEY = "test-signing-key"
PRESETS = {"thumb": "w=200&h=200&fit=cover&fm=auto", "wide": "w=800"}


def settings(**overrides: Any) -> TransformConfig:
    """A [transform] section with presets; unsigned parameters allowed unless overridden."""
    values: dict[str, Any] = {
        "enabled": True,
        "allow_unsigned": True,
        "presets": types.MappingProxyType(PRESETS),
    }
    values.update(overrides)
    return TransformConfig(**values)


def parse(query: str, path: str = "photos/cat.jpg", **overrides: Any) -> TransformOptions | None:
    """Parse `query` for `path` under `settings(**overrides)`."""
    return QueryParser(settings(**overrides)).parse(path, query)


def options(query: str, **overrides: Any) -> TransformOptions:
    """Parse `query`, which must give options."""
    parsed = parse(query, **overrides)
    assert parsed is not None
    return parsed


def bad(query: str, parameter: str, **overrides: Any) -> str:
    """Assert that `query` is refused naming `parameter`; return the reason."""
    with pytest.raises(BadTransformParameter) as excinfo:
        parse(query, **overrides)
    assert excinfo.value.parameter == parameter
    return excinfo.value.reason


def signed(path: str, query: str, key: str = KEY) -> str:
    """`query` with its signature appended, as the main app would build it."""
    return f"{query}&s={sign(key, path, query)}"


# --- parsing and canonical forms ---------------------------------------------------------------


def test_no_recognised_parameter_means_no_transform() -> None:
    """An empty query, or one with only unknown parameters, serves the original (None)."""
    assert parse("") is None
    assert parse("v=123&utm_source=x&W=300") is None


def test_every_parameter_is_read() -> None:
    """All recognised parameters land in the options with their meaning."""
    parsed = options("w=300&h=200&fit=cover&pos=northeast&enlarge=1&fm=webp&q=75&bg=00ff0080")
    assert parsed == TransformOptions(
        width=300,
        height=200,
        fit=Fit.COVER,
        position=Position.NORTHEAST,
        enlarge=True,
        format=RequestedFormat.WEBP,
        quality=75,
        background=Color(0, 255, 0, 128),
    )
    assert parsed.canonical == "w=300&h=200&fit=cover&pos=northeast&enlarge=1&fm=webp&q=75&bg=00ff0080"


def test_unknown_parameters_are_ignored_and_not_canonical() -> None:
    """A cache buster beside real parameters changes nothing, not even the canonical string."""
    assert options("w=300&v=123").canonical == options("w=300").canonical == "w=300"


def test_defaults_are_normalised_away() -> None:
    """`fit=inside`, `pos=center`, `enlarge=0` and `bg=ffffff` give the same variant as nothing."""
    plain = options("w=300&h=200")
    assert options("w=300&h=200&fit=inside&pos=center&enlarge=0&bg=ffffff") == plain
    assert options("h=200&w=300&pos=centre&bg=FFF") == plain
    assert plain.canonical == "w=300&h=200"


def test_options_that_cannot_matter_are_normalised_away() -> None:
    """`pos` without cover, `fit` with one side, `enlarge` without a size are dropped."""
    assert options("w=300&h=200&fit=contain&pos=north") == options("w=300&h=200&fit=contain")
    assert options("w=300&fit=cover&pos=attention") == options("w=300")
    assert options("fm=webp&enlarge=1") == options("fm=webp")


def test_dpr_multiplies_the_box() -> None:
    """`dpr` is folded into pixels: `w=300&dpr=2` is `w=600`, rounded half up."""
    assert options("w=300&h=100&dpr=2") == options("w=600&h=200")
    assert options("w=301&dpr=1.5").width == 452  # 451.5 rounds up
    assert options("dpr=2.5&h=10").height == 25
    assert options("w=300&dpr=2").canonical == "w=600"


def test_format_aliases_and_case() -> None:
    """`fm=jpg` means jpeg; enumerated values are read case-insensitively."""
    assert options("fm=jpg").format is RequestedFormat.JPEG
    assert options("w=1&h=1&fit=COVER&pos=SouthWest").position is Position.SOUTHWEST


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ("w=0", "w"),
        ("w=-5", "w"),
        ("w=abc", "w"),
        ("w=1.5", "w"),
        ("w=", "w"),
        ("w", "w"),
        ("h=8193", "h"),
        ("w=9999999", "w"),
        ("dpr=0.5", "dpr"),
        ("dpr=5", "dpr"),
        ("dpr=two", "dpr"),
        ("dpr=1e0", "dpr"),
        ("fit=squash", "fit"),
        ("pos=up", "pos"),
        ("enlarge=yes", "enlarge"),
        ("enlarge=2", "enlarge"),
        ("fm=bmp", "fm"),
        ("fm=original", "fm"),
        ("q=0", "q"),
        ("q=101", "q"),
        ("q=high", "q"),
        ("bg=red", "bg"),
        ("bg=12345", "bg"),
        ("bg=%23ffffff", "bg"),
        ("preset=nope", "preset"),
    ],
)
def test_bad_values_are_refused_naming_the_parameter(query: str, parameter: str) -> None:
    """A recognised parameter with a value we cannot use is a 400 naming it."""
    bad(query, parameter)


def test_output_beyond_the_limit_after_dpr_is_refused() -> None:
    """`w` within `max_width` but beyond it once multiplied by `dpr` is refused, naming dpr."""
    assert options("w=5000&dpr=1.5", max_width=7500).width == 7500
    assert bad("w=5000&dpr=2", "dpr", max_width=8192) == "w x dpr is beyond transform.max_width (8192)"
    bad("h=100", "h", max_height=99)


def test_a_repeated_recognised_parameter_is_refused() -> None:
    """`?w=1&w=2` is a 400 (a signer and the server could read different values); unknowns may repeat."""
    assert "more than once" in bad("w=100&w=200", "w")
    assert options("w=100&v=1&v=2").width == 100


def test_percent_encoded_values_are_decoded() -> None:
    """Values are percent-decoded before they are read."""
    assert options("fm=%77ebp").format is RequestedFormat.WEBP


def test_key_holds_the_bucket_not_the_request() -> None:
    """`fm=auto` that chose WebP is the variant of `fm=webp`; q is dropped where it changes nothing."""
    auto, webp = options("w=300&fm=auto"), options("w=300&fm=webp")
    assert auto.canonical == "w=300&fm=auto"
    assert auto.key(FormatBucket.WEBP) == webp.key(FormatBucket.WEBP) == "w=300&fm=webp"
    assert options("w=300&q=80").key(FormatBucket.JPEG) == "w=300&fm=jpeg"
    assert options("w=300&q=80").key(FormatBucket.AVIF) == "w=300&fm=avif&q=80"
    assert options("w=300&q=50").key(FormatBucket.PNG) == "w=300&fm=png"
    assert options("w=300").key(FormatBucket.ORIGINAL) == "w=300"


def test_accept_dependence_and_buckets() -> None:
    """Only `fm=auto` varies with Accept; an explicit format is its own bucket."""
    auto = options("fm=auto")
    assert auto.varies_with_accept
    assert auto.bucket("image/webp,*/*", auto_avif=False) is FormatBucket.WEBP
    assert auto.bucket("*/*", auto_avif=False) is FormatBucket.SOURCE
    explicit = options("fm=png")
    assert not explicit.varies_with_accept
    assert explicit.bucket("image/webp", auto_avif=True) is FormatBucket.PNG
    assert options("w=10").bucket(None, auto_avif=False) is FormatBucket.ORIGINAL


def test_auto_format_applies_to_plain_requests_and_to_those_without_fm() -> None:
    """With `auto_format`, no query means `fm=auto`, and so does a query without `fm`."""
    on, off = settings(auto_format=True), settings()
    assert apply_auto_format(None, off) is None
    plain = apply_auto_format(None, on)
    assert plain is not None and plain.format is RequestedFormat.AUTO and plain.reencodes_only
    resized = apply_auto_format(options("w=300"), on)
    assert resized is not None and resized.canonical == "w=300&fm=auto"
    assert apply_auto_format(options("fm=png"), on) == options("fm=png")


# --- presets -------------------------------------------------------------------------------------


def test_preset_alone_gives_its_options() -> None:
    """`?preset=thumb` is the preset's parameters."""
    assert options("preset=thumb") == options("w=200&h=200&fit=cover&fm=auto")


def test_explicit_parameters_add_to_and_override_the_preset() -> None:
    """Explicit parameters win over the preset's and add what it lacks."""
    parsed = options("preset=thumb&fm=png&q=50")
    assert (parsed.width, parsed.fit, parsed.format, parsed.quality) == (
        200,
        Fit.COVER,
        RequestedFormat.PNG,
        50,
    )
    assert options("preset=wide&dpr=2").width == 1600


@pytest.mark.parametrize(
    ("query", "fragment"),
    [
        ("w=0", "w"),
        ("w=100&v=1", "v"),
        ("preset=other", "preset"),
        ("s=abc", "s"),
        ("w=1&w=2", "more than once"),
        ("", "no parameter"),
        ("w=9000", "max_width"),
    ],
)
def test_check_preset_names_the_problem(query: str, fragment: str) -> None:
    """A preset that could not be served is reported with the parameter at fault."""
    problem = check_preset(query, TransformConfig())
    assert problem is not None and fragment in problem


def test_a_good_preset_passes_its_check() -> None:
    """A valid preset has no problem."""
    assert check_preset("w=200&h=200&fit=cover&fm=auto", TransformConfig()) is None


# --- signing -------------------------------------------------------------------------------------


def test_canonical_string_is_path_then_sorted_recognised_parameters_as_written() -> None:
    """The signed string: path, '?', recognised pairs but s sorted by name, values as written."""
    pairs = [("w", "300"), ("v", "9"), ("fm", "webp"), ("s", "x"), ("bg", "FFF")]
    assert canonical_string("a%20b/c.jpg", pairs) == "a%20b/c.jpg?bg=FFF&fm=webp&w=300"


def test_signature_is_base64url_hmac_sha256_without_padding() -> None:
    """A known vector, computed independently with hmac and base64."""
    import base64
    import hashlib
    import hmac

    digest = hmac.new(b"k", b"p.jpg?fm=webp&w=300", hashlib.sha256).digest()
    expected = base64.urlsafe_b64encode(digest).decode().rstrip("=")
    assert sign("k", "p.jpg", "w=300&fm=webp") == expected
    assert sign("k", "p.jpg", {"fm": "webp", "w": "300", "v": "1"}) == expected
    assert "=" not in expected and len(expected) == 43


def test_signed_request_is_accepted() -> None:
    """A correctly signed request is parsed under a signing key."""
    query = signed("photos/cat.jpg", "w=300&fm=webp")
    assert options(query, signing_key=KEY, allow_unsigned=False).width == 300


def test_parameters_reordered_in_the_url_still_verify() -> None:
    """The signature does not depend on the order of the parameters in the URL."""
    signature = sign(KEY, "photos/cat.jpg", "w=300&fm=webp")
    assert options(f"s={signature}&fm=webp&w=300", signing_key=KEY).format is RequestedFormat.WEBP


def test_unknown_parameters_do_not_break_a_signature() -> None:
    """A cache buster added to a signed URL does not invalidate it."""
    query = signed("photos/cat.jpg", "w=300") + "&v=42"
    assert options(query, signing_key=KEY).width == 300


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda q: q.replace("w=300", "w=301"), id="value"),
        pytest.param(lambda q: q + "&q=10", id="added-parameter"),
        pytest.param(lambda q: q.replace("&fm=webp", ""), id="removed-parameter"),
        pytest.param(lambda q: q[:-1] + ("A" if q[-1] != "A" else "B"), id="signature"),
    ],
)
def test_tampered_request_is_refused(tamper: Any) -> None:
    """Changing a value, adding or removing a parameter, or the signature itself is a 403."""
    query = tamper(signed("photos/cat.jpg", "w=300&fm=webp"))
    with pytest.raises(BadSignature, match="wrong"):
        parse(query, signing_key=KEY)


def test_signature_for_another_path_is_refused() -> None:
    """A signature covers the path: reused on another blob it is a 403."""
    query = signed("photos/dog.jpg", "w=300")
    with pytest.raises(BadSignature):
        parse(query, path="photos/cat.jpg", signing_key=KEY)


def test_path_is_signed_as_written_in_the_url() -> None:
    """The path is the raw one: `a%20b.jpg` signed is not `a b.jpg` signed."""
    query = signed("a%20b.jpg", "w=10")
    assert options(query, path="a%20b.jpg", signing_key=KEY).width == 10
    with pytest.raises(BadSignature):
        QueryParser(settings(signing_key=KEY)).parse("a b.jpg", query)


def test_missing_signature_is_refused_under_a_key() -> None:
    """With a signing key, arbitrary parameters without `s` are a 403, even with allow_unsigned."""
    with pytest.raises(BadSignature, match="missing"):
        parse("w=300", signing_key=KEY, allow_unsigned=True)


def test_preset_without_signature_is_accepted_under_a_key() -> None:
    """Presets alone never need a signature (the operator chose them)."""
    assert options("preset=thumb", signing_key=KEY).width == 200
    assert options("preset=thumb&v=1", signing_key=KEY, allow_unsigned=False).width == 200


def test_preset_with_more_parameters_needs_a_signature() -> None:
    """A preset plus an explicit parameter is arbitrary again: it must be signed."""
    with pytest.raises(BadSignature):
        parse("preset=thumb&w=50", signing_key=KEY)
    assert options(signed("photos/cat.jpg", "preset=thumb&w=50"), signing_key=KEY).width == 50


def test_a_wrong_signature_beside_a_preset_is_refused() -> None:
    """An `s` that is present is always checked."""
    with pytest.raises(BadSignature):
        parse("preset=thumb&s=AAAA", signing_key=KEY)


def test_without_key_only_presets_unless_unsigned_allowed() -> None:
    """No key and `allow_unsigned = false`: presets only, anything else a 403; true: anything."""
    with pytest.raises(BadSignature, match="only presets"):
        parse("w=300", allow_unsigned=False)
    assert options("preset=thumb", allow_unsigned=False).width == 200
    assert options("w=300", allow_unsigned=True).width == 300


def test_signature_is_checked_before_values() -> None:
    """An unsigned bad value is a 403, not a 400: an unsigned caller learns nothing of the values."""
    with pytest.raises(BadSignature):
        parse("w=abc", signing_key=KEY)


def test_verify_compares_in_constant_time_and_rejects_garbage() -> None:
    """verify() accepts the right signature and refuses padded, empty and non-ASCII ones."""
    pairs = [("w", "300")]
    good = sign(KEY, "p.jpg", "w=300")
    assert verify(KEY, "p.jpg", pairs, good)
    for wrong in (good + "=", "", "é" * 43, good.upper()):
        assert not verify(KEY, "p.jpg", pairs, wrong)


def test_sign_url_builds_a_url_the_server_accepts() -> None:
    """sign_url quotes the blob name, keeps unknown parameters and appends `s`."""
    url = sign_url("https://img.example.com/", "photos/my cat.jpg", "w=300&fm=webp&v=7", KEY)
    assert url.startswith("https://img.example.com/images/photos/my%20cat.jpg?w=300&fm=webp&v=7&s=")
    raw_path, _, query = url.removeprefix("https://img.example.com/images/").partition("?")
    assert options_for(raw_path, query).format is RequestedFormat.WEBP


def test_sign_url_with_a_mapping_and_no_base() -> None:
    """A mapping of plain values works too, and an empty base gives a path-only URL."""
    url = sign_url("", "x.png", {"w": "64", "bg": "000000"}, KEY)
    assert url.startswith("/images/x.png?w=64&bg=000000&s=")
    raw_path, _, query = url.removeprefix("/images/").partition("?")
    assert options_for(raw_path, query).background == Color(0, 0, 0)


def options_for(raw_path: str, query: str) -> TransformOptions:
    """Options of a signed request under KEY."""
    parsed = QueryParser(settings(signing_key=KEY, allow_unsigned=False)).parse(raw_path, query)
    assert parsed is not None
    return parsed


def test_signature_alone_verified_means_no_transform() -> None:
    """`?s=` for an empty parameter set verifies and serves the original; a wrong one is a 403."""
    assert parse(f"s={sign(KEY, 'photos/cat.jpg', '')}", signing_key=KEY) is None
    with pytest.raises(BadSignature):
        parse("s=nope", signing_key=KEY)
