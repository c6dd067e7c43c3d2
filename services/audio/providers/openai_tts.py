"""OpenAI Speech (tts-1, tts-1-hd) through the openai SDK, as WAV or MP3."""

from __future__ import annotations

import os
from typing import ClassVar

import openai

from services.audio.providers.base import SpeechJob, SpeechResult
from services.common import pricing
from services.common.errors import FailedPrecondition, InvalidArgument, ProviderUnavailable
from services.common.openai_errors import map_openai_error, openai_client
from services.common.providers import ProviderDescription, Quality

NAME = "openai"
# OpenAI's limit on `input`, in characters.
MAX_INPUT_CHARS = 4096
DEFAULT_VOICE = "alloy"
# OPENAI_TTS_FORMAT values we accept, with the MIME type of each; WAV by default because it decodes without loss.
FORMATS = {"wav": "audio/wav", "mp3": "audio/mpeg"}


class OpenAISpeechProvider:
    """No timings: OpenAI gives none, so the assembler captions the narration one sentence at a time by itself."""

    description: ClassVar[ProviderDescription] = ProviderDescription(
        name=NAME,
        description="OpenAI Speech (tts-1, or tts-1-hd for hd); voice from the request or OPENAI_TTS_VOICE",
        offline=False,
        required_env=("OPENAI_API_KEY",),
        prices=pricing.PRICE_TABLE[NAME],
    )

    async def synthesize(self, job: SpeechJob) -> SpeechResult:
        if len(job.text) > MAX_INPUT_CHARS:
            raise InvalidArgument(
                f"text has {len(job.text)} characters; OpenAI speech takes at most {MAX_INPUT_CHARS}, "
                "so split the scene"
            )
        audio_format = os.environ.get("OPENAI_TTS_FORMAT") or "wav"
        if audio_format not in FORMATS:
            raise FailedPrecondition(
                f"OPENAI_TTS_FORMAT={audio_format!r} is not supported; use one of: {', '.join(FORMATS)}"
            )
        model = "tts-1-hd" if job.quality == Quality.HD else "tts-1"
        client = openai_client(NAME)
        try:
            response = await client.audio.speech.create(
                model=model,
                input=job.text,
                voice=job.voice or os.environ.get("OPENAI_TTS_VOICE") or DEFAULT_VOICE,
                response_format=audio_format,  # type: ignore[arg-type]  # checked against FORMATS above
            )
        except openai.OpenAIError as error:
            raise map_openai_error(error, NAME, "text") from error
        if not response.content:
            raise ProviderUnavailable(f"{NAME}: OpenAI answered with no audio")
        return SpeechResult(
            data=response.content,
            mime_type=FORMATS[audio_format],
            model=model,
            estimated_cost_usd=pricing.openai_tts_cost(job.quality, len(job.text)),
        )
