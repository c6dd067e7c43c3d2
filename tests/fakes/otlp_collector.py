"""Fake OpenTelemetry collectors that record the spans they receive: OTLP/HTTP and OTLP/gRPC, as the OTLP spec says.

OTLP/HTTP: `POST /v1/traces` with an `application/x-protobuf` body (an `ExportTraceServiceRequest`, gzip when
`Content-Encoding` says so), answered with an `ExportTraceServiceResponse`. OTLP/gRPC: the `TraceService.Export` RPC.
Both decode with the opentelemetry-proto messages, so a malformed export fails loudly instead of being counted.
"""

from __future__ import annotations

import gzip
import threading
from collections.abc import Iterable
from concurrent import futures
from dataclasses import dataclass

import grpc
from aiohttp import web
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from tests.fakes.base import FakeServer, RecordedRequest

TRACES_PATH = "/v1/traces"
PROTOBUF = "application/x-protobuf"


@dataclass(frozen=True)
class ReceivedSpan:
    """One span as the collector got it, ids in lowercase hex (parent empty for a root span)."""

    service_name: str
    name: str
    kind: int
    trace_id: str
    span_id: str
    parent_span_id: str


def spans_of(requests: Iterable[trace_service_pb2.ExportTraceServiceRequest]) -> list[ReceivedSpan]:
    received = []
    for request in requests:
        for resource_spans in request.resource_spans:
            attributes = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    received.append(
                        ReceivedSpan(
                            service_name=attributes.get("service.name", ""),
                            name=span.name,
                            kind=span.kind,
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_span_id=span.parent_span_id.hex(),
                        )
                    )
    return received


def _decode(request: RecordedRequest) -> trace_service_pb2.ExportTraceServiceRequest:
    body = gzip.decompress(request.body) if request.headers.get("Content-Encoding") == "gzip" else request.body
    return trace_service_pb2.ExportTraceServiceRequest.FromString(body)


class OtlpHttpCollector(FakeServer):
    """OTLP/HTTP receiver; `base_url` is what OTEL_EXPORTER_OTLP_ENDPOINT takes."""

    def routes(self, app: web.Application) -> None:
        app.router.add_post(TRACES_PATH, self._export)

    async def _export(self, request: web.Request) -> web.Response:
        if request.content_type != PROTOBUF:
            return web.Response(status=415, text=f"OTLP/HTTP here takes {PROTOBUF}, not {request.content_type}")
        body = await request.read()
        if request.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        trace_service_pb2.ExportTraceServiceRequest.FromString(body)  # a body that does not decode is a 500
        response = trace_service_pb2.ExportTraceServiceResponse()
        return web.Response(body=response.SerializeToString(), content_type=PROTOBUF)

    def exports(self) -> list[RecordedRequest]:
        return self.requests_to(TRACES_PATH, "POST")

    def spans(self) -> list[ReceivedSpan]:
        return spans_of(_decode(request) for request in self.exports())


class OtlpGrpcCollector(trace_service_pb2_grpc.TraceServiceServicer):
    """OTLP/gRPC receiver on 127.0.0.1:0 (plaintext); `endpoint` is what OTEL_EXPORTER_OTLP_ENDPOINT takes.

    With `refuse_echoing_credentials`, every export is refused UNAUTHENTICATED with details that repeat the
    `authorization` metadata it carried, as a collector (or a vendor behind it) may do.
    """

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], trace_service_pb2.ExportTraceServiceRequest]] = []
        self.refuse_echoing_credentials = False
        self._lock = threading.Lock()
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(self, self._server)
        self.port = self._server.add_insecure_port("127.0.0.1:0")

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def Export(  # noqa: N802 - the RPC's name in the OTLP contract
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: grpc.ServicerContext
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        metadata = {key: value for key, value in context.invocation_metadata() if isinstance(value, str)}
        with self._lock:
            self.received.append((metadata, request))
        if self.refuse_echoing_credentials:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, f"invalid credentials: {metadata.get('authorization')}")
        return trace_service_pb2.ExportTraceServiceResponse()

    def spans(self) -> list[ReceivedSpan]:
        with self._lock:
            return spans_of(request for _, request in self.received)

    def __enter__(self) -> OtlpGrpcCollector:
        self._server.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.stop(grace=None).wait()
