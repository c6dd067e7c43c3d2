"""The openai SDK at the edge: OpenAI's settings, one cached client per key and base URL, and the one mapping of its
errors."""

from __future__ import annotations

import functools

import openai
from pydantic import SecretStr

from services.common.errors import (
    FailedPrecondition,
    InvalidArgument,
    ProviderUnavailable,
    QuotaExceeded,
    RateLimited,
    ScenecastError,
)
from services.common.providers import ProviderSettings
from services.common.retry import retry_after_seconds

# Seconds one OpenAI request may take (the SDK's default is 600 s); a slower answer is retried by our own policy.
REQUEST_TIMEOUT_SECONDS = 120.0
# 408 and 409 are transient at OpenAI (the SDK itself retries them), unlike every other 4xx.
_TRANSIENT_4XX = frozenset({408, 409})


class OpenAISettings(ProviderSettings):
    """What every OpenAI provider needs."""

    # The API key; a request for an OpenAI provider without it fails with FAILED_PRECONDITION naming it.
    openai_api_key: SecretStr = SecretStr("")
    # Base URL of an OpenAI-compatible server (a proxy, a fake in tests); empty: OpenAI's own.
    openai_base_url: str = ""


def openai_client(settings: OpenAISettings, provider: str) -> openai.AsyncOpenAI:
    """The client for the settings' key and base URL; MissingCredential names OPENAI_API_KEY when it is unset."""
    return _client(settings.secret("openai_api_key", provider), settings.openai_base_url or None)


@functools.lru_cache(maxsize=4)
def _client(key: str, base_url: str | None) -> openai.AsyncOpenAI:
    # max_retries=0: services/common/retry.py is the single retry layer, so attempts and deadlines stay bounded.
    return openai.AsyncOpenAI(api_key=key, base_url=base_url, max_retries=0, timeout=REQUEST_TIMEOUT_SECONDS)


def map_openai_error(error: openai.OpenAIError, provider: str, field: str, not_found_hint: str = "") -> ScenecastError:
    """Turns an SDK exception into the domain error the caller can act on.

    `field` names the request field whose text OpenAI judged (for content-policy refusals); `not_found_hint` is
    appended when the model is missing upstream.
    """
    message = _provider_message(error)
    code = getattr(error, "code", None)
    if isinstance(error, openai.RateLimitError):
        if code == "insufficient_quota":
            return QuotaExceeded(f"{provider}: the OpenAI account is out of quota: {message}")
        return RateLimited(f"{provider}: OpenAI rate limit: {message}", _retry_after(error))
    if isinstance(error, (openai.APIConnectionError, openai.InternalServerError)):
        return ProviderUnavailable(f"{provider}: OpenAI is unreachable or failing: {message}")
    if code == "content_policy_violation":
        return InvalidArgument(f"{field} was refused by OpenAI's safety system: {message}; rephrase it")
    if isinstance(error, openai.NotFoundError) or code == "model_not_found":
        return FailedPrecondition(f"{provider}: OpenAI does not serve the model: {message}. {not_found_hint}".strip())
    if isinstance(error, openai.AuthenticationError):
        # OpenAI's own message quotes part of the key: left out, so no fragment of it reaches logs or callers.
        return FailedPrecondition(f"{provider}: OpenAI rejected OPENAI_API_KEY (401); check the key")
    if isinstance(error, openai.PermissionDeniedError):
        return FailedPrecondition(f"{provider}: OpenAI rejected OPENAI_API_KEY for this request: {message}")
    if isinstance(error, openai.APIStatusError):
        if error.status_code in _TRANSIENT_4XX:
            return ProviderUnavailable(f"{provider}: OpenAI answered {error.status_code}: {message}")
        return InvalidArgument(f"{provider}: OpenAI rejected the request: {message}")
    # Anything else (a response the SDK could not parse, for one) is a broken answer: worth another attempt.
    return ProviderUnavailable(f"{provider}: unusable answer from OpenAI: {message}")


def _provider_message(error: openai.OpenAIError) -> str:
    """OpenAI's own words (`message` in the error body), without the SDK's "Error code: 400 - " or a final stop."""
    body = getattr(error, "body", None)
    if isinstance(body, dict) and isinstance(body.get("message"), str) and body["message"]:
        return str(body["message"]).rstrip(". ")
    return str(error).rstrip(". ")


def _retry_after(error: openai.APIStatusError) -> float | None:
    """Seconds to wait, from `retry-after-ms` or `retry-after` (seconds or an HTTP date), as the SDK reads them."""
    headers = error.response.headers
    try:
        if (milliseconds := headers.get("retry-after-ms")) is not None:
            return max(0.0, float(milliseconds) / 1000)
    except ValueError:
        pass
    return retry_after_seconds(headers.get("retry-after"))
