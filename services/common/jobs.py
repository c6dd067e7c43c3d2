"""A paid job at a remote vendor in separate steps: ordered once, polled until it ends, its output downloaded."""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from collections.abc import Collection
from typing import Generic, TypeVar

import httpx

from services.common import retry
from services.common.download import Downloaded, fetch_output
from services.common.errors import JobFailed, ProviderUnavailable, ScenecastError

_LOGGER = logging.getLogger(__name__)

JobT = TypeVar("JobT")  # the vendor's view of one job: a prediction, a status answer
ResultT = TypeVar("ResultT")

# Status checks start at the job's poll interval and grow by this factor, up to POLL_MAX_FACTOR times it.
POLL_BACKOFF = 1.5
POLL_MAX_FACTOR = 15
# Attempts at downloading a finished job's output: a failed download is tried again, never the order.
DOWNLOAD_ATTEMPTS = 4
# Sends of one order under its idempotency key when the vendor's answer is lost (the vendor runs it once), and the
# wait between them, in seconds: a vendor answers a re-send that comes while the first is still being taken with 409.
IDEMPOTENT_CREATE_ATTEMPTS = 4
IDEMPOTENT_RESEND_SECONDS = 2.0
# Bounds the best-effort cancel sent when the caller gives up, so an abandoned call cannot linger.
CANCEL_TIMEOUT_SECONDS = 5.0


class CreateRefused(Exception):
    """The vendor did not take the order (a connect error, a 429): no job exists, so it may be ordered again."""

    def __init__(self, error: ScenecastError) -> None:
        super().__init__(str(error))
        self.error = error


class CreateUnknown(Exception):
    """The order may have reached the vendor (a timeout or reset after it was sent, a 5xx): a job may exist."""

    def __init__(self, error: ScenecastError) -> None:
        super().__init__(str(error))
        self.error = error


class JobEnded(Exception):
    """A status check found the job ended without a result; `error` says why (and whether ordering again helps)."""

    def __init__(self, error: ScenecastError) -> None:
        super().__init__(str(error))
        self.error = error


def create_failure(
    error: ScenecastError, *, status: int = 0, cause: BaseException | None = None, refused: Collection[int] = (429,)
) -> Exception:
    """What a failed create means: CreateRefused when the vendor surely did not take it (no connection, a `refused`
    status such as 429), CreateUnknown when it may have (a timeout or reset after sending, a 5xx), else `error`."""
    if isinstance(cause, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)):
        return CreateRefused(error)
    if cause is not None or status >= 500:
        return CreateUnknown(error)
    if status in refused:
        return CreateRefused(error)
    return error


class RemoteJob(ABC, Generic[JobT, ResultT]):
    """One order at a vendor. Subclasses speak the vendor's API; `run` decides what may be sent again."""

    # Names the vendor (and model) in messages, as in "Replicate black-forest-labs/flux-dev".
    label: str
    # The provider's name, for the retry log and the attempt metrics.
    provider: str
    # First wait between status checks, in seconds.
    poll_seconds: float = 1.0
    # The order carries an idempotency key: when its answer is lost, it is sent again under the same key.
    idempotent_create: bool = False
    # `find` can tell whether an order whose answer was lost created a job.
    can_find: bool = False
    max_bytes: int = 512 * 1024 * 1024
    download_seconds: float = 120.0
    # Output files may come from private addresses (ALLOW_PRIVATE_OUTPUT_URLS).
    allow_private: bool = False

    @abstractmethod
    async def create(self) -> JobT:
        """Sends the order once; raises CreateRefused or CreateUnknown when it failed, domain errors when refused."""

    async def find(self) -> JobT | None:
        """The job an order with a lost answer created, None when the vendor shows it created none (`can_find`).

        Raises a domain error when the vendor cannot tell.
        """
        return None

    @abstractmethod
    def job_id(self, job: JobT) -> str: ...

    @abstractmethod
    def ended(self, job: JobT) -> bool: ...

    @abstractmethod
    async def status(self, job: JobT) -> JobT:
        """Checks the job again; ProviderUnavailable means "check later", JobEnded that it ended unreadably."""

    @abstractmethod
    def output_url(self, job: JobT) -> str:
        """The output of an ended job; raises the vendor's reason when it failed."""

    async def download(self, url: str) -> Downloaded:
        # No credentials: output URLs are pre-signed or public, and a key must not travel to another host.
        return await fetch_output(
            url, max_bytes=self.max_bytes, timeout_seconds=self.download_seconds, allow_private=self.allow_private
        )

    @abstractmethod
    async def check(self, job: JobT, output: Downloaded) -> ResultT:
        """The result made of the downloaded bytes; raises a domain error when they are unusable."""

    async def cancel(self, job: JobT) -> None:
        """Stops the vendor's work when the caller gives up; vendors without a cancel do nothing."""
        return None


async def run(job: RemoteJob[JobT, ResultT]) -> ResultT:
    """Orders the job, waits for it to end, downloads and checks its output.

    Only what cannot cost a second job is repeated here: status checks, downloads, and an order the vendor did not
    take or can deduplicate. After the job exists, every failure is JobFailed naming it, which no retry policy repeats.
    A caller that gives up (cancellation, its time limit) cancels the job at the vendor.
    """
    current = await _order(job)
    job_id = job.job_id(current)
    _LOGGER.info("%s: job %s ordered", job.label, job_id)
    try:
        current = await _until_ended(job, current)
    except (TimeoutError, asyncio.CancelledError):
        await _cancel(job, current)
        raise
    except JobEnded as ended:
        raise ended.error from ended
    url = job.output_url(current)
    try:
        output = await retry.call_with_retries(
            lambda: job.download(url), attempts=DOWNLOAD_ATTEMPTS, deadline=None, provider=f"{job.provider}-download"
        )
    except ProviderUnavailable as error:
        raise JobFailed(
            f"{job.label}: job {job_id} finished, but its output could not be downloaded ({error}); "
            "it was not ordered again"
        ) from error
    try:
        return await job.check(current, output)
    except ScenecastError as error:
        raise JobFailed(
            f"{job.label}: job {job_id} finished with unusable output ({error}); it was not ordered again"
        ) from error


async def _order(job: RemoteJob[JobT, ResultT]) -> JobT:
    """The order, sent once; again only under an idempotency key, or when the vendor shows it created nothing."""
    for attempt in range(1, IDEMPOTENT_CREATE_ATTEMPTS + 1):
        try:
            return await job.create()
        except CreateRefused as refused:
            raise refused.error from refused  # no job exists: the caller's retry policy may order again
        except CreateUnknown as unknown:
            if job.idempotent_create:
                if attempt == IDEMPOTENT_CREATE_ATTEMPTS:
                    raise JobFailed(
                        f"{job.label}: the order's answer was lost {attempt} times ({unknown.error}); it may exist "
                        "at the vendor, so it is not ordered again; look for it in the vendor's dashboard"
                    ) from unknown
                _LOGGER.info("%s: the order's answer was lost (%s); sending it again under its key", job.label, unknown)
                await asyncio.sleep(max(getattr(unknown.error, "retry_after", None) or 0.0, IDEMPOTENT_RESEND_SECONDS))
                continue
            if not job.can_find:
                raise JobFailed(
                    f"{job.label} may have received the order ({unknown.error}) and cannot be asked whether it did; "
                    "it is not ordered again, so it is not paid twice; look for the job in the vendor's dashboard"
                ) from unknown
            found = await _found(job, unknown)
            if found is None:
                raise unknown.error from unknown  # the vendor shows no such job: ordering again is safe
            _LOGGER.info("%s: the order's answer was lost; found its job %s", job.label, job.job_id(found))
            return found
    raise AssertionError("unreachable: the last attempt returns or raises")


async def _found(job: RemoteJob[JobT, ResultT], unknown: CreateUnknown) -> JobT | None:
    try:
        return await job.find()
    except ScenecastError as error:
        raise JobFailed(
            f"{job.label} may have received the order ({unknown.error}), and looking for the job failed ({error}); "
            "it is not ordered again, so it is not paid twice; look for the job in the vendor's dashboard"
        ) from error


async def _until_ended(job: RemoteJob[JobT, ResultT], current: JobT) -> JobT:
    """Checks the job with backoff until it ends; a failed check (5xx, 429, reset) only delays the next one."""
    delay = job.poll_seconds
    while not job.ended(current):
        await asyncio.sleep(delay)
        try:
            current = await job.status(current)
        except ProviderUnavailable as error:
            _LOGGER.info("%s: checking job %s failed (%s); checking again", job.label, job.job_id(current), error)
            delay = max(delay, min(error.retry_after or 0.0, retry.MAX_RETRY_AFTER_SECONDS))
            continue
        delay = min(delay * POLL_BACKOFF, job.poll_seconds * POLL_MAX_FACTOR)
    return current


async def _cancel(job: RemoteJob[JobT, ResultT], current: JobT) -> None:
    """Best effort: the caller is already leaving, so a failure here is only logged."""
    job_id = job.job_id(current)
    try:
        await asyncio.wait_for(job.cancel(current), CANCEL_TIMEOUT_SECONDS)
        _LOGGER.info("%s: canceled job %s", job.label, job_id)
    except Exception as error:  # noqa: BLE001 - best effort, see docstring
        _LOGGER.warning("%s: could not cancel job %s: %r", job.label, job_id, error)
