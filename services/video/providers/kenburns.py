"""Offline motion: a slow Ken Burns zoom over the scene's still image, made with FFmpeg's zoompan."""

from __future__ import annotations

import math
from pathlib import Path

import ffmpeg

from services.common.errors import FailedPrecondition
from services.common.media import ffmpeg_exe, run_ffmpeg
from services.common.providers import NoSettings, Price, Provider, ProviderDescription
from services.video.providers.base import ClipJob, ClipResult

DEFAULT_DURATION_MS = 5000
# Total zoom over the clip: gentle enough to read text on a slide while it moves.
ZOOM_RANGE = 0.12
_TIMEOUT_SECONDS = 600.0


class KenBurnsProvider(Provider[NoSettings, ClipJob]):
    description = ProviderDescription(
        name="kenburns",
        description="Offline slow zoom over the scene's image (FFmpeg zoompan); needs the image",
        offline=True,
    )

    @classmethod
    def prices(cls, settings: NoSettings) -> tuple[Price, ...]:
        return (Price("ffmpeg-zoompan", "clip", 0.0, "offline, on this machine's CPU"),)

    @classmethod
    def estimate_usd(cls, settings: NoSettings, job: ClipJob) -> float:
        return 0.0

    async def generate(self, job: ClipJob) -> ClipResult:
        if job.source_image is None:
            raise FailedPrecondition("kenburns animates the scene's image; send the image after the spec")
        output = job.work_dir / "kenburns.mp4"
        await run_ffmpeg(kenburns_command(ffmpeg_exe(), job, output), _TIMEOUT_SECONDS)
        return ClipResult(data=output.read_bytes(), mime_type="video/mp4", model="ffmpeg-zoompan")


def kenburns_command(exe: str, job: ClipJob, output: Path) -> list[str]:
    """Zooms in on even scenes and out on odd ones, so consecutive scenes do not all move alike."""
    assert job.source_image is not None
    frames = max(1, math.ceil((job.duration_ms or DEFAULT_DURATION_MS) * job.fps / 1000))
    step = ZOOM_RANGE / frames
    zoom = f"1+{step}*on" if job.scene_index % 2 == 0 else f"{1 + ZOOM_RANGE}-{step}*on"
    picture = (
        ffmpeg.input(str(job.source_image))
        .video
        # Zoompan moves in whole input pixels; working at twice the output size hides the jitter.
        .filter("scale", job.width * 2, job.height * 2, force_original_aspect_ratio="increase")
        .filter("crop", job.width * 2, job.height * 2)
        .filter(
            "zoompan",
            z=zoom,
            d=frames,
            x="iw/2-(iw/zoom/2)",
            y="ih/2-(ih/zoom/2)",
            s=f"{job.width}x{job.height}",
            fps=job.fps,
        )
        .filter("format", "yuv420p")
    )
    stream = ffmpeg.output(
        picture, str(output), **{"frames:v": frames, "c:v": "libx264", "preset": "veryfast", "crf": 20}, an=None
    )
    return stream.global_args("-hide_banner", "-nostdin", "-loglevel", "error").compile(cmd=exe, overwrite_output=True)
