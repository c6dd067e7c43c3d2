"""h264.reorder and the joins: every part of a standard-quality video declares one frame of reordering (picture order
count type 0), checked on real x264 encodes by strict decoding and FFmpeg's own header trace."""

from __future__ import annotations

import subprocess
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image
from scenecast.v1 import types_pb2

from services.assembler import h264
from services.assembler.encoding import EncodeScheduler, encode_segment
from services.assembler.ffmpeg import Encoder, SegmentJob, concat_list, reorders
from services.assembler.plan import ScenePlan
from services.assembler.timeline import Piece, Timeline
from services.common.errors import MediaError
from services.common.finishing import finishing_options
from services.common.media import ffmpeg_exe
from services.common.output import OutputFormat
from services.common.providers import Quality
from tests.probe import h264_header_fields

EXE = ffmpeg_exe()
FPS = 30
STANDARD = OutputFormat(320, 180, FPS, False, Quality.STANDARD, "16:9")


def _x264(path: Path, frames: int, *options: str) -> Path:
    source = ["-f", "lavfi", "-i", f"testsrc2=size=320x180:rate={FPS}", "-frames:v", str(frames)]
    argv = [EXE, "-hide_banner", "-nostdin", "-loglevel", "error", "-y", *source, "-c:v", "libx264", "-bf", "0"]
    subprocess.run([*argv, *options, "-pix_fmt", "yuv420p", str(path)], check=True)
    return path


def _pictures(path: Path) -> tuple[list[Fraction], list[np.ndarray]]:
    with av.open(str(path)) as container:
        frames = list(container.decode(video=0))
    return [frame.pts * frame.time_base for frame in frames], [frame.to_ndarray(format="yuv420p") for frame in frames]


def _packets(path: Path) -> list[tuple[int, int]]:
    """(pts, dts) of each picture in decoding order, in frames."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return [
            (int(packet.pts * stream.time_base * FPS), int(packet.dts * stream.time_base * FPS))
            for packet in container.demux(stream)
            if packet.size
        ]


@pytest.mark.parametrize("preset", ["veryfast", "ultrafast"])
def test_a_reordered_part_shows_the_same_pictures_and_each_slice_carries_its_order(tmp_path: Path, preset: str) -> None:
    """CABAC (veryfast) keeps the slice data byte for byte after a longer header; CAVLC's (ultrafast) is shifted."""
    source = _x264(tmp_path / "part.mp4", 24, "-preset", preset, "-x264-params", "keyint=10:min-keyint=10")
    h264.reorder(source, tmp_path / "reordered.mp4", FPS)
    times, pictures = _pictures(tmp_path / "reordered.mp4")
    assert times == [Fraction(frame, FPS) for frame in range(24)]
    _, originals = _pictures(source)
    assert all(np.array_equal(a, b) for a, b in zip(pictures, originals, strict=True))
    fields = h264_header_fields(tmp_path / "reordered.mp4")
    sps = dict(fields[: next(i for i, (name, _) in enumerate(fields) if name == "pic_parameter_set_id")])
    assert sps["pic_order_cnt_type"] == 0 and sps["log2_max_pic_order_cnt_lsb_minus4"] == 12
    assert sps["max_num_reorder_frames"] == 1 and sps["max_dec_frame_buffering"] == 2
    idrs = [value == 5 for name, value in fields if name == "nal_unit_type" and value in (1, 5)]
    orders = [value for name, value in fields if name == "pic_order_cnt_lsb"]
    assert [frame for frame, idr in enumerate(idrs) if idr] == [0, 10, 20]
    assert orders == [2 * (frame % 10) for frame in range(24)]
    # Decoded one frame ahead of display, as every part of such a video, so that joins keep decoding times rising.
    assert _packets(tmp_path / "reordered.mp4") == [(frame, frame - 1) for frame in range(24)]


def test_a_stream_that_already_reorders_is_refused_and_leaves_nothing(tmp_path: Path) -> None:
    with_b_frames = tmp_path / "b.mp4"
    argv = [EXE, "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=320x180:rate=30", "-frames:v", "6"]
    subprocess.run([*argv, "-c:v", "libx264", "-bf", "2", "-pix_fmt", "yuv420p", str(with_b_frames)], check=True)
    with pytest.raises(MediaError, match="picture order count type 0"):
        h264.reorder(with_b_frames, tmp_path / "reordered.mp4", FPS)
    assert not (tmp_path / "reordered.mp4").exists()


def _still(path: Path) -> Path:
    rows, cols = np.mgrid[0:180, 0:320]
    picture = np.stack([cols * 255 / 320, rows * 255 / 180, np.full_like(rows, 90)], axis=2)
    Image.fromarray(picture.astype(np.uint8)).save(path)
    return path


async def test_reordering_stills_and_clips_join_by_stream_copy_into_one_strictly_decodable_video(
    tmp_path: Path,
) -> None:
    """What mux.py does with the parts: FFmpeg's concat demuxer, stream copy, one SPS (the first part's) for all."""
    assert reorders(STANDARD, Encoder.LIBX264)
    clip = _x264(tmp_path / "clip-source.mp4", 45, "-preset", "veryfast")
    jobs = [
        SegmentJob(
            _still(tmp_path / "still.png"),
            False,
            ScenePlan(index=0, frames=40, fps=FPS, lead_ms=0, cues=()),
            tmp_path / "piece-0.mp4",
            fade_in_frames=6,
            fade_out_frames=6,
        ),
        SegmentJob(clip, True, ScenePlan(index=1, frames=30, fps=FPS, lead_ms=0, cues=()), tmp_path / "piece-1.mp4"),
    ]
    jobs.append(
        SegmentJob(
            jobs[0].visual, False, ScenePlan(index=2, frames=25, fps=FPS, lead_ms=0, cues=()), tmp_path / "p2.mp4"
        )
    )
    for job in jobs:
        await encode_segment(EXE, job, STANDARD, Encoder.LIBX264, 60, threads=1)
    # The still fades in from black: its frames 1 to 5 are decoded after frame 6, the picture they fade into.
    assert _packets(jobs[0].output_path)[:7] == [(0, -1), (6, 0), (1, 1), (2, 2), (3, 3), (4, 4), (5, 5)]
    listing = tmp_path / "parts.txt"
    listing.write_text(concat_list([job.output_path for job in jobs]))
    joined = tmp_path / "joined.mp4"
    concat = [EXE, "-hide_banner", "-nostdin", "-loglevel", "warning", "-f", "concat", "-safe", "0", "-i", str(listing)]
    result = subprocess.run([*concat, "-c", "copy", "-y", str(joined)], capture_output=True, text=True, check=True)
    assert result.stderr == ""  # no "non monotonically increasing dts", no timestamp fixed up
    h264_header_fields(joined)
    times, pictures = _pictures(joined)
    assert times == [Fraction(frame, FPS) for frame in range(95)]
    parts = [picture for job in jobs for picture in _pictures(job.output_path)[1]]
    assert all(np.array_equal(a, b) for a, b in zip(pictures, parts, strict=True))
    decoding = [dts for _pts, dts in _packets(joined)]
    assert decoding == sorted(set(decoding))
    with av.open(str(joined)) as container:
        stream = container.streams.video[0]
        assert stream.duration * stream.time_base == Fraction(95, FPS)


async def test_cross_faded_standard_scenes_join_with_their_blends_rewritten_to_reorder(tmp_path: Path) -> None:
    """EncodeScheduler.join_parts: the blend between two scenes is x264's too, rewritten like the scenes. From a still
    into a clip: the still's tail declared its image's 25 fps, which xfade refused against the clip's 30 (fixed in
    transition_command)."""
    finishing = finishing_options(types_pb2.Finishing(transition=types_pb2.TRANSITION_CROSSFADE))
    timeline = Timeline.open(tmp_path, STANDARD, 2, "", 300, 500, finishing, default_transition_ms=400)
    blend = timeline.crossfade_frames
    assert blend == 12
    still = _still(tmp_path / "still.png")
    clip = _x264(tmp_path / "clip-source.mp4", 60, "-preset", "veryfast")
    jobs = [
        SegmentJob(still, False, ScenePlan(index=0, frames=40, fps=FPS, lead_ms=0, cues=()), tmp_path / "piece-0.mp4",
                   fade_in_frames=6, tail_frames=blend),
        SegmentJob(clip, True, ScenePlan(index=1, frames=45, fps=FPS, lead_ms=0, cues=()), tmp_path / "piece-1.mp4",
                   head_frames=blend),
    ]  # fmt: skip
    scheduler = EncodeScheduler(EXE, "libx264", 2, None, 60)
    for job in jobs:
        timeline.scenes[job.plan.index] = Piece(job.plan, job.visual, job.is_clip, job=job)
        await scheduler.encode(job, STANDARD, {})
    parts = await scheduler.join_parts(timeline)
    assert parts == [jobs[0].output_path, tmp_path / "crossfade-0.mp4", jobs[1].output_path]
    assert not (tmp_path / "crossfade-0-encoded.mp4").exists()
    assert _packets(parts[1]) == [(frame, frame - 1) for frame in range(blend)]
    listing = tmp_path / "parts.txt"
    listing.write_text(concat_list(parts))
    joined = tmp_path / "joined.mp4"
    concat = [EXE, "-hide_banner", "-nostdin", "-loglevel", "warning", "-f", "concat", "-safe", "0", "-i", str(listing)]
    result = subprocess.run([*concat, "-c", "copy", "-y", str(joined)], capture_output=True, text=True, check=True)
    assert result.stderr == ""
    h264_header_fields(joined)
    times, _pictures_joined = _pictures(joined)
    assert times == [Fraction(frame, FPS) for frame in range(40 + 45 - blend)]
