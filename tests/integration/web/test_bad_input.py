"""Hostile and malformed requests: exact statuses, never a 5xx, never a read outside the container.

The table-driven tests pin the answer to each bad path, method, header, Range and conditional
header. The property-based test then throws generated paths (including invalid escapes) and
generated header values at the app and checks the invariants only.

Hypothesis and pytest-asyncio: `@given` sits directly on an `async def` test, and that works.
pytest-asyncio (1.x, asyncio_mode=auto) collects such a test as an `AsyncHypothesisTest` and
replaces `test.hypothesis.inner_test` with a synchronous wrapper that runs each example's
coroutine with `asyncio.Runner.run` on the test's own runner: the same event loop the
function-scoped async fixtures (`client`, `origin`, `small_blob`) were set up on. Those fixtures
are created once and shared by every example (hence the suppressed `function_scoped_fixture`
health check); each example only sends requests, so sharing them is sound. Checked by running
with `--hypothesis-show-statistics` (150 passing examples, a few ms each) and by a deliberately
wrong assertion, which Hypothesis found and shrank to a minimal example.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC
from email.utils import format_datetime
from typing import Final
from urllib.parse import quote

import pytest
from azure.storage.blob.aio import ContainerClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import AUTH, AppClient, AppClientFactory, fetch_raw, payload, sha256, upload
from tests.support.origin_proxy import OriginProxy

SMALL_NAME: Final = "small-blob.png"
SMALL_SIZE: Final = 1000


def assert_origin_saw_only(origin: OriginProxy, container: ContainerClient) -> None:
    """Every request that reached the origin named the test's own container."""
    outside = [r for r in origin.requests if r.container != container.container_name]
    assert outside == []


async def assert_still_healthy(client: AppClient) -> None:
    status, _, _ = await fetch_raw(client, "/healthz")
    assert status == 200


@pytest.fixture
async def small_blob(container: ContainerClient) -> bytes:
    """A 1000-byte blob at SMALL_NAME (its bytes)."""
    data = payload(SMALL_SIZE, seed=42)
    await upload(container, SMALL_NAME, data)
    return data


# --- paths ------------------------------------------------------------------------------------

LONGEST_NAME: Final = "a" * 1024
LONGEST_WIDE_NAME: Final = "é" * 1024

PATHS: Final = [
    # Traversal, literal and percent-encoded in every case mix.
    pytest.param("/images/a/../x.png", 400, None, id="dotdot-segment"),
    pytest.param("/images/..", 400, None, id="bare-dotdot"),
    pytest.param("/images/../x.png", 400, None, id="leading-dotdot"),
    pytest.param("/images/a/..", 400, None, id="trailing-dotdot"),
    pytest.param("/images/%2e%2e/x.png", 400, None, id="encoded-dotdot"),
    pytest.param("/images/%2E%2e/x.png", 400, None, id="mixed-case-encoded-dotdot"),
    pytest.param("/images/.%2e/x.png", 400, None, id="half-encoded-dotdot"),
    pytest.param("/images/%2e./x.png", 400, None, id="other-half-encoded-dotdot"),
    pytest.param("/images/a%2f..%2fx.png", 400, None, id="encoded-slashes-around-dotdot"),
    pytest.param("/images/a%2F..%2F..%2Fother/x.png", 400, None, id="encoded-climb-to-other-container"),
    pytest.param("/images/%2e%2e%2f%2e%2e%2fother%2fx.png", 400, None, id="fully-encoded-climb"),
    pytest.param("/images/%2e/x.png", 400, None, id="encoded-dot"),
    pytest.param("/images/a%2f%2fb.png", 400, None, id="encoded-empty-segment"),
    pytest.param("/images/%2fx.png", 400, None, id="encoded-leading-slash"),
    pytest.param("/images/a%5C..%5Cb.png", 400, None, id="encoded-backslash-traversal"),
    # NUL and control characters (C0, DEL, C1 as UTF-8).
    pytest.param("/images/a%00.png", 400, None, id="nul"),
    pytest.param("/images/a%01.png", 400, None, id="soh"),
    pytest.param("/images/a%0d%0aX-Injected:%201.png", 400, None, id="crlf"),
    pytest.param("/images/a%09b.png", 400, None, id="tab"),
    pytest.param("/images/a%7f.png", 400, None, id="del"),
    pytest.param("/images/a%c2%85.png", 400, None, id="c1-next-line"),
    pytest.param("/images/a%c2%9f.png", 400, None, id="c1-last"),
    # Escapes that do not decode as UTF-8.
    pytest.param("/images/%ff.png", 400, None, id="invalid-byte-ff"),
    pytest.param("/images/%c3%28.png", 400, None, id="bad-continuation-byte"),
    pytest.param("/images/%e2%82.png", 400, None, id="truncated-three-byte-sequence"),
    pytest.param("/images/%c0%ae%c0%ae/x.png", 400, None, id="overlong-dots"),
    pytest.param("/images/a%c0%afb.png", 400, None, id="overlong-slash"),
    pytest.param("/images/%ed%a0%80.png", 400, None, id="utf16-surrogate"),
    pytest.param("/images/%f4%90%80%80.png", 400, None, id="beyond-unicode"),
    # Malformed escapes are not escapes: kept literally, they name a (missing) blob.
    pytest.param("/images/a%", 404, "a%", id="truncated-percent"),
    pytest.param("/images/a%2", 404, "a%2", id="percent-one-hex-digit"),
    pytest.param("/images/%g1.png", 404, "%g1.png", id="percent-non-hex"),
    # Length: 1024 decoded characters at most.
    pytest.param("/images/" + LONGEST_NAME, 404, LONGEST_NAME, id="1024-chars-accepted"),
    pytest.param("/images/" + LONGEST_NAME + "a", 400, None, id="1025-chars"),
    pytest.param("/images/" + "a/" * 512 + "b", 400, None, id="1025-chars-in-segments"),
    pytest.param(
        "/images/" + quote(LONGEST_WIDE_NAME), 404, LONGEST_WIDE_NAME, id="1024-two-byte-chars-accepted"
    ),
    pytest.param("/images/" + quote(LONGEST_WIDE_NAME + "é"), 400, None, id="1025-two-byte-chars"),
    # Empty.
    pytest.param("/images/", 400, None, id="empty"),
]


@pytest.mark.parametrize(("raw_path", "expected", "blob_asked_for"), PATHS)
async def test_bad_path_gets_its_exact_status_and_reads_nothing_outside_the_container(
    raw_path: str,
    expected: int,
    blob_asked_for: str | None,
    client: AppClient,
    container: ContainerClient,
    origin: OriginProxy,
) -> None:
    """Each bad path answers its exact status; a 400 never reaches the origin, a 404 asks for its name."""
    status, _, body = await fetch_raw(client, raw_path)

    assert status == expected
    if expected == 400:
        assert body.startswith(b"bad path")
        assert origin.requests == []
    else:
        assert [(r.method, r.blob) for r in origin.requests] == [("GET", blob_asked_for)]
    assert_origin_saw_only(origin, container)
    await assert_still_healthy(client)


@pytest.mark.parametrize(
    "raw_path",
    [
        pytest.param("/admin/cache/%2e%2e", id="encoded-dotdot"),
        pytest.param("/admin/cache/a%00b", id="nul"),
        pytest.param("/admin/cache/%ff", id="invalid-utf8"),
    ],
)
async def test_bad_purge_path_is_400(
    raw_path: str, client: AppClient, container: ContainerClient, origin: OriginProxy
) -> None:
    """The purge route applies the same path rules as the image route."""
    status, _, body = await fetch_raw(client, raw_path, "DELETE", **AUTH)

    assert status == 400
    assert body.startswith(b"bad path")
    assert origin.requests == []
    await assert_still_healthy(client)


async def test_path_longer_than_the_request_line_limit_is_4xx(client: AppClient, origin: OriginProxy) -> None:
    """A request line over aiohttp's 8190-byte limit is refused by aiohttp itself with a 4xx."""
    status, _, _ = await fetch_raw(client, "/images/" + "%C3%A9" * 1500)

    assert 400 <= status < 500
    assert origin.requests == []
    await assert_still_healthy(client)


# --- headers and methods ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({"X-Junk": "x" * 20_000}, id="20KB-header"),
        pytest.param({f"X-Junk-{i}": "x" for i in range(200)}, id="200-headers"),
    ],
)
async def test_oversized_headers_are_refused_with_4xx(
    headers: dict[str, str], client: AppClient, small_blob: bytes, origin: OriginProxy
) -> None:
    """Headers over aiohttp's limits are refused by aiohttp itself with a 4xx, never a 5xx."""
    status, _, _ = await fetch_raw(client, f"/images/{SMALL_NAME}", **headers)

    assert 400 <= status < 500
    assert origin.requests == []
    await assert_still_healthy(client)


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "PROPFIND"])
@pytest.mark.parametrize("raw_path", ["/images/x.png", "/images/%2e%2e/x.png"])
async def test_other_methods_on_images_are_405_with_allow(
    method: str, raw_path: str, client: AppClient, origin: OriginProxy
) -> None:
    """Any method but GET and HEAD on the image route is 405 with `Allow: GET,HEAD`, before the path."""
    status, headers, _ = await fetch_raw(client, raw_path, method)

    assert status == 405
    assert set(headers["Allow"].split(",")) == {"GET", "HEAD"}
    assert origin.requests == []
    await assert_still_healthy(client)


async def test_method_unknown_to_the_http_parser_is_400(client: AppClient, origin: OriginProxy) -> None:
    """A method token aiohttp's parser does not know (here BREW) is refused by aiohttp with a 400."""
    status, _, _ = await fetch_raw(client, "/images/x.png", "BREW")

    assert status == 400
    assert origin.requests == []
    await assert_still_healthy(client)


# --- error bodies never echo what the client sent ----------------------------------------------

CRAFTED: Final = "<script>alert(1)</script>"
SIGNING_KEY: Final = "bad-input-key"
TRANSFORM_PARAMETERS: Final = ("w", "h", "dpr", "fit", "pos", "enlarge", "fm", "q", "bg", "preset")


@pytest.fixture
async def transforms_client(app_client: AppClientFactory) -> AppClient:
    """The app with transforms on, unsigned parameters allowed, and a preset."""
    return await app_client(transforms=True, transform__presets={"thumb": "w=10"})


def assert_not_echoed(body: bytes) -> None:
    """The crafted value, as sent or decoded, and even a piece of it, is not in `body`."""
    for form in (CRAFTED, quote(CRAFTED), quote(CRAFTED, safe=""), "script", "alert"):
        assert form.encode() not in body, body


@pytest.mark.parametrize(
    "query",
    [
        *(pytest.param(f"{name}={quote(CRAFTED)}", id=name) for name in TRANSFORM_PARAMETERS),
        pytest.param(f"w=10&w={quote(CRAFTED)}", id="repeated"),
        pytest.param(f"w=0&v={quote(CRAFTED)}", id="beside-an-unknown-parameter"),
        pytest.param(f"fm=webp{quote(CRAFTED)}&q=80", id="appended-to-a-good-value"),
        pytest.param("preset=" + quote(CRAFTED) * 200, id="long-preset-name"),
    ],
)
async def test_a_crafted_transform_value_never_appears_in_the_400(
    query: str, transforms_client: AppClient, small_blob: bytes
) -> None:
    """A crafted value in any transform parameter (or the preset's name) gets a 400 in fixed words
    naming the parameter: the value, encoded or decoded, is not echoed."""
    status, headers, body = await fetch_raw(transforms_client, f"/images/{SMALL_NAME}?{query}")

    assert status == 400
    assert body.startswith(b"bad transform parameter ")
    assert headers["Content-Type"].startswith("text/plain")
    assert_not_echoed(body)


async def test_a_crafted_path_signature_or_blob_name_never_appears_in_an_error_body(
    app_client: AppClientFactory, transforms_client: AppClient, container: ContainerClient
) -> None:
    """A crafted path (400), signature (403) or name of a blob that is not an image (422) gets
    fixed words: what the client sent is not echoed."""
    await upload(container, f"x{CRAFTED}.jpg", f"{CRAFTED}\n".encode() * 20, content_type="image/jpeg")
    signed = await app_client(transform__enabled=True, transform__signing_key=SIGNING_KEY)
    answers = [
        await fetch_raw(transforms_client, f"/images/{quote(CRAFTED)}/%2e%2e/x.png"),
        await fetch_raw(transforms_client, f"/images/{quote(CRAFTED)}%00.png"),
        await fetch_raw(signed, f"/images/{SMALL_NAME}?w=10&s={quote(CRAFTED)}"),
        await fetch_raw(transforms_client, f"/images/x{quote(CRAFTED)}.jpg?w=10"),
    ]

    assert [status for status, _, _ in answers] == [400, 400, 403, 422]
    for _, _, body in answers:
        assert_not_echoed(body)


# --- Range and conditional headers on an existing blob -----------------------------------------

FULL: Final = "full"  # 200 with the whole blob
NOT_MODIFIED: Final = b""
PRECONDITION_FAILED: Final = b"precondition failed\n"
UNSATISFIABLE: Final = b"range not satisfiable\n"

# headers, expected status, expected body: FULL, the (start, end) of a 206, or exact bytes.
HEADER_CASES: Final = [
    # Malformed ranges are ignored (RFC 9110 section 14.2): the full 200.
    pytest.param({"Range": "bytes=--"}, 200, FULL, id="range-double-dash"),
    pytest.param({"Range": "bytes=1-2-3"}, 200, FULL, id="range-three-numbers"),
    pytest.param({"Range": "bytes=0-1,"}, 200, FULL, id="range-trailing-comma"),
    pytest.param({"Range": "bytes=0-1,5-6"}, 200, FULL, id="range-multi"),
    pytest.param({"Range": "="}, 200, FULL, id="range-bare-equals"),
    pytest.param({"Range": ""}, 200, FULL, id="range-empty"),
    pytest.param({"Range": "bytes"}, 200, FULL, id="range-unit-only"),
    pytest.param({"Range": "bytes=-"}, 200, FULL, id="range-dash-only"),
    pytest.param({"Range": "bytes=a-b"}, 200, FULL, id="range-letters"),
    pytest.param({"Range": "bytes=0x0-0x9"}, 200, FULL, id="range-hex"),
    pytest.param({"Range": "bytes=+1-2"}, 200, FULL, id="range-plus-sign"),
    pytest.param({"Range": "bytes=1.5-2"}, 200, FULL, id="range-fraction"),
    pytest.param({"Range": "bytes=9-3"}, 200, FULL, id="range-reversed"),
    pytest.param({"Range": "pages=0-1"}, 200, FULL, id="range-other-unit"),
    pytest.param({"Range": "bytes=0-1;q=1"}, 200, FULL, id="range-parameter"),
    pytest.param({"Range": "bytes=\t0-1"}, 200, FULL, id="range-inner-tab"),
    # Satisfiable edge forms.
    pytest.param({"Range": "bytes=999-"}, 206, (999, 999), id="range-last-byte"),
    pytest.param({"Range": "bytes=0-99999999999999999999999"}, 206, (0, 999), id="range-huge-end"),
    pytest.param({"Range": "bytes=-99999999999999999999999"}, 206, (0, 999), id="range-huge-suffix"),
    # Unsatisfiable: 416.
    pytest.param({"Range": "bytes=99999999999999999999999-"}, 416, UNSATISFIABLE, id="range-huge-start"),
    pytest.param({"Range": "bytes=1000-"}, 416, UNSATISFIABLE, id="range-start-at-size"),
    pytest.param({"Range": "bytes=-0"}, 416, UNSATISFIABLE, id="range-empty-suffix"),
    pytest.param(
        {"Range": "bytes=" + "1" * 4301 + "-"},
        416,
        UNSATISFIABLE,
        id="range-start-over-int-digit-limit",
    ),
    pytest.param(
        {"Range": "bytes=-" + "9" * 4301},
        206,
        (0, 999),
        id="range-suffix-over-int-digit-limit",
    ),
    # If-None-Match that parses to no entity tag: no tag matches, and it still overrides IMS.
    pytest.param({"If-None-Match": '"unterminated'}, 200, FULL, id="inm-unterminated"),
    pytest.param({"If-None-Match": "W/"}, 200, FULL, id="inm-bare-weak-prefix"),
    pytest.param({"If-None-Match": "*,*"}, 200, FULL, id="inm-star-list"),
    pytest.param({"If-None-Match": ",,,"}, 200, FULL, id="inm-empty-list"),
    pytest.param({"If-None-Match": "unquoted"}, 200, FULL, id="inm-unquoted"),
    pytest.param(
        {"If-None-Match": "W/", "If-Modified-Since": "Fri, 31 Dec 9999 23:59:59 GMT"},
        200,
        FULL,
        id="inm-garbage-still-overrides-ims",
    ),
    pytest.param({"If-None-Match": "*"}, 304, NOT_MODIFIED, id="inm-star"),
    # If-Modified-Since / If-Unmodified-Since that are not HTTP dates are ignored.
    pytest.param({"If-Modified-Since": "yesterday"}, 200, FULL, id="ims-word"),
    pytest.param({"If-Modified-Since": "Mon, 99 Foo 9999 99:99:99 GMT"}, 200, FULL, id="ims-impossible-date"),
    pytest.param({"If-Modified-Since": "Mon, 01 Jan 10000 00:00:00 GMT"}, 200, FULL, id="ims-year-10000"),
    pytest.param({"If-Unmodified-Since": "tomorrow"}, 200, FULL, id="ius-word"),
    pytest.param(
        {"If-Unmodified-Since": "Mon, 01 Jan 1990 00:00:00 GMT"}, 412, PRECONDITION_FAILED, id="ius-past"
    ),
    # If-Range that is neither a strong ETag nor a date: the range is dropped, full 200.
    pytest.param({"If-Range": "junk", "Range": "bytes=0-9"}, 200, FULL, id="if-range-junk"),
    pytest.param({"If-Range": '"', "Range": "bytes=0-9"}, 200, FULL, id="if-range-lone-quote"),
    pytest.param({"If-Range": 'W/"x"', "Range": "bytes=0-9"}, 200, FULL, id="if-range-weak"),
    pytest.param({"If-Range": "junk"}, 200, FULL, id="if-range-without-range"),
    # If-Match that parses to no entity tag: nothing matches, so the precondition fails.
    pytest.param({"If-Match": ",,,"}, 412, PRECONDITION_FAILED, id="if-match-empty-list"),
    pytest.param({"If-Match": '"unterminated'}, 412, PRECONDITION_FAILED, id="if-match-unterminated"),
    pytest.param({"If-Match": "*"}, 200, FULL, id="if-match-star"),
    pytest.param({"If-Match": ""}, 200, FULL, id="if-match-empty-ignored"),
]


@pytest.mark.parametrize(("headers", "expected_status", "expected_body"), HEADER_CASES)
async def test_garbage_range_and_conditional_headers_get_rfc_status_and_exact_bytes(
    headers: dict[str, str],
    expected_status: int,
    expected_body: str | tuple[int, int] | bytes,
    client: AppClient,
    small_blob: bytes,
    container: ContainerClient,
    origin: OriginProxy,
) -> None:
    """Malformed Range and conditional headers get the RFC 9110 answer and byte-exact bodies."""
    status, response_headers, body = await fetch_raw(client, f"/images/{SMALL_NAME}", **headers)

    assert status == expected_status
    if expected_body == FULL:
        assert sha256(body) == sha256(small_blob)
        assert "Content-Range" not in response_headers
    elif isinstance(expected_body, bytes):
        assert body == expected_body
    else:
        assert isinstance(expected_body, tuple)
        start, end = expected_body
        assert response_headers["Content-Range"] == f"bytes {start}-{end}/{SMALL_SIZE}"
        assert body == small_blob[start : end + 1]
    if status == 416:
        assert response_headers["Content-Range"] == f"bytes */{SMALL_SIZE}"
    assert_origin_saw_only(origin, container)
    await assert_still_healthy(client)


# --- property: generated paths and headers -----------------------------------------------------

# Path text from an alphabet of separators, dots, stray '%' and '\', letters, digits, space,
# non-ASCII letters and control characters (C0, DEL, C1). quote() leaves '/', '%' and '.' as they
# are, so dot segments and stray escapes survive. A "clean" piece leaves out '\' and controls, so
# that about half the paths are valid names (and reach Azurite) rather than nearly all being 400s.
CLEAN_CHARS: Final = st.one_of(st.sampled_from(list("/.% aZ09-_é日")), st.characters(categories=["L", "N"]))
ANY_CHARS: Final = st.one_of(
    CLEAN_CHARS,
    st.just("\\"),
    st.characters(min_codepoint=0x00, max_codepoint=0x1F),
    st.characters(min_codepoint=0x7F, max_codepoint=0x9F),
)
# Escapes a client may write by hand: any byte (so invalid UTF-8 too), and malformed ones.
ESCAPES: Final = st.one_of(
    st.integers(0, 255).map(lambda byte: f"%{byte:02X}"),
    st.integers(0, 255).map(lambda byte: f"%{byte:02x}"),
    st.sampled_from(["%", "%g1", "%2", "%2e%2e", "%2E.", "%2f", "%2F..%2F", "%c3%28", "%e2%82", "%ff"]),
)


def encoded(chars: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.text(chars, max_size=12).map(lambda text: quote(text, safe="/%."))


RAW_PATHS: Final = st.one_of(
    st.lists(encoded(CLEAN_CHARS), min_size=1, max_size=4),
    st.lists(st.one_of(encoded(ANY_CHARS), ESCAPES), max_size=8),
).map(lambda pieces: "/images/" + "".join(pieces))

# Header values: printable ASCII only (what a client can send), plus well-formed shapes. Numbers
# are also generated far past 4,300 digits, Python's int() limit.
PRINTABLE: Final = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)
NUMBER: Final = st.one_of(
    st.just(""),
    st.integers(0, 2 * SMALL_SIZE).map(str),
    st.integers(0, 10**30).map(str),
)
# One number past int()'s limit (two would pass aiohttp's 8,190-byte header limit).
HUGE: Final = st.integers(4_301, 6_000).map(lambda digits: "9" * digits)
RANGES: Final = st.one_of(
    PRINTABLE,
    HUGE.map(lambda number: f"bytes={number}-"),
    HUGE.map(lambda number: f"bytes=-{number}"),
    HUGE.map(lambda number: f"bytes=0-{number}"),
    st.builds(lambda first, last: f"bytes={first}-{last}", NUMBER, NUMBER),
    st.lists(st.builds(lambda first, last: f"{first}-{last}", NUMBER, NUMBER), min_size=1, max_size=3).map(
        lambda specs: "bytes=" + ",".join(specs)
    ),
)
ETAG_TOKEN: Final = "<etag>"  # replaced by the blob's real ETag before sending
DATE_TOKEN: Final = "<last-modified>"  # replaced by its real Last-Modified
HTTP_DATES: Final = st.datetimes(timezones=st.just(UTC)).map(
    lambda moment: format_datetime(moment, usegmt=True)
)
ETAGS: Final = st.one_of(
    PRINTABLE,
    st.sampled_from(["*", ETAG_TOKEN, f"W/{ETAG_TOKEN}", f'"x", {ETAG_TOKEN}', '"x"']),
)
DATES: Final = st.one_of(PRINTABLE, HTTP_DATES, st.just(DATE_TOKEN))
HEADERS: Final = st.fixed_dictionaries(
    {},
    optional={
        "Range": RANGES,
        "If-None-Match": ETAGS,
        "If-Modified-Since": DATES,
        "If-Range": st.one_of(ETAGS, DATES),
        "If-Match": ETAGS,
        "If-Unmodified-Since": DATES,
    },
)


@pytest.fixture
async def validators(client: AppClient, small_blob: bytes) -> dict[str, str]:
    """The small blob's ETag and Last-Modified, to substitute for the tokens in generated headers."""
    status, headers, _ = await fetch_raw(client, f"/images/{SMALL_NAME}", "HEAD")
    assert status == 200
    return {ETAG_TOKEN: headers["ETag"], DATE_TOKEN: headers["Last-Modified"]}


def substitute(value: str, validators: Mapping[str, str]) -> str:
    for token, real in validators.items():
        value = value.replace(token, real)
    return value


async def assert_blob_answer_is_consistent(
    client: AppClient, method: str, headers: Mapping[str, str], data: bytes
) -> None:
    """The small blob, asked for with `headers`: an RFC 9110 status and exactly the right bytes."""
    status, response_headers, body = await fetch_raw(client, f"/images/{SMALL_NAME}", method, **headers)
    assert status in {200, 206, 304, 412, 416}, (headers, status)
    if method == "HEAD" or status == 304:
        assert body == b""
    elif status == 200:
        assert sha256(body) == sha256(data)
    elif status == 206:
        unit, _, span = response_headers["Content-Range"].partition(" ")
        first, _, rest = span.partition("-")
        last, _, size = rest.partition("/")
        assert (unit, size) == ("bytes", str(len(data)))
        assert body == data[int(first) : int(last) + 1]
    else:
        assert body == {412: PRECONDITION_FAILED, 416: UNSATISFIABLE}[status]
    if status == 416:
        assert response_headers["Content-Range"] == f"bytes */{len(data)}"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw_path=RAW_PATHS, headers=HEADERS, method=st.sampled_from(["GET", "HEAD"]))
async def test_generated_paths_and_headers_never_get_5xx_or_leave_the_container(
    raw_path: str,
    headers: dict[str, str],
    method: str,
    client: AppClient,
    small_blob: bytes,
    validators: dict[str, str],
    container: ContainerClient,
    origin: OriginProxy,
) -> None:
    """No generated path or header value gets a 5xx, reads outside the container, or wrong bytes."""
    sent = {name: substitute(value, validators) for name, value in headers.items()}

    status, _, _ = await fetch_raw(client, raw_path, method, **sent)
    assert status in {200, 400, 404}, (raw_path, sent, status)
    # The same headers on the blob that exists, then only its Range and If-Range (so that ranges
    # are judged even when a generated If-Match or If-None-Match decides first).
    await assert_blob_answer_is_consistent(client, method, sent, small_blob)
    ranged = {name: value for name, value in sent.items() if name in ("Range", "If-Range")}
    await assert_blob_answer_is_consistent(client, method, ranged, small_blob)

    assert_origin_saw_only(origin, container)
    await assert_still_healthy(client)
