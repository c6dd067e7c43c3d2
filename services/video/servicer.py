"""VideoService: receives the spec and the optional source image, returns the clip as metadata plus chunks."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
from scenecast.v1 import types_pb2, video_service_pb2, video_service_pb2_grpc

from services.common.chunks import ChunkSink, iter_chunks
from services.common.convert import provider_set
from services.common.errors import InvalidArgument, MediaError, rpc_method
from services.common.media import probe
from services.common.observability import record_spend
from services.common.output import output_format
from services.common.providers import ProviderRegistry
from services.common.text import checked_text
from services.video.config import VideoSettings
from services.video.providers.base import ClipJob, VideoProvider

MAX_PROMPT_CHARS = 4000
MAX_DURATION_MS = 10 * 60 * 1000


class VideoServicer(video_service_pb2_grpc.VideoServiceServicer):
    def __init__(self, registry: ProviderRegistry[VideoProvider], settings: VideoSettings) -> None:
        self._registry = registry
        self._settings = settings

    @rpc_method
    async def GenerateClip(
        self, request_iterator: AsyncIterator[video_service_pb2.GenerateClipRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[video_service_pb2.GenerateClipResponse]:
        with tempfile.TemporaryDirectory(prefix="scenecast-clip-", dir=self._settings.video_tmp_dir or None) as tmp:
            work_dir = Path(tmp)
            spec, source_image = await self._receive(request_iterator, work_dir)
            output = output_format(spec.output)
            prompt = checked_text(spec.scene.visual_prompt, "spec.scene.visual_prompt", MAX_PROMPT_CHARS, False)
            if spec.duration_ms > MAX_DURATION_MS:
                raise InvalidArgument(f"spec.duration_ms must be at most {MAX_DURATION_MS} (got {spec.duration_ms})")
            name, provider = self._registry.get(spec.provider, "spec.provider")
            result = await provider.generate(
                ClipJob(
                    prompt=prompt,
                    title=spec.scene.title,
                    scene_index=spec.scene_index,
                    width=output.width,
                    height=output.height,
                    fps=output.fps,
                    duration_ms=spec.duration_ms,
                    quality=output.quality,
                    source_image=source_image,
                    work_dir=work_dir,
                    render_id=spec.render_id,
                )
            )
            record_spend(name, result.model, result.estimated_cost_usd)
            clip_path = work_dir / "clip-result"
            clip_path.write_bytes(result.data)
            try:
                info = probe(clip_path, f"{name} clip")
            except InvalidArgument as error:
                raise MediaError(f"provider {name!r} returned a clip that does not decode: {error}") from error
            yield video_service_pb2.GenerateClipResponse(
                metadata=types_pb2.AssetMetadata(
                    mime_type=result.mime_type,
                    size_bytes=len(result.data),
                    width=info.width,
                    height=info.height,
                    duration_ms=info.duration_ms,
                    provider=name,
                    model=result.model,
                    estimated_cost_usd=result.estimated_cost_usd,
                )
            )
            for chunk in iter_chunks(result.data):
                yield video_service_pb2.GenerateClipResponse(chunk=chunk)

    async def _receive(
        self, request_iterator: AsyncIterator[video_service_pb2.GenerateClipRequest], work_dir: Path
    ) -> tuple[video_service_pb2.ClipSpec, Path | None]:
        spec: video_service_pb2.ClipSpec | None = None
        sink: ChunkSink | None = None
        try:
            async for message in request_iterator:
                if spec is None:
                    if not message.HasField("spec"):
                        raise InvalidArgument("the first message must be `spec`")
                    spec = message.spec
                    continue
                if not message.HasField("source_image_chunk"):
                    raise InvalidArgument("only `source_image_chunk` messages may follow the spec")
                if sink is None:
                    sink = ChunkSink(
                        work_dir / "source-image",
                        self._settings.max_source_image_bytes + 1,
                        "source_image",
                        self._settings.max_source_image_bytes + 1,
                    )
                sink.write(message.source_image_chunk)
        finally:
            if sink is not None:
                sink.close()
        if spec is None:
            raise InvalidArgument("the request stream was empty; send `spec` first")
        return spec, sink.path if sink is not None else None

    @rpc_method
    async def ListVideoProviders(
        self, request: video_service_pb2.ListVideoProvidersRequest, context: grpc.aio.ServicerContext
    ) -> video_service_pb2.ListVideoProvidersResponse:
        return video_service_pb2.ListVideoProvidersResponse(
            providers=provider_set(types_pb2.MEDIA_KIND_VIDEO, self._registry)
        )
