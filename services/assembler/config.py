"""Assembler settings, read once from the environment."""

from __future__ import annotations

import os

from services.common.settings import ServiceSettings
from services.common.state import cache_path


class AssemblerSettings(ServiceSettings):
    listen_address: str = "127.0.0.1:50054"
    # Where per-call working folders are made (removed when the call ends); empty means the system temp dir.
    assembler_tmp_dir: str = ""
    # Silence before the narration starts in each scene, in milliseconds.
    scene_lead_ms: int = 300
    # Time the picture stays after the narration ends, in milliseconds.
    scene_tail_ms: int = 500
    # Fade in and out of each scene, in milliseconds (capped at a third of the scene).
    fade_ms: int = 400
    # Most scenes one assembly may have (named apart from the gateway's MAX_SCENES, since .env files are shared).
    assembler_max_scenes: int = 200
    # Largest asset accepted, in bytes.
    max_asset_bytes: int = 512 * 1024 * 1024
    # Scene segments encoded at the same time, and the cores they share: each encode takes an equal share as x264
    # threads (ffmpeg.encoder_threads). 0 means the number of cores. On 2 cores, 12 scenes of 1080p took 9.1 s as
    # two one-thread encodes at a time, 9.7 s as two with x264's own thread count, 11.8 s one at a time.
    encode_concurrency: int = 0
    # Encoded scene segments kept so a re-render re-encodes only changed scenes; "off" (or empty) disables it. The
    # default is the user's own cache folder ($XDG_CACHE_HOME/scenecast/segments, else ~/.cache/scenecast/segments).
    segment_cache_dir: str = str(cache_path("segments"))
    # Bytes the segment cache may hold; least recently used segments are evicted beyond it.
    segment_cache_max_bytes: int = 2 * 1024**3
    # H.264 encoder: auto (NVENC when FFmpeg can use it here, else libx264) | libx264 | h264_nvenc.
    video_encoder: str = "auto"
    # Longest one FFmpeg run may take, in seconds.
    ffmpeg_timeout_seconds: float = 900.0
    shutdown_grace_seconds: float = 20.0

    @property
    def encoders(self) -> int:
        return self.encode_concurrency or os.cpu_count() or 1
