"""Gateway settings, read once from the environment."""

from __future__ import annotations

from services.common.settings import ServiceSettings


class GatewaySettings(ServiceSettings):
    listen_address: str = "127.0.0.1:50050"
    # Where the services are: host:port; a comma-separated list of replicas' IP:port; or dns:///name:port, where the
    # name resolves to every replica (a headless Kubernetes Service). Calls are spread over replicas round-robin.
    image_service_address: str = "127.0.0.1:50051"
    audio_service_address: str = "127.0.0.1:50052"
    video_service_address: str = "127.0.0.1:50053"
    assembler_service_address: str = "127.0.0.1:50054"
    # Most scenes one render may have.
    max_scenes: int = 50
    # Most scenes whose assets are generated at the same time (each scene makes 2-3 provider calls).
    max_concurrent_scenes: int = 4
    # Longest one asset call (image, speech or clip) may take, in seconds; cut short by the render's own deadline.
    asset_timeout_seconds: float = 600.0
    # Longest a render may take when the caller sets no deadline, in seconds.
    render_timeout_seconds: float = 3600.0
    # Attempts of one asset call when a service replica is UNAVAILABLE (each retry may reach another replica).
    scene_call_attempts: int = 3
    # Clips are asked this much longer than the narration, in milliseconds, to cover the scene's lead-in and tail.
    clip_extra_ms: int = 1000
    # Where finished MP4s are kept for FetchResult; empty means a folder in the system temp dir.
    render_output_dir: str = ""
    # How long a finished render's MP4 and summary stay available, in seconds.
    result_ttl_seconds: float = 3600.0
    # How long a render keeps running with no caller attached (a dropped connection), waiting for WatchRender or
    # FetchResult, before it is cancelled, in seconds.
    orphan_grace_seconds: float = 15.0
    shutdown_grace_seconds: float = 25.0
