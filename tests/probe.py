"""Reads a rendered MP4 back with PyAV, so tests check the file rather than trust an exit code."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from services.common.media import ffmpeg_exe

# A header field in FFmpeg's trace_headers output: "[trace_headers @ 0x...] 41   pic_order_cnt_type   1 = 0".
_TRACED = re.compile(r"\]\s+\d+\s+(\w+)\s+[01]+ = (\d+)$")


@dataclass
class ProbedVideo:
    video_codec: str
    width: int
    height: int
    pix_fmt: str
    audio_codec: str
    audio_rate: int
    duration_s: float
    video_duration_s: float
    audio_duration_s: float
    subtitle_texts: list[str]
    subtitle_starts_s: list[float]


def probe_mp4(path: Path) -> ProbedVideo:
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        audio = container.streams.audio[0]
        texts: list[str] = []
        starts: list[float] = []
        for subtitle_stream in container.streams.subtitles:
            for packet in container.demux(subtitle_stream):
                for subtitle in packet.decode() if packet.size else []:
                    text = subtitle.dialogue.decode("utf-8").strip()
                    if text:
                        texts.append(text)
                        starts.append(float(packet.pts * subtitle_stream.time_base))
        return ProbedVideo(
            video_codec=video.codec_context.name,
            width=video.codec_context.width,
            height=video.codec_context.height,
            pix_fmt=video.codec_context.pix_fmt,
            audio_codec=audio.codec_context.name,
            audio_rate=audio.codec_context.sample_rate,
            duration_s=container.duration / 1_000_000,
            video_duration_s=float(video.duration * video.time_base),
            audio_duration_s=float(audio.duration * audio.time_base),
            subtitle_texts=texts,
            subtitle_starts_s=starts,
        )


def frame_at(path: Path, seconds: float) -> np.ndarray:
    """The first decoded frame at or after `seconds`, as an RGB array."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        for frame in container.decode(stream):
            if frame.time is not None and frame.time >= seconds:
                return frame.to_ndarray(format="rgb24")
    raise AssertionError(f"no frame at {seconds} s in {path}")


def audio_rms(path: Path, start_s: float, end_s: float) -> float:
    """Root-mean-square level of the audio between two times (0 is silence, 1 is full scale)."""
    samples = []
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        for frame in container.decode(stream):
            if frame.time is None or frame.time < start_s:
                continue
            if frame.time > end_s:
                break
            samples.append(frame.to_ndarray().astype(np.float64).ravel())
    if not samples:
        return 0.0
    data = np.concatenate(samples)
    return float(np.sqrt(np.mean(data**2)))


def frames_shown(path: Path, times: list[float]) -> list[np.ndarray]:
    """The picture on screen at each of `times` (seconds, ascending): the last frame that starts at or before it.

    A frame lasts until the next one starts, so this reads constant- and variable-frame-rate files alike.
    """
    shown: list[np.ndarray] = []
    with av.open(str(path)) as container:
        previous = None
        for frame in container.decode(container.streams.video[0]):
            while len(shown) < len(times) and frame.time > times[len(shown)]:
                assert previous is not None, f"no frame at {times[len(shown)]} s in {path}"
                shown.append(previous.to_ndarray(format="rgb24"))
            if len(shown) == len(times):
                return shown
            previous = frame
    assert previous is not None, f"no frames in {path}"
    return shown + [previous.to_ndarray(format="rgb24")] * (len(times) - len(shown))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio of two 8-bit pictures of the same size, in decibels (infinite when equal)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


def h264_header_fields(path: Path) -> list[tuple[str, int]]:
    """Every H.264 header field (parameter sets, slice headers) FFmpeg's trace_headers prints for `path`, in order.

    Asserts that FFmpeg decodes the file with every error fatal, and that neither run complains.
    """
    exe = ffmpeg_exe()
    strict = [exe, "-hide_banner", "-nostdin", "-xerror", "-err_detect", "explode", "-i", str(path), "-f", "null", "-"]
    decode = subprocess.run(strict, capture_output=True, text=True, check=False)
    assert decode.returncode == 0, decode.stderr[-2000:]
    trace_argv = [exe, "-hide_banner", "-nostdin", "-i", str(path), "-c", "copy", "-bsf:v", "trace_headers"]
    trace = subprocess.run([*trace_argv, "-f", "null", "-"], capture_output=True, text=True, check=False)
    assert trace.returncode == 0, trace.stderr[-2000:]
    complaints = [line for line in trace.stderr.splitlines() if re.search("error|invalid", line, re.IGNORECASE)]
    assert not complaints, complaints[:5]
    return [(match[1], int(match[2])) for match in map(_TRACED.search, trace.stderr.splitlines()) if match]
