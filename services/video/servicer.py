"""VideoService: clips (spec plus optional source image in, MP4 out) and avatar videos of whole scripts."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import grpc
from PIL import Image, UnidentifiedImageError
from scenecast.v1 import types_pb2, video_service_pb2, video_service_pb2_grpc

from services.common import workdirs
from services.common.cache import (
    CachedAsset,
    asset_responses,
    avatar_key,
    clip_key,
    file_sha256,
    get_or_make,
    open_cache,
)
from services.common.chunks import ChunkSink
from services.common.convert import checked_count, provider_set
from services.common.errors import InvalidArgument, JobFailed, ProviderUnavailable, rpc_method
from services.common.limits import MAX_AVATAR_SETTING_CHARS, MAX_PROMPT_CHARS, MAX_TITLE_CHARS
from services.common.media import MediaInfo, probe
from services.common.observability import record_spend
from services.common.output import output_format
from services.common.providers import ProviderRegistry
from services.common.retry import call_deadline, call_with_retries
from services.common.text import checked_narration, checked_text
from services.video.avatars.base import AvatarJob, AvatarProvider, AvatarResult, AvatarScene
from services.video.config import VideoSettings
from services.video.providers.base import ClipJob, ClipResult, VideoProvider

MAX_DURATION_MS = 10 * 60 * 1000
# Pixels of the largest source image taken: twice the largest output frame (4K) each way, the most any provider uses
# (kenburns zooms at twice the output size). Decoding is what costs: a 64 MiB PNG may hold 12000x12000 pixels, which
# took 576 MiB to decode and 727 MiB of FFmpeg filtering before a single frame was encoded.
MAX_SOURCE_PIXELS = 7680 * 4320
# Pillow's names of the still-image formats taken as source images.
SOURCE_IMAGE_FORMATS = ("PNG", "JPEG", "WEBP")
# The avatar vendor stops waiting this long before the call's deadline, so the caller learns why (UNAVAILABLE naming
# the deadline) instead of a bare DEADLINE_EXCEEDED, and no retry is started that could not finish.
AVATAR_DEADLINE_MARGIN_SECONDS = 1.0
CLIP_FOLDER_PREFIX = "scenecast-clip-"
AVATAR_FOLDER_PREFIX = "scenecast-avatar-"


class VideoServicer(video_service_pb2_grpc.VideoServiceServicer):
    def __init__(
        self,
        registry: ProviderRegistry[VideoProvider],
        avatars: ProviderRegistry[AvatarProvider],
        settings: VideoSettings,
    ) -> None:
        self._registry = registry
        self._avatars = avatars
        self._settings = settings
        # None turns caching off; offline providers (kenburns) bypass it anyway.
        self._cache = open_cache(
            settings.asset_cache_url.get_secret_value(), settings.asset_cache_dir, settings.asset_cache_max_bytes
        )
        # Work folders a killed predecessor left behind (server.py is not this module's to change).
        for prefix in (CLIP_FOLDER_PREFIX, AVATAR_FOLDER_PREFIX):
            workdirs.sweep(prefix, settings.video_tmp_dir or None)

    @rpc_method
    async def GenerateClip(
        self, request_iterator: AsyncIterator[video_service_pb2.GenerateClipRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[video_service_pb2.GenerateClipResponse]:
        with workdirs.work_folder(CLIP_FOLDER_PREFIX, self._settings.video_tmp_dir or None) as work_dir:
            spec, source_image = await self._receive(request_iterator, work_dir)
            if source_image is not None:
                await asyncio.to_thread(_check_source_image, source_image)
            output = output_format(spec.output)
            prompt = checked_text(spec.scene.visual_prompt, "spec.scene.visual_prompt", MAX_PROMPT_CHARS, False)
            title = checked_text(spec.scene.title, "spec.scene.title", MAX_TITLE_CHARS, required=False)
            if spec.duration_ms > MAX_DURATION_MS:
                raise InvalidArgument(f"spec.duration_ms must be at most {MAX_DURATION_MS} (got {spec.duration_ms})")
            name, provider = self._registry.get(spec.provider, "spec.provider")
            job = ClipJob(
                prompt=prompt,
                title=title,
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
            deadline = call_deadline(context)
            cache = None if self._registry.is_offline(name) else self._cache
            if cache is None:
                # Nothing is kept, so the clip is made in this call's folder and streamed from the file: a long 4K
                # clip runs to gigabytes, which held in memory (even once) would not fit the service's limit.
                result, info = await self._clip_file(name, provider, job, deadline)
                responses = asset_responses(
                    video_service_pb2.GenerateClipResponse,
                    name,
                    _asset(result, info, b"", job.render_id),
                    False,
                    result.path,
                )
            else:
                source_sha256 = await asyncio.to_thread(file_sha256, source_image) if source_image else ""
                key = clip_key(name, type(provider).__module__, self._registry.fingerprint(name), job, source_sha256)

                async def make() -> CachedAsset:
                    return await self._make_cached_clip(name, provider, job, deadline)

                asset, cache_hit = await get_or_make(cache, "clip", key, spec.no_cache, make, deadline)
                responses = asset_responses(video_service_pb2.GenerateClipResponse, name, asset, cache_hit)
            for response in responses:
                yield response

    async def _make_cached_clip(
        self, name: str, provider: VideoProvider, job: ClipJob, deadline: float | None
    ) -> CachedAsset:
        """Works in a folder of its own, with its own copy of the source image: made through the cache, the clip is
        finished (and kept) even when the call that asked for it, and that call's folder, are gone. The cache holds
        assets as bytes; clips of cloud providers are a few seconds long (wan's 200 MiB cap, selfhosted's frame cap)."""
        with workdirs.work_folder(CLIP_FOLDER_PREFIX, self._settings.video_tmp_dir or None) as work_dir:
            job = replace(job, work_dir=work_dir)
            if job.source_image is not None:
                source_image = job.work_dir / "source-image"
                await asyncio.to_thread(shutil.copyfile, job.source_image, source_image)
                job = replace(job, source_image=source_image)
            result, info = await self._clip_file(name, provider, job, deadline)
            return _asset(result, info, await asyncio.to_thread(result.path.read_bytes), job.render_id)

    async def _clip_file(
        self, name: str, provider: VideoProvider, job: ClipJob, deadline: float | None
    ) -> tuple[ClipResult, MediaInfo]:
        """The provider's clip, a file in job.work_dir, checked to decode; transient failures are tried again."""

        async def attempt() -> tuple[ClipResult, MediaInfo]:
            result = await provider.generate(job)
            record_spend(name, result.model, result.estimated_cost_usd)  # billed even if the file is bad
            try:
                info = await asyncio.to_thread(probe, result.path, f"{name} clip")
            except InvalidArgument as error:
                raise ProviderUnavailable(f"provider {name!r} returned a clip that does not decode: {error}") from error
            if not info.has_video:
                raise ProviderUnavailable(f"provider {name!r} returned a file with no picture")
            return result, info

        return await call_with_retries(
            attempt, attempts=self._settings.provider_attempts, deadline=deadline, provider=name
        )

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
    async def GenerateAvatarVideo(
        self, request: video_service_pb2.GenerateAvatarVideoRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[video_service_pb2.GenerateAvatarVideoResponse]:
        job = _avatar_job(request)
        if not request.provider and not self._avatars.default:
            raise InvalidArgument(
                "provider is empty and AVATAR_PROVIDER is unset; set AVATAR_PROVIDER on the video service or name "
                f"one of: {self._avatars.valid_names}"
            )
        name, provider = self._avatars.get(request.provider, "provider")
        if len(job.scenes) > provider.max_scenes:
            raise InvalidArgument(
                f"scenes has {len(job.scenes)} entries; {name} takes at most {provider.max_scenes} per video, so merge "
                "scenes or split the script"
            )
        call_end = call_deadline(context)
        job = replace(job, deadline=call_end - AVATAR_DEADLINE_MARGIN_SECONDS if call_end is not None else None)
        cache = None if self._avatars.is_offline(name) else self._cache
        key = avatar_key(name, type(provider).__module__, self._avatars.fingerprint(name), job) if cache else ""

        async def make() -> CachedAsset:
            with workdirs.work_folder(AVATAR_FOLDER_PREFIX, self._settings.video_tmp_dir or None) as work_dir:
                path = work_dir / "avatar.mp4"

                async def attempt() -> tuple[AvatarResult, MediaInfo]:
                    result = await provider.generate(job)
                    # The vendor bills a rendered video even when it turns out unusable here.
                    record_spend(name, result.model, result.estimated_cost_usd)
                    return result, await asyncio.to_thread(_stored_video, path, result.data, name)

                # Only an order the vendor did not take, or a render that failed there, is ordered again; a video
                # made (and billed) is never ordered twice. Retries stop at the deadline the vendor is polled to.
                result, info = await call_with_retries(
                    attempt, attempts=self._settings.provider_attempts, deadline=job.deadline, provider=name
                )
            return _asset(result, info, result.data, job.render_id)

        asset, cache_hit = await get_or_make(cache, "avatar", key, request.no_cache, make, call_end)
        for response in asset_responses(video_service_pb2.GenerateAvatarVideoResponse, name, asset, cache_hit):
            yield response

    @rpc_method
    async def EstimateClipCost(
        self, request: video_service_pb2.EstimateClipCostRequest, context: grpc.aio.ServicerContext
    ) -> video_service_pb2.EstimateClipCostResponse:
        checked_count(len(request.specs), "specs")
        estimates = []
        for index, spec in enumerate(request.specs):
            name = self._registry.resolve(spec.provider, f"specs[{index}].provider")
            estimates.append(
                types_pb2.CostEstimate(provider=name, usd=self._registry.estimate_usd(name, _priced_clip(spec, index)))
            )
        return video_service_pb2.EstimateClipCostResponse(estimates=estimates)

    @rpc_method
    async def EstimateAvatarCost(
        self, request: video_service_pb2.EstimateAvatarCostRequest, context: grpc.aio.ServicerContext
    ) -> video_service_pb2.EstimateAvatarCostResponse:
        job = _avatar_job(request.request, "request.")
        name = self._avatars.resolve(request.request.provider, "request.provider")
        return video_service_pb2.EstimateAvatarCostResponse(
            estimate=types_pb2.CostEstimate(provider=name, usd=self._avatars.estimate_usd(name, job))
        )

    @rpc_method
    async def ListVideoProviders(
        self, request: video_service_pb2.ListVideoProvidersRequest, context: grpc.aio.ServicerContext
    ) -> video_service_pb2.ListVideoProvidersResponse:
        return video_service_pb2.ListVideoProvidersResponse(
            providers=provider_set(types_pb2.MEDIA_KIND_VIDEO, self._registry),
            avatar_providers=provider_set(types_pb2.MEDIA_KIND_AVATAR, self._avatars),
        )


def _asset(result: ClipResult | AvatarResult, info: MediaInfo, data: bytes, render_id: str) -> CachedAsset:
    return CachedAsset(
        data=data,
        mime_type=result.mime_type,
        model=result.model,
        estimated_cost_usd=result.estimated_cost_usd,
        width=info.width,
        height=info.height,
        duration_ms=info.duration_ms,
        call_render_id=render_id,
        credit=result.credit if isinstance(result, ClipResult) else None,
    )


def _priced_clip(spec: video_service_pb2.ClipSpec, index: int) -> ClipJob:
    """The clip a spec describes, checked as GenerateClip checks it, without the image or a folder: pricing makes
    nothing."""
    field = f"specs[{index}]"
    output = output_format(spec.output)
    if spec.duration_ms > MAX_DURATION_MS:
        raise InvalidArgument(f"{field}.duration_ms must be at most {MAX_DURATION_MS} (got {spec.duration_ms})")
    return ClipJob(
        prompt=checked_text(spec.scene.visual_prompt, f"{field}.scene.visual_prompt", MAX_PROMPT_CHARS, False),
        title=checked_text(spec.scene.title, f"{field}.scene.title", MAX_TITLE_CHARS, required=False),
        scene_index=spec.scene_index,
        width=output.width,
        height=output.height,
        fps=output.fps,
        duration_ms=spec.duration_ms,
        quality=output.quality,
        source_image=None,
        work_dir=Path(),  # never used
        render_id=spec.render_id,
    )


def _avatar_job(request: video_service_pb2.GenerateAvatarVideoRequest, prefix: str = "") -> AvatarJob:
    """The video a request asks for, checked (without a deadline); `prefix` places its fields ("request.")."""
    output = output_format(request.output)
    if not request.scenes:
        raise InvalidArgument(f"{prefix}scenes is empty; give at least one scene with narration")
    scenes = tuple(
        AvatarScene(
            narration=checked_narration(scene.narration, f"{prefix}scenes[{index}].narration"),
            title=checked_text(scene.title, f"{prefix}scenes[{index}].title", MAX_TITLE_CHARS, required=False),
        )
        for index, scene in enumerate(request.scenes)
    )
    setting = request.avatar
    return AvatarJob(
        scenes=scenes,
        width=output.width,
        height=output.height,
        aspect=output.aspect_name,
        avatar=checked_text(setting.avatar, f"{prefix}avatar.avatar", MAX_AVATAR_SETTING_CHARS, required=False),
        voice=checked_text(setting.voice, f"{prefix}avatar.voice", MAX_AVATAR_SETTING_CHARS, required=False),
        background=checked_text(
            setting.background, f"{prefix}avatar.background", MAX_AVATAR_SETTING_CHARS, required=False
        ),
        render_id=request.render_id,
    )


def _check_source_image(path: Path) -> None:
    """Reads the picture's header and checks its chunks (Pillow) without decoding its pixels: decoding in the service,
    as PyAV's probe did, cost up to 133 MiB per call for the largest image taken, for every call at once. FFmpeg, the
    provider or the vendor decodes it later, one encode at a time."""
    try:
        with Image.open(path) as image:
            size, kind, frames = image.size, image.format, getattr(image, "n_frames", 1)
            image.verify()
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError):
        raise InvalidArgument("source_image is not an image; send the scene's PNG, JPEG or WebP") from None
    if frames != 1:
        raise InvalidArgument(f"source_image has {frames} frames; send one still picture as PNG, JPEG or WebP")
    if kind not in SOURCE_IMAGE_FORMATS:
        raise InvalidArgument(f"source_image is a {kind} image; send it as PNG, JPEG or WebP")
    width, height = size
    if width * height > MAX_SOURCE_PIXELS:
        raise InvalidArgument(
            f"source_image is {width}x{height} pixels; at most {MAX_SOURCE_PIXELS / 1e6:.1f} megapixels (7680x4320, "
            "twice the largest output) are taken, so scale it down"
        )


def _stored_video(path: Path, data: bytes, provider: str) -> MediaInfo:
    """Writes the vendor's MP4 to the call's folder and checks it holds both a picture and the spoken narration.

    The video was made and billed: a bad one is JobFailed, which is never retried into a second order.
    """
    path.write_bytes(data)
    try:
        info = probe(path, f"{provider} video")
    except InvalidArgument as error:
        raise JobFailed(f"provider {provider!r} returned a video that does not decode: {error}") from error
    if not info.has_video or not info.has_audio:
        missing = "picture" if not info.has_video else "audio track"
        raise JobFailed(f"provider {provider!r} returned a video with no {missing}")
    return info
