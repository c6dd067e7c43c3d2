"""Video service settings, read once from the environment."""

from __future__ import annotations

from services.common.media_settings import MediaServiceSettings


class VideoSettings(MediaServiceSettings):
    listen_address: str = "127.0.0.1:50053"
    # Provider used when a request names none. Empty, as in the seed: renders use still images unless a render or
    # the gateway asks for clips.
    video_provider: str = ""
    # Avatar vendor ("synthesia", "heygen") used when a GenerateAvatarVideo request names none. Empty: renders are
    # made of scenes unless a render asks for an avatar video.
    avatar_provider: str = ""
    # Where per-call working folders are made; empty means the system temp dir.
    video_tmp_dir: str = ""
    # Largest source image accepted, in bytes.
    max_source_image_bytes: int = 64 * 1024 * 1024
    shutdown_grace_seconds: float = 10.0
