"""The last steps of an assembly: the soundtrack of the whole timeline, the subtitle track, and the mux into an MP4."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

from services.assembler import captions, soundtrack
from services.assembler.ffmpeg import MuxJob, concat_list, mux_command, subtitle_track_command
from services.assembler.timeline import Timeline
from services.common.errors import InvalidArgument
from services.common.media import probe, run_ffmpeg

_SIDECAR_DOCUMENTS = {"srt": captions.srt_document, "vtt": captions.vtt_document}


@dataclass(frozen=True)
class Movie:
    """The muxed MP4 and the subtitle files asked for, by format name ("srt", "vtt")."""

    path: Path
    sidecars: dict[str, str]


async def mix_soundtrack(
    timeline: Timeline, music: Path | None, exe: str, timeout_seconds: float, encoders: int
) -> tuple[Path, soundtrack.LoudnessMeasurement]:
    """Mixes narration and music for the whole timeline, normalises its loudness, measures the result and encodes
    it to AAC in up to `encoders` parts at once.

    Every scene must be planned (its length is known then).
    """
    bed = None
    if music is not None:
        if not probe(music, "music").has_audio:
            raise InvalidArgument("music has no audio; send an audio file (MP3, WAV, OGG, FLAC, M4A)")
        options = timeline.finishing.music
        bed = soundtrack.MusicBed(music, options.gain_db, options.duck, options.fade_ms)
    tracks = [
        soundtrack.SceneAudio(piece.narration, *piece.kept_ms, piece.plan.lead_ms, piece.plan.duration_s)
        for piece in timeline.pieces()
    ]
    mix = timeline.folder / "mix.wav"
    crossfade_s = timeline.crossfade_frames / timeline.output.fps
    # The mix is measured as it is written; the last pass normalises it and measures the result, and the AAC the mux
    # will copy is encoded from that, all while the segments encode.
    mixing = soundtrack.mix_command(exe, tracks, crossfade_s, bed, mix)
    measured = soundtrack.parse_measurement(await run_ffmpeg(mixing, timeout_seconds))
    target = timeline.finishing.loudness
    loudness = None if target is None else soundtrack.LoudnessTarget(target.integrated_lufs, target.true_peak_dbtp)
    raw = timeline.folder / f"soundtrack{soundtrack.RAW_SUFFIX}"
    last_pass = soundtrack.normalize_command(exe, mix, loudness, measured, raw)
    final_loudness = soundtrack.parse_measurement(await run_ffmpeg(last_pass, timeout_seconds))
    final = timeline.folder / f"soundtrack{soundtrack.SOUNDTRACK_SUFFIX}"
    await encode_aac(exe, raw, final, encoders, timeout_seconds)
    return final, final_loudness


async def encode_aac(exe: str, raw: Path, out_path: Path, encoders: int, timeout_seconds: float) -> None:
    """The deliverable's AAC from a raw soundtrack, in up to `encoders` parts at once, joined in silence (a minute
    of narration on 2 cores: 1.2 s against 2.2 s whole); one channel when both are the same. The raw file and the
    parts are removed."""
    plan = await asyncio.to_thread(soundtrack.aac_plan, raw, encoders)
    parts = plan.parts
    paths = [out_path.with_name(f"{out_path.stem}-part-{index}{out_path.suffix}") for index in range(len(parts))]
    try:
        if len(parts) == 1:
            await run_ffmpeg(soundtrack.aac_part_command(exe, raw, parts[0], plan.channels, out_path), timeout_seconds)
            return
        # A task group: one encoder failing stops the others before their files are removed. Its error is raised as
        # itself (a MediaError the caller maps to a status), not inside the group's ExceptionGroup.
        try:
            async with asyncio.TaskGroup() as encodes:
                for part, path in zip(parts, paths, strict=True):
                    command = soundtrack.aac_part_command(exe, raw, part, plan.channels, path)
                    encodes.create_task(run_ffmpeg(command, timeout_seconds))
        except ExceptionGroup as failed:
            raise failed.exceptions[0] from None
        await asyncio.to_thread(soundtrack.join_aac, list(zip(parts, paths, strict=True)), out_path)
    finally:
        for path in (raw, *paths):
            path.unlink(missing_ok=True)


async def mux(timeline: Timeline, parts: list[Path], sound: Path, exe: str, timeout_seconds: float) -> Movie:
    """Joins the video's parts by stream copy with the soundtrack and, when captions are on, a subtitle track."""
    plans, offsets = timeline.scene_starts()
    segment_list = timeline.folder / "segments.txt"
    segment_list.write_text(concat_list(parts))
    subtitles = None
    sidecars: dict[str, str] = {}
    if timeline.output.captions and any(plan.cues for plan in plans):
        template = timeline.folder / "captions-timing.srt"
        captions.write_track_template(plans, offsets, template)
        timing = timeline.folder / "captions-timing.mp4"
        await run_ffmpeg(subtitle_track_command(exe, template, timing), timeout_seconds)
        subtitles = timeline.folder / "captions.mp4"
        await asyncio.to_thread(captions.write_track, timing, plans, offsets, subtitles)
        sidecars = {name: _SIDECAR_DOCUMENTS[name](plans, offsets) for name in timeline.finishing.sidecars}
    movie = timeline.folder / "movie.mp4"
    await run_ffmpeg(mux_command(exe, MuxJob(segment_list, sound, subtitles, movie, timeline.title)), timeout_seconds)
    return Movie(movie, sidecars)
