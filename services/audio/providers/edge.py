"""Microsoft Edge's online voices through edge-tts, as MP3 with word timings."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated

import aiohttp
import edge_tts
from edge_tts import communicate as edge_communicate
from edge_tts import constants as edge_constants
from edge_tts.exceptions import EdgeTTSException, NoAudioReceived
from pydantic import Field

from services.audio.providers.base import SpeechJob, SpeechResult, Timing
from services.common.errors import (
    FailedPrecondition,
    InvalidArgument,
    ProviderUnavailable,
    RateLimited,
    ScenecastError,
)
from services.common.providers import Price, Provider, ProviderDescription, ProviderSettings
from services.common.retry import retry_after_seconds

NAME = "edge"
DEFAULT_VOICE = "en-US-AriaNeural"
# The forms edge-tts accepts for rate and volume, and for pitch (edge_tts/data_classes.py), checked at start-up so
# that a bad value names its variable rather than edge-tts's argument.
Percent = Annotated[str, Field(pattern=r"^[+-]\d+%$")]
Hertz = Annotated[str, Field(pattern=r"^[+-]\d+Hz$")]
# edge-tts reports offsets and durations in 100 ns ticks.
TICKS_PER_MS = 10_000


class EdgeSettings(ProviderSettings):
    # wss:// URL of the speech service (a proxy, a fake in tests); empty: Microsoft's.
    edge_tts_wss_url: str = ""
    # Voice used when a request names none.
    edge_tts_voice: str = DEFAULT_VOICE
    # Speaking rate, volume and pitch relative to the voice's own, like "+10%", "-5%", "+2Hz".
    edge_tts_rate: Percent = "+0%"
    edge_tts_volume: Percent = "+0%"
    edge_tts_pitch: Hertz = "+0Hz"


class EdgeProvider(Provider[EdgeSettings, SpeechJob]):
    """No key needed, but every call goes to Microsoft's Read Aloud service, which may change or refuse it any day."""

    description = ProviderDescription(
        name=NAME,
        description=(
            "Microsoft Edge's online voices (edge-tts), MP3 with word timings; voice from the request or "
            f"EDGE_TTS_VOICE (default {DEFAULT_VOICE}). Microsoft's service is unofficial and not for commercial use"
        ),
        offline=False,
    )
    settings_class = EdgeSettings
    output_settings = ("edge_tts_wss_url", "edge_tts_voice", "edge_tts_rate", "edge_tts_volume", "edge_tts_pitch")

    @classmethod
    def prices(cls, settings: EdgeSettings) -> tuple[Price, ...]:
        return (Price("edge-tts", "narration", 0.0, "free service of Microsoft's, not for commercial use"),)

    @classmethod
    def estimate_usd(cls, settings: EdgeSettings, job: SpeechJob) -> float:
        return 0.0

    async def synthesize(self, job: SpeechJob) -> SpeechResult:
        settings = self.settings
        voice = job.voice or settings.edge_tts_voice
        source = "voice" if job.voice else "EDGE_TTS_VOICE"
        try:
            communicate = edge_tts.Communicate(
                job.text,
                voice,
                rate=settings.edge_tts_rate,
                volume=settings.edge_tts_volume,
                pitch=settings.edge_tts_pitch,
                boundary="WordBoundary",
            )
        except ValueError as error:  # the prosody is checked at start-up, so it is the voice's form
            raise InvalidArgument(f"{source} {voice!r} is not an edge-tts voice name like {DEFAULT_VOICE!r}") from error
        _point_at_endpoint(settings.edge_tts_wss_url)
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


def _point_at_endpoint(url: str) -> None:
    """Points edge-tts at `url` (EDGE_TTS_WSS_URL: tests, proxies), or at Microsoft when it is empty.

    edge-tts has no URL setting: it formats the module global communicate.WSS_URL into the URL each time it opens a
    socket (the first try, its retry after a 403, one socket per 4096-byte piece of text). A patch undone after the
    call would have to stay in place, under a lock, for the whole stream, serialising every synthesis. The setting
    is process-wide, like the global, so copying it into the global before each call is exact and needs no lock;
    edge_tts.constants keeps the original.
    """
    url = url or edge_constants.WSS_URL
    # edge-tts appends "&ConnectionId=...", so the URL needs a query string; the real one starts with the token.
    if "?" not in url:
        url += f"?TrustedClientToken={edge_constants.TRUSTED_CLIENT_TOKEN}"
    edge_communicate.WSS_URL = url


def _handshake_error(error: aiohttp.ClientResponseError) -> ScenecastError:
    status = error.status
    if status == 429:
        return RateLimited(f"{NAME}: the speech service is throttling us (HTTP 429)", _retry_after(error.headers))
    if status in (401, 403):
        # edge-tts has already corrected its clock from the 403's Date header and tried once more: another attempt
        # would be refused the same way, so this needs the operator, not a retry.
        return FailedPrecondition(
            f"{NAME}: the speech service refused the connection (HTTP {status}); the edge-tts client token is "
            "probably stale or the clock far off: upgrade edge-tts (pip install -U edge-tts) and check that the "
            "system clock is right (NTP)"
        )
    if 400 <= status < 500 and status != 408:
        return FailedPrecondition(
            f"{NAME}: the speech service rejected the connection (HTTP {status}); check EDGE_TTS_WSS_URL if it is set"
        )
    return ProviderUnavailable(f"{NAME}: the speech service answered HTTP {status}", _retry_after(error.headers))


def _retry_after(headers: Mapping[str, str] | None) -> float | None:
    return retry_after_seconds(headers.get("Retry-After") if headers else None)


def _ms(ticks: float) -> int:
    return round(ticks / TICKS_PER_MS)
