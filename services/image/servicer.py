"""ImageService: translates requests to ImageJobs and results to metadata plus chunks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace

import grpc
from scenecast.v1 import image_service_pb2, image_service_pb2_grpc, types_pb2

from services.common.cache import CacheBackend, CachedAsset, asset_responses, get_or_make, image_key
from services.common.convert import checked_count, provider_set
from services.common.errors import InvalidArgument, rpc_method
from services.common.limits import MAX_PROMPT_CHARS, MAX_TITLE_CHARS
from services.common.observability import record_spend
from services.common.output import output_format
from services.common.providers import ProviderRegistry
from services.common.retry import call_deadline, call_with_retries
from services.common.text import checked_text
from services.image.fit import fit_image
from services.image.providers.base import ImageJob, ImageProvider, ImageResult


class ImageServicer(image_service_pb2_grpc.ImageServiceServicer):
    def __init__(
        self, registry: ProviderRegistry[ImageProvider], attempts: int, cache: CacheBackend | None = None
    ) -> None:
        self._registry = registry
        self._attempts = attempts
        # None turns caching off; offline providers bypass it anyway (making their output is cheaper than disk I/O).
        self._cache = cache

    @rpc_method
    async def GenerateImage(
        self, request: image_service_pb2.GenerateImageRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[image_service_pb2.GenerateImageResponse]:
        job = _image_job(request)
        name, provider = self._registry.get(request.provider, "provider")

        cache = None if self._registry.is_offline(name) else self._cache
        key = image_key(name, type(provider).__module__, self._registry.fingerprint(name), job) if cache else ""
        deadline = call_deadline(context)

        async def attempt() -> ImageResult:
            result = await provider.generate(job)
            if (result.width, result.height, result.mime_type) != (job.width, job.height, "image/png"):
                # Models have their own sizes (1792x1024, 1536x1024...): bring every image to the frame exactly.
                data = await asyncio.to_thread(fit_image, result.data, job.width, job.height)
                result = replace(result, data=data, mime_type="image/png", width=job.width, height=job.height)
            return result

        async def make() -> CachedAsset:
            result = await call_with_retries(attempt, attempts=self._attempts, deadline=deadline, provider=name)
            record_spend(name, result.model, result.estimated_cost_usd)
            return CachedAsset(
                data=result.data,
                mime_type=result.mime_type,
                model=result.model,
                estimated_cost_usd=result.estimated_cost_usd,
                width=result.width,
                height=result.height,
                call_render_id=job.render_id,
                credit=result.credit,
            )

        asset, cache_hit = await get_or_make(cache, "image", key, request.no_cache, make, deadline)
        for response in asset_responses(image_service_pb2.GenerateImageResponse, name, asset, cache_hit):
            yield response

    @rpc_method
    async def EstimateImageCost(
        self, request: image_service_pb2.EstimateImageCostRequest, context: grpc.aio.ServicerContext
    ) -> image_service_pb2.EstimateImageCostResponse:
        checked_count(len(request.requests), "requests")
        estimates = []
        for index, item in enumerate(request.requests):
            name = self._registry.resolve(item.provider, f"requests[{index}].provider")
            usd = self._registry.estimate_usd(name, _image_job(item, f"requests[{index}]."))
            estimates.append(types_pb2.CostEstimate(provider=name, usd=usd))
        return image_service_pb2.EstimateImageCostResponse(estimates=estimates)

    @rpc_method
    async def ListImageProviders(
        self, request: image_service_pb2.ListImageProvidersRequest, context: grpc.aio.ServicerContext
    ) -> image_service_pb2.ListImageProvidersResponse:
        return image_service_pb2.ListImageProvidersResponse(
            providers=provider_set(types_pb2.MEDIA_KIND_IMAGE, self._registry)
        )


def _image_job(request: image_service_pb2.GenerateImageRequest, prefix: str = "") -> ImageJob:
    """The job a request asks for, checked; `prefix` places the request's fields in a batch ("requests[2].")."""
    output = output_format(request.output)
    prompt = checked_text(request.scene.visual_prompt, f"{prefix}scene.visual_prompt", MAX_PROMPT_CHARS, False)
    title = checked_text(request.scene.title, f"{prefix}scene.title", MAX_TITLE_CHARS, required=False)
    if not prompt and not title:
        raise InvalidArgument(f"{prefix}scene.visual_prompt and {prefix}scene.title are both empty; give at least one")
    return ImageJob(
        prompt=prompt,
        title=title,
        scene_index=request.scene_index,
        width=output.width,
        height=output.height,
        quality=output.quality,
        aspect=output.aspect_name,
        render_id=request.render_id,
    )
