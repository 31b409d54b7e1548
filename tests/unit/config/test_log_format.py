"""`server.log_format`: text by default, json on request, anything else refused by name."""

from __future__ import annotations

import pytest

from imgproxy.config import CONNECTION_STRING_ENV, ConfigError, load_config

CONN = {CONNECTION_STRING_ENV: "x"}


def test_text_by_default_and_json_from_the_environment() -> None:
    """No setting: text; `IMGPROXY_SERVER_LOG_FORMAT=json`: json."""
    assert load_config(None, CONN).server.log_format == "text"
    assert load_config(None, {**CONN, "IMGPROXY_SERVER_LOG_FORMAT": "json"}).server.log_format == "json"


@pytest.mark.parametrize("value", ["JSON", "logfmt", ""])
def test_another_format_is_refused_with_the_key_named(value: str) -> None:
    """A format other than text or json stops start-up, naming the key and the choices."""
    with pytest.raises(ConfigError, match=r"server\.log_format: must be one of text, json"):
        load_config(None, {**CONN, "IMGPROXY_SERVER_LOG_FORMAT": value})
