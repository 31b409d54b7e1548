"""`[cdn]`: its keys from the file and the environment, secrets read from named environment
variables (and never echoed), and the checks of header names, the prefix and the templates."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from imgproxy.config import ConfigError, load_config

BASE = {"IMGPROXY_ORIGIN_CONNECTION_STRING": "UseDevelopmentStorage=true"}


def test_the_defaults_tag_nothing_and_forward_nothing() -> None:
    """Off by default: no tag headers, no purge URL."""
    cdn = load_config(None, BASE).cdn
    assert (cdn.tag_headers, cdn.purge_url, dict(cdn.purge_headers)) == ((), "", {})


@pytest.mark.parametrize("value", ["Surrogate-Key, Cache-Tag", '["Surrogate-Key", "Cache-Tag"]'])
def test_tag_headers_from_the_environment(value: str) -> None:
    """Comma-separated names or a JSON array."""
    cdn = load_config(None, {**BASE, "IMGPROXY_CDN_TAG_HEADERS": value}).cdn
    assert cdn.tag_headers == ("Surrogate-Key", "Cache-Tag")


def test_a_header_value_takes_the_named_environment_variable(tmp_path: Path) -> None:
    """`${CDN_TOKEN}` in the file is the variable's value; `$$` is a dollar sign; the repr hides it."""
    path = tmp_path / "config.toml"
    path.write_text(
        '[cdn]\npurge_url = "https://cdn.example/purge"\ntag_headers = ["Cache-Tag"]\n'
        '[cdn.purge_headers]\nAuthorization = "Bearer ${CDN_TOKEN}"\nX-Price = "$$5"\n'
    )
    cdn = load_config(path, {**BASE, "CDN_TOKEN": "t0ken-value"}).cdn
    assert dict(cdn.purge_headers) == {"Authorization": "Bearer t0ken-value", "X-Price": "$5"}
    assert "t0ken-value" not in repr(cdn)


def test_a_purge_by_path_needs_no_tag_headers() -> None:
    """A URL and body without `$tag` (a purge by URL prefix) load with no tag headers."""
    env = {
        **BASE,
        "IMGPROXY_CDN_PURGE_URL": "https://cdn.example/invalidate",
        "IMGPROXY_CDN_PURGE_BODY": '{"paths": ["/images/$path*"]}',
    }
    assert load_config(None, env).cdn.tag_headers == ()


def test_an_unset_variable_stops_start_up_naming_it() -> None:
    """The key and the variable are named."""
    env = {**BASE, "IMGPROXY_CDN_PURGE_HEADERS": json.dumps({"Authorization": "Bearer ${CDN_TOKEN}"})}
    with pytest.raises(ConfigError, match=r"cdn.purge_headers.Authorization: environment variable CDN_TOKEN"):
        load_config(None, env)


def test_a_secret_with_a_line_break_is_refused_without_echoing_it() -> None:
    """A header value cannot hold a control character; the message does not show the value."""
    env = {**BASE, "IMGPROXY_CDN_PURGE_HEADERS": json.dumps({"X-Key": "${K}"}), "K": "abc\r\nInjected: 1"}
    with pytest.raises(ConfigError) as caught:
        load_config(None, env)
    assert "control character" in str(caught.value) and "abc" not in str(caught.value)


@pytest.mark.parametrize(
    ("setting", "value", "message"),
    [
        ("TAG_HEADERS", "Cache Tag", "not a header name"),
        ("TAG_HEADERS", "Cache-Tag, cache-tag", "named twice"),
        ("TAG_PREFIX", "a,b", "cdn.tag_prefix"),
        ("PURGE_URL", "ftp://cdn.example/", "http:// or https://"),
        ("PURGE_URL", "https://cdn.example/$zone", "unknown placeholder $zone"),
        ("PURGE_BODY", "{$tags}", "unknown placeholder $tags"),
        ("PURGE_BODY", "costs $", "a lone $"),
        ("PURGE_METHOD", "PO ST", "not a method"),
        ("PURGE_TIMEOUT_S", "0", "at least 0.01"),
        ("PURGE_QUEUE", "0", "at least 1"),
        ("PURGE_ATTEMPTS", "0", "at least 1"),
        ("TAG_HEADERS", "", "purges by $tag"),  # nothing carries the tags the default body purges
    ],
)
def test_bad_settings_are_refused_naming_the_key(setting: str, value: str, message: str) -> None:
    """Each bad value stops start-up with the key named."""
    env = {
        **BASE,
        "IMGPROXY_CDN_PURGE_URL": "https://cdn.example/purge",
        "IMGPROXY_CDN_TAG_HEADERS": "Cache-Tag",
        f"IMGPROXY_CDN_{setting}": value,
    }
    with pytest.raises(ConfigError, match=f"cdn.{setting.lower()}") as caught:
        load_config(None, env)
    assert message in str(caught.value)
