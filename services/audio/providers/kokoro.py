"""Kokoro-82M speech on Replicate (jaaari/kokoro-82m, community model, pinned version)."""

from __future__ import annotations

import io

from services.audio.providers.base import SpeechJob, SpeechResult
from services.common.errors import ProviderUnavailable
from services.common.media import probe
from services.common.providers import Price, ProviderDescription
from services.common.replicate_runner import (
    T4_USD_PER_SECOND,
    OutputFile,
    ReplicateModel,
    ReplicateProvider,
    ReplicateSettings,
    run_for_file,
)

# providers.md gives only the prefix f559560e; this full id is what public code pins as "jaaari/kokoro-82m:f559560e…"
# (an exact-string code search: all 10 hits, Python and TypeScript projects, carry this same id). Whether it is still
# the model's latest version is unconfirmed: KOKORO_VERSION overrides it.
KOKORO_VERSION = "f559560eb822dc509045f3921a1921234918b91739db4bf3daab2169b71c7a13"
DEFAULT_VOICE = "af_bella"
# Billed by GPU time on a T4; about 1 s per 100 characters (assumed).
SECONDS_PER_CHAR = 0.01
TIME_LIMIT_SECONDS = 180.0
MAX_AUDIO_BYTES = 100 * 1024 * 1024
_TYPES_BY_HEADER = {
    "audio/wav": "audio/wav",
    "audio/x-wav": "audio/wav",
    "audio/wave": "audio/wav",
    "audio/mpeg": "audio/mpeg",
    "audio/mp3": "audio/mpeg",
}


def audio_type(data: bytes, content_type: str) -> str:
    """The audio's MIME type from its first bytes, else from the served type; never from the URL's suffix."""
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        return "audio/wav"
    if data[:3] == b"ID3" or (len(data) > 1 and data[0] == 0xFF and data[1] & 0xE0 == 0xE0):  # ID3 tag or MPEG sync
        return "audio/mpeg"
    if content_type in _TYPES_BY_HEADER:
        return _TYPES_BY_HEADER[content_type]
    raise ProviderUnavailable(f"kokoro returned audio of an unknown type ({content_type or 'no content type'})")


class KokoroSettings(ReplicateSettings):
    # The pinned version of jaaari/kokoro-82m (a community model runs only by version).
    kokoro_version: str = KOKORO_VERSION
    # Voice used when a request names none.
    kokoro_voice: str = DEFAULT_VOICE


def kokoro_cost(characters: int, gpu_seconds: float | None = None) -> float:
    """GPU time: the measured predict_time when known, else the assumed time for the text's length."""
    return T4_USD_PER_SECOND * (gpu_seconds if gpu_seconds is not None else characters * SECONDS_PER_CHAR)


class KokoroProvider(ReplicateProvider[KokoroSettings, SpeechJob]):
    description = ProviderDescription(
        name="kokoro",
        description="Kokoro-82M speech on Replicate (jaaari/kokoro-82m, pinned version); GPU time; no timings",
        offline=False,
    )
    settings_class = KokoroSettings
    output_settings = (*ReplicateProvider.output_settings, "kokoro_version", "kokoro_voice")

    @classmethod
    def prices(cls, settings: KokoroSettings) -> tuple[Price, ...]:
        return (
            Price(
                "jaaari/kokoro-82m", "GPU second", T4_USD_PER_SECOND, f"T4; assumed {SECONDS_PER_CHAR} s per character"
            ),
        )

    @classmethod
    def estimate_usd(cls, settings: KokoroSettings, job: SpeechJob) -> float:
        return kokoro_cost(len(job.text))

    async def synthesize(self, job: SpeechJob) -> SpeechResult:
        model = ReplicateModel("jaaari/kokoro-82m", self.settings.kokoro_version, "KOKORO_VERSION")
        voice = job.voice or self.settings.kokoro_voice

        def result(output: OutputFile) -> SpeechResult:
            mime_type = audio_type(output.data, output.content_type)
            # Decoded here, inside the job: audio the service could not decode would otherwise be ordered again.
            if not probe(io.BytesIO(output.data), "kokoro audio").has_audio:
                raise ProviderUnavailable("kokoro returned a file with no audio")
            return SpeechResult(
                data=output.data,
                mime_type=mime_type,
                model=model.label,
                estimated_cost_usd=kokoro_cost(len(job.text), output.predict_time),
            )

        return await run_for_file(
            self.settings,
            self.description.name,
            model,
            {"text": job.text, "voice": voice, "speed": 1},
            result,
            time_limit=TIME_LIMIT_SECONDS,
            max_bytes=MAX_AUDIO_BYTES,
        )
