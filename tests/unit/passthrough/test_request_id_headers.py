"""The request id in the pass-through's heads: ours replaces the client's and the app's."""

from __future__ import annotations

from typing import Final

from imgproxy.passthrough.headers import Forwarding, request_head, response_head

FWD: Final = Forwarding("192.0.2.7", "http", b"app:8000", True, False)


def fields(head: bytes) -> list[tuple[str, str]]:
    lines = head.decode("latin-1").split("\r\n")[1:]
    return [(name, value) for name, _, value in (line.partition(": ") for line in lines if line)]


def values(head: bytes, name: str) -> list[str]:
    return [value for key, value in fields(head) if key.lower() == name.lower()]


def test_the_app_gets_our_id_instead_of_the_clients_fields() -> None:
    """Every X-Request-ID the client sent (any spelling) is dropped; ours is sent once."""
    raw = ((b"Host", b"h"), (b"X-Request-ID", b"bad value"), (b"x-request-id", b"other"), (b"Accept", b"*/*"))
    head = request_head("GET", "/p", raw, FWD, None, False, request_id="ours-1")
    assert values(head, "X-Request-ID") == ["ours-1"]
    assert values(head, "Accept") == ["*/*"]


def test_without_an_id_the_request_head_is_as_before() -> None:
    """No request id (none in context): no X-Request-ID is made up, and the client's is dropped."""
    head = request_head("GET", "/p", ((b"Host", b"h"), (b"X-Request-ID", b"c")), FWD, None, False)
    assert values(head, "X-Request-ID") == []


def test_the_client_gets_our_id_instead_of_the_apps() -> None:
    """The app's own X-Request-ID is dropped from its answer; ours is added, framing kept."""
    raw = ((b"Content-Type", b"text/plain"), (b"X-Request-ID", b"apps"), (b"Content-Length", b"3"))
    for chunked in (False, True):
        head = response_head(200, "OK", raw, chunked, None, request_id="ours-2")
        assert values(head, "X-Request-ID") == ["ours-2"]
        assert values(head, "Content-Type") == ["text/plain"]
    assert values(
        response_head(101, "Switching", (), False, b"Upgrade", b"websocket", "ours-3"), "X-Request-ID"
    ) == ["ours-3"]
