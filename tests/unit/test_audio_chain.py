"""The audio finishing chain run through real FFmpeg on synthetic speech and music, with every result measured."""

from __future__ import annotations

import re
from pathlib import Path

import av
import numpy as np
import pytest

from services.assembler.mux import encode_aac
from services.assembler.soundtrack import (
    RAW_SUFFIX,
    SAMPLE_RATE,
    SOUNDTRACK_SUFFIX,
    AacPart,
    AacPlan,
    LoudnessTarget,
    MusicBed,
    SceneAudio,
    aac_part_command,
    aac_plan,
    kept_span,
    measure_command,
    mix_command,
    mix_samples,
    normalize_command,
    parse_measurement,
    speech_bounds,
)
from services.common.errors import InvalidArgument, MediaError
from services.common.media import ffmpeg_exe, run_ffmpeg

EXE = ffmpeg_exe()
TIMEOUT_S = 60.0
MUSIC_HZ = 3000.0
FPS = 30


def _write(path: Path, samples: np.ndarray, rate: int = SAMPLE_RATE) -> Path:
    """A mono 32-bit float WAV, so that levels above full scale survive."""
    with av.open(str(path), "w", format="wav") as container:
        stream = container.add_stream("pcm_f32le", rate=rate, layout="mono")
        frame = av.AudioFrame.from_ndarray(samples.astype(np.float32).reshape(1, -1), format="flt", layout="mono")
        frame.sample_rate = rate
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    return path


def _speech(seconds: float, peak: float, rate: int = SAMPLE_RATE) -> np.ndarray:
    """Speech-like sound: a 150 Hz voice with harmonics, its level moving at a syllable rate, never silent."""
    t = np.arange(round(seconds * rate)) / rate
    voice = sum(weight * np.sin(2 * np.pi * hz * t) for weight, hz in ((1.0, 150), (0.6, 300), (0.3, 450), (0.2, 750)))
    syllables = 0.55 + 0.45 * np.sin(2 * np.pi * 4 * t)
    return peak * voice / 2.1 * syllables


def _tone(seconds: float, hz: float, amplitude: float, rate: int = SAMPLE_RATE) -> np.ndarray:
    return amplitude * np.sin(2 * np.pi * hz * np.arange(round(seconds * rate)) / rate)


def _silence(seconds: float, rate: int = SAMPLE_RATE) -> np.ndarray:
    return np.zeros(round(seconds * rate))


def _decode(path: Path) -> np.ndarray:
    """The left channel of a stereo float WAV (the chain writes both channels alike)."""
    with av.open(str(path)) as container:
        assert container.streams.audio[0].codec_context.sample_rate == SAMPLE_RATE
        assert container.streams.audio[0].codec_context.channels == 2
        return np.concatenate([frame.to_ndarray()[0, ::2] for frame in container.decode(audio=0)]).astype(np.float64)


def _level_db(signal: np.ndarray, hz: float, start_s: float, seconds: float = 0.1) -> float:
    """Amplitude (dBFS) of one frequency over a window: a Hann-windowed DFT bin, deaf to the voice's harmonics."""
    window = signal[round(start_s * SAMPLE_RATE) : round((start_s + seconds) * SAMPLE_RATE)]
    hann = np.hanning(len(window))
    phase = np.exp(-2j * np.pi * hz * np.arange(len(window)) / SAMPLE_RATE)
    amplitude = 2 * abs(np.sum(window * hann * phase)) / np.sum(hann)
    return 20 * np.log10(max(amplitude, 1e-12))


async def _ebur128(path: Path) -> tuple[float, float]:
    """Integrated loudness (LUFS) and true peak (dBTP) as FFmpeg's ebur128 filter reports them in its summary, a mono
    file as it sounds from two speakers (dual mono)."""
    meter = "ebur128=peak=true:dualmono=true"
    stderr = await run_ffmpeg(
        [EXE, "-hide_banner", "-nostats", "-i", str(path), "-af", meter, "-f", "null", "-"], TIMEOUT_S
    )
    summary = stderr[stderr.rindex("Summary:") :]
    integrated = re.search(r"I:\s+(\S+) LUFS", summary)
    peak = re.search(r"Peak:\s+(\S+) dBFS", summary)
    assert integrated is not None and peak is not None, summary
    return float(integrated.group(1)), float(peak.group(1))


def test_speech_bounds_find_the_silence_around_the_voice(tmp_path: Path) -> None:
    # A floor of noise at -60 dBFS RMS, as TTS output has, must still count as silence.
    voice = np.concatenate([_silence(0.35, 22050), _speech(1.2, 0.5, 22050), _silence(0.6, 22050)])
    noise = np.random.default_rng(7).normal(0, 0.001, len(voice))
    path = _write(tmp_path / "narration.wav", voice + noise, rate=22050)

    start, end = speech_bounds(path)

    assert abs(start - 350) <= 20 and abs(end - 1550) <= 20, (start, end)
    assert kept_span((start, end), 2150, pad_ms=100) == (start - 100, end + 100)
    assert speech_bounds(_write(tmp_path / "hush.wav", noise[:22050], rate=22050)) == (0, 0)
    assert kept_span((0, 0), 1000, pad_ms=100) == (0, 100)


@pytest.mark.parametrize("crossfade_ms", [0, 400])
async def test_mix_is_exactly_as_long_as_the_picture(tmp_path: Path, crossfade_ms: int) -> None:
    # A 22.05 kHz narration (piper's rate) used twice, a silent card between: frames 91, 45 and 60 at 30 fps.
    narration = _write(tmp_path / "n.wav", _speech(2.0, 0.5, 22050), rate=22050)
    scenes = [
        SceneAudio(narration, 0, 2000, 300, 91 / FPS),
        SceneAudio(None, 0, 0, 0, 45 / FPS),
        SceneAudio(narration, 200, 1800, 100, 60 / FPS),
    ]
    out = tmp_path / "mix.wav"
    await run_ffmpeg(mix_command(EXE, scenes, crossfade_ms / 1000, None, out), TIMEOUT_S)

    # The video's frames less one cross-fade (12 frames at 400 ms) per join, at 1600 samples a frame.
    picture_frames = 91 + 45 + 60 - 2 * crossfade_ms * FPS // 1000
    assert len(_decode(out)) == mix_samples(scenes, crossfade_ms / 1000) == picture_frames * SAMPLE_RATE // FPS


async def test_crossfade_overlaps_the_scenes(tmp_path: Path) -> None:
    # Each scene is filled by its own tone, so each one's share of the join can be measured apart.
    first = _write(tmp_path / "a.wav", _tone(3.0, 440, 0.4))
    second = _write(tmp_path / "b.wav", _tone(3.0, 1000, 0.4))
    scenes = [SceneAudio(first, 0, 3000, 0, 2.0), SceneAudio(second, 0, 3000, 0, 2.0)]
    out = tmp_path / "mix.wav"
    await run_ffmpeg(mix_command(EXE, scenes, 0.4, None, out), TIMEOUT_S)
    mix = _decode(out)

    # The join spans 1.6 s to 2.0 s of the first scene; the second scene starts at 1.6 s.
    steady = _level_db(mix, 440, 1.0)
    assert _level_db(mix, 1000, 1.0) < steady - 60
    for middle in (_level_db(mix, 440, 1.75), _level_db(mix, 1000, 1.75)):
        assert steady - 9 < middle < steady - 3, (steady, middle)
    assert _level_db(mix, 440, 2.5) < steady - 60
    assert abs(_level_db(mix, 1000, 2.5) - steady) < 0.5


async def test_music_ducks_under_the_narration_and_comes_back_between_scenes(tmp_path: Path) -> None:
    # Two scenes of 3.5 s: 0.8 s lead, 1.5 s of speech, 1.2 s tail; speech at 0.8-2.3 s and 4.3-5.8 s. The music
    # is a 1 s tone, looped; the narration file serves both scenes (opened once, split).
    narration = _write(tmp_path / "n.wav", _speech(1.5, 0.6))
    music = _write(tmp_path / "music.wav", _tone(1.0, MUSIC_HZ, 0.5))
    scenes = [SceneAudio(narration, 0, 1500, 800, 3.5), SceneAudio(narration, 0, 1500, 800, 3.5)]
    ducked, steady, voice = tmp_path / "ducked.wav", tmp_path / "steady.wav", tmp_path / "voice.wav"
    await run_ffmpeg(mix_command(EXE, scenes, 0, MusicBed(music, fade_ms=200), ducked), TIMEOUT_S)
    await run_ffmpeg(mix_command(EXE, scenes, 0, MusicBed(music, fade_ms=200, duck=False), steady), TIMEOUT_S)
    await run_ffmpeg(mix_command(EXE, scenes, 0, None, voice), TIMEOUT_S)
    ducked_mix, steady_mix, voice_only = _decode(ducked), _decode(steady), _decode(voice)

    # Music alone: 0.5 (-6 dBFS), spread over two channels (-3 dB), at the default -20 dB gain.
    level = _level_db(steady_mix, MUSIC_HZ, 0.3)
    assert abs(level - -29.0) < 0.5
    under_speech = [_level_db(ducked_mix, MUSIC_HZ, start) for start in (1.0, 1.5, 2.1, 4.5, 5.0, 5.6)]
    # From 0.5 s after the speech to the next lead, and at the end (before the music's fade-out at 6.8 s).
    between_scenes = [_level_db(ducked_mix, MUSIC_HZ, start) for start in (0.3, 2.8, 3.3, 4.1, 6.3, 6.6)]
    assert max(under_speech) <= level - 6, under_speech
    assert all(abs(gap - level) < 1.0 for gap in between_scenes), between_scenes
    # amix with normalize=0: the voice keeps its level when the music is added.
    assert abs(_level_db(ducked_mix, 150, 1.5) - _level_db(voice_only, 150, 1.5)) < 0.1


async def _mix_at(tmp_path: Path, lufs: float) -> Path:
    """A three-scene mix of synthetic speech over ducked music, voice and music raised together to `lufs`."""
    music = _write(tmp_path / "music.wav", _tone(1.0, MUSIC_HZ, 0.5))
    out = tmp_path / "mix.wav"
    gain_db = 0.0
    for _ in range(3):
        narration = _write(tmp_path / "n.wav", _speech(2.5, 0.3 * 10 ** (gain_db / 20)))
        scenes = [SceneAudio(narration, 0, 2500, 300, 3.0) for _ in range(3)]
        await run_ffmpeg(mix_command(EXE, scenes, 0, MusicBed(music, gain_db=-20 + gain_db), out), TIMEOUT_S)
        measured, _ = await _ebur128(out)
        gain_db += lufs - measured
    assert abs(measured - lufs) < 0.2
    return out


@pytest.mark.parametrize("input_lufs", [-35.0, -8.0])
async def test_normalised_mix_lands_on_the_target_loudness(tmp_path: Path, input_lufs: float) -> None:
    mix = await _mix_at(tmp_path, input_lufs)
    target = LoudnessTarget()
    measurement = parse_measurement(await run_ffmpeg(measure_command(EXE, mix), TIMEOUT_S))
    assert abs(measurement.integrated_lufs - input_lufs) < 0.2
    out = tmp_path / "normalised.wav"
    await run_ffmpeg(normalize_command(EXE, mix, target, measurement, out), TIMEOUT_S)

    integrated, true_peak = await _ebur128(out)
    assert abs(integrated - target.integrated_lufs) <= 1.0, integrated
    assert true_peak <= target.true_peak_dbtp, true_peak
    assert len(_decode(out)) == len(_decode(mix))


async def test_peaks_over_the_limit_are_limited_and_the_loudness_still_lands(tmp_path: Path) -> None:
    # Plosive-like clicks 25 dB above the loudness of the voice: the +13 dB gain would take them to +9 dBTP.
    voice = _speech(6.0, 0.15)
    voice[:: SAMPLE_RATE // 4] = 0.9
    narration = _write(tmp_path / "n.wav", voice)
    mix = tmp_path / "mix.wav"
    await run_ffmpeg(mix_command(EXE, [SceneAudio(narration, 0, 6000, 0, 6.0)], 0, None, mix), TIMEOUT_S)
    target = LoudnessTarget()
    measurement = parse_measurement(await run_ffmpeg(measure_command(EXE, mix), TIMEOUT_S))
    out = tmp_path / "normalised.wav"
    argv = normalize_command(EXE, mix, target, measurement, out)
    await run_ffmpeg(argv, TIMEOUT_S)

    integrated, true_peak = await _ebur128(out)
    assert any("alimiter" in arg for arg in argv)
    assert abs(integrated - target.integrated_lufs) <= 1.0, integrated
    assert true_peak <= target.true_peak_dbtp, true_peak
    assert len(_decode(out)) == len(_decode(mix))


async def test_the_mix_is_measured_as_it_is_written(tmp_path: Path) -> None:
    narration = _write(tmp_path / "n.wav", _speech(2.0, 0.4))
    music = _write(tmp_path / "music.wav", _tone(1.0, MUSIC_HZ, 0.5))
    mix = tmp_path / "mix.wav"
    argv = mix_command(EXE, [SceneAudio(narration, 0, 2000, 300, 3.0)] * 2, 0, MusicBed(music), mix)
    printed = parse_measurement(await run_ffmpeg(argv, TIMEOUT_S))

    integrated, true_peak = await _ebur128(mix)
    assert abs(printed.integrated_lufs - integrated) < 0.05, (printed, integrated)
    assert abs(printed.true_peak_dbtp - true_peak) < 0.05, (printed, true_peak)
    assert len(_decode(mix)) == 6 * SAMPLE_RATE


@pytest.mark.parametrize("normalise", [True, False])
async def test_last_pass_measures_what_the_deliverable_aac_is_encoded_from(tmp_path: Path, normalise: bool) -> None:
    mix = await _mix_at(tmp_path, -25.0)
    measurement = parse_measurement(await run_ffmpeg(measure_command(EXE, mix), TIMEOUT_S))
    target = LoudnessTarget() if normalise else None
    raw, out = tmp_path / f"soundtrack{RAW_SUFFIX}", tmp_path / f"soundtrack{SOUNDTRACK_SUFFIX}"
    argv = normalize_command(EXE, mix, target, measurement, raw)
    printed = parse_measurement(await run_ffmpeg(argv, TIMEOUT_S))
    await encode_aac(EXE, raw, out, 2, TIMEOUT_S)

    assert ("-filter_complex" in argv and "volume=" in argv[argv.index("-filter_complex") + 1]) == normalise
    assert [path.name for path in tmp_path.glob("soundtrack*")] == ["soundtrack.m4a"]  # the raw and parts removed
    with av.open(str(out)) as container:
        stream = container.streams.audio[0]
        assert stream.codec_context.name == "aac" and stream.codec_context.sample_rate == SAMPLE_RATE
        # The speech is the same on both channels: one channel, at half the bits.
        assert stream.codec_context.channels == 1
        # The MP4's edit list cuts the encoder's padding: the track is exactly as long as the mix.
        assert stream.duration * stream.time_base * SAMPLE_RATE == len(_decode(mix))
    integrated, true_peak = await _ebur128(out)
    expected = LoudnessTarget().integrated_lufs if normalise else -25.0
    assert abs(printed.integrated_lufs - expected) < 1.0, printed
    # What the pass printed is the float signal before AAC; the decoded AAC reads within a few tenths of it.
    assert abs(integrated - printed.integrated_lufs) < 0.3, (integrated, printed)
    if normalise:
        assert true_peak <= LoudnessTarget().true_peak_dbtp + 0.5, true_peak
    print(f"AAC soundtrack: printed {printed.integrated_lufs} LUFS, decoded {integrated} LUFS, peak {true_peak} dBTP")


def _raw(path: Path, samples: np.ndarray, right: float = 0.8) -> Path:
    """A stereo raw soundtrack (RAW_SUFFIX): `samples` on the left, `right` times them on the right."""
    path.write_bytes(np.stack([samples, right * samples], axis=1).astype(np.float32).tobytes())
    return path


def _decoded_aac(path: Path, samples: int) -> np.ndarray:
    """Both channels of an M4A's first `samples` as decoded (the decoder skips the encoder's priming; its last
    frame's padding is left to the player, which reads the track's length)."""
    with av.open(str(path)) as container:
        return np.concatenate([frame.to_ndarray() for frame in container.decode(audio=0)], axis=1)[:, :samples]


async def test_the_aac_is_encoded_in_parts_joined_where_the_soundtrack_is_silent(tmp_path: Path) -> None:
    """Two scenes of speech with a lead's silence between: encoded in two parts at once, joined in the silence."""
    speech = np.concatenate([_speech(6.2, 0.5), _silence(0.3), _speech(5.5, 0.5), _silence(0.4)])
    raw = _raw(tmp_path / f"soundtrack{RAW_SUFFIX}", speech)
    plan = aac_plan(raw, 2)
    parts = plan.parts
    assert plan.channels == 2 and len(parts) == 2 and parts[0].start == 0 and parts[0].end == parts[1].start
    join = parts[1].start
    # In the silence, on AAC's 1024-sample frames, four frames from any sound: 6.2 s is sample 297600.
    assert join % 1024 == 0 and 297600 + 4096 <= join <= 297600 + 0.3 * SAMPLE_RATE - 4096
    # The second part's encoder starts four frames early, by seeking the raw samples, and keeps the deliverable's
    # codec and bitrate.
    second = aac_part_command(EXE, raw, parts[1], 2, tmp_path / "unused.m4a")
    assert second[second.index("-skip_initial_bytes") + 1] == str((join - 4096) * 8)
    assert second[second.index("-c:a") + 1] == "aac" and second[second.index("-b:a") + 1] == "192k"
    whole = tmp_path / "whole.m4a"
    await run_ffmpeg(aac_part_command(EXE, raw, AacPart(0, None, 0), 2, whole), TIMEOUT_S)
    joined = tmp_path / f"soundtrack{SOUNDTRACK_SUFFIX}"
    await encode_aac(EXE, raw, joined, 2, TIMEOUT_S)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["soundtrack.m4a", "whole.m4a"]

    decoded, reference = _decoded_aac(joined, len(speech)), _decoded_aac(whole, len(speech))
    assert decoded.shape == reference.shape == (2, len(speech))
    # The join is as silent as the soundtrack there, below -80 dBFS (AAC's own noise after the speech, the whole
    # encode's too): neither part's encoder leaks into it.
    around = slice(join - 2048, join + 2048)
    assert np.abs(decoded[:, around]).max() < 1e-4 and np.abs(reference[:, around]).max() < 1e-4
    # Both encodes are as faithful to the float samples, everywhere, on both channels.
    for encoded in (decoded, reference):
        for channel, level in ((0, 1.0), (1, 0.8)):
            noise = encoded[channel] - level * speech
            assert 10 * np.log10(np.sum((level * speech) ** 2) / np.sum(noise**2)) > 25
    with av.open(str(joined)) as container:
        stream = container.streams.audio[0]
        assert stream.duration * stream.time_base * SAMPLE_RATE == len(speech)


@pytest.mark.parametrize(
    ("samples", "parts"),
    [(_tone(12, 440, 0.3), 2), (np.concatenate([_speech(3, 0.5), _silence(0.3), _speech(3, 0.5)]), 2), (None, 1)],
    ids=["no-silence", "too-short", "one-encoder"],
)
def test_the_aac_is_encoded_whole_without_a_silence_long_parts_or_a_second_encoder(
    tmp_path: Path, samples: np.ndarray | None, parts: int
) -> None:
    if samples is None:
        samples = np.concatenate([_speech(6, 0.5), _silence(0.5), _speech(6, 0.5)])
    assert aac_plan(_raw(tmp_path / f"soundtrack{RAW_SUFFIX}", samples), parts) == AacPlan([AacPart(0, None, 0)], 2)


async def test_a_soundtrack_the_same_on_both_channels_is_encoded_as_one(tmp_path: Path) -> None:
    """Narration without music: every voice is mono, so the stereo mix is too; one channel at half the bits."""
    speech = np.concatenate([_speech(6, 0.5), _silence(0.5), _speech(6, 0.5)])
    raw = _raw(tmp_path / f"soundtrack{RAW_SUFFIX}", speech, right=1.0)
    plan = aac_plan(raw, 2)
    assert plan.channels == 1 and len(plan.parts) == 2
    argv = aac_part_command(EXE, raw, plan.parts[0], 1, tmp_path / "unused.m4a")
    assert argv[argv.index("-b:a") + 1] == "96k"
    out = tmp_path / f"soundtrack{SOUNDTRACK_SUFFIX}"
    await encode_aac(EXE, raw, out, 2, TIMEOUT_S)
    with av.open(str(out)) as container:
        assert container.streams.audio[0].codec_context.channels == 1
    decoded = _decoded_aac(out, len(speech))[0]
    assert 10 * np.log10(np.sum(speech**2) / np.sum((decoded - speech) ** 2)) > 25
    # Measured as it sounds from two speakers: as loud as the stereo samples it was encoded from.
    stereo_wav = tmp_path / "stereo.wav"
    with av.open(str(stereo_wav), "w", format="wav") as container:
        stream = container.add_stream("pcm_f32le", rate=SAMPLE_RATE, layout="stereo")
        frame = av.AudioFrame.from_ndarray(
            np.stack([speech, speech]).astype(np.float32).T.reshape(1, -1), format="flt", layout="stereo"
        )
        frame.sample_rate = SAMPLE_RATE
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    (mono_lufs, _), (stereo_lufs, _) = [await _ebur128(path) for path in (out, stereo_wav)]
    assert abs(mono_lufs - stereo_lufs) < 0.3, (mono_lufs, stereo_lufs)


async def test_a_silent_mix_stays_silent(tmp_path: Path) -> None:
    mix, out = tmp_path / "mix.wav", tmp_path / "normalised.wav"
    await run_ffmpeg(mix_command(EXE, [SceneAudio(None, 0, 0, 0, 2.0)], 0, None, mix), TIMEOUT_S)
    measurement = parse_measurement(await run_ffmpeg(measure_command(EXE, mix), TIMEOUT_S))
    await run_ffmpeg(normalize_command(EXE, mix, LoudnessTarget(), measurement, out), TIMEOUT_S)

    samples = _decode(out)
    assert len(samples) == 2 * SAMPLE_RATE
    assert not samples.any()


def test_scenes_shorter_than_their_crossfades_are_refused() -> None:
    inner = SceneAudio(None, 0, 0, 0, 0.7)
    outer = SceneAudio(None, 0, 0, 0, 2.0)
    with pytest.raises(InvalidArgument, match=r"scenes \[1\]"):
        mix_command(EXE, [outer, inner, outer], 0.4, None, Path("/w/mix.wav"))
    assert mix_command(EXE, [outer, SceneAudio(None, 0, 0, 0, 0.8), outer], 0.4, None, Path("/w/mix.wav"))


async def test_an_aac_part_that_fails_raises_its_own_error_and_leaves_no_file(tmp_path: Path) -> None:
    speech = np.concatenate([_speech(6.2, 0.5), _silence(0.3), _speech(5.5, 0.5)])
    raw = _raw(tmp_path / f"soundtrack{RAW_SUFFIX}", speech)
    assert len(aac_plan(raw, 2).parts) == 2
    # An FFmpeg that fails as FFmpeg does: a message on stderr, a non-zero exit.
    failing = tmp_path / "ffmpeg"
    failing.write_text("#!/bin/sh\necho 'Invalid argument' >&2\nexit 1\n")
    failing.chmod(0o755)
    with pytest.raises(MediaError, match="ffmpeg exited with 1: Invalid argument"):
        await encode_aac(str(failing), raw, tmp_path / f"soundtrack{SOUNDTRACK_SUFFIX}", 2, TIMEOUT_S)
    assert [path.name for path in tmp_path.iterdir()] == ["ffmpeg"]
