"""The gateway is ready only while every service it calls is: it watches their grpc.health.v1 and mirrors it.

Only readiness follows the services: the separate `liveness` health name stays SERVING, so Kubernetes stops sending
new renders to a gateway whose assembler is down without restarting the gateway (which would cut running renders).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

_LOGGER = logging.getLogger(__name__)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
# Pause before watching again after a watch failed, so a service that keeps failing fast is not hammered.
_RETRY_SECONDS = 1.0


async def watch_dependencies(
    channels: Mapping[str, grpc.aio.Channel], servicer: health.aio.HealthServicer, names: Sequence[str]
) -> None:
    """Keeps `names` SERVING while every channel's server reports SERVING, NOT_SERVING otherwise; runs until
    cancelled."""
    serving = dict.fromkeys(channels, False)

    async def changed(dependency: str, now: bool, why: str) -> None:
        if serving[dependency] == now:
            return
        serving[dependency] = now
        ready = all(serving.values())
        if now:
            _LOGGER.info("the %s service is SERVING%s", dependency, "; ready" if ready else "")
        else:
            _LOGGER.warning("the %s service is not serving (%s); not ready until it is back", dependency, why)
        for name in names:
            await servicer.set(name, SERVING if ready else NOT_SERVING)

    async def watch(dependency: str, channel: grpc.aio.Channel) -> None:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            try:
                # wait_for_ready: while the service is down the call waits for it to come back instead of failing
                # at once, so nothing polls.
                async for response in stub.Watch(health_pb2.HealthCheckRequest(), wait_for_ready=True):
                    status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
                    await changed(dependency, response.status == SERVING, status)
                why = "its health stream ended"
            except grpc.aio.AioRpcError as error:
                why = f"{error.code().name}: {error.details()}"
            await changed(dependency, False, why)
            await asyncio.sleep(_RETRY_SECONDS)

    async with asyncio.TaskGroup() as group:
        for dependency, channel in channels.items():
            group.create_task(watch(dependency, channel))
