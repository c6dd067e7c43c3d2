"""SELFHOSTED_VIDEO_URL is an http(s) URL, checked at start-up, and clips are fetched only from its origin (or the
origins SELFHOSTED_VIDEO_OUTPUT_ORIGINS adds): a server answer pointing at the same host on another port is refused.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator

import grpc
import pytest
from pydantic import ValidationError
from scenecast.v1 import types_pb2, video_service_pb2, video_service_pb2_grpc

from services.video.config import VideoSettings
from services.video.providers.selfhosted import SelfHostedSettings
from services.video.server import build as build_video
from tests.fakes.video_servers import FakeCogVideo
from tests.services.conftest import _serve

SPEC = video_service_pb2.ClipSpec(
    render_id="r-origin",
    scene=types_pb2.Scene(id="s1", narration="Check the ladder.", visual_prompt="A ladder.", title="Ladders"),
    output=types_pb2.OutputSettings(
        aspect_ratio=types_pb2.ASPECT_RATIO_16_9, height=360, fps=24, quality=types_pb2.QUALITY_STANDARD
    ),
    duration_ms=1000,
    provider="selfhosted",
    no_cache=True,
)
BAD_URLS = ["file:///etc/passwd", "gopher://gpu-box:70/_", "ftp://gpu-box/", "http://", "http://gpu-box:port"]


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[FakeCogVideo, FakeCogVideo]]:
    """The configured Cog server, and another server on the same host (127.0.0.1) on another port."""
    with FakeCogVideo() as cog, FakeCogVideo() as other:
        yield cog, other  # type: ignore[misc]


@pytest.fixture
def cog(servers: tuple[FakeCogVideo, FakeCogVideo]) -> FakeCogVideo:
    cog, other = servers
    cog.reset()
    other.reset()
    cog.url_output, cog.files_on = True, other
    return cog


async def _clip(cog: FakeCogVideo, **changes: str) -> list[video_service_pb2.GenerateClipResponse]:
    """One clip from a video service started with the Cog server's settings (`changes` override them)."""
    settings = SelfHostedSettings(**{"selfhosted_video_url": cog.base_url, "selfhosted_video_api": "cog", **changes})
    server = build_video(VideoSettings(listen_address="127.0.0.1:0"), [settings])

    async def requests() -> AsyncIterator[video_service_pb2.GenerateClipRequest]:
        yield video_service_pb2.GenerateClipRequest(spec=SPEC)

    async with contextlib.asynccontextmanager(_serve)(server) as channel:
        stub = video_service_pb2_grpc.VideoServiceStub(channel)
        return [response async for response in stub.GenerateClip(requests(), timeout=60)]


async def test_an_output_on_another_port_of_the_same_host_is_refused(cog: FakeCogVideo) -> None:
    other = cog.files_on
    assert other is not None and other.port != cog.port
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await _clip(cog)
    assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error.value.details() == (
        f"provider output '{other.base_url}/files/{next(iter(cog.predictions))}.mp4' is not on an allowed origin "
        f"({cog.base_url}); refused; add the origin to SELFHOSTED_VIDEO_OUTPUT_ORIGINS to allow it"
    )
    assert other.requests == []


async def test_an_origin_on_the_allow_list_is_fetched(cog: FakeCogVideo) -> None:
    other = cog.files_on
    assert other is not None
    responses = await _clip(cog, selfhosted_video_output_origins=f" https://cdn.example , {other.base_url}/ ")
    assert responses[0].metadata.mime_type == "video/mp4"
    assert [request.path for request in other.requests] == [f"/files/{next(iter(cog.predictions))}.mp4"]


async def test_the_configured_origin_itself_is_fetched(cog: FakeCogVideo) -> None:
    cog.files_on = None
    responses = await _clip(cog)
    assert responses[0].metadata.mime_type == "video/mp4"
    assert len(cog.requests_to("/files/", "GET")) == 1


@pytest.mark.parametrize("url", BAD_URLS)
def test_a_url_that_is_not_http_is_refused_at_start_up(url: str) -> None:
    with pytest.raises(ValidationError) as error:
        SelfHostedSettings(selfhosted_video_url=url)
    assert "SELFHOSTED_VIDEO_URL" in str(error.value)


def test_a_bad_allow_list_entry_is_refused_at_start_up() -> None:
    with pytest.raises(ValidationError) as error:
        SelfHostedSettings(selfhosted_video_url="http://gpu-box:5000", selfhosted_video_output_origins="file:///tmp")
    assert "SELFHOSTED_VIDEO_OUTPUT_ORIGINS: 'file:///tmp' is not an origin" in str(error.value)


def test_the_video_service_does_not_start_with_a_file_url() -> None:
    env = {**os.environ, "SELFHOSTED_VIDEO_URL": "file:///etc/passwd", "LISTEN_ADDRESS": "127.0.0.1:0"}
    started = subprocess.run(
        [sys.executable, "-m", "services.video"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert started.returncode != 0
    assert "SELFHOSTED_VIDEO_URL must be an http:// or https:// URL such as http://gpu-box:5000 (got 'file')" in (
        started.stderr
    )
