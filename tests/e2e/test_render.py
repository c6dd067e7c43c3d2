"""The five services as separate processes on loopback: render scripts and probe the MP4 files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from scenecast.v1 import render_service_pb2, types_pb2

from scenecast_cli.client import get_config, render_to_file
from scenecast_cli.stack import LocalStack
from tests.probe import audio_rms, frame_at, probe_mp4

# Must match the assembler's defaults (SCENE_LEAD_MS, SCENE_TAIL_MS).
LEAD_S, TAIL_S = 0.3, 0.5

SCENES = [
    types_pb2.Scene(
        id="hazard",
        title="Spot the hazard",
        visual_prompt="A wet floor sign in a corridor.",
        narration="Wet floors cause many slips. Look for the yellow sign.",
    ),
    types_pb2.Scene(
        id="report",
        visual_prompt="A worker calling facilities on a phone.",
        narration="If you see a spill, report it right away.",
    ),
    types_pb2.Scene(
        id="clean", title="Clean it up", narration="Use the spill kit, then keep others away until the floor is dry."
    ),
]


def _request(aspect: int, height: int, **fields: object) -> render_service_pb2.RenderRequest:
    return render_service_pb2.RenderRequest(
        scenes=SCENES,
        output=types_pb2.OutputSettings(aspect_ratio=aspect, height=height, fps=25, quality=types_pb2.QUALITY_DRAFT),
        title="Slips and trips",
        **fields,
    )


@pytest.mark.parametrize(
    ("aspect", "height", "size"),
    [
        (types_pb2.ASPECT_RATIO_16_9, 360, (640, 360)),
        (types_pb2.ASPECT_RATIO_9_16, 640, (360, 640)),
    ],
)
def test_three_scene_render_is_a_captioned_narrated_mp4(
    stack: LocalStack, tmp_path: Path, aspect: int, height: int, size: tuple[int, int]
) -> None:
    events: list[render_service_pb2.RenderProgress] = []
    path = tmp_path / "out.mp4"
    summary = render_to_file(stack.gateway_address, _request(aspect, height), path, events.append, timeout_seconds=120)

    probed = probe_mp4(path)
    assert (probed.video_codec, probed.pix_fmt, (probed.width, probed.height)) == ("h264", "yuv420p", size)
    assert (probed.audio_codec, probed.audio_rate) == ("aac", 48000)
    narration_s = [scene.narration.duration_ms / 1000 for scene in summary.scenes]
    expected_s = sum(narration_s) + len(SCENES) * (LEAD_S + TAIL_S)
    assert abs(probed.duration_s - expected_s) < 0.3
    assert abs(probed.audio_duration_s - probed.video_duration_s) < 0.05
    # The soft subtitle track carries the narration, in order.
    assert " ".join(probed.subtitle_texts).split() == " ".join(s.narration for s in SCENES).split()
    # Narration is audible after the lead-in, and the lead-in is silent.
    assert audio_rms(path, 0.0, LEAD_S - 0.1) < 0.001
    assert audio_rms(path, LEAD_S + 0.2, LEAD_S + narration_s[0] - 0.2) > 0.01
    # Burned-in captions: white caption text in the lower part of the frame (higher up in 9:16, clear of phone UI)
    # while the first sentence is spoken.
    frame = frame_at(path, LEAD_S + 0.5)
    band = frame[int(frame.shape[0] * 0.6) :]
    assert (band.min(axis=2) > 230).sum() > 200

    assert (summary.width, summary.height) == size
    assert summary.size_bytes == path.stat().st_size
    assert [s.scene_id for s in summary.scenes] == [s.id for s in SCENES]
    assert all(s.visual.provider == "slides" and s.narration.provider == "piper" for s in summary.scenes)
    assert summary.estimated_cost_usd == 0.0
    stages = [event.stage for event in events]
    assert stages[0] == render_service_pb2.RENDER_STAGE_ACCEPTED
    assert stages.count(render_service_pb2.RENDER_STAGE_ASSET_READY) == 2 * len(SCENES)
    assert stages.count(render_service_pb2.RENDER_STAGE_SCENE_ENCODED) == len(SCENES)
    assert stages[-1] == render_service_pb2.RENDER_STAGE_STREAMING
    assert events[-1].completed_steps == events[-1].total_steps == 3 * len(SCENES)


def test_kenburns_clips_replace_stills_when_asked(stack: LocalStack, tmp_path: Path) -> None:
    request = _request(types_pb2.ASPECT_RATIO_1_1, 320, providers=types_pb2.ProviderOverrides(video="kenburns"))
    del request.scenes[2:]
    path = tmp_path / "clips.mp4"
    summary = render_to_file(stack.gateway_address, request, path, timeout_seconds=120)
    probed = probe_mp4(path)
    assert (probed.width, probed.height, probed.video_codec) == (320, 320, "h264")
    assert [s.visual.provider for s in summary.scenes] == ["kenburns", "kenburns"]
    assert all(s.visual.mime_type == "video/mp4" for s in summary.scenes)
    # The picture moves: two frames a second apart within the first scene differ.
    first, later = frame_at(path, 0.5), frame_at(path, 1.5)
    assert abs(first.astype(int) - later.astype(int)).mean() > 0.5


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda r: r.ClearField("scenes"), "scenes is empty"),
        (lambda r: setattr(r.scenes[1], "narration", "  "), "scenes[1].narration is empty"),
        (lambda r: setattr(r.providers, "image", "midjourney"), "providers.image: unknown provider 'midjourney'"),
        (lambda r: setattr(r.providers, "speech", "siri"), "providers.speech: unknown provider 'siri'"),
        (lambda r: setattr(r.output, "height", 0), "output.height"),
        (lambda r: setattr(r.output, "aspect_ratio", 7), "output.aspect_ratio"),
    ],
)
def test_bad_input_is_invalid_argument_and_services_keep_serving(
    stack: LocalStack, tmp_path: Path, change: object, field: str
) -> None:
    request = _request(types_pb2.ASPECT_RATIO_16_9, 360)
    change(request)  # type: ignore[operator]
    with pytest.raises(grpc.RpcError) as error:
        render_to_file(stack.gateway_address, request, tmp_path / "bad.mp4", timeout_seconds=30)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    assert field in error.value.details()  # type: ignore[attr-defined]
    assert not (tmp_path / "bad.mp4").exists() and not (tmp_path / "bad.mp4.part").exists()
    for address in stack.addresses.values():
        with grpc.insecure_channel(address) as channel:
            status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5).status
            assert status == health_pb2.HealthCheckResponse.SERVING


def test_config_lists_providers_and_services_offer_reflection(stack: LocalStack) -> None:
    config = get_config(stack.gateway_address)
    defaults = {types_pb2.MediaKind.Name(s.kind): s.default_provider for s in config.provider_sets}
    assert defaults == {
        "MEDIA_KIND_IMAGE": "slides",
        "MEDIA_KIND_SPEECH": "piper",
        "MEDIA_KIND_VIDEO": "",
        "MEDIA_KIND_AVATAR": "",
        "MEDIA_KIND_SCRIPT": "outline",
    }
    # The defaults need nothing; cloud providers are listed with the variables they need and whether those are set.
    by_name = {p.name: p for s in config.provider_sets for p in s.providers}
    assert all(by_name[name].offline and by_name[name].configured for name in ("slides", "piper", "kenburns"))
    assert all(
        p.required_env and not p.offline
        for p in by_name.values()
        if p.name not in ("slides", "piper", "kenburns", "edge", "outline")
    )
    assert {p.model for p in by_name["dall-e-3"].prices} == {"dall-e-3"}
    with grpc.insecure_channel(stack.addresses["assembler"]) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        responses = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        names = {service.name for response in responses for service in response.list_services_response.service}
    assert {"scenecast.v1.AssemblerService", "grpc.health.v1.Health"} <= names


def test_cli_reports_a_bad_script_with_file_and_field(tmp_path: Path) -> None:
    script = tmp_path / "bad.yaml"
    script.write_text("scenes:\n  - id: intro\n    narration: ''\n")
    result = subprocess.run(
        [sys.executable, "-m", "scenecast_cli.main", "render", str(script), "-o", str(tmp_path / "x.mp4")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "bad.yaml" in result.stderr and "scenes.0.narration" in result.stderr


def test_cli_renders_through_the_gateway(stack: LocalStack, tmp_path: Path) -> None:
    script = tmp_path / "one.yaml"
    script.write_text(
        "output: {aspect_ratio: '16:9', height: 240, fps: 15, quality: draft}\n"
        "scenes:\n  - {id: one, title: Hello, narration: Hello from the command line.}\n"
    )
    out = tmp_path / "one.mp4"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "scenecast_cli.main",
            "render",
            str(script),
            "-o",
            str(out),
            "--gateway",
            stack.gateway_address,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    probed = probe_mp4(out)
    assert (probed.width, probed.height) == (426, 240)
    assert probed.subtitle_texts == ["Hello from the command line."]
