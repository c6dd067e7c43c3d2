"""OpenAI Images (dall-e-3 and gpt-image-1-mini) through the openai SDK, always as base64 PNG."""

from __future__ import annotations

import base64
import binascii
import struct
from collections.abc import Callable
from typing import Any, ClassVar

import openai

from services.common import pricing
from services.common.errors import ProviderUnavailable
from services.common.openai_errors import map_openai_error, openai_client
from services.common.providers import ProviderDescription, Quality
from services.image.providers.base import ImageJob, ImageResult

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Where an error names the text OpenAI judged.
_PROMPT_FIELD = "scene.visual_prompt"


async def _generate(
    job: ImageJob, model: str, cost: Callable[[Quality, bool], float], not_found_hint: str = "", **params: Any
) -> ImageResult:
    """One images.generate call; `params` carry the model-specific size, quality and format fields."""
    client = openai_client(model)
    try:
        response = await client.images.generate(model=model, prompt=job.prompt or job.title, n=1, **params)
    except openai.OpenAIError as error:
        raise map_openai_error(error, model, _PROMPT_FIELD, not_found_hint) from error
    # A compatible server (or a proxy) may answer 200 with something that is not the documented JSON object.
    images = getattr(response, "data", None)
    if not isinstance(images, list):
        raise ProviderUnavailable(f"{model}: the answer is not an images response ({type(response).__name__})")
    data = _decoded_png(images[0].b64_json if images else None, model)
    # The PNG header's own size, not the size asked for: the service fits whatever came to the frame.
    width, height = struct.unpack(">II", data[16:24])
    return ImageResult(
        data=data,
        mime_type="image/png",
        width=width,
        height=height,
        model=model,
        estimated_cost_usd=cost(job.quality, job.aspect == "1:1"),
    )


def _decoded_png(b64: str | None, model: str) -> bytes:
    """The image bytes; a missing or broken image is a bad answer worth another attempt."""
    if not b64:
        raise ProviderUnavailable(f"{model}: OpenAI answered without an image")
    try:
        data = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError) as error:
        raise ProviderUnavailable(f"{model}: OpenAI's image is not valid base64 ({error})") from error
    if not data.startswith(_PNG_SIGNATURE) or len(data) < 24:
        raise ProviderUnavailable(f"{model}: OpenAI's image is not a PNG")
    return data


class DallE3Provider:
    """Kept for users and compatible servers that still serve dall-e-3; OpenAI is reported to have retired it."""

    description: ClassVar[ProviderDescription] = ProviderDescription(
        name="dall-e-3",
        description="OpenAI DALL-E 3 (reported retired upstream on 2026-05-12; compatible servers may still serve it)",
        offline=False,
        required_env=("OPENAI_API_KEY",),
        prices=pricing.PRICE_TABLE["dall-e-3"],
    )
    SIZES: ClassVar[dict[str, str]] = {"16:9": "1792x1024", "9:16": "1024x1792", "1:1": "1024x1024"}

    async def generate(self, job: ImageJob) -> ImageResult:
        return await _generate(
            job,
            "dall-e-3",
            pricing.dall_e_3_cost,
            not_found_hint=(
                "OpenAI is reported to have retired dall-e-3 on 2026-05-12; set IMAGE_PROVIDER=gpt-image-1-mini"
            ),
            size=self.SIZES[job.aspect],
            quality="hd" if job.quality == Quality.HD else "standard",
            response_format="b64_json",
        )


class GptImageMiniProvider:
    description: ClassVar[ProviderDescription] = ProviderDescription(
        name="gpt-image-1-mini",
        description="OpenAI gpt-image-1-mini; low, medium or high quality by the output's quality",
        offline=False,
        required_env=("OPENAI_API_KEY",),
        prices=pricing.PRICE_TABLE["gpt-image-1-mini"],
    )
    SIZES: ClassVar[dict[str, str]] = {"16:9": "1536x1024", "9:16": "1024x1536", "1:1": "1024x1024"}
    QUALITIES: ClassVar[dict[Quality, str]] = {Quality.DRAFT: "low", Quality.STANDARD: "medium", Quality.HD: "high"}

    async def generate(self, job: ImageJob) -> ImageResult:
        # GPT image models always answer in base64 and reject response_format; output_format picks the encoding.
        return await _generate(
            job,
            "gpt-image-1-mini",
            pricing.gpt_image_1_mini_cost,
            size=self.SIZES[job.aspect],
            quality=self.QUALITIES[job.quality],
            output_format="png",
        )
