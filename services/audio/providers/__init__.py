"""Speech providers, keyed by the name used in TTS_PROVIDER and in requests."""

from __future__ import annotations

from collections.abc import Iterable

from services.audio.providers.base import SpeechProvider
from services.audio.providers.edge import EdgeProvider
from services.audio.providers.kokoro import KokoroProvider
from services.audio.providers.openai_tts import OpenAISpeechProvider
from services.audio.providers.piper import PiperProvider
from services.common import pricing
from services.common.providers import ProviderRegistry, ProviderSettings, legacy

# Adding a provider is one module and one line here.
PROVIDERS = (
    PiperProvider,
    OpenAISpeechProvider,
    EdgeProvider,
    # TEMPORARY (issue 15): Kokoro in its old shape, until it is built from settings.
    legacy(
        KokoroProvider,
        lambda job: pricing.kokoro_cost(len(job.text)),
        ("REPLICATE_BASE_URL", "KOKORO_VERSION", "KOKORO_VOICE"),
    ),
)


def build_registry(default: str, settings: Iterable[ProviderSettings] = ()) -> ProviderRegistry[SpeechProvider]:
    """`settings`: provider settings to use instead of reading them from the environment (tests pass them)."""
    return ProviderRegistry(PROVIDERS, default, "TTS_PROVIDER", settings)
