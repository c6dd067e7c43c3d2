"""`python -m services.common.healthcheck [ADDRESS] [--service NAME]`: exit 0 when the server reports SERVING."""

from __future__ import annotations

import argparse
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.common.tls import channel_credentials

# Wildcard hosts a server listens on, and the loopback address that reaches it from inside the same container.
_LOOPBACK = {"0.0.0.0": "127.0.0.1", "[::]": "[::1]"}


class _ListenSettings(BaseSettings):
    """The service's LISTEN_ADDRESS, read as the service reads it (environment, then the working folder's .env)."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    listen_address: str = ""


def local_address(listen_address: str) -> str:
    """The address to dial for a server listening on `listen_address` on this host."""
    host, _, port = listen_address.rpartition(":")
    return f"{_LOOPBACK.get(host, host)}:{port}"


def check(
    address: str, service: str = "", timeout: float = 3.0, credentials: grpc.ChannelCredentials | None = None
) -> tuple[bool, str]:
    """Asks grpc.health.v1 once (over TLS with `credentials`); returns whether the answer was SERVING and a line
    saying what was seen."""
    channel = grpc.secure_channel(address, credentials) if credentials else grpc.insecure_channel(address)
    with channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout
            )
        except grpc.RpcError as error:
            return False, f"{address}: {error.code().name}: {error.details()}"
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    return response.status == health_pb2.HealthCheckResponse.SERVING, f"{address}: {status}"


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m services.common.healthcheck",
        description="Asks a gRPC server's grpc.health.v1 service once; exits 0 for SERVING, 1 otherwise.",
    )
    parser.add_argument("address", nargs="?", help="host:port to check; default: LISTEN_ADDRESS on loopback")
    parser.add_argument("--service", default="", help="service name to ask about; default: the whole server")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for the answer")
    parser.add_argument("--ca-file", help="use TLS and verify the server against this PEM CA file")
    parser.add_argument("--cert-file", help="client certificate (PEM) for a server that requires mutual TLS")
    parser.add_argument("--key-file", help="key of --cert-file (PEM)")
    args = parser.parse_args()
    listen_address = _ListenSettings().listen_address
    if not args.address and not listen_address:
        parser.error("give ADDRESS or set LISTEN_ADDRESS")
    credentials = (
        channel_credentials(ca_file=args.ca_file, cert_file=args.cert_file, key_file=args.key_file)
        if args.ca_file or args.cert_file
        else None
    )
    serving, message = check(args.address or local_address(listen_address), args.service, args.timeout, credentials)
    print(message)
    sys.exit(0 if serving else 1)


if __name__ == "__main__":
    main()
