"""Image, audio and video services over real gRPC with their offline providers."""

from __future__ import annotations

import asyncio
import gc
import io
import logging
import wave
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from PIL import Image
from scenecast.v1 import (
    audio_service_pb2,
    audio_service_pb2_grpc,
    image_service_pb2,
    image_service_pb2_grpc,
    types_pb2,
    video_service_pb2,
    video_service_pb2_grpc,
)

from services.common.chunks import iter_chunks

OUTPUT_16_9 = types_pb2.OutputSettings(
    aspect_ratio=types_pb2.ASPECT_RATIO_16_9, height=360, fps=24, quality=types_pb2.QUALITY_DRAFT
)
SCENE = types_pb2.Scene(id="s1", narration="Check the ladder. Then climb.", visual_prompt="A ladder.", title="Ladders")


async def collect(call: AsyncIterator) -> tuple[types_pb2.AssetMetadata, bytes]:
    metadata, data = None, bytearray()
    async for response in call:
        if response.HasField("metadata"):
            metadata = response.metadata
        else:
            assert response.chunk.offset == len(data)
            data += response.chunk.data
    assert metadata is not None
    return metadata, bytes(data)


async def test_image_is_a_png_at_the_output_size(image_channel: grpc.aio.Channel) -> None:
    stub = image_service_pb2_grpc.ImageServiceStub(image_channel)
    request = image_service_pb2.GenerateImageRequest(scene=SCENE, output=OUTPUT_16_9, scene_index=2)
    metadata, data = await collect(stub.GenerateImage(request))
    assert (metadata.mime_type, metadata.width, metadata.height, metadata.provider) == ("image/png", 640, 360, "slides")
    assert metadata.size_bytes == len(data)
    assert Image.open(io.BytesIO(data)).size == (640, 360)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"provider": "dall-e-9"}, "provider: unknown provider 'dall-e-9'; valid: "),
        ({"output": types_pb2.OutputSettings(aspect_ratio=1, quality=2)}, "output.height"),
        ({"scene": types_pb2.Scene(id="x", narration="Hi.")}, "scene.visual_prompt and scene.title are both empty"),
    ],
)
async def test_image_bad_input_is_invalid_argument(
    image_channel: grpc.aio.Channel, change: dict[str, object], field: str
) -> None:
    stub = image_service_pb2_grpc.ImageServiceStub(image_channel)
    request = image_service_pb2.GenerateImageRequest(scene=SCENE, output=OUTPUT_16_9)
    for name, value in change.items():
        if isinstance(value, str):
            setattr(request, name, value)
        else:
            getattr(request, name).CopyFrom(value)
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await collect(stub.GenerateImage(request))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in error.value.details()


async def test_speech_has_measured_duration_and_word_timings(audio_channel: grpc.aio.Channel) -> None:
    stub = audio_service_pb2_grpc.AudioServiceStub(audio_channel)
    metadata, data = await collect(
        stub.SynthesizeSpeech(audio_service_pb2.SynthesizeSpeechRequest(text=SCENE.narration))
    )
    with wave.open(io.BytesIO(data)) as wav:
        measured_ms = round(wav.getnframes() * 1000 / wav.getframerate())
        assert wav.getframerate() == metadata.sample_rate == 22050
    assert metadata.duration_ms == measured_ms > 1000
    # piper's phoneme alignments give each written word its time (punctuation aside, as edge-tts reports words).
    assert [t.text for t in metadata.timings] == ["Check", "the", "ladder", "Then", "climb"]
    assert {t.kind for t in metadata.timings} == {types_pb2.TIMING_KIND_WORD}
    assert 0 < metadata.timings[0].start_ms < metadata.timings[-1].end_ms < metadata.duration_ms
    assert (metadata.provider, metadata.model, metadata.mime_type) == ("piper", "en_US-joe-medium", "audio/wav")


@pytest.mark.parametrize(
    ("request_fields", "message"),
    [
        ({"text": ""}, "text is empty"),
        ({"text": "Hi.", "voice": "nobody"}, "voice 'nobody' is not installed for piper"),
        ({"text": "Hi.", "provider": "espeak"}, "provider: unknown provider 'espeak'; valid: "),
    ],
)
async def test_speech_bad_input_is_invalid_argument(
    audio_channel: grpc.aio.Channel, request_fields: dict[str, str], message: str
) -> None:
    stub = audio_service_pb2_grpc.AudioServiceStub(audio_channel)
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await collect(stub.SynthesizeSpeech(audio_service_pb2.SynthesizeSpeechRequest(**request_fields)))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in error.value.details()


async def _slide(image_channel: grpc.aio.Channel) -> tuple[types_pb2.AssetMetadata, bytes]:
    stub = image_service_pb2_grpc.ImageServiceStub(image_channel)
    return await collect(stub.GenerateImage(image_service_pb2.GenerateImageRequest(scene=SCENE, output=OUTPUT_16_9)))


async def test_kenburns_clip_from_the_scene_image(
    image_channel: grpc.aio.Channel, video_channel: grpc.aio.Channel, work_root: Path, tmp_path: Path
) -> None:
    image_metadata, image = await _slide(image_channel)

    async def requests() -> AsyncIterator[video_service_pb2.GenerateClipRequest]:
        yield video_service_pb2.GenerateClipRequest(
            spec=video_service_pb2.ClipSpec(
                scene=SCENE,
                output=OUTPUT_16_9,
                duration_ms=2000,
                provider="kenburns",
                source_image_mime_type=image_metadata.mime_type,
            )
        )
        for chunk in iter_chunks(image):
            yield video_service_pb2.GenerateClipRequest(source_image_chunk=chunk)

    stub = video_service_pb2_grpc.VideoServiceStub(video_channel)
    metadata, clip = await collect(stub.GenerateClip(requests()))
    assert (metadata.mime_type, metadata.width, metadata.height, metadata.provider) == (
        "video/mp4",
        640,
        360,
        "kenburns",
    )
    assert abs(metadata.duration_ms - 2000) <= 50
    path = tmp_path / "clip.mp4"
    path.write_bytes(clip)
    assert path.stat().st_size == metadata.size_bytes
    assert list(work_root.iterdir()) == []


async def test_kenburns_without_an_image_is_failed_precondition(video_channel: grpc.aio.Channel) -> None:
    async def requests() -> AsyncIterator[video_service_pb2.GenerateClipRequest]:
        yield video_service_pb2.GenerateClipRequest(
            spec=video_service_pb2.ClipSpec(scene=SCENE, output=OUTPUT_16_9, provider="kenburns")
        )

    stub = video_service_pb2_grpc.VideoServiceStub(video_channel)
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await collect(stub.GenerateClip(requests()))
    assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "send the image" in error.value.details()


async def test_video_is_off_by_default(video_channel: grpc.aio.Channel) -> None:
    stub = video_service_pb2_grpc.VideoServiceStub(video_channel)
    response = await stub.ListVideoProviders(video_service_pb2.ListVideoProvidersRequest())
    assert response.providers.default_provider == ""
    assert "kenburns" in [p.name for p in response.providers.providers]
    assert response.providers.kind == types_pb2.MEDIA_KIND_VIDEO


async def test_a_stream_its_client_leaves_ends_without_errors(
    audio_channel: grpc.aio.Channel, caplog: pytest.LogCaptureFixture
) -> None:
    """A caller that stops reading after the first message (a browser's range request, a cancelled download): the
    server closes its stream in another context than it ran in, which must log nothing at ERROR (it logged
    opentelemetry's "Failed to detach context" and an unretrieved ValueError from resetting the render id)."""
    stub = audio_service_pb2_grpc.AudioServiceStub(audio_channel)
    text = "Check the ladder before you climb. Keep three points of contact. Face the ladder on the way down. " * 2
    for _ in range(2):
        call = stub.SynthesizeSpeech(audio_service_pb2.SynthesizeSpeechRequest(text=text))
        first = await call.read()
        assert first.HasField("metadata") and first.metadata.size_bytes > 256 * 1024  # more chunks were to follow
        call.cancel()
    gc.collect()
    await asyncio.sleep(0.5)  # the event loop's finaliser closes the abandoned generators
    assert [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR] == []
