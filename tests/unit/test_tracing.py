"""Unit tests for `imgproxy.tracing` and `[otel]`: the setting, the exporter and resource chosen by
the standard `OTEL_*` variables, and the trace headers sent on in place of the client's."""

from __future__ import annotations

import sys

import pytest

from imgproxy.config import CONNECTION_STRING_ENV, ConfigError, load_config
from imgproxy.tracing import open_tracing
from tests.unit.config.test_loading import REPO_CONFIG

CONN = {CONNECTION_STRING_ENV: "x"}
CLIENT_TRACEPARENT = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.fixture(autouse=True)
def no_export(monkeypatch: pytest.MonkeyPatch) -> None:
    """No exporter unless a test asks for one; no service name from the machine's environment."""
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.delenv("OTEL_RESOURCE_ATTRIBUTES", raising=False)


def test_otel_is_off_by_default_and_on_from_the_file_or_the_environment() -> None:
    """`otel.enabled` is false in the defaults and in config.toml; IMGPROXY_OTEL_ENABLED turns it on."""
    assert load_config(None, CONN).otel.enabled is False
    assert load_config(REPO_CONFIG, CONN).otel.enabled is False
    assert load_config(REPO_CONFIG, {**CONN, "IMGPROXY_OTEL_ENABLED": "true"}).otel.enabled is True


def test_otel_enabled_without_the_sdk_is_refused_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the SDK (here: hidden), `otel.enabled` stops start-up naming the key and the extra."""
    monkeypatch.setitem(sys.modules, "opentelemetry.sdk", None)
    with pytest.raises(ConfigError, match=r"otel\.enabled: needs the otel extra"):
        load_config(None, {**CONN, "IMGPROXY_OTEL_ENABLED": "true"})
    assert load_config(None, CONN).otel.enabled is False  # off: not even looked for


def test_an_unknown_exporter_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """OTEL_TRACES_EXPORTER other than otlp, console or none: a ConfigError naming the variable."""
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "zipkin")
    with (
        pytest.raises(ConfigError, match="OTEL_TRACES_EXPORTER: must be otlp, console or none"),
        open_tracing(),
    ):
        pass


def test_the_service_is_named_imgproxy_unless_otel_service_name_says_otherwise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """service.name: "imgproxy" by default, OTEL_SERVICE_NAME when set."""
    with open_tracing() as tracer:
        assert tracer.provider.resource.attributes["service.name"] == "imgproxy"
    monkeypatch.setenv("OTEL_SERVICE_NAME", "edge-images")
    with open_tracing() as tracer:
        assert tracer.provider.resource.attributes["service.name"] == "edge-images"


def test_propagated_headers_carry_the_current_span_instead_of_the_clients() -> None:
    """In a span: one traceparent of ours replaces the client's trace headers; other fields stay."""
    raw = ((b"Traceparent", CLIENT_TRACEPARENT), (b"tracestate", b"v=1"), (b"Accept", b"*/*"))
    with open_tracing() as tracer:
        assert tracer.propagated(raw) == raw  # no current span: the client's stand
        with tracer.span("outer") as span:
            context = span.get_span_context()  # type: ignore[attr-defined]  # the SDK's span
            sent = tracer.propagated(raw)
    assert sent[0] == (b"Accept", b"*/*")
    ours = f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"
    assert sent[1:] == ((b"traceparent", ours.encode()),)
    assert context.trace_flags & 1  # sampled (parent-based always-on, the default)
