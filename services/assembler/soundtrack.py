"""The soundtrack of the video: narration trimming, scene tracks, music ducked under the voice, two-pass loudness."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import ffmpeg
import numpy as np

from services.common.errors import InvalidArgument, MediaError

SAMPLE_RATE = 48000
# The deliverable's sound: AAC at this bitrate, in an MP4 audio file (M4A) that the mux joins to the video by stream
# copy. Encoding it before the mux, alongside the video encodes, takes the AAC encoder (2.1 s of CPU for a minute of
# stereo, measured) off the mux, which waits for the last segment; it is encoded in parts at once (`aac_parts`).
AAC_BITRATE = "192k"
# A soundtrack whose two channels are the same throughout (narration without music: every voice is mono) is encoded
# as one channel at half the bitrate, the same bits per channel: the same sound in any player, for half the AAC
# encoder's CPU (1.0 s against 2.1 s for a minute, measured) and half the audio's bytes.
AAC_MONO_BITRATE = "96k"
# The native encoder with its default twoloop coder. Its fast coder took 1.37 s of CPU against 2.07 s for 61 s of
# narration and music, on the serial tail of every assembly, but FFmpeg went back from fast to twoloop as its default
# in 2021 for twoloop's better rate control and sound (OBS followed), so the sound is not traded for it.
AAC_OPTIONS = {"c:a": "aac", "b:a": AAC_BITRATE}
SOUNDTRACK_SUFFIX = ".m4a"
# The last pass's float samples, raw (f32le, stereo, SAMPLE_RATE) so that each AAC part's encoder seeks to its
# start by bytes.
RAW_SUFFIX = ".f32"
_RAW_FORMAT = {"f": "f32le", "ar": SAMPLE_RATE, "ch_layout": "stereo"}
_RAW_FRAME_BYTES = 8
# AAC codes 1024 samples a frame over a window of two frames. The soundtrack is encoded in parts where it is
# digitally silent for _AAC_JOIN_MARGIN samples either side, so that every frame near a join codes silence in both
# parts' streams (silence decodes to silence, whatever each encoder's state) and no window spans the join's two
# encoders; each part's encoder also starts and ends that margin beyond the samples it keeps. Scenes start with
# their lead's silence (300 ms by default), so narration alone gives such places between scenes; music does not, and
# such a soundtrack is encoded whole.
_AAC_FRAME = 1024
_AAC_JOIN_MARGIN = 4 * _AAC_FRAME
# Shorter parts are not worth an encoder's start-up (an FFmpeg run, a part's own priming frames).
_AAC_MIN_PART_SECONDS = 5
# ebur128 prints its summary at the info level; -nostats keeps the progress lines out of the parsed text.
_MEASURE_ARGS = ("-hide_banner", "-nostdin", "-nostats", "-loglevel", "info")
# Speech is found in 10 ms windows: fine enough to place its edges within 20 ms, long enough to hold a whole period
# of any voice's fundamental, so that a zero crossing does not read as silence.
_WINDOW_MS = 10

# Ducking: sidechaincompress turns the music down by the narration's level. The threshold (0.01, -40 dBFS) sits below
# any spoken word and above a TTS noise floor; ratio 4 then takes 0.75 dB off the music per dB of voice above it. A
# 20 ms attack ducks within the first syllable; a 400 ms release holds the duck through the gaps between words and
# lets the music back within about half a second, inside the 800 ms between scenes that the default lead and tail
# leave. Measured under piper narration (-20 LUFS): the music 12 to 24 dB down under words, 5 to 8 dB down in the
# pauses between sentences, back to its level 0.5 s after a scene's last word.
_DUCK_THRESHOLD = 0.01
_DUCK_RATIO = 4
_DUCK_ATTACK_MS = 20
_DUCK_RELEASE_MS = 400

_ABSOLUTE_GATE_LUFS = -70.0
_LIMITER_RATE = 4 * SAMPLE_RATE
_LIMITER_ATTACK_MS = 1
_LIMITER_RELEASE_MS = 20
# ebur128's closing summary: "Integrated loudness: I: -16.0 LUFS ..." and, with peak=true, "True peak: Peak: -1.6 dBFS".
_SUMMARY = re.compile(
    r"Integrated loudness:\s+I:\s+(-?\d+(?:\.\d+)?) LUFS.*?True peak:\s+Peak:\s+(-?(?:inf|\d+(?:\.\d+)?)) dBFS",
    re.DOTALL,
)


def speech_bounds(path: Path, threshold_db: float = -45.0) -> tuple[int, int]:
    """First and last millisecond of sound above `threshold_db` (dBFS, RMS over 10 ms windows); (0, 0) if none.

    TTS voices start and end with silence of their own, of varying length; measuring it lets each narration be cut
    to the same pad, so scene pacing comes from the plan and not from the voice. The file must have been probed.
    """
    samples, rate = _mono(path)
    window = max(1, rate * _WINDOW_MS // 1000)
    padded = np.pad(samples, (0, -len(samples) % window))
    power = np.mean(padded.reshape(-1, window).astype(np.float64) ** 2, axis=1)
    loud = np.flatnonzero(power > 10 ** (threshold_db / 10))
    if loud.size == 0:
        return 0, 0
    first = loud[0] * window
    last = min(len(samples), (loud[-1] + 1) * window)
    return round(first * 1000 / rate), round(last * 1000 / rate)


def kept_span(bounds: tuple[int, int], duration_ms: int, pad_ms: int) -> tuple[int, int]:
    """The part of a narration to keep, (trim_start_ms, trim_end_ms): its speech and at most `pad_ms` either side."""
    start, end = bounds
    if end <= start:
        return 0, min(duration_ms, pad_ms)
    return max(0, start - pad_ms), min(duration_ms, end + pad_ms)


def _mono(path: Path) -> tuple[np.ndarray, int]:
    """The whole file decoded and mixed down to one float channel, at its own sample rate."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        rate = stream.codec_context.sample_rate
        resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
        chunks = [out.to_ndarray().ravel() for frame in container.decode(stream) for out in resampler.resample(frame)]
        chunks.extend(out.to_ndarray().ravel() for out in resampler.resample(None))
    return (np.concatenate(chunks) if chunks else np.zeros(0, np.float32)), rate


@dataclass(frozen=True)
class SceneAudio:
    """One scene's track: `lead_ms` of silence, then the kept part of the narration, padded or cut to the scene.

    The length is in seconds (a float) because a scene is a whole number of video frames: 91 frames at 30 fps are
    3033.33 ms, which whole milliseconds would round, and the rounding would add up over the scenes until the audio
    drifted from the picture. At 48 kHz every common frame rate (24, 25, 30, 50, 60) is a whole number of samples,
    so the track is cut to the exact sample.
    """

    # None for a silent card: the scene's track is silence.
    narration: Path | None
    trim_start_ms: int
    trim_end_ms: int
    lead_ms: int
    duration_s: float

    @property
    def samples(self) -> int:
        return round(self.duration_s * SAMPLE_RATE)


@dataclass(frozen=True)
class MusicBed:
    """Background music under the whole video, looped to its length."""

    path: Path
    # Level before ducking, relative to the file as mastered: music is mastered about as loud as a voice.
    gain_db: float = -20.0
    duck: bool = True
    # Fade in at the start and out at the end.
    fade_ms: int = 1500


@dataclass(frozen=True)
class LoudnessTarget:
    """EBU R128 targets; the defaults are the usual ones for web and podcast delivery."""

    integrated_lufs: float = -16.0
    true_peak_dbtp: float = -1.5


@dataclass(frozen=True)
class LoudnessMeasurement:
    """A mix's integrated loudness and true peak, as the `ebur128` filter reports them."""

    integrated_lufs: float
    true_peak_dbtp: float


def mix_samples(scenes: Sequence[SceneAudio], crossfade_s: float) -> int:
    """Length of the mix in samples: the scenes' lengths less one cross-fade per join."""
    return sum(scene.samples for scene in scenes) - (len(scenes) - 1) * _crossfade_samples(crossfade_s)


def _crossfade_samples(crossfade_s: float) -> int:
    # Seconds, not milliseconds: a cross-fade is a whole number of frames (10 frames at 24 fps are 416.67 ms).
    return round(crossfade_s * SAMPLE_RATE)


def mix_command(
    exe: str, scenes: Sequence[SceneAudio], crossfade_s: float, music: MusicBed | None, out_path: Path
) -> list[str]:
    """The whole video's audio as a 48 kHz stereo 32-bit float WAV, exactly `mix_samples` long, and its loudness.

    Float, because this is an intermediate: the voice and the music may sum above full scale before the loudness
    pass brings the level down, and a quiet mix is raised by up to tens of dB there; 16-bit would clip the first and
    raise the quantisation noise of the second. The mix is measured in the same run (`parse_measurement` reads the
    stderr), the first pass of the loudness normalisation, so the mix is not decoded a second time to measure it.
    """
    if not scenes:
        raise InvalidArgument("a video needs at least one scene of audio")
    overlap = _crossfade_samples(crossfade_s)
    # A scene fades in and out over its neighbours: an inner scene must hold two cross-fades, an outer one one.
    joins = [(index > 0) + (index < len(scenes) - 1) for index in range(len(scenes))]
    short = [index for index, scene in enumerate(scenes) if scene.samples < joins[index] * overlap]
    if short:
        raise InvalidArgument(
            f"scenes {short} are shorter than their {crossfade_s:.3f} s cross-fades; shorten the cross-fade"
        )
    tracks = _scene_tracks(scenes)
    if len(tracks) == 1:
        voice = tracks[0]
    elif overlap > 0:
        voice = ffmpeg.filter(tracks, "acrossfade", inputs=len(tracks), ns=overlap)
    else:
        voice = ffmpeg.concat(*tracks, v=0, a=1)
    if music is None:
        mix = voice
    else:
        key = None
        if music.duck:
            copies = voice.filter_multi_output("asplit", 2)
            voice, key = copies.stream(0), copies.stream(1)
        bed = _music_track(music, mix_samples(scenes, crossfade_s), key)
        # normalize=0: amix would otherwise scale each input by 1/2, halving the voice as well as the music.
        mix = ffmpeg.filter([voice, bed], "amix", inputs=2, duration="first", normalize=0)
    return _measured_output(mix, out_path).compile(cmd=exe, overwrite_output=True)


def _measured_output(stream: ffmpeg.nodes.FilterableStream, out_path: Path) -> ffmpeg.nodes.OutputStream:
    """Writes the stream to `out_path` and measures it on the way (the ebur128 summary on stderr).

    The file is 32-bit float: raw when `out_path` ends in RAW_SUFFIX (for `aac_part_command`), else a WAV.
    """
    formats = {RAW_SUFFIX: "f32le", ".wav": "wav"}
    if out_path.suffix not in formats:
        raise ValueError(f"a measured pass writes {' or '.join(formats)}, not {out_path.name}")
    copies = stream.filter_multi_output("asplit", 2)
    codec = {"acodec": "pcm_f32le", "f": formats[out_path.suffix]}
    written = ffmpeg.output(copies.stream(0), str(out_path), **codec, ar=SAMPLE_RATE, ac=2)
    return ffmpeg.merge_outputs(written, _null_output(_ebur128(copies.stream(1)))).global_args(*_MEASURE_ARGS)


def _ebur128(stream: ffmpeg.nodes.FilterableStream) -> ffmpeg.nodes.FilterableStream:
    """Integrated loudness and true peak, printed in a summary when the stream ends.

    Measured with `ebur128` rather than loudnorm's first pass, which misreads short programmes: a 5 s mix that
    ebur128 reads at -17.8 LUFS, loudnorm read at -18.8, an error its second pass would carry into the result. A
    mono file (a soundtrack of narration alone, see AAC_MONO_BITRATE) is measured as dual mono, as it sounds from two
    speakers, so it reads what the stereo mix it was encoded from did (BS.1770 alone would read it 3 dB lower).
    """
    return stream.filter("ebur128", peak="true", framelog="verbose", dualmono="true")


def _null_output(stream: ffmpeg.nodes.FilterableStream) -> ffmpeg.nodes.OutputStream:
    return ffmpeg.output(stream, "-", f="null")


def _stereo(stream: ffmpeg.nodes.FilterableStream) -> ffmpeg.nodes.FilterableStream:
    return stream.filter("aresample", SAMPLE_RATE).filter("aformat", sample_fmts="fltp", channel_layouts="stereo")


def _scene_tracks(scenes: Sequence[SceneAudio]) -> list[ffmpeg.nodes.FilterableStream]:
    """Each scene's track, in order.

    ffmpeg-python merges equal inputs into one node and a stream can feed only one filter, so a source that several
    scenes use (the silence of every silent card, a narration file given twice) is opened once and split.
    """
    sources: dict[Path | None, list[ffmpeg.nodes.FilterableStream]] = {}
    for narration, count in Counter(scene.narration for scene in scenes).items():
        source = (
            ffmpeg.input(f"anullsrc=r={SAMPLE_RATE}:cl=stereo", f="lavfi").audio
            if narration is None
            else ffmpeg.input(str(narration)).audio
        )
        copies = source.filter_multi_output("asplit", count) if count > 1 else None
        sources[narration] = [copies.stream(index) for index in range(count)] if copies is not None else [source]
    return [_scene_track(scene, sources[scene.narration].pop(0)) for scene in scenes]


def _scene_track(scene: SceneAudio, source: ffmpeg.nodes.FilterableStream) -> ffmpeg.nodes.FilterableStream:
    """Lead silence, then the kept narration, padded with silence and cut to the scene's exact sample count."""
    if scene.narration is None:
        track = _stereo(source)
    else:
        kept = source.filter(
            "atrim", start=f"{scene.trim_start_ms / 1000:.3f}", end=f"{scene.trim_end_ms / 1000:.3f}"
        ).filter("asetpts", "PTS-STARTPTS")
        track = _stereo(kept).filter("adelay", delays=scene.lead_ms, all=1).filter("apad")
    return track.filter("atrim", end_sample=scene.samples)


def _music_track(
    music: MusicBed, total: int, key: ffmpeg.nodes.FilterableStream | None
) -> ffmpeg.nodes.FilterableStream:
    """The music looped to `total` samples, ducked under `key` (the narration) when given, at its gain, faded.

    sidechaincompress ends its output as soon as either input ends, dropping what it holds of the other; fed the
    whole narration faster than the music, it cut the music off mid-video. Both of its inputs are therefore endless
    here (the looped music, the narration padded with silence) and the cut to length comes after it.
    """
    bed = _stereo(ffmpeg.input(str(music.path), stream_loop=-1).audio)
    if key is not None:
        bed = ffmpeg.filter(
            [bed, key.filter("apad")],
            "sidechaincompress",
            threshold=_DUCK_THRESHOLD,
            ratio=_DUCK_RATIO,
            attack=_DUCK_ATTACK_MS,
            release=_DUCK_RELEASE_MS,
        )
    bed = bed.filter("atrim", end_sample=total).filter("volume", f"{music.gain_db}dB")
    fade = min(music.fade_ms * SAMPLE_RATE // 1000, total // 2)
    if fade > 0:
        bed = bed.filter("afade", type="in", start_sample=0, nb_samples=fade)
        bed = bed.filter("afade", type="out", start_sample=total - fade, nb_samples=fade)
    return bed


def measure_command(exe: str, path: Path) -> list[str]:
    """Integrated loudness and true peak of any audio file, printed on stderr; writes nothing.

    The chain's own passes measure what they write; this is for a file made elsewhere, or a finished video.
    """
    return _null_output(_ebur128(ffmpeg.input(str(path)).audio)).global_args(*_MEASURE_ARGS).compile(cmd=exe)


def parse_measurement(stderr: str) -> LoudnessMeasurement:
    """Reads the summary that `ebur128` prints when a measured pass ends."""
    found = _SUMMARY.findall(stderr)
    if not found:
        raise MediaError("the loudness measurement printed no summary")
    integrated, peak = found[-1]
    return LoudnessMeasurement(float(integrated), float(peak))


def normalize_command(
    exe: str, wav: Path, target: LoudnessTarget | None, measurement: LoudnessMeasurement, out_path: Path
) -> list[str]:
    """The second pass: one gain for the whole mix, then, only if that gain lifts a peak over the limit, a limiter.

    The result is measured in the same run, like the mix; `aac_parts` and `aac_part_command` then encode the
    deliverable's AAC from it, which the mux only copies. `target` None skips the gain, for a video whose loudness
    is left as mixed.

    One gain from the whole programme's loudness lands on the target and keeps the narration's own dynamics.
    loudnorm in one pass (dynamic mode) only knows the loudness heard so far; in two passes it carries its first
    pass's misreading of short programmes, and falls back to dynamic mode when the range exceeds its LRA target.
    Integrated loudness of the result for a -16 LUFS target, measured with ebur128:

        mix                                          loudnorm, 1 pass   loudnorm, 2 passes   this pass
        3 s, four scenes at different levels         -13.7              -16.0                -16.0
        8 s, the same                                -18.1              -15.4                -16.0
        15 s, the same (range 15 LU)                 -17.6              -13.9                -16.0
        5.5 s of piper narration                     -17.1              -16.5                -16.6
        18 s, four piper scenes and music            -16.8              -16.3                -16.5

    Piper's peaks are 17 dB above its loudness, so its mixes need the limiter. It runs at 192 kHz to catch the peaks
    between samples that the true peak counts, looks 1 ms ahead and releases in 20 ms: limiting piper's peaks then
    costs 0.4 to 0.6 LU.
    """
    stream = ffmpeg.input(str(wav)).audio
    # A mix with nothing above R128's absolute gate (only silent cards, no music) has no loudness to correct; a
    # gain would only raise its noise.
    if target is not None and measurement.integrated_lufs > _ABSOLUTE_GATE_LUFS:
        gain_db = target.integrated_lufs - measurement.integrated_lufs
        stream = stream.filter("volume", f"{gain_db:.2f}dB")
        if measurement.true_peak_dbtp + gain_db > target.true_peak_dbtp:
            stream = (
                stream.filter("aresample", _LIMITER_RATE)
                .filter(
                    "alimiter",
                    limit=f"{10 ** (target.true_peak_dbtp / 20):.6f}",
                    attack=_LIMITER_ATTACK_MS,
                    release=_LIMITER_RELEASE_MS,
                    level="false",
                    latency="true",
                )
                .filter("aresample", SAMPLE_RATE)
            )
    return _measured_output(stream, out_path).compile(cmd=exe, overwrite_output=True)


@dataclass(frozen=True)
class AacPart:
    """One encoder's share of the soundtrack, in samples: it encodes from `start - lead` and its packets from
    `start` to `end` (None: the last part, to the end) are kept."""

    start: int
    end: int | None
    lead: int


@dataclass(frozen=True)
class AacPlan:
    """How a raw soundtrack is encoded: its parts (`aac_part_command` each, `join_aac` after) and its channels."""

    parts: list[AacPart]
    # 1 when both channels hold the same samples throughout.
    channels: int


def aac_plan(raw: Path, parts: int) -> AacPlan:
    """Splits a raw soundtrack (RAW_SUFFIX) into at most `parts` for as many encoders at once, each join in silence
    (see _AAC_JOIN_MARGIN) at the place nearest an equal share (one part when there is no such place), and finds
    whether its channels are the same.

    Read a few megabytes at a time, whatever the soundtrack's length: only a flag per AAC frame is kept.
    """
    length = raw.stat().st_size // _RAW_FRAME_BYTES
    frames = -(-length // _AAC_FRAME)
    heard = np.empty(frames, dtype=bool)
    same = True
    step = 128  # AAC frames per read: 1 MiB (read, not mapped: mapped pages would count as the process's memory)
    with raw.open("rb") as source:
        for first in range(0, frames, step):
            block = np.frombuffer(source.read(step * _AAC_FRAME * _RAW_FRAME_BYTES), np.float32).reshape(-1, 2)
            same = same and bool(np.array_equal(block[:, 0], block[:, 1]))
            padded = np.pad(block.any(axis=1), (0, -len(block) % _AAC_FRAME))
            heard[first : first + len(padded) // _AAC_FRAME] = padded.reshape(-1, _AAC_FRAME).any(axis=1)
    channels = 1 if same else 2
    shortest = _AAC_MIN_PART_SECONDS * SAMPLE_RATE
    if parts < 2 or length < 2 * shortest:
        return AacPlan([AacPart(0, None, 0)], channels)
    heard_before = np.concatenate([[0], np.cumsum(heard)])
    # A join at frame k needs the margin's frames either side silent.
    margin = _AAC_JOIN_MARGIN // _AAC_FRAME
    candidates = np.arange(margin, frames - margin)
    places = candidates[heard_before[candidates + margin] == heard_before[candidates - margin]] * _AAC_FRAME
    joins: list[int] = []
    for share in range(1, parts):
        if not places.size:
            break
        place = int(places[np.argmin(np.abs(places - length * share // parts))])
        if place - (joins[-1] if joins else 0) >= shortest and length - place >= shortest:
            joins.append(place)
    starts, ends = [0, *joins], [*joins, None]
    split = [AacPart(start, end, _AAC_JOIN_MARGIN if start else 0) for start, end in zip(starts, ends, strict=True)]
    return AacPlan(split, channels)


def aac_part_command(exe: str, raw: Path, part: AacPart, channels: int, out_path: Path) -> list[str]:
    """Encodes a part of a raw soundtrack to AAC in MP4 with `channels` (1: the left, which is the right too), with
    the margins `join_aac` cuts."""
    first = part.start - part.lead
    source = ffmpeg.input(str(raw), **_RAW_FORMAT, skip_initial_bytes=first * _RAW_FRAME_BYTES).audio
    if part.end is not None:
        source = source.filter("atrim", end_sample=part.end + _AAC_JOIN_MARGIN - first)
    if channels == 1:
        source = source.filter("channelmap", map="0", channel_layout="mono")
    bitrate = AAC_MONO_BITRATE if channels == 1 else AAC_BITRATE
    stream = ffmpeg.output(source, str(out_path), **{**AAC_OPTIONS, "b:a": bitrate}, f="mp4")
    return stream.global_args("-hide_banner", "-nostdin", "-loglevel", "error").compile(cmd=exe, overwrite_output=True)


def join_aac(encoded: list[tuple[AacPart, Path]], out_path: Path) -> None:
    """Writes the AAC packets each part keeps, in order, to one M4A, with the first part's priming (the edit list
    that cuts the encoder's first frame of padding)."""
    with av.open(str(encoded[0][1])) as first, av.open(str(out_path), "w", format="mp4") as output:
        joined = output.add_stream_from_template(first.streams.audio[0])
        for part, path in encoded:
            with av.open(str(path)) as source:
                stream = source.streams.audio[0]
                if stream.time_base != Fraction(1, SAMPLE_RATE):
                    raise MediaError(f"an AAC part has the time base {stream.time_base}, not 1/{SAMPLE_RATE}")
                for packet in source.demux(stream):
                    if not packet.size:
                        continue
                    at = packet.pts + part.start - part.lead
                    if (part.start and at < part.start) or (part.end is not None and at >= part.end):
                        continue
                    copy = av.Packet(bytes(packet))
                    copy.stream = joined
                    copy.time_base = stream.time_base
                    copy.pts = copy.dts = at
                    copy.duration = packet.duration
                    output.mux(copy)
