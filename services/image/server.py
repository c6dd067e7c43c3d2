"""Image service bootstrap."""

from __future__ import annotations

from collections.abc import Iterable

from scenecast.v1 import image_service_pb2

from services.common.cache import open_cache
from services.common.providers import ProviderSettings
from services.common.server import Server, build_service, run
from services.image.config import ImageSettings
from services.image.providers import build_registry
from services.image.servicer import ImageServicer

SERVICE_NAME = image_service_pb2.DESCRIPTOR.services_by_name["ImageService"].full_name


def build(settings: ImageSettings, provider_settings: Iterable[ProviderSettings] = ()) -> Server:
    """`provider_settings` replace those the providers would read from the environment (tests pass them)."""
    cache = open_cache(
        settings.asset_cache_url.get_secret_value(), settings.asset_cache_dir, settings.asset_cache_max_bytes
    )
    servicer = ImageServicer(
        build_registry(settings.image_provider, provider_settings), settings.provider_attempts, cache
    )

    return build_service(settings, servicer, SERVICE_NAME)


def main() -> None:
    settings = ImageSettings()
    run("image", lambda: build(settings), settings)
