"""The FFmpeg command lines, checked as data."""

import dataclasses
from pathlib import Path

import pytest

from services.assembler.ffmpeg import (
    Encoder,
    Fit,
    MuxJob,
    SegmentJob,
    concat_list,
    encoder_threads,
    mux_command,
    segment_command,
    transition_command,
)
from services.assembler.plan import ScenePlan
from services.common.output import OutputFormat
from services.common.providers import Quality

OUTPUT = OutputFormat(1280, 720, 30, True, Quality.STANDARD, "16:9")
PLAN = ScenePlan(index=0, frames=90, fps=30, lead_ms=300, cues=())


def _filter_graph(argv: list[str]) -> str:
    return argv[argv.index("-filter_complex") + 1]


def _after(argv: list[str], flag: str, start: int = 0) -> str:
    return argv[argv.index(flag, start) + 1]


def test_still_is_decoded_once_and_repeated_by_the_loop_filter() -> None:
    runs = ((9, None), (27, Path("/w/captions-0-1.ass")), (54, None))
    job = SegmentJob(
        Path("/w/visual-0.png"),
        False,
        PLAN,
        Path("/w/segment-0.mp4"),
        still_runs=runs,
        fade_in_frames=12,
        fade_out_frames=6,
    )
    argv = segment_command("ffmpeg", job, OUTPUT, Encoder.LIBX264)
    assert argv[:3] == ["ffmpeg", "-i", "/w/visual-0.png"]
    assert "-loop" not in argv and "-stream_loop" not in argv
    graph = _filter_graph(argv)
    # Framing, pixel format and each run's caption happen before the repetition, so they run once per run.
    assert graph.index("format=yuv420p") < graph.index("split=3")
    assert graph.index("ass=filename=/w/captions-0-1.ass") < graph.index("loop=loop=26:size=1:start=0")
    assert "loop=loop=8:size=1:start=0" in graph and "loop=loop=53:size=1:start=0" in graph
    # Each repeated frame gets an exact timestamp in frames (1/30 s), whatever the image's own time base.
    assert graph.count("settb=1/30") == 3 and graph.count("setpts=N[") == 3
    assert "concat=a=0:n=3:v=1" in graph
    assert "scale=1280:720:force_original_aspect_ratio=decrease" in graph
    assert "pad=1280:720:(ow-iw)/2:(oh-ih)/2:color=black" in graph
    # The fade-in filter draws only the frames x264 gets (see below); the others it numbers but passes by.
    assert "fade=enable=eq(n\\,0)+eq(n\\,8)+eq(n\\,12):nb_frames=12:start_frame=0:type=in" in graph
    # The fade-out is left to repeats.fill (weighted skips from its first frame, the held picture): no filter. With a
    # cross-fade's tail cut from it, or at draft quality (no weighted prediction), the filter draws it.
    assert "type=out" not in graph
    fade_out = "fade=nb_frames=6:start_frame=84:type=out"
    with_tail = segment_command("ffmpeg", dataclasses.replace(job, tail_frames=3), OUTPUT, Encoder.LIBX264)
    draft = segment_command("ffmpeg", job, dataclasses.replace(OUTPUT, quality=Quality.DRAFT), Encoder.LIBX264)
    assert fade_out in _filter_graph(with_tail) and fade_out in _filter_graph(draft)
    assert "trim=" not in graph and "ffv1" not in argv
    # x264 encodes 5 distinct pictures (black, the fade-in's last frames before and with the first caption, the
    # second caption, the fade-out's first frame); repeats.fill writes the 90: the fade-in's frames 1 to 7 as weighted
    # skips of frame 8 and 9 to 11 of frame 12, fitted on each run's raw still before the fade (frames 1 and 9), and
    # the fade-out's other 5 weighted from its first frame.
    assert "select=eq(n\\,0)+eq(n\\,8)+eq(n\\,12)+eq(n\\,36)+eq(n\\,84)" in graph
    assert _after(argv, "-frames:v") == "5"
    assert "select=eq(n\\,4)" in graph and "/w/segment-0-fade-out-base.yuv" in argv
    assert graph.index("split=3") < graph.index("fade=enable=")
    assert "select=eq(n\\,1)" in graph and "select=eq(n\\,9)" in graph
    assert "/w/segment-0-fade-in-base-0.yuv" in argv and "/w/segment-0-fade-in-base-1.yuv" in argv
    assert _after(argv, "-c:v") == "libx264"
    assert _after(argv, "-pix_fmt") == "yuv420p"
    assert "-an" in argv
    assert argv[-1] == "-y" and "/w/segment-0-encoded.mp4" in argv and "/w/segment-0.mp4" not in argv


def test_clip_is_looped_resampled_and_cut_to_the_frame_count() -> None:
    job = SegmentJob(Path("/w/visual-1.mp4"), True, PLAN, Path("/w/segment-1.mp4"))
    argv = segment_command("ffmpeg", job, OUTPUT, Encoder.LIBX264)
    assert argv[1:5] == ["-stream_loop", "-1", "-i", "/w/visual-1.mp4"]
    graph = _filter_graph(argv)
    assert graph.startswith("[0:v]fps=fps=30")
    assert "ass=" not in graph and "fade=" not in graph
    assert _after(argv, "-frames:v") == "90"
    assert "-an" in argv


def test_every_caption_run_gets_its_own_ass_filter() -> None:
    still = SegmentJob(
        Path("/w/v.png"), False, PLAN, Path("/w/s.mp4"), still_runs=((30, Path("/w/a.ass")), (60, Path("/w/b.ass")))
    )
    clip = SegmentJob(Path("/w/v.mp4"), True, PLAN, Path("/w/s.mp4"), captions=Path("/w/c.ass"))
    for job, count in ((still, 2), (clip, 1)):
        graph = _filter_graph(segment_command("ffmpeg", job, OUTPUT, Encoder.LIBX264))
        assert graph.count("ass=filename=") == count
        assert "fontsdir" not in graph


def test_fit_modes_build_their_framing() -> None:
    def graph(fit: Fit, **options: str) -> str:
        job = SegmentJob(Path("/w/v.png"), False, PLAN, Path("/w/s.mp4"), fit=fit, **options)
        return _filter_graph(segment_command("ffmpeg", job, OUTPUT, Encoder.LIBX264))

    assert "pad=1280:720:(ow-iw)/2:(oh-ih)/2:color=#1a2b3c" in graph(Fit.PAD_COLOR, pad_color="#1a2b3c")
    crop = graph(Fit.CROP)
    assert "scale=1280:720:force_original_aspect_ratio=increase" in crop and "crop=1280:720" in crop
    assert "pad=" not in crop
    blur = graph(Fit.PAD_BLUR)
    # The backdrop is blurred at an eighth of the output size, then scaled up behind the fitted picture.
    assert blur.index("scale=160:90:force_original_aspect_ratio=increase") < blur.index("gblur=sigma=4")
    assert blur.index("gblur=sigma=4") < blur.index("scale=1280:720[")
    assert "scale=1280:720:force_original_aspect_ratio=decrease" in blur
    assert "overlay=eof_action=repeat:x=(W-w)/2:y=(H-h)/2" in blur
    # Framing still happens once, before the still is repeated.
    assert blur.index("overlay=") < blur.index("loop=")


def test_head_and_tail_are_split_off_to_lossless_files_in_the_same_run() -> None:
    job = SegmentJob(
        Path("/w/v.png"), False, PLAN, Path("/w/segment-2.mp4"), head_frames=10, tail_frames=12, fade_in_frames=5
    )
    assert job.head_path == Path("/w/segment-2-head.mkv") and job.tail_path == Path("/w/segment-2-tail.mkv")
    assert job.body_frames == 68
    argv = segment_command("ffmpeg", job, OUTPUT, Encoder.LIBX264)
    graph = _filter_graph(argv)
    assert graph.index("fade=") < graph.index("split=3")
    assert "trim=end_frame=78:start_frame=10" in graph
    assert "trim=end_frame=10:start_frame=0" in graph
    assert "trim=end_frame=90:start_frame=78" in graph
    body, head, tail = (argv.index(path) for path in (str(job.encoded_path), str(job.head_path), str(job.tail_path)))
    assert body < head < tail
    # The body's distinct pictures: its first (after the fade-in, which is in the head) and its last.
    assert _after(argv, "-frames:v") == "2" and _after(argv, "-c:v") == "libx264"
    head_start = argv.index("-map", body)
    assert argv[head_start:head].count("ffv1") == 1 and _after(argv, "-frames:v", head_start) == "10"
    tail_start = argv.index("-map", head)
    assert argv[tail_start:tail].count("ffv1") == 1 and _after(argv, "-frames:v", tail_start) == "12"
    no_tail = SegmentJob(Path("/w/v.png"), False, PLAN, Path("/w/s.mp4"), head_frames=10)
    assert no_tail.tail_path is None and "split=2" in _filter_graph(
        segment_command("ffmpeg", no_tail, OUTPUT, Encoder.LIBX264)
    )


def test_frame_counts_that_leave_no_body_are_refused() -> None:
    job = SegmentJob(Path("/w/v.png"), False, PLAN, Path("/w/s.mp4"), head_frames=45, tail_frames=45)
    with pytest.raises(ValueError, match="leave no body"):
        segment_command("ffmpeg", job, OUTPUT, Encoder.LIBX264)


def test_transition_cross_fades_with_the_segment_encoder_settings() -> None:
    argv = transition_command(
        "ffmpeg", Path("/w/s0-tail.mkv"), Path("/w/s1-head.mkv"), 12, OUTPUT, Path("/w/x01.mp4"), Encoder.LIBX264
    )
    assert argv[1:5] == ["-i", "/w/s0-tail.mkv", "-i", "/w/s1-head.mkv"]
    graph = _filter_graph(argv)
    assert graph.count("settb=1/30") == 2
    # duration (12 + 1) / 30 s starting one frame early: frame k shows (k + 1) / 13 of the head.
    assert "xfade=duration=0.433333:offset=-0.033333:transition=fade" in graph
    segment = segment_command(
        "ffmpeg", SegmentJob(Path("/w/v.mp4"), True, PLAN, Path("/w/s.mp4")), OUTPUT, Encoder.LIBX264
    )
    for flag in ("-c:v", "-preset", "-crf", "-pix_fmt", "-r", "-x264-params"):
        assert _after(argv, flag) == _after(segment, flag)
    assert _after(argv, "-frames:v") == "12" and "-an" in argv


def test_quality_picks_the_encoder_preset() -> None:
    job = SegmentJob(Path("/w/v.png"), False, PLAN, Path("/w/s.mp4"))
    cases = (
        (Encoder.LIBX264, Quality.DRAFT, {"-preset": "ultrafast", "-crf": "28"}),
        (Encoder.LIBX264, Quality.HD, {"-preset": "medium", "-crf": "20"}),
        (Encoder.H264_NVENC, Quality.DRAFT, {"-preset": "p1", "-cq": "28", "-rc": "vbr", "-b:v": "0"}),
        (Encoder.H264_NVENC, Quality.STANDARD, {"-preset": "p4", "-cq": "23"}),
        (Encoder.H264_NVENC, Quality.HD, {"-preset": "p6", "-cq": "20"}),
    )
    for encoder, quality, expected in cases:
        output = OutputFormat(1280, 720, 30, True, quality, "16:9")
        argv = segment_command("ffmpeg", job, output, encoder)
        assert _after(argv, "-c:v") == encoder.value
        assert {flag: _after(argv, flag) for flag in expected} == expected
        assert ("-crf" in argv) == (encoder is Encoder.LIBX264)


def test_threads_cap_libx264_only_and_share_the_cores() -> None:
    job = SegmentJob(Path("/w/v.png"), False, PLAN, Path("/w/s.mp4"), head_frames=10)
    one = segment_command("ffmpeg", job, OUTPUT, Encoder.LIBX264, threads=1)
    # The H.264 body gets the cap; the lossless head is not x264's.
    assert _after(one, "-threads") == "1" and one.count("-threads") == 1
    assert one.index("-threads") < one.index("/w/s-encoded.mp4") < one.index("/w/s-head.mkv")
    assert "-threads" not in segment_command("ffmpeg", job, OUTPUT, Encoder.LIBX264)
    assert "-threads" not in segment_command("ffmpeg", job, OUTPUT, Encoder.H264_NVENC, threads=1)
    assert [encoder_threads(2, running) for running in (0, 1, 2, 3)] == [2, 2, 1, 1]
    assert [encoder_threads(8, running) for running in (1, 2, 3, 8, 9)] == [8, 4, 2, 1, 1]


def test_mux_copies_video_and_encodes_the_finished_audio() -> None:
    job = MuxJob(
        Path("/w/segments.txt"),
        Path("/w/mix.wav"),
        Path("/w/captions.mp4"),
        Path("/w/movie.mp4"),
        title="Ladders: a 'safe' start",
    )
    argv = mux_command("ffmpeg", job)
    assert _after(argv, "-metadata") == "title=Ladders: a 'safe' start"
    assert argv[1:9] == ["-f", "concat", "-safe", "0", "-i", "/w/segments.txt", "-i", "/w/mix.wav"]
    assert "-filter_complex" not in argv
    maps = [argv[i + 1] for i, arg in enumerate(argv) if arg == "-map"]
    assert maps == ["0:v", "1:a", "2:s"]
    assert _after(argv, "-c:v") == "copy"
    assert _after(argv, "-c:a") == "aac" and _after(argv, "-b:a") == "192k" and _after(argv, "-ar") == "48000"
    # The mov_text track is made beforehand (captions.write_track) and copied, so its text is not read as markup.
    assert _after(argv, "-c:s") == "copy"
    assert _after(argv, "-movflags") == "+faststart"


def test_mux_copies_an_aac_soundtrack() -> None:
    argv = mux_command("ffmpeg", MuxJob(Path("/w/segments.txt"), Path("/w/soundtrack.m4a"), None, Path("/w/m.mp4")))
    assert _after(argv, "-c:a") == "copy" and _after(argv, "-c:v") == "copy"
    assert "-b:a" not in argv and "-ar" not in argv


def test_mux_without_captions_has_no_subtitle_track() -> None:
    job = MuxJob(Path("/w/segments.txt"), Path("/w/mix.wav"), None, Path("/w/movie.mp4"))
    argv = mux_command("ffmpeg", job)
    assert "-c:s" not in argv and "-metadata" not in argv
    assert [argv[i + 1] for i, arg in enumerate(argv) if arg == "-map"] == ["0:v", "1:a"]


def test_concat_list_quotes_paths() -> None:
    assert concat_list([Path("/w/a.mp4"), Path("/w/it's.mp4")]) == "file '/w/a.mp4'\nfile '/w/it'\\''s.mp4'\n"
