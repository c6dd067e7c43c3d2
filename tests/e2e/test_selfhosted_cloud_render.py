"""Whole renders with your own models in the cloud (a Kokoro-FastAPI speech server, a RunPod serverless video
endpoint), chosen by environment alone, against fakes of their APIs: the MP4 is probed, and GetConfig lists each
provider with its price."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import pytest
from scenecast.v1 import render_service_pb2, types_pb2

from tests.e2e.stack_renders import check_narrated_scenes, render_in_new_stack
from tests.e2e.test_render import SCENES
from tests.fakes.kokoro_server import FakeKokoroServer
from tests.fakes.openai_server import MS_PER_CHARACTER
from tests.fakes.runpod_server import API_KEY, DELAY_MS, ENDPOINT_ID, EXECUTION_MS, FakeRunPod

REQUEST = render_service_pb2.RenderRequest(
    scenes=SCENES,
    output=types_pb2.OutputSettings(
        aspect_ratio=types_pb2.ASPECT_RATIO_16_9, height=360, fps=25, quality=types_pb2.QUALITY_DRAFT
    ),
)


@pytest.fixture(scope="module")
def kokoro_fake() -> Iterator[FakeKokoroServer]:
    with FakeKokoroServer() as fake:
        yield fake


def _render(
    env: dict[str, str], tmp_path: Path
) -> tuple[
    render_service_pb2.GetConfigResponse, render_service_pb2.EstimateCostResponse, render_service_pb2.RenderSummary
]:
    """The config, estimate and summary of a render whose MP4 passed the checks every narrated render passes."""
    rendered = render_in_new_stack(env, REQUEST, tmp_path / "selfhosted-cloud.mp4")
    check_narrated_scenes(rendered.path, rendered.summary)
    return rendered.config, rendered.estimate, rendered.summary


def _listed(config: render_service_pb2.GetConfigResponse, kind: int, name: str) -> types_pb2.ProviderInfo:
    [provider_set] = [s for s in config.provider_sets if s.kind == kind]
    [provider] = [p for p in provider_set.providers if p.name == name]
    assert provider_set.default_provider == name
    return provider


def test_kokoro_server_narration(kokoro_fake: FakeKokoroServer, tmp_path: Path) -> None:
    kokoro_fake.reset()
    env = {
        "TTS_PROVIDER": "kokoro-server",
        "KOKORO_SERVER_URL": kokoro_fake.base_url,
        "KOKORO_SERVER_VOICE": "bm_george",
        "KOKORO_SERVER_USD_PER_MILLION_CHARS": "5",
    }
    config, estimate, summary = _render(env, tmp_path)
    kokoro = _listed(config, types_pb2.MEDIA_KIND_SPEECH, "kokoro-server")
    assert kokoro.configured and [(p.unit, p.usd_per_unit) for p in kokoro.prices] == [("1M characters", 5.0)]
    assert {(s.narration.provider, s.narration.model) for s in summary.scenes} == {("kokoro-server", "kokoro")}
    assert [s.narration.duration_ms for s in summary.scenes] == [len(s.narration) * MS_PER_CHARACTER for s in SCENES]
    sent = kokoro_fake.requests_to("/dev/captioned_speech", "POST")
    assert sorted(r.json()["input"] for r in sent) == sorted(s.narration for s in SCENES)
    assert {r.json()["voice"] for r in sent} == {"bm_george"}
    usd = [len(s.narration) * 5 / 1_000_000 for s in SCENES]
    assert [e.speech_usd for e in estimate.scenes] == pytest.approx(usd)
    assert [s.narration.estimated_cost_usd for s in summary.scenes] == pytest.approx(usd)


def test_runpod_clips(tmp_path: Path) -> None:
    with FakeRunPod() as runpod:
        runpod.polls_to_finish = 3
        env = {
            "VIDEO_PROVIDER": "runpod",
            "RUNPOD_API_KEY": API_KEY,
            "RUNPOD_ENDPOINT_ID": ENDPOINT_ID,
            "RUNPOD_BASE_URL": runpod.api_url,
            "RUNPOD_POLL_SECONDS": "0.05",
            "RUNPOD_USD_PER_GPU_SECOND": "0.001",
            "RUNPOD_GPU_SECONDS_PER_CLIP_SECOND": "10",
            # The fake's bucket is on loopback.
            "ALLOW_PRIVATE_OUTPUT_URLS": "true",
        }
        config, estimate, summary = _render(env, tmp_path)
        assert len(runpod.runs()) == len(SCENES) and runpod.cancels() == []
    listed = _listed(config, types_pb2.MEDIA_KIND_VIDEO, "runpod")
    assert listed.configured and [(p.unit, p.usd_per_unit) for p in listed.prices] == [("GPU second", 0.001)]
    assert {(s.visual.provider, s.visual.model) for s in summary.scenes} == {("runpod", f"runpod:{ENDPOINT_ID}")}
    # Estimated from the assumed GPU time; billed from the GPU time RunPod reported.
    assert all(e.video_usd > 0 for e in estimate.scenes)
    billed = 0.001 * math.ceil((DELAY_MS + EXECUTION_MS) / 1000)
    assert [s.estimated_cost_usd for s in summary.scenes] == pytest.approx([billed] * len(SCENES))
