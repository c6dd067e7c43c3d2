"""Tier 3 renders chosen by environment alone: Wan clips mixed with stills, a self-hosted model, avatar videos."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from scenecast.v1 import render_service_pb2, types_pb2

from tests import prices
from tests.e2e.stack_renders import check_narrated_scenes, render_in_new_stack
from tests.e2e.test_render import SCENES
from tests.fakes.avatar_servers import HEYGEN_KEY, SYNTHESIA_KEY, FakeHeyGen, FakeSynthesia
from tests.fakes.replicate_server import TOKEN
from tests.fakes.video_servers import FakeCogVideo, FakeReplicateVideo
from tests.probe import audio_rms, frame_at, probe_mp4

OUTPUT = types_pb2.OutputSettings(
    aspect_ratio=types_pb2.ASPECT_RATIO_16_9, height=360, fps=24, quality=types_pb2.QUALITY_DRAFT
)


def _request(still_scene: int | None = None) -> render_service_pb2.RenderRequest:
    request = render_service_pb2.RenderRequest(scenes=SCENES, output=OUTPUT, title="Slips and trips")
    if still_scene is not None:
        request.scenes[still_scene].visual_kind = types_pb2.VISUAL_KIND_STILL
    return request


def _render(
    env: dict[str, str], tmp_path: Path, request: render_service_pb2.RenderRequest
) -> tuple[render_service_pb2.RenderSummary, render_service_pb2.EstimateCostResponse, Path]:
    rendered = render_in_new_stack(env, request, tmp_path / "tier3.mp4")
    return rendered.summary, rendered.estimate, rendered.path


@pytest.fixture(scope="module")
def replicate_video() -> Iterator[FakeReplicateVideo]:
    with FakeReplicateVideo() as fake:
        yield fake


def _wan_env(fake: FakeReplicateVideo) -> dict[str, str]:
    return {
        "VIDEO_PROVIDER": "wan",
        "REPLICATE_API_TOKEN": TOKEN,
        "REPLICATE_BASE_URL": fake.base_url,
        "REPLICATE_POLL_INTERVAL": "0.05",
    }


def test_wan_clips_mixed_with_a_still(replicate_video: FakeReplicateVideo, tmp_path: Path) -> None:
    replicate_video.reset()
    summary, estimate, path = _render(_wan_env(replicate_video), tmp_path, _request(still_scene=1))
    check_narrated_scenes(path, summary)
    kinds = [(s.visual.provider, s.visual.mime_type) for s in summary.scenes]
    assert kinds == [("wan", "video/mp4"), ("slides", "image/png"), ("wan", "video/mp4")]
    # The scene image was sent along, so Wan animated it (image to video) for both clip scenes.
    creates = replicate_video.requests_to("/v1/models/wavespeedai/wan-2.1-i2v-480p/predictions", "POST")
    assert len(creates) == 2 and all(r.json()["input"]["image"].startswith("data:image/") for r in creates)
    # A 5 s clip under a longer narration is looped: the clip scene's picture keeps changing to its end.
    assert summary.scenes[0].visual.duration_ms == pytest.approx(81 / 16 * 1000, abs=80)
    clip_cost = prices.WAN_PER_OUTPUT_SECOND * 81 / 16
    assert [e.video_usd for e in estimate.scenes] == [clip_cost, 0.0, clip_cost]
    assert [s.estimated_cost_usd for s in summary.scenes] == [clip_cost, 0.0, clip_cost]


def test_a_corrupt_clip_fails_the_render_naming_the_scene(replicate_video: FakeReplicateVideo, tmp_path: Path) -> None:
    replicate_video.reset()
    replicate_video.corrupt_video = True
    with pytest.raises(grpc.RpcError) as error:
        _render(_wan_env(replicate_video), tmp_path, _request())
    assert error.value.code() == grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]
    assert "scenes[" in error.value.details() and "clip" in error.value.details()  # type: ignore[attr-defined]
    assert "not an MP4 video" in error.value.details()  # type: ignore[attr-defined]
    assert not (tmp_path / "tier3.mp4").exists() and not (tmp_path / "tier3.mp4.part").exists()


def test_selfhosted_cog_model(tmp_path: Path) -> None:
    with FakeCogVideo() as cog:
        cog.async_mode = True
        cog.polls_to_finish = 2
        env = {
            "VIDEO_PROVIDER": "selfhosted",
            "SELFHOSTED_VIDEO_URL": cog.base_url,
            "SELFHOSTED_VIDEO_POLL_SECONDS": "0.05",
        }
        summary, _, path = _render(env, tmp_path, _request())
        assert len(cog.requests_to("/predictions", "POST")) == len(SCENES)
    check_narrated_scenes(path, summary)
    assert {s.visual.provider for s in summary.scenes} == {"selfhosted"}


@pytest.mark.parametrize("vendor", ["synthesia", "heygen"])
def test_avatar_video_gets_captions(vendor: str, tmp_path: Path) -> None:
    fake = FakeSynthesia() if vendor == "synthesia" else FakeHeyGen()
    with fake:
        fake.polls_to_finish = 3
        prefix = vendor.upper()
        env = {
            "AVATAR_PROVIDER": vendor,
            f"{prefix}_API_KEY": SYNTHESIA_KEY if vendor == "synthesia" else HEYGEN_KEY,
            f"{prefix}_BASE_URL": fake.base_url,
            f"{prefix}_POLL_SECONDS": "0.05",
            "HEYGEN_AVATAR_ID": "Angela-inblackskirt-20220820",
            "HEYGEN_VOICE_ID": "1bd001e7e50f421d891986aad5158bc8",
        }
        request = _request()
        request.avatar.background = "#204060" if vendor == "heygen" else "off_white"
        summary, estimate, path = _render(env, tmp_path, request)
    probed = probe_mp4(path)
    assert (probed.width, probed.height, probed.video_codec, probed.audio_codec) == (640, 360, "h264", "aac")
    [report] = summary.scenes
    assert (report.scene_id, report.visual.provider) == ("avatar", vendor)
    # No lead-in or tail: the video lasts exactly as long as the avatar's own voice, which is the narration.
    assert abs(probed.duration_s - report.visual.duration_ms / 1000) < 0.1
    assert audio_rms(path, 0.2, probed.duration_s - 0.2) > 0.01
    assert " ".join(probed.subtitle_texts).split() == " ".join(s.narration for s in SCENES).split()
    frame = frame_at(path, 1.0)
    assert (frame[int(frame.shape[0] * 0.8) :].min(axis=2) > 230).sum() > 100  # burned-in captions
    assert estimate.avatar_provider == vendor and estimate.avatar_usd > 0
    assert summary.estimated_cost_usd == pytest.approx(report.visual.estimated_cost_usd)
