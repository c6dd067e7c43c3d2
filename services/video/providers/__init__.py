"""Video providers, keyed by the name used in VIDEO_PROVIDER and in requests."""

from __future__ import annotations

from collections.abc import Iterable

from services.common.providers import ProviderRegistry, ProviderSettings
from services.video.providers.base import VideoProvider
from services.video.providers.kenburns import KenBurnsProvider
from services.video.providers.kling import KlingProvider
from services.video.providers.runpod import RunPodProvider
from services.video.providers.selfhosted import SelfHostedProvider
from services.video.providers.stock_clips import PexelsVideoProvider, PixabayVideoProvider
from services.video.providers.wan import WanProvider

# Adding a provider is one module and one line here.
PROVIDERS = (
    KenBurnsProvider,
    WanProvider,
    SelfHostedProvider,
    KlingProvider,
    RunPodProvider,
    PexelsVideoProvider,
    PixabayVideoProvider,
)


def build_registry(default: str, settings: Iterable[ProviderSettings] = ()) -> ProviderRegistry[VideoProvider]:
    """`settings`: provider settings to use instead of reading them from the environment (tests pass them)."""
    return ProviderRegistry(PROVIDERS, default, "VIDEO_PROVIDER", settings)
