"""Images from Replicate: SDXL (community model, pinned version) and FLUX.1 [dev] (official model)."""

from __future__ import annotations

import io
import math
import os
from typing import ClassVar

from PIL import Image, UnidentifiedImageError

from services.common import pricing
from services.common.errors import ProviderUnavailable
from services.common.providers import ProviderDescription, Quality
from services.common.replicate_runner import TOKEN_ENV, ReplicateModel, run_for_file
from services.image.providers.base import ImageJob, ImageResult

# Pinned in a 2023 cassette of replicate-python (providers.md section 4); SDXL_VERSION overrides it at request time.
SDXL_VERSION = "39ed52f2a78e934b3ba6e2a89f5b1c712de7dfea535525255b1aa35c5565e08b"
SDXL_PIXELS = 1024 * 1024  # SDXL was trained at about one megapixel, in buckets that are multiples of 64
SDXL_NEGATIVE_PROMPT = (
    "deformed, distorted, disfigured, extra fingers, missing fingers, fused fingers, extra limbs, bad anatomy, "
    "mutated hands, floating objects, blurry, low quality, watermark, text"
)
FLUX_MODEL = ReplicateModel("black-forest-labs/flux-dev")
FLUX_STEPS = {Quality.DRAFT: 20, Quality.STANDARD: 28, Quality.HD: 50}  # the model accepts 1-50
# flux-dev often gets hands and held objects wrong; saying what we want is cheaper than a retry.
FLUX_QUALITY_SUFFIX = (
    "Any people have natural anatomy, with hands of five fingers; objects are whole, consistent and physically "
    "connected to what holds them."
)
# A generous time limit: a cold SDXL start can take a few minutes; the gRPC deadline still bounds the call.
TIME_LIMIT_SECONDS = 300.0
MAX_IMAGE_BYTES = 50 * 1024 * 1024


def sdxl_size(aspect: str) -> tuple[int, int]:
    """Width and height for an aspect ratio at SDXL's native size: 1344x768 for 16:9, 1024x1024 for 1:1."""
    across, down = (int(part) for part in aspect.split(":"))
    return (
        round(math.sqrt(SDXL_PIXELS * across / down) / 64) * 64,
        round(math.sqrt(SDXL_PIXELS * down / across) / 64) * 64,
    )


def _prompt(job: ImageJob) -> str:
    return job.prompt or job.title


def _image_result(data: bytes, model: str, cost: float) -> ImageResult:
    """Reads the real size and type from the bytes (the image must decode whole); the service then fits it."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()  # a header followed by garbage opens; it fails here, inside the job, not in the service
            width, height, mime_type = image.width, image.height, Image.MIME.get(image.format or "", "")
    except (UnidentifiedImageError, OSError) as error:
        raise ProviderUnavailable(f"Replicate {model} returned bytes that are not an image ({error})") from error
    return ImageResult(data=data, mime_type=mime_type, width=width, height=height, model=model, estimated_cost_usd=cost)


class SdxlProvider:
    description: ClassVar[ProviderDescription] = ProviderDescription(
        name="sdxl",
        description="Stable Diffusion XL on Replicate (stability-ai/sdxl, pinned version); billed by GPU time",
        offline=False,
        required_env=(TOKEN_ENV,),
        prices=pricing.PRICE_TABLE["sdxl"],
    )

    async def generate(self, job: ImageJob) -> ImageResult:
        model = ReplicateModel("stability-ai/sdxl", os.environ.get("SDXL_VERSION") or SDXL_VERSION, "SDXL_VERSION")
        width, height = sdxl_size(job.aspect)
        steps = pricing.SDXL_STEPS[job.quality]
        return await run_for_file(
            self.description.name,
            model,
            {
                "prompt": _prompt(job),
                "negative_prompt": SDXL_NEGATIVE_PROMPT,
                "width": width,
                "height": height,
                "num_inference_steps": steps,
                "num_outputs": 1,
            },
            lambda output: _image_result(output.data, model.label, pricing.sdxl_cost(steps, output.predict_time)),
            time_limit=TIME_LIMIT_SECONDS,
            max_bytes=MAX_IMAGE_BYTES,
        )


class FluxProvider:
    description: ClassVar[ProviderDescription] = ProviderDescription(
        name="flux",
        description="FLUX.1 [dev] on Replicate (black-forest-labs/flux-dev); priced per image",
        offline=False,
        required_env=(TOKEN_ENV,),
        prices=pricing.PRICE_TABLE["flux"],
    )

    async def generate(self, job: ImageJob) -> ImageResult:
        return await run_for_file(
            self.description.name,
            FLUX_MODEL,
            {
                "prompt": f"{_prompt(job)}\n\n{FLUX_QUALITY_SUFFIX}",
                "aspect_ratio": job.aspect,
                "num_inference_steps": FLUX_STEPS[job.quality],
                "num_outputs": 1,
                "output_format": "png",  # lossless: the service re-encodes to PNG after fitting anyway
            },
            lambda output: _image_result(output.data, FLUX_MODEL.label, pricing.FLUX_DEV_PER_IMAGE),
            time_limit=TIME_LIMIT_SECONDS,
            max_bytes=MAX_IMAGE_BYTES,
        )
