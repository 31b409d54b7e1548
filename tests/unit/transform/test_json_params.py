"""`fm=json` in `imgproxy.transform.params` and `negotiate`: read, normalised to one variant whatever
else the query holds, keyed by its own bucket, never negotiated."""

from __future__ import annotations

import types

import pytest

from imgproxy.config import TransformConfig
from imgproxy.core.errors import BadSignature, BadTransformParameter
from imgproxy.transform.negotiate import FormatBucket
from imgproxy.transform.params import (
    QueryParser,
    RequestedFormat,
    TransformOptions,
    apply_auto_format,
    check_preset,
)
from imgproxy.transform.signing import sign

CHROME = "image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8"
JSON_ONLY = TransformOptions(format=RequestedFormat.JSON)


def config(**overrides: object) -> TransformConfig:
    values: dict[str, object] = {
        "enabled": True,
        "allow_unsigned": True,
        "presets": types.MappingProxyType({"info": "fm=json", "thumb": "w=200&h=200&fit=cover"}),
    }
    values.update(overrides)
    return TransformConfig(**values)  # type: ignore[arg-type]


def options(query: str, **overrides: object) -> TransformOptions:
    parsed = QueryParser(config(**overrides)).parse("photos/cat.jpg", query)
    assert parsed is not None
    return parsed


@pytest.mark.parametrize("query", ["fm=json", "fm=JSON", "fm=Json"])
def test_fm_json_is_read_case_insensitively(query: str) -> None:
    """`fm=json`, in any case, asks for the description: canonical `fm=json`."""
    parsed = options(query)
    assert parsed == JSON_ONLY and parsed.canonical == "fm=json"


@pytest.mark.parametrize(
    "query",
    [
        "w=300&fm=json",
        "w=300&h=200&fit=cover&pos=attention&fm=json",
        "h=100&dpr=2&enlarge=1&q=40&bg=000&fm=json",
        "preset=thumb&fm=json",
    ],
)
def test_other_parameters_beside_fm_json_are_normalised_away(query: str) -> None:
    """The answer describes the source: sizes, quality, colours (a preset's too) change nothing, so
    every such query is the one variant `fm=json`."""
    parsed = options(query)
    assert parsed == JSON_ONLY
    assert (parsed.canonical, parsed.key(FormatBucket.JSON)) == ("fm=json", "fm=json")


def test_a_bad_value_beside_fm_json_is_still_a_400_naming_it() -> None:
    """Values are validated before they are normalised away: `w=0` is refused, not ignored."""
    with pytest.raises(BadTransformParameter) as excinfo:
        options("w=0&fm=json")
    assert excinfo.value.parameter == "w"


def test_an_unknown_format_names_json_among_the_choices() -> None:
    """The 400 for a bad `fm` lists json with the image formats."""
    with pytest.raises(BadTransformParameter) as excinfo:
        options("fm=bmp")
    assert excinfo.value.parameter == "fm"
    assert excinfo.value.reason == "must be one of jpeg, png, webp, avif, auto, json"


@pytest.mark.parametrize("accept", [None, CHROME, "*/*", "application/json"])
def test_fm_json_has_its_own_bucket_and_does_not_vary_with_accept(accept: str | None) -> None:
    """Whatever `Accept` says (and with auto_avif on), the bucket is JSON and no Vary is due."""
    parsed = options("fm=json")
    assert parsed.bucket(accept, True) is FormatBucket.JSON
    assert not parsed.varies_with_accept


def test_auto_format_leaves_fm_json_alone() -> None:
    """`transform.auto_format` gives `fm=auto` only to requests without `fm`."""
    assert apply_auto_format(JSON_ONLY, config(auto_format=True)) == JSON_ONLY


def test_a_preset_may_ask_for_json() -> None:
    """`info = "fm=json"` passes the start-up check and `?preset=info` needs no signature."""
    assert check_preset("fm=json", config()) is None
    assert options("preset=info", signing_key="key", allow_unsigned=False) == JSON_ONLY


def test_fm_json_needs_a_signature_like_any_parameter() -> None:
    """Under a signing key `?fm=json` alone is a 403; signed, it is read."""
    with pytest.raises(BadSignature):
        options("fm=json", signing_key="key")
    signature = sign("key", "photos/cat.jpg", "fm=json")
    assert options(f"fm=json&s={signature}", signing_key="key") == JSON_ONLY
