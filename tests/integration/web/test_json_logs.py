"""`server.log_format = "json"`: one JSON object a line, the access log's fields, the request id."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Final

from azure.storage.blob.aio import ContainerClient

from imgproxy.config import Config
from imgproxy.web.keys import CONFIG
from imgproxy.web.logs import TEXT_FORMAT, log_handler
from tests.helpers import AppClient, AppClientFactory, fetch, payload, upload, wait_until
from tests.support.images import jpeg

ACCESS: Final = "aiohttp.access"


class Captured:
    """What a logger wrote through `web.logs.log_handler` (as the CLI's stderr gets it)."""

    def __init__(self) -> None:
        self.stream = io.StringIO()

    def lines(self) -> list[str]:
        return self.stream.getvalue().splitlines()

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.lines()]


@contextmanager
def attached(captured: Captured, config: Config, *names: str) -> Iterator[None]:
    """`names`' records go (also) to `captured`, formatted as `config` says, as worker 3."""
    handlers = []
    for name in names:
        handler = log_handler(config.server, 3, captured.stream)
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        handlers.append((logger, handler, logger.level))
        logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        for logger, handler, level in handlers:
            logger.removeHandler(handler)
            logger.setLevel(level)


async def json_client(app_client: AppClientFactory, **settings: Any) -> AppClient:
    return await app_client(server__access_log=True, server__log_format="json", **settings)


async def lines_for(captured: Captured, count: int) -> list[dict[str, Any]]:
    """The first `count` records, once written (aiohttp logs a request after its answer is sent)."""
    await wait_until(lambda: len(captured.lines()) >= count)
    return captured.records()[:count]


async def test_access_lines_are_json_with_the_request_fields(
    app_client: AppClientFactory, container: ContainerClient
) -> None:
    """Each access line parses as one JSON object with time, level, logger, message, worker, and
    the request's id (the client's), method, path, status, bytes, duration, cache result and the
    time its Azure calls took."""
    client = await json_client(app_client)
    data = payload(5000)
    await upload(container, "a.png", data)
    captured = Captured()
    with attached(captured, client.app[CONFIG], ACCESS):
        miss = await fetch(client, "/images/a.png", **{"X-Request-ID": "log-miss"})
        hit = await fetch(client, "/images/a.png?x=1")
        missing = await fetch(client, "/images/nothing.png", **{"X-Request-ID": "log-404"})
        records = await lines_for(captured, 3)
    assert [miss[0], hit[0], missing[0]] == [200, 200, 404]
    first, second, third = records
    assert set(first) >= {"time", "level", "logger", "message", "worker", "request_id", "method", "path"}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+\+00:00", first["time"])
    assert {
        k: first[k] for k in ("level", "logger", "message", "worker", "request_id", "method", "path")
    } == {
        "level": "INFO",
        "logger": ACCESS,
        "message": "GET /images/a.png 200",
        "worker": 3,
        "request_id": "log-miss",
        "method": "GET",
        "path": "/images/a.png",
    }
    assert (first["status"], first["cache"], first["variant"]) == (200, "MISS", False)
    assert 5000 < first["bytes"] < 5000 + 1000  # the body and the head (as aiohttp's %b)
    assert first["origin_ms"] > 0 and first["duration_ms"] >= first["origin_ms"]
    assert (second["cache"], second["query"]) == ("HIT", "x=1")
    assert 5000 < second["bytes"] < 5000 + 1000
    assert second["request_id"] == hit[1]["X-Request-ID"]
    assert "origin_ms" not in second  # served from memory: no Azure call for it
    assert (third["status"], third["request_id"], third["cache"]) == (404, "log-404", None)


async def test_a_variant_and_a_pass_through_are_told_apart(
    app_client: AppClientFactory, container: ContainerClient
) -> None:
    """A transform's line says variant true; a pass-through's says cache "pass" with the app's
    time (upstream_ms) and the body bytes relayed."""
    client = await json_client(app_client, transforms=True, upstream=True)
    await upload(container, "p.jpg", jpeg(64, 48), "image/jpeg")
    captured = Captured()
    with attached(captured, client.app[CONFIG], ACCESS):
        variant = await fetch(client, "/images/p.jpg?w=16&fm=png", **{"X-Request-ID": "log-variant"})
        again = await fetch(client, "/images/p.jpg?w=16&fm=png")
        passed = await fetch(client, "/big/1234", **{"X-Request-ID": "log-pass"})
        records = await lines_for(captured, 3)
    assert [variant[0], again[0], passed[0]] == [200, 200, 200]
    first, second, third = records
    assert (first["request_id"], first["cache"], first["variant"]) == ("log-variant", "MISS", True)
    assert (second["cache"], second["variant"]) == ("HIT", True)
    assert (third["request_id"], third["cache"], third["path"]) == ("log-pass", "pass", "/big/1234")
    assert 1234 < third["bytes"] < 1234 + 1000  # relayed by the pass-through: its head and body
    assert third["upstream_ms"] > 0


async def test_lines_logged_while_serving_carry_the_request_id(
    app_client: AppClientFactory, container: ContainerClient
) -> None:
    """A warning logged while serving a request (a damaged source libvips refuses) has that
    request's id; lines logged outside a request have none."""
    client = await json_client(app_client, transforms=True)
    await upload(container, "broken.jpg", b"\xff\xd8\xff not a jpeg", "image/jpeg")
    captured = Captured()
    with attached(captured, client.app[CONFIG], "imgproxy"):
        status, headers, _ = await fetch(client, "/images/broken.jpg?w=10", **{"X-Request-ID": "log-warn"})
        logging.getLogger("imgproxy").info("outside a request")
        await wait_until(lambda: len(captured.lines()) >= 2)
    records = captured.records()
    assert status >= 400 and headers["X-Request-ID"] == "log-warn"
    served = [r for r in records if r["message"] != "outside a request"]
    assert served and {r["request_id"] for r in served} == {"log-warn"}
    assert next(r for r in records if r["message"] == "outside a request").get("request_id") is None


def test_text_is_the_default_and_unchanged(config: Config) -> None:
    """By default a line is `time LEVEL logger: message` (no JSON, no request id)."""
    assert config.server.log_format == "text"
    stream = io.StringIO()
    handler = log_handler(config.server, 0, stream)
    record = logging.LogRecord("imgproxy", logging.INFO, __file__, 1, "serving on %s", ("x",), None)
    handler.handle(record)
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO imgproxy: serving on x\n", stream.getvalue()
    )
    assert TEXT_FORMAT == "%(asctime)s %(levelname)s %(name)s: %(message)s"
