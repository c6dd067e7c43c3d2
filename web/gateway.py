"""The gateway's RenderService as the front doors use it: one channel, the renders followed, and each operation
once, in domain terms (protobuf messages and ProblemErrors), for the HTTP routes and the MCP tools alike."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Literal

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from scenecast.v1 import render_service_pb2, render_service_pb2_grpc, script_service_pb2, types_pb2

from services.common.chunks import CHUNK_BYTES
from services.common.server import MAX_MESSAGE_BYTES
from services.common.tls import aio_client_channel
from web.config import WebSettings
from web.problems import ProblemError
from web.renders import RenderBook

# Seconds a music upload may take: minutes for the largest file over a slow link, but never forever.
_UPLOAD_TIMEOUT_SECONDS = 300.0
# Seconds a draft may take: a chat model answers in seconds to a minute, twice when it is asked again.
_DRAFT_TIMEOUT_SECONDS = 600.0
_RENDER_SERVICE = "scenecast.v1.RenderService"

# One event of a render as numbered for resuming: its progress, its summary, or its error (always last).
RenderEvent = render_service_pb2.RenderProgress | render_service_pb2.RenderSummary | ProblemError


class Gateway:
    """A client of the gateway, made from the settings (TLS and token as the CLI reaches it); `close` when done."""

    def __init__(self, settings: WebSettings) -> None:
        self._channel = aio_client_channel(
            settings.gateway,
            tls=settings.tls,
            ca_file=settings.ca_file or None,
            cert_file=settings.cert_file or None,
            key_file=settings.key_file or None,
            server_name=settings.server_name or None,
            token=settings.token.get_secret_value() or None,
            options=[("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)],
        )
        self._stub = render_service_pb2_grpc.RenderServiceStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)
        self._timeout = settings.call_timeout_seconds
        self.renders = RenderBook(self._stub)

    async def close(self) -> None:
        await self.renders.close()
        await self._channel.close()

    async def check_ready(self) -> None:
        """Returns when the gateway reports SERVING (its media services are up); a 503 ProblemError otherwise."""
        try:
            answer = await self._health.Check(
                health_pb2.HealthCheckRequest(service=_RENDER_SERVICE), timeout=self._timeout
            )
        except grpc.aio.AioRpcError as error:
            raise ProblemError(503, f"the gateway cannot be reached: {error.details()}") from None
        if answer.status != health_pb2.HealthCheckResponse.SERVING:
            raise ProblemError(503, "the gateway is not ready (a media service behind it is down or starting)")

    async def config(self) -> render_service_pb2.GetConfigResponse:
        return await self._stub.GetConfig(render_service_pb2.GetConfigRequest(), timeout=self._timeout)

    async def estimate(self, render: render_service_pb2.RenderRequest) -> render_service_pb2.EstimateCostResponse:
        request = render_service_pb2.EstimateCostRequest(render=render)
        return await self._stub.EstimateCost(request, timeout=self._timeout)

    async def draft(
        self, request: script_service_pb2.DraftScriptRequest
    ) -> render_service_pb2.RenderServiceDraftScriptResponse:
        """One DraftScript call, never repeated: a paid draft that was answered would be paid again."""
        wrapped = render_service_pb2.RenderServiceDraftScriptRequest(request=request)
        return await self._stub.DraftScript(wrapped, timeout=_DRAFT_TIMEOUT_SECONDS)

    async def cancel(self, render_id: str) -> bool:
        request = render_service_pb2.CancelRenderRequest(render_id=render_id)
        return (await self._stub.CancelRender(request, timeout=self._timeout)).cancelled

    async def spend(
        self, group_by: Literal["day", "provider", "render"], since_day: str, render_id: str
    ) -> render_service_pb2.GetSpendResponse:
        grouping = render_service_pb2.SpendGrouping.Value(f"SPEND_GROUPING_{group_by.upper()}")
        request = render_service_pb2.GetSpendRequest(group_by=grouping, since_day=since_day, render_id=render_id)
        return await self._stub.GetSpend(request, timeout=self._timeout)

    async def upload_music(
        self, mime_type: str, size: int, blocks: AsyncIterator[bytes]
    ) -> render_service_pb2.UploadMusicResponse:
        """Streams music to the gateway as it arrives, re-cut into the contract's ~256 KiB chunks."""

        async def messages() -> AsyncIterator[render_service_pb2.UploadMusicRequest]:
            yield render_service_pb2.UploadMusicRequest(
                start=render_service_pb2.UploadMusicStart(mime_type=mime_type, size_bytes=size)
            )
            pending, offset = bytearray(), 0
            async for block in blocks:
                pending += block
                while len(pending) >= CHUNK_BYTES:
                    chunk = types_pb2.MediaChunk(offset=offset, data=bytes(pending[:CHUNK_BYTES]))
                    yield render_service_pb2.UploadMusicRequest(chunk=chunk)
                    del pending[:CHUNK_BYTES]
                    offset += CHUNK_BYTES
            if pending:
                yield render_service_pb2.UploadMusicRequest(
                    chunk=types_pb2.MediaChunk(offset=offset, data=bytes(pending))
                )

        return await self._stub.UploadMusic(messages(), timeout=_UPLOAD_TIMEOUT_SECONDS)

    async def video(self, render_id: str, start: int, end: int) -> AsyncIterator[bytes]:
        """Bytes `start`..`end` (inclusive) of a finished render's MP4, a FetchResult chunk at a time, so the file is
        never held whole."""
        call = self._stub.FetchResult(render_service_pb2.FetchResultRequest(render_id=render_id, offset=start))
        left = end - start + 1
        try:
            while left > 0:
                response = await call.read()
                if response is grpc.aio.EOF or not response.HasField("chunk"):
                    raise RuntimeError(f"render {render_id}: the result stream ended {left} bytes short")
                data = response.chunk.data[:left]
                left -= len(data)
                yield data
        finally:
            call.cancel()

    async def preview(self, render_id: str, scene_id: str) -> bytes:
        """The JPEG preview of a scene's image, from the render's image event (WatchRender replays it on any
        replica); waits for it while the render runs, like `video` waits for the MP4. A 404 ProblemError when the
        render ended without one (an avatar render, a scene id it does not have, an image that could not be read)."""
        call = self._stub.WatchRender(render_service_pb2.WatchRenderRequest(render_id=render_id))
        try:
            async for response in call:
                progress = response.progress
                if progress.scene_id == scene_id and progress.preview_jpeg:
                    return progress.preview_jpeg
        finally:
            call.cancel()
        raise ProblemError(
            404,
            f"render {render_id} has no preview for scene {scene_id!r}: no such scene, or its picture is an avatar "
            "video or could not be read",
            field="scene_id",
        )

    async def events(self, render_id: str, after: int) -> AsyncIterator[tuple[int, RenderEvent]]:
        """A render's events numbered from 1, those after the first `after` only, ending with its summary or error.

        The numbers are exact across calls: WatchRender replays a render's recorded events in the same order every
        time. An id the gateway does not know raises (as AioRpcError) before anything is yielded.
        """
        call = self._stub.WatchRender(render_service_pb2.WatchRenderRequest(render_id=render_id))
        number = 0
        try:
            while (response := await call.read()) is not grpc.aio.EOF:
                number += 1
                if number > after:
                    kind = response.WhichOneof("payload")
                    yield number, response.progress if kind == "progress" else response.summary
        except grpc.aio.AioRpcError as error:
            if number == 0:
                raise
            if number + 1 > after:
                yield number + 1, ProblemError.from_rpc(error)
        finally:
            call.cancel()
