"""Image providers, keyed by the name used in IMAGE_PROVIDER and in requests."""

from __future__ import annotations

from collections.abc import Iterable

from services.common.providers import ProviderRegistry, ProviderSettings
from services.image.providers.base import ImageProvider
from services.image.providers.fal_images import FalFluxProvider
from services.image.providers.openai_images import DallE3Provider, GptImageMiniProvider
from services.image.providers.replicate_images import FluxProvider, SdxlProvider
from services.image.providers.slides import SlidesProvider
from services.image.providers.stock_photos import PexelsPhotoProvider, PixabayImageProvider

# Adding a provider is one module and one line here.
PROVIDERS = (
    SlidesProvider,
    DallE3Provider,
    GptImageMiniProvider,
    SdxlProvider,
    FluxProvider,
    FalFluxProvider,
    PexelsPhotoProvider,
    PixabayImageProvider,
)


def build_registry(default: str, settings: Iterable[ProviderSettings] = ()) -> ProviderRegistry[ImageProvider]:
    """`settings`: provider settings to use instead of reading them from the environment (tests pass them)."""
    return ProviderRegistry(PROVIDERS, default, "IMAGE_PROVIDER", settings)
