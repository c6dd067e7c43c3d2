"""Prices cross the contract: each media service prices its own jobs (Estimate*Cost), and the gateway's EstimateCost
and budget check are made of exactly what the services report.

The image, audio and video services are the real ones in-process, with OpenAI settings passed as objects (pricing
calls no vendor, so no fake is needed); the gateway is real too.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from scenecast.v1 import (
    audio_service_pb2,
    audio_service_pb2_grpc,
    image_service_pb2,
    image_service_pb2_grpc,
    render_service_pb2,
    render_service_pb2_grpc,
    types_pb2,
    video_service_pb2,
    video_service_pb2_grpc,
)

from gateway.config import GatewaySettings
from gateway.server import build as build_gateway
from services.audio.config import AudioSettings
from services.audio.providers.openai_tts import OpenAISpeechSettings
from services.audio.server import build as build_audio
from services.common.openai_errors import OpenAISettings
from services.common.server import Server
from services.image.config import ImageSettings
from services.image.server import build as build_image
from services.video.config import VideoSettings
from services.video.server import build as build_video
from tests import prices

SCENES = [
    types_pb2.Scene(
        id="one",
        title="One",
        narration="First, look up at the ladder.",
        visual_prompt="A ladder.",
        visual_kind=types_pb2.VISUAL_KIND_STILL,
    ),
    types_pb2.Scene(id="two", title="Two", narration="Then, climb.", visual_kind=types_pb2.VISUAL_KIND_CLIP),
]
OUTPUT = types_pb2.OutputSettings(
    aspect_ratio=types_pb2.ASPECT_RATIO_16_9, height=360, fps=10, quality=types_pb2.QUALITY_STANDARD
)
CLOUD = types_pb2.ProviderOverrides(image="gpt-image-1-mini", speech="openai", video="wan")
# Wan makes one 81-frame clip at 16 fps whatever the length asked, at $0.09 per output second.
WAN_CLIP_USD = 0.09 * 81 / 16


class Stubs:
    def __init__(self, channels: dict[str, grpc.aio.Channel]) -> None:
        self.image = image_service_pb2_grpc.ImageServiceStub(channels["image"])
        self.audio = audio_service_pb2_grpc.AudioServiceStub(channels["audio"])
        self.video = video_service_pb2_grpc.VideoServiceStub(channels["video"])
        self.gateway = render_service_pb2_grpc.RenderServiceStub(channels["gateway"])


@pytest.fixture(scope="module")
async def stubs(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stubs]:
    key = {"openai_api_key": "sk-estimates-123456", "openai_base_url": "http://127.0.0.1:9/v1"}
    servers: dict[str, Server] = {
        "image": build_image(ImageSettings(listen_address="127.0.0.1:0"), [OpenAISettings(**key)]),
        "audio": build_audio(AudioSettings(listen_address="127.0.0.1:0"), [OpenAISpeechSettings(**key)]),
        "video": build_video(
            VideoSettings(listen_address="127.0.0.1:0", video_tmp_dir=str(tmp_path_factory.mktemp("video")))
        ),
    }
    for server in servers.values():
        await server.start()
    servers["gateway"] = build_gateway(
        GatewaySettings(
            listen_address="127.0.0.1:0",
            image_service_address=f"127.0.0.1:{servers['image'].port}",
            audio_service_address=f"127.0.0.1:{servers['audio'].port}",
            video_service_address=f"127.0.0.1:{servers['video'].port}",
            assembler_service_address="127.0.0.1:9",  # pricing never reaches the assembler
            render_output_dir=str(tmp_path_factory.mktemp("results")),
        )
    )
    await servers["gateway"].start()
    channels = {name: grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") for name, server in servers.items()}
    yield Stubs(channels)
    for channel in channels.values():
        await channel.close()
    for server in servers.values():
        await server.stop(0)


def _render(**fields: Any) -> render_service_pb2.RenderRequest:
    return render_service_pb2.RenderRequest(**{"scenes": SCENES, "output": OUTPUT, "providers": CLOUD, **fields})


async def test_the_gateway_estimate_is_what_the_services_report(stubs: Stubs) -> None:
    estimate = await stubs.gateway.EstimateCost(render_service_pb2.EstimateCostRequest(render=_render()))
    images = await stubs.image.EstimateImageCost(
        image_service_pb2.EstimateImageCostRequest(
            requests=[
                image_service_pb2.GenerateImageRequest(scene=scene, output=OUTPUT, provider="gpt-image-1-mini")
                for scene in SCENES
            ]
        )
    )
    speech = await stubs.audio.EstimateSpeechCost(
        audio_service_pb2.EstimateSpeechCostRequest(
            requests=[
                audio_service_pb2.SynthesizeSpeechRequest(
                    text=scene.narration, quality=OUTPUT.quality, provider="openai"
                )
                for scene in SCENES
            ]
        )
    )
    assert [(s.image_provider, s.image_usd) for s in estimate.scenes] == [(e.provider, e.usd) for e in images.estimates]
    assert [(s.speech_provider, s.speech_usd) for s in estimate.scenes] == [
        (e.provider, e.usd) for e in speech.estimates
    ]
    # The published prices, written apart from the provider code.
    assert [e.usd for e in images.estimates] == [prices.GPT_IMAGE_1_MINI_STANDARD_WIDE] * 2
    assert [e.usd for e in speech.estimates] == pytest.approx([prices.tts_1(len(s.narration)) for s in SCENES])
    # Only the clip scene has a clip, priced by the video service.
    assert [(s.video_provider, s.video_usd) for s in estimate.scenes] == [
        ("", 0.0),
        ("wan", pytest.approx(WAN_CLIP_USD)),
    ]
    assert estimate.total_usd == pytest.approx(
        sum(e.usd for e in (*images.estimates, *speech.estimates)) + WAN_CLIP_USD
    )


async def test_the_budget_check_refuses_a_render_over_the_cap_by_the_services_prices(stubs: Stubs) -> None:
    expected = (
        2 * prices.GPT_IMAGE_1_MINI_STANDARD_WIDE + sum(prices.tts_1(len(s.narration)) for s in SCENES) + WAN_CLIP_USD
    )
    with pytest.raises(grpc.aio.AioRpcError) as error:
        async for _ in stubs.gateway.Render(_render(max_cost_usd=0.2)):
            pass
    assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert f"estimated at ${expected:.4f}, over max_cost_usd $0.2000" in error.value.details()


async def test_an_avatar_render_is_priced_by_the_video_service(stubs: Stubs) -> None:
    spoken = [types_pb2.Scene(id=scene.id, narration=scene.narration) for scene in SCENES]
    request = _render(scenes=spoken, providers=types_pb2.ProviderOverrides(avatar="heygen"))
    estimate = await stubs.gateway.EstimateCost(render_service_pb2.EstimateCostRequest(render=request))
    answer = await stubs.video.EstimateAvatarCost(
        video_service_pb2.EstimateAvatarCostRequest(
            request=video_service_pb2.GenerateAvatarVideoRequest(scenes=spoken, output=OUTPUT, provider="heygen")
        )
    )
    # The narration spoken at about 15 characters a second, at HeyGen v3's price per output second.
    seconds = sum(len(scene.narration) for scene in spoken) / 15
    assert (answer.estimate.provider, answer.estimate.usd) == ("heygen", pytest.approx(prices.heygen_v3(seconds)))
    assert (estimate.avatar_provider, estimate.avatar_usd, estimate.total_usd) == (
        "heygen",
        answer.estimate.usd,
        answer.estimate.usd,
    )


async def test_clips_are_priced_per_spec_by_their_provider(stubs: Stubs) -> None:
    specs = [
        video_service_pb2.ClipSpec(scene=SCENES[0], output=OUTPUT, duration_ms=4000, provider="kenburns"),
        video_service_pb2.ClipSpec(scene=SCENES[0], output=OUTPUT, duration_ms=4000, provider="wan"),
    ]
    answer = await stubs.video.EstimateClipCost(video_service_pb2.EstimateClipCostRequest(specs=specs))
    # Wan makes one 81-frame clip at 16 fps whatever the length asked, at $0.09 per output second.
    assert [(e.provider, e.usd) for e in answer.estimates] == [
        ("kenburns", 0.0),
        ("wan", pytest.approx(0.09 * 81 / 16)),
    ]


async def test_bad_estimate_requests_name_the_field(stubs: Stubs) -> None:
    request = image_service_pb2.GenerateImageRequest(scene=SCENES[0], output=OUTPUT)
    cases = [
        (
            stubs.image.EstimateImageCost(
                image_service_pb2.EstimateImageCostRequest(
                    requests=[
                        request,
                        image_service_pb2.GenerateImageRequest(scene=SCENES[0], output=OUTPUT, provider="nope"),
                    ]
                )
            ),
            "requests[1].provider: unknown provider 'nope'",
        ),
        (
            stubs.image.EstimateImageCost(image_service_pb2.EstimateImageCostRequest(requests=[request] * 1001)),
            "requests has 1001 entries; at most 1000 per call",
        ),
        (
            stubs.audio.EstimateSpeechCost(
                audio_service_pb2.EstimateSpeechCostRequest(
                    requests=[audio_service_pb2.SynthesizeSpeechRequest(quality=OUTPUT.quality)]
                )
            ),
            "requests[0].text is empty",
        ),
        (
            stubs.video.EstimateClipCost(
                video_service_pb2.EstimateClipCostRequest(
                    specs=[
                        video_service_pb2.ClipSpec(
                            scene=types_pb2.Scene(title="t" * 201), output=OUTPUT, provider="kenburns"
                        )
                    ]
                )
            ),
            "specs[0].scene.title has 201 characters",
        ),
        (
            stubs.video.EstimateAvatarCost(
                video_service_pb2.EstimateAvatarCostRequest(
                    request=video_service_pb2.GenerateAvatarVideoRequest(scenes=SCENES, output=OUTPUT)
                )
            ),
            "request.provider is empty and AVATAR_PROVIDER is unset",
        ),
    ]
    for call, message in cases:
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await call
        assert (error.value.code(), message in error.value.details()) == (grpc.StatusCode.INVALID_ARGUMENT, True), (
            error.value.details()
        )
