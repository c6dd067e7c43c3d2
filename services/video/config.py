"""Video service settings, read once from the environment."""

from __future__ import annotations

from pydantic import SecretStr

from services.common.cache import DEFAULT_DIR, DEFAULT_MAX_BYTES
from services.common.settings import ServiceSettings


class VideoSettings(ServiceSettings):
    listen_address: str = "127.0.0.1:50053"
    # Provider used when a request names none. Empty, as in the seed: renders use still images unless a render or
    # the gateway asks for clips.
    video_provider: str = ""
    # Avatar vendor ("synthesia", "heygen") used when a GenerateAvatarVideo request names none. Empty: renders are
    # made of scenes unless a render asks for an avatar video.
    avatar_provider: str = ""
    # Attempts per provider call for failures that can succeed later (429, 5xx, timeouts); jittered backoff between.
    provider_attempts: int = 4
    # Where per-call working folders are made; empty means the system temp dir.
    video_tmp_dir: str = ""
    # Largest source image accepted, in bytes.
    max_source_image_bytes: int = 64 * 1024 * 1024
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
    shutdown_grace_seconds: float = 10.0
