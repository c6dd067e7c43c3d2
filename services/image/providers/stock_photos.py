"""Stock photos from Pexels and Pixabay, found from the scene's visual description, free and credited."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import ClassVar

from services.common import pexels, pixabay, stock
from services.common.providers import ProviderDescription
from services.image.providers.base import ImageJob, ImageResult, decoded_image


class _StockPhotoProvider(stock.StockProvider[ImageJob]):
    """Searches with the scene's words, takes the photo that fits the frame best, and keeps its credit."""

    price_kind: ClassVar[str] = "image"

    async def generate(self, job: ImageJob) -> ImageResult:
        query = stock.search_query(job.prompt, job.title)
        found = await self._client.images(query, job.width, job.height)
        chosen = stock.pick(self.vendor, "photos", query, found, job.width, job.height, job.scene_index)
        data = await stock.download(self.settings, chosen.rendition)
        result = await asyncio.to_thread(decoded_image, data, self.vendor, chosen.label, 0.0)
        return replace(result, credit=chosen.candidate.credit)


class PexelsPhotoProvider(pexels.PexelsProvider, _StockPhotoProvider):
    description = ProviderDescription(
        name="pexels",
        description="Pexels stock photos searched from the visual description; free, credited",
        offline=False,
    )


class PixabayImageProvider(pixabay.PixabayProvider, _StockPhotoProvider):
    description = ProviderDescription(
        name="pixabay",
        description="Pixabay stock photos searched from the visual description, up to 1280 px; free, credited",
        offline=False,
    )
