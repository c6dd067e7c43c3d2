"""Avatar providers (whole script -> one talking-head video), keyed by the name used in AVATAR_PROVIDER and requests."""

from __future__ import annotations

from services.common.providers import ProviderRegistry
from services.video.avatars.base import AvatarProvider
from services.video.avatars.heygen import HeyGenProvider
from services.video.avatars.synthesia import SynthesiaProvider

# Adding a vendor (or HeyGen's v3 API) is one module and one line here.
_PROVIDERS = (HeyGenProvider, SynthesiaProvider)


def build_avatar_registry(default: str) -> ProviderRegistry[AvatarProvider]:
    return ProviderRegistry(_PROVIDERS, default, "AVATAR_PROVIDER")
