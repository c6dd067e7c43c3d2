"""Pure builders of FFmpeg command lines (ffmpeg-python graphs compiled to argv); nothing here runs anything."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import ffmpeg

from services.assembler.plan import ScenePlan
from services.common.output import OutputFormat
from services.common.providers import Quality


@dataclass(frozen=True)
class X264:
    preset: str
    crf: int


# Trade-off per quality: draft favours speed, hd favours detail per bit. Stills compress well at any preset.
X264_BY_QUALITY = {
    Quality.DRAFT: X264("ultrafast", 28),
    Quality.STANDARD: X264("veryfast", 23),
    Quality.HD: X264("medium", 20),
}
AUDIO_RATE = 48000
AUDIO_BITRATE = "192k"
_GLOBAL_ARGS = ("-hide_banner", "-nostdin", "-loglevel", "error")


@dataclass(frozen=True)
class SegmentJob:
    """One scene's picture track: a still or a clip, framed, captioned and faded, exactly `plan.frames` long."""

    visual: Path
    is_clip: bool
    plan: ScenePlan
    # A clip's captions: one ASS file with the scene's timed cues, drawn on every frame.
    captions: Path | None
    fade_frames: int
    output_path: Path
    # A still's caption runs, in order: (frames, ASS file of the one caption shown, or None). Empty: one run, none.
    still_runs: tuple[tuple[int, Path | None], ...] = ()


def segment_command(exe: str, job: SegmentJob, output: OutputFormat) -> list[str]:
    """Encodes a scene's silent H.264 segment.

    A still is decoded once and repeated with the `loop` filter (far cheaper than `-loop 1`, which decodes the file
    for every frame); a clip is looped with `-stream_loop -1` and cut at the frame count, its own audio ignored.
    """
    frames = job.plan.frames
    if job.is_clip:
        picture = ffmpeg.input(str(job.visual), stream_loop=-1).video.filter("fps", fps=output.fps)
        picture = _frame(picture, output)
        if job.captions is not None:
            picture = picture.filter("ass", filename=str(job.captions))
    else:
        picture = _still(
            _frame(ffmpeg.input(str(job.visual)).video, output), job.still_runs or ((frames, None),), output
        )
    if job.fade_frames > 0:
        picture = picture.filter("fade", type="in", start_frame=0, nb_frames=job.fade_frames)
        picture = picture.filter("fade", type="out", start_frame=frames - job.fade_frames, nb_frames=job.fade_frames)
    x264 = X264_BY_QUALITY[output.quality]
    stream = ffmpeg.output(
        picture,
        str(job.output_path),
        **{"frames:v": frames, "c:v": "libx264", "preset": x264.preset, "crf": x264.crf},
        pix_fmt="yuv420p",
        r=output.fps,
        an=None,
    )
    return stream.global_args(*_GLOBAL_ARGS).compile(cmd=exe, overwrite_output=True)


def _still(
    picture: ffmpeg.nodes.FilterableStream, runs: tuple[tuple[int, Path | None], ...], output: OutputFormat
) -> ffmpeg.nodes.FilterableStream:
    """The decoded, framed still, captioned once per run and repeated for the run's frames, runs joined in order.

    Work per output frame is then only the repetition: the caption is blended into one frame per run, not into each.
    """
    copies = picture.filter_multi_output("split", len(runs)) if len(runs) > 1 else None
    pieces = []
    for index, (frames, caption) in enumerate(runs):
        piece = copies.stream(index) if copies is not None else picture
        if caption is not None:
            piece = piece.filter("ass", filename=str(caption))
        piece = piece.filter("loop", loop=frames - 1, size=1, start=0).filter("setpts", f"N/({output.fps}*TB)")
        pieces.append(piece)
    return ffmpeg.concat(*pieces, v=1, a=0) if len(pieces) > 1 else pieces[0]


def _frame(picture: ffmpeg.nodes.FilterableStream, output: OutputFormat) -> ffmpeg.nodes.FilterableStream:
    """Scales to fit inside the output frame, pads the rest, and converts to yuv420p once, before any repetition."""
    return (
        picture.filter("scale", output.width, output.height, force_original_aspect_ratio="decrease")
        .filter("pad", output.width, output.height, "(ow-iw)/2", "(oh-ih)/2", color="black")
        .filter("setsar", 1)
        .filter("format", "yuv420p")
    )


@dataclass(frozen=True)
class MuxJob:
    segment_list: Path
    narrations: Sequence[Path]
    plans: Sequence[ScenePlan]
    subtitles: Path | None
    output_path: Path
    title: str = ""


def mux_command(exe: str, job: MuxJob) -> list[str]:
    """Joins the segments by stream copy and lays the narration under them as one AAC track.

    The audio is encoded once for the whole video, each narration delayed by its scene's lead and padded or cut to
    exactly its segment's length, so the two tracks cannot drift apart at the joins.
    """
    video = ffmpeg.input(str(job.segment_list), f="concat", safe=0).video
    narrations = []
    for path, plan in zip(job.narrations, job.plans, strict=True):
        narrations.append(
            ffmpeg.input(str(path))
            .audio.filter("aresample", AUDIO_RATE)
            .filter("aformat", sample_fmts="fltp", channel_layouts="stereo")
            .filter("adelay", delays=plan.lead_ms, all=1)
            .filter("apad")
            .filter("atrim", end=f"{plan.duration_s:.6f}")
        )
    audio = ffmpeg.concat(*narrations, v=0, a=1) if len(narrations) > 1 else narrations[0]
    streams = [video, audio]
    options: dict[str, object] = {"c:v": "copy", "c:a": "aac", "b:a": AUDIO_BITRATE, "movflags": "+faststart"}
    if job.title:
        # An argv element, never a shell string: any text is safe here.
        options["metadata"] = f"title={job.title}"
    if job.subtitles is not None:
        streams.append(ffmpeg.input(str(job.subtitles))["s"])
        options.update({"c:s": "mov_text", "metadata:s:s:0": "language=eng"})
    stream = ffmpeg.output(*streams, str(job.output_path), **options)
    return stream.global_args(*_GLOBAL_ARGS).compile(cmd=exe, overwrite_output=True)


def concat_list(segments: Sequence[Path]) -> str:
    """The concat demuxer's list file; paths are our own temp files, quoted as the demuxer requires."""
    return "".join("file '{}'\n".format(str(path).replace("'", "'\\''")) for path in segments)
