"""Replicas behind the gateway's round-robin, a replica dying mid-render, metrics, and trace context in the logs."""

from __future__ import annotations

import json
import re
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from scenecast.v1 import render_service_pb2, types_pb2

from scenecast_cli.client import render_to_file
from scenecast_cli.stack import LocalStack
from tests.probe import probe_mp4

IMAGE_REPLICAS = ("image", "image-2", "image-3")
# gRPC core's native log format: severity letter, MMDD, time, thread, file:line.
GRPC_CORE_LINE = re.compile(r"^[EWID]\d{4} \d\d:\d\d:\d\d")


def _request(render_id: str) -> render_service_pb2.RenderRequest:
    return render_service_pb2.RenderRequest(
        render_id=render_id,
        scenes=[
            types_pb2.Scene(id=f"s{i:02d}", title=f"Step {i}", narration=f"This is step {i}. Do it with care.")
            for i in range(12)
        ],
        output=types_pb2.OutputSettings(
            aspect_ratio=types_pb2.ASPECT_RATIO_16_9, height=240, fps=15, quality=types_pb2.QUALITY_DRAFT
        ),
    )


def metric(stack: LocalStack, process: str, name: str, **labels: str) -> float:
    """Sums a Prometheus metric's samples with the given labels from one process's /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{stack.metrics_ports[process]}/metrics", timeout=5) as response:
        text = response.read().decode()
    total = 0.0
    for line in text.splitlines():
        match = re.fullmatch(rf"{name}\{{(.*)\}} (\S+)", line)
        if match and all(f'{key}="{value}"' in match.group(1) for key, value in labels.items()):
            total += float(match.group(2))
    return total


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    logs = tmp_path_factory.mktemp("replica-logs")
    # Scenes one at a time per slot, 6 slots: image calls keep arriving while the render runs.
    local = LocalStack(log_dir=logs, replicas={"image": 3}, env={"MAX_CONCURRENT_SCENES": "6"}).start()
    yield local
    local.stop()


def _served(stack: LocalStack, replica: str) -> float:
    return metric(stack, replica, "scenecast_rpc_requests_total", method="GenerateImage", code="OK")


def test_every_replica_serves_and_a_replica_dying_mid_render_is_survived(stack: LocalStack, tmp_path: Path) -> None:
    first = tmp_path / "first.mp4"
    render_to_file(stack.gateway_address, _request("replicas-1"), first, timeout_seconds=120)
    served = {replica: _served(stack, replica) for replica in IMAGE_REPLICAS}
    assert sum(served.values()) == 12
    assert all(count > 0 for count in served.values()), served

    # Second render: kill one replica as soon as the first asset is ready, while image calls are still going out.
    killed = threading.Event()

    def kill_on_first_asset(event: render_service_pb2.RenderProgress) -> None:
        if event.stage == render_service_pb2.RENDER_STAGE_ASSET_READY and not killed.is_set():
            stack.kill("image-2")
            killed.set()

    second = tmp_path / "second.mp4"
    summary = render_to_file(stack.gateway_address, _request("replicas-2"), second, kill_on_first_asset, 120)
    assert killed.is_set()
    assert [s.scene_id for s in summary.scenes] == [f"s{i:02d}" for i in range(12)]
    probed = probe_mp4(second)
    assert (probed.width, probed.height, probed.video_codec) == (426, 240, "h264")
    assert len(probed.subtitle_texts) == 24
    survivors = sum(_served(stack, replica) for replica in ("image", "image-3"))
    assert survivors > served["image"] + served["image-3"]


def test_metrics_count_requests_bytes_and_provider_attempts(stack: LocalStack) -> None:
    assert metric(stack, "gateway", "scenecast_rpc_requests_total", method="Render", code="OK") >= 1
    assert metric(stack, "assembler", "scenecast_bytes_streamed_total", method="Assemble") > 10_000
    assert metric(stack, "audio", "scenecast_provider_calls_total", provider="piper", outcome="OK") >= 12
    assert metric(stack, "assembler", "scenecast_rpc_latency_seconds_count", method="Assemble") >= 1


def test_logs_are_json_and_share_the_render_and_trace_ids(stack: LocalStack) -> None:
    assert stack.log_dir is not None
    trace_ids: dict[str, set[str]] = {}
    for name in ("gateway", "audio", "assembler"):
        for line in (stack.log_dir / f"{name}.log").read_text().splitlines():
            if GRPC_CORE_LINE.match(line):
                continue  # gRPC's C core writes its own lines (a killed replica's dropped connections, say)
            entry = json.loads(line)  # every line Python logs is one JSON object
            if entry["render_id"] == "replicas-1":
                trace_ids.setdefault(name, set()).add(entry["trace_id"])
    # Each service logged the render, and every line of it carries the one trace started by the gateway.
    assert set(trace_ids) == {"gateway", "audio", "assembler"}, trace_ids
    all_ids = set().union(*trace_ids.values())
    assert len(all_ids) == 1 and len(next(iter(all_ids))) == 32
