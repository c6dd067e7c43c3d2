"""The tracer provider built from the OTEL_* settings, exporting to real fake collectors (OTLP/HTTP and OTLP/gRPC)."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from services.common.observability import tracer_provider
from services.common.redact import RedactingFilter
from services.common.settings import ServiceSettings
from tests.fakes.otlp_collector import OtlpGrpcCollector, OtlpHttpCollector

# A collector key as an operator writes it in OTEL_EXPORTER_OTLP_HEADERS: the value URL-encoded, as the spec says.
COLLECTOR_KEY = "otlp-key-5d1f0c27e9"
HEADERS = f"authorization=Bearer%20{COLLECTOR_KEY},x-tenant=media"


def _settings(**fields: str) -> ServiceSettings:
    return ServiceSettings(_env_file=None, **fields)  # type: ignore[call-arg]


def _emit_parent_and_child(settings: ServiceSettings, service: str = "image") -> None:
    """Two nested spans through a provider built from `settings`, then its shutdown (which flushes the batch)."""
    provider = tracer_provider(service, settings)
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("parent"), tracer.start_as_current_span("child"):
        pass
    provider.shutdown()


@pytest.fixture
def http_collector() -> Iterator[OtlpHttpCollector]:
    with OtlpHttpCollector() as collector:
        yield collector


@pytest.fixture
def grpc_collector() -> Iterator[OtlpGrpcCollector]:
    with OtlpGrpcCollector() as collector:
        yield collector


def _observability_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "services.common.observability" and r.levelno == logging.WARNING
    ]


def test_otlp_and_console_together_export_every_span_with_its_parent(
    http_collector: OtlpHttpCollector, capfd: pytest.CaptureFixture[str]
) -> None:
    settings = _settings(
        otel_traces_exporter="otlp,console",
        # A base URL with a trailing slash: the exporter appends the traces path once.
        otel_exporter_otlp_endpoint=f"{http_collector.base_url}/",
        otel_exporter_otlp_headers=HEADERS,
    )
    _emit_parent_and_child(settings)
    spans = {span.name: span for span in http_collector.spans()}
    assert set(spans) == {"parent", "child"}
    assert spans["child"].parent_span_id == spans["parent"].span_id
    assert spans["child"].trace_id == spans["parent"].trace_id
    assert {span.service_name for span in spans.values()} == {"scenecast-image"}
    # Headers decoded from the setting, one batch (BatchSpanProcessor) for both spans.
    exports = http_collector.exports()
    assert len(exports) == 1
    headers = {name.lower(): value for name, value in exports[0].headers.items()}  # names are case-insensitive
    assert headers["authorization"] == f"Bearer {COLLECTOR_KEY}"
    assert headers["x-tenant"] == "media"
    assert headers["content-type"] == "application/x-protobuf"
    printed = capfd.readouterr().out
    assert '"name": "parent"' in printed and '"name": "child"' in printed


@pytest.mark.parametrize(
    ("exporter", "unknown", "exported"),
    [("zipkin", "zipkin", False), ("jaeger,zipkin", "jaeger, zipkin", False), ("Zipkin, OTLP", "zipkin", True)],
)
def test_an_unknown_exporter_warns_once_naming_the_valid_ones_and_is_dropped(
    http_collector: OtlpHttpCollector, caplog: pytest.LogCaptureFixture, exporter: str, unknown: str, exported: bool
) -> None:
    caplog.set_level(logging.WARNING)
    _emit_parent_and_child(
        _settings(otel_traces_exporter=exporter, otel_exporter_otlp_endpoint=http_collector.base_url)
    )
    assert _observability_warnings(caplog) == [
        f"OTEL_TRACES_EXPORTER={exporter}: {unknown} not available (valid: otlp, console, none); "
        f"not exporting to {'them' if ',' in unknown else 'it'}"
    ]
    assert len(http_collector.spans()) == (2 if exported else 0)


def test_an_endpoint_alone_turns_otlp_on_and_nothing_set_exports_nothing(
    http_collector: OtlpHttpCollector, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    _emit_parent_and_child(_settings())
    assert http_collector.spans() == []
    _emit_parent_and_child(_settings(otel_exporter_otlp_endpoint=http_collector.base_url))
    assert len(http_collector.spans()) == 2
    assert _observability_warnings(caplog) == []


def test_service_name_and_resource_attributes_come_from_the_settings(http_collector: OtlpHttpCollector) -> None:
    settings = _settings(
        otel_exporter_otlp_traces_endpoint=f"{http_collector.base_url}/v1/traces",
        otel_resource_attributes="deployment.environment=staging,team=media%20ops",
        otel_service_name="render-farm-image",
    )
    _emit_parent_and_child(settings)
    request = trace_service_pb2.ExportTraceServiceRequest.FromString(http_collector.exports()[0].body)
    attributes = {a.key: a.value.string_value for a in request.resource_spans[0].resource.attributes}
    assert attributes["service.name"] == "render-farm-image"
    assert attributes["deployment.environment"] == "staging"
    assert attributes["team"] == "media ops"


def test_an_unsupported_protocol_warns_and_uses_http_protobuf(
    http_collector: OtlpHttpCollector, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    _emit_parent_and_child(
        _settings(otel_exporter_otlp_protocol="http/json", otel_exporter_otlp_endpoint=http_collector.base_url)
    )
    assert _observability_warnings(caplog) == [
        "OTEL_EXPORTER_OTLP_PROTOCOL=http/json is not supported (valid: http/protobuf, grpc); using http/protobuf"
    ]
    assert len(http_collector.spans()) == 2


def test_grpc_protocol_exports_to_the_traces_endpoint_with_the_headers(grpc_collector: OtlpGrpcCollector) -> None:
    settings = _settings(
        otel_exporter_otlp_traces_protocol="grpc",
        # The traces endpoint wins over the general one (a closed port here).
        otel_exporter_otlp_endpoint="http://127.0.0.1:9",
        otel_exporter_otlp_traces_endpoint=grpc_collector.endpoint,
        otel_exporter_otlp_traces_headers=HEADERS,
    )
    _emit_parent_and_child(settings, service="audio")
    spans = {span.name: span for span in grpc_collector.spans()}
    assert spans["child"].parent_span_id == spans["parent"].span_id
    assert spans["parent"].service_name == "scenecast-audio"
    metadata, _ = grpc_collector.received[0]
    assert metadata["authorization"] == f"Bearer {COLLECTOR_KEY}"


def test_a_collector_that_echoes_the_key_never_gets_it_into_the_logs(grpc_collector: OtlpGrpcCollector) -> None:
    grpc_collector.refuse_echoing_credentials = True
    # The handler every service logs through (observability.configure) ends with the redacting filter.
    log = io.StringIO()
    handler = logging.StreamHandler(log)
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        _emit_parent_and_child(
            _settings(
                otel_exporter_otlp_protocol="grpc",
                otel_exporter_otlp_endpoint=grpc_collector.endpoint,
                otel_exporter_otlp_headers=HEADERS,
            )
        )
    finally:
        root.removeHandler(handler)
    text = log.getvalue()
    assert "UNAUTHENTICATED" in text and "invalid credentials: [REDACTED]" in text, text
    assert COLLECTOR_KEY not in text


def test_an_exporter_the_sdk_refuses_is_left_out_with_a_warning(
    grpc_collector: OtlpGrpcCollector, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The SDK reads the compression from the environment itself and raises on a value it does not know.
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_COMPRESSION", "brotli")
    caplog.set_level(logging.WARNING)
    _emit_parent_and_child(
        _settings(otel_exporter_otlp_protocol="grpc", otel_exporter_otlp_endpoint=grpc_collector.endpoint)
    )
    assert _observability_warnings(caplog) == [
        'OTLP trace export is off: Invalid value "brotli" for compression envvar OTEL_EXPORTER_OTLP_COMPRESSION'
    ]
    assert grpc_collector.received == []


@pytest.mark.parametrize(
    ("sampler", "argument", "exported"),
    [
        ("always_off", "", 0),
        ("traceidratio", "0", 0),
        ("parentbased_traceidratio", "1", 2),
        # Values the SDK does not understand: it warns and samples everything, the spec's default; never a crash.
        ("no_such_sampler", "", 2),
        ("traceidratio", "half", 2),
    ],
)
def test_sampler_variables_are_honoured_as_the_sdk_reads_them(
    http_collector: OtlpHttpCollector, monkeypatch: pytest.MonkeyPatch, sampler: str, argument: str, exported: int
) -> None:
    # The SDK reads these two from the environment itself when the provider is built (at start-up).
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", sampler)
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", argument)
    _emit_parent_and_child(_settings(otel_exporter_otlp_endpoint=http_collector.base_url))
    assert len(http_collector.spans()) == exported
