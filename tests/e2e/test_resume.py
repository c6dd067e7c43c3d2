"""A render that died halfway resumes: rendered again, it pays only for the assets the first run did not make.

Resume works through the asset cache, not through any render state: the gateway is killed (SIGKILL, as a crashed pod
goes), which cancels its calls to the media services, but a provider call that had started finishes and is cached
(see services.common.cache); a new gateway then renders the same script, and every asset made before the crash is a
hit, while one still being made is joined rather than ordered again.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from scenecast.v1 import render_service_pb2, render_service_pb2_grpc, types_pb2

from scenecast_cli.client import render_to_file
from scenecast_cli.stack import SERVICES, LocalStack, free_port, wait_until_serving
from tests import prices
from tests.fakes.base import Fault
from tests.fakes.openai_server import FakeOpenAI
from tests.probe import probe_mp4

IMAGES, SPEECH = "/v1/images/generations", "/v1/audio/speech"
SCENE_COUNT = 12
# Each provider call takes this long, so the render is still generating when half its assets are ready.
SLOW_SECONDS = 0.3
# The fake's request counts must stay unchanged this long before the first run counts as settled.
SETTLE_SECONDS = 1.0


def _request() -> render_service_pb2.RenderRequest:
    scenes = [
        types_pb2.Scene(
            id=f"s{index}", narration=f"Step {index}: check the ladder.", visual_prompt=f"A ladder {index}."
        )
        for index in range(SCENE_COUNT)
    ]
    output = types_pb2.OutputSettings(
        aspect_ratio=types_pb2.ASPECT_RATIO_16_9, height=180, fps=10, quality=types_pb2.QUALITY_STANDARD
    )
    return render_service_pb2.RenderRequest(scenes=scenes, output=output)


def _calls(fake: FakeOpenAI) -> tuple[int, int]:
    return len(fake.requests_to(IMAGES, "POST")), len(fake.requests_to(SPEECH, "POST"))


def _settled_calls(fake: FakeOpenAI) -> tuple[int, int]:
    """The counts once no call of the dead render is still on its way to the provider."""
    calls, since = _calls(fake), time.monotonic()
    while time.monotonic() - since < SETTLE_SECONDS:
        time.sleep(0.1)
        if _calls(fake) != calls:
            calls, since = _calls(fake), time.monotonic()
    return calls


@contextlib.contextmanager
def _new_gateway(stack: LocalStack, env: dict[str, str], log_dir: Path) -> Iterator[str]:
    """A gateway started afresh for the same media services, as the restarted pod of a crashed one would be."""
    address = f"127.0.0.1:{free_port()}"
    variables = {**os.environ, **env, "LISTEN_ADDRESS": address}
    variables |= {variable: stack.addresses[service] for service, (_, variable, _) in SERVICES.items()}
    with (log_dir / "gateway-restarted.log").open("wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "gateway"], env=variables, stdout=log, stderr=log)
    try:
        wait_until_serving(address, 30, process)
        yield address
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_a_render_killed_halfway_resumes_and_pays_only_for_the_rest(tmp_path: Path) -> None:
    with FakeOpenAI() as fake:
        for path in (IMAGES, SPEECH):
            for _ in range(SCENE_COUNT):
                fake.add_fault(Fault(path, status=0, hang_seconds=SLOW_SECONDS))
        env = {
            "IMAGE_PROVIDER": "gpt-image-1-mini",
            "TTS_PROVIDER": "openai",
            **fake.service_env(),
            "ASSET_CACHE_DIR": str(tmp_path / "asset-cache"),
        }
        with LocalStack(env=env, log_dir=tmp_path) as stack:
            ready = 0
            with grpc.insecure_channel(stack.gateway_address) as channel, pytest.raises(grpc.RpcError) as died:
                for response in render_service_pb2_grpc.RenderServiceStub(channel).Render(_request(), timeout=60):
                    if response.progress.stage == render_service_pb2.RENDER_STAGE_ASSET_READY:
                        ready += 1
                        if ready == SCENE_COUNT:  # half of the 2 x 12 assets
                            stack.kill("gateway")
            assert died.value.code() == grpc.StatusCode.UNAVAILABLE
            made_images, made_speech = _settled_calls(fake)

            with _new_gateway(stack, env, tmp_path) as address:
                summary = render_to_file(address, _request(), tmp_path / "resumed.mp4", timeout_seconds=60)
            total_images, total_speech = _calls(fake)

    second = (total_images - made_images, total_speech - made_speech)
    paid = f"first run {made_images} images, {made_speech} narrations; resumed run {second[0]} and {second[1]}"
    print(f"\npaid for: {paid}")  # noqa: T201
    assert 0 < made_images < SCENE_COUNT and 0 < made_speech < SCENE_COUNT, "the first run really died halfway"
    assert second == (SCENE_COUNT - made_images, SCENE_COUNT - made_speech), "the rest, and nothing twice"
    assert sum(s.visual.cache_hit for s in summary.scenes) == made_images
    assert sum(s.narration.cache_hit for s in summary.scenes) == made_speech
    narrations = {scene.id: scene.narration for scene in _request().scenes}
    image_price = prices.GPT_IMAGE_1_MINI_STANDARD_WIDE
    assert summary.estimated_cost_usd == pytest.approx(
        second[0] * image_price
        + sum(prices.tts_1(len(narrations[s.scene_id])) for s in summary.scenes if not s.narration.cache_hit)
    )

    probed = probe_mp4(tmp_path / "resumed.mp4")
    assert [s.scene_id for s in summary.scenes] == [f"s{index}" for index in range(SCENE_COUNT)]
    assert (probed.video_codec, probed.width, probed.height) == ("h264", 320, 180)
    assert probed.duration_s == pytest.approx(summary.duration_ms / 1000, abs=0.2)
    assert probed.duration_s == pytest.approx(sum(s.duration_ms for s in summary.scenes) / 1000, abs=0.2)
    assert " ".join(probed.subtitle_texts).split() == " ".join(narrations.values()).split()
