"""RenderService: validates requests, starts RenderJobs, and reports the providers behind the gateway."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import grpc
from scenecast.v1 import (
    audio_service_pb2,
    image_service_pb2,
    render_service_pb2,
    render_service_pb2_grpc,
    types_pb2,
    video_service_pb2,
)

from gateway.clients import Downstream
from gateway.config import GatewaySettings
from gateway.render import DownstreamError, RenderJob
from gateway.validation import check_provider, validate_render
from services.common import pricing
from services.common.errors import rpc_method
from services.common.observability import render_id_var

# Listing providers is cheap; a service that does not answer this fast is not ready for a render either.
_LIST_TIMEOUT_SECONDS = 10.0


class RenderServicer(render_service_pb2_grpc.RenderServiceServicer):
    def __init__(self, downstream: Downstream, settings: GatewaySettings) -> None:
        self._downstream = downstream
        self._settings = settings

    @rpc_method
    async def Render(
        self, request: render_service_pb2.RenderRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[render_service_pb2.RenderResponse]:
        validate_render(request, self._settings.max_scenes)
        _, _, video = await self._checked_provider_sets(request)
        remaining = context.time_remaining()
        budget = (
            min(remaining, self._settings.render_timeout_seconds)
            if remaining
            else self._settings.render_timeout_seconds
        )
        render_id = request.render_id or uuid.uuid4().hex[:16]
        render_id_var.set(render_id)  # every log line and downstream call of this render carries it
        job = RenderJob(
            render_id=render_id,
            request=request,
            use_clips=bool(request.providers.video or video.default_provider),
            downstream=self._downstream,
            settings=self._settings,
            deadline=time.monotonic() + budget,
        )
        async for response in job.run():
            yield response

    @rpc_method
    async def EstimateCost(
        self, request: render_service_pb2.EstimateCostRequest, context: grpc.aio.ServicerContext
    ) -> render_service_pb2.EstimateCostResponse:
        render = request.render
        output = validate_render(render, self._settings.max_scenes)
        image, speech, video = await self._checked_provider_sets(render)
        image_name = render.providers.image or image.default_provider
        speech_name = render.providers.speech or speech.default_provider
        video_name = render.providers.video or video.default_provider
        scenes = []
        for scene in render.scenes:
            estimate = render_service_pb2.SceneEstimate(
                scene_id=scene.id,
                image_provider=image_name,
                image_usd=pricing.estimate_image(image_name, output.quality, output.aspect_name),
                speech_provider=speech_name,
                speech_usd=pricing.estimate_speech(speech_name, output.quality, len(scene.narration.strip())),
                video_provider=video_name,
                video_usd=pricing.estimate_clip(video_name, len(scene.narration) / pricing.SPOKEN_CHARS_PER_SECOND)
                if video_name
                else 0.0,
            )
            estimate.total_usd = estimate.image_usd + estimate.speech_usd + estimate.video_usd
            scenes.append(estimate)
        return render_service_pb2.EstimateCostResponse(scenes=scenes, total_usd=sum(s.total_usd for s in scenes))

    @rpc_method
    async def GetConfig(
        self, request: render_service_pb2.GetConfigRequest, context: grpc.aio.ServicerContext
    ) -> render_service_pb2.GetConfigResponse:
        return render_service_pb2.GetConfigResponse(
            provider_sets=await self._provider_sets(),
            max_scenes=self._settings.max_scenes,
            max_concurrent_scenes=self._settings.max_concurrent_scenes,
        )

    async def _checked_provider_sets(
        self, request: render_service_pb2.RenderRequest
    ) -> tuple[types_pb2.ProviderSet, types_pb2.ProviderSet, types_pb2.ProviderSet]:
        """The provider sets, after checking the request's overrides name providers the services have."""
        image, speech, video = await self._provider_sets()
        check_provider(request.providers.image, "providers.image", [p.name for p in image.providers])
        check_provider(request.providers.speech, "providers.speech", [p.name for p in speech.providers])
        check_provider(request.providers.video, "providers.video", [p.name for p in video.providers])
        return image, speech, video

    async def _provider_sets(self) -> tuple[types_pb2.ProviderSet, types_pb2.ProviderSet, types_pb2.ProviderSet]:
        """Asks each media service for its providers: the services own them and their environment defaults."""
        calls = {
            "image": self._downstream.image.ListImageProviders(
                image_service_pb2.ListImageProvidersRequest(), timeout=_LIST_TIMEOUT_SECONDS
            ),
            "audio": self._downstream.audio.ListSpeechProviders(
                audio_service_pb2.ListSpeechProvidersRequest(), timeout=_LIST_TIMEOUT_SECONDS
            ),
            "video": self._downstream.video.ListVideoProviders(
                video_service_pb2.ListVideoProvidersRequest(), timeout=_LIST_TIMEOUT_SECONDS
            ),
        }
        try:
            image, audio, video = await asyncio.gather(*calls.values())
        except grpc.aio.AioRpcError as error:
            raise DownstreamError(error.code(), f"listing providers failed: {error.details()}") from error
        return image.providers, audio.providers, video.providers
