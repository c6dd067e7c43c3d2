"""Video providers, keyed by the name used in VIDEO_PROVIDER and in requests."""

from __future__ import annotations

from services.common.providers import ProviderRegistry
from services.video.providers.base import VideoProvider
from services.video.providers.kenburns import KenBurnsProvider
from services.video.providers.selfhosted import SelfHostedProvider
from services.video.providers.wan import WanProvider

# Adding a provider is one module and one line here.
_PROVIDERS = (KenBurnsProvider, WanProvider, SelfHostedProvider)


def build_registry(default: str) -> ProviderRegistry[VideoProvider]:
    return ProviderRegistry(_PROVIDERS, default, "VIDEO_PROVIDER")
