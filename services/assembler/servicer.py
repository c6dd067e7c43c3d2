"""AssemblerService: receives scene assets into a per-call temp folder, encodes scenes as they complete, muxes."""

from __future__ import annotations

import asyncio
import logging
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from scenecast.v1 import assembler_service_pb2 as pb
from scenecast.v1 import assembler_service_pb2_grpc
from scenecast.v1.types_pb2 import TIMING_KIND_WORD

from services.assembler import captions
from services.assembler.config import AssemblerSettings
from services.assembler.ffmpeg import MuxJob, SegmentJob, concat_list, mux_command, segment_command
from services.assembler.plan import ScenePlan, SpokenText, caption_runs, plan_scene, spread_sentences
from services.common.chunks import ChunkSink, iter_file_chunks
from services.common.errors import InvalidArgument, rpc_method
from services.common.media import ffmpeg_exe, probe, run_ffmpeg
from services.common.output import OutputFormat, output_format
from services.common.text import checked_text

_LOGGER = logging.getLogger(__name__)

MAX_TITLE_CHARS = 200
MAX_PAD_MS = 10_000
_EXTENSIONS = {
    "audio/mp4": ".m4a",
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "image/webp": ".webp",
    "video/mp4": ".mp4",
    "audio/wav": ".wav",
    "audio/mpeg": ".mp3",
}


@dataclass
class _Scene:
    index: int
    start: pb.SceneStart
    visual: ChunkSink
    narration: ChunkSink
    plan: ScenePlan | None = None
    segment: Path | None = None


@dataclass
class _Assembly:
    """State of one Assemble call; everything it writes lives under `folder`."""

    folder: Path
    output: OutputFormat
    scene_count: int
    title: str
    lead_ms: int
    tail_ms: int
    scenes: dict[int, _Scene] = field(default_factory=dict)
    encodes: list[asyncio.Task[int]] = field(default_factory=list)


class AssemblerServicer(assembler_service_pb2_grpc.AssemblerServiceServicer):
    def __init__(self, settings: AssemblerSettings) -> None:
        self._settings = settings
        self._exe = ffmpeg_exe()
        # Shared by all calls: the machine's cores are the limit, not one call's scenes.
        self._encode_slots = asyncio.Semaphore(settings.encoders)

    @rpc_method
    async def Assemble(
        self, request_iterator: AsyncIterator[pb.AssembleRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.AssembleResponse]:
        tmp_root = self._settings.assembler_tmp_dir or None
        with tempfile.TemporaryDirectory(prefix="scenecast-assemble-", dir=tmp_root) as folder:
            assembly: _Assembly | None = None
            try:
                async for message in request_iterator:
                    if assembly is None:
                        assembly = self._open(message, Path(folder))
                        continue
                    for event in self._receive(assembly, message):
                        yield event
                    for event in _finished_encodes(assembly):
                        yield event
                if assembly is None:
                    raise InvalidArgument("the request stream was empty; send `start` first")
                self._check_complete(assembly)
                while assembly.encodes:
                    await asyncio.wait(assembly.encodes, return_when=asyncio.FIRST_COMPLETED)
                    for event in _finished_encodes(assembly):
                        yield event
                yield _progress(assembly, pb.ASSEMBLY_STAGE_MUXING)
                movie = await self._mux(assembly)
                yield _progress(assembly, pb.ASSEMBLY_STAGE_DONE)
                for chunk in iter_file_chunks(movie):
                    yield pb.AssembleResponse(chunk=chunk)
                yield pb.AssembleResponse(summary=_summary(assembly, movie))
            finally:
                if assembly is not None:
                    await _cancel(assembly.encodes)
                    for scene in assembly.scenes.values():
                        scene.visual.close()
                        scene.narration.close()

    def _open(self, message: pb.AssembleRequest, folder: Path) -> _Assembly:
        if not message.HasField("start"):
            raise InvalidArgument("the first message must be `start` (output settings and scene_count)")
        start = message.start
        for name in ("scene_lead_ms", "scene_tail_ms"):
            if getattr(start, name) > MAX_PAD_MS:
                raise InvalidArgument(f"start.{name} must be at most {MAX_PAD_MS} (got {getattr(start, name)})")
        if not 1 <= start.scene_count <= self._settings.assembler_max_scenes:
            raise InvalidArgument(
                f"start.scene_count must be 1 to {self._settings.assembler_max_scenes} (got {start.scene_count})"
            )
        return _Assembly(
            folder=folder,
            output=output_format(start.output, "start.output"),
            scene_count=start.scene_count,
            title=checked_text(start.title, "start.title", MAX_TITLE_CHARS, required=False),
            lead_ms=start.scene_lead_ms if start.HasField("scene_lead_ms") else self._settings.scene_lead_ms,
            tail_ms=start.scene_tail_ms if start.HasField("scene_tail_ms") else self._settings.scene_tail_ms,
        )

    def _receive(self, assembly: _Assembly, message: pb.AssembleRequest) -> list[pb.AssembleResponse]:
        kind = message.WhichOneof("payload")
        if kind == "scene":
            self._add_scene(assembly, message.scene)
            return []
        if kind == "chunk":
            return self._add_chunk(assembly, message.chunk)
        raise InvalidArgument(f"unexpected `{kind}` message after `start`; send `scene` and `chunk` messages")

    def _add_scene(self, assembly: _Assembly, start: pb.SceneStart) -> None:
        index = start.scene_index
        field_name = f"scene[{index}]"
        if index >= assembly.scene_count:
            raise InvalidArgument(f"scene.scene_index {index} is out of range for scene_count {assembly.scene_count}")
        if index in assembly.scenes:
            raise InvalidArgument(f"{field_name} was announced twice; send each scene once")
        visual_ext = _extension(start.visual.mime_type, ("image/", "video/"), f"{field_name}.visual.mime_type")
        audio_ext = _extension(start.narration.mime_type, ("audio/",), f"{field_name}.narration.mime_type")
        limit = self._settings.max_asset_bytes
        assembly.scenes[index] = _Scene(
            index=index,
            start=start,
            visual=ChunkSink(
                assembly.folder / f"visual-{index}{visual_ext}", start.visual.size_bytes, f"{field_name}.visual", limit
            ),
            narration=ChunkSink(
                assembly.folder / f"narration-{index}{audio_ext}",
                start.narration.size_bytes,
                f"{field_name}.narration",
                limit,
            ),
        )

    def _add_chunk(self, assembly: _Assembly, chunk: pb.SceneChunk) -> list[pb.AssembleResponse]:
        scene = assembly.scenes.get(chunk.scene_index)
        if scene is None:
            raise InvalidArgument(f"chunk for scene {chunk.scene_index} arrived before its `scene` message")
        if chunk.role == pb.ASSET_ROLE_VISUAL:
            sink = scene.visual
        elif chunk.role == pb.ASSET_ROLE_NARRATION:
            sink = scene.narration
        else:
            raise InvalidArgument(f"chunk.role for scene {chunk.scene_index} must be VISUAL or NARRATION")
        was_ready = scene.visual.complete and scene.narration.complete
        sink.write(chunk.chunk)
        if was_ready or not (scene.visual.complete and scene.narration.complete):
            return []
        self._plan(assembly, scene)
        assembly.encodes.append(asyncio.create_task(self._encode(assembly, scene)))
        return [_progress(assembly, pb.ASSEMBLY_STAGE_SCENE_RECEIVED, scene.index)]

    def _plan(self, assembly: _Assembly, scene: _Scene) -> None:
        """Checks both assets decode, then fixes the scene's length from the narration actually received."""
        field_name = f"scene[{scene.index}]"
        visual = probe(scene.visual.path, f"{field_name}.visual")
        narration = probe(scene.narration.path, f"{field_name}.narration")
        if not visual.has_video:
            raise InvalidArgument(f"{field_name}.visual has no picture")
        if not narration.has_audio or narration.duration_ms <= 0:
            raise InvalidArgument(f"{field_name}.narration has no audio")
        timings = scene.start.narration.timings
        spoken = [SpokenText(t.text, t.start_ms, t.end_ms) for t in timings] or spread_sentences(
            scene.start.scene.narration, narration.duration_ms
        )
        words = bool(timings) and all(t.kind == TIMING_KIND_WORD for t in timings)
        scene.plan = plan_scene(
            scene.index,
            narration.duration_ms,
            spoken,
            assembly.output,
            assembly.lead_ms,
            assembly.tail_ms,
            narration=scene.start.scene.narration if words else "",
        )

    async def _encode(self, assembly: _Assembly, scene: _Scene) -> int:
        plan = scene.plan
        assert plan is not None
        is_clip = scene.start.visual.mime_type.startswith("video/")
        ass_path = None
        still_runs: list[tuple[int, Path | None]] = []
        if is_clip and plan.cues:
            ass_path = assembly.folder / f"captions-{scene.index}.ass"
            captions.write_scene_ass(plan, assembly.output, ass_path)
        elif not is_clip:
            for run, (frames, text) in enumerate(caption_runs(plan)):
                run_path = None
                if text is not None:
                    run_path = assembly.folder / f"captions-{scene.index}-{run}.ass"
                    captions.write_still_caption(text, assembly.output, run_path)
                still_runs.append((frames, run_path))
        fade_frames = min(round(self._settings.fade_ms * plan.fps / 1000), plan.frames // 3)
        segment = assembly.folder / f"segment-{scene.index}.mp4"
        job = SegmentJob(
            visual=scene.visual.path,
            is_clip=is_clip,
            plan=plan,
            captions=ass_path,
            fade_frames=fade_frames,
            output_path=segment,
            still_runs=tuple(still_runs),
        )
        async with self._encode_slots:
            await run_ffmpeg(segment_command(self._exe, job, assembly.output), self._settings.ffmpeg_timeout_seconds)
        scene.segment = segment
        return scene.index

    def _check_complete(self, assembly: _Assembly) -> None:
        missing = [i for i in range(assembly.scene_count) if i not in assembly.scenes]
        if missing:
            raise InvalidArgument(f"the stream ended before scenes {missing} were sent; send every scene")
        for scene in assembly.scenes.values():
            for sink in (scene.visual, scene.narration):
                if not sink.complete:
                    raise InvalidArgument(
                        f"the stream ended with scene[{scene.index}] asset {sink.path.stem} at "
                        f"{sink.received_bytes} of {sink.expected_bytes} bytes; send the whole asset"
                    )

    async def _mux(self, assembly: _Assembly) -> Path:
        ordered = [assembly.scenes[i] for i in range(assembly.scene_count)]
        plans = [scene.plan for scene in ordered if scene.plan is not None]
        segments = [scene.segment for scene in ordered if scene.segment is not None]
        segment_list = assembly.folder / "segments.txt"
        segment_list.write_text(concat_list(segments))
        subtitles = None
        if assembly.output.captions and any(plan.cues for plan in plans):
            subtitles = assembly.folder / "captions.srt"
            captions.write_srt(plans, subtitles)
        movie = assembly.folder / "movie.mp4"
        job = MuxJob(segment_list, [scene.narration.path for scene in ordered], plans, subtitles, movie, assembly.title)
        await run_ffmpeg(mux_command(self._exe, job), self._settings.ffmpeg_timeout_seconds)
        return movie


def _extension(mime_type: str, allowed: tuple[str, ...], field_name: str) -> str:
    if not mime_type.startswith(allowed):
        raise InvalidArgument(f"{field_name} is {mime_type!r}; expected {' or '.join(a + '*' for a in allowed)}")
    return _EXTENSIONS.get(mime_type, "")


def _finished_encodes(assembly: _Assembly) -> list[pb.AssembleResponse]:
    """Reports encodes that finished (re-raising their errors) and drops them from the pending list."""
    done = [task for task in assembly.encodes if task.done()]
    events = []
    for task in done:
        assembly.encodes.remove(task)
        events.append(_progress(assembly, pb.ASSEMBLY_STAGE_SCENE_ENCODED, task.result()))
    return events


def _progress(assembly: _Assembly, stage: int, scene_index: int = 0) -> pb.AssembleResponse:
    encoded = sum(1 for scene in assembly.scenes.values() if scene.segment is not None)
    return pb.AssembleResponse(
        progress=pb.AssemblyProgress(
            stage=stage, scene_index=scene_index, scenes_encoded=encoded, scene_count=assembly.scene_count
        )
    )


def _summary(assembly: _Assembly, movie: Path) -> pb.AssemblySummary:
    plans = [assembly.scenes[i].plan for i in range(assembly.scene_count)]
    frames = sum(plan.frames for plan in plans if plan is not None)
    return pb.AssemblySummary(
        duration_ms=round(frames * 1000 / assembly.output.fps),
        size_bytes=movie.stat().st_size,
        width=assembly.output.width,
        height=assembly.output.height,
        scene_duration_ms=[plan.duration_ms for plan in plans if plan is not None],
    )


async def _cancel(tasks: list[asyncio.Task[int]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
