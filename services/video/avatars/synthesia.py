"""Synthesia API v2: one video per script (a Synthesia scene per scenecast scene), polled until rendered, downloaded.

Every Synthesia request and response shape lives in this module.
"""

from __future__ import annotations

import logging
import os
from typing import Any, ClassVar

import httpx

from services.common import pricing
from services.common.download import fetch_output
from services.common.errors import (
    FailedPrecondition,
    InvalidArgument,
    ProviderUnavailable,
    RateLimited,
    ScenecastError,
)
from services.common.providers import ProviderDescription, require_env
from services.video.avatars.base import (
    AvatarJob,
    AvatarResult,
    env_flag,
    env_seconds,
    measured_seconds,
    poll_status,
    retry_after,
    within_deadline,
)

_LOGGER = logging.getLogger(__name__)

NAME = "synthesia"
KEY_ENV = "SYNTHESIA_API_KEY"
BASE_URL_ENV = "SYNTHESIA_BASE_URL"
DEFAULT_BASE_URL = "https://api.synthesia.io"
# A stock avatar and background from Synthesia's documentation; SYNTHESIA_AVATAR / SYNTHESIA_BACKGROUND override them.
DEFAULT_AVATAR = "anna_costume1_cameraA"
DEFAULT_BACKGROUND = "off_white"
MAX_SCENES = 25
# First wait between status checks, in seconds; doubles up to 15 times this. SYNTHESIA_POLL_SECONDS overrides it.
POLL_SECONDS = 2.0
REQUEST_TIMEOUT = httpx.Timeout(30.0, connect=10.0)
DOWNLOAD_TIMEOUT_SECONDS = 300.0

# `approved` (after moderation) and `in_progress` are still on their way.
_ENDED = frozenset({"complete", "error", "rejected", "deleted"})
# Where a failed video might say why: the v2 spec documents no such field (unconfirmed), so several are tried.
_REASON_FIELDS = ("error", "errorMessage", "reason", "rejectionReason", "context")


class SynthesiaProvider:
    description: ClassVar[ProviderDescription] = ProviderDescription(
        name=NAME,
        description="Synthesia avatar videos (API v2, Creator plan or higher); SYNTHESIA_AVATAR picks the avatar",
        offline=False,
        required_env=(KEY_ENV,),
        prices=pricing.price_table()[NAME],
    )
    max_scenes: ClassVar[int] = MAX_SCENES

    async def generate(self, job: AvatarJob) -> AvatarResult:
        key = require_env(KEY_ENV, NAME)
        avatar = job.avatar or os.environ.get("SYNTHESIA_AVATAR") or DEFAULT_AVATAR
        body = _create_body(job, avatar)
        first_poll = env_seconds("SYNTHESIA_POLL_SECONDS", POLL_SECONDS)

        async def render() -> AvatarResult:
            async with httpx.AsyncClient(
                base_url=os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL,
                headers={"Authorization": key},  # the bare key: Synthesia takes no "Bearer" prefix
                timeout=REQUEST_TIMEOUT,
            ) as client:
                video = await _call(client, "POST", "/v2/videos", json=body)
                video_id = video.get("id")
                if not isinstance(video_id, str) or not video_id:
                    raise ProviderUnavailable("Synthesia accepted the video but answered without its id")
                _LOGGER.info("synthesia: video %s ordered (%d scenes)", video_id, len(job.scenes))
                if video.get("status") not in _ENDED:
                    video = await poll_status(
                        lambda: _call(client, "GET", f"/v2/videos/{video_id}"),
                        lambda answer: answer.get("status") in _ENDED,
                        first_delay=first_poll,
                        label=f"synthesia video {video_id}",
                    )
            # No Authorization header: the download link is pre-signed, and the key must not travel to another host.
            downloaded = await fetch_output(_download_url(video, video_id), timeout_seconds=DOWNLOAD_TIMEOUT_SECONDS)
            seconds = _duration_seconds(video.get("duration")) or await measured_seconds(downloaded.data, NAME)
            return AvatarResult(
                data=downloaded.data,
                mime_type="video/mp4",
                model=avatar,
                estimated_cost_usd=pricing.synthesia_cost(seconds),
            )

        return await within_deadline(render, job.deadline, NAME)


def _create_body(job: AvatarJob, avatar: str) -> dict[str, Any]:
    background = job.background or os.environ.get("SYNTHESIA_BACKGROUND") or DEFAULT_BACKGROUND
    voice = job.voice or os.environ.get("SYNTHESIA_VOICE", "")
    scene_settings: dict[str, Any] = {"avatar": avatar, "background": background}
    if voice:
        scene_settings["avatarSettings"] = {"voice": voice}
    body: dict[str, Any] = {
        "test": env_flag("SYNTHESIA_TEST"),
        "title": job.title,
        "visibility": "private",
        "aspectRatio": job.aspect,
        "input": [{"scriptText": scene.narration, **scene_settings} for scene in job.scenes],
    }
    if job.render_id:
        body["callbackId"] = job.render_id
    return body


async def _call(client: httpx.AsyncClient, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
    """One API request and its JSON answer; every failure becomes a domain error here, and nowhere else."""
    try:
        response = await client.request(method, path, **kwargs)
    except httpx.HTTPError as error:
        raise ProviderUnavailable(f"Synthesia could not be reached ({method} {path}): {error!r}") from error
    if response.is_success:
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            raise ProviderUnavailable(f"Synthesia answered {method} {path} with something other than a JSON object")
        return answer
    raise _mapped(response)


def _mapped(response: httpx.Response) -> ScenecastError:
    status = response.status_code
    message = _error_message(response)
    if status in (401, 403):
        return FailedPrecondition(f"Synthesia rejected {KEY_ENV} ({status}: {message}); set a valid API key")
    if status == 429:
        return RateLimited(f"Synthesia rate limit (429): {message}", retry_after(response))
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
