"""The hooks the packages trace through, without OpenTelemetry: `Tracer`, the one protocol that
`imgproxy.tracing` implements when `[otel] enabled` is true.

A component that traces takes `tracer: Tracer | None` (None: tracing off) and tests it before
opening a span, so with tracing off it costs one attribute test per traced call and nothing of
OpenTelemetry is ever imported. Span names and attributes follow OpenTelemetry's semantic
conventions where one applies (`http.*`, `db.*`, `url.*`).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import Protocol

AttributeValue = str | int | float | bool
Attributes = Mapping[str, AttributeValue]
RawHeaders = tuple[tuple[bytes, bytes], ...]


class SpanKind(enum.Enum):
    """The kinds of span we make (OpenTelemetry's names)."""

    INTERNAL = "internal"
    SERVER = "server"
    CLIENT = "client"


class Span(Protocol):
    """What a traced component may do with its span while it is open."""

    def set_attribute(self, key: str, value: AttributeValue) -> None: ...


class Tracer(Protocol):
    """Spans of one application; a span opened with `span` is the current one until it closes (an
    exception leaving it is recorded on it and marks it failed)."""

    def span(
        self,
        name: str,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Attributes | None = None,
        only_in_trace: bool = False,
    ) -> AbstractContextManager[Span]:
        """A child of the current span, or a new trace's root (`only_in_trace`: no span then, so
        that background work such as probes and the purge log's reads makes no traces)."""
        ...

    def server_span(
        self, name: str, headers: Mapping[str, str], attributes: Attributes | None = None
    ) -> AbstractContextManager[Span]:
        """A request's span, the child of the W3C `traceparent` in `headers` if there is a valid one."""
        ...

    def propagated(self, raw_headers: RawHeaders) -> RawHeaders:
        """`raw_headers` with the trace headers of the current span in place of the client's."""
        ...
