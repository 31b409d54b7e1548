"""`cdn.request.PurgeTemplate`: the request a purge becomes, placeholders filled in safely."""

from __future__ import annotations

import json
import types
from typing import Any

from imgproxy.cdn.request import PurgeTemplate
from imgproxy.config import CdnConfig
from imgproxy.http.tags import CdnTags


def template(**overrides: Any) -> PurgeTemplate:
    config = CdnConfig(**{"purge_url": "https://cdn.example/purge", **overrides})
    return PurgeTemplate(config, CdnTags((), config.tag_prefix, "my images"), "my images")


def test_the_default_is_cloudflares_purge_by_tag_as_json() -> None:
    """POST, `{"tags": [tag]}` as application/json: the blob's tag, or the container's for everything."""
    tags = CdnTags((), "imgproxy-", "my images")
    one, everything = template().build("a.png"), template().build(None)
    assert (one.method, one.url, one.headers) == (
        "POST",
        "https://cdn.example/purge",
        {"Content-Type": "application/json"},
    )
    assert json.loads(one.body) == {"tags": [tags.blob_tag("a.png")]} and one.tag == tags.blob_tag("a.png")
    assert json.loads(everything.body) == {"tags": [tags.container_tag]}


def test_placeholders_in_the_url_and_body_are_percent_encoded() -> None:
    """`$path` keeps its slashes and encodes the rest (quotes too: safe in JSON), `$container` is
    encoded whole; a purge of everything has an empty `$path` (a URL prefix purge of all)."""
    purge = template(
        purge_url="https://cdn.example/$container/invalidate",
        purge_method="PUT",
        purge_body='{"paths": ["/images/$path*"]}',
        purge_headers=types.MappingProxyType({"content-type": "text/plain", "X-Key": "k"}),
    )
    one = purge.build('dir/a "b".png')
    assert (one.method, one.url) == ("PUT", "https://cdn.example/my%20images/invalidate")
    assert json.loads(one.body) == {"paths": ["/images/dir/a%20%22b%22.png*"]}
    assert one.headers == {"content-type": "text/plain", "X-Key": "k"}  # no second Content-Type
    assert json.loads(purge.build(None).body) == {"paths": ["/images/*"]}


def test_an_empty_body_sends_none_and_no_content_type() -> None:
    """`purge_body = ""`: no body, no Content-Type."""
    purge = template(purge_body="", purge_url="https://cdn.example/purge/$tag").build("a.png")
    assert (purge.body, purge.headers) == (b"", {})
    assert purge.url.endswith("/purge/" + purge.tag)
