"""OpenAI Speech (tts-1, tts-1-hd) through the openai SDK, as WAV or MP3."""

from __future__ import annotations

from typing import Literal

import openai

from services.audio.providers.base import SpeechJob, SpeechResult
from services.common.errors import InvalidArgument, ProviderUnavailable
from services.common.openai_errors import OpenAISettings, map_openai_error, openai_client
from services.common.providers import Price, Provider, ProviderDescription, Quality

NAME = "openai"
# OpenAI's limit on `input`, in characters.
MAX_INPUT_CHARS = 4096
# The MIME type of each format we ask for.
FORMATS = {"wav": "audio/wav", "mp3": "audio/mpeg"}
# USD per 1M characters, by model.
USD_PER_MILLION_CHARS = {"tts-1": 15.0, "tts-1-hd": 30.0}


class OpenAISpeechSettings(OpenAISettings):
    # "wav" (the default: it decodes without loss) or "mp3".
    openai_tts_format: Literal["wav", "mp3"] = "wav"
    # Voice used when a request names none.
    openai_tts_voice: str = "alloy"


class OpenAISpeechProvider(Provider[OpenAISpeechSettings, SpeechJob]):
    """No timings: OpenAI gives none, so the assembler captions the narration one sentence at a time by itself."""

    description = ProviderDescription(
        name=NAME,
        description="OpenAI Speech (tts-1, or tts-1-hd for hd); voice from the request or OPENAI_TTS_VOICE",
        offline=False,
    )
    settings_class = OpenAISpeechSettings
    required_settings = ("openai_api_key",)
    output_settings = ("openai_base_url", "openai_tts_format", "openai_tts_voice")

    @classmethod
    def prices(cls, settings: OpenAISpeechSettings) -> tuple[Price, ...]:
        return (
            Price("tts-1", "1M characters", USD_PER_MILLION_CHARS["tts-1"], "at draft or standard quality"),
            Price("tts-1-hd", "1M characters", USD_PER_MILLION_CHARS["tts-1-hd"], "at hd quality"),
        )

    @classmethod
    def estimate_usd(cls, settings: OpenAISpeechSettings, job: SpeechJob) -> float:
        return len(job.text) * USD_PER_MILLION_CHARS[_model(job)] / 1_000_000

    async def synthesize(self, job: SpeechJob) -> SpeechResult:
        if len(job.text) > MAX_INPUT_CHARS:
            raise InvalidArgument(
                f"text has {len(job.text)} characters; OpenAI speech takes at most {MAX_INPUT_CHARS}, "
                "so split the scene"
            )
        model = _model(job)
        client = openai_client(self.settings, NAME)
        audio_format = self.settings.openai_tts_format
        try:
            response = await client.audio.speech.create(
                model=model,
                input=job.text,
                voice=job.voice or self.settings.openai_tts_voice,
                response_format=audio_format,
            )
        except openai.OpenAIError as error:
            raise map_openai_error(error, NAME, "text") from error
        if not response.content:
            raise ProviderUnavailable(f"{NAME}: OpenAI answered with no audio")
        return SpeechResult(
            data=response.content,
            mime_type=FORMATS[audio_format],
            model=model,
            estimated_cost_usd=self.estimate_usd(self.settings, job),
        )


def _model(job: SpeechJob) -> str:
    return "tts-1-hd" if job.quality == Quality.HD else "tts-1"
