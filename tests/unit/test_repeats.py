"""repeats.fill: a held still's repeats written as H.264 pictures of skips, checked on real encodes by decoding."""

from __future__ import annotations

import dataclasses
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from services.assembler import repeats
from services.assembler.encoding import encode_segment
from services.assembler.ffmpeg import (
    Encoder,
    SegmentJob,
    body_frames_shown,
    encoded_frames,
    faded_frames,
    faded_in_runs,
    segment_command,
)
from services.assembler.h264 import StreamParameters
from services.assembler.plan import ScenePlan
from services.common.errors import MediaError
from services.common.media import ffmpeg_exe
from services.common.output import OutputFormat
from services.common.providers import Quality
from tests.probe import h264_header_fields, psnr

EXE = ffmpeg_exe()
FPS = 30
WIDTH, HEIGHT = 320, 180


@dataclass(frozen=True)
class _Slice:
    idr: bool
    reference: bool
    frame_num: int
    poc_lsb: int | None


def _detailed_still(path: Path) -> Path:
    """A gradient with text-like dark blocks and blotchy noise: real work for x264, unlike a flat colour."""
    rows, cols = np.mgrid[0:HEIGHT, 0:WIDTH]
    picture = np.stack([cols * 255 / WIDTH, rows * 255 / HEIGHT, np.full_like(rows, 120)], axis=2).astype(float)
    for top in range(20, HEIGHT - 20, 24):
        for left in range(16, WIDTH - 40, 36):
            picture[top : top + 12, left : left + 4 + (left * 7 + top) % 26] = 20
    blotches = np.random.default_rng(5).normal(0, 25, (HEIGHT // 4, WIDTH // 4, 1))
    picture += np.kron(blotches, np.ones((4, 4, 1)))
    Image.fromarray(np.clip(picture, 0, 255).astype(np.uint8)).save(path)
    return path


def _decoded(path: Path) -> tuple[list[Fraction], list[np.ndarray]]:
    """Each frame's time and yuv420p planes."""
    with av.open(str(path)) as container:
        frames = list(container.decode(video=0))
    return [frame.pts * frame.time_base for frame in frames], [frame.to_ndarray(format="yuv420p") for frame in frames]


def _strict_slice_headers(path: Path) -> tuple[int, list[_Slice]]:
    """Decodes `path` with every error fatal, traces its headers, and returns log2_max_frame_num and each slice in
    decoding order; asserts that neither run complains."""
    slices: list[_Slice] = []
    fields: dict[str, int] = {}
    for name, value in h264_header_fields(path):
        if name == "nal_ref_idc":
            fields = {}
        fields[name] = value
        if name == "frame_num" and fields["nal_unit_type"] in (1, 5):
            slices.append(_Slice(fields["nal_unit_type"] == 5, fields["nal_ref_idc"] > 0, value, None))
        elif name == "pic_order_cnt_lsb":
            slices[-1] = dataclasses.replace(slices[-1], poc_lsb=value)
    return _parameters(path).log2_max_frame_num, slices


def _parameters(path: Path) -> StreamParameters:
    with av.open(str(path)) as container:
        return StreamParameters.from_avcc(bytes(container.streams.video[0].codec_context.extradata))


def _check_filled(
    body: Path,
    pictures: Path,
    shown: list[int],
    frames: int,
    faded: Mapping[int, int] | None = None,
    fade_base: Path | None = None,
    fade_ins: Sequence[repeats.Fade] = (),
) -> list[np.ndarray]:
    """Asserts that `body` is `frames` long at FPS, frame `shown[k]` being picture k of `pictures`, every frame of
    `faded` the one before as the decoder weighs it (by the weights fitted on `fade_base`), every frame of each of
    `fade_ins` but its last that last one weighed (fitted on its base), every other frame an exact copy of the one
    before; that frame_num counts reference pictures since the last IDR, wrapping, and that a reordering stream's
    picture order counts give each picture's place in display order."""
    faded = dict(faded or {})
    times, decoded = _decoded(body)
    assert times == [Fraction(frame, FPS) for frame in range(frames)]
    _, encoded = _decoded(pictures)
    fading = sorted(faded)
    chain = repeats.fade_weights(_histograms(fade_base), [faded[frame] for frame in fading]) if faded else []
    weights = dict(zip(fading, chain, strict=True))
    weighed: dict[int, int] = {}  # a fade-in frame: the frame it weighs
    for fade_in in fade_ins:
        *fading_in, last = sorted(fade_in.factors)
        factors = [fade_in.factors[frame] for frame in fading_in]
        fitted = repeats.fade_weights(
            _histograms(fade_in.base), factors, chain=False, reference_factor=fade_in.factors[last]
        )
        weights.update(zip(fading_in, fitted, strict=True))
        weighed.update(dict.fromkeys(fading_in, last))
    for frame, picture in enumerate(decoded):
        if frame in shown:
            expected = encoded[shown.index(frame)]
        elif frame in faded:
            expected = _weighted(decoded[frame - 1], weights[frame])
        elif frame in weighed:
            expected = _weighted(decoded[weighed[frame]], weights[frame])
        else:
            expected = decoded[frame - 1]
        assert np.array_equal(picture, expected), f"frame {frame} of {frames} (shown: {frame in shown})"
    log2_max_frame_num, slices = _strict_slice_headers(body)
    assert len(slices) == frames  # one slice per picture, x264's and the skips alike
    with av.open(str(body)) as container:
        stream = container.streams.video[0]
        decoding = [int(packet.pts * stream.time_base * FPS) for packet in container.demux(stream) if packet.size]
    references = idr_frame = 0
    for frame, piece in zip(decoding, slices, strict=True):
        if piece.idr:
            references, idr_frame = 0, frame
        assert piece.frame_num == references % 2**log2_max_frame_num, f"frame {frame}"
        references += piece.reference
        reordering = _parameters(body).poc_type == 0
        assert (piece.poc_lsb is not None) == reordering
        if reordering:
            assert piece.poc_lsb == 2 * (frame - idr_frame) % 2**16, f"frame {frame}"
    return decoded


def _histograms(raw: Path | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixels per value of each plane of a raw yuv420p picture WIDTH x HEIGHT."""
    assert raw is not None
    samples = np.fromfile(raw, np.uint8)
    y, cb, cr = np.split(samples, [WIDTH * HEIGHT, WIDTH * HEIGHT * 5 // 4])
    return np.bincount(y, minlength=256), np.bincount(cb, minlength=256), np.bincount(cr, minlength=256)


def _weighted(picture: np.ndarray, weights: repeats.Weights) -> np.ndarray:
    """H.264's explicit weighted prediction (8.4.2.3.2, denominator 128) of a yuv420p picture from to_ndarray."""
    flat = picture.astype(np.int64).ravel()
    planes = np.split(flat, [WIDTH * HEIGHT, WIDTH * HEIGHT * 5 // 4])
    out = []
    for plane, weight in zip(planes, (weights.luma, weights.cb, weights.cr), strict=True):
        w, o = weight if weight is not None else (128, 0)
        out.append(np.clip(((plane * w + 64) >> 7) + o, 0, 255))
    return np.concatenate(out).astype(np.uint8).reshape(picture.shape)


def _faded(picture: np.ndarray, factor: int) -> np.ndarray:
    """FFmpeg's fade filter (vf_fade.c, 8-bit studio range) on a yuv420p picture from to_ndarray."""
    flat = picture.astype(np.int64).ravel()
    luma, chroma = flat[: WIDTH * HEIGHT], flat[WIDTH * HEIGHT :]
    luma = ((luma - 16) * factor + (16 << 16) + 32768) >> 16
    chroma = ((chroma - 128) * factor + (128 << 16) + 32768 - 9) >> 16
    return np.concatenate([luma, chroma]).reshape(picture.shape)


def _x264(path: Path, frames: int, *options: str, size: str = f"{WIDTH}x{HEIGHT}") -> Path:
    """`frames` moving pictures encoded by libx264 without B-frames into MP4 (a stand-in for a encoded_path)."""
    source = ["-f", "lavfi", "-i", f"testsrc2=size={size}:rate={FPS}"]
    argv = [EXE, "-hide_banner", "-nostdin", "-loglevel", "error", "-y", *source, "-frames:v", str(frames)]
    subprocess.run([*argv, "-c:v", "libx264", "-bf", "0", *options, "-pix_fmt", "yuv420p", str(path)], check=True)
    return path


def _lossless(job: SegmentJob) -> list[np.ndarray]:
    """The job's frames as the filters draw them, before any encoder: scaled, yuv420p, faded."""
    frames, fade_out = job.plan.frames, job.plan.frames - job.fade_out_frames
    fades = f"fade=in:0:{job.fade_in_frames},fade=out:{fade_out}:{job.fade_out_frames}"
    graph = f"scale={WIDTH}:{HEIGHT},setsar=1,format=yuv420p,{fades}"
    argv = [EXE, "-hide_banner", "-nostdin", "-loglevel", "error", "-loop", "1", "-i", str(job.visual), "-vf", graph]
    raw = subprocess.run([*argv, "-frames:v", str(frames), "-f", "rawvideo", "-"], capture_output=True, check=True)
    return list(np.frombuffer(raw.stdout, np.uint8).reshape(frames, HEIGHT * 3 // 2, WIDTH))


@pytest.mark.parametrize("quality", [Quality.STANDARD, Quality.DRAFT])
async def test_a_filled_still_repeats_exactly_keeps_x264s_pictures_and_decodes_strictly(
    tmp_path: Path, quality: Quality
) -> None:
    """Standard quality is x264's veryfast (CABAC skips), draft its ultrafast (CAVLC skips)."""
    output = OutputFormat(WIDTH, HEIGHT, FPS, False, quality, "16:9")
    plan = ScenePlan(index=0, frames=75, fps=FPS, lead_ms=0, cues=())
    runs = ((20, None), (30, None), (25, None))
    still = _detailed_still(tmp_path / "still.png")
    job = SegmentJob(still, False, plan, tmp_path / "body.mp4", still_runs=runs, fade_in_frames=4, fade_out_frames=5)
    await encode_segment(EXE, job, output, Encoder.LIBX264, 60, threads=1)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["body.mp4", "still.png"]
    # The distinct pictures again, as encode_segment had them before filling (x264 is deterministic).
    subprocess.run(segment_command(EXE, job, output, Encoder.LIBX264, threads=1), check=True)
    assert body_frames_shown(job) == [0, 1, 2, 3, 4, 20, 50, 70, 71, 72, 73, 74]
    # At standard quality the fade-out after its first frame (factor 1: the held picture) is weighted skips, and so
    # is the fade-in between black and its last frame (at full brightness), decoded after that one.
    faded, faded_in = faded_frames(job, output), faded_in_runs(job, output)
    standard = quality is Quality.STANDARD
    assert faded == ({71: 52428, 72: 39321, 73: 26214, 74: 13107} if standard else {})
    assert faded_in == ([{1: 16384, 2: 32768, 3: 49152, 4: 65535}] if standard else [])
    encoded = encoded_frames(job, output)
    assert encoded == ([0, 4, 20, 50, 70] if standard else [0, 1, 2, 3, 4, 20, 50, 70, 71, 72, 73, 74])
    decoded = _check_filled(
        job.output_path,
        job.encoded_path,
        encoded,
        job.body_frames,
        faded,
        job.fade_out_base_path,
        [repeats.Fade(frames, job.fade_in_base_path(run)) for run, frames in enumerate(faded_in)],
    )
    # Measured: standard 44.8 dB at worst (the held picture: x264's second, an I picture after black, with twice
    # the bits as held; 39.1 dB without them, 35.8 dB as a P picture after an encoded fade-in), draft (CRF 28)
    # 34.1 dB; the first frame is black, exact.
    lossless = _lossless(job)
    psnrs = [psnr(a, b) for a, b in zip(decoded, lossless, strict=True)]
    sizes = job.encoded_path.stat().st_size, job.output_path.stat().st_size
    print(f"{quality.name}: PSNR min {min(psnrs):.1f} dB, median {np.median(psnrs):.1f} dB, shown/body bytes {sizes}")
    assert min(psnrs) >= {Quality.STANDARD: 43, Quality.DRAFT: 33}[quality]
    # A weighted fade frame is FFmpeg's fade of the held picture as decoded, within two levels.
    for frame, factor in faded.items():
        assert np.abs(decoded[frame].astype(int) - _faded(decoded[70], factor)).max() <= 2, frame
    for frame, factor in (faded_in[0] if faded_in else {}).items():
        assert np.abs(decoded[frame].astype(int) - _faded(decoded[4], factor)).max() <= 2, frame


async def test_a_fade_in_across_a_caption_change_weighs_the_last_frame_of_each_run(tmp_path: Path) -> None:
    output = OutputFormat(WIDTH, HEIGHT, FPS, False, Quality.STANDARD, "16:9")
    plan = ScenePlan(index=0, frames=60, fps=FPS, lead_ms=0, cues=())
    runs = ((3, None), (40, None), (17, None))
    still = _detailed_still(tmp_path / "still.png")
    job = SegmentJob(still, False, plan, tmp_path / "body.mp4", still_runs=runs, fade_in_frames=8, fade_out_frames=4)
    await encode_segment(EXE, job, output, Encoder.LIBX264, 60, threads=1)
    subprocess.run(segment_command(EXE, job, output, Encoder.LIBX264, threads=1), check=True)
    by_run = faded_in_runs(job, output)
    assert [sorted(frames) for frames in by_run] == [[1, 2], [3, 4, 5, 6, 7, 8]]
    assert encoded_frames(job, output) == [0, 2, 8, 43, 56]
    fade_ins = [repeats.Fade(frames, job.fade_in_base_path(run)) for run, frames in enumerate(by_run)]
    encoded, faded = encoded_frames(job, output), faded_frames(job, output)
    decoded = _check_filled(job.output_path, job.encoded_path, encoded, 60, faded, job.fade_out_base_path, fade_ins)
    # Frame 2 is x264's frame faded to 2/8; each of 3 to 7 is the full picture of frame 8 faded, within two levels.
    for frame, factor in by_run[1].items():
        assert np.abs(decoded[frame].astype(int) - _faded(decoded[8], factor)).max() <= 2, frame
    lossless = _lossless(job)
    assert min(psnr(a, b) for a, b in zip(decoded, lossless, strict=True)) >= 35


async def test_a_stream_fill_refuses_is_encoded_again_with_every_frame(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """What an FFmpeg whose x264 wrote a stream repeats.fill does not know would cost: the speed, not the render."""

    def refuse(*_: object, **__: object) -> None:
        raise MediaError("the H.264 stream has 2 parameter sets of a kind; one is supported")

    monkeypatch.setattr(repeats, "fill", refuse)
    output = OutputFormat(WIDTH, HEIGHT, FPS, False, Quality.STANDARD, "16:9")
    plan = ScenePlan(index=3, frames=40, fps=FPS, lead_ms=0, cues=())
    still = _detailed_still(tmp_path / "still.png")
    job = SegmentJob(still, False, plan, tmp_path / "body.mp4", fade_in_frames=4, fade_out_frames=3)
    await encode_segment(EXE, job, output, Encoder.LIBX264, 60, threads=1)
    assert not job.encoded_path.exists()
    times, decoded = _decoded(job.output_path)
    assert times == [Fraction(frame, FPS) for frame in range(40)]
    psnrs = [psnr(a, b) for a, b in zip(decoded, _lossless(job), strict=True)]
    assert min(psnrs) >= 36
    assert "scene 3: repeats not written as skips (the H.264 stream has 2 parameter sets" in caplog.text


@pytest.mark.parametrize("preset", ["veryfast", "ultrafast"])
def test_frame_num_wraps_around_in_a_long_held_run(tmp_path: Path, preset: str) -> None:
    source = _x264(tmp_path / "shown.mp4", 5, "-preset", preset)
    shown, frames = [0, 1, 150, 151, 199], 200
    repeats.fill(source, shown, frames, FPS, tmp_path / "body.mp4")
    _check_filled(tmp_path / "body.mp4", source, shown, frames)
    log2_max_frame_num = _parameters(tmp_path / "body.mp4").log2_max_frame_num
    # x264 writes the smallest field it may (16 frames with one reference): the held run wraps it several times.
    assert 2**log2_max_frame_num * 4 < 150
    print(f"{preset}: frame_num wraps every {2**log2_max_frame_num} frames")


@pytest.mark.parametrize("preset", ["veryfast", "ultrafast"])
def test_a_full_hd_picture_of_skips_copies_the_one_before(tmp_path: Path, preset: str) -> None:
    """8160 macroblocks: CABAC's skip flag runs long past the most probable state, CAVLC's skip run is long."""
    source = _x264(tmp_path / "shown.mp4", 3, "-preset", preset, size="1920x1080")
    shown, frames = [0, 5, 6], 8
    repeats.fill(source, shown, frames, FPS, tmp_path / "body.mp4")
    _check_filled(tmp_path / "body.mp4", source, shown, frames)


@pytest.mark.parametrize("preset", ["veryfast", "ultrafast"])
def test_an_idr_in_the_middle_restarts_frame_num_and_repeats_stay_exact(tmp_path: Path, preset: str) -> None:
    source = _x264(tmp_path / "shown.mp4", 12, "-preset", preset, "-x264-params", "keyint=5:min-keyint=5:scenecut=0")
    shown, frames = [0, 3, 4, 9, 10, 11, 20, 21, 22, 30, 31, 40], 60
    repeats.fill(source, shown, frames, FPS, tmp_path / "body.mp4")
    _check_filled(tmp_path / "body.mp4", source, shown, frames)
    _, slices = _strict_slice_headers(tmp_path / "body.mp4")
    # Pictures 0, 5 and 10 are IDRs: frames 0, 11 and 31.
    assert [frame for frame, piece in enumerate(slices) if piece.idr] == [0, 11, 31]


def test_a_stream_with_several_reference_frames_is_refused(tmp_path: Path) -> None:
    source = _x264(tmp_path / "medium.mp4", 4, "-preset", "medium")
    assert _parameters(source).max_reference_frames == 3
    with pytest.raises(MediaError, match="one reference frame; the stream has 3"):
        repeats.fill(source, [0, 1, 2, 3], 10, FPS, tmp_path / "body.mp4")
    # Checked before anything is written: PyAV creates the file only when the first packet is muxed.
    assert not (tmp_path / "body.mp4").exists()


@pytest.mark.parametrize("shown", [[0, 1, 2], [0, 1, 2, 3, 5]], ids=["more-pictures", "fewer-pictures"])
def test_a_stream_with_more_or_fewer_pictures_than_shown_is_refused(tmp_path: Path, shown: list[int]) -> None:
    source = _x264(tmp_path / "shown.mp4", 4, "-preset", "veryfast")
    with pytest.raises(MediaError, match="pictures"):
        repeats.fill(source, shown, 10, FPS, tmp_path / "body.mp4")


def test_a_stream_refused_after_muxing_began_leaves_no_target_behind(tmp_path: Path) -> None:
    source = _x264(tmp_path / "shown.mp4", 4, "-preset", "veryfast")
    with pytest.raises(MediaError):
        repeats.fill(source, [0, 1, 2], 10, FPS, tmp_path / "body.mp4")
    assert not (tmp_path / "body.mp4").exists()


@pytest.mark.parametrize(
    "shown",
    [[], [1, 2], [0, 3, 2], [0, 2, 2], [0, 10], [0, 4, 12]],
    ids=["empty", "not-from-0", "descending", "repeated", "at-the-end", "past-the-end"],
)
def test_shown_frames_that_do_not_rise_from_0_within_the_body_are_refused(tmp_path: Path, shown: list[int]) -> None:
    with pytest.raises(ValueError, match="encoded frames .* do not start at 0 and rise within 10 frames"):
        repeats.fill(tmp_path / "missing.mp4", shown, 10, FPS, tmp_path / "body.mp4")
    assert not (tmp_path / "body.mp4").exists()


def _histogram(values: list[int]) -> np.ndarray:
    return np.bincount(np.array(values), minlength=256)


@pytest.mark.parametrize(
    "histograms",
    [
        (_histogram(list(range(256))), _histogram(list(range(256))), _histogram(list(range(256)))),
        (_histogram([16] * 5 + [235] * 95), _histogram([128]), _histogram([126, 127])),
        (_histogram(list(range(40, 90))), _histogram(list(range(120, 131))), _histogram([0, 255])),
    ],
    ids=["every-value", "text-on-white-grey", "dark-narrow-extreme"],
)
@pytest.mark.parametrize("frames", [2, 12, 25])
def test_a_weighted_fade_stays_within_a_few_levels_of_the_fade_filter_for_any_picture(
    histograms: tuple[np.ndarray, np.ndarray, np.ndarray], frames: int
) -> None:
    """Each picture scales the one before; the decoder's integer arithmetic (8.4.2.3.2, written here again) on every
    value a plane holds lands within two levels of FFmpeg's fade of that value, three for a plane holding all 256
    over 25 frames (values the rounding has merged stay merged)."""
    factors = [0xFFFF - min(0xFFFF, step * ((1 << 16) // frames)) for step in range(1, frames)]
    levels = [np.arange(256, dtype=np.int64) for _ in range(3)]
    for factor, weights in zip(factors, repeats.fade_weights(histograms, factors), strict=True):
        planes = (weights.luma, weights.cb, weights.cr)
        assert (weights.cb is None) == (weights.cr is None)  # one flag for both chroma planes
        for plane, (counts, weight) in enumerate(zip(histograms, planes, strict=True)):
            if weight is not None:
                w, o = weight
                assert -128 <= w <= 127 and -128 <= o <= 127
                levels[plane] = np.clip(((levels[plane] * w + 64) >> 7) + o, 0, 255)
            values = np.flatnonzero(counts)
            if plane:
                target = ((values - 128) * factor + (128 << 16) + 32768 - 9) >> 16
            else:
                target = np.clip(((values - 16) * factor + (16 << 16) + 32768) >> 16, 0, 255)
            assert np.abs(levels[plane][values] - target).max() <= (3 if counts.all() else 2), (factor, plane)


def test_at_a_variable_rate_only_pictures_are_written_each_lasting_until_the_next(tmp_path: Path) -> None:
    source = _x264(tmp_path / "shown.mp4", 3, "-preset", "veryfast")
    base = tmp_path / "base.yuv"
    subprocess.run(
        [
            EXE,
            "-v",
            "error",
            "-i",
            str(source),
            "-vf",
            "select=eq(n\\,2)",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "yuv420p",
            str(base),
        ],
        check=True,
    )
    fade_out = repeats.Fade({8: 43690, 9: 21845}, base)
    repeats.fill(source, [0, 4, 7], 10, FPS, tmp_path / "body.mp4", fade_out=fade_out, variable=True)
    with av.open(str(tmp_path / "body.mp4")) as container:
        packets = [
            (packet.pts * packet.time_base * FPS, packet.duration * packet.time_base * FPS)
            for packet in container.demux(video=0)
            if packet.size
        ]
    assert packets == [(0, 4), (4, 3), (7, 1), (8, 1), (9, 1)]  # in frames
    times, decoded = _decoded(tmp_path / "body.mp4")
    assert times == [Fraction(frame, FPS) for frame in (0, 4, 7, 8, 9)]
    _, pictures = _decoded(source)
    assert [np.array_equal(a, b) for a, b in zip(decoded, pictures, strict=False)] == [True] * 3
    weights = repeats.fade_weights(_histograms(base), [43690, 21845])
    assert np.array_equal(decoded[3], _weighted(decoded[2], weights[0]))
    assert np.array_equal(decoded[4], _weighted(decoded[3], weights[1]))
    _strict_slice_headers(tmp_path / "body.mp4")


def test_a_fade_without_weighted_prediction_or_its_first_picture_is_refused_and_leaves_nothing(tmp_path: Path) -> None:
    ultrafast = _x264(tmp_path / "ultrafast.mp4", 3, "-preset", "ultrafast")
    veryfast = _x264(tmp_path / "veryfast.mp4", 3, "-preset", "veryfast")
    short = tmp_path / "short.yuv"
    short.write_bytes(bytes(100))
    fade_out = repeats.Fade({3: 32767}, short)
    with pytest.raises(MediaError, match="no weighted prediction"):
        repeats.fill(ultrafast, [0, 1, 2], 4, FPS, tmp_path / "body.mp4", fade_out=fade_out)
    with pytest.raises(MediaError, match="100 bytes, not a 320x180 yuv420p picture"):
        repeats.fill(veryfast, [0, 1, 2], 4, FPS, tmp_path / "body.mp4", fade_out=fade_out)
    with pytest.raises(ValueError, match="do not run from after the last encoded to 4"):
        repeats.fill(veryfast, [0, 1, 2], 4, FPS, tmp_path / "body.mp4", fade_out=repeats.Fade({2: 1, 3: 0}, short))
    fade_ins = [repeats.Fade({1: 21845, 2: 43690}, short)]
    with pytest.raises(ValueError, match="do not run to an encoded frame, 2"):
        repeats.fill(veryfast, [0, 3], 4, FPS, tmp_path / "body.mp4", fade_ins=fade_ins, reordering=True)
    with pytest.raises(ValueError, match="needs a reordering stream"):
        repeats.fill(veryfast, [0, 2], 4, FPS, tmp_path / "body.mp4", fade_ins=fade_ins)
    assert not (tmp_path / "body.mp4").exists()


def test_at_a_variable_rate_a_fade_in_is_decoded_after_the_picture_it_fades_into(tmp_path: Path) -> None:
    source = _x264(tmp_path / "shown.mp4", 3, "-preset", "veryfast")
    base = tmp_path / "base.yuv"
    subprocess.run(
        [EXE, "-v", "error", "-i", str(source), "-vf", "select=eq(n\\,1)", "-f", "rawvideo", str(base)], check=True
    )
    factors = {1: 16384, 2: 32768, 3: 49152, 4: 65535}
    fade_ins = [repeats.Fade(factors, base)]
    repeats.fill(source, [0, 4, 7], 10, FPS, tmp_path / "body.mp4", fade_ins=fade_ins, variable=True, reordering=True)
    with av.open(str(tmp_path / "body.mp4")) as container:
        stream = container.streams.video[0]
        packets = [
            (int(packet.pts * stream.time_base * FPS), int(packet.dts * stream.time_base * FPS))
            for packet in container.demux(stream)
            if packet.size
        ]
        duration = stream.duration * stream.time_base
    # (shown, decoded) in frames, in decoding order: the last decoded a frame before it is shown, so that the
    # track's decoding span ends where its display does, the body's 10 frames.
    assert packets == [(0, -1), (4, 0), (1, 1), (2, 2), (3, 3), (7, 6)]
    assert duration == Fraction(10, FPS)
    times, decoded = _decoded(tmp_path / "body.mp4")
    assert times == [Fraction(frame, FPS) for frame in (0, 1, 2, 3, 4, 7)]
    _, pictures = _decoded(source)
    assert [np.array_equal(decoded[k], pictures[n]) for k, n in ((0, 0), (4, 1), (5, 2))] == [True] * 3
    weights = repeats.fade_weights(_histograms(base), [16384, 32768, 49152], chain=False, reference_factor=65535)
    for frame, weight in zip((1, 2, 3), weights, strict=True):
        assert np.array_equal(decoded[frame], _weighted(decoded[4], weight)), frame
        assert np.abs(decoded[frame].astype(int) - _faded(decoded[4], factors[frame])).max() <= 2, frame
    _strict_slice_headers(tmp_path / "body.mp4")
