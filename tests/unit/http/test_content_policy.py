"""`content_policy`: which types are inert raster images, what each `http.active_content` presents,
and the header sets and error answers that carry it."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from imgproxy.config import ActiveContent, HttpConfig
from imgproxy.core.blob import BlobMeta
from imgproxy.core.errors import ActiveContentRefused, BlobNotFound, ImgproxyError, RangeNotSatisfiable
from imgproxy.http.content_policy import CONTENT_SECURITY_POLICY, ResponsePolicy, is_inert_image
from imgproxy.http.semantics import blob_headers, hit_headers, not_modified_headers
from imgproxy.http.statuses import error_response
from imgproxy.transform.result import CONTENT_TYPES

MODIFIED = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)
CACHE_CONTROL = "public, max-age=60"
ATTACHMENT = ResponsePolicy(CACHE_CONTROL)
SANDBOX = ResponsePolicy(CACHE_CONTROL, ActiveContent.SANDBOX)
REFUSE = ResponsePolicy(CACHE_CONTROL, ActiveContent.REFUSE)
OCTET_STREAM = (("Content-Type", "application/octet-stream"), ("Content-Disposition", "attachment"))


def meta(content_type: str, etag: str = '"0xABC"') -> BlobMeta:
    return BlobMeta(size=10, etag=etag, last_modified=MODIFIED, content_type=content_type)


@pytest.mark.parametrize(
    ("content_type", "inert"),
    [
        ("image/png", True),
        ("image/jpeg", True),
        ("IMAGE/PNG; q=1", True),
        ("Image/Jpeg;charset=binary", True),
        (" image/webp\t", True),
        ("image/gif ; x=y", True),
        ("image/avif", True),
        ("image/x-icon", True),
        ("image/vnd.microsoft.icon", True),
        ("image/tiff", True),
        ("image/heic", True),
        ("image/jxl", True),
        ("", False),
        (";", False),
        ("image", False),
        ("/png", False),
        ("image/*", False),
        ("text/html", False),
        ("Text/HTML; charset=utf-8", False),
        ("image/svg+xml", False),
        ("IMAGE/SVG+XML; charset=utf-8", False),
        ("application/xhtml+xml", False),
        ("text/xml", False),
        ("application/xml", False),
        ("application/javascript", False),
        ("text/javascript", False),
        ("application/pdf", False),
        ("text/plain", False),
        ("application/octet-stream", False),
        ("image/png, text/html", False),
        ("image/png text/html", False),
        ("image/png\r\nX-Injected: 1", False),
        ("image/png\n", False),
    ],
)
def test_inert_image_classification_table(content_type: str, inert: bool) -> None:
    """Only allow-listed raster types are inert, case-insensitively and without parameters."""
    assert is_inert_image(content_type) is inert


def test_every_transform_output_type_is_inert() -> None:
    """What a transform writes (JPEG, PNG, WebP, GIF, AVIF) is always presented inline."""
    assert all(is_inert_image(content_type) for content_type in CONTENT_TYPES.values())


@pytest.mark.parametrize(
    ("policy", "content_type", "presented"),
    [
        (ATTACHMENT, "image/png", (("Content-Type", "image/png"),)),
        (ATTACHMENT, "IMAGE/PNG; q=1", (("Content-Type", "IMAGE/PNG; q=1"),)),
        (ATTACHMENT, "text/html", OCTET_STREAM),
        (ATTACHMENT, "image/svg+xml", OCTET_STREAM),
        (ATTACHMENT, "application/octet-stream", OCTET_STREAM),
        (ATTACHMENT, "", OCTET_STREAM),
        (SANDBOX, "image/svg+xml", (("Content-Type", "image/svg+xml"),)),
        (SANDBOX, "Text/HTML; charset=utf-8", (("Content-Type", "Text/HTML; charset=utf-8"),)),
        (SANDBOX, "image/jpeg", (("Content-Type", "image/jpeg"),)),
        (REFUSE, "image/jpeg", (("Content-Type", "image/jpeg"),)),
    ],
)
def test_content_headers_by_mode(
    policy: ResponsePolicy, content_type: str, presented: tuple[tuple[str, str], ...]
) -> None:
    """Raster types keep their declared type; others get what the mode says."""
    assert policy.content_headers(content_type) == presented
    policy.admit(content_type)  # nothing refused here


@pytest.mark.parametrize("content_type", ["text/html", "image/svg+xml", "application/octet-stream", ""])
def test_refuse_mode_refuses_what_is_not_an_inert_image(content_type: str) -> None:
    """Under `refuse` both the admission check and the header builders raise ActiveContentRefused."""
    with pytest.raises(ActiveContentRefused):
        REFUSE.admit(content_type)
    with pytest.raises(ActiveContentRefused):
        REFUSE.content_headers(content_type)
    with pytest.raises(ActiveContentRefused):
        blob_headers(meta(content_type, etag='"refused"'), REFUSE)
    ATTACHMENT.admit(content_type)
    SANDBOX.admit(content_type)


def test_policy_is_made_from_the_http_section() -> None:
    """`from_config` takes Cache-Control and the mode from [http]; the default is attachment."""
    assert ResponsePolicy.from_config(HttpConfig()).active_content is ActiveContent.ATTACHMENT
    made = ResponsePolicy.from_config(HttpConfig(cache_control="no-cache", active_content="sandbox"))
    assert (made.cache_control, made.active_content) == ("no-cache", ActiveContent.SANDBOX)


def test_raster_blob_headers_are_inline_with_the_csp() -> None:
    """A PNG's 200 headers: its type, no Content-Disposition, nosniff and the sandbox CSP."""
    assert blob_headers(meta("image/png"), ATTACHMENT) == {
        "Content-Type": "image/png",
        "ETag": '"0xABC"',
        "Last-Modified": "Fri, 01 May 2026 12:00:00 GMT",
        "Cache-Control": CACHE_CONTROL,
        "Accept-Ranges": "bytes",
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "default-src 'none'; sandbox",
    }


def test_active_blob_headers_are_an_attachment() -> None:
    """An HTML blob's 200 headers under `attachment`: octet-stream, attachment, nosniff, CSP."""
    headers = blob_headers(meta("text/html; charset=utf-8", etag='"html"'), ATTACHMENT)
    assert headers == {
        "Content-Type": "application/octet-stream",
        "Content-Disposition": "attachment",
        "ETag": '"html"',
        "Last-Modified": "Fri, 01 May 2026 12:00:00 GMT",
        "Cache-Control": CACHE_CONTROL,
        "Accept-Ranges": "bytes",
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    }


def test_hit_headers_are_built_once_per_blob_version_and_policy() -> None:
    """The cached hit headers are one object per (version, policy) and differ between policies."""
    svg = meta("image/svg+xml", etag='"svg"')
    assert hit_headers(svg, ATTACHMENT) is hit_headers(svg, ATTACHMENT)
    assert hit_headers(svg, ATTACHMENT)["Content-Type"] == "application/octet-stream"
    assert hit_headers(svg, SANDBOX)["Content-Type"] == "image/svg+xml"
    assert "Content-Disposition" not in hit_headers(svg, SANDBOX)
    assert hit_headers(svg, SANDBOX)["Content-Security-Policy"] == CONTENT_SECURITY_POLICY


def test_not_modified_carries_the_csp_but_no_type() -> None:
    """A 304 keeps ETag, Last-Modified, Cache-Control and the CSP, never Content-Type/Disposition."""
    headers = blob_headers(meta("text/html", etag='"html304"'), ATTACHMENT)
    assert not_modified_headers(headers) == {
        "ETag": '"html304"',
        "Last-Modified": "Fri, 01 May 2026 12:00:00 GMT",
        "Cache-Control": CACHE_CONTROL,
        "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    }


def test_refused_answer_is_a_fixed_403() -> None:
    """ActiveContentRefused is a 403 whose reason is fixed (the blob's type is not echoed)."""
    response = error_response(ActiveContentRefused("text/html; <script>"))
    assert response.status == 403
    assert response.text == "not served: not a raster image\n"


@pytest.mark.parametrize(
    "error", [ActiveContentRefused("text/html"), BlobNotFound("a.png"), RangeNotSatisfiable(10)]
)
def test_error_answers_carry_nosniff_and_the_csp(error: ImgproxyError) -> None:
    """Every error answer is text/plain with nosniff and the sandbox CSP."""
    response = error_response(error)
    assert response.content_type == "text/plain"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    assert response.headers["Cache-Control"] == "no-store"
