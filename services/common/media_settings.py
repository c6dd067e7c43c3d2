"""Settings the media services (image, audio, video) share, beside those of every service."""

from __future__ import annotations

from pydantic import SecretStr

from services.common.cache import DEFAULT_DIR, DEFAULT_MAX_BYTES
from services.common.settings import ServiceSettings


class MediaServiceSettings(ServiceSettings):
    """What the image, audio and video services share: provider retries and the asset cache."""

    # Attempts per provider call for failures that can succeed later (429, 5xx, timeouts); jittered backoff between.
    provider_attempts: int = 4
    # Folder of the asset cache shared by the image, audio and video services (and their replicas on this disk); an
    # identical request for a cloud provider's asset is answered from it instead of paying again. Empty or "off"
    # turns it off.
    asset_cache_dir: str = DEFAULT_DIR
    # Bytes the asset cache folder (or Redis) may hold; least recently used entries are evicted beyond it.
    asset_cache_max_bytes: int = DEFAULT_MAX_BYTES
    # redis://host:port/db (rediss:// for TLS; a password goes in the URL) of a Redis server that the image, audio and
    # video services of every replica share as their asset cache, in place of ASSET_CACHE_DIR; a call for an asset
    # that another replica is making waits for it. Empty: the folder. A secret, since the URL may hold a password.
    asset_cache_url: SecretStr = SecretStr("")
