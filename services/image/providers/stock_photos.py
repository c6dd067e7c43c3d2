"""Stock photos from Pexels and Pixabay, found from the scene's visual description, free and credited."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any, ClassVar

from services.common import pexels, pixabay, stock
from services.common.providers import Price, Provider, ProviderDescription
from services.image.providers.base import ImageJob, ImageResult, decoded_image


class _StockPhotoProvider(Provider[Any, ImageJob]):
    """Searches with the scene's words, takes the photo that fits the frame best, and keeps its credit."""

    vendor: ClassVar[str]
    client_class: ClassVar[type[Any]]

    def __init__(self, settings: stock.StockSettings) -> None:
        super().__init__(settings)
        self._client: stock.StockClient = self.client_class(settings, self.description.name)

    @classmethod
    def estimate_usd(cls, settings: stock.StockSettings, job: ImageJob) -> float:
        return 0.0

    async def generate(self, job: ImageJob) -> ImageResult:
        query = stock.search_query(job.prompt, job.title)
        found = await self._client.images(query, job.width, job.height)
        chosen = stock.pick(self.vendor, "photos", query, found, job.width, job.height, job.scene_index)
        data = await stock.download(self.settings, chosen.rendition)
        result = await asyncio.to_thread(decoded_image, data, self.vendor, chosen.label, 0.0)
        return replace(result, credit=chosen.candidate.credit)


class PexelsPhotoProvider(_StockPhotoProvider):
    description = ProviderDescription(
        name="pexels",
        description="Pexels stock photos searched from the visual description; free, credited",
        offline=False,
    )
    settings_class = pexels.PexelsSettings
    required_settings = (pexels.KEY_FIELD,)
    output_settings = ("pexels_base_url",)
    vendor = pexels.VENDOR
    client_class = pexels.PexelsClient

    @classmethod
    def prices(cls, settings: pexels.PexelsSettings) -> tuple[Price, ...]:
        return pexels.prices("image")


class PixabayImageProvider(_StockPhotoProvider):
    description = ProviderDescription(
        name="pixabay",
        description="Pixabay stock photos searched from the visual description, up to 1280 px; free, credited",
        offline=False,
    )
    settings_class = pixabay.PixabaySettings
    required_settings = (pixabay.KEY_FIELD,)
    output_settings = ("pixabay_base_url",)
    vendor = pixabay.VENDOR
    client_class = pixabay.PixabayClient

    @classmethod
    def prices(cls, settings: pixabay.PixabaySettings) -> tuple[Price, ...]:
        return pixabay.prices("image")
