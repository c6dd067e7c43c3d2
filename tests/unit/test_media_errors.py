"""A failed FFmpeg run raises MediaError with its command and stderr's tail: bounded, and without configured secrets."""

from __future__ import annotations

import asyncio
import errno
import re

import pytest

from services.common import redact
from services.common.errors import MediaError
from services.common.media import STDERR_TAIL_CHARS, ffmpeg_exe, run_ffmpeg

# A token as a vendor URL would carry it; registered like every secret of a service's settings.
TOKEN = "tok-3f9c2a7d5e1b"
# Port 9 (discard) on loopback: nothing listens, so FFmpeg fails at once and names the URL it could not open.
URL = f"http://user:{TOKEN}@127.0.0.1:9/narration.wav?token={TOKEN}"
# One of ebur128's readings, printed ten times a second of sound.
_READING = re.compile(r"\[Parsed_ebur128_0 @ 0x[0-9a-f]+\] t: [0-9.]+ +TARGET:-23 LUFS .*")


def _failed(argv: list[str], timeout_seconds: float = 60) -> MediaError:
    with pytest.raises(MediaError) as raised:
        asyncio.run(run_ffmpeg(argv, timeout_seconds))
    return raised.value


def test_the_error_carries_the_command_and_stderr_tail_with_secrets_redacted() -> None:
    redact.register(TOKEN)
    argv = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", URL, "-f", "null", "-"]
    error = _failed(argv)
    hidden = URL.replace(TOKEN, redact.REDACTED)
    assert error.argv == (ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", hidden, "-f", "null", "-")
    # FFmpeg echoes the URL it failed to open: the tail keeps the line, without the token.
    assert f"Error opening input file {hidden}." in error.stderr_tail.splitlines()
    assert TOKEN not in error.stderr_tail
    last_line = error.stderr_tail.strip().splitlines()[-1]
    assert last_line == "Error opening input files: Connection refused"
    # The caller's message is the short reason: the exit status and FFmpeg's last line, not the command.
    # FFmpeg exits with its error's errno, negated, as an exit status (0-255).
    assert str(error) == f"ffmpeg exited with {-errno.ECONNREFUSED % 256}: {last_line}"


def test_the_stderr_tail_is_bounded_and_ends_where_ffmpeg_stopped() -> None:
    # Debug logging of two inputs prints about 7000 characters before the third input fails to open.
    argv = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-v", "debug", "-f", "lavfi", "-i", "sine", "-f", "lavfi"]
    argv += ["-i", "testsrc", "-i", "/nonexistent/narration.wav", "-f", "null", "-"]
    error = _failed(argv)
    assert len(error.stderr_tail) == STDERR_TAIL_CHARS
    assert error.stderr_tail.endswith(
        "Error opening input files: No such file or directory\n\nExiting with exit code -2\n"
    )
    assert str(error) == "ffmpeg exited with 254: Exiting with exit code -2"
    assert error.argv == tuple(argv)


def test_a_run_stopped_by_its_timeout_reports_what_ffmpeg_printed_last() -> None:
    # An endless tone, measured: FFmpeg prints its input and the meter's readings until it is stopped.
    argv = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-f", "lavfi", "-i", "sine", "-af", "ebur128", "-f", "null", "-"]
    error = _failed(argv, timeout_seconds=3)
    assert str(error) == "ffmpeg ran longer than 3 s and was stopped"
    assert error.argv == tuple(argv)
    lines = error.stderr_tail.splitlines()
    # Whole lines but the first (cut by the tail) and the last (FFmpeg may have been killed while writing it).
    assert len(lines) > 2
    assert [line for line in lines[1:-1] if not _READING.fullmatch(line)] == []
