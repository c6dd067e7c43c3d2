"""Video providers, keyed by the name used in VIDEO_PROVIDER and in requests."""

from __future__ import annotations

from collections.abc import Iterable

from services.common import pricing
from services.common.providers import ProviderRegistry, ProviderSettings, legacy
from services.video.providers.base import VideoProvider
from services.video.providers.kenburns import KenBurnsProvider
from services.video.providers.selfhosted import SelfHostedProvider
from services.video.providers.wan import WanProvider

# Adding a provider is one module and one line here.
PROVIDERS = (
    KenBurnsProvider,
    # TEMPORARY (issue 15): Wan and the self-hosted model in their old shape, until they are built from settings.
    legacy(WanProvider, lambda job: pricing.wan_cost(pricing.WAN_CLIP_SECONDS), ("REPLICATE_BASE_URL",)),
    legacy(
        SelfHostedProvider,
        lambda job: pricing.selfhosted_usd_per_second() * job.duration_ms / 1000,
        (
            "SELFHOSTED_VIDEO_URL",
            "SELFHOSTED_VIDEO_API",
            "SELFHOSTED_COMFYUI_WORKFLOW",
            "SELFHOSTED_VIDEO_HEIGHT",
            "SELFHOSTED_VIDEO_FPS",
            "SELFHOSTED_VIDEO_MAX_FRAMES",
        ),
    ),
)


def build_registry(default: str, settings: Iterable[ProviderSettings] = ()) -> ProviderRegistry[VideoProvider]:
    """`settings`: provider settings to use instead of reading them from the environment (tests pass them)."""
    return ProviderRegistry(PROVIDERS, default, "VIDEO_PROVIDER", settings)
