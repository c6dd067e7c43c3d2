"""Injected faults end to end: a flaky provider is retried to success, a broken or hanging one fails the render
with a status naming the scene and the cause, and a service killed mid-render does the same; attempts stay bounded."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from scenecast.v1 import render_service_pb2, types_pb2

from scenecast_cli.client import render_to_file
from scenecast_cli.stack import LocalStack
from tests.fakes.base import Fault
from tests.fakes.openai_server import FakeOpenAI
from tests.probe import probe_mp4

SCENES = 4
PROVIDER_ATTEMPTS = 3
IMAGES = "/v1/images/generations"


def _request(scenes: int = SCENES) -> render_service_pb2.RenderRequest:
    return render_service_pb2.RenderRequest(
        scenes=[
            types_pb2.Scene(id=f"s{i}", visual_prompt=f"A hard hat on hook {i}.", narration=f"Scene {i}. Stay alert.")
            for i in range(scenes)
        ],
        output=types_pb2.OutputSettings(
            aspect_ratio=types_pb2.ASPECT_RATIO_16_9, height=240, fps=15, quality=types_pb2.QUALITY_DRAFT
        ),
    )


@pytest.fixture(scope="module")
def cloud_stack(openai_fake: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    env = {
        "IMAGE_PROVIDER": "gpt-image-1-mini",
        **openai_fake.service_env(),
        "PROVIDER_ATTEMPTS": str(PROVIDER_ATTEMPTS),
        "ASSET_TIMEOUT_SECONDS": "4",
    }
    with LocalStack(env=env, log_dir=tmp_path_factory.mktemp("fault-logs")) as stack:
        yield stack


@pytest.mark.parametrize(
    "faults",
    [
        [
            Fault(
                IMAGES,
                status=429,
                body={"error": {"message": "Rate limit", "code": "rate_limit_exceeded"}},
                headers={"Retry-After": "0"},
            )
        ],
        [Fault(IMAGES, status=500, body={"error": {"message": "boom", "type": "server_error"}})],
        [Fault(IMAGES, status=503, body="upstream busy")] * 2,
        [Fault(IMAGES, reset=True)],
        [Fault(IMAGES, status=200, body="<html>not json</html>")],
    ],
    ids=["429-retry-after", "500", "503-twice", "connection-reset", "garbage-body"],
)
def test_transient_faults_are_retried_to_a_good_render(
    cloud_stack: LocalStack, openai_fake: FakeOpenAI, tmp_path: Path, faults: list[Fault]
) -> None:
    openai_fake.reset()
    for fault in faults:
        openai_fake.add_fault(fault)
    path = tmp_path / "ok.mp4"
    summary = render_to_file(cloud_stack.gateway_address, _request(), path, timeout_seconds=120)
    assert probe_mp4(path).width == 426
    assert {s.visual.provider for s in summary.scenes} == {"gpt-image-1-mini"}
    # Each injected fault costs exactly one extra attempt: no retry storm.
    assert len(openai_fake.requests_to(IMAGES)) == SCENES + len(faults)


def _failed_render(stack: LocalStack, tmp_path: Path, **kwargs: object) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as error:
        render_to_file(stack.gateway_address, _request(), tmp_path / "bad.mp4", timeout_seconds=120, **kwargs)
    assert not (tmp_path / "bad.mp4").exists() and not (tmp_path / "bad.mp4.part").exists()
    return error.value


def test_a_provider_answering_garbage_fails_the_render_naming_scene_and_cause(
    cloud_stack: LocalStack, openai_fake: FakeOpenAI, tmp_path: Path
) -> None:
    openai_fake.reset()
    openai_fake.malformed = True
    error = _failed_render(cloud_stack, tmp_path)
    assert error.code() == grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]
    assert "scenes[" in error.details() and "image" in error.details()  # type: ignore[attr-defined]
    assert "base64" in error.details() or "not a PNG" in error.details()  # type: ignore[attr-defined]
    # Bounded: the image service's attempts only, not multiplied by the gateway's replica failover.
    assert len(openai_fake.requests_to(IMAGES)) <= SCENES * PROVIDER_ATTEMPTS


def test_a_hanging_provider_hits_the_asset_deadline(
    cloud_stack: LocalStack, openai_fake: FakeOpenAI, tmp_path: Path
) -> None:
    openai_fake.reset()
    for _ in range(SCENES * PROVIDER_ATTEMPTS):
        openai_fake.add_fault(Fault(IMAGES, status=0, hang_seconds=30))
    started = time.monotonic()
    error = _failed_render(cloud_stack, tmp_path)
    assert time.monotonic() - started < 15
    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED  # type: ignore[attr-defined]
    assert "scenes[" in error.details() and "image" in error.details()  # type: ignore[attr-defined]


@pytest.mark.parametrize(("service", "named"), [("image", "image"), ("audio", "speech"), ("assembler", "assembler")])
def test_a_service_killed_mid_render_fails_it_clearly(service: str, named: str, tmp_path: Path) -> None:
    with LocalStack(log_dir=tmp_path) as stack:
        killed = threading.Event()

        def kill_after_first_asset(event: render_service_pb2.RenderProgress) -> None:
            if event.stage == render_service_pb2.RENDER_STAGE_ASSET_READY and not killed.is_set():
                killed.set()
                stack.kill(service)

        request = _request(12)
        with pytest.raises(grpc.RpcError) as error:
            render_to_file(stack.gateway_address, request, tmp_path / "x.mp4", kill_after_first_asset, 120)
        assert killed.is_set()
        assert error.value.code() == grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]
        assert named in error.value.details()  # type: ignore[attr-defined]
        if service != "assembler":
            assert "scenes[" in error.value.details()  # type: ignore[attr-defined]
