"""OpenAI Images (dall-e-3 and gpt-image-1-mini) through the openai SDK, always as base64 PNG."""

from __future__ import annotations

import base64
import binascii
import struct
from dataclasses import replace
from typing import Any, ClassVar

import openai

from services.common.errors import ProviderUnavailable
from services.common.openai_errors import OpenAISettings, map_openai_error, openai_client
from services.common.providers import Price, Provider, ProviderDescription, Quality
from services.image.providers.base import ImageJob, ImageResult

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Where an error names the text OpenAI judged.
_PROMPT_FIELD = "scene.visual_prompt"


class _OpenAIImages(Provider[OpenAISettings, ImageJob]):
    """What both OpenAI image models share: settings, price lists of (square, wide or tall) USD per image by quality,
    and the call."""

    settings_class = OpenAISettings
    required_settings = ("openai_api_key",)
    # The base URL picks the server, and a compatible server may make other images than OpenAI's.
    output_settings = ("openai_base_url",)
    MODEL: ClassVar[str]
    SIZES: ClassVar[dict[str, str]]
    # USD per image by quality: (square, wide or tall).
    USD_PER_IMAGE: ClassVar[dict[Quality, tuple[float, float]]]
    # How the API names each quality.
    QUALITIES: ClassVar[dict[Quality, str]]

    @classmethod
    def prices(cls, settings: OpenAISettings) -> tuple[Price, ...]:
        wide_or_tall = f"{cls.SIZES['16:9']} or {cls.SIZES['9:16']}"
        return tuple(
            Price(cls.MODEL, "image", usd, f"{size} at {quality.value} quality")
            for quality in cls.QUALITIES
            for usd, size in zip(cls.USD_PER_IMAGE[quality], (cls.SIZES["1:1"], wide_or_tall), strict=True)
        )

    @classmethod
    def estimate_usd(cls, settings: OpenAISettings, job: ImageJob) -> float:
        square, wide_or_tall = cls.USD_PER_IMAGE[job.quality]
        return square if job.aspect == "1:1" else wide_or_tall

    async def _generate(self, job: ImageJob, not_found_hint: str = "", **params: Any) -> ImageResult:
        """One images.generate call; `params` carry the model-specific size, quality and format fields."""
        return await _generate(
            self.settings, job, self.MODEL, self.estimate_usd(self.settings, job), not_found_hint, **params
        )


async def _generate(
    settings: OpenAISettings, job: ImageJob, model: str, cost: float, not_found_hint: str, **params: Any
) -> ImageResult:
    client = openai_client(settings, model)
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
        estimated_cost_usd=cost,
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


class DallE3Provider(_OpenAIImages):
    """Kept for users and compatible servers that still serve dall-e-3; OpenAI is reported to have retired it."""

    description = ProviderDescription(
        name="dall-e-3",
        description="OpenAI DALL-E 3 (reported retired upstream on 2026-05-12; compatible servers may still serve it)",
        offline=False,
    )
    MODEL = "dall-e-3"
    SIZES: ClassVar[dict[str, str]] = {"16:9": "1792x1024", "9:16": "1024x1792", "1:1": "1024x1024"}
    # dall-e-3 has two qualities; draft is made (and priced) as standard.
    QUALITIES: ClassVar[dict[Quality, str]] = {Quality.STANDARD: "standard", Quality.HD: "hd"}
    USD_PER_IMAGE: ClassVar[dict[Quality, tuple[float, float]]] = {
        Quality.STANDARD: (0.040, 0.080),
        Quality.HD: (0.080, 0.120),
    }

    @classmethod
    def estimate_usd(cls, settings: OpenAISettings, job: ImageJob) -> float:
        return super().estimate_usd(settings, _as_dall_e_3(job))

    async def generate(self, job: ImageJob) -> ImageResult:
        return await self._generate(
            job,
            not_found_hint=(
                "OpenAI is reported to have retired dall-e-3 on 2026-05-12; set IMAGE_PROVIDER=gpt-image-1-mini"
            ),
            size=self.SIZES[job.aspect],
            quality=self.QUALITIES[_as_dall_e_3(job).quality],
            response_format="b64_json",
        )


def _as_dall_e_3(job: ImageJob) -> ImageJob:
    return job if job.quality != Quality.DRAFT else replace(job, quality=Quality.STANDARD)


class GptImageMiniProvider(_OpenAIImages):
    description = ProviderDescription(
        name="gpt-image-1-mini",
        description="OpenAI gpt-image-1-mini; low, medium or high quality by the output's quality",
        offline=False,
    )
    MODEL = "gpt-image-1-mini"
    SIZES: ClassVar[dict[str, str]] = {"16:9": "1536x1024", "9:16": "1024x1536", "1:1": "1024x1024"}
    QUALITIES: ClassVar[dict[Quality, str]] = {Quality.DRAFT: "low", Quality.STANDARD: "medium", Quality.HD: "high"}
    USD_PER_IMAGE: ClassVar[dict[Quality, tuple[float, float]]] = {
        Quality.DRAFT: (0.005, 0.006),
        Quality.STANDARD: (0.011, 0.015),
        Quality.HD: (0.036, 0.052),
    }

    async def generate(self, job: ImageJob) -> ImageResult:
        # GPT image models always answer in base64 and reject response_format; output_format picks the encoding.
        return await self._generate(
            job, size=self.SIZES[job.aspect], quality=self.QUALITIES[job.quality], output_format="png"
        )
