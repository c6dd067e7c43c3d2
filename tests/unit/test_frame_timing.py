"""Frame timing: `output.frame_rate_mode` (script field, validation, the frames a variable-rate still keeps) and the
held stills of a constant-rate video encoded without B-frames."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import av
import pytest
from av.video.frame import PictureType
from PIL import Image
from scenecast.v1 import render_service_pb2, types_pb2

from gateway.validation import validate_render
from scenecast_cli.script import ScriptError, load_script
from services.assembler.encoding import encode_segment
from services.assembler.ffmpeg import (
    Encoder,
    SegmentJob,
    body_frames_shown,
    encoded_frames,
    faded_frames,
    faded_in_runs,
    fading_frames,
    held_frames,
    segment_command,
)
from services.assembler.plan import ScenePlan
from services.common.errors import InvalidArgument
from services.common.media import ffmpeg_exe
from services.common.output import OutputFormat, output_format
from services.common.providers import Quality

CONSTANT = OutputFormat(1280, 720, 30, True, Quality.STANDARD, "16:9")
VARIABLE = dataclasses.replace(CONSTANT, variable_frame_rate=True)
RUNS = ((9, None), (27, Path("/w/caption-1.ass")), (54, None))


def _job(**changes: object) -> SegmentJob:
    plan = ScenePlan(index=0, frames=90, fps=30, lead_ms=300, cues=())
    job = SegmentJob(Path("/w/visual-0.png"), False, plan, Path("/w/piece-0.mp4"), still_runs=RUNS)
    return dataclasses.replace(job, **changes)


def _request(mode: int) -> render_service_pb2.RenderRequest:
    return render_service_pb2.RenderRequest(
        scenes=[types_pb2.Scene(id="a", narration="Hello.", visual_prompt="A slide.")],
        output=types_pb2.OutputSettings(
            aspect_ratio=types_pb2.ASPECT_RATIO_16_9,
            height=720,
            quality=types_pb2.QUALITY_STANDARD,
            frame_rate_mode=mode,
        ),
    )


def test_the_gateway_refuses_an_unknown_frame_rate_mode_naming_the_field() -> None:
    with pytest.raises(InvalidArgument, match=r"output.frame_rate_mode must be constant, variable or unspecified"):
        validate_render(_request(7), max_scenes=10)
    assert validate_render(_request(types_pb2.FRAME_RATE_MODE_VARIABLE), max_scenes=10).variable_frame_rate
    # Requests from before the field existed keep the constant frame rate.
    assert not validate_render(_request(types_pb2.FRAME_RATE_MODE_UNSPECIFIED), max_scenes=10).variable_frame_rate
    assert not output_format(_request(types_pb2.FRAME_RATE_MODE_CONSTANT).output).variable_frame_rate


def test_the_script_field_reaches_the_request_and_a_wrong_value_names_it(tmp_path: Path) -> None:
    path = tmp_path / "script.yaml"
    path.write_text("output: {frame_rate_mode: variable}\nscenes:\n  - {id: a, narration: Hi}\n")
    assert load_script(path).request.output.frame_rate_mode == types_pb2.FRAME_RATE_MODE_VARIABLE
    path.write_text("scenes:\n  - {id: a, narration: Hi}\n")
    assert load_script(path).request.output.frame_rate_mode == types_pb2.FRAME_RATE_MODE_CONSTANT
    path.write_text("output: {frame_rate_mode: sometimes}\nscenes:\n  - {id: a, narration: Hi}\n")
    with pytest.raises(ScriptError, match="output.frame_rate_mode"):
        load_script(path)


def test_a_variable_rate_still_keeps_fades_caption_changes_and_its_last_frame() -> None:
    job = _job(fade_in_frames=3, fade_out_frames=2)
    assert body_frames_shown(job) == [0, 1, 2, 3, 9, 36, 88, 89]
    # With cross-fade parts the body is numbered from its own first frame, which is kept.
    assert body_frames_shown(_job(head_frames=5, tail_frames=5)) == [0, 4, 31, 79]


def test_a_variable_rate_still_selects_those_frames_and_keeps_their_timestamps() -> None:
    argv = segment_command("ffmpeg", _job(fade_in_frames=3, fade_out_frames=2), VARIABLE, Encoder.LIBX264)
    graph = argv[argv.index("-filter_complex") + 1]
    # Less the fade-in's frames between black and full brightness and the fade-out after its first frame, which
    # repeats.fill writes as weighted skips: fitted on the raw pictures of the still before the fade-in (its
    # frame 1 before the fade filter) and of the fade-out's first frame (the last encoded, 5th).
    assert "select=eq(n\\,0)+eq(n\\,3)+eq(n\\,9)+eq(n\\,36)+eq(n\\,88)" in graph
    assert graph.count("select=eq(n\\,1)[") == 1 and "select=eq(n\\,4)" in graph
    assert argv[-argv[::-1].index("-f")] == "rawvideo"
    assert "/w/piece-0-encoded.mp4" in argv
    assert "/w/piece-0-fade-in-base-0.yuv" in argv and "/w/piece-0-fade-out-base.yuv" in argv
    assert argv[argv.index("-frames:v") + 1] == "5"
    assert argv[argv.index("-fps_mode") + 1] == "passthrough" and "-r" not in argv
    assert argv[argv.index("-enc_time_base") + 1] == "1/30"
    # A clip keeps every frame, on the same time base as the stills it is joined with.
    clip = segment_command("ffmpeg", _job(is_clip=True, still_runs=()), VARIABLE, Encoder.LIBX264)
    assert "select=" not in clip[clip.index("-filter_complex") + 1] and clip[clip.index("-frames:v") + 1] == "90"
    assert clip[clip.index("-fps_mode") + 1] == "passthrough"
    # At a constant rate x264 gets the same frames, and repeats.fill writes the body from them; at hd (three
    # reference frames) or with NVENC every frame is encoded.
    constant = segment_command("ffmpeg", _job(fade_in_frames=3, fade_out_frames=2), CONSTANT, Encoder.LIBX264)
    assert constant[constant.index("-filter_complex") + 1] == graph and "/w/piece-0-encoded.mp4" in constant
    hd = dataclasses.replace(CONSTANT, quality=Quality.HD)
    for every in (
        segment_command("ffmpeg", _job(), hd, Encoder.LIBX264),
        segment_command("ffmpeg", _job(), CONSTANT, Encoder.H264_NVENC),
    ):
        assert "select=" not in every[every.index("-filter_complex") + 1] and "-fps_mode" not in every
        assert every[every.index("-frames:v") + 1] == "90" and "/w/piece-0.mp4" in every


def test_a_fade_out_after_its_first_frame_is_left_to_weighted_skips_when_nothing_else_changes() -> None:
    # FFmpeg's fade: 1/65536 steps of 65536 // frames, the out-fade's first frame at 65535 (the held picture).
    assert faded_frames(_job(fade_out_frames=4), CONSTANT) == {87: 49151, 88: 32767, 89: 16383}
    assert faded_frames(_job(fade_out_frames=3), VARIABLE) == {88: 43690, 89: 21845}
    # Numbered from the body's first frame; the tail's frames are the cross-fade's.
    assert faded_frames(_job(fade_out_frames=4, head_frames=5, tail_frames=1), CONSTANT) == {82: 49151, 83: 32767}
    # None where a caption starts inside the fade, the fade-in is still going, the fade starts in the head, or at
    # draft quality (ultrafast: no weighted prediction in its PPS) and hd (three reference frames).
    assert faded_frames(_job(fade_out_frames=60), CONSTANT) == {}
    assert faded_frames(_job(fade_out_frames=4, fade_in_frames=87), CONSTANT) == {}
    assert faded_frames(_job(fade_out_frames=50, head_frames=45, still_runs=((90, None),)), CONSTANT) == {}
    for quality in (Quality.DRAFT, Quality.HD):
        assert faded_frames(_job(fade_out_frames=4), dataclasses.replace(CONSTANT, quality=quality)) == {}
    assert encoded_frames(_job(fade_in_frames=3, fade_out_frames=4), CONSTANT) == [0, 3, 9, 36, 86]


def test_a_fade_in_is_left_to_weighted_skips_but_the_last_frame_of_each_picture_it_shows() -> None:
    # FFmpeg's fade-in: frame n at n * (65536 // frames), at most 65535; fill writes all but each run's last, x264's,
    # which they weigh.
    assert faded_in_runs(_job(fade_in_frames=4), CONSTANT) == [{1: 16384, 2: 32768, 3: 49152, 4: 65535}]
    # The first caption starts at frame 9: frames 1 to 8 weigh frame 8 (no caption), 9 to 12 frame 12 (the caption).
    by_run = faded_in_runs(_job(fade_in_frames=12), VARIABLE)
    assert by_run == [{frame: frame * 5461 for frame in range(1, 9)}, {frame: frame * 5461 for frame in range(9, 13)}]
    assert encoded_frames(_job(fade_in_frames=12), VARIABLE) == [0, 8, 12, 36, 89]
    # A run of one frame within the fade is left to x264.
    assert faded_in_runs(_job(fade_in_frames=4, still_runs=((2, None), (88, None))), CONSTANT) == [
        {2: 32768, 3: 49152, 4: 65535}
    ]
    # None with a cross-fade's head, a fade-out starting within it, no fade to speak of, or at draft and hd quality.
    assert faded_in_runs(_job(fade_in_frames=4, head_frames=5), CONSTANT) == []
    assert faded_in_runs(_job(fade_in_frames=4, fade_out_frames=88, still_runs=()), CONSTANT) == []
    assert faded_in_runs(_job(fade_in_frames=1), CONSTANT) == []
    for quality in (Quality.DRAFT, Quality.HD):
        assert faded_in_runs(_job(fade_in_frames=4), dataclasses.replace(CONSTANT, quality=quality)) == []


def test_the_held_frames_of_an_hd_still_are_searched_less_by_x264() -> None:
    job = _job(fade_in_frames=3, fade_out_frames=2)
    assert held_frames(job) == [(4, 8), (10, 35), (37, 87)]
    hd = dataclasses.replace(CONSTANT, quality=Quality.HD)
    argv = segment_command("ffmpeg", job, hd, Encoder.LIBX264)
    held = "subme=0,me=dia,partitions=none"
    every_part = "fps=30:force-cfr=1"
    assert argv[argv.index("-x264-params") + 1] == f"{every_part}:zones=4,8,{held}/10,35,{held}/37,87,{held}"
    # Only x264 takes zones; a still whose repeats are pictures of skips, or at a variable rate, has no held frames
    # to encode, only its fade-out searched less (the last of the pictures encoded, [0, 3, 9, 36, 88]), and the
    # pictures the repeats then hold (3, 9 and 36) get twice the bits at standard quality, none more at draft. A
    # clip's frames are all its own. Every x264 part declares the same fixed frame rate.
    assert "-x264-params" not in segment_command("ffmpeg", job, hd, Encoder.H264_NVENC)
    for output in (CONSTANT, VARIABLE):
        argv = segment_command("ffmpeg", job, output, Encoder.LIBX264)
        assert argv[argv.index("-x264-params") + 1] == f"{every_part}:zones=1,1,b=2/2,2,b=2/3,3,b=2/4,4,{held}"
    draft = segment_command("ffmpeg", job, dataclasses.replace(CONSTANT, quality=Quality.DRAFT), Encoder.LIBX264)
    assert "b=" not in draft[draft.index("-x264-params") + 1]
    assert fading_frames(_job(fade_out_frames=4, head_frames=5, tail_frames=2), [0, 4, 31, 81, 82]) == [(3, 4)]
    clip = segment_command("ffmpeg", _job(is_clip=True, still_runs=()), hd, Encoder.LIBX264)
    assert clip[clip.index("-x264-params") + 1] == every_part


def test_a_held_still_is_encoded_without_b_frames_at_every_quality(tmp_path: Path) -> None:
    """B-frames over a held still cost x264 their analysis for frames that repeat the one before (see Encoder).
    The only pictures out of order are a standard still's fade-in, decoded after the picture it fades into."""
    still = tmp_path / "still.png"
    Image.new("RGB", (320, 180), (200, 120, 40)).save(still)
    for quality in (Quality.STANDARD, Quality.HD):
        output = dataclasses.replace(CONSTANT, width=320, height=180, quality=quality)
        plan = ScenePlan(index=0, frames=45, fps=30, lead_ms=0, cues=())
        job = SegmentJob(still, False, plan, tmp_path / f"{quality}.mp4", fade_in_frames=5, fade_out_frames=5)
        asyncio.run(encode_segment(ffmpeg_exe(), job, output, Encoder.LIBX264, 60))
        with av.open(str(job.output_path)) as container:
            stream = container.streams.video[0]
            shown = [packet.pts * stream.time_base * 30 for packet in container.demux(stream) if packet.size]
            container.seek(0)
            types = {PictureType(frame.pict_type) for frame in container.decode(stream)}
        assert len(shown) == 45 and PictureType.B not in types
        reordered = [0, 5, 1, 2, 3, 4] if quality is Quality.STANDARD else [0, 1, 2, 3, 4, 5]
        assert shown == [*reordered, *range(6, 45)]
