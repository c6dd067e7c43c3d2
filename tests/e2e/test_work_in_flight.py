"""The work-in-flight gauges the autoscalers read (deploy/k8s/base/autoscaling.yaml), from real processes' /metrics:
up while a render waits on a slow provider, back to zero when it ends."""

from __future__ import annotations

import threading
import time
import urllib.request
from collections.abc import Callable, Iterator

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families
from scenecast.v1 import render_service_pb2, render_service_pb2_grpc, types_pb2

from scenecast_cli.stack import LocalStack
from tests.fakes.base import Fault
from tests.fakes.openai_server import FakeOpenAI

IMAGES_PATH = "/v1/images/generations"
RENDER_ID = "in-flight-1"


@pytest.fixture(scope="module")
def stack(openai_fake: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    env = {
        "IMAGE_PROVIDER": "dall-e-3",
        **openai_fake.service_env(),
        # No cache: the held image call must reach the fake, whatever earlier runs stored.
        "ASSET_CACHE_DIR": "off",
    }
    local = LocalStack(env=env, log_dir=tmp_path_factory.mktemp("in-flight-logs")).start()
    yield local
    local.stop()


def wait_for(condition: Callable[[], bool], what: str) -> None:
    """Polls until `condition` holds; the bound only turns a hang into a failure, it measures nothing."""
    deadline = time.monotonic() + 60
    while not condition():
        assert time.monotonic() < deadline, f"still not {what} after 60 s"
        time.sleep(0.1)


def gauge(stack: LocalStack, process: str, name: str, **labels: str) -> float:
    """A gauge's value (0 when it has no sample with these labels yet) from one process's /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{stack.metrics_ports[process]}/metrics", timeout=5) as response:
        text = response.read().decode()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and sample.labels == labels
    )


def _in_flight(stack: LocalStack) -> tuple[float, float, float]:
    return (
        gauge(stack, "gateway", "scenecast_renders_in_flight"),
        gauge(stack, "gateway", "scenecast_rpcs_in_flight", method="Render"),
        gauge(stack, "image", "scenecast_rpcs_in_flight", method="GenerateImage"),
    )


def test_gauges_count_a_render_and_its_provider_call_while_they_run(stack: LocalStack, openai_fake: FakeOpenAI) -> None:
    assert _in_flight(stack) == (0.0, 0.0, 0.0)
    # The image call hangs at the provider (longer than this test), so the render stays in flight until cancelled.
    openai_fake.add_fault(Fault(IMAGES_PATH, status=0, hang_seconds=300))
    request = render_service_pb2.RenderRequest(
        render_id=RENDER_ID,
        scenes=[types_pb2.Scene(id="s0", title="Held", narration="This scene waits for its picture.")],
        output=types_pb2.OutputSettings(
            aspect_ratio=types_pb2.ASPECT_RATIO_16_9, height=240, fps=15, quality=types_pb2.QUALITY_DRAFT
        ),
    )
    channel = grpc.insecure_channel(stack.gateway_address)
    stub = render_service_pb2_grpc.RenderServiceStub(channel)
    call = stub.Render(request, timeout=120)
    outcome: list[grpc.RpcError] = []
    reader = threading.Thread(target=lambda: outcome.extend(_drain(call)), daemon=True)
    reader.start()
    try:
        wait_for(lambda: bool(openai_fake.requests_to(IMAGES_PATH)), "asking the provider for the image")
        assert _in_flight(stack) == (1.0, 1.0, 1.0)

        stub.CancelRender(render_service_pb2.CancelRenderRequest(render_id=RENDER_ID), timeout=30)
        reader.join(timeout=60)
        assert [error.code() for error in outcome] == [grpc.StatusCode.CANCELLED]
        wait_for(lambda: _in_flight(stack) == (0.0, 0.0, 0.0), "back to zero in flight")
    finally:
        call.cancel()
        channel.close()
        openai_fake.reset()


def _drain(call: Iterator[render_service_pb2.RenderResponse]) -> list[grpc.RpcError]:
    """Reads the Render stream to its end; returns the error it ended with, if any."""
    try:
        for _ in call:
            pass
    except grpc.RpcError as error:
        return [error]
    return []
