"""Audio service settings, read once from the environment."""

from __future__ import annotations

from services.common.media_settings import MediaServiceSettings


class AudioSettings(MediaServiceSettings):
    listen_address: str = "127.0.0.1:50052"
    # Provider used when a request names none.
    tts_provider: str = "piper"
    shutdown_grace_seconds: float = 5.0
