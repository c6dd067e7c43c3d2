"""What an avatar provider takes and returns, and the waiting (deadline, status polling) every vendor shares."""

from __future__ import annotations

import asyncio
import io
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import ClassVar, Protocol, TypeVar

import httpx

from services.common.errors import InvalidArgument, ProviderUnavailable
from services.common.media import probe
from services.common.providers import ProviderDescription

_LOGGER = logging.getLogger(__name__)

T = TypeVar("T")

# Longest a vendor render is waited for when the call set no deadline; vendors quote 5-15 minutes per video.
MAX_RENDER_SECONDS = 3600.0
# Status polls start at the vendor's interval and double up to this multiple of it (2 s grows to 30 s).
POLL_BACKOFF_FACTOR = 15


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


def env_flag(variable: str) -> bool:
    return os.environ.get(variable, "").strip().lower() in ("1", "true", "yes", "on")


def env_seconds(variable: str, default: float) -> float:
    """A positive number of seconds from the environment (tests shorten poll intervals this way)."""
    try:
        value = float(os.environ.get(variable) or default)
    except ValueError:
        return default
    return value if value > 0 else default


def retry_after(response: httpx.Response) -> float | None:
    """The Retry-After header in seconds; an HTTP date is ignored (our own backoff applies instead)."""
    value = response.headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


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


async def poll_status(
    fetch: Callable[[], Awaitable[T]], finished: Callable[[T], bool], *, first_delay: float, label: str
) -> T:
    """Fetches a job's status with exponential backoff until `finished` says it ended (well or badly).

    A status check that fails transiently (ProviderUnavailable: a 5xx, a 429, a reset or timeout) does not end the
    wait: the video is still rendering at the vendor, and giving up would make the servicer order and pay for it
    again, so the next check simply comes later (after Retry-After, when given). Other errors (a revoked key, an
    unknown video) end it. The caller's deadline (within_deadline) bounds the loop.
    """
    delay = first_delay
    while True:
        await asyncio.sleep(delay)
        delay = min(delay * 2, first_delay * POLL_BACKOFF_FACTOR)
        try:
            status = await fetch()
        except ProviderUnavailable as error:
            _LOGGER.info("%s: status check failed (%s); checking again", label, error)
            if error.retry_after is not None:
                delay = max(delay, error.retry_after)
            continue
        if finished(status):
            return status


async def measured_seconds(data: bytes, vendor: str) -> float:
    """The length of a downloaded video, decoded from its audio; a file that does not decode is worth a new order."""
    try:
        info = await asyncio.to_thread(probe, io.BytesIO(data), f"{vendor} video")
    except InvalidArgument as error:
        raise ProviderUnavailable(f"{vendor} returned a video that does not decode: {error}") from error
    return info.duration_ms / 1000
