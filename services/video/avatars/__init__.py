"""Avatar providers (whole script -> one talking-head video), keyed by the name used in AVATAR_PROVIDER and requests."""

from __future__ import annotations

from collections.abc import Iterable

from services.common.providers import ProviderRegistry, ProviderSettings
from services.video.avatars.base import AvatarProvider
from services.video.avatars.heygen import HeyGenProvider
from services.video.avatars.synthesia import SynthesiaProvider

# Adding a vendor is one module and one line here.
PROVIDERS = (HeyGenProvider, SynthesiaProvider)


def build_avatar_registry(default: str, settings: Iterable[ProviderSettings] = ()) -> ProviderRegistry[AvatarProvider]:
    """`settings`: provider settings to use instead of reading them from the environment (tests pass them)."""
    return ProviderRegistry(PROVIDERS, default, "AVATAR_PROVIDER", settings)
