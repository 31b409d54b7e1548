"""`http.tags.CdnTags`: tags safe for every CDN whatever the path, one per blob (variants share
it), one per container, and each header's separator."""

from __future__ import annotations

import re

from imgproxy.core.blob import variant_key
from imgproxy.http.tags import CdnTags

SAFE = re.compile(r"[A-Za-z0-9_-]{1,64}")


def test_a_tag_is_short_and_safe_whatever_the_path_holds() -> None:
    """Spaces, commas, quotes, non-ASCII and 1,000-character paths give 64 safe characters at most."""
    tags = CdnTags(("Cache-Tag",), "p" * 32, "images")
    for path in ("a b,c.png", 'q"uote\\.png', "日本/写真.jpg", "x/" * 500 + "y.png"):
        assert SAFE.fullmatch(tags.blob_tag(path)), path


def test_each_blob_and_container_has_its_own_tag_and_variants_share_the_blobs() -> None:
    """Different paths, containers and the container itself give different tags; a variant's key
    gives its blob's."""
    one = CdnTags(("Cache-Tag",), "imgproxy-", "one")
    two = CdnTags(("Cache-Tag",), "imgproxy-", "two")
    assert len({one.blob_tag("a.png"), one.blob_tag("b.png"), two.blob_tag("a.png"), one.container_tag}) == 4
    assert one.headers(variant_key("a.png", "w=300&fm=webp")) == one.headers("a.png")


def test_surrogate_key_is_space_separated_and_the_others_comma_separated() -> None:
    """Fastly's and Varnish xkey's syntax for Surrogate-Key (any case), Cloudflare's and Akamai's
    for the rest; the headers in the configured order."""
    tags = CdnTags(("surrogate-key", "Cache-Tag", "Edge-Cache-Tag"), "t-", "c")
    blob, whole = tags.blob_tag("x.png"), tags.container_tag
    assert tags.headers("x.png") == (
        ("surrogate-key", f"{blob} {whole}"),
        ("Cache-Tag", f"{blob},{whole}"),
        ("Edge-Cache-Tag", f"{blob},{whole}"),
    )
    assert CdnTags((), "t-", "c").headers("x.png") == ()
