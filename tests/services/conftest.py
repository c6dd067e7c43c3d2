"""Each service as a real gRPC server on a free loopback port, in this process, with its offline providers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from services.assembler.config import AssemblerSettings
from services.assembler.server import build as build_assembler
from services.audio.config import AudioSettings
from services.audio.server import build as build_audio
from services.common import retry
from services.common.server import Server
from services.image.config import ImageSettings
from services.image.server import build as build_image
from services.video.config import VideoSettings
from services.video.server import build as build_video


async def _serve(server: Server) -> AsyncIterator[grpc.aio.Channel]:
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            yield channel
    finally:  # also when the call inside failed: a server left running keeps the test process from exiting
        await server.stop(0)


@pytest.fixture
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keeps the retry policy's jittered backoff (up to 8 s) short, for tests of providers rather than of its shape."""
    monkeypatch.setattr(retry, "BACKOFF_MIN_SECONDS", 0.01)
    monkeypatch.setattr(retry, "BACKOFF_MAX_SECONDS", 0.05)


@pytest.fixture(scope="session")
def work_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Temp folder the video service and assembler must leave empty after every call."""
    return tmp_path_factory.mktemp("service-work")


@pytest.fixture(scope="session")
async def image_channel() -> AsyncIterator[grpc.aio.Channel]:
    async for channel in _serve(build_image(ImageSettings(listen_address="127.0.0.1:0"))):
        yield channel


@pytest.fixture(scope="session")
async def audio_channel() -> AsyncIterator[grpc.aio.Channel]:
    async for channel in _serve(build_audio(AudioSettings(listen_address="127.0.0.1:0"))):
        yield channel


@pytest.fixture(scope="session")
async def video_channel(work_root: Path) -> AsyncIterator[grpc.aio.Channel]:
    settings = VideoSettings(listen_address="127.0.0.1:0", video_tmp_dir=str(work_root))
    async for channel in _serve(build_video(settings)):
        yield channel


@pytest.fixture(scope="session")
async def assembler_channel(work_root: Path) -> AsyncIterator[grpc.aio.Channel]:
    settings = AssemblerSettings(listen_address="127.0.0.1:0", assembler_tmp_dir=str(work_root))
    async for channel in _serve(build_assembler(settings)):
        yield channel
