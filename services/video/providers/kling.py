"""Kling's official API (docs/providers/kling.md): text- or image-to-video tasks, signed with a short-lived JWT."""

from __future__ import annotations

import asyncio
import io
import re
import time
import uuid
from dataclasses import dataclass
from typing import Any, Literal

import httpx
import jwt
from pydantic import Field, SecretStr

from services.common import jobs
from services.common.download import Downloaded, DownloadSettings
from services.common.errors import (
    FailedPrecondition,
    InvalidArgument,
    JobFailed,
    ProviderUnavailable,
    QuotaExceeded,
    RateLimited,
    ScenecastError,
)
from services.common.media import probe
from services.common.providers import Price, Provider, ProviderDescription
from services.common.redact import REDACTED
from services.video.providers.base import ClipJob, ClipResult, write_clip
from services.video.providers.wan import image_data_uri

NAME = "kling"
ACCESS_FIELD = "kling_access_key"
SECRET_FIELD = "kling_secret_key"
# Kling's published prices, USD per clip of 5 s (a 10 s clip costs twice): 1 unit = $0.14 (docs/providers/kling.md).
USD_PER_5S = {
    ("kling-v1", "std"): 0.14,
    ("kling-v1", "pro"): 0.49,
    ("kling-v1-6", "std"): 0.28,
    ("kling-v1-6", "pro"): 0.49,
    ("kling-v2-1", "std"): 0.28,
    ("kling-v2-1", "pro"): 0.49,
    ("kling-v2-5-turbo", "std"): 0.21,
    ("kling-v2-5-turbo", "pro"): 0.35,
    ("kling-v2-master", "std"): 1.40,
    ("kling-v2-master", "pro"): 1.40,
    ("kling-v2-1-master", "std"): 1.40,
    ("kling-v2-1-master", "pro"): 1.40,
}
KlingModel = Literal["kling-v1", "kling-v1-6", "kling-v2-1", "kling-v2-5-turbo", "kling-v2-master", "kling-v2-1-master"]
TOKEN_SECONDS = 1800
TOKEN_SKEW_SECONDS = 5
REQUEST_TIMEOUT_SECONDS = 30.0
MAX_VIDEO_BYTES = 200 * 1024 * 1024
_DETAIL_CHARS = 300
_ENDED = frozenset({"succeed", "failed"})
_JWT = re.compile(r"eyJ[\w-]+\.[\w-]+\.[\w-]*")
_CODE_BY_STATUS = {401: 1000, 403: 1103, 404: 1203, 429: 1302}


class KlingSettings(DownloadSettings):
    # The access key and secret key from Kling's developer console; signed into a JWT per request. A kling request
    # fails with FAILED_PRECONDITION naming the one that is unset.
    kling_access_key: SecretStr = SecretStr("")
    kling_secret_key: SecretStr = SecretStr("")
    # Kling's API (Singapore; api-beijing.klingai.com in China), or a compatible server (a fake in tests).
    kling_base_url: str = "https://api-singapore.klingai.com"
    kling_model: KlingModel = "kling-v1-6"
    # "std" (about 720p) or "pro" (about 1080p, dearer).
    kling_mode: Literal["std", "pro"] = "std"
    # Clip length, 5 or 10 s; the assembler loops a clip shorter than its scene. Fixed rather than chosen from the
    # narration: the estimate guesses the narration's length from its characters, so a length chosen from the real
    # narration could cost twice what the budget check approved.
    kling_duration_seconds: Literal[5, 10] = 5
    # Longest one clip is waited for, in seconds: Kling takes minutes.
    kling_timeout_seconds: float = Field(default=1200.0, gt=0)
    # First wait between status checks, in seconds (it grows while the task runs).
    kling_poll_seconds: float = Field(default=10.0, gt=0)


def clip_cost(settings: KlingSettings) -> float:
    return USD_PER_5S[(settings.kling_model, settings.kling_mode)] * settings.kling_duration_seconds / 5


class KlingProvider(Provider[KlingSettings, ClipJob]):
    description = ProviderDescription(
        name=NAME,
        description="Kling's official API: a 5 or 10 s clip, looped to the scene, from the prompt or scene image",
        offline=False,
    )
    settings_class = KlingSettings
    required_settings = (ACCESS_FIELD, SECRET_FIELD)
    output_settings = ("kling_base_url", "kling_model", "kling_mode", "kling_duration_seconds")

    @classmethod
    def prices(cls, settings: KlingSettings) -> tuple[Price, ...]:
        note = f"{settings.kling_mode} mode; {settings.kling_duration_seconds} s clips (KLING_DURATION_SECONDS)"
        return (
            Price(settings.kling_model, "5 s of clip", USD_PER_5S[(settings.kling_model, settings.kling_mode)], note),
        )

    @classmethod
    def estimate_usd(cls, settings: KlingSettings, job: ClipJob) -> float:
        return clip_cost(settings)

    async def generate(self, job: ClipJob) -> ClipResult:
        prompt = job.prompt or job.title
        if not prompt:
            raise InvalidArgument("spec.scene.visual_prompt and spec.scene.title are both empty; kling needs a prompt")
        access = self.settings.secret(ACCESS_FIELD, NAME)
        secret = self.settings.secret(SECRET_FIELD, NAME)
        body: dict[str, Any] = {
            "model_name": self.settings.kling_model,
            "prompt": prompt[:2500],
            "mode": self.settings.kling_mode,
            "duration": str(self.settings.kling_duration_seconds),  # a string in Kling's API
            # Our key for the task: when a create's answer is lost, the task is looked up by it before any resend.
            "external_task_id": uuid.uuid4().hex,
        }
        if job.source_image is None:
            kind = "text2video"
            # Kling makes 16:9, 9:16 or 1:1; the assembler fits other outputs.
            body["aspect_ratio"] = "9:16" if job.height > job.width else "1:1" if job.height == job.width else "16:9"
        else:
            kind = "image2video"
            body["image"] = (await asyncio.to_thread(image_data_uri, job.source_image)).partition(",")[2]
        limit = self.settings.kling_timeout_seconds
        async with httpx.AsyncClient(base_url=self.settings.kling_base_url, timeout=REQUEST_TIMEOUT_SECONDS) as client:
            task = _KlingTask(client, _Signer(access, secret), kind, body, clip_cost(self.settings), job)
            task.poll_seconds = self.settings.kling_poll_seconds
            task.allow_private = self.settings.allow_private_output_urls
            try:
                async with asyncio.timeout(limit):
                    return await jobs.run(task)
            except TimeoutError as stop:
                raise ProviderUnavailable(f"Kling did not finish within {limit:g} s (KLING_TIMEOUT_SECONDS)") from stop


@dataclass(frozen=True)
class _Signer:
    access_key: str
    secret_key: str

    def headers(self) -> dict[str, str]:
        """A fresh token per request, so a long task never polls with an expired one (code 1004)."""
        now = int(time.time())
        claims = {"iss": self.access_key, "exp": now + TOKEN_SECONDS, "nbf": now - TOKEN_SKEW_SECONDS}
        return {"Authorization": f"Bearer {jwt.encode(claims, self.secret_key, algorithm='HS256')}"}


class _KlingTask(jobs.RemoteJob[dict[str, Any], ClipResult]):
    provider = NAME
    can_find = True
    max_bytes = MAX_VIDEO_BYTES

    def __init__(
        self,
        client: httpx.AsyncClient,
        signer: _Signer,
        kind: str,
        body: dict[str, Any],
        cost: float,
        job: ClipJob,
    ) -> None:
        self._client = client
        self._signer = signer
        self._path = f"/v1/videos/{kind}"
        self._body = body
        self._cost = cost
        self._job = job
        self.label = f"Kling {body['model_name']} {kind}"

    async def create(self) -> dict[str, Any]:
        try:
            response = await self._client.post(self._path, json=self._body, headers=self._signer.headers())
        except httpx.HTTPError as error:
            raise jobs.create_failure(
                ProviderUnavailable(f"Kling could not be reached: {error!r}"), cause=error
            ) from error
        data, error = _answer(response, "create")
        if error is not None:
            raise jobs.create_failure(error, status=response.status_code, refused=(429,))
        return data

    async def find(self) -> dict[str, Any] | None:
        response = await self._get(f"{self._path}/{self._body['external_task_id']}")
        if response.status_code == 404:
            return None  # a definite "no such task": ordering again is safe
        data, error = _answer(response, "lookup")
        if error is not None:
            raise error
        return data

    async def _get(self, path: str) -> httpx.Response:
        try:
            return await self._client.get(path, headers=self._signer.headers())
        except httpx.HTTPError as error:
            raise ProviderUnavailable(f"Kling could not be reached: {error!r}") from error

    def job_id(self, job: dict[str, Any]) -> str:
        return str(job.get("task_id", ""))

    def ended(self, job: dict[str, Any]) -> bool:
        return job.get("task_status") in _ENDED

    async def status(self, job: dict[str, Any]) -> dict[str, Any]:
        data, error = _answer(await self._get(f"{self._path}/{self.job_id(job)}"), f"task {self.job_id(job)}")
        if error is None:
            return data
        if isinstance(error, ProviderUnavailable):
            raise error  # checked again later
        raise jobs.JobEnded(error)

    def output_url(self, job: dict[str, Any]) -> str:
        task_id = self.job_id(job)
        if job.get("task_status") == "failed":
            reason = job.get("task_status_msg") or "no reason given"
            raise JobFailed(f"Kling task {task_id} failed: {str(reason)[:_DETAIL_CHARS]}")
        videos = (job.get("task_result") or {}).get("videos") or []
        if not videos or not isinstance(videos[0], dict) or not videos[0].get("url"):
            raise JobFailed(f"Kling task {task_id} succeeded without a video")
        return str(videos[0]["url"])

    async def check(self, job: dict[str, Any], output: Downloaded) -> ClipResult:
        if output.data[4:8] != b"ftyp" or not probe(io.BytesIO(output.data), "kling clip").has_video:
            raise ProviderUnavailable(f"Kling task {self.job_id(job)} returned bytes that are not an MP4 video")
        path = await asyncio.to_thread(write_clip, self._job.work_dir, output.data)
        return ClipResult(
            path=path, mime_type="video/mp4", model=self._body["model_name"], estimated_cost_usd=self._cost
        )


def _answer(response: httpx.Response, what: str) -> tuple[dict[str, Any], ScenecastError | None]:
    """Kling's envelope `{code, message, request_id, data}`: the data, or the domain error its code means."""
    try:
        body = response.json()
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    code = body.get("code")
    if response.status_code < 400 and code == 0 and isinstance(body.get("data"), dict):
        return body["data"], None
    return {}, _error(response.status_code, code, f"{body.get('message') or response.text[:_DETAIL_CHARS]}", what)


def _error(status: int, code: Any, message: str, what: str) -> ScenecastError:
    """Every Kling error code becomes a domain error here (codes in docs/providers/kling.md); an answer without one
    (a proxy's) is read by its HTTP status."""
    # A JWT is a bearer credential for its half hour, and a new one is signed per request, so it cannot be registered
    # for redaction like the keys: any token a vendor or proxy echoes is cut out here.
    text = f"Kling {what}: {_JWT.sub(REDACTED, message)} (code {code}, HTTP {status})"
    if not isinstance(code, int):
        code = _CODE_BY_STATUS.get(status, 5000 if status >= 500 or status == 0 else 1200)
    if 1000 <= code <= 1004:
        return FailedPrecondition(f"{text}; set valid KLING_ACCESS_KEY and KLING_SECRET_KEY")
    if code in (1302, 1303):
        return RateLimited(text)
    if 1100 <= code <= 1103:
        return QuotaExceeded(f"{text}; check the Kling account's balance and resource packs")
    if code in (1300, 1301):
        return InvalidArgument(f"{text}; Kling refused the prompt or image (content policy), change it")
    if code >= 5000:
        return ProviderUnavailable(text)
    return InvalidArgument(text)
