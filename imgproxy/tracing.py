"""OpenTelemetry tracing (`[otel] enabled = true`, `pip install imgproxy[otel]`): the only module
that imports `opentelemetry`, and only `app` imports it, and only when tracing is on.

`open_tracing()` makes one `OtelTracer` per application: its own `TracerProvider` (no global
provider or propagator is set, so apps in one process, tests' included, stay apart), configured
by the standard `OTEL_*` variables: the resource (`OTEL_SERVICE_NAME`, "imgproxy" when unset,
`OTEL_RESOURCE_ATTRIBUTES`), the sampler (`OTEL_TRACES_SAMPLER`, parent-based always-on by
default), the exporter (`OTEL_TRACES_EXPORTER`: "otlp", OTLP over HTTP/protobuf configured by
`OTEL_EXPORTER_OTLP_*`, the default; "console"; or "none", spans made and propagated but not
exported) and the batch processor's bounds (`OTEL_BSP_*`: at most 2,048 spans queued by default,
the rest dropped, never a blocked request). Closing it flushes and stops the exporter.

Context is W3C Trace Context only (`traceparent`, `tracestate`): honoured from the client, sent
to the application in the pass-through.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Final

from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from imgproxy.config import ConfigError
from imgproxy.core.tracing import Attributes, RawHeaders, Span, SpanKind

DEFAULT_SERVICE_NAME: Final = "imgproxy"
EXPORTER_ENV: Final = "OTEL_TRACES_EXPORTER"
_KINDS: Final = {
    SpanKind.INTERNAL: trace.SpanKind.INTERNAL,
    SpanKind.SERVER: trace.SpanKind.SERVER,
    SpanKind.CLIENT: trace.SpanKind.CLIENT,
}
_TRACE_HEADERS: Final = frozenset({b"traceparent", b"tracestate"})


class OtelTracer:
    """`core.tracing.Tracer` on an OpenTelemetry `TracerProvider` of its own."""

    def __init__(self, provider: TracerProvider) -> None:
        self.provider = provider
        self._tracer = provider.get_tracer("imgproxy")
        self._propagator = TraceContextTextMapPropagator()

    def add_span_processor(self, processor: SpanProcessor) -> None:
        """Send every span also to `processor` (tests: the SDK's in-memory exporter)."""
        self.provider.add_span_processor(processor)

    def span(
        self,
        name: str,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Attributes | None = None,
        only_in_trace: bool = False,
    ) -> AbstractContextManager[Span]:
        if only_in_trace and not trace.get_current_span().get_span_context().is_valid:
            return nullcontext(trace.INVALID_SPAN)
        return self._tracer.start_as_current_span(name, kind=_KINDS[kind], attributes=attributes)

    def server_span(
        self, name: str, headers: Mapping[str, str], attributes: Attributes | None = None
    ) -> AbstractContextManager[Span]:
        parent = self._propagator.extract(headers)  # an invalid traceparent is ignored: a new trace
        return self._tracer.start_as_current_span(
            name, context=parent, kind=trace.SpanKind.SERVER, attributes=attributes
        )

    def propagated(self, raw_headers: RawHeaders) -> RawHeaders:
        carrier: dict[str, str] = {}
        self._propagator.inject(carrier)
        if not carrier:  # no current span (or not sampled and nothing to say): the client's stand
            return raw_headers
        kept = tuple(item for item in raw_headers if item[0].lower() not in _TRACE_HEADERS)
        return kept + tuple(
            (name.encode("latin-1"), value.encode("latin-1")) for name, value in carrier.items()
        )

    def close(self) -> None:
        """Export what is queued (within the exporter's own timeout), then stop."""
        self.provider.shutdown()


def _exporter() -> SpanExporter | None:
    choice = os.environ.get(EXPORTER_ENV, "otlp").strip().lower()
    if choice == "otlp":
        # Imported here: the console and "none" choices need no protobuf.
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    if choice == "console":
        return ConsoleSpanExporter()
    if choice == "none":
        return None
    raise ConfigError(f"{EXPORTER_ENV}: must be otlp, console or none, got {choice!r}")


def _resource() -> Resource:
    resource = Resource.create()  # OTEL_RESOURCE_ATTRIBUTES, OTEL_SERVICE_NAME
    named = str(resource.attributes.get(SERVICE_NAME, ""))
    if named.startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: DEFAULT_SERVICE_NAME}))
    return resource


@contextmanager
def open_tracing() -> Iterator[OtelTracer]:
    """The application's tracer, per the process's `OTEL_*` variables (which the SDK reads itself,
    so they are not an argument); flushed and shut down on exit."""
    exporter = _exporter()
    provider = TracerProvider(resource=_resource())
    if exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    tracer = OtelTracer(provider)
    try:
        yield tracer
    finally:
        tracer.close()
