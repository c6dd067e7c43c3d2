"""RenderService: validates requests, starts RenderJobs, takes music uploads, and reports providers and spend."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from datetime import date
from typing import Any

import grpc
from scenecast.v1 import (
    audio_service_pb2,
    image_service_pb2,
    render_service_pb2,
    render_service_pb2_grpc,
    script_service_pb2,
    types_pb2,
    video_service_pb2,
)

from gateway.clients import Downstream
from gateway.config import GatewaySettings
from gateway.ledger import Grouping, SpendEntry, SpendLedger
from gateway.music import MusicFile, MusicStore
from gateway.registry import RenderRegistry
from gateway.render import (
    DownstreamError,
    RenderJob,
    avatar_request,
    clip_spec,
    downstream_error,
    image_request,
    speech_request,
)
from gateway.validation import check_provider, check_render_id, effective_cap, validate_render
from services.common.errors import BILLED_CALLS_KEY, FailedPrecondition, InvalidArgument, rpc_method
from services.common.finishing import finishing_options
from services.common.observability import call_metadata, render_id_var
from services.common.output import OutputFormat
from services.common.providers import SPOKEN_CHARS_PER_SECOND, check_cost_cap

_LOGGER = logging.getLogger(__name__)

# Listing providers and pricing jobs are cheap; a service that does not answer this fast is not ready for a render.
_CHEAP_CALL_SECONDS = 10.0
_GROUPINGS: dict[int, Grouping] = {
    render_service_pb2.SPEND_GROUPING_UNSPECIFIED: "day",
    render_service_pb2.SPEND_GROUPING_DAY: "day",
    render_service_pb2.SPEND_GROUPING_PROVIDER: "provider",
    render_service_pb2.SPEND_GROUPING_RENDER: "render",
}
_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")


class RenderServicer(render_service_pb2_grpc.RenderServiceServicer):
    def __init__(
        self,
        downstream: Downstream,
        registry: RenderRegistry,
        settings: GatewaySettings,
        music: MusicStore,
        ledger: SpendLedger | None,
    ) -> None:
        self._downstream = downstream
        self._registry = registry
        self._settings = settings
        self._music = music
        self._ledger = ledger

    @rpc_method
    async def Render(
        self, request: render_service_pb2.RenderRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[render_service_pb2.RenderResponse]:
        plan = await self._plan(request)
        cap = effective_cap(request.max_cost_usd, self._settings.max_render_cost_usd)
        estimate = (await self._estimate(request, plan)).total_usd
        # `not <=` so that an estimate that is not a number (a price misconfigured as NaN) is refused too.
        if cap and not estimate <= cap:
            raise FailedPrecondition(
                f"the render is estimated at ${estimate:.4f}, over max_cost_usd ${cap:.4f}{self._cap_source(cap)}; "
                "lower the cost or choose cheaper providers (scenecast estimate shows the cost per scene)"
            )
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
            clip_provider=plan.clip_provider,
            clip_scenes=plan.clip_scenes,
            avatar_provider=plan.avatar_provider,
            max_cost_usd=cap,
            estimate_usd=estimate,
            music=plan.music,
            offline_providers=plan.offline_providers,
            ledger=self._ledger,
            downstream=self._downstream,
            settings=self._settings,
            deadline=time.monotonic() + budget,
        )
        await self._registry.start(job)
        async for event in self._registry.follow(render_id, progress=True, chunks=True):
            if isinstance(event, render_service_pb2.RenderProgress):
                yield render_service_pb2.RenderResponse(progress=event)
            elif isinstance(event, types_pb2.MediaChunk):
                yield render_service_pb2.RenderResponse(chunk=event)
            else:
                yield render_service_pb2.RenderResponse(summary=event)

    @rpc_method
    async def WatchRender(
        self, request: render_service_pb2.WatchRenderRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[render_service_pb2.WatchRenderResponse]:
        render_id_var.set(_known_render_id(request.render_id))
        async for event in self._registry.follow(request.render_id, progress=True, chunks=False):
            if isinstance(event, render_service_pb2.RenderProgress):
                yield render_service_pb2.WatchRenderResponse(progress=event)
            else:
                yield render_service_pb2.WatchRenderResponse(summary=event)

    @rpc_method
    async def FetchResult(
        self, request: render_service_pb2.FetchResultRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[render_service_pb2.FetchResultResponse]:
        render_id_var.set(_known_render_id(request.render_id))
        async for event in self._registry.follow(request.render_id, progress=False, chunks=True, offset=request.offset):
            if isinstance(event, types_pb2.MediaChunk):
                yield render_service_pb2.FetchResultResponse(chunk=event)
            else:
                yield render_service_pb2.FetchResultResponse(summary=event)

    @rpc_method
    async def CancelRender(
        self, request: render_service_pb2.CancelRenderRequest, context: grpc.aio.ServicerContext
    ) -> render_service_pb2.CancelRenderResponse:
        render_id_var.set(_known_render_id(request.render_id))
        return render_service_pb2.CancelRenderResponse(cancelled=await self._registry.cancel(request.render_id))

    @rpc_method
    async def EstimateCost(
        self, request: render_service_pb2.EstimateCostRequest, context: grpc.aio.ServicerContext
    ) -> render_service_pb2.EstimateCostResponse:
        render = request.render
        return await self._estimate(render, await self._plan(render))

    def _cap_source(self, cap: float) -> str:
        """Names the operator's cap when it is the one that applies, so a caller who asked for more learns why."""
        if cap == self._settings.max_render_cost_usd:
            return " (the gateway's MAX_RENDER_COST_USD, which a request can only lower)"
        return ""

    async def _estimate(
        self, render: render_service_pb2.RenderRequest, plan: RenderPlan
    ) -> render_service_pb2.EstimateCostResponse:
        """Asks the media services what the planned render's assets cost: they own the providers and their prices.
        Cache hits are not foreseen, so this is an upper bound."""
        options = {"timeout": _CHEAP_CALL_SECONDS, "metadata": call_metadata()}
        try:
            if plan.avatar_provider:
                answer = await self._downstream.video.EstimateAvatarCost(
                    video_service_pb2.EstimateAvatarCostRequest(
                        request=avatar_request(render, render.render_id, plan.avatar_provider)
                    ),
                    **options,
                )
                return render_service_pb2.EstimateCostResponse(
                    scenes=[render_service_pb2.SceneEstimate(scene_id=scene.id) for scene in render.scenes],
                    total_usd=answer.estimate.usd,
                    avatar_provider=answer.estimate.provider,
                    avatar_usd=answer.estimate.usd,
                )
            indices = range(len(render.scenes))
            clip_indices = sorted(plan.clip_scenes)
            # The narration's length is not known before it is spoken: guessed from its characters, plus the extra
            # the render asks clips for.
            specs = [
                clip_spec(render, index, render.render_id, plan.clip_provider, self._expected_clip_ms(render, index))
                for index in clip_indices
            ]
            images, speech, clips = await asyncio.gather(
                self._downstream.image.EstimateImageCost(
                    image_service_pb2.EstimateImageCostRequest(
                        requests=[image_request(render, index, render.render_id) for index in indices]
                    ),
                    **options,
                ),
                self._downstream.audio.EstimateSpeechCost(
                    audio_service_pb2.EstimateSpeechCostRequest(
                        requests=[speech_request(render, index, render.render_id) for index in indices]
                    ),
                    **options,
                ),
                self._estimate_clips(specs, options),
            )
        except grpc.aio.AioRpcError as error:
            raise DownstreamError(error.code(), f"pricing the render failed: {error.details()}") from error
        clip_estimates = dict(zip(clip_indices, clips, strict=True))
        scenes = []
        for index, scene in enumerate(render.scenes):
            image, narration, clip = images.estimates[index], speech.estimates[index], clip_estimates.get(index)
            estimate = render_service_pb2.SceneEstimate(
                scene_id=scene.id,
                image_provider=image.provider,
                image_usd=image.usd,
                speech_provider=narration.provider,
                speech_usd=narration.usd,
                video_provider=clip.provider if clip else "",
                video_usd=clip.usd if clip else 0.0,
            )
            estimate.total_usd = estimate.image_usd + estimate.speech_usd + estimate.video_usd
            scenes.append(estimate)
        return render_service_pb2.EstimateCostResponse(scenes=scenes, total_usd=sum(s.total_usd for s in scenes))

    def _expected_clip_ms(self, render: render_service_pb2.RenderRequest, index: int) -> int:
        spoken_ms = len(render.scenes[index].narration.strip()) / SPOKEN_CHARS_PER_SECOND * 1000
        return round(spoken_ms) + self._settings.clip_extra_ms

    async def _estimate_clips(
        self, specs: list[video_service_pb2.ClipSpec], options: dict[str, Any]
    ) -> list[types_pb2.CostEstimate]:
        """No call when the render has no clips: a render of stills must not need the video service's prices."""
        if not specs:
            return []
        answer = await self._downstream.video.EstimateClipCost(
            video_service_pb2.EstimateClipCostRequest(specs=specs), **options
        )
        return list(answer.estimates)

    @rpc_method
    async def UploadMusic(
        self, request_iterator: AsyncIterator[render_service_pb2.UploadMusicRequest], context: grpc.aio.ServicerContext
    ) -> render_service_pb2.UploadMusicResponse:
        requests = aiter(request_iterator)
        first = await anext(requests, None)
        if first is None or not first.HasField("start"):
            raise InvalidArgument("the first message must be `start`, with the music's mime_type and size_bytes")

        async def chunks() -> AsyncIterator[types_pb2.MediaChunk]:
            async for message in requests:
                if not message.HasField("chunk"):
                    raise InvalidArgument("only `chunk` messages may follow `start`")
                yield message.chunk

        stored = await self._music.upload(first.start.mime_type, first.start.size_bytes, chunks())
        return render_service_pb2.UploadMusicResponse(
            upload_id=stored.upload_id, duration_ms=stored.duration_ms, expires_in_seconds=stored.expires_in_seconds
        )

    @rpc_method
    async def GetSpend(
        self, request: render_service_pb2.GetSpendRequest, context: grpc.aio.ServicerContext
    ) -> render_service_pb2.GetSpendResponse:
        if self._ledger is None:
            raise FailedPrecondition("the gateway keeps no spend ledger (SPEND_LEDGER_PATH is off)")
        group_by = _GROUPINGS.get(request.group_by)
        if group_by is None:
            raise InvalidArgument(f"group_by must be DAY, PROVIDER or RENDER (got {request.group_by})")
        check_render_id(request.render_id)
        groups = await self._ledger.summarise(group_by, _day(request.since_day), request.render_id)
        return render_service_pb2.GetSpendResponse(
            rows=[
                render_service_pb2.SpendRow(key=g.key, calls=g.calls, cache_hits=g.cache_hits, usd=g.usd)
                for g in groups
            ],
            total_usd=sum(g.usd for g in groups),
        )

    @rpc_method
    async def DraftScript(
        self, request: render_service_pb2.RenderServiceDraftScriptRequest, context: grpc.aio.ServicerContext
    ) -> render_service_pb2.RenderServiceDraftScriptResponse:
        draft = script_service_pb2.DraftScriptRequest()
        draft.CopyFrom(request.request)
        check_cost_cap(draft.max_cost_usd, "request.max_cost_usd")
        cap = effective_cap(draft.max_cost_usd, self._settings.max_render_cost_usd)
        # The script service enforces the cap too, and drafts no more scenes than this gateway renders.
        draft.max_cost_usd = cap
        draft.max_scenes = self._settings.max_scenes
        try:
            estimate = await self._downstream.script.EstimateDraftCost(
                script_service_pb2.EstimateDraftCostRequest(request=draft),
                timeout=_CHEAP_CALL_SECONDS,
                metadata=call_metadata(),
            )
        except grpc.aio.AioRpcError as error:
            raise downstream_error(error, "pricing the draft") from error
        usd = estimate.estimate.usd
        if cap and not usd <= cap:
            raise FailedPrecondition(
                f"the draft is estimated at up to ${usd:.4f}, over max_cost_usd ${cap:.4f}{self._cap_source(cap)}; "
                "ask for fewer seconds, or draft from a document with the offline outline provider"
            )
        draft_id = f"draft-{uuid.uuid4().hex[:16]}"
        render_id_var.set(draft_id)  # the draft's log lines, downstream call and ledger rows carry it
        remaining = context.time_remaining()
        # One call, never repeated here: a paid draft that was answered would be paid again.
        try:
            answer = await self._downstream.script.DraftScript(
                draft,
                timeout=min(remaining, self._settings.asset_timeout_seconds)
                if remaining
                else self._settings.asset_timeout_seconds,
                metadata=call_metadata(),
            )
        except grpc.aio.AioRpcError as error:
            # A failed draft may have been billed (an unusable answer asked again): its calls come in the trailers.
            billed = dict(error.trailing_metadata() or ()).get(BILLED_CALLS_KEY)
            if isinstance(billed, bytes):
                calls = script_service_pb2.DraftCalls.FromString(billed).calls
                await self._record_draft(draft_id, estimate.estimate.provider, calls)
            raise downstream_error(error, "drafting the script") from error
        await self._record_draft(draft_id, answer.provider, answer.calls)
        return render_service_pb2.RenderServiceDraftScriptResponse(draft=answer, draft_id=draft_id)

    async def _record_draft(self, draft_id: str, provider: str, calls: Iterable[script_service_pb2.DraftCall]) -> None:
        """One paid ledger row per call the provider billed (an offline draft makes none), under the draft's id.
        A failed write is logged, not raised: the money is spent either way, and the caller should get the draft."""
        if self._ledger is None:
            return
        for call in calls:
            entry = SpendEntry(
                render_id=draft_id,
                scene_id="",
                media_kind="script",
                provider=provider,
                model=call.model,
                units=float(call.input_tokens + call.output_tokens),
                unit="token",
                usd=call.cost_usd,
                cache_hit=False,
                provider_call=f"{draft_id}/{call.id}",
            )
            try:
                await self._ledger.record(entry)
            except Exception:  # noqa: BLE001 - the entry is in the log line, to be added by hand
                _LOGGER.exception(
                    "draft %s: could not write to the spend ledger %s: %s", draft_id, self._ledger.location, entry
                )

    @rpc_method
    async def GetConfig(
        self, request: render_service_pb2.GetConfigRequest, context: grpc.aio.ServicerContext
    ) -> render_service_pb2.GetConfigResponse:
        media, scripts = await asyncio.gather(self._provider_sets(), self._script_providers())
        return render_service_pb2.GetConfigResponse(
            provider_sets=[*(s for s in media if s.kind), scripts],
            max_scenes=self._settings.max_scenes,
            max_concurrent_scenes=self._settings.max_concurrent_scenes,
        )

    async def _script_providers(self) -> types_pb2.ProviderSet:
        """Asked apart from the media services' lists: a render never needs the script service."""
        try:
            answer = await self._downstream.script.ListScriptProviders(
                script_service_pb2.ListScriptProvidersRequest(), timeout=_CHEAP_CALL_SECONDS, metadata=call_metadata()
            )
        except grpc.aio.AioRpcError as error:
            raise DownstreamError(error.code(), f"listing script providers failed: {error.details()}") from error
        return answer.providers

    async def _plan(self, request: render_service_pb2.RenderRequest) -> RenderPlan:
        """Validates a render against the providers the services have now, before anything is spent."""
        image, speech, video, avatar = await self._provider_sets()
        check_provider(request.providers.image, "providers.image", [p.name for p in image.providers])
        check_provider(request.providers.speech, "providers.speech", [p.name for p in speech.providers])
        check_provider(request.providers.video, "providers.video", [p.name for p in video.providers])
        check_provider(request.providers.avatar, "providers.avatar", [p.name for p in avatar.providers])
        avatar_provider = request.providers.avatar or avatar.default_provider
        output = validate_render(request, self._settings.max_scenes, needs_visuals=not avatar_provider)
        finishing_options(request.finishing)
        clip_provider = request.providers.video or video.default_provider
        clip_scenes = frozenset(
            index
            for index, scene in enumerate(request.scenes)
            if scene.visual_kind == types_pb2.VISUAL_KIND_CLIP
            or (scene.visual_kind == types_pb2.VISUAL_KIND_UNSPECIFIED and clip_provider)
        )
        if clip_scenes and not clip_provider:
            first = min(clip_scenes)
            raise InvalidArgument(
                f"scenes[{first}].visual_kind asks for a clip but no video provider is chosen; "
                "set providers.video or VIDEO_PROVIDER"
            )
        return RenderPlan(
            output=output,
            image_provider=request.providers.image or image.default_provider,
            speech_provider=request.providers.speech or speech.default_provider,
            clip_provider=clip_provider,
            clip_scenes=clip_scenes if not avatar_provider else frozenset(),
            avatar_provider=avatar_provider,
            music=await self._music_file(request) if request.HasField("music") else None,
            offline_providers=frozenset(
                p.name for provider_set in (image, speech, video, avatar) for p in provider_set.providers if p.offline
            ),
        )

    async def _music_file(self, request: render_service_pb2.RenderRequest) -> MusicFile:
        source = request.music.WhichOneof("source")
        if source == "upload_id":
            return await self._music.uploaded(request.music.upload_id)
        if source == "library_file":
            return await self._music.library_file(request.music.library_file)
        raise InvalidArgument("music is set but names neither upload_id nor library_file; set one, or leave it unset")

    async def _provider_sets(
        self,
    ) -> tuple[types_pb2.ProviderSet, types_pb2.ProviderSet, types_pb2.ProviderSet, types_pb2.ProviderSet]:
        """Asks each media service for its providers: the services own them and their environment defaults."""
        # With the caller's trace context, so that a render's provider lists are spans of its trace.
        metadata = call_metadata()
        calls = (
            self._downstream.image.ListImageProviders(
                image_service_pb2.ListImageProvidersRequest(), timeout=_CHEAP_CALL_SECONDS, metadata=metadata
            ),
            self._downstream.audio.ListSpeechProviders(
                audio_service_pb2.ListSpeechProvidersRequest(), timeout=_CHEAP_CALL_SECONDS, metadata=metadata
            ),
            self._downstream.video.ListVideoProviders(
                video_service_pb2.ListVideoProvidersRequest(), timeout=_CHEAP_CALL_SECONDS, metadata=metadata
            ),
        )
        try:
            image, audio, video = await asyncio.gather(*calls)
        except grpc.aio.AioRpcError as error:
            raise DownstreamError(error.code(), f"listing providers failed: {error.details()}") from error
        return image.providers, audio.providers, video.providers, video.avatar_providers


@dataclass(frozen=True)
class RenderPlan:
    """Which providers a valid render uses, decided once from the request and the services' defaults."""

    output: OutputFormat
    image_provider: str
    speech_provider: str
    clip_provider: str
    clip_scenes: frozenset[int]
    avatar_provider: str
    music: MusicFile | None
    # Providers that need no network and no key: nothing they make costs money, so the ledger skips them.
    offline_providers: frozenset[str]


def _known_render_id(render_id: str) -> str:
    """The id of an existing render, checked before it is looked up: never echoed whole (a megabyte of it would
    not fit in a status message)."""
    if not render_id:
        raise InvalidArgument("render_id is empty; give the id that Render reported (1-64 of A-Za-z0-9_-)")
    check_render_id(render_id)
    return render_id


def _day(text: str) -> date | None:
    """A GetSpend `since_day`, checked: empty means every day."""
    if not text:
        return None
    if _DAY.fullmatch(text):
        with contextlib.suppress(ValueError):  # 2026-02-30 and the like
            return date.fromisoformat(text)
    raise InvalidArgument(f"since_day must be a date written YYYY-MM-DD, for example 2026-11-28 (got {text[:40]!r})")
