"""Calls the gateway: renders a script to a file while reporting progress, and fetches the configuration."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import grpc
from scenecast.v1 import render_service_pb2, render_service_pb2_grpc

from services.common.server import MAX_MESSAGE_BYTES

ProgressCallback = Callable[[render_service_pb2.RenderProgress], None]


def _channel(address: str) -> grpc.Channel:
    return grpc.insecure_channel(address, options=[("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)])


def render_to_file(
    address: str,
    request: render_service_pb2.RenderRequest,
    output: Path,
    on_progress: ProgressCallback | None = None,
    timeout_seconds: float | None = None,
) -> render_service_pb2.RenderSummary:
    """Streams the MP4 to `output` as it arrives; the file appears only when complete (written beside, then renamed)."""
    partial = output.with_name(output.name + ".part")
    summary: render_service_pb2.RenderSummary | None = None
    try:
        with _channel(address) as channel, partial.open("wb") as handle:
            stub = render_service_pb2_grpc.RenderServiceStub(channel)
            for response in stub.Render(request, timeout=timeout_seconds):
                kind = response.WhichOneof("payload")
                if kind == "progress" and on_progress is not None:
                    on_progress(response.progress)
                elif kind == "chunk":
                    if response.chunk.offset != handle.tell():
                        raise RuntimeError(f"MP4 chunk at offset {response.chunk.offset}, expected {handle.tell()}")
                    handle.write(response.chunk.data)
                elif kind == "summary":
                    summary = response.summary
        if summary is None:
            raise RuntimeError("the render stream ended without a summary")
        os.replace(partial, output)
        return summary
    finally:
        partial.unlink(missing_ok=True)


def get_config(address: str, timeout_seconds: float = 30.0) -> render_service_pb2.GetConfigResponse:
    with _channel(address) as channel:
        stub = render_service_pb2_grpc.RenderServiceStub(channel)
        return stub.GetConfig(render_service_pb2.GetConfigRequest(), timeout=timeout_seconds)


def estimate_cost(
    address: str, request: render_service_pb2.RenderRequest, timeout_seconds: float = 30.0
) -> render_service_pb2.EstimateCostResponse:
    with _channel(address) as channel:
        stub = render_service_pb2_grpc.RenderServiceStub(channel)
        return stub.EstimateCost(render_service_pb2.EstimateCostRequest(render=request), timeout=timeout_seconds)
