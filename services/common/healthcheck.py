"""`python -m services.common.healthcheck [ADDRESS] [--service NAME]`: exit 0 when the server reports SERVING."""

from __future__ import annotations

import argparse
import os
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

# Wildcard hosts a server listens on, and the loopback address that reaches it from inside the same container.
_LOOPBACK = {"0.0.0.0": "127.0.0.1", "[::]": "[::1]"}


def local_address(listen_address: str) -> str:
    """The address to dial for a server listening on `listen_address` on this host."""
    host, _, port = listen_address.rpartition(":")
    return f"{_LOOPBACK.get(host, host)}:{port}"


def check(address: str, service: str = "", timeout: float = 3.0) -> tuple[bool, str]:
    """Asks grpc.health.v1 once; returns whether the answer was SERVING and a line saying what was seen."""
    with grpc.insecure_channel(address) as channel:
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
    args = parser.parse_args()
    listen_address = os.environ.get("LISTEN_ADDRESS", "")
    if not args.address and not listen_address:
        parser.error("give ADDRESS or set LISTEN_ADDRESS")
    serving, message = check(args.address or local_address(listen_address), args.service, args.timeout)
    print(message)
    sys.exit(0 if serving else 1)


if __name__ == "__main__":
    main()
