"""A finished render through the five processes: edge-style word timings, music, cross-fades, cards, 9:16.

Everything is measured on the MP4 (and its sidecars): caption times against the word boundaries the fake voice
announced, caption ink against the title-safe area, loudness with FFmpeg's ebur128, the music's level at its own
frequency while the voice speaks and while it does not, cross-fades by frame blending, and the total length.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import pysubs2
import pytest
from scenecast.v1 import render_service_pb2, types_pb2

from scenecast_cli.client import render_to_file, upload_music
from scenecast_cli.stack import LocalStack
from services.assembler import soundtrack
from services.common.media import ffmpeg_exe, run_ffmpeg
from tests.e2e.test_render import LEAD_S, TAIL_S
from tests.fakes.edge_tts_server import FakeEdgeTTS, words_of
from tests.probe import frame_at, probe_mp4

WIDTH, HEIGHT, FPS = 360, 640, 25
CROSSFADE_MS = 400
CROSSFADE_FRAMES = CROSSFADE_MS * FPS // 1000
SILENCE_PAD_MS = 50
CARD_MS = 1600  # 40 frames
MUSIC_HZ = 3000
PAD_COLOR = (0x20, 0x30, 0x40)
SCENES = [
    types_pb2.Scene(id="floor", title="Wet floors", narration="Wet floors cause slips. Look for the sign."),
    types_pb2.Scene(id="report", visual_prompt="A worker on the phone.", narration="Report every spill at once."),
    types_pb2.Scene(id="kit", title="Clean up", narration="Use the spill kit and keep others away."),
]


def _request(music_id: str, captions: bool) -> render_service_pb2.RenderRequest:
    return render_service_pb2.RenderRequest(
        scenes=SCENES,
        output=types_pb2.OutputSettings(
            aspect_ratio=types_pb2.ASPECT_RATIO_9_16,
            height=HEIGHT,
            fps=FPS,
            quality=types_pb2.QUALITY_DRAFT,
            captions=captions,
        ),
        finishing=types_pb2.Finishing(
            transition=types_pb2.TRANSITION_CROSSFADE,
            transition_ms=CROSSFADE_MS,
            fit=types_pb2.FIT_PAD_BLUR,
            pad_color="#{:02X}{:02X}{:02X}".format(*PAD_COLOR),
            caption_style=types_pb2.CaptionStyle(highlight_words=True),
            sidecars=[types_pb2.SUBTITLE_FORMAT_SRT, types_pb2.SUBTITLE_FORMAT_WEBVTT],
            silence_pad_ms=SILENCE_PAD_MS,
            title_card=types_pb2.Card(title="Slips and spills", subtitle="Safety minute", duration_ms=CARD_MS),
            end_card=types_pb2.Card(title="Thank you", duration_ms=CARD_MS),
            music=types_pb2.MusicMix(fade_ms=300),
        ),
        music=render_service_pb2.MusicSource(upload_id=music_id),
    )


@dataclass
class Render:
    path: Path
    summary: render_service_pb2.RenderSummary


@pytest.fixture(scope="module")
def renders(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Render, Render]]:
    """The finished render, and the same render without captions (to find the caption ink by difference)."""
    folder = tmp_path_factory.mktemp("finishing")
    music = folder / "bed.wav"
    subprocess.run(
        [ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i", f"sine=frequency={MUSIC_HZ}:duration=4", "-ac", "2"]
        + ["-af", "volume=-6dB", str(music)],
        check=True,
        timeout=30,
    )
    with FakeEdgeTTS() as voice:
        env = {"TTS_PROVIDER": "edge", "EDGE_TTS_WSS_URL": voice.wss_url}
        with LocalStack(env=env, log_dir=folder) as stack:
            music_id = upload_music(stack.gateway_address, music, "audio/wav").upload_id
            finished, reference = (
                Render(folder / f"{name}.mp4", summary)
                for name, captions in (("finished", True), ("reference", False))
                for summary in [
                    render_to_file(
                        stack.gateway_address, _request(music_id, captions), folder / f"{name}.mp4", timeout_seconds=120
                    )
                ]
            )
            yield finished, reference


def _scene_frames(scene: types_pb2.Scene) -> int:
    """Frames the assembler plans for a scene voiced by the fake: lead, the kept speech, tail."""
    words = words_of(scene.narration)
    # Speech runs from the first word's start to the last word's end; the silence trim keeps SILENCE_PAD_MS of
    # silence on each side.
    kept_ms = words[-1].end_ms - words[0].start_ms + 2 * SILENCE_PAD_MS
    return -(-(round(LEAD_S * 1000) + kept_ms + round(TAIL_S * 1000)) * FPS // 1000)


def test_total_length_is_cards_plus_scenes_less_the_cross_fades(renders: tuple[Render, Render]) -> None:
    finished, _ = renders
    card_frames = CARD_MS * FPS // 1000
    pieces = [card_frames, *(_scene_frames(scene) for scene in SCENES), card_frames]
    expected_s = (sum(pieces) - (len(pieces) - 1) * CROSSFADE_FRAMES) / FPS
    probed = probe_mp4(finished.path)
    assert (probed.video_codec, probed.width, probed.height, probed.audio_codec) == ("h264", WIDTH, HEIGHT, "aac")
    # Each scene's kept speech is found from the audio (within a 10 ms window), so allow a frame per scene.
    assert abs(probed.video_duration_s - expected_s) <= len(SCENES) / FPS
    assert abs(finished.summary.duration_ms / 1000 - probed.video_duration_s) < 1 / FPS
    assert abs(probed.audio_duration_s - probed.video_duration_s) < 0.05


def test_captions_start_and_end_on_the_word_boundaries(renders: tuple[Render, Render]) -> None:
    finished, _ = renders
    sidecars = {file.format: file.text for file in finished.summary.subtitles}
    assert set(sidecars) == {types_pb2.SUBTITLE_FORMAT_SRT, types_pb2.SUBTITLE_FORMAT_WEBVTT}
    srt = pysubs2.SSAFile.from_string(sidecars[types_pb2.SUBTITLE_FORMAT_SRT], format_="srt")
    vtt = sidecars[types_pb2.SUBTITLE_FORMAT_WEBVTT]
    assert vtt.startswith("WEBVTT") and vtt.count(" --> ") == len(srt)
    assert len(probe_mp4(finished.path).subtitle_texts) == len(srt)
    assert (
        " ".join(event.plaintext.replace("\n", " ") for event in srt).split()
        == " ".join(scene.narration for scene in SCENES).split()
    )

    # Where the fake voice says each word on the video's timeline: the scene's start, its lead, then the word's
    # offset in the audio less the silence trimmed before the first word.
    starts, ends = [], []
    for scene, report in zip(SCENES, finished.summary.scenes, strict=True):
        scene_start_ms = report.start_ms
        words = words_of(scene.narration)
        trimmed_ms = words[0].start_ms - SILENCE_PAD_MS
        base = scene_start_ms + LEAD_S * 1000 - trimmed_ms
        starts += [base + word.start_ms for word in words]
        ends += [base + word.end_ms for word in words]
    for event in srt:
        assert min(abs(event.start - ms) for ms in starts) <= 100, event
        assert min(abs(event.end - ms) for ms in ends) <= 100, event
    # The first caption of each scene starts with its first word.
    for report in finished.summary.scenes:
        first = min(event.start for event in srt if event.start >= report.start_ms)
        assert min(abs(first - ms) for ms in starts) <= 100


def test_caption_ink_stays_in_the_title_safe_area_and_highlights_a_word(renders: tuple[Render, Render]) -> None:
    finished, reference = renders
    srt = pysubs2.SSAFile.from_string(
        next(f.text for f in finished.summary.subtitles if f.format == types_pb2.SUBTITLE_FORMAT_SRT), format_="srt"
    )
    highlighted = 0
    for event in srt:
        seconds = (event.start + event.end) / 2000
        captioned = frame_at(finished.path, seconds).astype(np.int16)
        plain = frame_at(reference.path, seconds).astype(np.int16)
        ink = np.abs(captioned - plain).max(axis=2) > 60
        assert ink.sum() > 100, event.plaintext
        columns = np.flatnonzero(ink.any(axis=0))
        rows = np.flatnonzero(ink.any(axis=1))
        # Title-safe: the central 80% of the width; and in the lower part of the frame, above the bottom 10%.
        assert columns.min() >= 0.1 * WIDTH - 2 and columns.max() <= 0.9 * WIDTH + 2, (event.plaintext, columns)
        assert rows.min() >= 0.5 * HEIGHT and rows.max() <= 0.9 * HEIGHT, (event.plaintext, rows)
        red, green, blue = (captioned[..., channel][ink] for channel in range(3))
        highlighted += int(((red > 200) & (green > 160) & (blue < 110)).sum())
    assert highlighted > 50


def _level_db(samples: np.ndarray, rate: int, hertz: float, start_s: float, end_s: float) -> float:
    """Level of one frequency over a stretch of audio (a single DFT bin), in dB relative to full scale."""
    part = samples[int(start_s * rate) : int(end_s * rate)]
    phase = np.exp(-2j * np.pi * hertz * np.arange(len(part)) / rate)
    return float(20 * np.log10(2 * abs(np.dot(part, phase)) / len(part) + 1e-12))


def _mono(path: Path) -> tuple[np.ndarray, int]:
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="flt", layout="mono", rate=stream.codec_context.sample_rate)
        chunks = [out.to_ndarray().ravel() for frame in container.decode(stream) for out in resampler.resample(frame)]
        return np.concatenate(chunks), stream.codec_context.sample_rate


def test_music_ducks_under_the_voice_and_the_mix_is_normalised(renders: tuple[Render, Render]) -> None:
    finished, _ = renders
    samples, rate = _mono(finished.path)
    # The title card has music only; in the first scene, the fake voice's first word is a 440 Hz tone.
    card = _level_db(samples, rate, MUSIC_HZ, 0.5, 1.0)
    word = words_of(SCENES[0].narration)[0]
    speaking_s = ([scene.start_ms for scene in finished.summary.scenes][0] + LEAD_S * 1000 + SILENCE_PAD_MS) / 1000
    under_voice = _level_db(
        samples, rate, MUSIC_HZ, speaking_s + 0.1, speaking_s + (word.end_ms - word.start_ms) / 1000
    )
    assert _level_db(samples, rate, 440, speaking_s + 0.1, speaking_s + 0.25) > card - 10  # the voice is there
    assert under_voice < card - 6, (card, under_voice)

    stderr = asyncio.run(run_ffmpeg(soundtrack.measure_command(ffmpeg_exe(), finished.path), 60))
    measured = soundtrack.parse_measurement(stderr)
    assert abs(measured.integrated_lufs - -16.0) <= 1.0, measured
    assert measured.true_peak_dbtp <= -1.0, measured
    assert abs(finished.summary.integrated_lufs - measured.integrated_lufs) <= 1.0


def test_scenes_cross_fade_and_cards_frame_the_video(renders: tuple[Render, Render]) -> None:
    _, reference = renders
    # Each boundary: the frame in the middle of the cross-fade is the average of the frames on either side.
    boundaries = [*(scene.start_ms for scene in reference.summary.scenes), reference.summary.duration_ms - CARD_MS]
    for start_ms in boundaries:
        start_s = start_ms / 1000
        before = frame_at(reference.path, start_s - 1.5 / FPS).astype(np.float64)
        middle = frame_at(reference.path, start_s + (CROSSFADE_FRAMES / 2 - 0.5) / FPS).astype(np.float64)
        after = frame_at(reference.path, start_s + (CROSSFADE_FRAMES + 0.5) / FPS).astype(np.float64)
        change = np.abs(after - before).mean()
        assert change > 3, start_ms
        assert np.abs(middle - (before + after) / 2).mean() < 0.35 * change, start_ms
        assert np.abs(middle - before).mean() > 0.25 * change and np.abs(middle - after).mean() > 0.25 * change
    # The cards: their background colour in the corners, title ink in the middle.
    for seconds in (0.8, reference.summary.duration_ms / 1000 - 0.8):
        card = frame_at(reference.path, seconds).astype(np.int16)
        assert np.abs(card[5, 5] - PAD_COLOR).max() <= 10 and np.abs(card[-5, -5] - PAD_COLOR).max() <= 10
        assert (card[HEIGHT // 3 : 2 * HEIGHT // 3].min(axis=2) > 200).sum() > 100
