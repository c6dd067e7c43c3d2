"""HeyGen's documented v2 contract: one video per script (a video input per scene), polled through v1 status.

HeyGen supports /v1 and /v2 only until 2026-10-31; /v3/videos replaces them with a schema not yet confirmed. Every
HeyGen request and response shape lives in this module (and HEYGEN_BASE_URL points it anywhere), so a v3 adapter
replaces this module's paths and bodies without touching the service.
"""

from __future__ import annotations

import logging
import os
import urllib.parse
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

NAME = "heygen"
KEY_ENV = "HEYGEN_API_KEY"
BASE_URL_ENV = "HEYGEN_BASE_URL"
DEFAULT_BASE_URL = "https://api.heygen.com"
# HeyGen has no stock default we could rely on: the account's avatar and voice ids must be configured or requested.
AVATAR_ENV = "HEYGEN_AVATAR_ID"
VOICE_ENV = "HEYGEN_VOICE_ID"
DEFAULT_BACKGROUND = "#FAFAFA"
MAX_SCENES = 50
# HeyGen renders at its own sizes up to 1080p on common plans; larger output is scaled up by the assembler.
MAX_SIDE = 1920
# The code HeyGen gives a video above the plan's resolution.
PLAN_RESOLUTION_CODE = 40010
# First wait between status checks, in seconds; doubles up to 15 times this. HEYGEN_POLL_SECONDS overrides it.
POLL_SECONDS = 2.0
REQUEST_TIMEOUT = httpx.Timeout(30.0, connect=10.0)
DOWNLOAD_TIMEOUT_SECONDS = 300.0

CREATE_PATH = "/v2/video/generate"
STATUS_PATH = "/v1/video_status.get"
# `pending`, `processing` and the unconfirmed `waiting` are still on their way.
_ENDED = frozenset({"completed", "failed"})
# What v1 answers carry as `code` on success.
_V1_SUCCESS = 100


class HeyGenProvider:
    description: ClassVar[ProviderDescription] = ProviderDescription(
        name=NAME,
        description=(
            f"HeyGen avatar videos (v2 API, supported until 2026-10-31); needs {AVATAR_ENV} and {VOICE_ENV} "
            "unless the request names them"
        ),
        offline=False,
        required_env=(KEY_ENV,),
        prices=pricing.PRICE_TABLE[NAME],
    )
    max_scenes: ClassVar[int] = MAX_SCENES

    async def generate(self, job: AvatarJob) -> AvatarResult:
        key = require_env(KEY_ENV, NAME)
        avatar = job.avatar or _configured(AVATAR_ENV, "avatar.avatar")
        voice = job.voice or _configured(VOICE_ENV, "avatar.voice")
        body = _create_body(job, avatar, voice)
        first_poll = env_seconds("HEYGEN_POLL_SECONDS", POLL_SECONDS)

        async def render() -> AvatarResult:
            async with httpx.AsyncClient(
                base_url=os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL,
                headers={"X-Api-Key": key},
                timeout=REQUEST_TIMEOUT,
            ) as client:
                created = _data(await _call(client, "POST", CREATE_PATH, json=body))
                video_id = created.get("video_id")
                if not isinstance(video_id, str) or not video_id:
                    raise ProviderUnavailable("HeyGen accepted the video but answered without its video_id")
                _LOGGER.info("heygen: video %s ordered (%d scenes)", video_id, len(job.scenes))
                status = await poll_status(
                    lambda: _call(client, "GET", STATUS_PATH, params={"video_id": video_id}),
                    lambda answer: _data(answer).get("status") in _ENDED,
                    first_delay=first_poll,
                    label=f"heygen video {video_id}",
                )
            video = _data(status)
            # No X-Api-Key header: the video URL is pre-signed, and the key must not travel to another host.
            downloaded = await fetch_output(_video_url(video, video_id), timeout_seconds=DOWNLOAD_TIMEOUT_SECONDS)
            duration = video.get("duration")
            seconds = (
                float(duration)
                if isinstance(duration, (int, float)) and not isinstance(duration, bool) and duration > 0
                else await measured_seconds(downloaded.data, NAME)
            )
            return AvatarResult(
                data=downloaded.data,
                mime_type="video/mp4",
                model=avatar,
                estimated_cost_usd=pricing.heygen_cost(seconds),
            )

        return await within_deadline(render, job.deadline, NAME)


def _configured(variable: str, field: str) -> str:
    value = os.environ.get(variable, "")
    if not value:
        raise FailedPrecondition(f"provider '{NAME}' needs {variable} set on the service, or {field} in the request")
    return value


def _create_body(job: AvatarJob, avatar: str, voice: str) -> dict[str, Any]:
    background = _background(job.background or os.environ.get("HEYGEN_BACKGROUND") or DEFAULT_BACKGROUND)
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
        "test": env_flag("HEYGEN_TEST"),
        "title": job.title,
    }
    if job.render_id:
        body["callback_id"] = job.render_id
    return body


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


async def _call(client: httpx.AsyncClient, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
    """One API request and its JSON answer; every failure becomes a domain error here (_mapped), and nowhere else."""
    try:
        response = await client.request(method, path, **kwargs)
    except httpx.HTTPError as error:
        raise ProviderUnavailable(f"HeyGen could not be reached ({method} {path}): {error!r}") from error
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
        response.status_code, code, message or response.text[:300] or response.reason_phrase, retry_after(response)
    )


def _problem(answer: Any) -> tuple[Any, str | None]:
    """The error code and message of an answer: v2 says {"error": {code, message}}, v1 {"code": N, "message"}."""
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
        return FailedPrecondition(f"HeyGen rejected {KEY_ENV} ({label}: {message}); set a valid API key")
    if status == 429:
        return RateLimited(f"HeyGen rate limit ({label}): {message}", wait)
    if status >= 500:
        return ProviderUnavailable(f"HeyGen failed ({label}): {message}")
    # Other 4xx, and a 2xx that carries an error: the request itself was refused, and would be again.
    return InvalidArgument(f"HeyGen refused the video ({label}): {message}")


def _data(answer: dict[str, Any]) -> dict[str, Any]:
    data = answer.get("data")
    return data if isinstance(data, dict) else {}


def _video_url(video: dict[str, Any], video_id: str) -> str:
    if video.get("status") == "completed":
        url = video.get("video_url")
        if not isinstance(url, str) or not url:
            raise ProviderUnavailable(f"HeyGen marked video {video_id} completed without a video_url")
        return url
    error = video.get("error") if isinstance(video.get("error"), dict) else {}
    detail = "; ".join(str(error[name]) for name in ("message", "detail") if error.get(name)) or "no reason given"
    raise _mapped(None, error.get("code"), f"video {video_id}: {detail}")
