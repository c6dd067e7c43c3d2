"""A clip's source image is checked from its header, never decoded in the video service: format, frames and size."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator

import grpc
import pytest
from PIL import Image
from scenecast.v1 import types_pb2, video_service_pb2, video_service_pb2_grpc

from services.common.chunks import iter_chunks
from tests.services.test_media_services import OUTPUT_16_9, SCENE, collect


def _image(kind: str, frames: int = 1, size: tuple[int, int] = (64, 36)) -> bytes:
    pictures = [Image.new("RGB", size, (40 * index, 90, 160)) for index in range(frames)]
    buffer = io.BytesIO()
    pictures[0].save(buffer, kind, save_all=frames > 1, append_images=pictures[1:])
    return buffer.getvalue()


async def _clip(channel: grpc.aio.Channel, image: bytes) -> types_pb2.AssetMetadata:
    async def requests() -> AsyncIterator[video_service_pb2.GenerateClipRequest]:
        spec = video_service_pb2.ClipSpec(scene=SCENE, output=OUTPUT_16_9, provider="kenburns", duration_ms=200)
        yield video_service_pb2.GenerateClipRequest(spec=spec)
        for chunk in iter_chunks(image):
            yield video_service_pb2.GenerateClipRequest(source_image_chunk=chunk)

    metadata, clip = await collect(video_service_pb2_grpc.VideoServiceStub(channel).GenerateClip(requests()))
    assert len(clip) == metadata.size_bytes
    return metadata


@pytest.mark.parametrize(
    ("image", "details"),
    [
        (_image("GIF", frames=2), "source_image has 2 frames; send one still picture as PNG, JPEG or WebP"),
        (_image("BMP"), "source_image is a BMP image; send it as PNG, JPEG or WebP"),
        (_image("PNG")[:40], "source_image is not an image; send the scene's PNG, JPEG or WebP"),
    ],
    ids=["animated-gif", "bmp", "truncated-png"],
)
async def test_a_source_image_that_is_not_a_still_png_jpeg_or_webp_is_refused(
    video_channel: grpc.aio.Channel, image: bytes, details: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await _clip(video_channel, image)
    assert (error.value.code(), error.value.details()) == (grpc.StatusCode.INVALID_ARGUMENT, details)


@pytest.mark.parametrize("kind", ["PNG", "JPEG", "WEBP"])
async def test_a_still_png_jpeg_or_webp_is_taken(video_channel: grpc.aio.Channel, kind: str) -> None:
    metadata = await _clip(video_channel, _image(kind))
    assert (metadata.mime_type, metadata.width, metadata.height) == ("video/mp4", 640, 360)
