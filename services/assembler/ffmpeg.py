"""Pure builders of FFmpeg command lines (ffmpeg-python graphs compiled to argv), and the one-time encoder choice."""

from __future__ import annotations

import functools
import itertools
import logging
import subprocess
from collections.abc import Sequence
from dataclasses import KW_ONLY, dataclass
from enum import Enum
from pathlib import Path

import ffmpeg

from services.assembler.plan import ScenePlan
from services.assembler.soundtrack import AAC_OPTIONS, SAMPLE_RATE, SOUNDTRACK_SUFFIX
from services.common.errors import FailedPrecondition
from services.common.output import OutputFormat
from services.common.providers import Quality

_LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class RateControl:
    preset: str
    # Constant quality: x264's CRF or NVENC's CQ; 0-51, lower is better and bigger.
    level: int
    # The preset keeps one reference frame (without B-frames), so a held still's repeats can be written as pictures
    # of skips (repeats.py) instead of encoded.
    one_reference: bool = False
    # Its PPS declares weighted prediction (x264's weightp, off in ultrafast), so a still's fades can be written as
    # pictures of weighted skips too: the fade-out in display order, the fade-in decoded after the picture it fades
    # into, for which every part of the video declares one frame of reordering (h264.py).
    weighted_fades: bool = False
    # x264's bitrate factor (a zone's b=) for a still's pictures that repeats written by fill then hold: encoding
    # every frame, x264's macroblock tree saw the repeats refer to such a picture and spent more on it; shown only
    # its distinct pictures, it cannot. On the 12 scenes of bench/assembly.py at 1080p, against the render before
    # issue 20: psnr 44.7 dB on average (worst frame 43.2) without, 46.1 (44.8) at 1.5, 47.5 (45.8) at 2, the MP4
    # 0.75x, 0.79x and 0.83x its size.
    held_bits: float = 1.0


# x264: draft favours speed, hd favours detail per bit. Stills compress well at any preset. medium searches three
# reference frames, so its repeats are encoded (with HELD_X264).
X264_BY_QUALITY = {
    Quality.DRAFT: RateControl("ultrafast", 28, one_reference=True),
    Quality.STANDARD: RateControl("veryfast", 23, one_reference=True, weighted_fades=True, held_bits=2.0),
    Quality.HD: RateControl("medium", 20),
}
# NVENC runs on the GPU's own encoder block and leaves the CPU to decoding and filters, so a slower preset costs
# little wall time. Its presets run from p1 (fastest, fewest bits spent on search, largest files for the quality)
# to p7 (slowest, best quality per bit): draft takes p1, standard NVIDIA's default p4, hd p6, one step short of the
# slowest.
NVENC_BY_QUALITY = {
    Quality.DRAFT: RateControl("p1", 28),
    Quality.STANDARD: RateControl("p4", 23),
    Quality.HD: RateControl("p6", 20),
}
_GLOBAL_ARGS = ("-hide_banner", "-nostdin", "-loglevel", "error")
# A cross-fade's head and tail parts are FFV1 in Matroska: lossless (the frames are encoded once more, blended, so
# no generation loss) and intra-only (each frame stands alone: no reordering delay or look-ahead on such short
# parts), and the same whichever H.264 encoder the deliverable uses.
_LOSSLESS = {"c:v": "ffv1"}
_PART_SUFFIX = ".mkv"
# The blurred backdrop of PAD_BLUR is blurred at this fraction of the output size, then scaled up: the blur costs
# little and its strength is the same relative to the frame at any output size.
_BLUR_SCALE = 8
_BLUR_SIGMA = 4
# How much of its brightness the backdrop keeps, so the picture in front stands out.
_BACKDROP_GAIN = 0.5
_NVENC_PROBE_SECONDS = 20
# x264's analysis for frames that repeat the one before (a held still between caption changes and fades, when every
# frame is encoded) and for a still's fade-out frames, as zone options (x264 reconfigures itself at each zone's
# edges): no sub-pixel refinement, the diamond motion search, no partitions below 16x16. Every block of a repeat is a
# skip, and a fade frame is the picture before, darker (at standard quality x264's weighted prediction codes it as
# such): searching finer found nothing. On the 12 slides of bench/assembly.py (1820 frames at 1080p), with no
# B-frames (Encoder.options), the encode of every frame took 0.71x the CPU time of the one before (x264's veryfast
# preset alone), the file was 5 % larger, and every frame within 46.0 dB (PSNR). On those 12 scenes' distinct
# pictures (28 each, 24 of them fade frames), the zones on the fade-outs took each scene's encode from about 0.75 s
# to 0.62 s of CPU (fading_frames).
HELD_X264 = "subme=0,me=dia,partitions=none"


class Encoder(str, Enum):
    """The H.264 encoder of every segment and transition; all parts of one video must use the same one."""

    LIBX264 = "libx264"
    H264_NVENC = "h264_nvenc"

    def options(self, quality: Quality, threads: int = 0) -> dict[str, str | int]:
        """Output options for FFmpeg: codec, speed preset and constant-quality rate control.

        `threads` caps libx264's threads (0: x264 picks, 1.5 per core); NVENC encodes on the GPU and ignores it.
        """
        if self is Encoder.H264_NVENC:
            nvenc = NVENC_BY_QUALITY[quality]
            # vbr with a CQ target and no bitrate cap (b:v 0) is NVENC's constant-quality mode.
            return {"c:v": self.value, "preset": nvenc.preset, "rc": "vbr", "cq": nvenc.level, "b:v": 0}
        x264 = X264_BY_QUALITY[quality]
        # No B-frames: over held stills they only cost x264 their analysis (choosing where they go, searching both
        # directions), for frames that repeat the one before. On the 12 slides of bench/assembly.py (1820 frames,
        # 1080p) the encode took 12 to 18 % less CPU time, the file was 3.5 % smaller, and the pictures were within
        # 46.6 dB (PSNR) of the encode with B-frames. Clips lose B-frames' compression too, since every part of a
        # video must share them to be joined by stream copy (see _h264_output).
        options: dict[str, str | int] = {"c:v": self.value, "preset": x264.preset, "crf": x264.level, "bf": 0}
        if threads > 0:
            options["threads"] = threads
        return options


def encoder_threads(cores: int, running: int) -> int:
    """libx264 threads for an encode that starts while `running` encodes (itself counted) share `cores`.

    x264 splits a frame's work over frame threads, and pays for it: on this bench's 12 scenes of 1080p (2 cores,
    two segments at once) its own choice (3 threads each) cost 19.0 s of CPU and 9.7 s of wall time, one thread
    each 17.6 s and 9.1 s. A segment encoded alone (the last scene of a render to arrive, say) needs the threads:
    one took 1.5 s where x264's choice or two threads took 1.0 s. So each encode gets an equal share of the cores
    as it starts.
    """
    return max(1, cores // max(1, running))


ENCODER_PREFERENCES = ("auto", "libx264", "h264_nvenc")


def select_encoder(exe: str, preference: str) -> Encoder:
    """Resolves the VIDEO_ENCODER setting: `auto` takes NVENC when it can encode here, else libx264.

    Meant for start-up: the NVENC probe runs FFmpeg synchronously, once per executable.
    """
    if preference not in ENCODER_PREFERENCES:
        raise FailedPrecondition(f"VIDEO_ENCODER must be one of {', '.join(ENCODER_PREFERENCES)} (got {preference!r})")
    if preference == Encoder.LIBX264.value:
        return Encoder.LIBX264
    if nvenc_works(exe):
        return Encoder.H264_NVENC
    if preference == Encoder.H264_NVENC.value:
        raise FailedPrecondition(
            "VIDEO_ENCODER is h264_nvenc, but FFmpeg cannot encode with NVENC on this machine (no NVIDIA GPU or "
            "driver); set VIDEO_ENCODER to auto or libx264"
        )
    return Encoder.LIBX264


@functools.cache
def nvenc_works(exe: str) -> bool:
    """Whether a one-frame test encode with h264_nvenc succeeds.

    FFmpeg builds list h264_nvenc whether or not the machine has an NVIDIA GPU and driver; only opening the encoder
    tells. Without them it fails within milliseconds (libcuda cannot be loaded).
    """
    argv = [
        exe,
        *_GLOBAL_ARGS,
        *("-f", "lavfi", "-i", "color=black:size=256x256:rate=1"),
        *("-frames:v", "1", "-c:v", Encoder.H264_NVENC.value, "-f", "null", "-"),
    ]
    try:
        result = subprocess.run(argv, capture_output=True, timeout=_NVENC_PROBE_SECONDS, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        _LOGGER.info("NVENC unavailable (%s); encoding with libx264", error)
        return False
    if result.returncode != 0:
        reason = result.stderr.decode("utf-8", "replace").strip().splitlines()
        _LOGGER.info("NVENC unavailable (%s); encoding with libx264", reason[0] if reason else result.returncode)
        return False
    _LOGGER.info("NVENC can encode here")
    return True


class Fit(str, Enum):
    """How a picture whose aspect ratio differs from the output's fills the frame."""

    # The whole picture, the rest filled with a colour.
    PAD_COLOR = "pad_color"
    # The whole picture in front of a blurred, darkened copy of itself that covers the frame.
    PAD_BLUR = "pad_blur"
    # The picture scaled to cover the frame, the overflow cut off equally on both sides.
    CROP = "crop"


@dataclass(frozen=True)
class SegmentJob:
    """One scene's picture track: a still or a clip, framed, captioned and faded, exactly `plan.frames` long.

    With `head_frames` or `tail_frames`, the first and last frames go to small lossless files (`head_path`,
    `tail_path`) for the cross-fades with the neighbouring scenes, and `output_path` holds only the frames between.
    """

    visual: Path
    is_clip: bool
    plan: ScenePlan
    output_path: Path
    _: KW_ONLY
    # A clip's captions: one ASS file with the scene's timed cues, drawn on every frame.
    captions: Path | None = None
    # A still's caption runs, in order: (frames, ASS file of the one caption shown, or None). Empty: one run, none.
    still_runs: tuple[tuple[int, Path | None], ...] = ()
    fade_in_frames: int = 0
    fade_out_frames: int = 0
    fit: Fit = Fit.PAD_COLOR
    # An FFmpeg colour ("black", "#1a2b3c", "0x1a2b3c") for Fit.PAD_COLOR.
    pad_color: str = "black"
    head_frames: int = 0
    tail_frames: int = 0

    @property
    def head_path(self) -> Path | None:
        return self._part_path("head") if self.head_frames else None

    @property
    def tail_path(self) -> Path | None:
        return self._part_path("tail") if self.tail_frames else None

    @property
    def body_frames(self) -> int:
        return self.plan.frames - self.head_frames - self.tail_frames

    @property
    def encoded_path(self) -> Path:
        """Where the encoder writes the body when it is rewritten into `output_path`: a still's distinct pictures
        for `repeats.fill` (`fills_body`), or any body for `h264.reorder` (`reorders`)."""
        return self.output_path.with_name(f"{self.output_path.stem}-encoded{self.output_path.suffix}")

    def fade_in_base_path(self, run: int) -> Path:
        """Where the encoder writes the picture a fade-in written by `repeats.fill` shows in its `run`-th caption run
        (before fading), raw yuv420p."""
        return self.output_path.with_name(f"{self.output_path.stem}-fade-in-base-{run}.yuv")

    @property
    def fade_out_base_path(self) -> Path:
        """Where the encoder writes the picture a fade-out written by `repeats.fill` starts from, raw yuv420p."""
        return self.output_path.with_name(f"{self.output_path.stem}-fade-out-base.yuv")

    def _part_path(self, part: str) -> Path:
        return self.output_path.with_name(f"{self.output_path.stem}-{part}{_PART_SUFFIX}")


def segment_command(
    exe: str, job: SegmentJob, output: OutputFormat, encoder: Encoder, threads: int = 0, every_frame: bool = False
) -> list[str]:
    """Encodes a scene's silent H.264 segment, and its lossless head and tail when asked, in one FFmpeg run.

    A still is decoded and framed once and repeated with the `loop` filter (far cheaper than `-loop 1`, which
    decodes the file for every frame); a clip is looped with `-stream_loop -1` and cut at the frame count, its own
    audio ignored. `threads`: see `encoder_threads`.
    """
    frames = job.plan.frames
    _check_counts(job)
    if job.is_clip:
        picture = ffmpeg.input(str(job.visual), stream_loop=-1).video.filter("fps", fps=output.fps)
        picture = _frame(picture, output, job.fit, job.pad_color)
        if job.captions is not None:
            picture = picture.filter("ass", filename=str(job.captions))
    else:
        framed = _frame(ffmpeg.input(str(job.visual)).video, output, job.fit, job.pad_color)
        picture = _still(framed, job.still_runs or ((frames, None),), output)
    fills = fills_body(job, output, encoder) and not every_frame
    faded = faded_frames(job, output) if fills else {}
    faded_in = faded_in_runs(job, output) if fills else []
    side_outputs: list[ffmpeg.nodes.OutputStream] = []
    if faded_in:
        # Each caption run's picture before the fade-in, for fill to fit its part of the fade-in's weights on.
        copies = picture.filter_multi_output("split", 1 + len(faded_in))
        picture = copies.stream(0)
        for run, shown_in_run in enumerate(faded_in):
            side_outputs.append(_raw_picture(copies.stream(1 + run), min(shown_in_run), job.fade_in_base_path(run)))
    if job.fade_in_frames > 0:
        fade = {"type": "in", "start_frame": 0, "nb_frames": job.fade_in_frames}
        if faded_in:
            # Only the frames x264 gets: the filter numbers frames it passes by as well, so their factors stay.
            encoded = encoded_frames(job, output)
            fade["enable"] = _select_expression([frame for frame in encoded if frame <= job.fade_in_frames])
        picture = picture.filter("fade", **fade)
    # A fade-out that fill writes shows nothing of the filter's unless a cross-fade's tail is cut from it: its first
    # frame is the held picture, and x264 gets no other (3 ms of CPU a 1080p frame saved).
    if job.fade_out_frames > 0 and not (faded and job.tail_frames == 0):
        picture = picture.filter(
            "fade", type="out", start_frame=frames - job.fade_out_frames, nb_frames=job.fade_out_frames
        )
    parts = [
        (path, start, end)
        for path, start, end in ((job.head_path, 0, job.head_frames), (job.tail_path, frames - job.tail_frames, frames))
        if path is not None
    ]
    # A still's body at a variable frame rate, or one that `repeats.fill` writes: only the frames that show a new
    # picture go to the encoder (less the fade-out that fill writes), each keeping its timestamp.
    variable = output.variable_frame_rate and not job.is_clip
    shown = encoded_frames(job, output) if fills else body_frames_shown(job) if variable else None
    if parts:
        copies = picture.filter_multi_output("split", 1 + len(parts))
        body = _trim(copies.stream(0), job.head_frames, frames - job.tail_frames)
        side_outputs += [
            _lossless_output(_trim(copies.stream(index), start, end), path, end - start)
            for index, (path, start, end) in enumerate(parts, start=1)
        ]
    else:
        body = picture
    light: list[tuple[int, int]] = []
    held: list[int] = []
    if shown is not None:
        body = body.filter("select", _select_expression(shown))
        light = fading_frames(job, shown)
        held = held_pictures(job, output, shown) if fills else []
    elif not job.is_clip:
        light = held_frames(job)
    if faded:
        # The picture the fade-out starts from, the last encoded, for fill to fit the fade-out's weights on.
        copies = body.filter_multi_output("split", 2)
        body = copies.stream(0)
        side_outputs.append(_raw_picture(copies.stream(1), len(shown or ()) - 1, job.fade_out_base_path))
    body_count = len(shown) if shown is not None else job.body_frames
    body_path = job.encoded_path if fills or reorders(output, encoder) else job.output_path
    body_output = _h264_output(body, body_path, body_count, output, encoder, threads, light, shown is not None, held)
    return (
        ffmpeg.merge_outputs(body_output, *side_outputs)
        .global_args(*_GLOBAL_ARGS)
        .compile(cmd=exe, overwrite_output=True)
    )


def fills_body(job: SegmentJob, output: OutputFormat, encoder: Encoder) -> bool:
    """Whether `repeats.fill` writes a segment's body (its repeats and fades as pictures of skips) from the pictures
    `segment_command` encodes to `job.encoded_path` (`encoded_frames`): a still encoded by x264 with one reference
    frame, at either frame rate."""
    return not job.is_clip and encoder is Encoder.LIBX264 and X264_BY_QUALITY[output.quality].one_reference


def reorders(output: OutputFormat, encoder: Encoder) -> bool:
    """Whether every part of a video declares one frame of reordering (h264.py), for its stills' fade-ins decoded
    after the picture they fade into: x264 with weighted prediction. Parts that `repeats.fill` does not write are
    rewritten so by `h264.reorder` (clips, cross-fades, a still encoded every frame)."""
    return encoder is Encoder.LIBX264 and X264_BY_QUALITY[output.quality].weighted_fades


def encoded_frames(job: SegmentJob, output: OutputFormat) -> list[int]:
    """The frames of a still's body x264 encodes when `repeats.fill` writes the body: those that show a new picture,
    less the fades `faded_in_runs` (but each run's last, which the others weight) and `faded_frames` give fill."""
    faded = set(faded_frames(job, output))
    for frames in faded_in_runs(job, output):
        faded |= set(frames) - {max(frames)}
    return [frame for frame in body_frames_shown(job) if frame not in faded]


def faded_in_runs(job: SegmentJob, output: OutputFormat) -> list[dict[int, int]]:
    """The fade-in frames of a still's body `repeats.fill` writes as pictures of weighted skips, by the caption run
    they show, each with the fade filter's factor (in 1/65536; fade_per_frame as in FFmpeg's vf_fade.c).

    Each run's frames within the fade-in, up to its last there (or the first at full brightness): x264 encodes that
    last one, and the others weight it, decoded after it; x264 also encodes the first frame, black. None when the
    body does not start with the fade-in (a cross-fade's head) or the fade-out starts within it; a run with no frame
    to fill before its last is left to x264.
    """
    end = job.fade_in_frames  # the first frame at full brightness
    if not (X264_BY_QUALITY[output.quality].weighted_fades and end > 1) or job.head_frames:
        return []
    if end >= min(job.body_frames, job.plan.frames - job.fade_out_frames):
        return []
    step = (1 << 16) // end
    runs, start = [], 0
    for frames, _caption in job.still_runs or ((job.plan.frames, None),):
        first, last = max(start, 1), min(start + frames - 1, end)
        if first < last:
            runs.append({frame: min(0xFFFF, frame * step) for frame in range(first, last + 1)})
        start += frames
        if start > end:
            break
    return runs


def faded_frames(job: SegmentJob, output: OutputFormat) -> dict[int, int]:
    """The fade-out frames of a still's body `repeats.fill` writes as pictures of weighted skips, each with the fade
    filter's factor (in 1/65536; fade_per_frame and the out-fade's inversion as in FFmpeg's vf_fade.c).

    The fade's first frame has the factor 65535/65536, which leaves every value as it is: it shows the held picture,
    which the others are scaled from. None when a caption or the fade-in still changes the picture within the
    fade-out, or the fade-out starts outside the body.
    """
    if not (X264_BY_QUALITY[output.quality].weighted_fades and job.fade_out_frames > 1):
        return {}
    start = job.plan.frames - job.fade_out_frames  # the fade's first frame, in the scene's numbering
    caption_starts = itertools.accumulate(frames for frames, _caption in job.still_runs[:-1])
    if start < job.head_frames or max([job.fade_in_frames, *caption_starts]) > start:
        return {}
    step = (1 << 16) // job.fade_out_frames
    end = job.plan.frames - job.tail_frames
    return {frame - job.head_frames: 0xFFFF - min(0xFFFF, (frame - start) * step) for frame in range(start + 1, end)}


def body_frames_shown(job: SegmentJob) -> list[int]:
    """The frames of a still's body a variable frame rate keeps: where its picture changes, and its last frame.

    The last frame is kept though it repeats, so that the body ends at its true duration: a frame's duration is the
    gap to the next one, and the last has only its own 1 / fps.
    """
    return sorted(_picture_changes(job) | {job.body_frames - 1})


def held_frames(job: SegmentJob) -> list[tuple[int, int]]:
    """The runs of a still's body that repeat the frame before, as (first, last) numbered from the body's first."""
    changes = sorted(_picture_changes(job))
    return [(a + 1, b - 1) for a, b in zip(changes, [*changes[1:], job.body_frames], strict=True) if b - a > 1]


def fading_frames(job: SegmentJob, shown: list[int]) -> list[tuple[int, int]]:
    """The runs of a still's distinct pictures (numbered in `shown`, as the encoder gets them) that fade out, as
    (first, last).

    Only the fade-out: the held picture after a fade-in is predicted from its last frame, and searched less there
    it came out worse (12 slides at 1080p: PSNR against the render before issue 20 44.9 dB on average, against 48.6
    without; fading out only, 48.6).
    """
    fading = set(range(job.plan.frames - job.fade_out_frames, job.plan.frames))
    return _runs([k for k, frame in enumerate(shown) if frame + job.head_frames in fading])


def held_pictures(job: SegmentJob, output: OutputFormat, shown: list[int]) -> list[int]:
    """The pictures of `shown` (numbered as the encoder gets them) that the frames after them repeat when
    `repeats.fill` writes the body: neither followed by a fade's weighted frames nor by another picture at once."""
    weighted = {frame for run in faded_in_runs(job, output) for frame in run} | set(faded_frames(job, output))
    later = sorted({*shown, *weighted, job.body_frames})
    return [index for index, frame in enumerate(shown) if later[later.index(frame) + 1] > frame + 1]


def x264_zones(light: Sequence[tuple[int, int]], held: Sequence[int] = (), held_bits: float = 1.0) -> str:
    """libx264's `x264-params` value giving frames (first and last, inclusive) the HELD_X264 analysis, and the
    `held` pictures `held_bits` times the bits."""
    zones = [(first, f"{first},{last},{HELD_X264}") for first, last in light]
    zones += [(picture, f"{picture},{picture},b={held_bits:g}") for picture in held]
    return "zones=" + "/".join(zone for _first, zone in sorted(zones))


def _picture_changes(job: SegmentJob) -> set[int]:
    """The frames of a still's body (numbered from the body's first) whose picture differs from the frame before.

    The picture changes where a caption run starts, on every frame of a fade and on the first after a fade-in; all
    other frames repeat the one before.
    """
    first, end = job.head_frames, job.plan.frames - job.tail_frames
    changes = {first}
    start = 0
    for frames, _caption in job.still_runs:
        changes.add(start)
        start += frames
    # Every fade-in frame, and the first at full brightness after them.
    changes.update(range(job.fade_in_frames + 1))
    changes.update(range(job.plan.frames - job.fade_out_frames, job.plan.frames))
    return {frame - first for frame in changes if first <= frame < end}


def _select_expression(frames: list[int]) -> str:
    """The `select` filter's expression keeping exactly `frames`, consecutive ones as one range."""
    return "+".join(f"eq(n,{a})" if a == b else f"between(n,{a},{b})" for a, b in _runs(frames))


def _runs(numbers: list[int]) -> list[tuple[int, int]]:
    """Ascending `numbers` as runs of consecutive ones, (first, last)."""
    runs: list[tuple[int, int]] = []
    for number in numbers:
        if runs and runs[-1][1] == number - 1:
            runs[-1] = (runs[-1][0], number)
        else:
            runs.append((number, number))
    return runs


def _check_counts(job: SegmentJob) -> None:
    """Rejects frame counts that cannot add up; the servicer sizes fades and cross-fades to fit each scene."""
    counts = (job.fade_in_frames, job.fade_out_frames, job.head_frames, job.tail_frames)
    if min(counts) < 0:
        raise ValueError(f"scene {job.plan.index}: fade and cross-fade frame counts must not be negative: {counts}")
    if job.body_frames < 1:
        raise ValueError(
            f"scene {job.plan.index}: head ({job.head_frames}) and tail ({job.tail_frames}) frames leave no body "
            f"in {job.plan.frames} frames"
        )
    if max(job.fade_in_frames, job.fade_out_frames) > job.plan.frames:
        raise ValueError(f"scene {job.plan.index}: a fade is longer than the scene's {job.plan.frames} frames")


def _trim(picture: ffmpeg.nodes.FilterableStream, start: int, end: int) -> ffmpeg.nodes.FilterableStream:
    return picture.filter("trim", start_frame=start, end_frame=end).filter("setpts", "PTS-STARTPTS")


def _h264_output(
    picture: ffmpeg.nodes.FilterableStream,
    path: Path,
    frames: int,
    output: OutputFormat,
    encoder: Encoder,
    threads: int = 0,
    light: Sequence[tuple[int, int]] = (),
    shown_only: bool = False,
    held: Sequence[int] = (),
) -> ffmpeg.nodes.OutputStream:
    """The settings every part of the joined video shares, so the concat demuxer can join them by stream copy.

    The thread count changes how x264 schedules its work, not the stream's parameters, so it may differ by part;
    so do the x264 zones that search the `light` frames (first and last, inclusive) less and spend more on the
    `held` pictures.
    At a variable frame rate every part, clips and cross-fades too, keeps its frames' own timestamps (all of them
    multiples of 1 / fps), so that all parts have the same stream parameters. `shown_only`: the picture is a
    still's distinct frames only, encoded as at a variable frame rate whatever the output's.
    """
    options: dict[str, str | int] = {"frames:v": frames, **encoder.options(output.quality, threads), "r": output.fps}
    if output.variable_frame_rate or shown_only:
        del options["r"]
        # The time base pinned at 1 / fps: FFmpeg would otherwise take the input's frame rate (an image's 25), in
        # whose ticks frame times at 30 fps cannot be written. No B-frames, whichever the encoder: with frames of
        # uneven length, the decode times of reordered frames start up to a held picture's length before zero, and
        # the concat demuxer joining the parts overlapped them with the previous part's (duplicate and shifted
        # timestamps, a shorter video).
        options.update({"fps_mode": "passthrough", "enc_time_base": f"1/{output.fps}", "bf": 0})
    x264_params = []
    if encoder is Encoder.LIBX264:
        # Every part declares the same fixed frame rate, so that all parts have one SPS (the joined video keeps the
        # first part's): x264 otherwise takes the rate from its input (an image's 25) for a part with its own
        # timestamps. And force-cfr, because x264's rate control otherwise weighs each frame by how long it shows
        # and spends more bits on a held picture, unlike the constant-rate encode whose repeats cost nothing:
        # measured on a 10 s 1080p still with caption changes and fades, 202 KB against 126 KB with force-cfr, and
        # 47.9 dB against 53.1 dB PSNR to the constant-rate video. The timestamps are kept either way; for frames
        # evenly spaced it changes nothing.
        x264_params.append(f"fps={output.fps}:force-cfr=1")
    held_bits = X264_BY_QUALITY[output.quality].held_bits
    held = held if held_bits != 1 else ()
    if (light or held) and encoder is Encoder.LIBX264:
        x264_params.append(x264_zones(light, held, held_bits))
    if x264_params:
        options["x264-params"] = ":".join(x264_params)
    return ffmpeg.output(picture, str(path), **options, pix_fmt="yuv420p", an=None)


def _raw_picture(picture: ffmpeg.nodes.FilterableStream, index: int, path: Path) -> ffmpeg.nodes.OutputStream:
    """Picture `index` of the stream, raw yuv420p."""
    selected = picture.filter("select", f"eq(n,{index})")
    return ffmpeg.output(selected, str(path), **{"frames:v": 1}, f="rawvideo", pix_fmt="yuv420p", an=None)


def _lossless_output(picture: ffmpeg.nodes.FilterableStream, path: Path, frames: int) -> ffmpeg.nodes.OutputStream:
    return ffmpeg.output(picture, str(path), **{"frames:v": frames, **_LOSSLESS}, pix_fmt="yuv420p", an=None)


def transition_command(
    exe: str, tail: Path, head: Path, frames: int, output: OutputFormat, out_path: Path, encoder: Encoder
) -> list[str]:
    """Encodes the cross-fade from one scene's tail into the next scene's head, both `frames` long.

    The result is `frames` long and encoded like the segments, so it sits between the two bodies in the concat list
    and the whole video is joined by stream copy. Frame k shows (k + 1) / (frames + 1) of the head: the blend steps
    evenly from the last body frame before it to the first one after it, and no frame merely repeats a neighbour.
    """
    first, second = (
        # Timestamps counted in frames: Matroska stores milliseconds, and xfade times the blend from timestamps.
        # The frame rate too: a still's part declares its image's (25), and xfade refuses inputs whose rates differ.
        ffmpeg.input(str(path)).video.filter("settb", f"1/{output.fps}").filter("setpts", "N").filter("fps", output.fps)
        for path in (tail, head)
    )
    blended = ffmpeg.filter(
        [first, second],
        "xfade",
        transition="fade",
        duration=f"{(frames + 1) / output.fps:.6f}",
        offset=f"{-1 / output.fps:.6f}",
    )
    stream = _h264_output(blended, out_path, frames, output, encoder)
    return stream.global_args(*_GLOBAL_ARGS).compile(cmd=exe, overwrite_output=True)


def _still(
    picture: ffmpeg.nodes.FilterableStream,
    runs: tuple[tuple[int, Path | None], ...],
    output: OutputFormat,
) -> ffmpeg.nodes.FilterableStream:
    """The decoded, framed still, captioned once per run and repeated for the run's frames, runs joined in order.

    Work per output frame is then only the repetition: the caption is blended into one frame per run, not into each.
    """
    copies = picture.filter_multi_output("split", len(runs)) if len(runs) > 1 else None
    pieces = []
    for index, (frames, caption) in enumerate(runs):
        piece = copies.stream(index) if copies is not None else picture
        if caption is not None:
            # Fonts come through fontconfig (the assembler's FONTCONFIG_FILE adds the CJK font; see fonts.py).
            piece = piece.filter("ass", filename=str(caption))
        # Timestamps counted in frames: an image's own time base (1/25) cannot hold every frame time at 30 fps.
        piece = piece.filter("loop", loop=frames - 1, size=1, start=0).filter("settb", f"1/{output.fps}")
        piece = piece.filter("setpts", "N")
        pieces.append(piece)
    return ffmpeg.concat(*pieces, v=1, a=0) if len(pieces) > 1 else pieces[0]


def _frame(
    picture: ffmpeg.nodes.FilterableStream, output: OutputFormat, fit: Fit, pad_color: str
) -> ffmpeg.nodes.FilterableStream:
    """Fits the picture to the output frame and converts to yuv420p once, before any repetition."""
    width, height = output.width, output.height
    if fit is Fit.CROP:
        framed = picture.filter("scale", width, height, force_original_aspect_ratio="increase").filter(
            "crop", width, height
        )
    elif fit is Fit.PAD_BLUR:
        framed = _blur_padded(picture, output)
    else:
        framed = picture.filter("scale", width, height, force_original_aspect_ratio="decrease").filter(
            "pad", width, height, "(ow-iw)/2", "(oh-ih)/2", color=pad_color
        )
    return framed.filter("setsar", 1).filter("format", "yuv420p")


def _blur_padded(picture: ffmpeg.nodes.FilterableStream, output: OutputFormat) -> ffmpeg.nodes.FilterableStream:
    """The picture fitted inside the frame, over a blurred, darkened copy scaled to cover it."""
    copies = picture.filter_multi_output("split", 2)
    small_width = max(2, output.width // _BLUR_SCALE)
    small_height = max(2, output.height // _BLUR_SCALE)
    backdrop = (
        copies.stream(0)
        .filter("scale", small_width, small_height, force_original_aspect_ratio="increase")
        .filter("crop", small_width, small_height)
        .filter("gblur", sigma=_BLUR_SIGMA)
        .filter("colorchannelmixer", rr=_BACKDROP_GAIN, gg=_BACKDROP_GAIN, bb=_BACKDROP_GAIN)
        .filter("scale", output.width, output.height)
    )
    front = copies.stream(1).filter("scale", output.width, output.height, force_original_aspect_ratio="decrease")
    return backdrop.overlay(front, x="(W-w)/2", y="(H-h)/2")


@dataclass(frozen=True)
class MuxJob:
    segment_list: Path
    # The finished soundtrack (narration, music, loudness-normalised), as long as the video: the deliverable's AAC
    # when it ends in audio.SOUNDTRACK_SUFFIX (copied), else a WAV (encoded here).
    audio: Path
    # An MP4 holding only the finished mov_text track (`subtitle_track_command`, then `captions.write_track`).
    subtitles: Path | None
    output_path: Path
    title: str = ""


def mux_command(exe: str, job: MuxJob) -> list[str]:
    """Joins the video parts by stream copy and adds the soundtrack as AAC and the captions as a soft track.

    With the soundtrack already AAC, this run only copies: 0.1 s for the bench's minute of 1080p, against 1.5 s
    when it encodes the audio too, after every segment is done.
    """
    streams = [
        ffmpeg.input(str(job.segment_list), f="concat", safe=0).video,
        ffmpeg.input(str(job.audio)).audio,
    ]
    audio: dict[str, object] = {"c:a": "copy"}
    if job.audio.suffix != SOUNDTRACK_SUFFIX:
        audio = {**AAC_OPTIONS, "ar": SAMPLE_RATE}
    options: dict[str, object] = {"c:v": "copy", **audio, "movflags": "+faststart"}
    if job.title:
        # An argv element, never a shell string: any text is safe here.
        options["metadata"] = f"title={job.title}"
    if job.subtitles is not None:
        streams.append(ffmpeg.input(str(job.subtitles))["s"])
        options.update({"c:s": "copy", "metadata:s:s:0": "language=eng"})
    stream = ffmpeg.output(*streams, str(job.output_path), **options)
    return stream.global_args(*_GLOBAL_ARGS).compile(cmd=exe, overwrite_output=True)


def subtitle_track_command(exe: str, template: Path, output_path: Path) -> list[str]:
    """Turns the SRT timing template (`captions.write_track_template`) into an MP4 holding only a mov_text track."""
    stream = ffmpeg.output(ffmpeg.input(str(template))["s"], str(output_path), **{"c:s": "mov_text", "f": "mp4"})
    return stream.global_args(*_GLOBAL_ARGS).compile(cmd=exe, overwrite_output=True)


def concat_list(segments: Sequence[Path]) -> str:
    """The concat demuxer's list file; paths are our own temp files, quoted as the demuxer requires."""
    return "".join("file '{}'\n".format(str(path).replace("'", "'\\''")) for path in segments)
