"""The settings the image, audio and video services share are declared once, so their defaults cannot drift apart."""

from __future__ import annotations

import pytest
from pydantic_settings import BaseSettings

from services.audio.config import AudioSettings
from services.common.media_settings import MediaServiceSettings
from services.common.settings import ServiceSettings
from services.image.config import ImageSettings
from services.video.config import VideoSettings

SHARED = {"provider_attempts", "asset_cache_dir", "asset_cache_max_bytes", "asset_cache_url"}


@pytest.mark.parametrize("settings_class", [ImageSettings, AudioSettings, VideoSettings])
def test_each_media_service_inherits_the_shared_settings_without_declaring_them_again(
    settings_class: type[BaseSettings],
) -> None:
    assert set(MediaServiceSettings.model_fields) - set(ServiceSettings.model_fields) == SHARED
    assert issubclass(settings_class, MediaServiceSettings)
    assert not SHARED & set(vars(settings_class).get("__annotations__", {}))
    settings = settings_class(provider_attempts=2, asset_cache_dir="off")
    assert (settings.provider_attempts, settings.asset_cache_dir) == (2, "off")  # type: ignore[attr-defined]
