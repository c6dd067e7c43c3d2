"""What an avatar provider takes and returns, and what every vendor shares: the deadline, the checked video."""

from __future__ import annotations

import asyncio
import io
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, TypeVar

import httpx

from services.common import jobs
from services.common.download import Downloaded
from services.common.errors import ProviderUnavailable
from services.common.media import probe
from services.common.providers import SPOKEN_CHARS_PER_SECOND, ProviderDescription

_LOGGER = logging.getLogger(__name__)

T = TypeVar("T")

# Longest a vendor render is waited for when the call set no deadline; vendors quote 5-15 minutes per video.
MAX_RENDER_SECONDS = 3600.0
MAX_VIDEO_BYTES = 512 * 1024 * 1024
DOWNLOAD_TIMEOUT_SECONDS = 300.0


@dataclass(frozen=True)
class AvatarScene:
    narration: str
    title: str = ""


@dataclass(frozen=True)
class AvatarJob:
    """One talking-head video of a whole script; every scene's narration is spoken by the same avatar."""

    scenes: tuple[AvatarScene, ...]
    width: int
    height: int
    # The ratio as written in vendor APIs: "16:9", "9:16" or "1:1".
    aspect: str
    # Vendor ids (background: a stock name, colour or URL); empty means the provider's configured default.
    avatar: str = ""
    voice: str = ""
    background: str = ""
    render_id: str = ""
    # When the caller stops waiting, as a time.monotonic() value; None when it set no deadline.
    deadline: float | None = None

    @property
    def title(self) -> str:
        """The name the video gets in the vendor's library: the first scene title, else the render id."""
        first = next((scene.title for scene in self.scenes if scene.title), "")
        return first or f"scenecast {self.render_id}".strip()


@dataclass(frozen=True)
class AvatarResult:
    """The vendor's MP4; the service measures its size and duration from the bytes."""

    data: bytes
    mime_type: str
    # The avatar the vendor rendered, for example "anna_costume1_cameraA".
    model: str
    estimated_cost_usd: float = 0.0


class AvatarProvider(Protocol):
    description: ClassVar[ProviderDescription]
    # Most scenes one video may have (the vendor's limit); the servicer rejects longer scripts before any spend.
    max_scenes: ClassVar[int]

    async def generate(self, job: AvatarJob) -> AvatarResult:
        """Orders the video, waits for it within job.deadline, downloads it; raises domain errors on failure."""
        ...


def spoken_seconds(job: AvatarJob) -> float:
    """How long the avatar will speak, guessed from the narration's length before any video exists."""
    return sum(len(scene.narration) for scene in job.scenes) / SPOKEN_CHARS_PER_SECOND


async def within_deadline(render: Callable[[], Awaitable[T]], deadline: float | None, vendor: str) -> T:
    """Runs `render` (order, poll, download) until the render's deadline, or MAX_RENDER_SECONDS without one.

    Nothing is ordered when no time is left. The work runs in the caller's task, so a cancelled call stops it at
    once (asyncio.CancelledError propagates) and no request goes out afterwards.
    """
    by_deadline = deadline is not None and deadline - time.monotonic() < MAX_RENDER_SECONDS
    limit = deadline - time.monotonic() if deadline is not None and by_deadline else MAX_RENDER_SECONDS
    if limit <= 0:
        raise ProviderUnavailable(f"{vendor}: no time was left before the render's deadline; no video was ordered")
    try:
        async with asyncio.timeout(limit):
            return await render()
    except TimeoutError:
        if by_deadline:
            raise ProviderUnavailable(f"{vendor}: the video did not finish before the render's deadline") from None
        raise ProviderUnavailable(f"{vendor}: the video did not finish within {limit:.0f} s") from None


class VendorVideo(jobs.RemoteJob[dict[str, Any], AvatarResult]):
    """One avatar video ordered over a vendor's JSON API; its pre-signed file must hold a picture and a voice."""

    max_bytes = MAX_VIDEO_BYTES
    download_seconds = DOWNLOAD_TIMEOUT_SECONDS

    def __init__(
        self,
        client: httpx.AsyncClient,
        body: dict[str, Any],
        avatar: str,
        poll_seconds: float,
        cost: Callable[[float], float],
        allow_private: bool,
    ) -> None:
        """`body` is the vendor's order, built before the job starts so a bad request fails before any spend."""
        self._client = client
        self._body = body
        self._avatar = avatar
        self._cost = cost
        self.poll_seconds = poll_seconds
        self.allow_private = allow_private

    def job_id(self, job: dict[str, Any]) -> str:
        return str(job.get("id") or "")

    def reported_seconds(self, job: dict[str, Any]) -> float | None:
        """The length the vendor reports for the finished video, when it does; else the file is measured."""
        return None

    async def check(self, job: dict[str, Any], output: Downloaded) -> AvatarResult:
        info = await asyncio.to_thread(probe, io.BytesIO(output.data), f"{self.provider} video")
        if not info.has_video:
            raise ProviderUnavailable(f"{self.provider} returned a video with no picture")
        if not info.has_audio:
            raise ProviderUnavailable(f"{self.provider} returned a video with no audio track")
        seconds = self.reported_seconds(job) or info.duration_ms / 1000
        return AvatarResult(output.data, "video/mp4", self._avatar, self._cost(seconds))
