"""Audio service settings, read once from the environment."""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict


class AudioSettings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    # host:port to listen on; port 0 picks a free one.
    listen_address: str = "127.0.0.1:50052"
    # Provider used when a request names none.
    tts_provider: str = "piper"
    # Attempts per provider call for failures that can succeed later (429, 5xx, timeouts); jittered backoff between.
    provider_attempts: int = 4
    # Seconds running calls get to finish after SIGTERM.
    shutdown_grace_seconds: float = 5.0
