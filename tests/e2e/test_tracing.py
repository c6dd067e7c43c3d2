"""OpenTelemetry across the five service processes: one render is one trace at an OTLP collector, and OTEL_* values an
operator injects (an exporter we do not bundle, a collector that is down) never stop a service."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.proto.trace.v1 import trace_pb2
from scenecast.v1 import render_service_pb2, types_pb2

from scenecast_cli.client import render_to_file
from scenecast_cli.stack import LocalStack, free_port
from tests.fakes.otlp_collector import OtlpHttpCollector
from tests.probe import probe_mp4

SERVICES = ("gateway", "image", "audio", "video", "assembler")
# Every process of the stack: the script service (drafts) takes no part in a render, but starts and stops with it.
PROCESSES = (*SERVICES, "script")
COLLECTOR_KEY = "collector-key-8c41a7e2b9"


def _request(render_id: str) -> render_service_pb2.RenderRequest:
    # A Ken Burns clip, so that the video service takes part too.
    return render_service_pb2.RenderRequest(
        render_id=render_id,
        scenes=[types_pb2.Scene(id="one", title="Traced", narration="One scene, followed across five services.")],
        providers=types_pb2.ProviderOverrides(video="kenburns"),
        output=types_pb2.OutputSettings(
            aspect_ratio=types_pb2.ASPECT_RATIO_16_9, height=240, fps=15, quality=types_pb2.QUALITY_DRAFT
        ),
    )


def _render_and_stop(stack: LocalStack, render_id: str, output: Path) -> None:
    """One render, then SIGTERM to every service: each drains, flushes its spans and exits 0."""
    assert stack.log_dir is not None
    try:
        render_to_file(stack.gateway_address, _request(render_id), output, timeout_seconds=120)
    finally:
        stack.stop()
    assert {name: p.returncode for name, p in stack.processes.items()} == dict.fromkeys(PROCESSES, 0), [
        (path.name, path.read_text()[-2000:]) for path in stack.log_dir.iterdir()
    ]
    assert probe_mp4(output).video_codec == "h264"


@pytest.fixture
def collector() -> Iterator[OtlpHttpCollector]:
    with OtlpHttpCollector() as fake:
        yield fake


def test_one_render_is_one_trace_across_the_five_services(
    collector: OtlpHttpCollector, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    logs = tmp_path_factory.mktemp("otlp-logs")
    env = {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": collector.base_url,
        "OTEL_EXPORTER_OTLP_HEADERS": f"authorization=Bearer%20{COLLECTOR_KEY}",
    }
    _render_and_stop(LocalStack(log_dir=logs, env=env).start(), "traced-1", tmp_path / "traced.mp4")

    spans = collector.spans()
    # Each process names itself in its resource.
    assert {span.service_name for span in spans} == {f"scenecast-{service}" for service in SERVICES}
    renders = [s for s in spans if s.service_name == "scenecast-gateway" and s.name.endswith("Render")]
    assert len(renders) == 1, renders
    render = renders[0]
    assert render.kind == trace_pb2.Span.SPAN_KIND_SERVER and render.parent_span_id == ""
    # Every span is of the render's trace (one trace id across the five services): the gateway's render span, and
    # as its children the media services' calls, the provider lists it checks the request against and the prices it
    # asks for the budget check included.
    assert {s.trace_id for s in spans} == {render.trace_id}
    children = sorted((s.service_name, s.name) for s in spans if s != render)
    assert children == [
        ("scenecast-assembler", "Assemble"),
        ("scenecast-audio", "EstimateSpeechCost"),
        ("scenecast-audio", "ListSpeechProviders"),
        ("scenecast-audio", "SynthesizeSpeech"),
        ("scenecast-image", "EstimateImageCost"),
        ("scenecast-image", "GenerateImage"),
        ("scenecast-image", "ListImageProviders"),
        ("scenecast-video", "EstimateClipCost"),
        ("scenecast-video", "GenerateClip"),
        ("scenecast-video", "ListVideoProviders"),
    ]
    assert {s.parent_span_id for s in spans if s != render} == {render.span_id}
    assert all(s.kind == trace_pb2.Span.SPAN_KIND_SERVER for s in spans)
    # The collector got the key from OTEL_EXPORTER_OTLP_HEADERS, decoded, on every export; no log line shows it.
    assert all(request.headers["Authorization"] == f"Bearer {COLLECTOR_KEY}" for request in collector.exports())
    for service in SERVICES:
        text = (logs / f"{service}.log").read_text()
        assert "traced-1" in text and COLLECTOR_KEY not in text, service


def test_an_unknown_exporter_and_a_dead_collector_never_stop_a_service(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    logs = tmp_path_factory.mktemp("zipkin-logs")
    # zipkin is not bundled; the OTLP collector's port is closed.
    env = {"OTEL_TRACES_EXPORTER": "zipkin,otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{free_port()}"}
    _render_and_stop(LocalStack(log_dir=logs, env=env).start(), "untraced-1", tmp_path / "untraced.mp4")
    for service in PROCESSES:
        warnings = [
            entry["message"]
            for entry in map(json.loads, (logs / f"{service}.log").read_text().splitlines())
            if entry["logger"] == "services.common.observability" and entry["level"] == "WARNING"
        ]
        assert warnings == [
            "OTEL_TRACES_EXPORTER=zipkin,otlp: zipkin not available (valid: otlp, console, none); not exporting to it"
        ], service
