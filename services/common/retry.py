"""The one retry policy: bounded, jittered attempts for failures that can succeed later, within the call's deadline."""

from __future__ import annotations

import email.utils
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc
import httpx
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

from services.common.errors import (
    FailedPrecondition,
    InvalidArgument,
    ProviderUnavailable,
    RateLimited,
    ScenecastError,
)
from services.common.observability import record_provider_attempt

_LOGGER = logging.getLogger(__name__)

T = TypeVar("T")

# Jittered exponential backoff between attempts, in seconds, unless the provider says how long to wait.
BACKOFF_MIN_SECONDS = 0.5
BACKOFF_MAX_SECONDS = 8.0
# A provider asking for a longer pause than this is treated as a persistent failure, not waited out.
MAX_RETRY_AFTER_SECONDS = 120.0


async def call_with_retries(
    attempt: Callable[[], Awaitable[T]], *, attempts: int, deadline: float | None, provider: str
) -> T:
    """Runs `attempt` until it succeeds, retrying only ProviderUnavailable (429, 5xx, timeouts, resets).

    `deadline` is a time.monotonic() value (from the gRPC call's deadline): no retry starts whose wait would end
    after it. Anything else (a 4xx, a content-policy refusal, a missing key) is raised at once.
    """
    backoff = wait_random_exponential(multiplier=BACKOFF_MIN_SECONDS, max=BACKOFF_MAX_SECONDS)

    def wait(state: RetryCallState) -> float:
        advised = getattr(state.outcome.exception() if state.outcome else None, "retry_after", None)
        return float(advised) if advised is not None else backoff(state)

    def out_of_time(state: RetryCallState) -> bool:
        if state.upcoming_sleep > MAX_RETRY_AFTER_SECONDS:
            return True
        return deadline is not None and time.monotonic() + state.upcoming_sleep >= deadline

    def log(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        _LOGGER.info(
            "%s: attempt %d failed (%s); retrying in %.1f s",
            provider,
            state.attempt_number,
            error,
            state.upcoming_sleep,
        )

    async def counted() -> T:
        try:
            result = await attempt()
        except ScenecastError as error:
            record_provider_attempt(provider, error.code.name)
            raise
        record_provider_attempt(provider, "OK")
        return result

    retrying = AsyncRetrying(
        retry=retry_if_exception_type(ProviderUnavailable),
        stop=stop_after_attempt(max(1, attempts)) | out_of_time,
        wait=wait,
        before_sleep=log,
        reraise=True,
    )
    return await retrying(counted)


def retry_after_seconds(value: str | None) -> float | None:
    """A Retry-After header in seconds: a number of seconds, or an HTTP date; None when absent or unreadable."""
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def http_status_error(
    response: httpx.Response, *, throttled: str, failed: str, denied: str, refused: str, missing: str | None = None
) -> ScenecastError:
    """The domain error a vendor's failed HTTP answer means, each with the caller's message: 429 (RateLimited) and
    5xx (ProviderUnavailable) are retried after the vendor's Retry-After; 401/403 (`denied`) and, when `missing` is
    given, 404 are the service's configuration (FailedPrecondition); any other 4xx is the request (InvalidArgument)."""
    code = response.status_code
    retry_after = retry_after_seconds(response.headers.get("retry-after"))
    if code == 429:
        return RateLimited(throttled, retry_after)
    if code >= 500:
        return ProviderUnavailable(failed, retry_after)
    if code in (401, 403):
        return FailedPrecondition(denied)
    if code == 404 and missing is not None:
        return FailedPrecondition(missing)
    return InvalidArgument(refused)


def call_deadline(context: grpc.aio.ServicerContext) -> float | None:
    """The incoming call's deadline as a time.monotonic() value, or None when the caller set none."""
    remaining = context.time_remaining()
    return time.monotonic() + remaining if remaining is not None else None
