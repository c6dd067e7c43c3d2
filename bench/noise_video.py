"""A fake self-hosted video model whose clips are random noise, so that a render's MP4 grows as fast as its frames."""

from __future__ import annotations

import asyncio
import base64
import functools
import subprocess
import tempfile
from pathlib import Path

from services.common.media import ffmpeg_exe
from tests.fakes.video_servers import CogPrediction, FakeCogVideo

# Noise in all three planes: no encoder can predict it, so every output frame costs about as many bytes as the
# encoder's quality allows (at 1080p draft quality, 500 KiB a frame). The clip itself is kept small (the gateway
# holds a scene's assets until it hands them on) with a coarse quality: its noise is still noise.
_NOISE = "geq=lum='random(1)*255':cb='random(2)*255':cr='random(3)*255'"
_CLIP_CRF = 30


class NoiseCog(FakeCogVideo):
    """FakeCogVideo answering every prediction with a clip of noise of the asked size, frame count and rate."""

    async def _finish(self, prediction: CogPrediction) -> None:
        size = [prediction.input[key] for key in ("width", "height", "num_frames", "fps")]
        clip = await asyncio.to_thread(noise_clip, *size)
        prediction.output = f"data:video/mp4;base64,{base64.b64encode(clip).decode()}"
        prediction.status = "succeeded"
        prediction.history.append(prediction.status)


@functools.cache
def noise_clip(width: int, height: int, frames: int, fps: int) -> bytes:
    with tempfile.TemporaryDirectory(prefix="bench-noise-") as folder:
        clip = Path(folder) / "noise.mp4"
        argv = [
            *(ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error"),
            *("-f", "lavfi", "-i", f"nullsrc=size={width}x{height}:rate={fps},{_NOISE}"),
            *("-frames:v", str(frames), "-c:v", "libx264", "-preset", "ultrafast", "-crf", str(_CLIP_CRF)),
            *("-pix_fmt", "yuv420p", "-movflags", "+faststart", "-y", str(clip)),
        ]
        subprocess.run(argv, capture_output=True, check=True, timeout=120)
        return clip.read_bytes()
