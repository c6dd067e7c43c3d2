"""A whole render in a stack started for it alone, and the checks a narrated, captioned MP4 of the scenes passes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from scenecast.v1 import render_service_pb2

from scenecast_cli.client import estimate_cost, get_config, render_to_file
from scenecast_cli.stack import LocalStack
from tests.e2e.test_render import LEAD_S, SCENES, TAIL_S
from tests.probe import audio_rms, probe_mp4


@dataclass(frozen=True)
class StackRender:
    config: render_service_pb2.GetConfigResponse
    estimate: render_service_pb2.EstimateCostResponse
    summary: render_service_pb2.RenderSummary
    path: Path


def render_in_new_stack(
    env: dict[str, str], request: render_service_pb2.RenderRequest, path: Path, *, timeout_seconds: float = 180
) -> StackRender:
    """Starts the services with `env` (their logs beside `path`), reads the config and the estimate, and renders to
    `path`: the environment alone chooses the providers."""
    with LocalStack(env=env, log_dir=path.parent) as stack:
        config = get_config(stack.gateway_address)
        estimate = estimate_cost(stack.gateway_address, request)
        summary = render_to_file(stack.gateway_address, request, path, timeout_seconds=timeout_seconds)
    return StackRender(config, estimate, summary, path)


def check_narrated_scenes(path: Path, summary: render_service_pb2.RenderSummary) -> None:
    """Frame size, the narration's length in every scene, audible narration, and captions for every sentence."""
    probed = probe_mp4(path)
    assert (probed.video_codec, probed.width, probed.height, probed.audio_codec) == ("h264", 640, 360, "aac")
    narration_s = [s.narration.duration_ms / 1000 for s in summary.scenes]
    assert abs(probed.duration_s - (sum(narration_s) + len(narration_s) * (LEAD_S + TAIL_S))) < 0.3
    assert abs(probed.audio_duration_s - probed.video_duration_s) < 0.05
    assert audio_rms(path, LEAD_S + 0.2, LEAD_S + narration_s[0] - 0.2) > 0.01
    assert " ".join(probed.subtitle_texts).split() == " ".join(s.narration for s in SCENES).split()
