"""Audio service settings, read once from the environment."""

from __future__ import annotations

from services.common.settings import ServiceSettings


class AudioSettings(ServiceSettings):
    listen_address: str = "127.0.0.1:50052"
    # Provider used when a request names none.
    tts_provider: str = "piper"
    # Attempts per provider call for failures that can succeed later (429, 5xx, timeouts); jittered backoff between.
    provider_attempts: int = 4
    shutdown_grace_seconds: float = 5.0
