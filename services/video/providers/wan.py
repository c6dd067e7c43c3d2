"""Wan 2.1 at 480p on Replicate: text to video, or image to video when the scene's still image is sent."""

from __future__ import annotations

import asyncio
import base64
import io
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from services.common.errors import InvalidArgument, ProviderUnavailable
from services.common.media import probe
from services.common.providers import Price, ProviderDescription, Quality
from services.common.replicate_runner import (
    OutputFile,
    ReplicateModel,
    ReplicateProvider,
    ReplicateSettings,
    run_for_file,
)
from services.video.providers.base import ClipJob, ClipResult, write_clip

T2V_MODEL = ReplicateModel("wavespeedai/wan-2.1-t2v-480p")
I2V_MODEL = ReplicateModel("wavespeedai/wan-2.1-i2v-480p")
# Wan's native clip: 81 frames at 16 fps (about 5.06 s). The length is fixed; the assembler loops it to the narration.
NUM_FRAMES = 81
FRAMES_PER_SECOND = 16
CLIP_SECONDS = NUM_FRAMES / FRAMES_PER_SECOND
# Billed per second of output video: about $0.09 in third-party code (unconfirmed).
USD_PER_OUTPUT_SECOND = 0.09
SAMPLE_STEPS = {Quality.DRAFT: 20, Quality.STANDARD: 30, Quality.HD: 40}  # the models accept 1-40
# The models' speed-up (Off / Balanced / Fast, default Balanced): an hd clip is worth the slowest, best mode, a draft
# the fastest; standard keeps the model's own default.
FAST_MODE = {Quality.DRAFT: "Fast", Quality.STANDARD: "Balanced", Quality.HD: "Off"}
# The i2v model scales the image to this area itself; sending more pixels only makes the request bigger.
MAX_IMAGE_PIXELS = 832 * 480
IMAGE_JPEG_QUALITY = 90
# A 480p clip takes minutes, more on a cold start; the gRPC deadline still bounds the call.
TIME_LIMIT_SECONDS = 900.0
MAX_VIDEO_BYTES = 200 * 1024 * 1024


class WanProvider(ReplicateProvider[ReplicateSettings, ClipJob]):
    description = ProviderDescription(
        name="wan",
        description="Wan 2.1 480p on Replicate: a ~5 s clip from the prompt, or from the scene's image when sent",
        offline=False,
    )

    @classmethod
    def prices(cls, settings: ReplicateSettings) -> tuple[Price, ...]:
        note = f"unconfirmed rate; {CLIP_SECONDS:.2f} s per clip"
        return tuple(
            Price(model.name, "output second", USD_PER_OUTPUT_SECOND, note) for model in (T2V_MODEL, I2V_MODEL)
        )

    @classmethod
    def estimate_usd(cls, settings: ReplicateSettings, job: ClipJob) -> float:
        return USD_PER_OUTPUT_SECOND * CLIP_SECONDS

    async def generate(self, job: ClipJob) -> ClipResult:
        prompt = job.prompt or job.title
        if not prompt:
            raise InvalidArgument("spec.scene.visual_prompt and spec.scene.title are both empty; wan needs a prompt")
        portrait = job.height > job.width
        model_input: dict[str, Any] = {
            "prompt": prompt,
            "num_frames": NUM_FRAMES,
            "frames_per_second": FRAMES_PER_SECOND,
            "sample_steps": SAMPLE_STEPS[job.quality],
            "fast_mode": FAST_MODE[job.quality],
        }
        if job.source_image is None:
            model = T2V_MODEL
            # Wan makes 16:9 or 9:16 only; a square output is cropped or padded by the assembler.
            model_input["aspect_ratio"] = "9:16" if portrait else "16:9"
        else:
            model = I2V_MODEL
            model_input["image"] = await asyncio.to_thread(image_data_uri, job.source_image)
            model_input["max_area"] = "480x832" if portrait else "832x480"

        def result(output: OutputFile) -> ClipResult:
            # Checked here, inside the job: a clip the service could not decode would otherwise be ordered again.
            if output.data[4:8] != b"ftyp" or not probe(io.BytesIO(output.data), "wan clip").has_video:
                raise ProviderUnavailable(f"Replicate {model.label} returned bytes that are not an MP4 video")
            return ClipResult(
                path=write_clip(job.work_dir, output.data),
                mime_type="video/mp4",
                model=model.label,
                estimated_cost_usd=USD_PER_OUTPUT_SECOND * CLIP_SECONDS,
            )

        return await run_for_file(
            self.settings,
            self.description.name,
            model,
            model_input,
            result,
            time_limit=TIME_LIMIT_SECONDS,
            max_bytes=MAX_VIDEO_BYTES,
        )


def image_data_uri(path: Path) -> str:
    """The source image as a JPEG data: URI, scaled down to the model's working area to keep the request small."""
    try:
        with Image.open(path) as image:
            picture = image.convert("RGB")
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError) as error:
        raise InvalidArgument(f"source_image: not a readable image ({error})") from error
    pixels = picture.width * picture.height
    if pixels > MAX_IMAGE_PIXELS:
        scale = (MAX_IMAGE_PIXELS / pixels) ** 0.5
        picture = picture.resize((max(1, int(picture.width * scale)), max(1, int(picture.height * scale))))
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=IMAGE_JPEG_QUALITY)
    return f"data:image/jpeg;base64,{base64.b64encode(buffer.getvalue()).decode()}"
