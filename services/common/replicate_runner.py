"""Replicate predictions for every media service: created once, polled, downloaded; and the one error mapping."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, TypeVar

import httpx
import replicate
from pydantic import Field, SecretStr
from pydantic.v1 import ValidationError  # replicate 1.0.7 models predictions with pydantic.v1
from replicate.exceptions import ModelError, ReplicateError
from replicate.prediction import Prediction

from services.common import jobs
from services.common.download import Downloaded, DownloadSettings
from services.common.errors import (
    FailedPrecondition,
    InvalidArgument,
    ProviderUnavailable,
    RateLimited,
    ScenecastError,
)
from services.common.providers import JobT, Provider, ProviderSettings
from services.common.retry import retry_after_seconds

T = TypeVar("T")

TOKEN_FIELD = "replicate_api_token"
# Replicate's GPU time, USD per second (providers.md section 4).
T4_USD_PER_SECOND = 0.000225
L40S_USD_PER_SECOND = 0.000975
DEFAULT_BASE_URL = "https://api.replicate.com"
# Seconds the create asks Replicate to hold the request (`Prefer: wait=N`, 1-60): fast models (flux-dev, kokoro)
# usually finish inside it, and a short hold means we soon know the prediction's id and can cancel it if abandoned.
SYNC_WAIT_SECONDS = 15
# How much longer than the hold the create's answer is waited for, in seconds.
CREATE_READ_MARGIN_SECONDS = 15.0
# When a create's answer is lost, predictions listed as created this long before it was sent may still be ours.
CLOCK_SKEW = timedelta(minutes=2)
# Pages of predictions (100 each) searched for a create whose answer was lost.
FIND_PAGES = 3
_ENDED = frozenset({"succeeded", "failed", "canceled", "aborted"})

_RESETS_IN = re.compile(r"~\s*(\d{1,4}(?:\.\d+)?)\s*s\b")
_SAFETY_REFUSAL = re.compile(r"nsfw|safety|unsafe|content polic|inappropriate|sensitive", re.IGNORECASE)
_clients: dict[tuple[str, str], replicate.Client] = {}


class ReplicateSettings(DownloadSettings):
    """What every Replicate provider needs; the providers' own settings (pinned versions) extend it."""

    # The API token; a request for a Replicate provider without it fails with FAILED_PRECONDITION naming it.
    replicate_api_token: SecretStr = SecretStr("")
    # Replicate's API, or a compatible server (a proxy, a fake in tests).
    replicate_base_url: str = DEFAULT_BASE_URL
    # Overrides every provider's own time limit for a whole prediction (create plus polling), in seconds.
    replicate_timeout_seconds: float | None = Field(default=None, gt=0)
    # First wait between status checks, in seconds (it grows while the prediction runs).
    replicate_poll_interval: float = Field(default=0.5, gt=0)


ReplicateSettingsT = TypeVar("ReplicateSettingsT", bound=ReplicateSettings)


class ReplicateProvider(Provider[ReplicateSettingsT, JobT]):
    """A provider that runs a model on Replicate: it needs the token, and the API it calls changes what it makes.
    Subclasses with settings of their own (a pinned version) name them after these."""

    settings_class: ClassVar[type[ProviderSettings]] = ReplicateSettings
    required_settings = (TOKEN_FIELD,)
    output_settings = ("replicate_base_url",)


@dataclass(frozen=True)
class ReplicateModel:
    """A model on Replicate: official models run by name at their latest version, community models by pinned id."""

    name: str  # "owner/name"
    version: str = ""  # 64-hex version id; empty for an official model
    version_setting: str = ""  # the variable that overrides `version`, named when Replicate does not know it

    @property
    def label(self) -> str:
        """What metadata reports as the model: the name, plus the version's first 8 hex digits when pinned."""
        return f"{self.name}:{self.version[:8]}" if self.version else self.name


@dataclass(frozen=True)
class OutputFile:
    data: bytes
    content_type: str  # as served; may be empty or generic, so callers sniff the bytes
    predict_time: float | None  # GPU seconds billed, from metrics.predict_time, when Replicate reports it


async def run_for_file(
    settings: ReplicateSettings,
    provider: str,
    model: ReplicateModel,
    model_input: dict[str, Any],
    check: Callable[[OutputFile], T],
    *,
    time_limit: float,
    max_bytes: int,
    download_seconds: float = 60.0,
) -> T:
    """Runs the model once, within `time_limit` seconds (or REPLICATE_TIMEOUT_SECONDS), and returns `check` of its
    first output file, downloaded size- and time-limited.

    `check` turns the bytes into the provider's result in a worker thread; a domain error it raises means the
    output is unusable, which is reported naming the prediction and never ordered again. If the caller is cancelled
    or the limit passes, the prediction is cancelled so it stops costing money.
    """
    limit = settings.replicate_timeout_seconds or time_limit
    client = _client(settings.secret(TOKEN_FIELD, provider), settings.replicate_base_url)
    job = _Prediction(client, provider, model, model_input, check, max_bytes, download_seconds)
    job.poll_seconds = settings.replicate_poll_interval
    job.allow_private = settings.allow_private_output_urls
    try:
        async with asyncio.timeout(limit):
            return await jobs.run(job)
    except TimeoutError as stop:
        raise ProviderUnavailable(f"Replicate {model.label} did not finish within {limit:g} s") from stop


class _Prediction(jobs.RemoteJob[Prediction, T]):
    """One prediction: created with `Prefer: wait`, polled, its first output file downloaded."""

    can_find = True

    def __init__(
        self,
        client: replicate.Client,
        provider: str,
        model: ReplicateModel,
        model_input: dict[str, Any],
        check: Callable[[OutputFile], T],
        max_bytes: int,
        download_seconds: float,
    ) -> None:
        self._client = client
        self._model = model
        self._input = model_input
        self._check = check
        self._sent_at = datetime.now(UTC)
        self.label = f"Replicate {model.label}"
        self.provider = provider
        self.max_bytes = max_bytes
        self.download_seconds = download_seconds

    async def create(self) -> Prediction:
        self._sent_at = datetime.now(UTC)
        try:
            if self._model.version:
                return await self._client.predictions.async_create(
                    version=self._model.version, input=self._input, wait=SYNC_WAIT_SECONDS
                )
            return await self._client.models.predictions.async_create(
                model=self._model.name, input=self._input, wait=SYNC_WAIT_SECONDS
            )
        except ReplicateError as error:
            raise jobs.create_failure(_mapped(error, self._model), status=error.status or 500) from error
        except httpx.HTTPError as error:
            raise jobs.create_failure(_mapped(error, self._model), cause=error) from error
        except ValidationError as error:
            raise _mapped(error, self._model) from error

    async def find(self) -> Prediction | None:
        """Replicate lists predictions newest first, with their input: ours is the newest of this model and input
        created since the order was sent (less a clock skew allowance). None once the list is older than that."""
        since = self._sent_at - CLOCK_SKEW
        cursor: Any = ...
        for _ in range(FIND_PAGES):
            try:
                page = await self._client.predictions.async_list(cursor)
            except (ReplicateError, httpx.HTTPError, ValidationError) as error:
                raise _mapped(error, self._model) from error
            for prediction in page.results:
                created = _timestamp(prediction.created_at)
                if created is not None and created < since:
                    return None
                if self._is_ours(prediction):
                    return prediction
            if not page.next:
                return None
            cursor = page.next
        raise ProviderUnavailable(f"more than {FIND_PAGES} pages of predictions were made since the order was sent")

    def _is_ours(self, prediction: Prediction) -> bool:
        if prediction.model != self._model.name or (self._model.version and prediction.version != self._model.version):
            return False
        sent = prediction.input or {}
        # A data: URI in the input may be listed as the file Replicate stored it in: its key is enough.
        return sent.keys() == self._input.keys() and all(
            (isinstance(value, str) and value.startswith("data:")) or sent[key] == value
            for key, value in self._input.items()
        )

    def job_id(self, job: Prediction) -> str:
        return job.id

    def ended(self, job: Prediction) -> bool:
        return job.status in _ENDED

    async def status(self, job: Prediction) -> Prediction:
        try:
            # The replicate transport itself retries this GET on 429, 503 and 504.
            return await self._client.predictions.async_get(job.id)
        except ValidationError as error:
            raise jobs.JobEnded(_mapped(error, self._model)) from error
        except (ReplicateError, httpx.HTTPError) as error:
            raise _mapped(error, self._model) from error

    def output_url(self, job: Prediction) -> str:
        if job.status == "failed":
            raise _failed(self._model, job.id, job.error)
        if job.status != "succeeded":
            raise ProviderUnavailable(f"Replicate {self._model.label}: prediction {job.id} was {job.status}")
        return _urls(job.output, self._model)[0]

    async def check(self, job: Prediction, output: Downloaded) -> T:
        predict_time = (job.metrics or {}).get("predict_time")
        seconds = float(predict_time) if predict_time is not None else None
        return await asyncio.to_thread(self._check, OutputFile(output.data, output.content_type, seconds))

    async def cancel(self, job: Prediction) -> None:
        await self._client.predictions.async_cancel(job.id)


def _timestamp(value: str | None) -> datetime | None:
    """An ISO 8601 time; one without a zone is Replicate's UTC."""
    try:
        parsed = datetime.fromisoformat(value) if value else None
    except ValueError:
        return None
    return parsed.replace(tzinfo=UTC) if parsed is not None and parsed.tzinfo is None else parsed


def _client(token: str, base_url: str) -> replicate.Client:
    """One client (and connection pool) per token and base URL."""
    key = (token, base_url)
    if key not in _clients:
        _clients[key] = replicate.Client(
            api_token=token,
            base_url=base_url,
            event_hooks={"request": [_patient_create], "response": [_keep_retry_after]},
        )
    return _clients[key]


async def _patient_create(request: httpx.Request) -> None:
    """Reads a `Prefer: wait=N` create for N + CREATE_READ_MARGIN_SECONDS.

    The client waits N + 0.5 s for the answer, and Replicate may answer just after that: the create then times out
    although the prediction exists. The margin lets the answer arrive, so the prediction's id is known.
    """
    prefer = request.headers.get("prefer", "")
    if request.method == "POST" and prefer.startswith("wait="):
        timeout = dict(request.extensions.get("timeout") or {})
        timeout["read"] = float(prefer.removeprefix("wait=")) + CREATE_READ_MARGIN_SECONDS
        request.extensions["timeout"] = timeout


class _Throttled(ReplicateError):
    """A 429 that keeps the Retry-After header, which ReplicateError.from_response drops."""

    retry_after: float | None


async def _keep_retry_after(response: httpx.Response) -> None:
    """Runs after the transport's own retries; turns a final 429 into a ReplicateError that knows its Retry-After."""
    if response.status_code != 429:
        return
    await response.aread()
    base = ReplicateError.from_response(response)
    error = _Throttled(base.type, base.title, 429, base.detail, base.instance)
    error.retry_after = retry_after_seconds(response.headers.get("retry-after"))
    raise error


def _mapped(error: Exception, model: ReplicateModel) -> ScenecastError:
    """Every Replicate failure becomes a domain error here, and nowhere else."""
    if isinstance(error, ReplicateError):
        status = error.status or 0
        detail = error.detail or error.title or "no detail given"
        if status == 429:
            retry_after = getattr(error, "retry_after", None)
            if retry_after is None and (match := _RESETS_IN.search(detail)):
                retry_after = float(match.group(1))
            return RateLimited(f"Replicate throttled {model.label} (429): {detail}", retry_after)
        if status in (401, 403):
            return FailedPrecondition(
                f"Replicate rejected {TOKEN_FIELD.upper()} ({status}: {detail}); set a valid API token"
            )
        if status == 404:
            hint = f"; set {model.version_setting} to a current version id" if model.version_setting else ""
            return FailedPrecondition(f"Replicate has no model or version {model.label} (404: {detail}){hint}")
        if status >= 500 or not status:
            return ProviderUnavailable(f"Replicate failed on {model.label} ({status or 'no status'}): {detail}")
        return InvalidArgument(f"Replicate refused the input for {model.label} ({status}): {detail}")
    if isinstance(error, ModelError):
        return _failed(model, error.prediction.id, error.prediction.error)
    if isinstance(error, ValidationError):
        # The client knows no 'aborted' status (a job whose Cancel-After passed before it started) and cannot parse it.
        return ProviderUnavailable(f"Replicate {model.label}: unreadable prediction (aborted?): {str(error)[:300]}")
    return ProviderUnavailable(f"Replicate could not be reached for {model.label}: {error!r}")


def _failed(model: ReplicateModel, prediction_id: str, reason: str | None) -> ScenecastError:
    text = reason or "no error given"
    if _SAFETY_REFUSAL.search(text):
        # A refusal repeats on retry; the caller has to change the prompt.
        return InvalidArgument(f"Replicate {model.label} refused the prompt (safety filter): {text}")
    return ProviderUnavailable(f"Replicate {model.label}: prediction {prediction_id} failed: {text}")


def _urls(output: Any, model: ReplicateModel) -> tuple[str, ...]:
    """Output as URL strings: the API gives a string or a list; FileOutput (from replicate.run) carries `.url`."""
    items = output if isinstance(output, list) else [output]
    urls = tuple(str(getattr(item, "url", item)) for item in items if item)
    if not urls:
        raise ProviderUnavailable(f"Replicate {model.label} succeeded but returned no output file")
    return urls
