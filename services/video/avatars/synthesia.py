"""Synthesia API v2: one video per script (a Synthesia scene per scenecast scene), ordered once, polled, downloaded.

Every Synthesia request and response shape lives in this module.
"""

from __future__ import annotations

import uuid
from typing import Any, ClassVar

import httpx
from pydantic import Field, SecretStr

from services.common import jobs
from services.common.download import DownloadSettings
from services.common.errors import (
    FailedPrecondition,
    InvalidArgument,
    JobFailed,
    ProviderUnavailable,
    RateLimited,
    ScenecastError,
)
from services.common.providers import Price, Provider, ProviderDescription
from services.common.retry import retry_after_seconds
from services.video.avatars.base import (
    AvatarJob,
    AvatarResult,
    VendorVideo,
    spoken_seconds,
    within_deadline,
)

NAME = "synthesia"
KEY_FIELD = "synthesia_api_key"
DEFAULT_BASE_URL = "https://api.synthesia.io"
# A stock avatar and background from Synthesia's documentation.
DEFAULT_AVATAR = "anna_costume1_cameraA"
DEFAULT_BACKGROUND = "off_white"
MAX_SCENES = 25
# Synthesia publishes no per-minute API price (providers.md): an assumed rate, set to your plan's.
DEFAULT_USD_PER_MINUTE = 3.0
REQUEST_TIMEOUT = httpx.Timeout(30.0, connect=10.0)
# Videos a page of the list holds (its maximum), and pages read when looking for an order whose answer was lost.
LIST_LIMIT = 100
FIND_PAGES = 5

# `approved` (after moderation) and `in_progress` are still on their way.
_ENDED = frozenset({"complete", "error", "rejected", "deleted"})
# Where a failed video might say why: the v2 spec documents no such field (unconfirmed), so several are tried.
_REASON_FIELDS = ("error", "errorMessage", "reason", "rejectionReason", "context")


class SynthesiaSettings(DownloadSettings):
    # The API key (sent bare, without "Bearer"); a request without it fails with FAILED_PRECONDITION naming it.
    synthesia_api_key: SecretStr = SecretStr("")
    synthesia_base_url: str = DEFAULT_BASE_URL
    # Avatar, background (a stock name, an asset id or a URL) and voice used when a request names none.
    synthesia_avatar: str = DEFAULT_AVATAR
    synthesia_background: str = DEFAULT_BACKGROUND
    synthesia_voice: str = ""
    # Free, watermarked test videos.
    synthesia_test: bool = False
    # First wait between status checks, in seconds; it grows to 15 times this.
    synthesia_poll_seconds: float = Field(default=2.0, gt=0)
    # What a minute of video costs on your plan, in USD.
    synthesia_usd_per_minute: float = Field(default=DEFAULT_USD_PER_MINUTE, ge=0)


class SynthesiaProvider(Provider[SynthesiaSettings, AvatarJob]):
    description = ProviderDescription(
        name=NAME,
        description="Synthesia avatar videos (API v2, Creator plan or higher); SYNTHESIA_AVATAR picks the avatar",
        offline=False,
    )
    settings_class = SynthesiaSettings
    required_settings = (KEY_FIELD,)
    output_settings = (
        "synthesia_base_url",
        "synthesia_avatar",
        "synthesia_background",
        "synthesia_voice",
        "synthesia_test",
    )
    max_scenes: ClassVar[int] = MAX_SCENES

    @classmethod
    def prices(cls, settings: SynthesiaSettings) -> tuple[Price, ...]:
        note = "assumed; set SYNTHESIA_USD_PER_MINUTE to your plan's rate"
        return (Price("synthesia avatar", "minute", settings.synthesia_usd_per_minute, note),)

    @classmethod
    def estimate_usd(cls, settings: SynthesiaSettings, job: AvatarJob) -> float:
        return settings.synthesia_usd_per_minute * spoken_seconds(job) / 60

    async def generate(self, job: AvatarJob) -> AvatarResult:
        settings = self.settings
        key = settings.secret(KEY_FIELD, NAME)
        avatar = job.avatar or settings.synthesia_avatar
        body = _create_body(job, avatar, settings)
        async with httpx.AsyncClient(
            base_url=settings.synthesia_base_url,
            headers={"Authorization": key},  # the bare key: Synthesia takes no "Bearer" prefix
            timeout=REQUEST_TIMEOUT,
        ) as client:
            video = _SynthesiaVideo(
                client,
                body,
                avatar,
                settings.synthesia_poll_seconds,
                lambda seconds: settings.synthesia_usd_per_minute * seconds / 60,
                settings.allow_private_output_urls,
            )
            return await within_deadline(lambda: jobs.run(video), job.deadline, NAME)


class _SynthesiaVideo(VendorVideo):
    """A video ordered with a callbackId of its own, by which the video list shows whether an order arrived."""

    label = "Synthesia"
    provider = NAME
    can_find = True

    async def create(self) -> dict[str, Any]:
        try:
            response = await self._client.post("/v2/videos", json=self._body)
        except httpx.HTTPError as error:
            unreachable = ProviderUnavailable(f"Synthesia could not be reached (POST /v2/videos): {error!r}")
            raise jobs.create_failure(unreachable, cause=error) from error
        if not response.is_success:
            raise jobs.create_failure(_mapped(response), status=response.status_code)
        video = _answer(response, "POST", "/v2/videos")
        if not self.job_id(video):
            raise JobFailed("Synthesia accepted the video but answered without its id; look for it in the dashboard")
        return video

    async def find(self) -> dict[str, Any] | None:
        """The listed video that carries this order's callbackId; None once the whole list was read without it."""
        offset = 0
        for _ in range(FIND_PAGES):
            page = await _call(self._client, "GET", "/v2/videos", params={"limit": LIST_LIMIT, "offset": offset})
            videos = page.get("videos") or []
            found = next((v for v in videos if isinstance(v, dict) and v.get("callbackId") == self._key), None)
            if found is not None:
                return found
            next_offset = page.get("nextOffset")
            if not videos or not isinstance(next_offset, int) or next_offset <= offset:
                return None
            offset = next_offset
        raise ProviderUnavailable(f"more than {FIND_PAGES * LIST_LIMIT} videos are listed")

    @property
    def _key(self) -> str:
        return str(self._body["callbackId"])

    def ended(self, job: dict[str, Any]) -> bool:
        return job.get("status") in _ENDED

    async def status(self, job: dict[str, Any]) -> dict[str, Any]:
        video_id = self.job_id(job)
        try:
            return await _call(self._client, "GET", f"/v2/videos/{video_id}")
        except InvalidArgument as error:  # a 404: the video was deleted while it rendered
            raise jobs.JobEnded(ProviderUnavailable(f"Synthesia video {video_id} is gone: {error}")) from error

    def output_url(self, job: dict[str, Any]) -> str:
        return _download_url(job, self.job_id(job))

    def reported_seconds(self, job: dict[str, Any]) -> float | None:
        return _duration_seconds(job.get("duration"))


def _create_body(job: AvatarJob, avatar: str, settings: SynthesiaSettings) -> dict[str, Any]:
    background = job.background or settings.synthesia_background
    voice = job.voice or settings.synthesia_voice
    scene_settings: dict[str, Any] = {"avatar": avatar, "background": background}
    if voice:
        scene_settings["avatarSettings"] = {"voice": voice}
    body: dict[str, Any] = {
        "test": settings.synthesia_test,
        "title": job.title,
        "visibility": "private",
        "aspectRatio": job.aspect,
        "input": [{"scriptText": scene.narration, **scene_settings} for scene in job.scenes],
    }
    # Ours to choose, unique per order: the video list shows by it whether an order whose answer was lost arrived.
    body["callbackId"] = f"scenecast:{job.render_id}:{uuid.uuid4().hex}"
    return body


async def _call(client: httpx.AsyncClient, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
    """One API request and its JSON answer; every failure becomes a domain error here, and nowhere else."""
    try:
        response = await client.request(method, path, **kwargs)
    except httpx.HTTPError as error:
        raise ProviderUnavailable(f"Synthesia could not be reached ({method} {path}): {error!r}") from error
    if response.is_success:
        return _answer(response, method, path)
    raise _mapped(response)


def _answer(response: httpx.Response, method: str, path: str) -> dict[str, Any]:
    try:
        answer = response.json()
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        raise ProviderUnavailable(f"Synthesia answered {method} {path} with something other than a JSON object")
    return answer


def _mapped(response: httpx.Response) -> ScenecastError:
    status = response.status_code
    message = _error_message(response)
    if status in (401, 403):
        return FailedPrecondition(f"Synthesia rejected {KEY_FIELD.upper()} ({status}: {message}); set a valid API key")
    if status == 429:
        return RateLimited(
            f"Synthesia rate limit (429): {message}", retry_after_seconds(response.headers.get("retry-after"))
        )
    if status >= 500:
        return ProviderUnavailable(f"Synthesia failed ({status}): {message}")
    return InvalidArgument(f"Synthesia refused the video ({status}): {message}")


def _error_message(response: httpx.Response) -> str:
    """Synthesia's own words: errors look like {"error": "...", "context": ...}."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:300] or response.reason_phrase
    if not isinstance(body, dict):
        return str(body)[:300]
    error, context = body.get("error"), body.get("context")
    return "; ".join(str(part) for part in (error, context) if part) or str(body)[:300]


def _download_url(video: dict[str, Any], video_id: str) -> str:
    status = video.get("status")
    if status == "complete":
        url = video.get("download")
        if not isinstance(url, str) or not url:
            raise ProviderUnavailable(f"Synthesia marked video {video_id} complete without a download link")
        return url
    reason = next((str(video[name]) for name in _REASON_FIELDS if video.get(name)), "no reason given")
    if status == "rejected":
        # Moderation refused the script or avatar: ordering the same video again would be refused again.
        raise InvalidArgument(f"Synthesia rejected video {video_id}: {reason}; change the narration or the avatar")
    raise ProviderUnavailable(f"Synthesia video {video_id} ended as {status!r}: {reason}")


def _duration_seconds(value: Any) -> float | None:
    """The video's length from `duration`, which the spec types as a string of unconfirmed format.

    Accepts a number of seconds ("12.5", 12.5) or clock notation ("0:00:12.500000", "00:12"); None when absent or
    unreadable, so the caller measures the file instead.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    parts = str(value).strip().split(":")
    if len(parts) > 3:
        return None
    try:
        seconds = sum(float(part) * 60**position for position, part in enumerate(reversed(parts)))
    except ValueError:
        return None
    return seconds if seconds > 0 else None
