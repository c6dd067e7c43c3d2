"""Bootstrap every service the same way: health, reflection, auth, SERVING after warm-up, drain on SIGTERM."""

from __future__ import annotations

import asyncio
import ctypes
import ipaddress
import logging
import signal
import socket
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from services.common import observability, redact
from services.common.auth import BearerTokenInterceptor
from services.common.handlers import add_servicer
from services.common.healthcheck import check, local_address
from services.common.ports import report_ports
from services.common.settings import ServiceSettings
from services.common.tls import ServerTls

_LOGGER = logging.getLogger(__name__)

# Far above the ~256 KiB chunks, so only a misbehaving client hits it.
MAX_MESSAGE_BYTES = 8 * 1024 * 1024

# Health name that answers SERVING whenever the process runs, whatever its dependencies: Kubernetes' liveness probe
# asks for it, so a downstream outage makes the gateway unready (no new calls) without restarting it.
LIVENESS = "liveness"

# Watches whatever the server depends on and keeps its readiness (the "" and service health names) up to date.
Readiness = Callable[[health.aio.HealthServicer, Sequence[str]], Awaitable[None]]


@dataclass
class Server:
    """A built but not yet started gRPC server and the port it bound (the real one when asked for port 0)."""

    grpc_server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer
    service_names: tuple[str, ...]
    # How callers are let in, for the start-up log line: "plaintext" or "TLS" or "mutual TLS", and whether a bearer
    # token is needed.
    security: str = "plaintext"
    # None: SERVING as soon as started. Otherwise run for the server's life; it sets the readiness names itself.
    readiness: Readiness | None = None
    # Waits, up to the seconds given, for work that outlives the calls that started it (the gateway's renders, which
    # callers may follow through another replica); run beside the calls' own drain when the server stops.
    drain: Callable[[float], Awaitable[None]] | None = None
    _readiness_task: asyncio.Task[None] | None = field(default=None, init=False)

    async def start(self) -> None:
        await self.grpc_server.start()
        await self.health.set(LIVENESS, health_pb2.HealthCheckResponse.SERVING)
        names = ("", *self.service_names)
        if self.readiness is None:
            for name in names:
                await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        else:
            for name in names:
                await self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
            self._readiness_task = asyncio.create_task(self.readiness(self.health, names))

    async def stop(self, grace_seconds: float) -> None:
        """Stops taking new calls at once and gives running calls `grace_seconds` to finish."""
        if self._readiness_task is not None:
            self._readiness_task.cancel()
        await self.health.enter_graceful_shutdown()
        drains = [self.grpc_server.stop(grace_seconds)]
        if self.drain is not None:
            drains.append(self.drain(grace_seconds))
        await asyncio.gather(*drains)


def is_loopback(address: str) -> bool:
    """Whether a host:port listen address only takes connections from this host."""
    host = address.rpartition(":")[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a wildcard or a host name: reachable from elsewhere


def build_server(
    address: str,
    servicer: object,
    service_name: str,
    *,
    tls: ServerTls | None = None,
    tokens: Sequence[str] = (),
    reflection_on: bool = True,
    plaintext_token_policy: str = "warn",
    readiness: Readiness | None = None,
    drain: Callable[[float], Awaitable[None]] | None = None,
) -> Server:
    """Creates a server for one servicer (registered from its descriptor, see handlers.py), with health and
    (unless `reflection_on` is false) reflection.

    `tls` makes the server listen with TLS only, requiring client certificates when it has a client CA; with `tokens`,
    calls to the servicer need one of them as a bearer token (health and reflection stay open for probes).
    """
    _check_exposure(address, service_name, tls, tokens, plaintext_token_policy)
    grpc_server = grpc.aio.server(
        interceptors=[BearerTokenInterceptor(tokens, service_name)] if tokens else [],
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            # Accept the gateway's keepalive pings (every 30 s) instead of answering them with GOAWAY.
            ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
            ("grpc.keepalive_permit_without_calls", 1),
            # Close connections after 5 minutes (running calls finish first), so clients re-resolve DNS and new
            # replicas added by an autoscaler get their share of round-robin traffic.
            ("grpc.max_connection_age_ms", 300_000),
            # gRPC shares ports by default: a second instance would bind the same port and take half the calls
            # (re-attaching to a render on the wrong process). Off, the second instance fails to start instead.
            ("grpc.so_reuseport", 0),
        ],
    )
    add_servicer(grpc_server, servicer, service_name)
    service_names = (service_name,)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, grpc_server)
    if reflection_on:
        reflection.enable_server_reflection(
            (*service_names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
            grpc_server,
        )
    try:
        if tls is None:
            port = grpc_server.add_insecure_port(address)
        else:
            port = grpc_server.add_secure_port(address, tls.credentials())
    except RuntimeError:
        port = 0
    if port == 0:
        raise RuntimeError(f"could not listen on {address}: {_port_holder(address, service_name)}")
    security = "plaintext" if tls is None else "mutual TLS" if tls.mutual else "TLS"
    security += ", bearer token required" if tokens else ", no token required"
    return Server(grpc_server, port, health_servicer, service_names, security, readiness, drain)


def build_service(
    settings: ServiceSettings,
    servicer: object,
    service_name: str,
    *,
    tokens: Sequence[str] | None = None,
    readiness: Readiness | None = None,
    drain: Callable[[float], Awaitable[None]] | None = None,
) -> Server:
    """`build_server` as the settings say: address, TLS, reflection, plaintext token policy, and the tokens
    (default: the service tokens the gateway presents)."""
    return build_server(
        settings.listen_address,
        servicer,
        service_name,
        tls=ServerTls.from_settings(settings),
        tokens=settings.service_tokens if tokens is None else tokens,
        reflection_on=settings.grpc_reflection,
        plaintext_token_policy=settings.plaintext_token_policy,
        readiness=readiness,
        drain=drain,
    )


def _check_exposure(
    address: str, service_name: str, tls: ServerTls | None, tokens: Sequence[str], plaintext_token_policy: str
) -> None:
    """Says (or refuses) when a server other hosts can reach is open to anyone, or reads tokens in plaintext."""
    if is_loopback(address):
        if not tokens:
            _LOGGER.info("%s on %s takes calls from any local process (loopback, no token)", service_name, address)
        return
    if not tokens:
        _LOGGER.warning(
            "%s on %s takes calls from ANYONE who can reach it: set SERVICE_AUTH_TOKENS (GATEWAY_AUTH_TOKENS on the "
            "gateway), or listen on 127.0.0.1",
            service_name,
            address,
        )
    elif tls is None and plaintext_token_policy != "allow":
        problem = (
            f"{service_name} on {address} takes bearer tokens in plaintext, readable on the network: set "
            "TLS_CERT_FILE and TLS_KEY_FILE, listen on 127.0.0.1, or set PLAINTEXT_TOKEN_POLICY=allow on a private "
            "network"
        )
        if plaintext_token_policy == "refuse":
            raise RuntimeError(f"{problem} (PLAINTEXT_TOKEN_POLICY=refuse)")
        _LOGGER.warning("%s", problem)


def _port_holder(address: str, service_name: str) -> str:
    """What holds a port that would not bind: a server of the same service, another gRPC server, or something else."""
    target = local_address(address)
    serving, seen = check(target, service_name, timeout=2.0)
    if serving:
        return (
            f"another {service_name} already serves there (a second scenecast instance?); stop it or pick another port"
        )
    answer = seen.partition(": ")[2]
    # No connection, or no HTTP/2 answer in time: whatever is there does not speak plaintext gRPC.
    if not answer.startswith(("UNAVAILABLE", "DEADLINE_EXCEEDED")):
        return f"a gRPC server already listens there, answering health with {answer}"
    host, _, port = target.rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=2.0).close()
    except OSError as error:
        return f"the address cannot be used ({error.strerror or error})"
    return "something already listens there, and it does not answer gRPC health in plaintext"


async def serve_until_signal(
    build: Callable[[], Server], grace_seconds: float, port_report_file: str = "", metrics_port: int = 0
) -> None:
    """Runs a server until SIGTERM or SIGINT, then drains it (grace shorter than Kubernetes' termination grace).

    `build` runs inside the event loop because grpc.aio servers belong to the loop that creates them. Once listening,
    the gRPC port and `metrics_port` are written to `port_report_file` (when set) for the process that started this.
    """
    server = build()
    await server.start()
    _LOGGER.info("serving %s on port %d (%s)", ", ".join(server.service_names), server.port, server.security)
    report_ports(port_report_file, grpc=server.port, metrics=metrics_port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    _LOGGER.info("draining for up to %.1f s", grace_seconds)
    await server.stop(grace_seconds)


# M_MMAP_THRESHOLD in glibc's malloc.h.
_M_MMAP_THRESHOLD = -3


def _keep_large_buffers_off_the_heap() -> None:
    """Media chunks (~256 KiB) must go back to the OS when freed, or peak memory grows with the video.

    glibc raises its mmap threshold each time a large block is freed, after which such blocks come from the heap,
    where fragmentation keeps them resident: measured, the gateway's peak grew 26 MiB over a 38 MiB render without
    this and 6 MiB with it. A fixed threshold disables that adjustment. No-op where the C library is not glibc.
    """
    try:
        ctypes.CDLL("libc.so.6").mallopt(_M_MMAP_THRESHOLD, 64 * 1024)
    except (OSError, AttributeError):
        _LOGGER.debug("mallopt unavailable; keeping the C library's default allocation policy")


def run(service: str, build: Callable[[], Server], settings: ServiceSettings) -> None:
    """Entry point used by each service's `python -m` module."""
    _keep_large_buffers_off_the_heap()
    redact.register_settings(settings)
    metrics_port = observability.configure(
        service,
        settings.log_format,
        settings.log_level,
        settings.metrics_port,
        settings,
        settings.metrics_address,
    )
    try:
        asyncio.run(serve_until_signal(build, settings.shutdown_grace_seconds, settings.port_report_file, metrics_port))
    except RuntimeError as error:
        # A start-up refusal (port taken, plaintext tokens refused): one line that says why, no traceback.
        _LOGGER.error("%s did not start: %s", service, error)
        sys.exit(1)
