"""Image service settings, read once from the environment."""

from __future__ import annotations

from services.common.media_settings import MediaServiceSettings


class ImageSettings(MediaServiceSettings):
    listen_address: str = "127.0.0.1:50051"
    # Provider used when a request names none.
    image_provider: str = "slides"
    shutdown_grace_seconds: float = 5.0
