"""Kokoro-82M speech on Replicate (jaaari/kokoro-82m, community model, pinned version)."""

from __future__ import annotations

import io
import os
from typing import ClassVar

from services.audio.providers.base import SpeechJob, SpeechResult
from services.common import pricing
from services.common.errors import ProviderUnavailable
from services.common.media import probe
from services.common.providers import ProviderDescription
from services.common.replicate_runner import TOKEN_ENV, OutputFile, ReplicateModel, run_for_file

# providers.md gives only the prefix f559560e; this full id is what public code pins as "jaaari/kokoro-82m:f559560e…"
# (an exact-string code search: all 10 hits, Python and TypeScript projects, carry this same id). Whether it is still
# the model's latest version is unconfirmed: KOKORO_VERSION overrides it at request time.
KOKORO_VERSION = "f559560eb822dc509045f3921a1921234918b91739db4bf3daab2169b71c7a13"
DEFAULT_VOICE = "af_bella"
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


class KokoroProvider:
    description: ClassVar[ProviderDescription] = ProviderDescription(
        name="kokoro",
        description="Kokoro-82M speech on Replicate (jaaari/kokoro-82m, pinned version); GPU time; no timings",
        offline=False,
        required_env=(TOKEN_ENV,),
        prices=pricing.PRICE_TABLE["kokoro"],
    )

    async def synthesize(self, job: SpeechJob) -> SpeechResult:
        version = os.environ.get("KOKORO_VERSION") or KOKORO_VERSION
        model = ReplicateModel("jaaari/kokoro-82m", version, "KOKORO_VERSION")
        voice = job.voice or os.environ.get("KOKORO_VOICE") or DEFAULT_VOICE

        def result(output: OutputFile) -> SpeechResult:
            mime_type = audio_type(output.data, output.content_type)
            # Decoded here, inside the job: audio the service could not decode would otherwise be ordered again.
            if not probe(io.BytesIO(output.data), "kokoro audio").has_audio:
                raise ProviderUnavailable("kokoro returned a file with no audio")
            return SpeechResult(
                data=output.data,
                mime_type=mime_type,
                model=model.label,
                estimated_cost_usd=pricing.kokoro_cost(len(job.text), output.predict_time),
            )

        return await run_for_file(
            self.description.name,
            model,
            {"text": job.text, "voice": voice, "speed": 1},
            result,
            time_limit=TIME_LIMIT_SECONDS,
            max_bytes=MAX_AUDIO_BYTES,
        )
