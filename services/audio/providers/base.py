"""What a speech provider takes and returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Protocol

from services.common.providers import ProviderDescription, Quality


@dataclass(frozen=True)
class SpeechJob:
    text: str
    voice: str
    quality: Quality
    render_id: str = ""


@dataclass(frozen=True)
class Timing:
    """When a sentence or word is spoken, in milliseconds from the start of the audio."""

    text: str
    start_ms: int
    end_ms: int
    is_word: bool = False


@dataclass(frozen=True)
class SpeechResult:
    """Encoded audio; its duration is measured by the service from the bytes, not reported by the provider."""

    data: bytes
    mime_type: str
    model: str
    timings: list[Timing] = field(default_factory=list)
    estimated_cost_usd: float = 0.0


class SpeechProvider(Protocol):
    description: ClassVar[ProviderDescription]

    async def synthesize(self, job: SpeechJob) -> SpeechResult:
        """Speaks the text; raises services.common.errors domain errors on failure."""
        ...
