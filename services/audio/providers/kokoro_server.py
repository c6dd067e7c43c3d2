"""Kokoro on your own server (Kokoro-FastAPI): the OpenAI speech API shape, as WAV with word timings where offered.

Kokoro-FastAPI has no client package of its own (the openai SDK is its suggested client, but it cannot reach the
captioned-speech route, which lies outside `/v1`); both routes are called with httpx so that one mapping of the
server's errors serves them.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import logging
from typing import Any

import httpx
from pydantic import Field, SecretStr

from services.audio.providers.base import SpeechJob, SpeechResult, Timing
from services.common.errors import (
    InvalidArgument,
    MissingCredential,
    ProviderUnavailable,
    ScenecastError,
)
from services.common.media import probe
from services.common.providers import Price, Provider, ProviderDescription, ProviderSettings
from services.common.retry import http_status_error

_LOGGER = logging.getLogger(__name__)

NAME = "kokoro-server"
URL_ENV = "KOKORO_SERVER_URL"
KEY_ENV = "KOKORO_SERVER_API_KEY"
DEFAULT_VOICE = "af_heart"
# Kokoro-FastAPI takes "kokoro" (and OpenAI's model names, which it maps to the same model).
MODEL = "kokoro"
SPEECH_PATH = "/v1/audio/speech"
# Returns the audio (base64) with word timestamps; newer servers only, and outside /v1.
CAPTIONED_PATH = "/dev/captioned_speech"
# WAV, not the server's default MP3: an MP3 encoder's leading padding would put the audio behind its timestamps.
AUDIO_FORMAT = "wav"
DEFAULT_TIMEOUT_SECONDS = 120.0
CONNECT_TIMEOUT_SECONDS = 10.0
_DETAIL_CHARS = 300


class KokoroServerSettings(ProviderSettings):
    # Base URL of your Kokoro-FastAPI server, like http://kokoro:8880 (its default port); requests for kokoro-server
    # fail with FAILED_PRECONDITION naming KOKORO_SERVER_URL while it is unset. Not a secret (it goes into the cache
    # key as written): a proxy's credentials go in KOKORO_SERVER_API_KEY, never in the URL.
    kokoro_server_url: str = ""
    # Sent as a Bearer token when set: Kokoro-FastAPI has no auth of its own, but a proxy in front of it may.
    kokoro_server_api_key: SecretStr = SecretStr("")
    # Voice used when a request names none: a Kokoro voice ("af_heart", "bm_george") or a mix ("af_bella+af_sky").
    kokoro_server_voice: str = DEFAULT_VOICE
    # What 1M characters cost you on your own hardware, in USD; 0 by default since no vendor bills this server.
    kokoro_server_usd_per_million_chars: float = Field(default=0.0, ge=0)
    # Longest one narration may take, in seconds.
    kokoro_server_timeout_seconds: float = Field(default=DEFAULT_TIMEOUT_SECONDS, gt=0, le=3600)

    @property
    def url(self) -> str:
        return self.kokoro_server_url.strip().rstrip("/")


class KokoroServerProvider(Provider[KokoroServerSettings, SpeechJob]):
    description = ProviderDescription(
        name=NAME,
        description=(
            f"Kokoro on your own Kokoro-FastAPI server ({URL_ENV}), WAV with word timings when the server offers them; "
            f"voice from the request or KOKORO_SERVER_VOICE (default {DEFAULT_VOICE})"
        ),
        offline=False,
    )
    settings_class = KokoroServerSettings
    required_settings = ("kokoro_server_url",)
    output_settings = ("kokoro_server_url", "kokoro_server_voice")

    def __init__(self, settings: KokoroServerSettings) -> None:
        super().__init__(settings)
        # Learnt from the first 404: an older server has no captioned route, and asking it on every scene would only
        # double the requests. The provider is built once per service, so this holds for the process.
        self._captions_offered = True

    @classmethod
    def prices(cls, settings: KokoroServerSettings) -> tuple[Price, ...]:
        rate = settings.kokoro_server_usd_per_million_chars
        return (Price("kokoro", "1M characters", rate, "your own server: KOKORO_SERVER_USD_PER_MILLION_CHARS"),)

    @classmethod
    def estimate_usd(cls, settings: KokoroServerSettings, job: SpeechJob) -> float:
        return len(job.text) * settings.kokoro_server_usd_per_million_chars / 1_000_000

    async def synthesize(self, job: SpeechJob) -> SpeechResult:
        settings = self.settings
        if not settings.url:
            raise MissingCredential(URL_ENV, NAME)
        body: dict[str, Any] = {
            "model": MODEL,
            "input": job.text,
            "voice": job.voice or settings.kokoro_server_voice,
            "response_format": AUDIO_FORMAT,
            "speed": 1.0,
            # Kokoro-FastAPI streams by default (one chunk per sentence); one answer is what is kept.
            "stream": False,
        }
        headers = {}
        if key := settings.kokoro_server_api_key.get_secret_value():
            headers["Authorization"] = f"Bearer {key}"
        timeout = httpx.Timeout(CONNECT_TIMEOUT_SECONDS, read=settings.kokoro_server_timeout_seconds)
        async with httpx.AsyncClient(base_url=settings.url, headers=headers, timeout=timeout) as client:
            if self._captions_offered:
                response = await _post(client, CAPTIONED_PATH, {**body, "return_timestamps": True})
                if response.status_code != 404:
                    audio, timings = _captioned(_checked(response))
                    return await self._result(job, audio, timings)
                _LOGGER.info("%s: the server has no %s; speaking without word timings", NAME, CAPTIONED_PATH)
                self._captions_offered = False
            response = _checked(await _post(client, SPEECH_PATH, body))
            return await self._result(job, response.content, [])

    async def _result(self, job: SpeechJob, audio: bytes, timings: list[Timing]) -> SpeechResult:
        if audio[:4] != b"RIFF" or audio[8:12] != b"WAVE":
            raise ProviderUnavailable(f"{NAME}: the server answered {len(audio)} bytes that are not WAV audio")
        # Decoded here: audio the service cannot read is worth another attempt (it costs nothing at the vendor).
        try:
            info = await asyncio.to_thread(probe, io.BytesIO(audio), f"{NAME} audio")
        except InvalidArgument as error:
            raise ProviderUnavailable(f"{NAME}: the server's audio does not decode ({error})") from error
        if not info.has_audio:
            raise ProviderUnavailable(f"{NAME}: the server's answer has no audio")
        return SpeechResult(
            data=audio,
            mime_type="audio/wav",
            model=MODEL,
            timings=timings,
            estimated_cost_usd=self.estimate_usd(self.settings, job),
        )


async def _post(client: httpx.AsyncClient, path: str, body: dict[str, Any]) -> httpx.Response:
    try:
        return await client.post(path, json=body)
    except httpx.TimeoutException as error:
        raise ProviderUnavailable(f"{NAME}: the server at {URL_ENV} did not answer in time ({error!r})") from error
    except httpx.HTTPError as error:
        raise ProviderUnavailable(f"{NAME}: the server at {URL_ENV} could not be reached: {error!r}") from error


def _checked(response: httpx.Response) -> httpx.Response:
    """The response when it succeeded, else the domain error that says what to do."""
    if response.is_success:
        return response
    raise _status_error(response)


def _status_error(response: httpx.Response) -> ScenecastError:
    """Kokoro-FastAPI's errors are `{"detail": {"error", "message", "type"}}`: 400 for a bad voice or input, 500 when
    synthesis failed; 401/403 can only come from a proxy in front of it."""
    code, detail = response.status_code, _detail(response)
    return http_status_error(
        response,
        throttled=f"{NAME}: the server throttled the request (429): {detail}",
        failed=f"{NAME}: the server failed ({code}): {detail}",
        denied=f"{NAME}: the server at {URL_ENV} refused access ({code}); check {KEY_ENV}",
        missing=f"{NAME}: the server at {URL_ENV} has no {response.request.url.path}; check the URL",
        refused=f"{NAME}: the server refused the request ({code}): {detail}; check voice and text",
    )


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:_DETAIL_CHARS] or "no detail given"
    detail = body.get("detail") if isinstance(body, dict) else None
    if isinstance(detail, dict):
        return str(detail.get("message") or detail.get("error") or detail)[:_DETAIL_CHARS]
    return str(detail if detail is not None else body)[:_DETAIL_CHARS]


def _captioned(response: httpx.Response) -> tuple[bytes, list[Timing]]:
    """The audio and word timings of `{audio: base64, audio_format, timestamps: [{word, start_time, end_time}]}`
    (seconds from the start of the audio)."""
    try:
        body = response.json()
        audio = base64.b64decode(body["audio"], validate=True)
        # Kokoro times punctuation as tokens of its own; captions time written words, which carry their punctuation.
        timings = [_word(stamp) for stamp in body.get("timestamps") or [] if _is_word(str(stamp.get("word", "")))]
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error) as error:
        raise ProviderUnavailable(f"{NAME}: the captioned answer is not readable ({error!r})") from error
    return audio, timings


def _is_word(token: str) -> bool:
    return any(character.isalnum() for character in token)


def _word(stamp: dict[str, Any]) -> Timing:
    start_ms = round(float(stamp["start_time"]) * 1000)
    return Timing(str(stamp["word"]), start_ms, max(start_ms, round(float(stamp["end_time"]) * 1000)), is_word=True)
