"""The FFmpeg command lines, checked as data."""

from pathlib import Path

from services.assembler.ffmpeg import MuxJob, SegmentJob, concat_list, mux_command, segment_command
from services.assembler.plan import Cue, ScenePlan
from services.common.output import OutputFormat
from services.common.providers import Quality

OUTPUT = OutputFormat(1280, 720, 30, True, Quality.STANDARD, "16:9")
PLAN = ScenePlan(index=0, frames=90, fps=30, lead_ms=300, cues=(Cue("Hello.", 300, 1200),))


def _filter_graph(argv: list[str]) -> str:
    return argv[argv.index("-filter_complex") + 1]


def test_still_is_decoded_once_and_repeated_by_the_loop_filter() -> None:
    runs = ((9, None), (27, Path("/w/captions-0-1.ass")), (54, None))
    job = SegmentJob(Path("/w/visual-0.png"), False, PLAN, None, 12, Path("/w/segment-0.mp4"), runs)
    argv = segment_command("ffmpeg", job, OUTPUT)
    assert argv[:3] == ["ffmpeg", "-i", "/w/visual-0.png"]
    assert "-loop" not in argv and "-stream_loop" not in argv
    graph = _filter_graph(argv)
    # Framing, pixel format and each run's caption happen before the repetition, so they run once per run.
    assert graph.index("format=yuv420p") < graph.index("split=3")
    assert graph.index("ass=filename=/w/captions-0-1.ass") < graph.index("loop=loop=26:size=1:start=0")
    assert "loop=loop=8:size=1:start=0" in graph and "loop=loop=53:size=1:start=0" in graph
    assert "concat=a=0:n=3:v=1" in graph
    assert "scale=1280:720:force_original_aspect_ratio=decrease" in graph
    assert "pad=1280:720:(ow-iw)/2:(oh-ih)/2:color=black" in graph
    assert "fade=nb_frames=12:start_frame=0:type=in" in graph
    assert "fade=nb_frames=12:start_frame=78:type=out" in graph
    assert argv[argv.index("-frames:v") + 1] == "90"
    assert argv[argv.index("-c:v") + 1] == "libx264"
    assert argv[argv.index("-pix_fmt") + 1] == "yuv420p"
    assert "-an" in argv
    assert argv[-1] == "-y" and "/w/segment-0.mp4" in argv


def test_clip_is_looped_resampled_and_cut_to_the_frame_count() -> None:
    job = SegmentJob(Path("/w/visual-1.mp4"), True, PLAN, None, 0, Path("/w/segment-1.mp4"))
    argv = segment_command("ffmpeg", job, OUTPUT)
    assert argv[1:5] == ["-stream_loop", "-1", "-i", "/w/visual-1.mp4"]
    graph = _filter_graph(argv)
    assert graph.startswith("[0:v]fps=fps=30")
    assert "ass=" not in graph and "fade=" not in graph
    assert argv[argv.index("-frames:v") + 1] == "90"
    assert "-an" in argv


def test_quality_picks_the_x264_preset() -> None:
    job = SegmentJob(Path("/w/v.png"), False, PLAN, None, 0, Path("/w/s.mp4"))
    for quality, preset, crf in ((Quality.DRAFT, "ultrafast", "28"), (Quality.HD, "medium", "20")):
        output = OutputFormat(1280, 720, 30, True, quality, "16:9")
        argv = segment_command("ffmpeg", job, output)
        assert argv[argv.index("-preset") + 1] == preset
        assert argv[argv.index("-crf") + 1] == crf


def test_mux_copies_video_and_encodes_the_narration_once() -> None:
    second = ScenePlan(index=1, frames=45, fps=30, lead_ms=300, cues=())
    job = MuxJob(
        Path("/w/segments.txt"),
        [Path("/w/n0.wav"), Path("/w/n1.mp3")],
        [PLAN, second],
        Path("/w/c.srt"),
        Path("/w/movie.mp4"),
        title="Ladders: a 'safe' start",
    )
    argv = mux_command("ffmpeg", job)
    assert argv[argv.index("-metadata") + 1] == "title=Ladders: a 'safe' start"
    assert argv[1:7] == ["-f", "concat", "-safe", "0", "-i", "/w/segments.txt"]
    graph = _filter_graph(argv)
    assert "adelay=all=1:delays=300" in graph
    assert "atrim=end=3.000000" in graph and "atrim=end=1.500000" in graph
    assert "concat=a=1:n=2:v=0" in graph
    assert argv[argv.index("-c:v") + 1] == "copy"
    assert argv[argv.index("-c:a") + 1] == "aac"
    assert argv[argv.index("-c:s") + 1] == "mov_text"
    assert argv[argv.index("-movflags") + 1] == "+faststart"
    assert ["-map", "0:v"] == argv[argv.index("-map") : argv.index("-map") + 2]


def test_mux_without_captions_has_no_subtitle_track() -> None:
    job = MuxJob(Path("/w/segments.txt"), [Path("/w/n0.wav")], [PLAN], None, Path("/w/movie.mp4"))
    argv = mux_command("ffmpeg", job)
    assert "-c:s" not in argv and "concat=" not in _filter_graph(argv)


def test_concat_list_quotes_paths() -> None:
    assert concat_list([Path("/w/a.mp4"), Path("/w/it's.mp4")]) == "file '/w/a.mp4'\nfile '/w/it'\\''s.mp4'\n"


def test_caption_runs_cover_the_scene_once_per_caption_change() -> None:
    from services.assembler.plan import caption_runs

    plan = ScenePlan(index=0, frames=90, fps=30, lead_ms=300, cues=(Cue("One.", 300, 1200), Cue("Two.", 1200, 2500)))
    assert caption_runs(plan) == [(9, None), (27, "One."), (39, "Two."), (15, None)]
    assert caption_runs(ScenePlan(index=0, frames=30, fps=30, lead_ms=0, cues=())) == [(30, None)]
