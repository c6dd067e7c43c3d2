"""HeyGen avatar videos: the v3 API (`POST /v3/videos`, `GET /v3/videos/{id}`), or v2 behind HEYGEN_API_VERSION=v2.

v3 takes one avatar and one script per video, and an Idempotency-Key that makes a re-sent order safe. v2 (supported
by HeyGen until 2026-10-31) takes a video input per scene and is polled through v1 status; it has no idempotency key
and no job list we could search, so an order whose answer is lost is reported, never sent again. Every HeyGen
request and response shape lives in this module (and HEYGEN_BASE_URL points it anywhere).
"""

from __future__ import annotations

import math
import urllib.parse
import uuid
from typing import Any, ClassVar, Literal

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

NAME = "heygen"
KEY_FIELD = "heygen_api_key"
DEFAULT_BASE_URL = "https://api.heygen.com"
DEFAULT_BACKGROUND = "#FAFAFA"
MAX_SCENES = 50
# v3 takes one script of at most this many characters; the scenes' narrations are joined into it.
V3_MAX_SCRIPT_CHARS = 5000
# v3 renders at 720p or 1080p (4k costs more and is never needed: the assembler scales up); v2 takes any size up
# to 1080p on common plans.
V3_RESOLUTIONS = ((720, "720p"), (1080, "1080p"))
MAX_SIDE = 1920
# The code HeyGen gives a v2 video above the plan's resolution.
PLAN_RESOLUTION_CODE = 40010
# v3 bills the API wallet per output second: $0.0667 for a digital twin or studio avatar with Avatar IV at 720p or
# 1080p (a photo avatar is $0.05); the higher rate, since the avatar's kind is not known before the video exists.
V3_USD_PER_SECOND = 0.0667
# v2 bills plan credits: 2 a minute for a video avatar, per started 30 s; a credit costs $0.99 on the Pro plan.
V2_USD_PER_CREDIT = 0.99
V2_CREDITS_PER_MINUTE = 2
REQUEST_TIMEOUT = httpx.Timeout(30.0, connect=10.0)

# `pending`, `processing` and the unconfirmed `waiting` are still on their way.
_ENDED = frozenset({"completed", "failed"})
# What v1 answers carry as `code` on success.
_V1_SUCCESS = 100


class HeyGenSettings(DownloadSettings):
    # The API key (X-Api-Key, billed to the API wallet); a request without it fails with FAILED_PRECONDITION.
    heygen_api_key: SecretStr = SecretStr("")
    heygen_base_url: str = DEFAULT_BASE_URL
    # "v3" (the default), or "v2": HeyGen's legacy API (supported until 2026-10-31), for avatars that need it.
    heygen_api_version: Literal["v3", "v2"] = "v3"
    # HeyGen has no stock default we could rely on: the account's avatar and voice, unless a request names them.
    heygen_avatar_id: str = ""
    heygen_voice_id: str = ""
    # A colour ("#FAFAFA") or an image or video URL.
    heygen_background: str = DEFAULT_BACKGROUND
    # Free, watermarked test videos: v2 only (v3 has none, and refuses the setting rather than bill silently).
    heygen_test: bool = False
    # First wait between status checks, in seconds; it grows to 15 times this.
    heygen_poll_seconds: float = Field(default=2.0, gt=0)


class HeyGenProvider(Provider[HeyGenSettings, AvatarJob]):
    description = ProviderDescription(
        name=NAME,
        description=(
            "HeyGen avatar videos (v3 API; HEYGEN_API_VERSION=v2 for the legacy one); needs HEYGEN_AVATAR_ID and "
            "HEYGEN_VOICE_ID unless the request names them"
        ),
        offline=False,
    )
    settings_class = HeyGenSettings
    required_settings = (KEY_FIELD,)
    output_settings = (
        "heygen_base_url",
        "heygen_api_version",
        "heygen_avatar_id",
        "heygen_voice_id",
        "heygen_background",
        "heygen_test",
    )
    max_scenes: ClassVar[int] = MAX_SCENES

    @classmethod
    def prices(cls, settings: HeyGenSettings) -> tuple[Price, ...]:
        if settings.heygen_api_version == "v3":
            note = "Avatar IV at 720p or 1080p, digital twin or studio avatar (a photo avatar costs $0.05)"
            return (Price("heygen v3 avatar video", "output second", V3_USD_PER_SECOND, note),)
        note = f"{V2_CREDITS_PER_MINUTE} credits a minute at ${V2_USD_PER_CREDIT} a credit (Pro plan), billed per 30 s"
        return (Price("heygen v2 video avatar", "minute", V2_CREDITS_PER_MINUTE * V2_USD_PER_CREDIT, note),)

    @classmethod
    def estimate_usd(cls, settings: HeyGenSettings, job: AvatarJob) -> float:
        return heygen_cost(settings.heygen_api_version, spoken_seconds(job))

    async def generate(self, job: AvatarJob) -> AvatarResult:
        settings = self.settings
        key = settings.secret(KEY_FIELD, NAME)
        avatar = job.avatar or _configured(settings.heygen_avatar_id, "HEYGEN_AVATAR_ID", "avatar.avatar")
        voice = job.voice or _configured(settings.heygen_voice_id, "HEYGEN_VOICE_ID", "avatar.voice")
        background = _background(job.background or settings.heygen_background)
        version = settings.heygen_api_version
        kind = _V3Video if version == "v3" else _V2Video
        body = kind.body(job, avatar, voice, background, settings.heygen_test)
        async with httpx.AsyncClient(
            base_url=settings.heygen_base_url, headers={"X-Api-Key": key}, timeout=REQUEST_TIMEOUT
        ) as client:
            video = kind(
                client,
                body,
                avatar,
                settings.heygen_poll_seconds,
                lambda seconds: heygen_cost(version, seconds),
                settings.allow_private_output_urls,
            )
            return await within_deadline(lambda: jobs.run(video), job.deadline, NAME)


def heygen_cost(version: str, seconds: float) -> float:
    """v3: per output second; v2: credits per started 30 seconds."""
    if version == "v3":
        return V3_USD_PER_SECOND * seconds
    return max(1, math.ceil(seconds / 30)) * V2_CREDITS_PER_MINUTE / 2 * V2_USD_PER_CREDIT


class _HeyGenVideo(VendorVideo):
    """What both API versions share: the answer's `data`, its status values, the error mapping."""

    provider = NAME

    @staticmethod
    def body(job: AvatarJob, avatar: str, voice: str, background: dict[str, str], test: bool) -> dict[str, Any]:
        raise NotImplementedError

    async def _create(self, path: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
        """POSTs the order once; the video's id, as `{"id": ...}`, with the create's answer."""
        try:
            response = await self._client.post(path, json=self._body, headers=headers)
        except httpx.HTTPError as error:
            unreachable = ProviderUnavailable(f"{self.label} could not be reached (POST {path}): {error!r}")
            raise jobs.create_failure(unreachable, cause=error) from error
        try:
            created = _data(_answer(response, "POST", path))
        except ScenecastError as error:
            if response.status_code == 409:  # v3: the same key's first order is still being taken
                raise jobs.CreateUnknown(
                    ProviderUnavailable(f"{self.label} is still taking the order: {error}")
                ) from error
            raise jobs.create_failure(error, status=response.status_code) from error
        video_id = created.get("video_id")
        if not isinstance(video_id, str) or not video_id:
            raise JobFailed(f"{self.label} accepted the video but answered without its video_id")
        return {"status": "pending", **created, "id": video_id}

    def ended(self, job: dict[str, Any]) -> bool:
        return job.get("status") in _ENDED

    async def _status(self, path: str, **params: str) -> dict[str, Any]:
        try:
            response = await self._client.get(path, params=params)
        except httpx.HTTPError as error:
            raise ProviderUnavailable(f"{self.label} could not be reached (GET {path}): {error!r}") from error
        return _data(_answer(response, "GET", path))

    def output_url(self, job: dict[str, Any]) -> str:
        video_id = self.job_id(job)
        if job.get("status") == "completed":
            url = job.get("video_url")
            if not isinstance(url, str) or not url:
                raise ProviderUnavailable(f"{self.label} marked video {video_id} completed without a video_url")
            return url
        code, reason = self._failure(job)
        raise _mapped(None, code, f"video {video_id}: {reason or 'no reason given'}")

    def _failure(self, job: dict[str, Any]) -> tuple[Any, str]:
        raise NotImplementedError

    def reported_seconds(self, job: dict[str, Any]) -> float | None:
        duration = job.get("duration")
        if isinstance(duration, (int, float)) and not isinstance(duration, bool) and duration > 0:
            return float(duration)
        return None


class _V3Video(_HeyGenVideo):
    """v3: one script per video; the order's Idempotency-Key lets a lost answer be asked for again safely."""

    label = "HeyGen (v3)"
    idempotent_create = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # HeyGen replays the first answer to any order under this key for 24 h: one key per order, never per attempt.
        self._key = f"scenecast-{uuid.uuid4().hex}"

    @staticmethod
    def body(job: AvatarJob, avatar: str, voice: str, background: dict[str, str], test: bool) -> dict[str, Any]:
        if test:
            raise FailedPrecondition(
                "HEYGEN_TEST asks for a free test video, which HeyGen's v3 API does not offer (its videos are "
                "billed); unset HEYGEN_TEST, or set HEYGEN_API_VERSION=v2"
            )
        # Paragraphs: the voice pauses between scenes as it does between paragraphs.
        script = "\n\n".join(scene.narration for scene in job.scenes)
        if len(script) > V3_MAX_SCRIPT_CHARS:
            raise InvalidArgument(
                f"scenes: the narration is {len(script)} characters; a HeyGen v3 video speaks at most "
                f"{V3_MAX_SCRIPT_CHARS}, so shorten the script or split it into several renders"
            )
        short_side = min(job.width, job.height)
        resolution = next((name for side, name in V3_RESOLUTIONS if short_side <= side), V3_RESOLUTIONS[-1][1])
        body: dict[str, Any] = {
            "type": "avatar",
            "avatar_id": avatar,
            "script": script,
            "voice_id": voice,
            "title": job.title,
            "resolution": resolution,
            "aspect_ratio": job.aspect,
            # The v2 background shape; v3's documentation does not spell its own out (unconfirmed).
            "background": background,
        }
        if job.render_id:
            body["callback_id"] = job.render_id
        return body

    async def create(self) -> dict[str, Any]:
        return await self._create("/v3/videos", headers={"Idempotency-Key": self._key})

    async def status(self, job: dict[str, Any]) -> dict[str, Any]:
        return {**job, **await self._status(f"/v3/videos/{self.job_id(job)}")}

    def _failure(self, job: dict[str, Any]) -> tuple[Any, str]:
        return job.get("failure_code"), str(job.get("failure_message") or "")


class _V2Video(_HeyGenVideo):
    """v2: a video input per scene, polled through v1 status; no key, so a lost answer is never re-sent."""

    label = "HeyGen (v2)"

    @staticmethod
    def body(job: AvatarJob, avatar: str, voice: str, background: dict[str, str], test: bool) -> dict[str, Any]:
        body: dict[str, Any] = {
            "video_inputs": [
                {
                    "character": {"type": "avatar", "avatar_id": avatar, "avatar_style": "normal"},
                    "voice": {"type": "text", "voice_id": voice, "input_text": scene.narration},
                    "background": background,
                }
                for scene in job.scenes
            ],
            "dimension": _dimension(job.width, job.height),
            "test": test,
            "title": job.title,
        }
        if job.render_id:
            body["callback_id"] = job.render_id
        return body

    async def create(self) -> dict[str, Any]:
        return await self._create("/v2/video/generate")

    async def status(self, job: dict[str, Any]) -> dict[str, Any]:
        return {**job, **await self._status("/v1/video_status.get", video_id=self.job_id(job))}

    def _failure(self, job: dict[str, Any]) -> tuple[Any, str]:
        error = job.get("error") if isinstance(job.get("error"), dict) else {}
        return error.get("code"), "; ".join(str(error[name]) for name in ("message", "detail") if error.get(name))


def _configured(value: str, variable: str, field: str) -> str:
    if not value:
        raise FailedPrecondition(f"provider '{NAME}' needs {variable} set on the service, or {field} in the request")
    return value


def _background(value: str) -> dict[str, str]:
    """A colour ("#FAFAFA"), or an image or video URL, in HeyGen's background shape."""
    if value.startswith(("https://", "http://")):
        is_video = urllib.parse.urlsplit(value).path.lower().endswith((".mp4", ".webm", ".mov"))
        return {"type": "video" if is_video else "image", "url": value}
    return {"type": "color", "value": value}


def _dimension(width: int, height: int) -> dict[str, int]:
    """The output size, scaled down to at most MAX_SIDE on its long side, kept even."""
    scale = min(1.0, MAX_SIDE / max(width, height))
    return {"width": max(2, round(width * scale / 2) * 2), "height": max(2, round(height * scale / 2) * 2)}


def _answer(response: httpx.Response, method: str, path: str) -> dict[str, Any]:
    """The JSON answer; every failure becomes a domain error here (_mapped), and nowhere else."""
    try:
        answer = response.json()
    except ValueError:
        answer = None
    code, message = _problem(answer)
    if response.is_success and message is None and isinstance(answer, dict):
        return answer
    if response.is_success and message is None:
        raise ProviderUnavailable(f"HeyGen answered {method} {path} with something other than a JSON object")
    raise _mapped(
        response.status_code,
        code,
        message or response.text[:300] or response.reason_phrase,
        retry_after_seconds(response.headers.get("retry-after")),
    )


def _problem(answer: Any) -> tuple[Any, str | None]:
    """The error code and message of an answer: v2 and v3 say {"error": {code, message}}, v1 {"code": N, "message"}."""
    if not isinstance(answer, dict):
        return None, None
    error = answer.get("error")
    if isinstance(error, dict):
        return error.get("code"), str(error.get("message") or error.get("detail") or error.get("code"))
    if isinstance(error, str) and error:
        return None, error
    code = answer.get("code")
    if code is not None and code != _V1_SUCCESS:
        return code, str(answer.get("message") or code)
    return None, None


def _mapped(status: int | None, code: Any, message: str, wait: float | None = None) -> ScenecastError:
    """An HTTP failure (status) or a failed render (status None) as the domain error the caller can act on."""
    if str(code) == str(PLAN_RESOLUTION_CODE):
        return FailedPrecondition(
            f"HeyGen refused the resolution for this plan ({code}: {message}); lower output.height or upgrade the plan"
        )
    if status is None:
        return ProviderUnavailable(f"HeyGen failed to render the {message}" + (f" (code {code})" if code else ""))
    label = f"{status}, code {code}" if code else str(status)
    if status in (401, 403):
        return FailedPrecondition(f"HeyGen rejected {KEY_FIELD.upper()} ({label}: {message}); set a valid API key")
    if status == 402:
        return FailedPrecondition(f"HeyGen's API wallet is empty ({label}: {message}); add credit to the API wallet")
    if status == 429:
        return RateLimited(f"HeyGen rate limit ({label}): {message}", wait)
    if status >= 500:
        return ProviderUnavailable(f"HeyGen failed ({label}): {message}")
    # Other 4xx, and a 2xx that carries an error: the request itself was refused, and would be again.
    return InvalidArgument(f"HeyGen refused the video ({label}): {message}")


def _data(answer: dict[str, Any]) -> dict[str, Any]:
    data = answer.get("data")
    return data if isinstance(data, dict) else {}
