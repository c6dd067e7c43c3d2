"""AudioService: translates requests to SpeechJobs and results to metadata (with timings) plus chunks."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator

import grpc
from scenecast.v1 import audio_service_pb2, audio_service_pb2_grpc, types_pb2

from services.audio.providers.base import SpeechJob, SpeechProvider, SpeechResult
from services.common.cache import CacheBackend, CachedAsset, CachedTiming, asset_responses, get_or_make, speech_key
from services.common.convert import checked_count, provider_set
from services.common.errors import InvalidArgument, ProviderUnavailable, rpc_method
from services.common.media import MediaInfo, probe
from services.common.observability import record_spend
from services.common.output import QUALITIES
from services.common.providers import ProviderRegistry, Quality
from services.common.retry import call_deadline, call_with_retries
from services.common.text import checked_narration, checked_text

# Voice names and ids are short; the gateway has the same limit.
MAX_VOICE_CHARS = 200


class AudioServicer(audio_service_pb2_grpc.AudioServiceServicer):
    def __init__(
        self, registry: ProviderRegistry[SpeechProvider], attempts: int, cache: CacheBackend | None = None
    ) -> None:
        self._registry = registry
        self._attempts = attempts
        # None turns caching off; offline providers bypass it anyway (making their output is cheaper than disk I/O).
        self._cache = cache

    @rpc_method
    async def SynthesizeSpeech(
        self, request: audio_service_pb2.SynthesizeSpeechRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[audio_service_pb2.SynthesizeSpeechResponse]:
        job = _speech_job(request)
        name, provider = self._registry.get(request.provider, "provider")

        cache = None if self._registry.is_offline(name) else self._cache
        key = speech_key(name, type(provider).__module__, self._registry.fingerprint(name), job) if cache else ""
        deadline = call_deadline(context)

        async def attempt() -> tuple[SpeechResult, MediaInfo]:
            result = await provider.synthesize(job)
            try:
                # The duration is measured by decoding the audio, never taken from the provider.
                info = await asyncio.to_thread(probe, io.BytesIO(result.data), f"{name} audio")
            except InvalidArgument as error:
                raise ProviderUnavailable(f"provider {name!r} returned audio that does not decode: {error}") from error
            if not info.has_audio:
                raise ProviderUnavailable(f"provider {name!r} returned a file with no audio")
            return result, info

        async def make() -> CachedAsset:
            result, info = await call_with_retries(attempt, attempts=self._attempts, deadline=deadline, provider=name)
            record_spend(name, result.model, result.estimated_cost_usd)
            return CachedAsset(
                data=result.data,
                mime_type=result.mime_type,
                model=result.model,
                estimated_cost_usd=result.estimated_cost_usd,
                sample_rate=info.sample_rate,
                duration_ms=info.duration_ms,
                timings=tuple(
                    CachedTiming(t.text, t.start_ms, min(t.end_ms, info.duration_ms), t.is_word) for t in result.timings
                ),
            )

        asset, cache_hit = await get_or_make(cache, "speech", key, request.no_cache, make, deadline)
        for response in asset_responses(audio_service_pb2.SynthesizeSpeechResponse, name, asset, cache_hit):
            yield response

    @rpc_method
    async def EstimateSpeechCost(
        self, request: audio_service_pb2.EstimateSpeechCostRequest, context: grpc.aio.ServicerContext
    ) -> audio_service_pb2.EstimateSpeechCostResponse:
        checked_count(len(request.requests), "requests")
        estimates = []
        for index, item in enumerate(request.requests):
            name = self._registry.resolve(item.provider, f"requests[{index}].provider")
            usd = self._registry.estimate_usd(name, _speech_job(item, f"requests[{index}]."))
            estimates.append(types_pb2.CostEstimate(provider=name, usd=usd))
        return audio_service_pb2.EstimateSpeechCostResponse(estimates=estimates)

    @rpc_method
    async def ListSpeechProviders(
        self, request: audio_service_pb2.ListSpeechProvidersRequest, context: grpc.aio.ServicerContext
    ) -> audio_service_pb2.ListSpeechProvidersResponse:
        return audio_service_pb2.ListSpeechProvidersResponse(
            providers=provider_set(types_pb2.MEDIA_KIND_SPEECH, self._registry)
        )


def _speech_job(request: audio_service_pb2.SynthesizeSpeechRequest, prefix: str = "") -> SpeechJob:
    """The job a request asks for, checked; `prefix` places the request's fields in a batch ("requests[2].")."""
    return SpeechJob(
        text=checked_narration(request.text, f"{prefix}text"),
        voice=checked_text(request.voice, f"{prefix}voice", MAX_VOICE_CHARS, required=False),
        quality=QUALITIES.get(request.quality, Quality.STANDARD),
        render_id=request.render_id,
    )
