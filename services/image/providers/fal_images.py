"""FLUX.1 [dev] on Fal's queue API (docs/providers/fal.md): submitted once, polled, its image downloaded.

The queue is spoken with httpx rather than the `fal-client` package: its submit re-POSTs up to ten times on
timeouts, 408/409/429 and gateway errors, and a re-POST of a submit that arrived is a second billed image; it also
reads its hosts from the environment at import and always uses https, so it could not follow FAL_QUEUE_URL.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field
from typing import Any

import httpx
from pydantic import Field, SecretStr

from services.common import jobs
from services.common.download import Downloaded, DownloadSettings, origin
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
from services.image.providers.base import ImageJob, ImageResult, decoded_image
from services.image.providers.replicate_images import FLUX_QUALITY_SUFFIX, FLUX_STEPS

NAME = "fal-flux"
KEY_FIELD = "fal_key"
MODEL = "fal-ai/flux/dev"
# Fal bills FLUX.1 [dev] per megapixel of output, rounded up (fal model page, see docs/providers/fal.md). Sizes stay
# at or under one megapixel, so an image costs one unit whether Fal counts megapixels or images.
USD_PER_MEGAPIXEL = 0.025
MAX_PIXELS = 1_000_000
SIZE_STEP = 16  # Flux works on 16-pixel latent blocks
CONNECT_TIMEOUT_SECONDS = 10.0
# A submit is answered at once (the job waits in the queue); a slower answer is treated as lost, never re-sent.
REQUEST_TIMEOUT_SECONDS = 30.0
MAX_IMAGE_BYTES = 50 * 1024 * 1024
_DETAIL_CHARS = 300
# Error types in a 422 detail or a status's error_type that mean the prompt was refused: retrying cannot help.
_REFUSALS = frozenset({"content_policy_violation"})


class FalSettings(DownloadSettings):
    # The API key ("key id:secret" as Fal shows it); fal-flux requests fail with FAILED_PRECONDITION naming FAL_KEY
    # while it is unset.
    fal_key: SecretStr = SecretStr("")
    # Fal's queue API, or a compatible server (a fake in tests).
    fal_queue_url: str = "https://queue.fal.run"
    # Longest one image is waited for, queue time included, in seconds; the job is cancelled when it passes.
    fal_timeout_seconds: float = Field(default=300.0, gt=0)
    # First wait between status checks, in seconds (it grows while the job runs).
    fal_poll_seconds: float = Field(default=1.0, gt=0)


def flux_size(aspect: str) -> tuple[int, int]:
    """The largest size of exactly `aspect` in 16-pixel steps within one megapixel: 1280x720, 720x1280, 992x992."""
    across, down = (int(part) for part in aspect.split(":"))
    blocks = math.isqrt(MAX_PIXELS // (across * down * SIZE_STEP * SIZE_STEP))
    return across * SIZE_STEP * blocks, down * SIZE_STEP * blocks


def flux_cost(width: int, height: int) -> float:
    return math.ceil(width * height / MAX_PIXELS) * USD_PER_MEGAPIXEL


class FalFluxProvider(Provider[FalSettings, ImageJob]):
    description = ProviderDescription(
        name=NAME, description="FLUX.1 [dev] on Fal's queue API (fal-ai/flux/dev); priced per megapixel", offline=False
    )
    settings_class = FalSettings
    required_settings = (KEY_FIELD,)
    output_settings = ("fal_queue_url",)

    @classmethod
    def prices(cls, settings: FalSettings) -> tuple[Price, ...]:
        note = "rounded up; scenecast asks for at most 1 MP, so 1 unit per image"
        return (Price(MODEL, "megapixel", USD_PER_MEGAPIXEL, note),)

    @classmethod
    def estimate_usd(cls, settings: FalSettings, job: ImageJob) -> float:
        return flux_cost(*flux_size(job.aspect))

    async def generate(self, job: ImageJob) -> ImageResult:
        width, height = flux_size(job.aspect)
        model_input = {
            "prompt": f"{job.prompt or job.title}\n\n{FLUX_QUALITY_SUFFIX}",
            "image_size": {"width": width, "height": height},
            "num_inference_steps": FLUX_STEPS[job.quality],
            "num_images": 1,
            "output_format": "png",  # lossless: the service re-encodes to PNG after fitting anyway
            "enable_safety_checker": True,
        }
        key = self.settings.secret(KEY_FIELD, NAME)
        timeout = httpx.Timeout(REQUEST_TIMEOUT_SECONDS, connect=CONNECT_TIMEOUT_SECONDS)
        limit = self.settings.fal_timeout_seconds
        async with httpx.AsyncClient(headers={"Authorization": f"Key {key}"}, timeout=timeout) as client:
            request = _FalRequest(client, self.settings, model_input, flux_cost(width, height))
            try:
                async with asyncio.timeout(limit):
                    return await jobs.run(request)
            except TimeoutError as stop:
                raise ProviderUnavailable(
                    f"Fal {MODEL} did not finish within {limit:g} s (FAL_TIMEOUT_SECONDS)"
                ) from stop


@dataclass
class _Queued:
    """One queue request as Fal last described it."""

    request_id: str
    status_url: str
    response_url: str
    cancel_url: str
    status: str = "IN_QUEUE"
    result: dict[str, Any] = field(default_factory=dict)
    error: ScenecastError | None = None  # why a COMPLETED request has no result


class _FalRequest(jobs.RemoteJob[_Queued, ImageResult]):
    label = f"Fal {MODEL}"
    provider = NAME
    max_bytes = MAX_IMAGE_BYTES

    def __init__(
        self, client: httpx.AsyncClient, settings: FalSettings, model_input: dict[str, Any], cost: float
    ) -> None:
        self._client = client
        self._queue = settings.fal_queue_url.rstrip("/")
        self._input = model_input
        self._cost = cost
        self.poll_seconds = settings.fal_poll_seconds
        self.allow_private = settings.allow_private_output_urls

    async def create(self) -> _Queued:
        try:
            response = await self._client.post(f"{self._queue}/{MODEL}", json=self._input)
        except httpx.HTTPError as error:
            raise jobs.create_failure(
                ProviderUnavailable(f"Fal could not be reached: {error!r}"), cause=error
            ) from error
        if response.status_code >= 400:
            raise jobs.create_failure(_http_error(response, "submit"), status=response.status_code)
        answer = _json(response)
        request_id = str(answer.get("request_id") or "")
        urls = [answer.get(name) for name in ("status_url", "response_url", "cancel_url")]
        if not request_id or not all(isinstance(url, str) for url in urls):
            raise JobFailed(f"Fal answered a submit without a request id and URLs ({_detail(answer)}); not re-sent")
        for url in urls:
            # The key goes with every status check: it must not be sent to a host the answer names.
            if origin(url) != origin(self._queue):
                raise JobFailed(f"Fal request {request_id}: its URLs leave FAL_QUEUE_URL's host ({url}); not followed")
        return _Queued(request_id, *urls)

    def job_id(self, job: _Queued) -> str:
        return job.request_id

    def ended(self, job: _Queued) -> bool:
        return job.status == "COMPLETED"

    async def status(self, job: _Queued) -> _Queued:
        answer = await self._get(job, job.status_url)
        job.status = str(answer.get("status", ""))
        if job.status == "COMPLETED":
            if answer.get("error"):
                job.error = _job_error(job.request_id, answer.get("error_type"), answer["error"])
            else:
                job.result = await self._get(job, job.response_url)
        return job

    async def _get(self, job: _Queued, url: str) -> dict[str, Any]:
        try:
            response = await self._client.get(url)
        except httpx.HTTPError as error:
            raise ProviderUnavailable(f"Fal could not be reached for request {job.request_id}: {error!r}") from error
        if response.status_code >= 400:
            error = _http_error(response, f"request {job.request_id}")
            if isinstance(error, ProviderUnavailable):
                raise error  # checked again later
            raise jobs.JobEnded(error)
        return _json(response)

    def output_url(self, job: _Queued) -> str:
        if job.error is not None:
            raise job.error
        if any(job.result.get("has_nsfw_concepts") or ()):
            # Fal's safety checker sends a black image in its place: a scene with it would look broken.
            raise InvalidArgument(
                f"Fal {MODEL} refused the prompt (safety checker, request {job.request_id}); change the visual prompt"
            )
        images = job.result.get("images") or []
        if not images or not isinstance(images[0], dict) or not images[0].get("url"):
            raise JobFailed(f"Fal request {job.request_id} completed without an image ({_detail(job.result)})")
        return str(images[0]["url"])

    async def check(self, job: _Queued, output: Downloaded) -> ImageResult:
        return await asyncio.to_thread(decoded_image, output.data, "Fal", MODEL, self._cost)

    async def cancel(self, job: _Queued) -> None:
        await self._client.put(job.cancel_url)


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        answer = response.json()
    except ValueError as error:
        raise ProviderUnavailable(f"Fal answered HTTP {response.status_code} with a body that is not JSON") from error
    if not isinstance(answer, dict):
        raise ProviderUnavailable(f"Fal answered HTTP {response.status_code} with unexpected JSON")
    return answer


def _detail(body: Any) -> str:
    return str(body)[:_DETAIL_CHARS]


def _http_error(response: httpx.Response, what: str) -> ScenecastError:
    """Every Fal HTTP error becomes a domain error here."""
    status = response.status_code
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text
    detail = body.get("detail", body) if isinstance(body, dict) else body
    if status == 429:
        return RateLimited(
            f"Fal throttled the {what} (429): {_detail(detail)}",
            retry_after_seconds(response.headers.get("retry-after")),
        )
    if status in (401, 403):
        return FailedPrecondition(f"Fal rejected FAL_KEY ({status}: {_detail(detail)}); set a valid API key")
    if status == 404:
        return FailedPrecondition(f"Fal has no such {what} (404: {_detail(detail)}); check FAL_QUEUE_URL")
    if status >= 500 or status == 408:
        return ProviderUnavailable(f"Fal failed on the {what} ({status}): {_detail(detail)}")
    types = {item.get("type") for item in detail if isinstance(item, dict)} if isinstance(detail, list) else set()
    if types & _REFUSALS:
        return InvalidArgument(f"Fal {MODEL} refused the prompt ({what}, content policy): {_detail(detail)}")
    return InvalidArgument(f"Fal refused the input for {MODEL} ({what}, {status}): {_detail(detail)}")


def _job_error(request_id: str, error_type: Any, error: Any) -> ScenecastError:
    if error_type in _REFUSALS:
        return InvalidArgument(f"Fal {MODEL} refused the prompt (request {request_id}, content policy): {error}")
    return JobFailed(f"Fal {MODEL}: request {request_id} failed ({error_type or 'no error type'}): {_detail(error)}")
