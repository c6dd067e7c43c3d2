"""Image providers, keyed by the name used in IMAGE_PROVIDER and in requests."""

from __future__ import annotations

from services.common.providers import ProviderRegistry
from services.image.providers.base import ImageProvider
from services.image.providers.openai_images import DallE3Provider, GptImageMiniProvider
from services.image.providers.replicate_images import FluxProvider, SdxlProvider
from services.image.providers.slides import SlidesProvider

# Adding a provider is one module and one line here.
_PROVIDERS = (SlidesProvider, DallE3Provider, GptImageMiniProvider, SdxlProvider, FluxProvider)


def build_registry(default: str) -> ProviderRegistry[ImageProvider]:
    return ProviderRegistry(_PROVIDERS, default, "IMAGE_PROVIDER")
