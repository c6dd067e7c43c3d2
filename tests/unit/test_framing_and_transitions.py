"""Real tiny encodes: fit modes, cross-fade parts joined by stream copy, fonts for libass, cards, encoder choice."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from services.assembler.cards import BACKGROUND, SAFE_MARGIN_RATIO, render_card
from services.assembler.encoding import encode_segment
from services.assembler.ffmpeg import (
    Encoder,
    Fit,
    MuxJob,
    SegmentJob,
    concat_list,
    mux_command,
    nvenc_works,
    select_encoder,
    subtitle_track_command,
    transition_command,
)
from services.assembler.mux import encode_aac
from services.assembler.plan import ScenePlan
from services.assembler.soundtrack import (
    RAW_SUFFIX,
    SOUNDTRACK_SUFFIX,
    LoudnessTarget,
    measure_command,
    normalize_command,
    parse_measurement,
)
from services.common.errors import FailedPrecondition
from services.common.fonts import write_fontconfig
from services.common.media import ffmpeg_exe, run_ffmpeg
from services.common.output import OutputFormat
from services.common.providers import Quality

FPS = 30
OUTPUT = OutputFormat(320, 180, FPS, False, Quality.DRAFT, "16:9")
EXE = ffmpeg_exe()
DARK, BRIGHT = (40, 40, 40), (215, 215, 215)
PAD_RGB = (48, 80, 160)


def _plan(index: int, frames: int) -> ScenePlan:
    return ScenePlan(index=index, frames=frames, fps=FPS, lead_ms=0, cues=())


def _still(path: Path, color: tuple[int, int, int], size: tuple[int, int] = (320, 180)) -> Path:
    Image.new("RGB", size, color).save(path)
    return path


def _frames(path: Path, pix_fmt: str = "rgb24") -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format=pix_fmt).astype(np.float64) for frame in container.decode(video=0)]


def _codec(path: Path) -> str:
    with av.open(str(path)) as container:
        return container.streams.video[0].codec_context.name


def _packets(path: Path) -> tuple[bytes, list[bytes]]:
    """The H.264 stream's parameter sets (avcC) and its packets, each without in-band parameter sets.

    The MP4 muxer repeats the SPS and PPS in band at each joined part's first key frame; dropping those NAL units
    leaves exactly the bytes the encoder wrote.
    """
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        packets = [_without_parameter_sets(bytes(packet)) for packet in container.demux(stream) if packet.size]
        return bytes(stream.codec_context.extradata), packets


def _without_parameter_sets(packet: bytes) -> bytes:
    units, offset = [], 0
    while offset < len(packet):
        size = int.from_bytes(packet[offset : offset + 4], "big")
        unit = packet[offset : offset + 4 + size]
        if unit[4] & 0x1F not in (7, 8):  # NAL unit types 7 and 8: SPS and PPS
            units.append(unit)
        offset += 4 + size
    return b"".join(units)


async def _encode(job: SegmentJob) -> None:
    await encode_segment(EXE, job, OUTPUT, Encoder.LIBX264, 60)


@pytest.fixture(scope="module")
def portrait(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 9:16 picture, red at the top to blue at the bottom, with blotchy noise that a blur removes."""
    height, width = 320, 180
    rows = np.linspace(0.0, 1.0, height)[:, None, None]
    picture = np.concatenate([255 * (1 - rows), np.full_like(rows, 80), 255 * rows], axis=2) * np.ones((1, width, 1))
    # 8x8 blotches survive the downscaling and the draft encode, unlike pixel noise.
    blotches = np.random.default_rng(7).normal(0, 30, (height // 8, width // 8 + 1, 1))
    noise = np.kron(blotches, np.ones((8, 8, 1)))[:height, :width]
    path = tmp_path_factory.mktemp("sources") / "portrait.png"
    Image.fromarray(np.clip(picture + noise, 0, 255).astype(np.uint8)).save(path)
    return path


async def test_head_body_and_tail_have_exact_frame_counts(tmp_path: Path) -> None:
    still = SegmentJob(
        _still(tmp_path / "bright.png", BRIGHT),
        False,
        _plan(0, 30),
        tmp_path / "still.mp4",
        # Two caption runs (captionless here), joined by the concat filter.
        still_runs=((11, None), (19, None)),
        fade_in_frames=7,
        head_frames=7,
        tail_frames=9,
    )
    # A 1 s clip at 25 fps, looped (the input never ends) and resampled to 40 frames at 30 fps.
    clip_source = tmp_path / "clip.mp4"
    await run_ffmpeg(
        [EXE, "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=90x160:rate=25:duration=1", "-y", str(clip_source)],
        60,
    )
    clip = SegmentJob(
        clip_source, True, _plan(1, 40), tmp_path / "clip-segment.mp4", fit=Fit.PAD_BLUR, head_frames=5, tail_frames=6
    )
    for job in (still, clip):
        await _encode(job)
        assert job.head_path is not None and job.tail_path is not None
        counts = [len(_frames(path)) for path in (job.head_path, job.output_path, job.tail_path)]
        assert counts == [job.head_frames, job.body_frames, job.tail_frames]
        assert [_codec(path) for path in (job.head_path, job.output_path, job.tail_path)] == ["ffv1", "h264", "ffv1"]
    # The head is the scene's start: it holds the whole fade in from black, and the body starts at full brightness.
    head_luma = [frame.mean() for frame in _frames(still.head_path, "gray")]
    assert head_luma[0] < 20 and all(a < b for a, b in zip(head_luma, head_luma[1:], strict=False))
    assert abs(_frames(still.output_path, "gray")[0].mean() - BRIGHT[0]) < 3
    # The clip's blurred backdrop fills the bars beside the 9:16 picture.
    bar = _frames(clip.output_path)[10][:, 4:96]
    assert bar.mean() > 20 and bar.std(axis=(0, 1)).max() > 4


async def test_cross_faded_scenes_join_by_stream_copy_to_the_exact_length(tmp_path: Path) -> None:
    crossfade = 8
    dark, bright = _still(tmp_path / "dark.png", DARK), _still(tmp_path / "bright.png", BRIGHT)
    jobs = [
        SegmentJob(dark, False, _plan(0, 20), tmp_path / "s0.mp4", fade_in_frames=5, tail_frames=crossfade),
        SegmentJob(bright, False, _plan(1, 24), tmp_path / "s1.mp4", head_frames=crossfade, tail_frames=crossfade),
        SegmentJob(dark, False, _plan(2, 20), tmp_path / "s2.mp4", head_frames=crossfade, fade_out_frames=5),
    ]
    for job in jobs:
        await _encode(job)
    parts = [jobs[0].output_path]
    for index, (before, after) in enumerate(zip(jobs, jobs[1:], strict=False)):
        assert before.tail_path is not None and after.head_path is not None
        transition = tmp_path / f"x{index}.mp4"
        argv = transition_command(
            EXE, before.tail_path, after.head_path, crossfade, OUTPUT, transition, Encoder.LIBX264
        )
        await run_ffmpeg(argv, 60)
        parts += [transition, after.output_path]
    segment_list = tmp_path / "segments.txt"
    segment_list.write_text(concat_list(parts))
    expected_frames = 20 + 24 + 20 - 2 * crossfade
    audio = tmp_path / "mix.wav"
    await run_ffmpeg(
        [EXE, "-v", "error", "-f", "lavfi", "-i", f"sine=frequency=440:duration={expected_frames / FPS}"]
        + ["-ac", "2", "-y", str(audio)],
        60,
    )
    timing = tmp_path / "captions.srt"
    timing.write_text("1\n00:00:00,100 --> 00:00:01,000\nHello.\n")
    subtitles = tmp_path / "captions.mp4"
    await run_ffmpeg(subtitle_track_command(EXE, timing, subtitles), 60)
    movie = tmp_path / "movie.mp4"
    await run_ffmpeg(mux_command(EXE, MuxJob(segment_list, audio, subtitles, movie, "Ladders: a 'safe' start")), 60)

    luma = [frame.mean() for frame in _frames(movie, "gray")]
    assert len(luma) == expected_frames == 48
    # Stream copy: every part has the same parameter sets, and the movie's packets are the parts' bytes, in order.
    header, packets = _packets(movie)
    assert all(_packets(part)[0] == header for part in parts)
    assert packets == [packet for part in parts for packet in _packets(part)[1]]
    with av.open(str(movie)) as container:
        assert container.metadata["title"] == "Ladders: a 'safe' start"
        assert container.streams.audio[0].codec_context.name == "aac"
        assert container.streams.audio[0].codec_context.sample_rate == 48000
        assert container.streams.subtitles[0].codec_context.name == "mov_text"
        assert abs(float(container.streams.video[0].duration * container.streams.video[0].time_base) - 1.6) < 0.01
    data = movie.read_bytes()
    assert data.find(b"moov") < data.find(b"mdat")  # faststart
    # Fade from black, cross-fades that step evenly between the scenes, fade to black.
    dark_y, bright_y = luma[6], luma[20]
    assert luma[0] < 20 and luma[-1] < 20 and bright_y - dark_y > 120
    first = luma[12:20]
    assert all(dark_y + 5 < y < bright_y - 5 for y in first)
    steps = np.diff([dark_y, *first, bright_y])
    assert steps.min() > 0 and steps.max() - steps.min() < 6
    middle = luma[16]
    assert abs(middle - (dark_y + bright_y) / 2) < 15
    second = luma[28:36]
    assert all(a > b for a, b in zip([bright_y, *second], [*second, luma[36]], strict=True))
    print(f"cross-fade lumas: dark {dark_y:.1f} {[round(float(y), 1) for y in first]} bright {bright_y:.1f}")


async def test_segments_at_any_thread_count_and_an_aac_soundtrack_join_by_stream_copy(tmp_path: Path) -> None:
    bright = _still(tmp_path / "bright.png", BRIGHT)
    jobs = [SegmentJob(bright, False, _plan(i, 30), tmp_path / f"s{i}.mp4", fade_in_frames=10) for i in range(3)]
    # Thread counts as encoder_threads hands them out: the first encode alone, the rest sharing, x264's own choice.
    for job, threads in zip(jobs, (2, 1, 0), strict=True):
        await encode_segment(EXE, job, OUTPUT, Encoder.LIBX264, 60, threads)
    segment_list = tmp_path / "segments.txt"
    segment_list.write_text(concat_list([job.output_path for job in jobs]))
    mix = tmp_path / "mix.wav"
    await run_ffmpeg(
        [EXE, "-v", "error", "-f", "lavfi", "-i", "sine=frequency=440:duration=3:sample_rate=48000"]
        + ["-ac", "2", "-c:a", "pcm_f32le", "-y", str(mix)],
        60,
    )
    measured = parse_measurement(await run_ffmpeg(measure_command(EXE, mix), 60))
    raw, soundtrack = tmp_path / f"soundtrack{RAW_SUFFIX}", tmp_path / f"soundtrack{SOUNDTRACK_SUFFIX}"
    await run_ffmpeg(normalize_command(EXE, mix, LoudnessTarget(), measured, raw), 60)
    await encode_aac(EXE, raw, soundtrack, 2, 60)
    movie = tmp_path / "movie.mp4"
    await run_ffmpeg(mux_command(EXE, MuxJob(segment_list, soundtrack, None, movie)), 60)

    header, packets = _packets(movie)
    assert all(_packets(job.output_path)[0] == header for job in jobs)
    assert packets == [packet for job in jobs for packet in _packets(job.output_path)[1]]
    # The soundtrack's AAC packets are the movie's, byte for byte, and both tracks last the 90 frames.
    assert _audio_packets(movie) == _audio_packets(soundtrack)
    with av.open(str(movie)) as container:
        video, audio = container.streams.video[0], container.streams.audio[0]
        assert float(video.duration * video.time_base) == float(audio.duration * audio.time_base) == 3.0


def _audio_packets(path: Path) -> list[bytes]:
    with av.open(str(path)) as container:
        return [bytes(packet) for packet in container.demux(audio=0) if packet.size]


async def test_fit_modes_fill_the_side_bars_as_named(tmp_path: Path, portrait: Path) -> None:
    frames: dict[Fit, np.ndarray] = {}
    for fit in Fit:
        job = SegmentJob(portrait, False, _plan(0, 3), tmp_path / f"{fit.value}.mp4", fit=fit, pad_color="#3050a0")
        await _encode(job)
        decoded = _frames(job.output_path)
        assert len(decoded) == 3
        frames[fit] = decoded[1]
    # The portrait fitted inside 320x180 is about 102 px wide and centred: columns 0-99 and 220-319 are side bars.
    left, right, centre = np.s_[:, 4:96], np.s_[:, 224:316], np.s_[:, 140:180]

    padded = frames[Fit.PAD_COLOR]
    for bar in (left, right):
        assert np.abs(padded[bar].mean(axis=(0, 1)) - PAD_RGB).max() < 4
        assert padded[bar].std(axis=(0, 1)).max() < 2

    blurred = frames[Fit.PAD_BLUR]
    assert np.abs(blurred[centre] - padded[centre]).mean() < 3  # the picture itself, as with a colour pad
    for bar in (left, right):
        bar_pixels = blurred[bar]
        assert bar_pixels.mean() > 30  # not black
        assert bar_pixels.std(axis=(0, 1)).max() > 4  # not one colour
        # Blurred: neighbouring pixels barely differ, unlike in the noisy picture.
        assert np.abs(np.diff(bar_pixels, axis=1)).mean() < 1.5 < 5 < np.abs(np.diff(blurred[centre], axis=1)).mean()
        # Darkened: dimmer than the picture's own middle rows it was cut from.
        assert bar_pixels.mean() < 0.7 * blurred[centre].mean()

    cropped = frames[Fit.CROP]
    # Filled edge to edge: the sides hold the picture, shading from red to blue downwards like the middle.
    for region in (left, right, centre):
        top, bottom = cropped[region][:40].mean(axis=(0, 1)), cropped[region][-40:].mean(axis=(0, 1))
        assert top[0] - bottom[0] > 40 and bottom[2] - top[2] > 40
    for bar in (left, right):
        assert np.abs(cropped[bar].mean(axis=(0, 1)) - cropped[centre].mean(axis=(0, 1))).max() < 12
    # Only the middle of the picture is kept: the top row is neither the picture's red top nor a bar.
    assert cropped[:4].mean(axis=(0, 1))[0] < 200 and cropped[:4].mean(axis=(0, 1))[2] > 60
    print(
        "bars (left, RGB mean / std): pad",
        padded[left].mean(axis=(0, 1)).round(1),
        "blur",
        blurred[left].mean(axis=(0, 1)).round(1),
        blurred[left].std(axis=(0, 1)).round(1),
        "crop",
        cropped[left].mean(axis=(0, 1)).round(1),
    )


def test_captions_find_the_cjk_font_through_the_assemblers_fontconfig_file(tmp_path: Path) -> None:
    """Given no fonts at all, fontconfig lets nothing be drawn; with `fonts.write_fontconfig`, the CJK caption is."""
    captions = tmp_path / "caption.ass"
    captions.write_text(
        "[Script Info]\nScriptType: v4.00+\nPlayResX: 320\nPlayResY: 180\n\n[V4+ Styles]\n"
        "Format: Name, Fontname, Fontsize, PrimaryColour, Bold, Alignment, MarginV\n"
        "Style: Default,Noto Sans CJK SC,30,&H00FFFFFF,0,2,10\n\n[Events]\n"
        "Format: Layer, Start, End, Style, Text\nDialogue: 0,0:00:00.00,0:00:09.00,Default,梯子安全\n"
    )
    no_fonts = tmp_path / "empty.conf"
    no_fonts.write_text('<?xml version="1.0"?>\n<fontconfig></fontconfig>\n')
    ink = {}
    for label, config in (("without", no_fonts), ("with", write_fontconfig(tmp_path / "fonts.conf"))):
        job = SegmentJob(
            _still(tmp_path / "dark.png", DARK),
            False,
            _plan(0, 2),
            tmp_path / f"{label}.mp4",
            still_runs=((2, captions),),
        )
        asyncio.run(encode_segment(EXE, job, OUTPUT, Encoder.LIBX264, 60, env={"FONTCONFIG_FILE": str(config)}))
        ink[label] = int((_frames(job.output_path, "gray")[0] > 128).sum())
    assert ink["without"] == 0 and ink["with"] > 300, ink


@pytest.mark.parametrize(
    ("size", "title", "subtitle"),
    [
        ((640, 360), "Ladders: a safe start", "Episode 3 - scenecast"),
        ((360, 640), "Ladders: a safe start on every job site, with a title that goes on and on and on", "Part two"),
        ((360, 360), "x" * 80, ""),
        ((360, 360), "梯子を安全に使うための十の習慣と現場での注意点", "第三話"),
    ],
)
async def test_card_has_the_output_size_and_ink_only_inside_the_safe_area(
    tmp_path: Path, size: tuple[int, int], title: str, subtitle: str
) -> None:
    output = OutputFormat(size[0], size[1], FPS, False, Quality.DRAFT, "custom")
    path = tmp_path / "card.png"
    render_card(title, subtitle, output, path)
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == size
        pixels = np.asarray(image.convert("RGB")).astype(np.int64)
    ink = np.abs(pixels - BACKGROUND).sum(axis=2) > 60
    rows, columns = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    assert rows.size and columns.size
    margin_x, margin_y = round(size[0] * SAFE_MARGIN_RATIO), round(size[1] * SAFE_MARGIN_RATIO)
    assert margin_x <= columns[0] and columns[-1] < size[0] - margin_x
    assert margin_y <= rows[0] and rows[-1] < size[1] - margin_y
    # Centred: the ink's left and right margins match, as do its top and bottom ones (within a few pixels).
    assert abs(columns[0] - (size[0] - 1 - columns[-1])) <= 6
    assert abs(rows[0] - (size[1] - 1 - rows[-1])) <= 12
    print(f"{size}: ink box x {columns[0]}-{columns[-1]}, y {rows[0]}-{rows[-1]}; safe from ({margin_x}, {margin_y})")
    # Encoded like any still scene.
    job = SegmentJob(path, False, _plan(0, 4), tmp_path / "card.mp4")
    await encode_segment(EXE, job, output, Encoder.LIBX264, 60)
    decoded = _frames(job.output_path)
    assert len(decoded) == 4 and decoded[0].shape == (size[1], size[0], 3)


def test_card_title_is_larger_than_its_subtitle(tmp_path: Path) -> None:
    path = tmp_path / "card.png"
    render_card("HIIH", "HIIH", OUTPUT, path)
    with Image.open(path) as image:
        ink = np.abs(np.asarray(image.convert("RGB")).astype(np.int64) - BACKGROUND).sum(axis=2) > 60
    rows = np.flatnonzero(ink.any(axis=1))
    # Two runs of inked rows (capital letters have no descenders): the title's, then the subtitle's.
    breaks = np.flatnonzero(np.diff(rows) > 1)
    assert breaks.size == 1
    title_height = rows[breaks[0]] - rows[0] + 1
    subtitle_height = rows[-1] - rows[breaks[0] + 1] + 1
    assert title_height > 1.5 * subtitle_height
    print(f"cap heights: title {title_height} px, subtitle {subtitle_height} px")


def test_auto_falls_back_to_libx264_without_nvenc() -> None:
    nvenc_works.cache_clear()
    started = time.monotonic()
    works = nvenc_works(EXE)
    probe_seconds = time.monotonic() - started
    if works:
        pytest.skip("this machine can encode with NVENC")
    assert probe_seconds < 5
    started = time.monotonic()
    assert select_encoder(EXE, "auto") is Encoder.LIBX264
    assert time.monotonic() - started < 0.05  # the probe's answer is cached
    assert select_encoder(EXE, "libx264") is Encoder.LIBX264
    with pytest.raises(FailedPrecondition, match="VIDEO_ENCODER is h264_nvenc"):
        select_encoder(EXE, "h264_nvenc")
    with pytest.raises(FailedPrecondition, match="VIDEO_ENCODER must be one of auto, libx264, h264_nvenc"):
        select_encoder(EXE, "x265")
    print(f"NVENC probe failed in {probe_seconds * 1000:.0f} ms")
