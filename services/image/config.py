"""Image service settings, read once from the environment."""

from __future__ import annotations

from services.common.settings import ServiceSettings


class ImageSettings(ServiceSettings):
    listen_address: str = "127.0.0.1:50051"
    # Provider used when a request names none.
    image_provider: str = "slides"
    # Attempts per provider call for failures that can succeed later (429, 5xx, timeouts); jittered backoff between.
    provider_attempts: int = 4
    shutdown_grace_seconds: float = 5.0
