"""The retry policy (what is retried, how often, within which deadline)."""

import email.utils
import time

import httpx
import pytest

from services.common.errors import FailedPrecondition, InvalidArgument, ProviderUnavailable, RateLimited
from services.common.retry import call_with_retries, http_status_error, retry_after_seconds


class Flaky:
    """Fails with `errors` in turn, then returns "ok"; counts calls."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


async def test_transient_failures_are_retried_honouring_retry_after() -> None:
    flaky = Flaky(RateLimited("429", retry_after=0.2), ProviderUnavailable("503", retry_after=0))
    started = time.monotonic()
    assert await call_with_retries(flaky, attempts=4, deadline=None, provider="t") == "ok"
    assert flaky.calls == 3
    assert time.monotonic() - started >= 0.2


@pytest.mark.parametrize("error", [InvalidArgument("refused"), FailedPrecondition("no key")])
async def test_permanent_failures_are_not_retried(error: Exception) -> None:
    flaky = Flaky(error)
    with pytest.raises(type(error)):
        await call_with_retries(flaky, attempts=4, deadline=None, provider="t")
    assert flaky.calls == 1


async def test_attempts_are_bounded() -> None:
    flaky = Flaky(*(ProviderUnavailable("503", retry_after=0) for _ in range(10)))
    with pytest.raises(ProviderUnavailable):
        await call_with_retries(flaky, attempts=3, deadline=None, provider="t")
    assert flaky.calls == 3


async def test_no_retry_waits_past_the_deadline_or_a_long_retry_after() -> None:
    flaky = Flaky(RateLimited("429", retry_after=5))
    with pytest.raises(RateLimited):
        await call_with_retries(flaky, attempts=4, deadline=time.monotonic() + 1, provider="t")
    assert flaky.calls == 1
    patient = Flaky(RateLimited("429", retry_after=3600))
    with pytest.raises(RateLimited):
        await call_with_retries(patient, attempts=4, deadline=None, provider="t")
    assert patient.calls == 1


async def test_backoff_is_jittered() -> None:
    waits = []
    for _ in range(3):
        flaky = Flaky(ProviderUnavailable("503"))
        started = time.monotonic()
        await call_with_retries(flaky, attempts=2, deadline=None, provider="t")
        waits.append(time.monotonic() - started)
    assert all(w <= 1.0 for w in waits)
    assert len({round(w, 3) for w in waits}) > 1


def test_retry_after_is_read_as_seconds_or_an_http_date() -> None:
    in_ten_seconds = email.utils.formatdate(time.time() + 10, usegmt=True)
    assert retry_after_seconds("7") == 7.0 and retry_after_seconds("-3") == 0.0
    assert 5.0 <= (retry_after_seconds(in_ten_seconds) or 0.0) <= 10.0
    assert retry_after_seconds(email.utils.formatdate(time.time() - 60, usegmt=True)) == 0.0
    assert retry_after_seconds("soon") is None and retry_after_seconds(None) is None


@pytest.mark.parametrize(
    ("status", "kind", "message", "retry_after"),
    [
        (429, RateLimited, "throttled", 7.0),
        (503, ProviderUnavailable, "failed", 7.0),
        (401, FailedPrecondition, "denied", None),
        (403, FailedPrecondition, "denied", None),
        (404, FailedPrecondition, "missing", None),
        (400, InvalidArgument, "refused", None),
    ],
)
def test_a_vendor_http_failure_becomes_its_domain_error(
    status: int, kind: type[Exception], message: str, retry_after: float | None
) -> None:
    response = httpx.Response(status, headers={"retry-after": "7"})
    messages = {name: name for name in ("throttled", "failed", "denied", "refused", "missing")}
    error = http_status_error(response, **messages)
    assert type(error) is kind and str(error) == message
    assert getattr(error, "retry_after", None) == retry_after


def test_a_404_is_the_request_when_no_missing_message_is_given() -> None:
    error = http_status_error(httpx.Response(404), throttled="t", failed="f", denied="d", refused="refused")
    assert type(error) is InvalidArgument and str(error) == "refused"
