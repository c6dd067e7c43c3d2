"""Bearer-token check on a server's one service (the gateway's RenderService, or a media service called by the gateway);
health and reflection stay open for probes. `python -m services.common.auth TOKEN_FILE` makes a service token file."""

from __future__ import annotations

import argparse
import hmac
import logging
import os
import secrets
import stat
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import grpc

from services.common.observability import RPC_REQUESTS
from services.common.tls import AUTHORIZATION_KEY

_LOGGER = logging.getLogger(__name__)

REFUSAL = "missing or invalid bearer token; send `authorization: Bearer <token>`"


class BearerTokenInterceptor(grpc.aio.ServerInterceptor):
    """Refuses calls to `service` that do not carry one of `tokens` as `authorization: Bearer <token>`.

    Other services on the same server (health, reflection) pass untouched. Tokens are compared in constant time and
    never logged.
    """

    def __init__(self, tokens: Sequence[str], service: str) -> None:
        if not tokens:
            raise ValueError("BearerTokenInterceptor needs at least one token; leave it out to turn auth off")
        self._tokens = tuple(token.encode() for token in tokens)
        self._prefix = f"/{service}/"

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or not method.startswith(self._prefix):
            return handler
        if self._accepts(handler_call_details.invocation_metadata):
            return handler
        return _refusal(handler, method.removeprefix(self._prefix))

    def _accepts(self, metadata: Sequence[tuple[str, Any]] | None) -> bool:
        values = [value for key, value in metadata or () if key == AUTHORIZATION_KEY]
        if len(values) != 1 or not isinstance(values[0], str):
            return False
        scheme, _, token = values[0].strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return False
        given = token.strip().encode()
        # Every accepted token is compared, so the time taken says nothing about which one (if any) came close.
        matches = [hmac.compare_digest(given, accepted) for accepted in self._tokens]
        return any(matches)


def _refusal(handler: grpc.RpcMethodHandler, name: str) -> grpc.RpcMethodHandler:
    """A handler of the same shape as `handler` that answers UNAUTHENTICATED without reading the request.

    No deserializer is given, so nothing the caller sent is parsed before it has authenticated.
    """

    async def refuse(request: Any, context: grpc.aio.ServicerContext) -> None:
        _LOGGER.info("%s: UNAUTHENTICATED: missing or invalid bearer token from %s", name, context.peer())
        RPC_REQUESTS.labels(name, grpc.StatusCode.UNAUTHENTICATED.name).inc()
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, REFUSAL)

    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(refuse)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(refuse)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(refuse)
    return grpc.unary_unary_rpc_method_handler(refuse)


def write_token_file(path: str) -> bool:
    """Writes a fresh random token to `path` (mode 0600, never through a link) unless the file exists; returns whether
    it wrote one.

    docker-compose runs this once before the services start, so compose turns service authentication on with no
    secret for the user to make or commit; keeping an existing file keeps the token stable across `up` runs, so a
    service restarted alone still matches the others.
    """
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            raise ValueError(f"{path} exists and is not a regular file (a link?); remove it") from None
        return False
    with os.fdopen(descriptor, "w") as handle:
        handle.write(secrets.token_hex(32))
    return True


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m services.common.auth",
        description="Writes a random service token to TOKEN_FILE (for SERVICE_AUTH_TOKENS_FILE) unless it exists.",
    )
    parser.add_argument("token_file")
    path = parser.parse_args().token_file
    wrote = write_token_file(path)
    # The token itself is never printed.
    print(f"{path}: {'wrote a new service token' if wrote else 'kept the existing service token'}", file=sys.stderr)


if __name__ == "__main__":
    main()
