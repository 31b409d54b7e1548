"""Traces (`[otel] enabled`): the spans one request makes, checked with the SDK's own in-memory
exporter, W3C trace context from the client and to the app; and, with tracing off, no
OpenTelemetry at all in the process."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import pytest
from azure.storage.blob.aio import ContainerClient
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from devtools.redis_server import RedisServer
from imgproxy.tracing import OtelTracer
from imgproxy.web.keys import TRACER
from tests.helpers import AppClient, AppClientFactory, upload, wait_until
from tests.support.images import jpeg
from tests.support.origin_proxy import OriginProxy

CLIENT_TRACE: Final = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN: Final = "00f067aa0ba902b7"
TRACEPARENT: Final = f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"
ROOT: Final = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def no_export(monkeypatch: pytest.MonkeyPatch) -> None:
    """Spans are made but sent nowhere but the test's in-memory exporter."""
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")


async def traced_app(
    app_client: AppClientFactory, **features: object
) -> tuple[AppClient, InMemorySpanExporter]:
    client = await app_client(otel__enabled=True, **features)
    tracer = client.app[TRACER]
    assert isinstance(tracer, OtelTracer)
    exporter = InMemorySpanExporter()
    tracer.add_span_processor(SimpleSpanProcessor(exporter))
    return client, exporter


def spans_of(exporter: InMemorySpanExporter, trace_id: int) -> list[ReadableSpan]:
    return [span for span in exporter.get_finished_spans() if span.context.trace_id == trace_id]


async def server_span(exporter: InMemorySpanExporter, name: str, after: int = 0) -> ReadableSpan:
    """The first server span named `name` among the spans finished after the first `after` (its
    span ends when the handler returns, which may be just after the client has the answer)."""

    def found() -> list[ReadableSpan]:
        return [
            span
            for span in exporter.get_finished_spans()[after:]
            if span.name == name and span.kind is SpanKind.SERVER
        ]

    await wait_until(lambda: bool(found()))
    return found()[0]


def children(spans: Sequence[ReadableSpan], parent: ReadableSpan) -> dict[str, ReadableSpan]:
    """The children of `parent`, by name (the last one of each name)."""
    return {
        span.name: span
        for span in spans
        if span.parent is not None and span.parent.span_id == parent.context.span_id
    }


async def test_a_miss_is_a_server_span_of_the_clients_trace_with_the_azure_call_under_it(
    app_client: AppClientFactory, container: ContainerClient
) -> None:
    """A MISS: a server span continuing the client's traceparent, one `azure GetBlob` span under it."""
    await upload(container, "a.jpg", jpeg(64, 48), "image/jpeg")
    client, exporter = await traced_app(app_client)

    response = await client.get("/images/a.jpg", headers={"traceparent": TRACEPARENT})
    assert response.status == 200
    assert response.headers["X-Cache"] == "MISS"
    await response.read()

    root = await server_span(exporter, "GET /images/{path}")
    assert root.context.trace_id == int(CLIENT_TRACE, 16)
    assert root.parent is not None and root.parent.span_id == int(CLIENT_SPAN, 16)
    assert root.parent.is_remote
    assert root.attributes is not None
    assert root.attributes["http.response.status_code"] == 200
    assert root.attributes["imgproxy.cache"] == "MISS"
    assert root.attributes["url.path"] == "/images/a.jpg"
    under = children(spans_of(exporter, root.context.trace_id), root)
    assert set(under) == {"azure GetBlob"}
    azure = under["azure GetBlob"]
    assert azure.kind is SpanKind.CLIENT
    assert azure.attributes is not None
    assert azure.attributes["az.blob"] == "a.jpg"
    assert azure.attributes["az.container"] == container.container_name

    # The hit: its own span (the hot path's answer is traced too), and no Azure call.
    before = len(exporter.get_finished_spans())
    response = await client.get("/images/a.jpg")
    assert response.headers["X-Cache"] == "HIT"
    await response.read()
    hit = await server_span(exporter, "GET /images/{path}", after=before)
    assert hit.parent is None  # no traceparent: a trace of its own
    assert hit.context.trace_id != root.context.trace_id
    assert children(spans_of(exporter, hit.context.trace_id), hit) == {}


async def test_a_transform_has_its_queue_wait_and_its_run_as_separate_spans(
    app_client: AppClientFactory, container: ContainerClient
) -> None:
    """A cold variant: `transform` under the request, `transform.queue` then `transform.run` under it."""
    await upload(container, "b.jpg", jpeg(320, 240), "image/jpeg")
    client, exporter = await traced_app(app_client, transforms=True)

    response = await client.get("/images/b.jpg?w=100&fm=webp", headers={"traceparent": TRACEPARENT})
    assert response.status == 200
    assert response.headers["Content-Type"] == "image/webp"
    body = await response.read()

    root = await server_span(exporter, "GET /images/{path}")
    spans = spans_of(exporter, int(CLIENT_TRACE, 16))
    transform = children(spans, root)["transform"]
    assert transform.attributes is not None and transform.attributes["transform.format"] == "webp"
    steps = children(spans, transform)
    assert {"transform.queue", "transform.run"} <= set(steps)
    queue, run = steps["transform.queue"], steps["transform.run"]
    assert queue.end_time is not None and run.start_time is not None and queue.end_time <= run.start_time
    assert run.attributes is not None and run.attributes["transform.output_bytes"] == len(body)
    assert [
        span.attributes["az.blob"] for span in spans if span.name == "azure GetBlob" and span.attributes
    ] == ["b.jpg"]


async def test_a_pass_through_sends_the_app_a_traceparent_of_the_clients_trace(
    app_client: AppClientFactory,
) -> None:
    """The app gets one traceparent: the client's trace, our `passthrough` client span as parent."""
    client, exporter = await traced_app(app_client, upstream=True)

    response = await client.get(
        "/echo/traced", headers={"traceparent": TRACEPARENT, "tracestate": "vendor=client"}
    )
    assert response.status == 200
    seen = json.loads(await response.read())

    root = await server_span(exporter, "GET")
    assert root.context.trace_id == int(CLIENT_TRACE, 16)
    passthrough = children(spans_of(exporter, root.context.trace_id), root)["passthrough"]
    assert passthrough.kind is SpanKind.CLIENT
    assert passthrough.attributes is not None
    assert passthrough.attributes["http.response.status_code"] == 200
    sent = [value for name, value in seen["headers"] if name.lower() == "traceparent"]
    assert sent == [f"00-{CLIENT_TRACE}-{passthrough.context.span_id:016x}-01"]
    # The client's tracestate goes on with its trace (the propagator carries it).
    assert [value for name, value in seen["headers"] if name.lower() == "tracestate"] == ["vendor=client"]


async def test_an_invalid_traceparent_starts_a_new_trace(app_client: AppClientFactory) -> None:
    """A malformed traceparent is ignored: the request's span is a root, and the app gets our trace."""
    client, exporter = await traced_app(app_client, upstream=True)

    response = await client.get("/echo/bad", headers={"traceparent": "00-zz-bad-01"})
    assert response.status == 200
    seen = json.loads(await response.read())

    root = await server_span(exporter, "GET")
    assert root.parent is None
    sent = [value for name, value in seen["headers"] if name.lower() == "traceparent"]
    assert len(sent) == 1 and sent[0].split("-")[1] == f"{root.context.trace_id:032x}"


async def test_redis_calls_of_a_miss_are_spans_of_its_trace(
    app_client: AppClientFactory, container: ContainerClient, redis_server: RedisServer
) -> None:
    """With Redis: a MISS's calls to Redis are `redis ...` client spans inside the request's trace."""
    await upload(container, "c.jpg", jpeg(64, 48), "image/jpeg")
    client, exporter = await traced_app(app_client, redis=redis_server)

    response = await client.get("/images/c.jpg", headers={"traceparent": TRACEPARENT})
    assert response.status == 200
    await response.read()

    await server_span(exporter, "GET /images/{path}")
    redis_spans = [
        span for span in spans_of(exporter, int(CLIENT_TRACE, 16)) if span.name.startswith("redis ")
    ]
    # The shared tier's lookup, then the download's claim (named after the store's methods).
    assert {"redis RedisStore.probe", "redis RedisStore.claim"} <= {span.name for span in redis_spans}
    assert all(span.kind is SpanKind.CLIENT for span in redis_spans)
    assert all(
        span.attributes is not None and span.attributes["db.system.name"] == "redis" for span in redis_spans
    )


async def test_with_otel_off_the_process_never_imports_opentelemetry(
    origin: OriginProxy, container: ContainerClient
) -> None:
    """otel off (the default): an app serving images, variants and pass-through imports no opentelemetry."""
    script = textwrap.dedent(
        """
        import asyncio, sys
        import aiohttp
        from aiohttp import web
        from imgproxy.app import create_app
        from imgproxy.server import start_runner
        from tests.helpers import make_test_config

        async def main(endpoint: str, container: str) -> None:
            config = make_test_config(
                endpoint, container, transform__enabled=True, transform__allow_unsigned=True,
                upstream__url="http://127.0.0.1:9",
            )
            runner = await start_runner(create_app(config))
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            port = site._server.sockets[0].getsockname()[1]
            async with aiohttp.ClientSession() as http:
                for target in ("/images/missing.jpg", "/images/missing.jpg?w=10", "/app", "/healthz"):
                    async with http.get(f"http://127.0.0.1:{port}{target}") as response:
                        await response.read()
                        print(target, response.status)
            await runner.cleanup()
            print(sorted(name for name in sys.modules if name.split(".")[0] == "opentelemetry"))

        asyncio.run(main(sys.argv[1], sys.argv[2]))
        """
    )
    # Not blocking: the origin proxy the child talks to runs on this test's loop.
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, origin.endpoint, container.container_name,
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(60):
        out, err = await child.communicate()
    assert child.returncode == 0, err.decode()
    lines = out.decode().splitlines()
    assert lines[:4] == [
        "/images/missing.jpg 404",
        "/images/missing.jpg?w=10 404",
        "/app 502",
        "/healthz 200",
    ]
    assert lines[4] == "[]"
