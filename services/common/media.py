"""Probing media with PyAV (the FFmpeg wheel ships no ffprobe) and running FFmpeg as a killable subprocess."""

from __future__ import annotations

import asyncio
import functools
import logging
import shlex
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import av
import imageio_ffmpeg

from services.common.errors import InvalidArgument, MediaError
from services.common.redact import redact

_LOGGER = logging.getLogger(__name__)

# Enough for FFmpeg's last few messages (the cause is in the last lines), small enough to log whole.
STDERR_TAIL_CHARS = 2000
_READ_BYTES = 64 * 1024


@functools.cache
def _dies_with_parent() -> tuple[str, ...]:
    """The argv prefix that has the kernel kill FFmpeg when the service dies, SIGKILL included (PR_SET_PDEATHSIG).

    Without it, an FFmpeg whose service was killed ran on for up to a minute on files nobody would read. util-linux's
    `setpriv` sets it and then runs FFmpeg (the setting survives exec). It is not set in a `preexec_fn`: that makes
    Python fork instead of vfork, and the fork runs gRPC's fork handlers, which abort the child.
    """
    setpriv = shutil.which("setpriv") if sys.platform == "linux" else None
    if setpriv is None:
        _LOGGER.warning("setpriv not found: an FFmpeg may outlive this service if it is killed")
        return ()
    return (setpriv, "--pdeathsig", "KILL", "--")


def _with_env(env: Mapping[str, str]) -> tuple[str, ...]:
    if not env:
        return ()
    if any(not name or "=" in name for name in env):
        raise ValueError(f"not environment variable names: {sorted(env)}")
    return ("env", *(f"{name}={value}" for name, value in env.items()))


def _niced(niceness: int) -> tuple[str, ...]:
    nice = shutil.which("nice") if niceness > 0 else None
    return (nice, "-n", str(niceness)) if nice else ()


@dataclass(frozen=True)
class MediaInfo:
    """What a file holds, read from its streams."""

    has_video: bool
    has_audio: bool
    width: int
    height: int
    sample_rate: int
    duration_ms: int
    codec: str


def probe(source: Path | BinaryIO, field: str) -> MediaInfo:
    """Reads a media file's streams; the duration is decoded from the audio when there is audio.

    Raises InvalidArgument naming `field` when the bytes are not media FFmpeg can read.
    """
    try:
        with av.open(str(source) if isinstance(source, Path) else source) as container:
            video = next(iter(container.streams.video), None)
            audio = next(iter(container.streams.audio), None)
            if video is None and audio is None:
                raise InvalidArgument(f"{field}: the file has no audio or video stream")
            duration_ms = (
                _decoded_duration_ms(container, audio) if audio is not None else _video_duration_ms(container, video)
            )
            width = video.codec_context.width if video is not None else 0
            height = video.codec_context.height if video is not None else 0
            if video is not None and (width <= 0 or height <= 0):
                raise InvalidArgument(f"{field}: the picture has no size")
            return MediaInfo(
                has_video=video is not None,
                has_audio=audio is not None,
                width=width,
                height=height,
                sample_rate=audio.codec_context.sample_rate if audio is not None else 0,
                duration_ms=duration_ms,
                codec=(video or audio).codec_context.name,
            )
    except (av.FFmpegError, UnicodeDecodeError, ValueError) as error:
        raise InvalidArgument(f"{field}: not a readable image, audio or video file ({error})") from error


def _decoded_duration_ms(container: av.container.InputContainer, stream: av.AudioStream) -> int:
    # Container headers lie (VBR MP3, truncated WAV); counting decoded samples does not.
    samples = 0
    for frame in container.decode(stream):
        samples += frame.samples
    if samples == 0:
        raise InvalidArgument("audio decodes to no samples")
    return round(samples * 1000 / stream.codec_context.sample_rate)


def _video_duration_ms(container: av.container.InputContainer, stream: av.VideoStream) -> int:
    if stream.duration is not None and stream.time_base is not None:
        return round(float(stream.duration * stream.time_base) * 1000)
    if container.duration is not None:
        return round(container.duration / 1000)
    return 0


def ffmpeg_exe() -> str:
    """The FFmpeg binary shipped in the imageio-ffmpeg wheel (libx264, libass, AAC included)."""
    return imageio_ffmpeg.get_ffmpeg_exe()


async def run_ffmpeg(
    argv: list[str], timeout_seconds: float, env: Mapping[str, str] | None = None, niceness: int = 0
) -> str:
    """Runs FFmpeg; kills it if the caller is cancelled or the timeout passes, and raises MediaError on failure.

    `env` adds variables to the environment FFmpeg inherits (FONTCONFIG_FILE, say), through coreutils' `env`.
    `niceness` above 0 runs FFmpeg at a lower CPU priority (coreutils' `nice`). Both are argv prefixes, like
    `setpriv`, rather than a `preexec_fn` or an environment built from this process's. Returns FFmpeg's
    stderr, where analysis filters (ebur128) print what they measured. The error carries the command and stderr's
    tail, also when the timeout stopped FFmpeg: what it printed last shows where it was stuck.
    """
    process = await asyncio.create_subprocess_exec(
        *_dies_with_parent(),
        *_niced(niceness),
        *_with_env(env or {}),
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    stderr = bytearray()

    async def finish() -> None:
        assert process.stderr is not None
        while chunk := await process.stderr.read(_READ_BYTES):
            stderr.extend(chunk)
        await process.wait()

    try:
        await asyncio.wait_for(finish(), timeout_seconds)
    except TimeoutError:
        await _kill(process)
        reason = f"ffmpeg ran longer than {timeout_seconds:.0f} s and was stopped"
        raise _failure(reason, argv, _tail(stderr)) from None
    except BaseException:
        # Cancelled (the caller went away) or anything else: never leave an FFmpeg process behind.
        await _kill(process)
        raise
    if process.returncode != 0:
        tail = _tail(stderr)
        last_line = tail.strip().splitlines()[-1] if tail.strip() else ""
        raise _failure(f"ffmpeg exited with {process.returncode}: {last_line}", argv, tail)
    return stderr.decode("utf-8", "replace")


def _tail(stderr: bytes) -> str:
    # Redacted whole before it is cut, so a secret that straddles the cut cannot survive in part.
    return redact(stderr.decode("utf-8", "replace"))[-STDERR_TAIL_CHARS:]


def _failure(message: str, argv: list[str], tail: str) -> MediaError:
    error = MediaError(message, argv, tail)
    _LOGGER.warning("%s\n%s\n%s", message, shlex.join(error.argv), error.stderr_tail)
    return error


async def _kill(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.kill()
        await process.wait()
