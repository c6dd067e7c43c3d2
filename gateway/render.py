"""One render: fans scene asset calls out concurrently, feeds the assembler as scenes complete, relays its output."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

import grpc
from scenecast.v1 import assembler_service_pb2 as assembler_pb
from scenecast.v1 import audio_service_pb2, image_service_pb2, render_service_pb2, types_pb2, video_service_pb2

from gateway.clients import Downstream
from gateway.config import GatewaySettings
from gateway.ledger import SpendEntry, SpendLedger
from gateway.music import MusicFile
from gateway.preview import scene_preview
from services.common.chunks import iter_file_chunks
from services.common.errors import ORIGIN_KEY, ProviderUnavailable, QuotaExceeded, ScenecastError
from services.common.observability import call_metadata
from services.common.retry import call_with_retries

_LOGGER = logging.getLogger(__name__)

_ASSEMBLY_STAGES = {
    assembler_pb.ASSEMBLY_STAGE_SCENE_ENCODED: render_service_pb2.RENDER_STAGE_SCENE_ENCODED,
    assembler_pb.ASSEMBLY_STAGE_MUXING: render_service_pb2.RENDER_STAGE_MUXING,
    assembler_pb.ASSEMBLY_STAGE_DONE: render_service_pb2.RENDER_STAGE_STREAMING,
}


class DownstreamError(ScenecastError):
    """A service call failed; keeps its status code and says which scene and asset it was for."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


class ReplicaUnavailable(ProviderUnavailable):
    """A service replica could not be reached or went away mid-call; another replica may serve a retry."""


def downstream_error(error: grpc.aio.AioRpcError, where: str) -> ScenecastError:
    """UNAVAILABLE from the transport (a replica gone or unreachable) may be retried on another replica; any status
    the service sent itself (marked by ORIGIN_KEY) already includes the service's own bounded retries."""
    from_service = any(key == ORIGIN_KEY for key, _ in (error.trailing_metadata() or ()))
    if error.code() == grpc.StatusCode.UNAVAILABLE and not from_service:
        return ReplicaUnavailable(f"{where}: {error.details()}")
    return DownstreamError(error.code(), f"{where}: {error.details()}")


@dataclass
class Asset:
    """A received asset: its metadata and its chunks, kept as they came (the bytes are held once)."""

    metadata: types_pb2.AssetMetadata
    chunks: list[types_pb2.MediaChunk]


@dataclass
class _SceneAssets:
    image: Asset | None = None
    narration: Asset | None = None
    clip: Asset | None = None

    @property
    def visual(self) -> Asset:
        visual = self.clip or self.image
        assert visual is not None
        return visual

    @property
    def credits(self) -> list[types_pb2.Credit]:
        """The credit of the stock media shown. A clip with a credit of its own is stock footage, which replaces the
        scene's image; any other clip is made from the image (every generating clip provider animates the scene's
        still), so the image's credit is then the scene's."""
        for asset in (self.clip, self.image):
            if asset is not None and asset.metadata.HasField("credit"):
                return [asset.metadata.credit]
        return []


AVATAR_SCENE_ID = "avatar"

# What the spend ledger calls each media kind.
_KIND_NAMES = {
    types_pb2.MEDIA_KIND_IMAGE: "image",
    types_pb2.MEDIA_KIND_SPEECH: "speech",
    types_pb2.MEDIA_KIND_VIDEO: "video",
    types_pb2.MEDIA_KIND_AVATAR: "avatar",
}


@dataclass
class RenderJob:
    """Everything one Render call needs; `run` yields RenderResponse messages.

    `clip_provider` names the video provider for scenes that show clips (empty: the video service's default);
    `clip_scenes` says which scenes do. With an `avatar_provider`, the whole script is instead one avatar video,
    assembled as a single scene whose picture and voice come from that video. Every asset from a provider not in
    `offline_providers` is recorded in the `ledger` (when there is one).
    """

    render_id: str
    request: render_service_pb2.RenderRequest
    clip_provider: str
    clip_scenes: frozenset[int]
    avatar_provider: str
    # Spending cap in US dollars (0: none); checked as each asset's recorded cost arrives.
    max_cost_usd: float
    # What EstimateCost priced the render at, in US dollars.
    estimate_usd: float
    music: MusicFile | None
    offline_providers: frozenset[str]
    ledger: SpendLedger | None
    downstream: Downstream
    settings: GatewaySettings
    deadline: float
    _events: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)
    _ready: asyncio.Queue[int] = field(default_factory=asyncio.Queue)
    _assets: dict[int, _SceneAssets] = field(default_factory=dict)
    _reports: dict[int, render_service_pb2.SceneReport] = field(default_factory=dict)
    _completed_steps: int = 0
    _spent_usd: float = 0.0
    _started: float = field(default_factory=time.monotonic)

    @cached_property
    def assembly_scenes(self) -> list[types_pb2.Scene]:
        """The scenes the assembler receives: the script's, or one scene holding the whole avatar video."""
        if not self.avatar_provider:
            return list(self.request.scenes)
        narration = " ".join(scene.narration.strip() for scene in self.request.scenes)
        return [types_pb2.Scene(id=AVATAR_SCENE_ID, narration=narration, title=self.request.title)]

    @property
    def total_steps(self) -> int:
        if self.avatar_provider:
            return 2  # the avatar video, and its encoding
        # Per scene: image, speech and its encoding, plus a clip where the scene shows one.
        return 3 * len(self.request.scenes) + len(self.clip_scenes)

    async def run(self) -> AsyncIterator[render_service_pb2.RenderResponse]:
        yield self._progress(render_service_pb2.RENDER_STAGE_ACCEPTED, message=f"render {self.render_id} accepted")
        if self.avatar_provider:
            tasks = [asyncio.create_task(self._guard(self._avatar()))]
        else:
            slots = asyncio.Semaphore(self.settings.max_concurrent_scenes)
            tasks = [asyncio.create_task(self._guard(self._scene(i, slots))) for i in range(len(self.request.scenes))]
        # Not retried: the assembly holds the whole render's state, so a lost assembler fails the render clearly.
        call = self.downstream.assembler.Assemble(
            self._assembler_requests(), timeout=self._timeout(None), metadata=call_metadata(self.render_id)
        )
        tasks.append(asyncio.create_task(self._guard(self._relay(call))))
        try:
            while (item := await self._events.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            call.cancel()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _guard(self, work: Awaitable[None]) -> None:
        """Hands a task's failure to the main loop, which raises it to the caller."""
        try:
            await work
        except Exception as error:  # noqa: BLE001 - re-raised by run()
            self._events.put_nowait(error)

    def _timeout(self, limit: float | None) -> float:
        left = max(0.1, self.deadline - time.monotonic())
        return min(left, limit) if limit else left

    async def _scene(self, index: int, slots: asyncio.Semaphore) -> None:
        scene = self.request.scenes[index]
        assets = _SceneAssets()
        async with slots:
            try:
                async with asyncio.TaskGroup() as group:
                    group.create_task(self._image(index, assets))
                    group.create_task(self._speech(index, assets))
            except ExceptionGroup as failures:
                # Report the scene's first failure as it is (its status names the scene and the cause).
                raise failures.exceptions[0] from None
            if index in self.clip_scenes:
                await self._clip(index, assets)
        self._scene_ready(index, scene.id, assets)

    def _scene_ready(self, index: int, scene_id: str, assets: _SceneAssets) -> None:
        """Keeps the scene's report and hands its assets to the assembler stream."""
        self._assets[index] = assets
        cost = sum(a.metadata.estimated_cost_usd for a in (assets.image, assets.narration, assets.clip) if a)
        report = render_service_pb2.SceneReport(scene_id=scene_id, estimated_cost_usd=cost)
        report.visual.CopyFrom(assets.visual.metadata)
        report.narration.CopyFrom(assets.narration.metadata)  # type: ignore[union-attr]
        report.narration.ClearField("timings")  # the caller has the text; timings would only bloat the summary
        report.credits.extend(assets.credits)
        self._reports[index] = report
        self._ready.put_nowait(index)

    async def _avatar(self) -> None:
        request = avatar_request(self.request, self.render_id, self.avatar_provider)
        video = await self._fetch(
            0, "avatar", lambda: self.downstream.video.GenerateAvatarVideo(request, **self._call_options())
        )
        await self._asset_ready(0, types_pb2.MEDIA_KIND_AVATAR, video)
        # The avatar's own voice is the narration: the same bytes, read by the assembler for their audio track.
        voice = types_pb2.AssetMetadata()
        voice.CopyFrom(video.metadata)
        voice.mime_type = "audio/mp4"
        voice.estimated_cost_usd = 0.0  # counted once, with the picture
        self._scene_ready(0, AVATAR_SCENE_ID, _SceneAssets(clip=video, narration=Asset(voice, video.chunks)))

    async def _fetch(self, index: int, what: str, start_call: Callable[[], Any]) -> Asset:
        """One asset call, retried on UNAVAILABLE (round_robin sends the retry to another replica)."""
        return await call_with_retries(
            lambda: self._receive(start_call(), index, what),
            attempts=self.settings.scene_call_attempts,
            deadline=self.deadline,
            provider=f"{what}-service",
        )

    def _call_options(self) -> dict[str, Any]:
        return {
            "timeout": self._timeout(self.settings.asset_timeout_seconds),
            "metadata": call_metadata(self.render_id),
        }

    async def _image(self, index: int, assets: _SceneAssets) -> None:
        request = image_request(self.request, index, self.render_id)
        assets.image = await self._fetch(
            index, "image", lambda: self.downstream.image.GenerateImage(request, **self._call_options())
        )
        # Made off the event loop: decoding and encoding take milliseconds that other renders' streams need.
        preview = await asyncio.to_thread(scene_preview, b"".join(chunk.data for chunk in assets.image.chunks))
        await self._asset_ready(index, types_pb2.MEDIA_KIND_IMAGE, assets.image, preview)

    async def _speech(self, index: int, assets: _SceneAssets) -> None:
        request = speech_request(self.request, index, self.render_id)
        assets.narration = await self._fetch(
            index, "speech", lambda: self.downstream.audio.SynthesizeSpeech(request, **self._call_options())
        )
        await self._asset_ready(index, types_pb2.MEDIA_KIND_SPEECH, assets.narration)

    async def _clip(self, index: int, assets: _SceneAssets) -> None:
        assert assets.image is not None and assets.narration is not None
        image = assets.image
        duration_ms = assets.narration.metadata.duration_ms + self.settings.clip_extra_ms

        async def requests() -> AsyncIterator[video_service_pb2.GenerateClipRequest]:
            spec = clip_spec(self.request, index, self.render_id, self.clip_provider, duration_ms)
            spec.source_image_mime_type = image.metadata.mime_type
            yield video_service_pb2.GenerateClipRequest(spec=spec)
            for chunk in image.chunks:
                yield video_service_pb2.GenerateClipRequest(source_image_chunk=chunk)

        assets.clip = await self._fetch(
            index, "clip", lambda: self.downstream.video.GenerateClip(requests(), **self._call_options())
        )
        await self._asset_ready(index, types_pb2.MEDIA_KIND_VIDEO, assets.clip)

    async def _receive(self, call: Any, index: int, what: str) -> Asset:
        """Collects an asset stream, checking the metadata came first and no bytes are missing."""
        where = f"scenes[{index}] ({self.assembly_scenes[index].id}) {what}"
        metadata: types_pb2.AssetMetadata | None = None
        chunks: list[types_pb2.MediaChunk] = []
        received = 0
        try:
            async for response in call:
                if response.HasField("metadata"):
                    metadata = response.metadata
                else:
                    chunks.append(response.chunk)
                    received += len(response.chunk.data)
        except grpc.aio.AioRpcError as error:
            raise downstream_error(error, where) from error
        if metadata is None or received != metadata.size_bytes:
            raise ProviderUnavailable(f"{where}: the stream ended early ({received} bytes); try again")
        return Asset(metadata, chunks)

    async def _asset_ready(self, index: int, kind: int, asset: Asset, preview: bytes = b"") -> None:
        cost = asset.metadata.estimated_cost_usd
        if not math.isfinite(cost) or cost < 0:
            # A NaN would make every later comparison false and a negative cost would pay back spend: either would
            # switch the cap off, so the render stops rather than spend without a count.
            raise ScenecastError(
                f"scenes[{index}] ({self.assembly_scenes[index].id}) {asset.metadata.provider} reported a cost of "
                f"{cost} US dollars, which cannot be counted against the spending cap; stopped. Check the "
                "provider's price settings"
            )
        await self._record_spend(index, kind, asset.metadata)
        self._spent_usd += cost
        if self.max_cost_usd and self._spent_usd > self.max_cost_usd:
            raise QuotaExceeded(
                f"render {self.render_id} has spent ${self._spent_usd:.4f} (scenes[{index}] "
                f"{self.assembly_scenes[index].id} went over), above max_cost_usd ${self.max_cost_usd:.4f}; stopped"
            )
        self._completed_steps += 1
        scene_id = self.assembly_scenes[index].id
        event = self._progress(
            render_service_pb2.RENDER_STAGE_ASSET_READY,
            index,
            kind,
            f"scene {scene_id}: {types_pb2.MediaKind.Name(kind).removeprefix('MEDIA_KIND_').lower()} "
            f"from {asset.metadata.provider}",
        )
        event.progress.preview_jpeg = preview
        self._events.put_nowait(event)

    async def _record_spend(self, index: int, kind: int, metadata: types_pb2.AssetMetadata) -> None:
        """Writes the asset to the spend ledger, unless it came from an offline provider (nothing to pay).

        A cache hit also writes the paid row of the provider call that made the asset, which the ledger keeps only
        if that call has none yet: the render that ordered it may have died (its gateway killed) after the media
        service had paid for it but before the asset reached it. The row goes to that render, whose money it was.
        A failed write is logged, not raised: the money is spent either way, and stopping the render would waste it.
        """
        if self.ledger is None or metadata.provider in self.offline_providers:
            return
        if kind == types_pb2.MEDIA_KIND_IMAGE:
            units, unit = 1.0, "image"
        elif kind == types_pb2.MEDIA_KIND_SPEECH:
            units, unit = float(len(self.request.scenes[index].narration.strip())), "character"
        else:
            units, unit = metadata.duration_ms / 1000, "second"
        call = metadata.provider_call
        entry = SpendEntry(
            render_id=self.render_id,
            scene_id=self.assembly_scenes[index].id,
            media_kind=_KIND_NAMES[kind],
            provider=metadata.provider,
            model=metadata.model,
            units=units,
            unit=unit,
            usd=metadata.estimated_cost_usd,
            cache_hit=metadata.cache_hit,
            provider_call=call.id,
        )
        entries = [entry]
        if metadata.cache_hit and call.id and math.isfinite(call.cost_usd) and call.cost_usd >= 0:
            paid = replace(entry, render_id=call.render_id or self.render_id, usd=call.cost_usd, cache_hit=False)
            # The call's own id as the write key: the paid row of one call is one row, however often it is written.
            entries.insert(0, replace(paid, call_id=call.id))
        for written in entries:
            try:
                await self.ledger.record(written)
            except Exception:  # noqa: BLE001 - the entry is in the log line, to be added by hand
                _LOGGER.exception(
                    "render %s: could not write to the spend ledger %s: %s",
                    self.render_id,
                    self.ledger.location,
                    written,
                )

    async def _assembler_requests(self) -> AsyncIterator[assembler_pb.AssembleRequest]:
        scenes = self.assembly_scenes
        start = assembler_pb.AssemblyStart(
            render_id=self.render_id,
            output=self.request.output,
            scene_count=len(scenes),
            title=self.request.title,
            finishing=self.request.finishing,
        )
        if self.avatar_provider:
            # The avatar's lips and voice are already in sync: no lead-in silence that would shift one of them.
            start.scene_lead_ms = 0
            start.scene_tail_ms = 0
        yield assembler_pb.AssembleRequest(start=start)
        if self.music is not None:
            async for request in self._music_requests(self.music):
                yield request
        for _ in scenes:
            index = await self._ready.get()
            # Popped, so each scene's bytes are released once sent.
            assets = self._assets.pop(index)
            yield assembler_pb.AssembleRequest(
                scene=assembler_pb.SceneStart(
                    scene_index=index,
                    scene=scenes[index],
                    visual=assets.visual.metadata,
                    narration=assets.narration.metadata,  # type: ignore[union-attr]
                )
            )
            for role, asset in (
                (assembler_pb.ASSET_ROLE_VISUAL, assets.visual),
                (assembler_pb.ASSET_ROLE_NARRATION, assets.narration),
            ):
                for chunk in asset.chunks:  # type: ignore[union-attr]
                    yield assembler_pb.AssembleRequest(
                        chunk=assembler_pb.SceneChunk(scene_index=index, role=role, chunk=chunk)
                    )

    async def _music_requests(self, music: MusicFile) -> AsyncIterator[assembler_pb.AssembleRequest]:
        """The music's announcement, then its bytes read from disk a chunk at a time (in a worker thread)."""
        yield assembler_pb.AssembleRequest(
            music=assembler_pb.MusicStart(
                music=types_pb2.AssetMetadata(mime_type=music.mime_type, size_bytes=music.size_bytes)
            )
        )
        chunks = iter_file_chunks(music.path)
        while (chunk := await asyncio.to_thread(next, chunks, None)) is not None:
            yield assembler_pb.AssembleRequest(
                chunk=assembler_pb.SceneChunk(scene_index=0, role=assembler_pb.ASSET_ROLE_MUSIC, chunk=chunk)
            )

    async def _relay(self, call: Any) -> None:
        try:
            async for response in call:
                kind = response.WhichOneof("payload")
                if kind == "chunk":
                    self._events.put_nowait(render_service_pb2.RenderResponse(chunk=response.chunk))
                elif kind == "progress":
                    self._relay_progress(response.progress)
                elif kind == "summary":
                    summary = await self._summary(response.summary)
                    self._events.put_nowait(render_service_pb2.RenderResponse(summary=summary))
        except grpc.aio.AioRpcError as error:
            raise downstream_error(error, "assembler") from error
        self._events.put_nowait(None)

    def _relay_progress(self, progress: assembler_pb.AssemblyProgress) -> None:
        stage = _ASSEMBLY_STAGES.get(progress.stage)
        if stage is None:
            return
        if stage == render_service_pb2.RENDER_STAGE_SCENE_ENCODED:
            self._completed_steps += 1
            scene_id = self.assembly_scenes[progress.scene_index].id
            message = f"scene {scene_id}: encoded ({progress.scenes_encoded}/{progress.scene_count})"
        else:
            message = "joining scenes" if stage == render_service_pb2.RENDER_STAGE_MUXING else "streaming the MP4"
        self._events.put_nowait(self._progress(stage, progress.scene_index, message=message))

    def _progress(
        self, stage: int, index: int = 0, kind: int = types_pb2.MEDIA_KIND_UNSPECIFIED, message: str = ""
    ) -> render_service_pb2.RenderResponse:
        return render_service_pb2.RenderResponse(
            progress=render_service_pb2.RenderProgress(
                stage=stage,
                scene_index=index,
                scene_id=self.assembly_scenes[index].id if stage != render_service_pb2.RENDER_STAGE_ACCEPTED else "",
                media_kind=kind,
                completed_steps=self._completed_steps,
                total_steps=self.total_steps,
                message=message,
                render_id=self.render_id,
            )
        )

    async def _summary(self, assembled: assembler_pb.AssemblySummary) -> render_service_pb2.RenderSummary:
        reports = [self._reports[i] for i in range(len(self._reports))]
        for report, duration_ms, start_ms in zip(
            reports, assembled.scene_duration_ms, assembled.scene_start_ms, strict=True
        ):
            report.duration_ms = duration_ms
            report.start_ms = start_ms
        return render_service_pb2.RenderSummary(
            render_id=self.render_id,
            duration_ms=assembled.duration_ms,
            size_bytes=assembled.size_bytes,
            width=assembled.width,
            height=assembled.height,
            scenes=reports,
            estimated_cost_usd=sum(report.estimated_cost_usd for report in reports),
            elapsed_ms=round((time.monotonic() - self._started) * 1000),
            pre_render_estimate_usd=self.estimate_usd,
            recorded_spend_usd=await self.ledger.render_total(self.render_id) if self.ledger is not None else 0.0,
            subtitles=assembled.subtitles,
            integrated_lufs=assembled.integrated_lufs,
            credits=_once(credit for report in reports for credit in report.credits),
        )


def _once(credits: Iterable[types_pb2.Credit]) -> list[types_pb2.Credit]:
    """Each credit once (a photo shown in two scenes is credited once), in the order of first appearance."""
    seen: dict[bytes, types_pb2.Credit] = {}
    for credit in credits:
        seen.setdefault(credit.SerializeToString(deterministic=True), credit)
    return list(seen.values())


# The requests a render sends for its assets, made in one place so that EstimateCost prices exactly what Render asks.


def image_request(
    render: render_service_pb2.RenderRequest, index: int, render_id: str
) -> image_service_pb2.GenerateImageRequest:
    return image_service_pb2.GenerateImageRequest(
        render_id=render_id,
        scene_index=index,
        scene=render.scenes[index],
        output=render.output,
        provider=render.providers.image,
        no_cache=render.no_cache,
    )


def speech_request(
    render: render_service_pb2.RenderRequest, index: int, render_id: str
) -> audio_service_pb2.SynthesizeSpeechRequest:
    return audio_service_pb2.SynthesizeSpeechRequest(
        render_id=render_id,
        text=render.scenes[index].narration,
        voice=render.voice,
        quality=render.output.quality,
        provider=render.providers.speech,
        no_cache=render.no_cache,
    )


def clip_spec(
    render: render_service_pb2.RenderRequest, index: int, render_id: str, provider: str, duration_ms: int
) -> video_service_pb2.ClipSpec:
    return video_service_pb2.ClipSpec(
        render_id=render_id,
        scene_index=index,
        scene=render.scenes[index],
        output=render.output,
        duration_ms=duration_ms,
        provider=provider,
        no_cache=render.no_cache,
    )


def avatar_request(
    render: render_service_pb2.RenderRequest, render_id: str, provider: str
) -> video_service_pb2.GenerateAvatarVideoRequest:
    return video_service_pb2.GenerateAvatarVideoRequest(
        render_id=render_id,
        scenes=render.scenes,
        output=render.output,
        provider=provider,
        avatar=render.avatar,
        no_cache=render.no_cache,
    )
