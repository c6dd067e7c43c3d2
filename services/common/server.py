"""Bootstrap every service the same way: health, reflection, SERVING after warm-up, drain on SIGTERM."""

from __future__ import annotations

import asyncio
import contextvars
import ctypes
import logging
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from services.common import observability, redact
from services.common.handlers import add_servicer
from services.common.settings import ServiceSettings
from services.common.tls import ServerTls

_LOGGER = logging.getLogger(__name__)

# Far above the ~256 KiB chunks, so only a misbehaving client hits it.
MAX_MESSAGE_BYTES = 8 * 1024 * 1024

# The TLS of this process's servers, set by `run` from the service's settings so that every service's own `build`
# listens with it without passing it on; servers built in-process (tests) pass `tls=` to `build_server` instead.
_process_tls: contextvars.ContextVar[ServerTls | None] = contextvars.ContextVar("process_tls", default=None)


@dataclass
class Server:
    """A built but not yet started gRPC server and the port it bound (the real one when asked for port 0)."""

    grpc_server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer
    service_names: tuple[str, ...]
    # "plaintext", "TLS" or "mutual TLS", for the start-up log line.
    security: str = "plaintext"

    async def start(self) -> None:
        await self.grpc_server.start()
        for name in ("", *self.service_names):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)

    async def stop(self, grace_seconds: float) -> None:
        """Stops taking new calls at once and gives running calls `grace_seconds` to finish."""
        await self.health.enter_graceful_shutdown()
        await self.grpc_server.stop(grace_seconds)


def build_server(
    address: str,
    servicer: object,
    service_name: str,
    *,
    tls: ServerTls | None = None,
    interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
) -> Server:
    """Creates a server for one servicer (registered from its descriptor, see handlers.py), with health and
    reflection.

    `tls` (default: what `run` read from the settings) makes the server listen with TLS only, requiring client
    certificates when it has a client CA; `interceptors` see every call, health and reflection included.
    """
    tls = tls or _process_tls.get()
    grpc_server = grpc.aio.server(
        interceptors=interceptors,
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            # Accept the gateway's keepalive pings (every 30 s) instead of answering them with GOAWAY.
            ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
            ("grpc.keepalive_permit_without_calls", 1),
            # Close connections after 5 minutes (running calls finish first), so clients re-resolve DNS and new
            # replicas added by an autoscaler get their share of round-robin traffic.
            ("grpc.max_connection_age_ms", 300_000),
        ],
    )
    add_servicer(grpc_server, servicer, service_name)
    service_names = (service_name,)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, grpc_server)
    reflection.enable_server_reflection(
        (*service_names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
        grpc_server,
    )
    if tls is None:
        port = grpc_server.add_insecure_port(address)
        security = "plaintext"
    else:
        port = grpc_server.add_secure_port(address, tls.credentials())
        security = "mutual TLS" if tls.mutual else "TLS"
    if port == 0:
        raise RuntimeError(f"could not bind {address}")
    return Server(grpc_server, port, health_servicer, service_names, security)


async def serve_until_signal(build: Callable[[], Server], grace_seconds: float) -> None:
    """Runs a server until SIGTERM or SIGINT, then drains it (grace shorter than Kubernetes' termination grace).

    `build` runs inside the event loop because grpc.aio servers belong to the loop that creates them.
    """
    server = build()
    await server.start()
    _LOGGER.info("serving %s on port %d (%s)", ", ".join(server.service_names), server.port, server.security)
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
    observability.configure(
        service, settings.log_format, settings.log_level, settings.metrics_port, settings.otel_traces_exporter
    )
    _process_tls.set(ServerTls.from_settings(settings))
    asyncio.run(serve_until_signal(build, settings.shutdown_grace_seconds))
