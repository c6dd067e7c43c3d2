"""AssemblerService: receives scene assets into a per-call temp folder, encodes scenes as they complete, muxes."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from scenecast.v1 import assembler_service_pb2 as pb
from scenecast.v1 import assembler_service_pb2_grpc
from scenecast.v1.types_pb2 import SUBTITLE_FORMAT_SRT, SUBTITLE_FORMAT_WEBVTT, TIMING_KIND_WORD, SubtitleFile

from services.assembler import captions, limits, segments, soundtrack
from services.assembler.caption_layout import CaptionStyle
from services.assembler.cards import render_card
from services.assembler.config import AssemblerSettings
from services.assembler.ffmpeg import (
    Fit,
    MuxJob,
    SegmentJob,
    concat_list,
    encoder_threads,
    mux_command,
    segment_command,
    select_encoder,
    subtitle_track_command,
    transition_command,
)
from services.assembler.plan import ScenePlan, caption_runs, plan_scene
from services.assembler.word_timing import SpokenText, spread_sentences
from services.common import fonts, workdirs
from services.common.cache import AssetCache
from services.common.chunks import ChunkSink, iter_file_chunks
from services.common.errors import InvalidArgument, rpc_method
from services.common.finishing import CardText, FinishingOptions, finishing_options
from services.common.limits import MAX_TITLE_CHARS
from services.common.media import ffmpeg_exe, probe, run_ffmpeg
from services.common.output import OutputFormat, output_format
from services.common.text import checked_text

_LOGGER = logging.getLogger(__name__)

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


@dataclass
class _Piece:
    """One stretch of the video's timeline, a scene or a card, and its encoded parts."""

    plan: ScenePlan
    visual: Path
    is_clip: bool
    # The narration and the part of it kept (milliseconds), or None for a silent card.
    narration: Path | None = None
    kept_ms: tuple[int, int] = (0, 0)
    job: SegmentJob | None = None


@dataclass
class _Scene:
    index: int
    start: pb.SceneStart
    visual: ChunkSink
    narration: ChunkSink
    piece: _Piece | None = None
    encoded: bool = False
    # Set once `piece` is planned (in a thread, after both assets arrived).
    planned: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class _Assembly:
    """State of one Assemble call; everything it writes lives under `folder`."""

    folder: Path
    output: OutputFormat
    scene_count: int
    title: str
    lead_ms: int
    tail_ms: int
    finishing: FinishingOptions
    # Frames of each cross-fade (0 unless the transition is a cross-fade) and of each fade through black.
    crossfade_frames: int
    fade_frames: int
    scenes: dict[int, _Scene] = field(default_factory=dict)
    cards: dict[str, _Piece] = field(default_factory=dict)
    music: ChunkSink | None = None
    encodes: list[asyncio.Task[int | None]] = field(default_factory=list)
    # FFmpeg's environment for drawing captions: a fontconfig file that also knows the CJK font.
    caption_env: dict[str, str] = field(default_factory=dict)
    # Set when the call ends (cancelled, past its deadline, failed or done): caption planning, which runs in worker
    # threads that cancelling the call cannot interrupt, stops at its next step instead of keeping a core busy.
    stop: threading.Event = field(default_factory=threading.Event)

    @property
    def style(self) -> CaptionStyle:
        return CaptionStyle(
            highlight=self.finishing.highlight_words,
            highlight_color=self.finishing.highlight_color,
            box=self.finishing.caption_box,
        )

    def timeline(self) -> list[_Piece]:
        """The pieces in showing order: title card, scenes, end card."""
        scenes = [self.scenes[i].piece for i in range(self.scene_count)]
        pieces = [self.cards.get("title"), *scenes, self.cards.get("end")]
        return [piece for piece in pieces if piece is not None]

    def position(self, scene_index: int) -> int:
        return scene_index + ("title" in self.cards)

    @property
    def piece_count(self) -> int:
        return self.scene_count + len(self.cards)


class AssemblerServicer(assembler_service_pb2_grpc.AssemblerServiceServicer):
    def __init__(self, settings: AssemblerSettings) -> None:
        self._settings = settings
        self._exe = ffmpeg_exe()
        # Probed once at start-up: an explicit h264_nvenc on a machine without it stops the service with the reason.
        self._encoder = select_encoder(self._exe, settings.video_encoder)
        # Shared by all calls: the machine's cores are the limit, not one call's scenes.
        self._encode_slots = asyncio.Semaphore(settings.encoders)
        # Encodes running now: each one that starts takes its share of the cores (ffmpeg.encoder_threads).
        self._running_encodes = 0
        self._segments = AssetCache.from_settings(
            settings.segment_cache_dir, settings.segment_cache_max_bytes, "SEGMENT_CACHE_DIR"
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
                soundtrack = asyncio.create_task(self._soundtrack(assembly))
                try:
                    while assembly.encodes:
                        await asyncio.wait(assembly.encodes, return_when=asyncio.FIRST_COMPLETED)
                        for event in _finished_encodes(assembly):
                            yield event
                    yield _progress(assembly, pb.ASSEMBLY_STAGE_MUXING)
                    parts = await self._join_parts(assembly)
                    sound, loudness = await soundtrack
                finally:
                    await _cancel([soundtrack])
                movie, sidecars = await self._mux(assembly, parts, sound)
                yield _progress(assembly, pb.ASSEMBLY_STAGE_DONE)
                for chunk in iter_file_chunks(movie):
                    yield pb.AssembleResponse(chunk=chunk)
                yield pb.AssembleResponse(summary=_summary(assembly, movie, sidecars, loudness))
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
        lead_ms = start.scene_lead_ms if start.HasField("scene_lead_ms") else self._settings.scene_lead_ms
        tail_ms = start.scene_tail_ms if start.HasField("scene_tail_ms") else self._settings.scene_tail_ms
        transition_ms = finishing.transition_ms or self._settings.fade_ms
        crossfade_frames = 0
        if finishing.transition == "crossfade":
            # Capped by the silence around the narrations, so two voices never overlap (an avatar video has none).
            crossfade_frames = math.floor(min(transition_ms, lead_ms + tail_ms) * output.fps / 1000)
        assembly = _Assembly(
            folder=folder,
            output=output,
            scene_count=start.scene_count,
            title=checked_text(start.title, "start.title", MAX_TITLE_CHARS, required=False),
            lead_ms=lead_ms,
            tail_ms=tail_ms,
            finishing=finishing,
            crossfade_frames=crossfade_frames,
            fade_frames=0 if finishing.transition == "cut" else round(transition_ms * output.fps / 1000),
        )
        assembly.caption_env["FONTCONFIG_FILE"] = str(fonts.write_fontconfig(folder / "fonts.conf"))
        for name, card in (("title", finishing.title_card), ("end", finishing.end_card)):
            if card is not None:
                assembly.cards[name] = self._card(assembly, name, card)
        for name, position in (("title", 0), ("end", assembly.piece_count - 1)):
            if name in assembly.cards:
                job = self._segment_job(assembly, assembly.cards[name], position)
                assembly.encodes.append(asyncio.create_task(self._encode(assembly, job, scene_index=None)))
        return assembly

    def _card(self, assembly: _Assembly, name: str, card: CardText) -> _Piece:
        png = assembly.folder / f"card-{name}.png"
        render_card(card.title, card.subtitle, assembly.output, png, background=assembly.finishing.pad_color)
        frames = max(math.ceil(card.duration_ms * assembly.output.fps / 1000), 2 * assembly.crossfade_frames + 1)
        plan = ScenePlan(index=-1, frames=frames, fps=assembly.output.fps, lead_ms=0, cues=())
        return _Piece(plan=plan, visual=png, is_clip=False)

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

    def _plan(self, assembly: _Assembly, scene: _Scene) -> _Piece:
        """Checks both assets decode, then fixes the scene's length from the narration actually kept."""
        field_name = f"scene[{scene.index}]"
        visual = probe(scene.visual.path, f"{field_name}.visual")
        narration = probe(scene.narration.path, f"{field_name}.narration")
        if not visual.has_video:
            raise InvalidArgument(f"{field_name}.visual has no picture")
        if not narration.has_audio or narration.duration_ms <= 0:
            raise InvalidArgument(f"{field_name}.narration has no audio")
        kept = (0, narration.duration_ms)
        pad = assembly.finishing.silence_pad_ms
        if pad is not None and scene.start.narration.mime_type != _OWN_SOUND:
            kept = soundtrack.kept_span(soundtrack.speech_bounds(scene.narration.path), narration.duration_ms, pad)
            if kept[1] <= kept[0]:
                raise InvalidArgument(f"{field_name}.narration is silent; check the speech provider's output")
        kept_ms = kept[1] - kept[0]
        timings = scene.start.narration.timings
        spoken = [
            SpokenText(t.text, max(0, t.start_ms - kept[0]), min(kept_ms, max(0, t.end_ms - kept[0]))) for t in timings
        ] or spread_sentences(scene.start.scene.narration, kept_ms)
        words = bool(timings) and all(t.kind == TIMING_KIND_WORD for t in timings)
        plan = plan_scene(
            scene.index,
            kept_ms,
            spoken,
            assembly.output,
            assembly.lead_ms,
            assembly.tail_ms,
            narration=scene.start.scene.narration if words else "",
            stop=assembly.stop,
        )
        # A scene holds its cross-fades in and out and one frame of its own.
        plan = _at_least_frames(plan, 2 * assembly.crossfade_frames + 1)
        is_clip = scene.start.visual.mime_type.startswith("video/")
        return _Piece(plan, scene.visual.path, is_clip, narration=scene.narration.path, kept_ms=kept)

    async def _plan_and_encode(self, assembly: _Assembly, scene: _Scene) -> int | None:
        # Probing decodes the narration (and the silence trim reads it again): in a thread, so the event loop keeps
        # receiving the other scenes meanwhile (it was most of the assembler's CPU in the fan-out benchmark).
        scene.piece = await asyncio.to_thread(self._plan, assembly, scene)
        scene.planned.set()
        job = self._segment_job(assembly, scene.piece, assembly.position(scene.index))
        return await self._encode(assembly, job, scene.index)

    def _segment_job(self, assembly: _Assembly, piece: _Piece, position: int) -> SegmentJob:
        """Writes the piece's caption files and describes its encode (fades, framing, cross-fade parts)."""
        first, last = position == 0, position == assembly.piece_count - 1
        crossfade = assembly.crossfade_frames
        if crossfade:
            # Cross-fades between pieces; the video still fades in from black and out to black at its ends.
            fade_in = min(assembly.fade_frames, piece.plan.frames // 3) if first else 0
            fade_out = min(assembly.fade_frames, piece.plan.frames // 3) if last else 0
        else:
            fade_in = fade_out = min(assembly.fade_frames, piece.plan.frames // 3)
        name = f"piece-{position}"
        style = assembly.style
        clip_captions = None
        still_runs: list[tuple[int, Path | None]] = []
        if piece.is_clip and piece.plan.cues:
            clip_captions = assembly.folder / f"{name}.ass"
            captions.write_scene_ass(piece.plan, assembly.output, style, clip_captions)
        elif not piece.is_clip:
            for run, (frames, shown) in enumerate(caption_runs(piece.plan, style)):
                run_path = None
                if shown is not None:
                    run_path = assembly.folder / f"{name}-caption-{run}.ass"
                    captions.write_still_caption(shown, assembly.output, style, run_path)
                still_runs.append((frames, run_path))
        piece.job = SegmentJob(
            piece.visual,
            piece.is_clip,
            piece.plan,
            assembly.folder / f"{name}.mp4",
            captions=clip_captions,
            still_runs=tuple(still_runs),
            fade_in_frames=fade_in,
            fade_out_frames=fade_out,
            fit=Fit(assembly.finishing.fit),
            pad_color=assembly.finishing.pad_color,
            head_frames=0 if first else crossfade,
            tail_frames=0 if last else crossfade,
        )
        return piece.job

    async def _encode(self, assembly: _Assembly, job: SegmentJob, scene_index: int | None) -> int | None:
        """Encodes a piece's segment, or joins the one a render with the same inputs encoded before."""
        cache = self._segments
        key = (
            await asyncio.to_thread(segments.segment_key, job, assembly.output, self._encoder, self._exe)
            if cache
            else ""
        )
        if cache is None or not await segments.restore(cache, key, job):
            async with self._encode_slots:
                self._running_encodes += 1
                try:
                    threads = encoder_threads(self._settings.encoders, self._running_encodes)
                    await run_ffmpeg(
                        segment_command(self._exe, job, assembly.output, self._encoder, threads),
                        self._settings.ffmpeg_timeout_seconds,
                        assembly.caption_env,
                    )
                finally:
                    self._running_encodes -= 1
            if cache is not None:
                await segments.keep(cache, key, job)
        if scene_index is not None:
            assembly.scenes[scene_index].encoded = True
        return scene_index

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
        """Mixes narration and music for the whole timeline, normalises its loudness and measures the result."""
        # Every scene's length is known once it is planned; a scene whose planning fails stops the whole call.
        await asyncio.gather(*(scene.planned.wait() for scene in assembly.scenes.values()))
        timeout = self._settings.ffmpeg_timeout_seconds
        music = None
        if assembly.music is not None:
            if not probe(assembly.music.path, "music").has_audio:
                raise InvalidArgument("music has no audio; send an audio file (MP3, WAV, OGG, FLAC, M4A)")
            options = assembly.finishing.music
            music = soundtrack.MusicBed(assembly.music.path, options.gain_db, options.duck, options.fade_ms)
        tracks = [
            soundtrack.SceneAudio(piece.narration, *piece.kept_ms, piece.plan.lead_ms, piece.plan.duration_s)
            for piece in assembly.timeline()
        ]
        mix = assembly.folder / "mix.wav"
        crossfade_s = assembly.crossfade_frames / assembly.output.fps
        # The mix is measured as it is written; the last pass normalises it, encodes the AAC the mux will copy and
        # measures the result, all while the segments encode.
        mixing = soundtrack.mix_command(self._exe, tracks, crossfade_s, music, mix)
        measured = soundtrack.parse_measurement(await run_ffmpeg(mixing, timeout))
        target = assembly.finishing.loudness
        loudness = None if target is None else soundtrack.LoudnessTarget(target.integrated_lufs, target.true_peak_dbtp)
        final = assembly.folder / f"soundtrack{soundtrack.SOUNDTRACK_SUFFIX}"
        last_pass = soundtrack.normalize_command(self._exe, mix, loudness, measured, final)
        return final, soundtrack.parse_measurement(await run_ffmpeg(last_pass, timeout))

    async def _join_parts(self, assembly: _Assembly) -> list[Path]:
        """The video's parts in order; with cross-fades, encodes each blend of a tail into the next head first."""
        jobs = [piece.job for piece in assembly.timeline() if piece.job is not None]
        if not assembly.crossfade_frames:
            return [job.output_path for job in jobs]

        async def blend(position: int) -> Path:
            tail, head = jobs[position].tail_path, jobs[position + 1].head_path
            assert tail is not None and head is not None
            path = assembly.folder / f"crossfade-{position}.mp4"
            command = transition_command(
                self._exe, tail, head, assembly.crossfade_frames, assembly.output, path, self._encoder
            )
            async with self._encode_slots:
                await run_ffmpeg(command, self._settings.ffmpeg_timeout_seconds)
            return path

        blends = await asyncio.gather(*(blend(position) for position in range(len(jobs) - 1)))
        parts = [jobs[0].output_path]
        for blended, job in zip(blends, jobs[1:], strict=True):
            parts += [blended, job.output_path]
        return parts

    async def _mux(self, assembly: _Assembly, parts: list[Path], sound: Path) -> tuple[Path, list[SubtitleFile]]:
        plans, offsets = _scene_timeline(assembly)
        segment_list = assembly.folder / "segments.txt"
        segment_list.write_text(concat_list(parts))
        subtitles = None
        sidecars: list[SubtitleFile] = []
        if assembly.output.captions and any(plan.cues for plan in plans):
            template = assembly.folder / "captions-timing.srt"
            captions.write_track_template(plans, offsets, template)
            timing = assembly.folder / "captions-timing.mp4"
            await run_ffmpeg(subtitle_track_command(self._exe, template, timing), self._settings.ffmpeg_timeout_seconds)
            subtitles = assembly.folder / "captions.mp4"
            await asyncio.to_thread(captions.write_track, timing, plans, offsets, subtitles)
            documents = {"srt": captions.srt_document, "vtt": captions.vtt_document}
            formats = {"srt": SUBTITLE_FORMAT_SRT, "vtt": SUBTITLE_FORMAT_WEBVTT}
            sidecars = [
                SubtitleFile(format=formats[name], text=documents[name](plans, offsets))
                for name in assembly.finishing.sidecars
            ]
        movie = assembly.folder / "movie.mp4"
        await run_ffmpeg(
            mux_command(self._exe, MuxJob(segment_list, sound, subtitles, movie, assembly.title)),
            self._settings.ffmpeg_timeout_seconds,
        )
        return movie, sidecars


def _at_least_frames(plan: ScenePlan, minimum: int) -> ScenePlan:
    return plan if plan.frames >= minimum else dataclasses.replace(plan, frames=minimum)


def _scene_timeline(assembly: _Assembly) -> tuple[list[ScenePlan], list[int]]:
    """Each scene's plan and its start on the video's timeline in milliseconds (cards and cross-fades counted)."""
    starts: dict[int, int] = {}
    frame = 0
    for piece in assembly.timeline():
        starts[id(piece)] = frame
        frame += piece.plan.frames - assembly.crossfade_frames
    pieces = [assembly.scenes[i].piece for i in range(assembly.scene_count)]
    plans = [piece.plan for piece in pieces if piece is not None]
    offsets = [round(starts[id(piece)] * 1000 / assembly.output.fps) for piece in pieces if piece is not None]
    return plans, offsets


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


def _summary(
    assembly: _Assembly, movie: Path, sidecars: list[SubtitleFile], loudness: soundtrack.LoudnessMeasurement
) -> pb.AssemblySummary:
    pieces = assembly.timeline()
    frames = sum(piece.plan.frames for piece in pieces) - (len(pieces) - 1) * assembly.crossfade_frames
    plans, offsets = _scene_timeline(assembly)
    return pb.AssemblySummary(
        duration_ms=round(frames * 1000 / assembly.output.fps),
        size_bytes=movie.stat().st_size,
        width=assembly.output.width,
        height=assembly.output.height,
        scene_duration_ms=[plan.duration_ms for plan in plans],
        subtitles=sidecars,
        integrated_lufs=loudness.integrated_lufs,
        scene_start_ms=offsets,
    )


async def _cancel(tasks: list[asyncio.Task]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
