"""Domain errors, and the one place where they become gRPC status codes."""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, TypeVar

import grpc

from services.common.observability import CallRecord, server_call
from services.common.redact import redact

_LOGGER = logging.getLogger(__name__)


class ScenecastError(Exception):
    """An error whose message is written for the caller: it names the field or cause and the fix. `trailers` is
    trailing metadata sent with its status, for what the caller must know beside the message (what was billed)."""

    code = grpc.StatusCode.INTERNAL
    trailers: tuple[tuple[str, str | bytes], ...] = ()


class InvalidArgument(ScenecastError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class FailedPrecondition(ScenecastError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class MissingCredential(FailedPrecondition):
    """A provider needs an environment variable that is not set."""

    def __init__(self, variable: str, provider: str) -> None:
        super().__init__(f"provider '{provider}' needs the environment variable {variable}; set it on the service")


class ProviderUnavailable(ScenecastError):
    """A provider failed in a way that may succeed on a later attempt (5xx, timeout, reset, truncated output).

    `retry_after` is the provider's own advice in seconds (a Retry-After header), when it gave one.
    """

    code = grpc.StatusCode.UNAVAILABLE

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RateLimited(ProviderUnavailable):
    """The provider said 429: retried like any transient failure, reported as RESOURCE_EXHAUSTED when it persists."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class JobFailed(ScenecastError):
    """A vendor job was ordered (and may be billed) but gave no usable result: never retried by the service, since
    a retry would order, and pay for, a new job. The message names the vendor and, when known, the job's id."""

    code = grpc.StatusCode.UNAVAILABLE


class QuotaExceeded(ScenecastError):
    """A limit that waiting will not lift (a budget, an exhausted account)."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class NotFound(ScenecastError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(ScenecastError):
    code = grpc.StatusCode.ALREADY_EXISTS


class Cancelled(ScenecastError):
    code = grpc.StatusCode.CANCELLED


class MediaError(ScenecastError):
    """Media could not be processed (FFmpeg failed on input that passed validation).

    A failed FFmpeg run also carries its command line and the tail of its stderr, for the logs and for whoever
    debugs it: the message the caller sees stays the short reason (the command names the service's own files). Both
    are redacted here, so no configured secret (a token in a URL, a password) is kept in the error.
    """

    code = grpc.StatusCode.INTERNAL

    def __init__(self, message: str, argv: Sequence[str] = (), stderr_tail: str = "") -> None:
        super().__init__(message)
        self.argv = tuple(redact(arg) for arg in argv)
        self.stderr_tail = redact(stderr_tail)


# Longest status message sent, in characters: the message travels in a header (UTF-8, then percent-encoded: up to
# 12 bytes a character), and one over gRPC's 8 KiB metadata limit turns the real status into RESOURCE_EXHAUSTED.
MAX_STATUS_CHARS = 500
# How much of a caller's value a message repeats.
QUOTED_CHARS = 40


def quoted(value: str) -> str:
    """The caller's value for a message: quoted, and cut to a short prefix (with its length) when it is long."""
    if len(value) <= QUOTED_CHARS:
        return repr(value)
    return f"{value[:QUOTED_CHARS]!r}... ({len(value)} characters)"


def status_message(message: str) -> str:
    """What a caller sees of an error: without configured secrets, and short enough to arrive as sent."""
    message = redact(message)
    return message if len(message) <= MAX_STATUS_CHARS else f"{message[:MAX_STATUS_CHARS]}... (cut)"


# Trailing metadata key set on every status a servicer returns itself.
ORIGIN_KEY = "x-scenecast-error-origin"
# Trailing metadata of a failed call that was billed anyway: the serialized calls, so the caller records the spend.
BILLED_CALLS_KEY = "scenecast-billed-calls-bin"

Method = TypeVar("Method", bound=Callable[..., Any])


def rpc_method(method: Method) -> Method:
    """Wraps every servicer method (unary or streaming) the same way.

    It runs the call inside `observability.server_call` (trace context, render id, metrics) and turns domain
    errors into gRPC statuses: the one place where that mapping happens. Unexpected exceptions are logged with their
    traceback and reported as INTERNAL without internals.
    """
    name = method.__name__

    async def abort(request: Any, context: grpc.aio.ServicerContext, error: Exception, record: CallRecord) -> None:
        if isinstance(request, AsyncIterator):
            await _drain(request)
        if isinstance(error, ScenecastError):
            record.code = error.code.name
            _LOGGER.info("%s: %s %s", name, error.code.name, error)
            # Marks the status as the service's own answer (its retries already spent), so a caller's replica
            # failover retries only UNAVAILABLE that comes from the transport, never multiplying provider attempts.
            await context.abort(error.code, status_message(str(error)), ((ORIGIN_KEY, "service"), *error.trailers))
        record.code = grpc.StatusCode.INTERNAL.name
        _LOGGER.exception("%s failed", name, exc_info=error)
        await context.abort(grpc.StatusCode.INTERNAL, f"internal error in {name}; see service logs")

    if inspect.isasyncgenfunction(method):

        @functools.wraps(method)
        async def stream_wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            with server_call(name, context) as record:
                try:
                    async for item in method(self, request, context):
                        record.bytes_sent += item.ByteSize()
                        yield item
                except asyncio.CancelledError:
                    record.code = grpc.StatusCode.CANCELLED.name
                    raise
                except Exception as error:  # noqa: BLE001 - mapped to a status in one place
                    if isinstance(error, grpc.aio.AbortError):
                        raise
                    await abort(request, context, error, record)

        return stream_wrapper  # type: ignore[return-value]

    @functools.wraps(method)
    async def unary_wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        with server_call(name, context) as record:
            try:
                return await method(self, request, context)
            except Exception as error:  # noqa: BLE001 - mapped to a status in one place
                if isinstance(error, grpc.aio.AbortError):
                    raise
                await abort(request, context, error, record)

    return unary_wrapper  # type: ignore[return-value]


# How long a failed client-streaming call keeps reading the client's remaining messages before it aborts.
_DRAIN_SECONDS = 5.0


async def _drain(requests: AsyncIterator[Any]) -> None:
    """Reads what the client is still sending, so it receives our status rather than a failed write.

    grpc.aio clients that are still writing when the server aborts report INTERNAL ("Internal error from Core")
    instead of the server's status; draining first lets the precise error reach the caller.
    """

    async def consume() -> None:
        async for _ in requests:
            pass

    try:
        await asyncio.wait_for(consume(), _DRAIN_SECONDS)
    except Exception:  # noqa: BLE001 - best effort: the abort that follows carries the real error
        return
