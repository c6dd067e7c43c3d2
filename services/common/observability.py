"""Metrics, structured logs and trace context, the same in every service.

Every servicer method is wrapped by `services.common.errors.rpc_method`, which opens a `server_call` here: it reads
the caller's trace context and render id from the gRPC metadata, starts a span, counts the call and its latency, and
the bytes it streamed. Outgoing calls carry the same context with `call_metadata`.
"""

from __future__ import annotations

import contextvars
import io
import json
import logging
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

import grpc
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.util.re import parse_env_headers
from prometheus_client import Counter, Gauge, Histogram, start_http_server

from services.common import redact
from services.common.redact import RedactingFilter
from services.common.settings import ServiceSettings

_LOGGER = logging.getLogger(__name__)

RENDER_ID_KEY = "x-render-id"
render_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("render_id", default="")

RPC_REQUESTS = Counter(
    "scenecast_rpc_requests_total", "RPCs handled, by method and final status code.", ["method", "code"]
)
RPC_LATENCY = Histogram(
    "scenecast_rpc_latency_seconds",
    "Time from an RPC's start to its end.",
    ["method"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
)
BYTES_STREAMED = Counter(
    "scenecast_bytes_streamed_total", "Bytes of response messages streamed, by method.", ["method"]
)
PROVIDER_CALLS = Counter(
    "scenecast_provider_calls_total",
    "Provider attempts, by provider and outcome (ok or a status code name).",
    ["provider", "outcome"],
)
ESTIMATED_SPEND = Counter(
    "scenecast_estimated_spend_usd_total", "Estimated US dollars spent on generated assets.", ["provider", "model"]
)
# Work in flight, what the autoscalers read (deploy/k8s/base/autoscaling.yaml): a render or a provider call waits on
# I/O far more than it uses CPU, so CPU utilisation says little about how busy a replica is.
RPCS_IN_FLIGHT = Gauge("scenecast_rpcs_in_flight", "RPCs being handled now, by method.", ["method"])
RENDERS_IN_FLIGHT = Gauge(
    "scenecast_renders_in_flight", "Renders this gateway replica is running now (whether or not a caller follows)."
)

_tracer = trace.get_tracer("scenecast")


def configure(
    service: str,
    log_format: str,
    log_level: str,
    metrics_port: int | Literal["auto"],
    tracing: ServiceSettings,
    metrics_address: str = "127.0.0.1",
) -> int:
    """Called once at process start: logging, the metrics endpoint (on `metrics_address`), and the tracer provider
    (from the OTEL_* fields of `tracing`). Returns the port the metrics endpoint got ("auto": a free one), 0 if off."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter(service)
        if log_format == "json"
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(render_id)s]: %(message)s")
    )
    handler.addFilter(_add_context)
    handler.addFilter(RedactingFilter())  # last, so that it sees every field the others add
    logging.basicConfig(level=log_level.upper(), handlers=[handler], force=True)
    logging.captureWarnings(True)  # library warnings become log records too, so every line stays JSON
    if log_format == "json":
        sys.stderr = StrayLines(logging.getLogger("stderr"), sys.stderr)
    bound_port = 0
    if metrics_port:
        http_server, _ = start_http_server(0 if metrics_port == "auto" else metrics_port, addr=metrics_address)
        bound_port = http_server.server_port
        _LOGGER.info("metrics on http://%s:%d/metrics", metrics_address, bound_port)
    trace.set_tracer_provider(tracer_provider(service, tracing))
    return bound_port


TRACES_EXPORTERS = ("otlp", "console", "none")
OTLP_PROTOCOLS = ("http/protobuf", "grpc")
# The spec's defaults: the OTLP/HTTP port with the traces path, and the OTLP/gRPC port.
_DEFAULT_HTTP_ENDPOINT = "http://localhost:4318"
_DEFAULT_GRPC_ENDPOINT = "http://localhost:4317"


def tracer_provider(service: str, settings: ServiceSettings) -> TracerProvider:
    """The tracer provider the OTEL_* settings describe: resource, and a batching processor per exporter.

    Spans are exported in batches off the serving threads. The SDK's exit hook (TracerProvider's `shutdown_on_exit`)
    flushes what is still queued once the SIGTERM drain has returned from `asyncio.run`, each export bounded by
    OTEL_EXPORTER_OTLP_TIMEOUT (10 s), so a dead collector delays the exit, never blocks it.
    """
    provider = TracerProvider(resource=_resource(service, settings))
    for exporter in _span_exporters(settings):
        provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def _resource(service: str, settings: ServiceSettings) -> Resource:
    """service.name is OTEL_SERVICE_NAME, else a service.name in OTEL_RESOURCE_ATTRIBUTES, else scenecast-<service>."""
    attributes: dict[str, str] = {SERVICE_NAME: f"scenecast-{service}"}
    for item in filter(None, (item.strip() for item in settings.otel_resource_attributes.split(","))):
        key, equals, value = item.partition("=")
        if not equals or not key.strip():
            _LOGGER.warning("OTEL_RESOURCE_ATTRIBUTES: %r is not key=value; ignored", item)
            continue
        attributes[key.strip()] = urllib.parse.unquote(value.strip())
    if settings.otel_service_name:
        attributes[SERVICE_NAME] = settings.otel_service_name
    return Resource.create(attributes)


def _span_exporters(settings: ServiceSettings) -> list[SpanExporter]:
    """The exporters OTEL_TRACES_EXPORTER names. Telemetry is never a reason not to serve: an unknown name (zipkin and
    jaeger are not bundled) or an exporter that cannot be built warns once and is left out."""
    endpoint_set = settings.otel_exporter_otlp_traces_endpoint or settings.otel_exporter_otlp_endpoint
    value = settings.otel_traces_exporter.strip() or ("otlp" if endpoint_set else "none")
    names = list(dict.fromkeys(name.strip().lower() for name in value.split(",") if name.strip()))
    unknown = [name for name in names if name not in TRACES_EXPORTERS]
    if unknown:
        _LOGGER.warning(
            "OTEL_TRACES_EXPORTER=%s: %s not available (valid: %s); not exporting to %s",
            value,
            ", ".join(unknown),
            ", ".join(TRACES_EXPORTERS),
            "them" if len(unknown) > 1 else "it",
        )
    exporters: list[SpanExporter] = []
    if "console" in names:
        exporters.append(ConsoleSpanExporter(out=sys.stdout))
    if "otlp" in names:
        try:
            exporters.append(_otlp_exporter(settings))
        # Whatever the SDK refuses (a bad OTEL_EXPORTER_OTLP_COMPRESSION or certificate file, say).
        except Exception as error:
            _LOGGER.warning("OTLP trace export is off: %s", error)
    return exporters


def _otlp_exporter(settings: ServiceSettings) -> SpanExporter:
    """An OTLP exporter over the configured protocol, with the collector's headers (each value a secret)."""
    variable, protocol = (
        ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", settings.otel_exporter_otlp_traces_protocol)
        if settings.otel_exporter_otlp_traces_protocol
        else ("OTEL_EXPORTER_OTLP_PROTOCOL", settings.otel_exporter_otlp_protocol)
    )
    protocol = protocol.strip().lower()
    if protocol not in OTLP_PROTOCOLS:
        _LOGGER.warning(
            "%s=%s is not supported (valid: %s); using http/protobuf", variable, protocol, ", ".join(OTLP_PROTOCOLS)
        )
        protocol = "http/protobuf"
    headers = dict(
        parse_env_headers(
            settings.otel_exporter_otlp_traces_headers.get_secret_value()
            or settings.otel_exporter_otlp_headers.get_secret_value(),
            liberal=True,
        )
    )
    for header_value in headers.values():
        # Decoded as sent (the setting holds them URL-encoded), and the credential after a scheme ("Bearer <key>"),
        # which is how a collector that refuses a key tends to echo it in its error details.
        redact.register(header_value)
        redact.register(header_value.split(" ", 1)[-1])
    if protocol == "grpc":
        endpoint = settings.otel_exporter_otlp_traces_endpoint or settings.otel_exporter_otlp_endpoint
        return GrpcSpanExporter(endpoint=endpoint or _DEFAULT_GRPC_ENDPOINT, headers=headers)
    endpoint = settings.otel_exporter_otlp_traces_endpoint or (
        f"{(settings.otel_exporter_otlp_endpoint or _DEFAULT_HTTP_ENDPOINT).rstrip('/')}/v1/traces"
    )
    return HttpSpanExporter(endpoint=endpoint, headers=headers)


def _add_context(record: logging.LogRecord) -> bool:
    """Stamps every record with the render id and trace id of the call it belongs to."""
    record.render_id = render_id_var.get()
    span_context = trace.get_current_span().get_span_context()
    record.trace_id = format(span_context.trace_id, "032x") if span_context.is_valid else ""
    return True


class StrayLines(io.TextIOBase):
    """sys.stderr of a service logging JSON: each line a library prints there becomes a WARNING record, so every line
    of the log stays one JSON object. gRPC's aio server, for one, prints a traceback after logging it when a call is
    cancelled before its handler started (a health Watch at shutdown). The handler itself writes to `stream`."""

    def __init__(self, logger: logging.Logger, stream: Any) -> None:
        self._logger = logger
        self._stream = stream
        self._partial = ""
        self._lock = threading.Lock()
        self._local = threading.local()  # set while this thread logs, so logging's own complaints go out raw

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return int(self._stream.fileno())

    def write(self, text: str) -> int:
        if getattr(self._local, "logging", False):
            return int(self._stream.write(text))
        with self._lock:
            *lines, self._partial = (self._partial + text).split("\n")
        self._local.logging = True
        try:
            for line in lines:
                if line.strip():
                    self._logger.warning("%s", line.rstrip())
        finally:
            self._local.logging = False
        return len(text)

    def flush(self) -> None:
        self._stream.flush()


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "service": self._service,
            "logger": record.name,
            "message": record.getMessage(),
            "render_id": getattr(record, "render_id", ""),
            "trace_id": getattr(record, "trace_id", ""),
        }
        if record.exc_info or record.exc_text:
            # exc_text first: RedactingFilter leaves the traceback there with secrets taken out.
            entry["exception"] = record.exc_text or self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


@contextmanager
def server_call(method: str, context: grpc.aio.ServicerContext) -> Iterator[CallRecord]:
    """Scope of one incoming RPC: trace context and render id from the metadata, a span, and the metrics.

    The render id and the current span are set for the rest of the call and never reset: gRPC runs each call in a task
    of its own, whose context ends with it. Resetting would fail for a stream whose client went away, which the event
    loop's generator finaliser closes in another context (ValueError from contextvars, and opentelemetry's "Failed to
    detach context").
    """
    metadata = {key: value for key, value in (context.invocation_metadata() or ()) if isinstance(value, str)}
    render_id_var.set(metadata.get(RENDER_ID_KEY, ""))
    span = _tracer.start_span(method, context=propagate.extract(metadata), kind=trace.SpanKind.SERVER)
    otel_context.attach(trace.set_span_in_context(span))
    record = CallRecord(method)
    started = time.monotonic()
    RPCS_IN_FLIGHT.labels(method).inc()
    try:
        yield record
    finally:
        elapsed = time.monotonic() - started
        # One access-log line per call; it carries the trace id (from the span in the call's context).
        _LOGGER.info("%s %s in %.3f s, %d bytes sent", method, record.code, elapsed, record.bytes_sent)
        RPC_REQUESTS.labels(method, record.code).inc()
        RPC_LATENCY.labels(method).observe(elapsed)
        BYTES_STREAMED.labels(method).inc(record.bytes_sent)
        RPCS_IN_FLIGHT.labels(method).dec()
        span.set_attribute("rpc.grpc.status_code", getattr(grpc.StatusCode, record.code).value[0])
        if record.code != grpc.StatusCode.OK.name:
            span.set_status(trace.Status(trace.StatusCode.ERROR, record.code))
        span.end()


class CallRecord:
    """What an RPC's wrapper learns while it runs: its final code and how many bytes it streamed."""

    def __init__(self, method: str) -> None:
        self.method = method
        self.code = grpc.StatusCode.OK.name
        self.bytes_sent = 0


def call_metadata(render_id: str = "") -> tuple[tuple[str, str], ...]:
    """Metadata for an outgoing call: the current trace context and the render id."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    if render_id or render_id_var.get():
        carrier[RENDER_ID_KEY] = render_id or render_id_var.get()
    return tuple(carrier.items())


def record_provider_attempt(provider: str, outcome: str) -> None:
    PROVIDER_CALLS.labels(provider, outcome).inc()


def record_spend(provider: str, model: str, usd: float) -> None:
    if usd > 0:
        ESTIMATED_SPEND.labels(provider, model).inc(usd)
