"""Your video model (LTX-Video, HunyuanVideo, Wan...) as a RunPod serverless endpoint: run, status, cancel.

RunPod has no official worker for these models, so the worker's input is a template of yours (RUNPOD_INPUT_TEMPLATE,
a JSON file with `{{prompt}}`-style placeholders, filled like the ComfyUI workflow of the selfhosted provider): any
worker's schema fits, worker-comfyui's `{"workflow": ...}` included. The clip is the first video URL (or base64
file) in the job's output.

The runpod package is not used: its base URL is a process-wide value read from the environment at import, and its
calls are blocking; the three REST calls are made with httpx instead.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import math
from pathlib import Path
from typing import Any

import httpx
from pydantic import Field, SecretStr

from services.common import jobs
from services.common.download import Downloaded, DownloadSettings
from services.common.errors import (
    FailedPrecondition,
    JobFailed,
    MissingCredential,
    ProviderUnavailable,
    ScenecastError,
)
from services.common.media import probe
from services.common.providers import Price, Provider, ProviderDescription
from services.common.retry import http_status_error
from services.video.providers.base import ClipJob, ClipResult, write_clip
from services.video.providers.selfhosted import (
    DEFAULT_FPS,
    DEFAULT_MAX_FRAMES,
    DEFAULT_SHORT_SIDE,
    MIN_FRAMES,
    ClipPlan,
    clip_frames,
    fill_workflow,
    plan_clip,
)
from services.video.providers.wan import image_data_uri

_LOGGER = logging.getLogger(__name__)

NAME = "runpod"
KEY_ENV = "RUNPOD_API_KEY"
ENDPOINT_ENV = "RUNPOD_ENDPOINT_ID"
TEMPLATE_ENV = "RUNPOD_INPUT_TEMPLATE"
TIMEOUT_ENV = "RUNPOD_TIMEOUT_SECONDS"
DEFAULT_BASE_URL = "https://api.runpod.ai/v2"
# An L40S (48 GB, enough for LTX-Video and HunyuanVideo at 480p) as a flex worker: $0.00053 per second
# (docs.runpod.io/serverless/pricing, 2026-08-20). Billed from worker start to stop, whole seconds.
DEFAULT_USD_PER_GPU_SECOND = 0.00053
# An assumption for the estimate only: GPU seconds per second of clip, a cold start shared out included. What a job
# really took is reported by RunPod and goes into the ledger.
DEFAULT_GPU_SECONDS_PER_CLIP_SECOND = 20.0
# A cold start of a large video model takes minutes; RunPod keeps a /run result for 30 minutes.
DEFAULT_TIMEOUT_SECONDS = 1800.0
# RunPod suggests polling every 2-5 s.
DEFAULT_POLL_SECONDS = 2.0
DEFAULT_REQUEST_SECONDS = 30.0
DOWNLOAD_TIMEOUT_SECONDS = 300.0
MAX_VIDEO_BYTES = 500 * 1024 * 1024
# RunPod refuses an executionTimeout under 5 s.
MIN_EXECUTION_SECONDS = 5.0
_ENDED = frozenset({"COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"})
_DETAIL_CHARS = 300
# The input sent when RUNPOD_INPUT_TEMPLATE is unset: the fields a Cog-style LTX-Video worker takes.
DEFAULT_TEMPLATE: dict[str, Any] = {
    "prompt": "{{prompt}}",
    "negative_prompt": "{{negative_prompt}}",
    "width": "{{width}}",
    "height": "{{height}}",
    "num_frames": "{{frames}}",
    "fps": "{{fps}}",
    "seed": "{{seed}}",
}


class RunPodSettings(DownloadSettings):
    # API key; requests for runpod fail with FAILED_PRECONDITION naming RUNPOD_API_KEY while it is unset.
    runpod_api_key: SecretStr = SecretStr("")
    # The serverless endpoint that runs your video worker.
    runpod_endpoint_id: str = ""
    # RunPod's serverless API (a fake in tests).
    runpod_base_url: str = DEFAULT_BASE_URL
    # A JSON file: the worker's `input`, with placeholders {{prompt}}, {{negative_prompt}}, {{width}}, {{height}},
    # {{frames}}, {{fps}}, {{seed}} and {{image}} (the scene's still as a data: URI, empty without one). Empty: the
    # built-in LTX-Video-style input.
    runpod_input_template: str = ""
    # The clip's short side in pixels, its frame rate, and most frames (brought down to 8k+1).
    runpod_video_height: int = Field(default=DEFAULT_SHORT_SIDE, ge=64, le=2160)
    runpod_video_fps: int = Field(default=DEFAULT_FPS, ge=1, le=60)
    runpod_video_max_frames: int = Field(default=DEFAULT_MAX_FRAMES, ge=MIN_FRAMES, le=1025)
    # Your endpoint's GPU price per second, in USD (default: an L40S flex worker).
    runpod_usd_per_gpu_second: float = Field(default=DEFAULT_USD_PER_GPU_SECOND, ge=0)
    # GPU seconds per second of clip, for the estimate before a job runs.
    runpod_gpu_seconds_per_clip_second: float = Field(default=DEFAULT_GPU_SECONDS_PER_CLIP_SECOND, ge=0)
    # Longest a clip is waited for, in seconds; also sent as the job's executionTimeout, so RunPod stops billing.
    runpod_timeout_seconds: float = Field(default=DEFAULT_TIMEOUT_SECONDS, ge=1, le=24 * 3600.0)
    # First wait between status checks, in seconds.
    runpod_poll_seconds: float = Field(default=DEFAULT_POLL_SECONDS, gt=0, le=60)
    # Longest one API request may take, in seconds. A /run whose answer does not come in time is not sent again.
    runpod_request_timeout_seconds: float = Field(default=DEFAULT_REQUEST_SECONDS, gt=0, le=300)


class RunPodProvider(Provider[RunPodSettings, ClipJob]):
    description = ProviderDescription(
        name=NAME,
        description=(
            f"Your video worker on a RunPod serverless endpoint ({ENDPOINT_ENV}), its input from {TEMPLATE_ENV}; "
            "billed per GPU second"
        ),
        offline=False,
    )
    settings_class = RunPodSettings
    required_settings = ("runpod_api_key", "runpod_endpoint_id")
    output_settings = (
        "runpod_base_url",
        "runpod_endpoint_id",
        "runpod_input_template",
        "runpod_video_height",
        "runpod_video_fps",
        "runpod_video_max_frames",
    )

    @classmethod
    def prices(cls, settings: RunPodSettings) -> tuple[Price, ...]:
        note = (
            "RUNPOD_USD_PER_GPU_SECOND (default: L40S flex); estimated at "
            f"{settings.runpod_gpu_seconds_per_clip_second:g} GPU s per clip second"
        )
        return (
            Price(
                f"runpod endpoint {settings.runpod_endpoint_id}", "GPU second", settings.runpod_usd_per_gpu_second, note
            ),
        )

    @classmethod
    def estimate_usd(cls, settings: RunPodSettings, job: ClipJob) -> float:
        frames = clip_frames(job.duration_ms, settings.runpod_video_fps, settings.runpod_video_max_frames)
        clip_seconds = frames / settings.runpod_video_fps
        return settings.runpod_usd_per_gpu_second * settings.runpod_gpu_seconds_per_clip_second * clip_seconds

    async def generate(self, job: ClipJob) -> ClipResult:
        settings = self.settings
        key = settings.secret("runpod_api_key", NAME)
        if not settings.runpod_endpoint_id.strip():
            raise MissingCredential(ENDPOINT_ENV, NAME)
        plan = plan_clip(job, settings.runpod_video_height, settings.runpod_video_fps, settings.runpod_video_max_frames)
        values: dict[str, str | int] = {**plan.placeholders(), "image": ""}
        if job.source_image is not None:
            values["image"] = await asyncio.to_thread(image_data_uri, job.source_image)
        model_input = await asyncio.to_thread(_filled_template, settings.runpod_input_template, values)
        endpoint_url = f"{settings.runpod_base_url.rstrip('/')}/{settings.runpod_endpoint_id.strip()}"
        headers = {"Authorization": f"Bearer {key}"}
        time_limit = settings.runpod_timeout_seconds
        async with httpx.AsyncClient(
            base_url=endpoint_url, headers=headers, timeout=settings.runpod_request_timeout_seconds
        ) as client:
            clip = _RunPodJob(client, settings, plan, job.work_dir, model_input)
            try:
                async with asyncio.timeout(time_limit):
                    return await jobs.run(clip)
            except TimeoutError as stop:
                raise JobFailed(
                    f"{clip.label}: job {clip.ordered_id} did not finish within {time_limit:g} s ({TIMEOUT_ENV}); "
                    "it was canceled and not ordered again"
                ) from stop


def _filled_template(setting: str, values: dict[str, str | int]) -> dict[str, Any]:
    """The worker's input: RUNPOD_INPUT_TEMPLATE (or the built-in one) with its placeholders filled."""
    if not setting.strip():
        return fill_workflow(DEFAULT_TEMPLATE, values, Path("(built-in template)"), TEMPLATE_ENV)
    path = Path(setting.strip())
    try:
        template = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise FailedPrecondition(f"{TEMPLATE_ENV}: cannot read the input template {path}: {error}") from error
    if not isinstance(template, dict) or not template:
        raise FailedPrecondition(f"{TEMPLATE_ENV}: {path} must hold a JSON object, the worker's `input`")
    return fill_workflow(template, values, path, TEMPLATE_ENV)


class _RunPodJob(jobs.RemoteJob[dict[str, Any], ClipResult]):
    """One job on the endpoint. RunPod has no idempotency key and no documented job listing, so a /run whose answer
    is lost is reported (naming the endpoint), never sent again: it may be running, and billed, already."""

    provider = NAME
    max_bytes = MAX_VIDEO_BYTES
    download_seconds = DOWNLOAD_TIMEOUT_SECONDS

    def __init__(
        self,
        client: httpx.AsyncClient,
        settings: RunPodSettings,
        plan: ClipPlan,
        work_dir: Path,
        model_input: dict[str, Any],
    ) -> None:
        self._client = client
        self._settings = settings
        self._plan = plan
        self._work_dir = work_dir
        self._input = model_input
        self.label = f"RunPod endpoint {settings.runpod_endpoint_id.strip()}"
        self.poll_seconds = settings.runpod_poll_seconds
        self.allow_private = settings.allow_private_output_urls
        # The job's id once /run answered, for messages about a job that timed out.
        self.ordered_id = "(not ordered)"

    async def create(self) -> dict[str, Any]:
        # executionTimeout bounds the worker's billed run even if this service goes away before canceling it.
        execution_ms = round(max(self._settings.runpod_timeout_seconds, MIN_EXECUTION_SECONDS) * 1000)
        body = {"input": self._input, "policy": {"executionTimeout": execution_ms}}
        try:
            response = await self._client.post("/run", json=body)
        except httpx.HTTPError as error:
            failed = ProviderUnavailable(f"{self.label}: POST /run failed: {error!r}")
            raise jobs.create_failure(failed, cause=error) from error
        if not response.is_success:
            raise jobs.create_failure(self._error(response, "POST /run"), status=response.status_code)
        job = _json(response, self.label)
        if not job.get("id"):
            raise JobFailed(f"{self.label}: POST /run answered without a job id: {response.text[:_DETAIL_CHARS]}")
        self.ordered_id = str(job["id"])
        return job

    def job_id(self, job: dict[str, Any]) -> str:
        return str(job["id"])

    def ended(self, job: dict[str, Any]) -> bool:
        return job.get("status") in _ENDED

    async def status(self, job: dict[str, Any]) -> dict[str, Any]:
        job_id = self.job_id(job)
        try:
            response = await self._client.get(f"/status/{job_id}")
        except httpx.HTTPError as error:
            raise ProviderUnavailable(f"{self.label}: checking job {job_id} failed: {error!r}") from error
        if response.is_success:
            return {"id": job_id, **_json(response, self.label)}
        if response.status_code == 404:  # RunPod keeps a /run job's result for 30 minutes
            raise jobs.JobEnded(JobFailed(f"{self.label} no longer knows job {job_id} (404); it was not ordered again"))
        error = self._error(response, f"job {job_id}")
        if isinstance(error, ProviderUnavailable):
            raise error
        raise jobs.JobEnded(JobFailed(f"{error}; job {job_id} was not ordered again"))

    def output_url(self, job: dict[str, Any]) -> str:
        status, job_id = job.get("status"), self.job_id(job)
        if status != "COMPLETED":
            reason = str(job.get("error") or "no error given")[:_DETAIL_CHARS]
            hint = f" (raise {TIMEOUT_ENV})" if status == "TIMED_OUT" else ""
            raise JobFailed(f"{self.label}: job {job_id} ended {status}{hint}: {reason}; it was not ordered again")
        url = find_output(job.get("output"))
        if url is None:
            raise JobFailed(
                f"{self.label}: job {job_id} completed without a video URL or base64 file in its output; make the "
                "worker return one (RunPod's payload limits mean a bucket URL for most clips)"
            )
        return url

    async def check(self, job: dict[str, Any], output: Downloaded) -> ClipResult:
        if output.data[4:8] != b"ftyp" and output.data[:4] != b"\x1a\x45\xdf\xa3":
            raise ProviderUnavailable(f"{len(output.data)} bytes that are not an MP4 or WebM video")
        # Decoded here, inside the job: a clip the service could not decode would otherwise be made again.
        if not (await asyncio.to_thread(probe, io.BytesIO(output.data), f"{self.label} clip")).has_video:
            raise ProviderUnavailable("a file with no picture")
        return ClipResult(
            path=await asyncio.to_thread(write_clip, self._work_dir, output.data),
            mime_type="video/mp4" if output.data[4:8] == b"ftyp" else "video/webm",
            model=f"{NAME}:{self._settings.runpod_endpoint_id.strip()}",
            estimated_cost_usd=self._settings.runpod_usd_per_gpu_second * billed_seconds(job),
        )

    async def cancel(self, job: dict[str, Any]) -> None:
        await self._client.post(f"/cancel/{self.job_id(job)}")

    def _error(self, response: httpx.Response, what: str) -> ScenecastError:
        """RunPod's codes: 401 the key, 404 the endpoint, 429 over the rate limit, 5xx a worker crash."""
        code, detail = response.status_code, response.text[:_DETAIL_CHARS] or "no detail given"
        return http_status_error(
            response,
            throttled=f"{self.label} throttled {what} (429): {detail}",
            failed=f"{self.label}: {what} failed ({code}): {detail}",
            denied=f"{self.label} refused {KEY_ENV} ({code}) for {what}; check the key",
            missing=f"{self.label} was not found (404); check {ENDPOINT_ENV}: {detail}",
            refused=f"{self.label} refused {what} ({code}): {detail}; check {TEMPLATE_ENV}",
        )


def billed_seconds(job: dict[str, Any]) -> int:
    """The job's GPU time as billed: its execution plus its delay (which holds the worker's cold start, and queue
    time that is not billed: counting it keeps the ledger from ever under-reporting), in whole seconds rounded up."""
    milliseconds = float(job.get("executionTime") or 0) + float(job.get("delayTime") or 0)
    return math.ceil(milliseconds / 1000)


def find_output(output: Any) -> str | None:
    """The clip in a worker's output, whatever its shape: a URL string; `{"video_url": ...}` as RunPod's hosted
    models answer; worker-comfyui's `{"images": [{"type": "s3_url"|"base64", "data": ...}]}`. A value under a key
    that names a video wins over other URLs (a thumbnail)."""
    found: list[tuple[bool, str]] = []

    def walk(value: Any, videoish: bool) -> None:
        if isinstance(value, str):
            if value.startswith(("https://", "http://", "data:")):
                found.append((videoish, value))
        elif isinstance(value, dict):
            if value.get("type") == "base64" and isinstance(value.get("data"), str):
                found.append((videoish, f"data:application/octet-stream;base64,{value['data']}"))
                return
            for key, item in value.items():
                walk(item, videoish or "video" in str(key).lower())
        elif isinstance(value, list):
            for item in value:
                walk(item, videoish)

    walk(output, False)
    preferred = [url for videoish, url in found if videoish] or [url for _, url in found]
    return preferred[0] if preferred else None


def _json(response: httpx.Response, label: str) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise ProviderUnavailable(f"{label} answered {response.status_code} with a body that is not a JSON object")
    return body
