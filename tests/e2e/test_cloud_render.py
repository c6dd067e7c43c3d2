"""Whole renders with cloud providers, chosen by environment variables alone, against the fake APIs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from scenecast.v1 import render_service_pb2, types_pb2

from tests import prices
from tests.e2e.stack_renders import check_narrated_scenes, render_in_new_stack
from tests.e2e.test_render import SCENES
from tests.fakes.edge_tts_server import FakeEdgeTTS
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.replicate_server import TOKEN, FakeReplicate

REQUEST = render_service_pb2.RenderRequest(
    scenes=SCENES,
    output=types_pb2.OutputSettings(
        aspect_ratio=types_pb2.ASPECT_RATIO_16_9, height=360, fps=25, quality=types_pb2.QUALITY_STANDARD
    ),
)


@pytest.fixture(scope="module")
def replicate_fake() -> Iterator[FakeReplicate]:
    with FakeReplicate() as fake:
        yield fake


@pytest.fixture(scope="module")
def edge_fake() -> Iterator[FakeEdgeTTS]:
    with FakeEdgeTTS() as fake:
        yield fake


def _render(
    env: dict[str, str], tmp_path: Path
) -> tuple[render_service_pb2.EstimateCostResponse, render_service_pb2.RenderSummary]:
    """The estimate and summary of a render whose MP4 passed the checks every narrated render passes."""
    rendered = render_in_new_stack(env, REQUEST, tmp_path / "cloud.mp4", timeout_seconds=120)
    check_narrated_scenes(rendered.path, rendered.summary)
    return rendered.estimate, rendered.summary


def test_flux_and_kokoro(replicate_fake: FakeReplicate, tmp_path: Path) -> None:
    env = {
        "IMAGE_PROVIDER": "flux",
        "TTS_PROVIDER": "kokoro",
        "REPLICATE_API_TOKEN": TOKEN,
        "REPLICATE_BASE_URL": replicate_fake.base_url,
        "REPLICATE_POLL_INTERVAL": "0.05",
    }
    estimate, summary = _render(env, tmp_path)
    assert {(s.visual.provider, s.narration.provider) for s in summary.scenes} == {("flux", "kokoro")}
    assert summary.scenes[0].visual.model == "black-forest-labs/flux-dev"
    assert summary.scenes[0].narration.model.startswith("jaaari/kokoro-82m:")
    creates = replicate_fake.requests_to("/v1/models/black-forest-labs/flux-dev/predictions", "POST")
    assert len(creates) == len(SCENES)
    assert all(r.json()["input"]["aspect_ratio"] == "16:9" for r in creates)
    # Images are priced per image, as estimated; kokoro is billed by the GPU seconds the prediction reports.
    assert [e.image_usd for e in estimate.scenes] == [prices.FLUX_DEV_PER_IMAGE] * len(SCENES)
    assert len(summary.scenes) == len(SCENES)
    for report in summary.scenes:
        assert report.visual.estimated_cost_usd == prices.FLUX_DEV_PER_IMAGE
        assert report.narration.estimated_cost_usd == pytest.approx(prices.T4_PER_SECOND * replicate_fake.predict_time)
    assert summary.estimated_cost_usd == pytest.approx(sum(s.estimated_cost_usd for s in summary.scenes))


def test_gpt_image_mini_and_edge(openai_fake: FakeOpenAI, edge_fake: FakeEdgeTTS, tmp_path: Path) -> None:
    env = {
        "IMAGE_PROVIDER": "gpt-image-1-mini",
        "TTS_PROVIDER": "edge",
        **openai_fake.service_env(),
        "EDGE_TTS_WSS_URL": edge_fake.wss_url,
    }
    estimate, summary = _render(env, tmp_path)
    assert {(s.visual.provider, s.narration.provider) for s in summary.scenes} == {("gpt-image-1-mini", "edge")}
    requests = openai_fake.requests_to("/v1/images/generations", "POST")
    assert [r.json()["size"] for r in requests] == ["1536x1024"] * len(SCENES)
    # Scenes are synthesized concurrently, so the fake hears them in any order.
    assert sorted(u.text for u in edge_fake.utterances) == sorted(s.narration for s in SCENES)
    # The estimate and the render agree with the cost table, scene by scene.
    price = prices.GPT_IMAGE_1_MINI_STANDARD_WIDE
    assert [e.total_usd for e in estimate.scenes] == [price] * len(SCENES)
    assert [s.estimated_cost_usd for s in summary.scenes] == [price] * len(SCENES)
    assert summary.estimated_cost_usd == pytest.approx(estimate.total_usd)


def test_openai_image_and_speech_estimate_matches_render(openai_fake: FakeOpenAI, tmp_path: Path) -> None:
    env = {
        "IMAGE_PROVIDER": "dall-e-3",
        "TTS_PROVIDER": "openai",
        **openai_fake.service_env(),
    }
    estimate, summary = _render(env, tmp_path)
    expected = [prices.DALL_E_3_STANDARD_WIDE + prices.tts_1(len(s.narration)) for s in SCENES]
    assert [e.total_usd for e in estimate.scenes] == pytest.approx(expected)
    assert [s.estimated_cost_usd for s in summary.scenes] == pytest.approx(expected)
