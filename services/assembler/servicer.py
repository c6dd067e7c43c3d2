"""AssemblerService: the stream protocol. Receives scene assets into a per-call temp folder and reports progress.

What the stream feeds lives elsewhere: the timeline (timeline.py), encode scheduling (encoding.py), and the soundtrack
and mux (mux.py).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from scenecast.v1 import assembler_service_pb2 as pb
from scenecast.v1 import assembler_service_pb2_grpc
from scenecast.v1.types_pb2 import SUBTITLE_FORMAT_SRT, SUBTITLE_FORMAT_WEBVTT, TIMING_KIND_WORD, SubtitleFile

from services.assembler import limits, mux, soundtrack
from services.assembler.config import AssemblerSettings
from services.assembler.encoding import EncodeScheduler
from services.assembler.timeline import Piece, SceneAssets, Timeline
from services.assembler.word_timing import SpokenText
from services.common import fonts, workdirs
from services.common.cache import AssetCache
from services.common.chunks import ChunkSink, iter_file_chunks
from services.common.errors import InvalidArgument, rpc_method
from services.common.finishing import finishing_options
from services.common.limits import MAX_TITLE_CHARS
from services.common.media import ffmpeg_exe
from services.common.output import output_format
from services.common.text import checked_text

MAX_PAD_MS = 10_000
WORK_FOLDER_PREFIX = "scenecast-assemble-"
_EXTENSIONS = {
    "audio/mp4": ".m4a",
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "image/webp": ".webp",
    "video/mp4": ".mp4",
    "audio/wav": ".wav",
    "audio/mpeg": ".mp3",
    "audio/ogg": ".ogg",
    "audio/flac": ".flac",
}
# The narration of an avatar video is its own sound track: trimming it would put the voice out of sync with the lips.
_OWN_SOUND = "audio/mp4"
_SUBTITLE_FORMATS = {"srt": SUBTITLE_FORMAT_SRT, "vtt": SUBTITLE_FORMAT_WEBVTT}


@dataclass
class _Scene:
    index: int
    start: pb.SceneStart
    visual: ChunkSink
    narration: ChunkSink
    encoded: bool = False
    # Set once the scene is planned (in a thread, after both assets arrived) and so on the timeline.
    planned: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class _Assembly:
    """State of one Assemble call; everything it writes lives under `timeline.folder`."""

    timeline: Timeline
    scenes: dict[int, _Scene] = field(default_factory=dict)
    music: ChunkSink | None = None
    encodes: list[asyncio.Task[int | None]] = field(default_factory=list)
    # FFmpeg's environment for drawing captions: a fontconfig file that also knows the CJK font.
    caption_env: dict[str, str] = field(default_factory=dict)
    # Set when the call ends (cancelled, past its deadline, failed or done): caption planning, which runs in worker
    # threads that cancelling the call cannot interrupt, stops at its next step instead of keeping a core busy.
    stop: threading.Event = field(default_factory=threading.Event)

    @property
    def folder(self) -> Path:
        return self.timeline.folder

    @property
    def scene_count(self) -> int:
        return self.timeline.scene_count


class AssemblerServicer(assembler_service_pb2_grpc.AssemblerServiceServicer):
    def __init__(self, settings: AssemblerSettings) -> None:
        self._settings = settings
        self._exe = ffmpeg_exe()
        self._encodes = EncodeScheduler(
            self._exe,
            settings.video_encoder,
            settings.encoders,
            AssetCache.from_settings(settings.segment_cache_dir, settings.segment_cache_max_bytes, "SEGMENT_CACHE_DIR"),
            settings.ffmpeg_timeout_seconds,
        )
        # Here rather than in server.py, so every way of building the service sweeps before its first call.
        workdirs.sweep(WORK_FOLDER_PREFIX, settings.assembler_tmp_dir or None)

    @rpc_method
    async def Assemble(
        self, request_iterator: AsyncIterator[pb.AssembleRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.AssembleResponse]:
        with workdirs.work_folder(WORK_FOLDER_PREFIX, self._settings.assembler_tmp_dir or None) as folder:
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
                sound_task = asyncio.create_task(self._soundtrack(assembly))
                try:
                    while assembly.encodes:
                        await asyncio.wait(assembly.encodes, return_when=asyncio.FIRST_COMPLETED)
                        for event in _finished_encodes(assembly):
                            yield event
                    yield _progress(assembly, pb.ASSEMBLY_STAGE_MUXING)
                    parts = await self._encodes.join_parts(assembly.timeline)
                    sound, loudness = await sound_task
                finally:
                    await _cancel([sound_task])
                movie = await mux.mux(assembly.timeline, parts, sound, self._exe, self._settings.ffmpeg_timeout_seconds)
                yield _progress(assembly, pb.ASSEMBLY_STAGE_DONE)
                for chunk in iter_file_chunks(movie.path):
                    yield pb.AssembleResponse(chunk=chunk)
                yield pb.AssembleResponse(summary=_summary(assembly, movie, loudness))
            finally:
                if assembly is not None:
                    assembly.stop.set()
                    await _cancel(assembly.encodes)
                    sinks = [sink for scene in assembly.scenes.values() for sink in (scene.visual, scene.narration)]
                    for sink in [*sinks, assembly.music]:
                        if sink is not None:
                            sink.close()

    def _open(self, message: pb.AssembleRequest, folder: Path) -> _Assembly:
        if not message.HasField("start"):
            raise InvalidArgument("the first message must be `start` (output settings and scene_count)")
        start = message.start
        limits.check_start(start)
        for name in ("scene_lead_ms", "scene_tail_ms"):
            if getattr(start, name) > MAX_PAD_MS:
                raise InvalidArgument(f"start.{name} must be at most {MAX_PAD_MS} (got {getattr(start, name)})")
        if not 1 <= start.scene_count <= self._settings.assembler_max_scenes:
            raise InvalidArgument(
                f"start.scene_count must be 1 to {self._settings.assembler_max_scenes} (got {start.scene_count})"
            )
        output = output_format(start.output, "start.output")
        finishing = finishing_options(start.finishing, "start.finishing")
        timeline = Timeline.open(
            folder,
            output,
            start.scene_count,
            checked_text(start.title, "start.title", MAX_TITLE_CHARS, required=False),
            start.scene_lead_ms if start.HasField("scene_lead_ms") else self._settings.scene_lead_ms,
            start.scene_tail_ms if start.HasField("scene_tail_ms") else self._settings.scene_tail_ms,
            finishing,
            default_transition_ms=self._settings.fade_ms,
        )
        assembly = _Assembly(timeline)
        assembly.caption_env["FONTCONFIG_FILE"] = str(fonts.write_fontconfig(folder / "fonts.conf"))
        for card, position in timeline.card_positions():
            assembly.encodes.append(asyncio.create_task(self._encode(assembly, card, position)))
        return assembly

    def _receive(self, assembly: _Assembly, message: pb.AssembleRequest) -> list[pb.AssembleResponse]:
        kind = message.WhichOneof("payload")
        if kind == "scene":
            self._add_scene(assembly, message.scene)
            return []
        if kind == "chunk":
            return self._add_chunk(assembly, message.chunk)
        if kind == "music":
            self._add_music(assembly, message.music)
            return []
        raise InvalidArgument(f"unexpected `{kind}` message after `start`; send `music`, `scene` and `chunk` messages")

    def _add_music(self, assembly: _Assembly, start: pb.MusicStart) -> None:
        if assembly.music is not None:
            raise InvalidArgument("music was announced twice; send at most one `music` message")
        limits.check_asset(start.music, "music.music")
        extension = _extension(start.music.mime_type, ("audio/",), "music.music.mime_type")
        assembly.music = ChunkSink(
            assembly.folder / f"music{extension}", start.music.size_bytes, "music", self._settings.max_asset_bytes
        )

    def _add_scene(self, assembly: _Assembly, start: pb.SceneStart) -> None:
        index = start.scene_index
        field_name = f"scene[{index}]"
        if index >= assembly.scene_count:
            raise InvalidArgument(f"scene.scene_index {index} is out of range for scene_count {assembly.scene_count}")
        if index in assembly.scenes:
            raise InvalidArgument(f"{field_name} was announced twice; send each scene once")
        own_sound = start.narration.mime_type == _OWN_SOUND
        limits.check_scene(start, field_name, limits.narration_limit(own_sound, self._settings.assembler_max_scenes))
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
        if chunk.role == pb.ASSET_ROLE_MUSIC:
            if assembly.music is None:
                raise InvalidArgument("a music chunk arrived before the `music` message; announce the music first")
            assembly.music.write(chunk.chunk)
            return []
        scene = assembly.scenes.get(chunk.scene_index)
        if scene is None:
            raise InvalidArgument(f"chunk for scene {chunk.scene_index} arrived before its `scene` message")
        if chunk.role == pb.ASSET_ROLE_VISUAL:
            sink = scene.visual
        elif chunk.role == pb.ASSET_ROLE_NARRATION:
            sink = scene.narration
        else:
            raise InvalidArgument(f"chunk.role for scene {chunk.scene_index} must be VISUAL, NARRATION or MUSIC")
        was_ready = scene.visual.complete and scene.narration.complete
        sink.write(chunk.chunk)
        if was_ready or not (scene.visual.complete and scene.narration.complete):
            return []
        assembly.encodes.append(asyncio.create_task(self._plan_and_encode(assembly, scene)))
        return [_progress(assembly, pb.ASSEMBLY_STAGE_SCENE_RECEIVED, scene.index)]

    async def _plan_and_encode(self, assembly: _Assembly, scene: _Scene) -> int | None:
        # Probing decodes the narration (and the silence trim reads it again): in a thread, so the event loop keeps
        # receiving the other scenes meanwhile (it was most of the assembler's CPU in the fan-out benchmark).
        piece = await asyncio.to_thread(assembly.timeline.plan_scene, _scene_assets(scene), assembly.stop)
        assembly.timeline.scenes[scene.index] = piece
        scene.planned.set()
        await self._encode(assembly, piece, assembly.timeline.position(scene.index))
        scene.encoded = True
        return scene.index

    async def _encode(self, assembly: _Assembly, piece: Piece, position: int) -> None:
        job = assembly.timeline.segment_job(piece, position)
        await self._encodes.encode(job, assembly.timeline.output, assembly.caption_env)

    def _check_complete(self, assembly: _Assembly) -> None:
        missing = [i for i in range(assembly.scene_count) if i not in assembly.scenes]
        if missing:
            raise InvalidArgument(f"the stream ended before scenes {missing} were sent; send every scene")
        sinks = [(f"scene[{s.index}]", sink) for s in assembly.scenes.values() for sink in (s.visual, s.narration)]
        if assembly.music is not None:
            sinks.append(("music", assembly.music))
        for owner, sink in sinks:
            if not sink.complete:
                raise InvalidArgument(
                    f"the stream ended with {owner} asset {sink.path.stem} at {sink.received_bytes} of "
                    f"{sink.expected_bytes} bytes; send the whole asset"
                )

    async def _soundtrack(self, assembly: _Assembly) -> tuple[Path, soundtrack.LoudnessMeasurement]:
        # Every scene's length is known once it is planned; a scene whose planning fails stops the whole call.
        await asyncio.gather(*(scene.planned.wait() for scene in assembly.scenes.values()))
        music = assembly.music.path if assembly.music is not None else None
        return await mux.mix_soundtrack(
            assembly.timeline, music, self._exe, self._settings.ffmpeg_timeout_seconds, self._settings.encoders
        )


def _scene_assets(scene: _Scene) -> SceneAssets:
    timings = scene.start.narration.timings
    return SceneAssets(
        index=scene.index,
        visual=scene.visual.path,
        is_clip=scene.start.visual.mime_type.startswith("video/"),
        narration=scene.narration.path,
        text=scene.start.scene.narration,
        timings=tuple(SpokenText(t.text, t.start_ms, t.end_ms) for t in timings),
        word_timings=bool(timings) and all(t.kind == TIMING_KIND_WORD for t in timings),
        own_sound=scene.start.narration.mime_type == _OWN_SOUND,
    )


def _extension(mime_type: str, allowed: tuple[str, ...], field_name: str) -> str:
    if not mime_type.startswith(allowed):
        raise InvalidArgument(f"{field_name} is {mime_type!r}; expected {' or '.join(a + '*' for a in allowed)}")
    return _EXTENSIONS.get(mime_type, "")


def _finished_encodes(assembly: _Assembly) -> list[pb.AssembleResponse]:
    """Reports scene encodes that finished (re-raising their errors) and drops them from the pending list."""
    done = [task for task in assembly.encodes if task.done()]
    events = []
    for task in done:
        assembly.encodes.remove(task)
        scene_index = task.result()
        if scene_index is not None:
            events.append(_progress(assembly, pb.ASSEMBLY_STAGE_SCENE_ENCODED, scene_index))
    return events


def _progress(assembly: _Assembly, stage: int, scene_index: int = 0) -> pb.AssembleResponse:
    encoded = sum(1 for scene in assembly.scenes.values() if scene.encoded)
    return pb.AssembleResponse(
        progress=pb.AssemblyProgress(
            stage=stage, scene_index=scene_index, scenes_encoded=encoded, scene_count=assembly.scene_count
        )
    )


def _summary(assembly: _Assembly, movie: mux.Movie, loudness: soundtrack.LoudnessMeasurement) -> pb.AssemblySummary:
    timeline = assembly.timeline
    plans, offsets = timeline.scene_starts()
    return pb.AssemblySummary(
        duration_ms=timeline.duration_ms,
        size_bytes=movie.path.stat().st_size,
        width=timeline.output.width,
        height=timeline.output.height,
        scene_duration_ms=[plan.duration_ms for plan in plans],
        subtitles=[SubtitleFile(format=_SUBTITLE_FORMATS[name], text=text) for name, text in movie.sidecars.items()],
        integrated_lufs=loudness.integrated_lufs,
        scene_start_ms=offsets,
    )


async def _cancel(tasks: list[asyncio.Task]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
