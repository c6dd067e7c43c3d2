"""Microsoft Edge's online voices through edge-tts, as MP3 with word timings."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import ClassVar

import aiohttp
import edge_tts
from edge_tts import communicate as edge_communicate
from edge_tts import constants as edge_constants
from edge_tts.exceptions import EdgeTTSException, NoAudioReceived

from services.audio.providers.base import SpeechJob, SpeechResult, Timing
from services.common import pricing
from services.common.errors import (
    FailedPrecondition,
    InvalidArgument,
    ProviderUnavailable,
    RateLimited,
    ScenecastError,
)
from services.common.providers import ProviderDescription

NAME = "edge"
DEFAULT_VOICE = "en-US-AriaNeural"
# The forms edge-tts accepts for rate and volume, and for pitch (edge_tts/data_classes.py).
PERCENT = r"[+-]\d+%"
HERTZ = r"[+-]\d+Hz"
# edge-tts reports offsets and durations in 100 ns ticks.
TICKS_PER_MS = 10_000


class EdgeProvider:
    """No key needed, but every call goes to Microsoft's Read Aloud service, which may change or refuse it any day."""

    description: ClassVar[ProviderDescription] = ProviderDescription(
        name=NAME,
        description=(
            "Microsoft Edge's online voices (edge-tts), MP3 with word timings; voice from the request or "
            f"EDGE_TTS_VOICE (default {DEFAULT_VOICE}). Microsoft's service is unofficial and not for commercial use"
        ),
        offline=False,
        prices=pricing.PRICE_TABLE[NAME],
    )

    async def synthesize(self, job: SpeechJob) -> SpeechResult:
        voice = job.voice or os.environ.get("EDGE_TTS_VOICE") or DEFAULT_VOICE
        source = "voice" if job.voice else "EDGE_TTS_VOICE"
        # Checked here, so that a bad value names its variable rather than edge-tts's argument.
        rate = _prosody("EDGE_TTS_RATE", PERCENT, "+0%")
        volume = _prosody("EDGE_TTS_VOLUME", PERCENT, "+0%")
        pitch = _prosody("EDGE_TTS_PITCH", HERTZ, "+0Hz")
        try:
            communicate = edge_tts.Communicate(
                job.text, voice, rate=rate, volume=volume, pitch=pitch, boundary="WordBoundary"
            )
        except ValueError as error:  # the prosody is already checked, so it is the voice's form
            raise InvalidArgument(f"{source} {voice!r} is not an edge-tts voice name like {DEFAULT_VOICE!r}") from error
        _point_at_endpoint()
        audio = bytearray()
        timings: list[Timing] = []
        try:
            async for chunk in communicate.stream():
                if chunk["type"] == "audio":
                    audio += chunk["data"]
                elif chunk["type"] == "WordBoundary":
                    start = chunk["offset"]
                    timings.append(Timing(chunk["text"], _ms(start), _ms(start + chunk["duration"]), is_word=True))
        except NoAudioReceived as error:
            # The service answers an unknown voice or bad prosody by sending nothing; retrying will not help.
            raise InvalidArgument(
                f"{NAME}: no audio for {source} {voice!r}; check the name with `edge-tts --list-voices`"
            ) from error
        except aiohttp.ClientResponseError as error:
            raise _handshake_error(error) from error
        except (TimeoutError, aiohttp.ClientError, EdgeTTSException) as error:
            raise ProviderUnavailable(f"{NAME}: the connection to the speech service failed ({error!r})") from error
        if not audio:
            raise ProviderUnavailable(f"{NAME}: the speech service sent no audio")
        # edge-tts ends quietly when the socket closes mid-turn (it raises only when no audio came at all), so a cut
        # stream would pass for a short success. It credits a chunk's bytes to cumulative_audio_bytes only when
        # that chunk's turn.end arrives: any shortfall means a turn never finished.
        if communicate.state["cumulative_audio_bytes"] != len(audio):
            raise ProviderUnavailable(f"{NAME}: the stream closed before the service finished; the audio is cut short")
        return SpeechResult(data=bytes(audio), mime_type="audio/mpeg", model=f"edge-tts:{voice}", timings=timings)


def _point_at_endpoint() -> None:
    """Points edge-tts at EDGE_TTS_WSS_URL (tests, proxies), or at Microsoft when it is unset.

    edge-tts has no URL setting: it formats the module global communicate.WSS_URL into the URL each time it opens a
    socket (the first try, its retry after a 403, one socket per 4096-byte piece of text). A patch undone after the
    call would have to stay in place, under a lock, for the whole stream, serialising every synthesis. The variable
    is process-wide, like the global, so copying it into the global before each call is exact and needs no lock;
    edge_tts.constants keeps the original.
    """
    url = os.environ.get("EDGE_TTS_WSS_URL") or edge_constants.WSS_URL
    # edge-tts appends "&ConnectionId=...", so the URL needs a query string; the real one starts with the token.
    if "?" not in url:
        url += f"?TrustedClientToken={edge_constants.TRUSTED_CLIENT_TOKEN}"
    edge_communicate.WSS_URL = url


def _prosody(variable: str, pattern: str, default: str) -> str:
    value = os.environ.get(variable) or default
    if not re.fullmatch(pattern, value):
        raise InvalidArgument(f"{variable}={value!r} is not valid; use a signed whole number and unit like {default!r}")
    return value


def _handshake_error(error: aiohttp.ClientResponseError) -> ScenecastError:
    status = error.status
    if status == 429:
        return RateLimited(f"{NAME}: the speech service is throttling us (HTTP 429)", _retry_after(error.headers))
    if status in (401, 403):
        # edge-tts has already corrected its clock from the 403's Date header and tried once more.
        return ProviderUnavailable(
            f"{NAME}: the speech service refused the connection (HTTP {status}); usually the edge-tts client token "
            "is stale (upgrade edge-tts) or the system clock is far off"
        )
    if 400 <= status < 500 and status != 408:
        return FailedPrecondition(
            f"{NAME}: the speech service rejected the connection (HTTP {status}); check EDGE_TTS_WSS_URL if it is set"
        )
    return ProviderUnavailable(f"{NAME}: the speech service answered HTTP {status}", _retry_after(error.headers))


def _retry_after(headers: Mapping[str, str] | None) -> float | None:
    try:
        return float(headers["Retry-After"]) if headers and "Retry-After" in headers else None
    except ValueError:
        return None


def _ms(ticks: float) -> int:
    return round(ticks / TICKS_PER_MS)
