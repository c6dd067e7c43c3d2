"""AudioService: translates requests to SpeechJobs and results to metadata (with timings) plus chunks."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator

import grpc
from scenecast.v1 import audio_service_pb2, audio_service_pb2_grpc, types_pb2

from services.audio.providers.base import SpeechJob, SpeechProvider, SpeechResult
from services.common.chunks import iter_chunks
from services.common.convert import provider_set
from services.common.errors import InvalidArgument, ProviderUnavailable, rpc_method
from services.common.media import MediaInfo, probe
from services.common.observability import record_spend
from services.common.output import QUALITIES
from services.common.providers import ProviderRegistry, Quality
from services.common.retry import call_deadline, call_with_retries
from services.common.text import checked_text

MAX_TEXT_CHARS = 4000


class AudioServicer(audio_service_pb2_grpc.AudioServiceServicer):
    def __init__(self, registry: ProviderRegistry[SpeechProvider], attempts: int) -> None:
        self._registry = registry
        self._attempts = attempts

    @rpc_method
    async def SynthesizeSpeech(
        self, request: audio_service_pb2.SynthesizeSpeechRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[audio_service_pb2.SynthesizeSpeechResponse]:
        text = checked_text(request.text, "text", MAX_TEXT_CHARS)
        name, provider = self._registry.get(request.provider, "provider")
        job = SpeechJob(
            text=text,
            voice=request.voice,
            quality=QUALITIES.get(request.quality, Quality.STANDARD),
            render_id=request.render_id,
        )

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

        result, info = await call_with_retries(
            attempt, attempts=self._attempts, deadline=call_deadline(context), provider=name
        )
        record_spend(name, result.model, result.estimated_cost_usd)
        yield audio_service_pb2.SynthesizeSpeechResponse(
            metadata=types_pb2.AssetMetadata(
                mime_type=result.mime_type,
                size_bytes=len(result.data),
                sample_rate=info.sample_rate,
                duration_ms=info.duration_ms,
                provider=name,
                model=result.model,
                estimated_cost_usd=result.estimated_cost_usd,
                timings=[
                    types_pb2.TextTiming(
                        text=t.text,
                        start_ms=t.start_ms,
                        end_ms=min(t.end_ms, info.duration_ms),
                        kind=types_pb2.TIMING_KIND_WORD if t.is_word else types_pb2.TIMING_KIND_SENTENCE,
                    )
                    for t in result.timings
                ],
            )
        )
        for chunk in iter_chunks(result.data):
            yield audio_service_pb2.SynthesizeSpeechResponse(chunk=chunk)

    @rpc_method
    async def ListSpeechProviders(
        self, request: audio_service_pb2.ListSpeechProvidersRequest, context: grpc.aio.ServicerContext
    ) -> audio_service_pb2.ListSpeechProvidersResponse:
        return audio_service_pb2.ListSpeechProvidersResponse(
            providers=provider_set(types_pb2.MEDIA_KIND_SPEECH, self._registry)
        )
