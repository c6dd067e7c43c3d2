"""Audio service bootstrap."""

from __future__ import annotations

from collections.abc import Iterable

from scenecast.v1 import audio_service_pb2

from services.audio.config import AudioSettings
from services.audio.providers import build_registry
from services.audio.servicer import AudioServicer
from services.common.cache import open_cache
from services.common.providers import ProviderSettings
from services.common.server import Server, build_service, run

SERVICE_NAME = audio_service_pb2.DESCRIPTOR.services_by_name["AudioService"].full_name


def build(settings: AudioSettings, provider_settings: Iterable[ProviderSettings] = ()) -> Server:
    """`provider_settings` replace those the providers would read from the environment (tests pass them)."""
    registry = build_registry(settings.tts_provider, provider_settings)
    if registry.default:
        registry.get("", "TTS_PROVIDER")  # warm-up: load the default voice before reporting SERVING
    cache = open_cache(
        settings.asset_cache_url.get_secret_value(), settings.asset_cache_dir, settings.asset_cache_max_bytes
    )
    servicer = AudioServicer(registry, settings.provider_attempts, cache)

    return build_service(settings, servicer, SERVICE_NAME)


def main() -> None:
    settings = AudioSettings()
    run("audio", lambda: build(settings), settings)
