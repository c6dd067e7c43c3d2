"""Replicate predictions for every media service: create, wait, cancel, download, and the one error mapping."""

from __future__ import annotations

import asyncio
import logging
import os
import re
from dataclasses import dataclass
from typing import Any

import httpx
import replicate
from pydantic.v1 import ValidationError  # replicate 1.0.7 models predictions with pydantic.v1
from replicate.exceptions import ModelError, ReplicateError

from services.common.download import Downloaded, fetch_output
from services.common.errors import (
    FailedPrecondition,
    InvalidArgument,
    ProviderUnavailable,
    RateLimited,
    ScenecastError,
)
from services.common.providers import require_env

_LOGGER = logging.getLogger(__name__)

TOKEN_ENV = "REPLICATE_API_TOKEN"
DEFAULT_BASE_URL = "https://api.replicate.com"
# Seconds the create asks Replicate to hold the request (`Prefer: wait=N`, 1-60): fast models (flux-dev, kokoro)
# usually finish inside it, and a short hold means we soon know the prediction's id and can cancel it if abandoned.
SYNC_WAIT_SECONDS = 15
# Bounds the best-effort cancel sent when the caller gives up, so an abandoned call cannot linger.
CANCEL_TIMEOUT_SECONDS = 5.0
# Overrides every provider's own time limit for a whole prediction (create plus polling), in seconds.
TIME_LIMIT_ENV = "REPLICATE_TIMEOUT_SECONDS"

_RESETS_IN = re.compile(r"~\s*(\d{1,4}(?:\.\d+)?)\s*s\b")
_SAFETY_REFUSAL = re.compile(r"nsfw|safety|unsafe|content polic|inappropriate|sensitive", re.IGNORECASE)
_clients: dict[tuple[str, str], replicate.Client] = {}


@dataclass(frozen=True)
class ReplicateModel:
    """A model on Replicate: official models run by name at their latest version, community models by pinned id."""

    name: str  # "owner/name"
    version: str = ""  # 64-hex version id; empty for an official model
    version_env: str = ""  # the variable that overrides `version`, named when Replicate does not know it

    @property
    def label(self) -> str:
        """What metadata reports as the model: the name, plus the version's first 8 hex digits when pinned."""
        return f"{self.name}:{self.version[:8]}" if self.version else self.name


@dataclass(frozen=True)
class PredictionOutput:
    urls: tuple[str, ...]  # https, http or data: URLs, in the model's output order
    predict_time: float | None  # GPU seconds billed, from metrics.predict_time, when Replicate reports it
    prediction_id: str


@dataclass(frozen=True)
class OutputFile:
    data: bytes
    content_type: str  # as served; may be empty or generic, so callers sniff the bytes
    predict_time: float | None


async def run_prediction(
    provider: str, model: ReplicateModel, model_input: dict[str, Any], *, time_limit: float
) -> PredictionOutput:
    """Creates a prediction and waits for it to end, within `time_limit` seconds (or REPLICATE_TIMEOUT_SECONDS).

    The create is not retried here (the servicer's call_with_retries is the retry layer); the replicate transport
    retries the polling GETs itself on 429/503/504. If the caller is cancelled or the limit passes, the prediction is
    cancelled so it stops costing money.
    """
    client = _client(require_env(TOKEN_ENV, provider))
    limit = float(os.environ.get(TIME_LIMIT_ENV) or time_limit)
    wait = max(1, min(SYNC_WAIT_SECONDS, int(limit)))
    prediction = None
    try:
        async with asyncio.timeout(limit):
            if model.version:
                prediction = await client.predictions.async_create(version=model.version, input=model_input, wait=wait)
            else:
                prediction = await client.models.predictions.async_create(
                    model=model.name, input=model_input, wait=wait
                )
            _LOGGER.info("replicate %s: prediction %s is %s", model.label, prediction.id, prediction.status)
            # Polls every REPLICATE_POLL_INTERVAL seconds (read when the cached client was built) until it ends.
            await prediction.async_wait()
    except (TimeoutError, asyncio.CancelledError) as stop:
        if prediction is not None:
            await _cancel(client, prediction.id)
        if isinstance(stop, asyncio.CancelledError):
            raise
        raise ProviderUnavailable(f"Replicate {model.label} did not finish within {limit:g} s") from stop
    except (ReplicateError, ModelError, httpx.HTTPError, ValidationError) as error:
        raise _mapped(error, model) from error

    assert prediction is not None  # the create returned, or the try raised
    if prediction.status == "failed":
        raise _failed(model, prediction.id, prediction.error)
    if prediction.status != "succeeded":
        raise ProviderUnavailable(f"Replicate {model.label}: prediction {prediction.id} was {prediction.status}")
    predict_time = (prediction.metrics or {}).get("predict_time")
    return PredictionOutput(
        urls=_urls(prediction.output, model),
        predict_time=float(predict_time) if predict_time is not None else None,
        prediction_id=prediction.id,
    )


async def run_for_file(
    provider: str,
    model: ReplicateModel,
    model_input: dict[str, Any],
    *,
    time_limit: float,
    max_bytes: int,
    download_seconds: float = 60.0,
) -> OutputFile:
    """Runs the model and downloads its first output file, size- and time-limited."""
    output = await run_prediction(provider, model, model_input, time_limit=time_limit)
    # No Authorization header: output URLs are public, and the token must not travel to another host.
    downloaded: Downloaded = await fetch_output(output.urls[0], max_bytes=max_bytes, timeout_seconds=download_seconds)
    return OutputFile(downloaded.data, downloaded.content_type, output.predict_time)


def _client(token: str) -> replicate.Client:
    """One client (and connection pool) per token and base URL, both read at request time."""
    base_url = os.environ.get("REPLICATE_BASE_URL") or DEFAULT_BASE_URL
    key = (token, base_url)
    if key not in _clients:
        _clients[key] = replicate.Client(
            api_token=token, base_url=base_url, event_hooks={"response": [_keep_retry_after]}
        )
    return _clients[key]


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
    error.retry_after = _seconds(response.headers.get("retry-after"))
    raise error


def _seconds(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:  # an HTTP date: rare here, and the detail or our own backoff will do
        return None


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
            return FailedPrecondition(f"Replicate rejected {TOKEN_ENV} ({status}: {detail}); set a valid API token")
        if status == 404:
            hint = f"; set {model.version_env} to a current version id" if model.version_env else ""
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


async def _cancel(client: replicate.Client, prediction_id: str) -> None:
    """Best effort: the caller is already leaving, so a failure here is only logged."""
    try:
        await asyncio.wait_for(client.predictions.async_cancel(prediction_id), CANCEL_TIMEOUT_SECONDS)
        _LOGGER.info("replicate: canceled prediction %s", prediction_id)
    except Exception as error:  # noqa: BLE001 - best effort, see docstring
        _LOGGER.warning("replicate: could not cancel prediction %s: %r", prediction_id, error)
