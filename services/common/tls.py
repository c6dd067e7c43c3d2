"""TLS for the services and their callers: server credentials (mutual TLS when asked) and client channels."""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from services.common.settings import ServiceSettings

AUTHORIZATION_KEY = "authorization"
ChannelOptions = Sequence[tuple[str, Any]]


def read_pem(path: str | Path, name: str) -> bytes:
    """The bytes of a PEM file; `name` (a setting or flag) says in the error which value points at a bad file."""
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise ValueError(f"{name}={path}: cannot read it ({error.strerror})") from error


@dataclass(frozen=True)
class ServerTls:
    """A server's certificate chain and key, and the CA that clients' certificates must chain to (mutual TLS)."""

    cert_chain: bytes
    private_key: bytes
    client_ca: bytes | None = None

    @classmethod
    def from_settings(cls, settings: ServiceSettings) -> ServerTls | None:
        """None when the settings ask for plaintext; the files were checked when the settings were read."""
        if not settings.tls_cert_file:
            return None
        return cls(
            cert_chain=read_pem(settings.tls_cert_file, "TLS_CERT_FILE"),
            private_key=read_pem(settings.tls_key_file, "TLS_KEY_FILE"),
            client_ca=read_pem(settings.tls_client_ca_file, "TLS_CLIENT_CA_FILE")
            if settings.tls_client_ca_file
            else None,
        )

    @property
    def mutual(self) -> bool:
        return self.client_ca is not None

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials(
            [(self.private_key, self.cert_chain)],
            root_certificates=self.client_ca,
            require_client_auth=self.mutual,
        )


def channel_credentials(
    *, ca_file: str | Path | None = None, cert_file: str | Path | None = None, key_file: str | Path | None = None
) -> grpc.ChannelCredentials:
    """Verifies the server against `ca_file` (the system's roots when None) and, given `cert_file` and `key_file`,
    presents that client certificate (for servers that require mutual TLS)."""
    if bool(cert_file) != bool(key_file):
        raise ValueError("a client certificate needs both its certificate file and its key file")
    return grpc.ssl_channel_credentials(
        root_certificates=read_pem(ca_file, "ca_file") if ca_file else None,
        private_key=read_pem(key_file, "key_file") if key_file else None,
        certificate_chain=read_pem(cert_file, "cert_file") if cert_file else None,
    )


def _secure_options(options: ChannelOptions, server_name: str | None) -> list[tuple[str, Any]]:
    """`server_name` replaces the target's host when the certificate is checked (an IP target, a test CA's name)."""
    return [*options, *((("grpc.ssl_target_name_override", server_name),) if server_name else ())]


def client_channel(
    address: str,
    *,
    tls: bool = False,
    ca_file: str | Path | None = None,
    cert_file: str | Path | None = None,
    key_file: str | Path | None = None,
    server_name: str | None = None,
    token: str | None = None,
    options: ChannelOptions = (),
) -> grpc.Channel:
    """A blocking channel: TLS when `tls` is true or a CA or client certificate is given, plaintext otherwise.

    With `token`, every call carries `authorization: Bearer <token>` (what the gateway asks for when
    GATEWAY_AUTH_TOKENS is set). The token is sent over plaintext too, for gateways behind a TLS-terminating proxy.
    """
    if tls or ca_file or cert_file:
        credentials = channel_credentials(ca_file=ca_file, cert_file=cert_file, key_file=key_file)
        channel = grpc.secure_channel(address, credentials, options=_secure_options(options, server_name))
    else:
        channel = grpc.insecure_channel(address, options=list(options))
    return grpc.intercept_channel(channel, _BearerToken(token)) if token else channel


def aio_client_channel(
    address: str,
    *,
    tls: bool = False,
    ca_file: str | Path | None = None,
    cert_file: str | Path | None = None,
    key_file: str | Path | None = None,
    server_name: str | None = None,
    token: str | None = None,
    options: ChannelOptions = (),
) -> grpc.aio.Channel:
    """The asyncio counterpart of `client_channel`: how the gateway dials the media services (`token`: the service
    token)."""
    interceptors = _aio_bearer_token(token) if token else None
    if tls or ca_file or cert_file:
        credentials = channel_credentials(ca_file=ca_file, cert_file=cert_file, key_file=key_file)
        return grpc.aio.secure_channel(
            address, credentials, options=_secure_options(options, server_name), interceptors=interceptors
        )
    return grpc.aio.insecure_channel(address, options=list(options), interceptors=interceptors)


def _aio_bearer_token(token: str) -> list[grpc.aio.ClientInterceptor]:
    """Interceptors that add `authorization: Bearer <token>` to every call of an asyncio channel, one per call shape
    (grpc.aio picks an interceptor by the shape it implements)."""
    entry = (AUTHORIZATION_KEY, f"Bearer {token}")

    def with_token(details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        metadata = grpc.aio.Metadata(*(details.metadata or ()), entry)
        return grpc.aio.ClientCallDetails(
            details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
        )

    class UnaryUnary(grpc.aio.UnaryUnaryClientInterceptor):
        async def intercept_unary_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
            return await continuation(with_token(client_call_details), request)

    class UnaryStream(grpc.aio.UnaryStreamClientInterceptor):
        async def intercept_unary_stream(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
            return await continuation(with_token(client_call_details), request)

    class StreamUnary(grpc.aio.StreamUnaryClientInterceptor):
        async def intercept_stream_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
            return await continuation(with_token(client_call_details), request)

    class StreamStream(grpc.aio.StreamStreamClientInterceptor):
        async def intercept_stream_stream(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
            return await continuation(with_token(client_call_details), request)

    return [UnaryUnary(), UnaryStream(), StreamUnary(), StreamStream()]


class _CallDetails(
    collections.namedtuple(
        "_CallDetails", ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression")
    ),
    grpc.ClientCallDetails,
):
    """The call details handed on by `_BearerToken`, with the authorization metadata added."""


class _BearerToken(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds `authorization: Bearer <token>` to every call of a blocking channel."""

    def __init__(self, token: str) -> None:
        self._entry = (AUTHORIZATION_KEY, f"Bearer {token}")

    def _with_token(self, details: grpc.ClientCallDetails) -> _CallDetails:
        return _CallDetails(
            details.method,
            details.timeout,
            (*(details.metadata or ()), self._entry),
            details.credentials,
            getattr(details, "wait_for_ready", None),
            getattr(details, "compression", None),
        )

    def intercept_unary_unary(
        self, continuation: Callable[..., Any], client_call_details: grpc.ClientCallDetails, request: Any
    ) -> Any:
        return continuation(self._with_token(client_call_details), request)

    def intercept_unary_stream(
        self, continuation: Callable[..., Any], client_call_details: grpc.ClientCallDetails, request: Any
    ) -> Any:
        return continuation(self._with_token(client_call_details), request)

    def intercept_stream_unary(
        self,
        continuation: Callable[..., Any],
        client_call_details: grpc.ClientCallDetails,
        request_iterator: Iterator[Any],
    ) -> Any:
        return continuation(self._with_token(client_call_details), request_iterator)

    def intercept_stream_stream(
        self,
        continuation: Callable[..., Any],
        client_call_details: grpc.ClientCallDetails,
        request_iterator: Iterator[Any],
    ) -> Any:
        return continuation(self._with_token(client_call_details), request_iterator)
