"""Speech providers, keyed by the name used in TTS_PROVIDER and in requests."""

from __future__ import annotations

from collections.abc import Iterable

from services.audio.providers.base import SpeechProvider
from services.audio.providers.edge import EdgeProvider
from services.audio.providers.kokoro import KokoroProvider
from services.audio.providers.kokoro_server import KokoroServerProvider
from services.audio.providers.openai_tts import OpenAISpeechProvider
from services.audio.providers.piper import PiperProvider
from services.common.providers import ProviderRegistry, ProviderSettings

# Adding a provider is one module and one line here.
PROVIDERS = (
    PiperProvider,
    OpenAISpeechProvider,
    EdgeProvider,
    KokoroProvider,
    KokoroServerProvider,
)


def build_registry(default: str, settings: Iterable[ProviderSettings] = ()) -> ProviderRegistry[SpeechProvider]:
    """`settings`: provider settings to use instead of reading them from the environment (tests pass them)."""
    return ProviderRegistry(PROVIDERS, default, "TTS_PROVIDER", settings)
