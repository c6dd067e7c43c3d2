"""Pay once: a re-render of an edited script calls the cloud providers, and encodes scenes, only for what changed."""

from __future__ import annotations

import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from scenecast.v1 import render_service_pb2, types_pb2

from scenecast_cli.client import render_to_file
from scenecast_cli.stack import LocalStack
from tests import prices
from tests.fakes.openai_server import FakeOpenAI
from tests.probe import probe_mp4

IMAGES, SPEECH = "/v1/images/generations", "/v1/audio/speech"
SCENE_COUNT = 12
EDITED = 5


def _request(narrations: list[str], no_cache: bool = False) -> render_service_pb2.RenderRequest:
    scenes = [
        types_pb2.Scene(id=f"s{index}", narration=text, visual_prompt=f"A ladder, view {index}.")
        for index, text in enumerate(narrations)
    ]
    output = types_pb2.OutputSettings(
        aspect_ratio=types_pb2.ASPECT_RATIO_16_9, height=180, fps=10, quality=types_pb2.QUALITY_STANDARD
    )
    return render_service_pb2.RenderRequest(scenes=scenes, output=output, no_cache=no_cache)


def test_an_edited_script_regenerates_only_the_edited_asset(tmp_path: Path) -> None:
    narrations = [f"Step {index}: check the ladder." for index in range(SCENE_COUNT)]
    edited = [*narrations]
    edited[EDITED] = "Step five, edited: hold the rails."
    image_price = prices.GPT_IMAGE_1_MINI_STANDARD_WIDE
    with FakeOpenAI() as fake:
        env = {
            "IMAGE_PROVIDER": "gpt-image-1-mini",
            "TTS_PROVIDER": "openai",
            **fake.service_env(),
            "ASSET_CACHE_DIR": str(tmp_path / "asset-cache"),
            "SEGMENT_CACHE_DIR": str(tmp_path / "segment-cache"),
        }
        with LocalStack(env=env, log_dir=tmp_path) as stack:

            def render(request: render_service_pb2.RenderRequest, name: str) -> tuple[float, list[int]]:
                started = time.monotonic()
                summary = render_to_file(stack.gateway_address, request, tmp_path / name, timeout_seconds=120)
                elapsed = time.monotonic() - started
                calls = [len(fake.requests_to(IMAGES, "POST")), len(fake.requests_to(SPEECH, "POST"))]
                renders[name] = summary
                return elapsed, [*calls, *segment_counts(stack.metrics_ports["assembler"])]

            renders: dict[str, render_service_pb2.RenderSummary] = {}
            full_s, after_full = render(_request(narrations), "full.mp4")
            again_s, after_edit = render(_request(edited), "edited.mp4")
            _, after_no_cache = render(_request(edited, no_cache=True), "no-cache.mp4")

    print(f"\nfull render {full_s:.2f} s; re-render after one edit {again_s:.2f} s")  # noqa: T201 - reported timing
    # [image calls, speech calls, segments joined from the segment cache, segments encoded], cumulative.
    assert after_full == [SCENE_COUNT, SCENE_COUNT, 0, SCENE_COUNT]
    assert after_edit == [SCENE_COUNT, SCENE_COUNT + 1, SCENE_COUNT - 1, SCENE_COUNT + 1], "one scene re-encoded"
    after_full, after_edit, after_no_cache = after_full[:2], after_edit[:2], after_no_cache[:2]
    assert after_edit == [SCENE_COUNT, SCENE_COUNT + 1], "only the edited narration is spoken again"
    assert after_no_cache == [2 * SCENE_COUNT, 2 * SCENE_COUNT + 1], "no_cache makes every asset anew"

    first, second, fresh = renders["full.mp4"], renders["edited.mp4"], renders["no-cache.mp4"]
    assert not any(s.visual.cache_hit or s.narration.cache_hit for s in first.scenes)
    assert first.estimated_cost_usd == pytest.approx(
        SCENE_COUNT * image_price + sum(prices.tts_1(len(t)) for t in narrations)
    )
    for index, report in enumerate(second.scenes):
        assert report.visual.cache_hit and report.visual.estimated_cost_usd == 0
        assert report.narration.cache_hit == (index != EDITED)
    speech_cost = prices.tts_1(len(edited[EDITED]))
    assert second.scenes[EDITED].narration.estimated_cost_usd == pytest.approx(speech_cost)
    assert second.estimated_cost_usd == pytest.approx(speech_cost)
    # A hit keeps what the asset is (model, measured duration, timings), only its cost this time is zero.
    for before, after in zip(first.scenes, second.scenes, strict=True):
        assert (after.visual.model, after.visual.width, after.visual.height) == (
            before.visual.model,
            before.visual.width,
            before.visual.height,
        )
    assert second.scenes[0].narration.duration_ms == first.scenes[0].narration.duration_ms
    assert not any(s.visual.cache_hit or s.narration.cache_hit for s in fresh.scenes)
    assert fresh.estimated_cost_usd == pytest.approx(
        SCENE_COUNT * image_price + sum(prices.tts_1(len(t)) for t in edited)
    )
    probed = probe_mp4(tmp_path / "edited.mp4")
    assert (probed.video_codec, probed.width, probed.height) == ("h264", 320, 180)
    assert " ".join(probed.subtitle_texts).split() == " ".join(edited).split()


def segment_counts(metrics_port: int) -> list[int]:
    """The assembler's segment cache hits and misses so far, from its Prometheus endpoint."""
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as response:
        text = response.read().decode()
    counts = {"hit": 0, "miss": 0}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "scenecast_segment_cache_total":
                counts[sample.labels["outcome"]] = int(sample.value)
    return [counts["hit"], counts["miss"]]
