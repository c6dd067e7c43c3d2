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
    timeline: Timeline, music: Path | None, exe: str, timeout_seconds: float
) -> tuple[Path, soundtrack.LoudnessMeasurement]:
    """Mixes narration and music for the whole timeline, normalises its loudness and measures the result.

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
    # The mix is measured as it is written; the last pass normalises it, encodes the AAC the mux will copy and
    # measures the result, all while the segments encode.
    mixing = soundtrack.mix_command(exe, tracks, crossfade_s, bed, mix)
    measured = soundtrack.parse_measurement(await run_ffmpeg(mixing, timeout_seconds))
    target = timeline.finishing.loudness
    loudness = None if target is None else soundtrack.LoudnessTarget(target.integrated_lufs, target.true_peak_dbtp)
    final = timeline.folder / f"soundtrack{soundtrack.SOUNDTRACK_SUFFIX}"
    last_pass = soundtrack.normalize_command(exe, mix, loudness, measured, final)
    return final, soundtrack.parse_measurement(await run_ffmpeg(last_pass, timeout_seconds))


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
