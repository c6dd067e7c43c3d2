"""Encode scheduling: every call's segment encodes and cross-fade blends share the machine's cores and segment cache."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from pathlib import Path

from services.assembler import h264, repeats, segments
from services.assembler.ffmpeg import (
    Encoder,
    SegmentJob,
    encoded_frames,
    encoder_threads,
    faded_frames,
    faded_in_runs,
    fills_body,
    reorders,
    segment_command,
    select_encoder,
    transition_command,
)
from services.assembler.timeline import Timeline
from services.common.cache import AssetCache
from services.common.errors import MediaError
from services.common.media import run_ffmpeg
from services.common.output import OutputFormat

_LOGGER = logging.getLogger(__name__)

# Segment encodes and cross-fade blends run below the soundtrack's passes and, on a machine shared with the audio
# service, below piper: they only have to be done by the final join, while the last narration and the soundtrack
# after it are each render's serial tail. CFS then gives a niced encode a third of a core against a normal process
# (weights 335 and 1024), and all of an idle one.
ENCODE_NICENESS = 5


async def encode_segment(
    exe: str,
    job: SegmentJob,
    output: OutputFormat,
    encoder: Encoder,
    timeout_seconds: float,
    threads: int = 0,
    env: Mapping[str, str] | None = None,
) -> None:
    """Encodes a segment's files; for a still whose repeats and fades are pictures of skips, FFmpeg encodes its
    other distinct pictures and `repeats.fill` then writes the body from them (a few milliseconds: the skips are
    built once, a fade's weights fitted on histograms). Any other body of a video whose parts declare reordering
    (`reorders`) is rewritten so by `h264.reorder`.

    A stream `repeats.fill` refuses (an FFmpeg whose x264 wrote something it does not know) costs only the speed:
    the segment is encoded again with every frame it shows, and the reason logged.
    """
    await run_ffmpeg(segment_command(exe, job, output, encoder, threads), timeout_seconds, env, ENCODE_NICENESS)
    reordering = reorders(output, encoder)
    try:
        if fills_body(job, output, encoder):
            try:
                await asyncio.to_thread(_fill, job, output, reordering)
                return
            except MediaError as error:
                _LOGGER.warning(
                    "scene %d: repeats not written as skips (%s); encoding every frame", job.plan.index, error
                )
                every_frame = segment_command(exe, job, output, encoder, threads, every_frame=True)
                await run_ffmpeg(every_frame, timeout_seconds, env, ENCODE_NICENESS)
        if reordering:
            await asyncio.to_thread(h264.reorder, job.encoded_path, job.output_path, output.fps)
    finally:
        runs = len(faded_in_runs(job, output))
        for path in (job.encoded_path, job.fade_out_base_path, *map(job.fade_in_base_path, range(runs))):
            path.unlink(missing_ok=True)


def _fill(job: SegmentJob, output: OutputFormat, reordering: bool) -> None:
    faded_out = faded_frames(job, output)
    fade_ins = [
        repeats.Fade(frames, job.fade_in_base_path(run)) for run, frames in enumerate(faded_in_runs(job, output))
    ]
    repeats.fill(
        job.encoded_path,
        encoded_frames(job, output),
        job.body_frames,
        output.fps,
        job.output_path,
        fade_ins=fade_ins,
        fade_out=repeats.Fade(faded_out, job.fade_out_base_path) if faded_out else None,
        variable=output.variable_frame_rate,
        reordering=reordering,
    )


class EncodeScheduler:
    """Runs encodes at most `slots` at a time, each with its share of the cores, reusing cached segments."""

    def __init__(
        self, exe: str, encoder_preference: str, slots: int, cache: AssetCache | None, timeout_seconds: float
    ) -> None:
        self._exe = exe
        # Probed once at start-up: an explicit h264_nvenc on a machine without it stops the service with the reason.
        self._encoder = select_encoder(exe, encoder_preference)
        self._slot_count = slots
        # Shared by all calls: the machine's cores are the limit, not one call's scenes.
        self._slots = asyncio.Semaphore(slots)
        # Encodes running now: each one that starts takes its share of the cores (ffmpeg.encoder_threads).
        self._running = 0
        self._cache = cache
        self._timeout = timeout_seconds

    async def encode(self, job: SegmentJob, output: OutputFormat, env: Mapping[str, str]) -> None:
        """Encodes a piece's segment, or joins the one a render with the same inputs encoded before.

        `env` is FFmpeg's environment for drawing captions (the call's fontconfig file).
        """
        cache = self._cache
        key = await asyncio.to_thread(segments.segment_key, job, output, self._encoder, self._exe) if cache else ""
        if cache is not None and await segments.restore(cache, key, job):
            return
        async with self._slots:
            self._running += 1
            try:
                threads = encoder_threads(self._slot_count, self._running)
                await encode_segment(self._exe, job, output, self._encoder, self._timeout, threads, env)
            finally:
                self._running -= 1
        if cache is not None:
            await segments.keep(cache, key, job)

    async def join_parts(self, timeline: Timeline) -> list[Path]:
        """The video's parts in order; with cross-fades, encodes each blend of a tail into the next head first."""
        jobs = [piece.job for piece in timeline.pieces() if piece.job is not None]
        if not timeline.crossfade_frames:
            return [job.output_path for job in jobs]

        async def blend(position: int) -> Path:
            tail, head = jobs[position].tail_path, jobs[position + 1].head_path
            assert tail is not None and head is not None
            path = timeline.folder / f"crossfade-{position}.mp4"
            reordering = reorders(timeline.output, self._encoder)
            encoded = path.with_name(f"{path.stem}-encoded{path.suffix}") if reordering else path
            command = transition_command(
                self._exe, tail, head, timeline.crossfade_frames, timeline.output, encoded, self._encoder
            )
            try:
                async with self._slots:
                    await run_ffmpeg(command, self._timeout, niceness=ENCODE_NICENESS)
                if reordering:
                    await asyncio.to_thread(h264.reorder, encoded, path, timeline.output.fps)
            finally:
                if reordering:
                    encoded.unlink(missing_ok=True)
            return path

        blends = await asyncio.gather(*(blend(position) for position in range(len(jobs) - 1)))
        parts = [jobs[0].output_path]
        for blended, job in zip(blends, jobs[1:], strict=True):
            parts += [blended, job.output_path]
        return parts
