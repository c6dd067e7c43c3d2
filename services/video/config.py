"""Video service settings, read once from the environment."""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict


class VideoSettings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    # host:port to listen on; port 0 picks a free one.
    listen_address: str = "127.0.0.1:50053"
    # Provider used when a request names none. Empty, as in the seed: renders use still images unless a render or
    # the gateway asks for clips.
    video_provider: str = ""
    # Where per-call working folders are made; empty means the system temp dir.
    video_tmp_dir: str = ""
    # Largest source image accepted, in bytes.
    max_source_image_bytes: int = 64 * 1024 * 1024
    # Seconds running calls get to finish after SIGTERM.
    shutdown_grace_seconds: float = 10.0
