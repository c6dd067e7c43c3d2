"""Images from Replicate: SDXL (community model, pinned version) and FLUX.1 [dev] (official model)."""

from __future__ import annotations

import math

from services.common.providers import Price, ProviderDescription, Quality
from services.common.replicate_runner import (
    L40S_USD_PER_SECOND,
    ReplicateModel,
    ReplicateProvider,
    ReplicateSettings,
    run_for_file,
)
from services.image.providers.base import ImageJob, ImageResult, decoded_image

# Pinned in a 2023 cassette of replicate-python (providers.md section 4); SDXL_VERSION overrides it.
SDXL_VERSION = "39ed52f2a78e934b3ba6e2a89f5b1c712de7dfea535525255b1aa35c5565e08b"
SDXL_PIXELS = 1024 * 1024  # SDXL was trained at about one megapixel, in buckets that are multiples of 64
SDXL_NEGATIVE_PROMPT = (
    "deformed, distorted, disfigured, extra fingers, missing fingers, fused fingers, extra limbs, bad anatomy, "
    "mutated hands, floating objects, blurry, low quality, watermark, text"
)
SDXL_STEPS = {Quality.DRAFT: 25, Quality.STANDARD: 35, Quality.HD: 50}
# Billed by GPU time on an L40S; about 0.25 s per step at 1024 px (assumed: Replicate publishes no per-step figure).
SDXL_SECONDS_PER_STEP = 0.25
FLUX_MODEL = ReplicateModel("black-forest-labs/flux-dev")
FLUX_USD_PER_IMAGE = 0.025
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


class SdxlSettings(ReplicateSettings):
    # The pinned version of stability-ai/sdxl (a community model runs only by version).
    sdxl_version: str = SDXL_VERSION


def sdxl_cost(steps: int, gpu_seconds: float | None = None) -> float:
    """GPU time: the measured predict_time when known, else the assumed time for the step count."""
    return L40S_USD_PER_SECOND * (gpu_seconds if gpu_seconds is not None else steps * SDXL_SECONDS_PER_STEP)


class SdxlProvider(ReplicateProvider[SdxlSettings, ImageJob]):
    description = ProviderDescription(
        name="sdxl",
        description="Stable Diffusion XL on Replicate (stability-ai/sdxl, pinned version); billed by GPU time",
        offline=False,
    )
    settings_class = SdxlSettings
    output_settings = (*ReplicateProvider.output_settings, "sdxl_version")

    @classmethod
    def prices(cls, settings: SdxlSettings) -> tuple[Price, ...]:
        steps = f"{SDXL_STEPS[Quality.DRAFT]}-{SDXL_STEPS[Quality.HD]}"
        note = f"L40S; assumed {SDXL_SECONDS_PER_STEP} s per step, {steps} steps by quality"
        return (Price("stability-ai/sdxl", "GPU second", L40S_USD_PER_SECOND, note),)

    @classmethod
    def estimate_usd(cls, settings: SdxlSettings, job: ImageJob) -> float:
        return sdxl_cost(SDXL_STEPS[job.quality])

    async def generate(self, job: ImageJob) -> ImageResult:
        model = ReplicateModel("stability-ai/sdxl", self.settings.sdxl_version, "SDXL_VERSION")
        width, height = sdxl_size(job.aspect)
        steps = SDXL_STEPS[job.quality]
        return await run_for_file(
            self.settings,
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
            lambda output: decoded_image(output.data, "Replicate", model.label, sdxl_cost(steps, output.predict_time)),
            time_limit=TIME_LIMIT_SECONDS,
            max_bytes=MAX_IMAGE_BYTES,
        )


class FluxProvider(ReplicateProvider[ReplicateSettings, ImageJob]):
    description = ProviderDescription(
        name="flux",
        description="FLUX.1 [dev] on Replicate (black-forest-labs/flux-dev); priced per image",
        offline=False,
    )

    @classmethod
    def prices(cls, settings: ReplicateSettings) -> tuple[Price, ...]:
        return (Price(FLUX_MODEL.name, "image", FLUX_USD_PER_IMAGE, "any aspect ratio and step count"),)

    @classmethod
    def estimate_usd(cls, settings: ReplicateSettings, job: ImageJob) -> float:
        return FLUX_USD_PER_IMAGE

    async def generate(self, job: ImageJob) -> ImageResult:
        return await run_for_file(
            self.settings,
            self.description.name,
            FLUX_MODEL,
            {
                "prompt": f"{_prompt(job)}\n\n{FLUX_QUALITY_SUFFIX}",
                "aspect_ratio": job.aspect,
                "num_inference_steps": FLUX_STEPS[job.quality],
                "num_outputs": 1,
                "output_format": "png",  # lossless: the service re-encodes to PNG after fitting anyway
            },
            lambda output: decoded_image(output.data, "Replicate", FLUX_MODEL.label, FLUX_USD_PER_IMAGE),
            time_limit=TIME_LIMIT_SECONDS,
            max_bytes=MAX_IMAGE_BYTES,
        )
