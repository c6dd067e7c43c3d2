"""Stock footage from Pexels and Pixabay, found from the scene's visual description, free and credited."""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

from services.common import pexels, pixabay, stock
from services.common.providers import Price, Provider, ProviderDescription
from services.video.providers.base import ClipJob, ClipResult, write_clip


class _StockClipProvider(Provider[Any, ClipJob]):
    """Searches with the scene's words and takes the clip that fits the frame and the narration best. The scene's
    image is not used: the footage replaces it (and so does its credit, in the render's summary)."""

    vendor: ClassVar[str]
    client_class: ClassVar[type[Any]]

    def __init__(self, settings: stock.StockSettings) -> None:
        super().__init__(settings)
        self._client: stock.StockClient = self.client_class(settings, self.description.name)

    @classmethod
    def estimate_usd(cls, settings: stock.StockSettings, job: ClipJob) -> float:
        return 0.0

    async def generate(self, job: ClipJob) -> ClipResult:
        query = stock.search_query(job.prompt, job.title)
        found = await self._client.videos(query, job.width, job.height)
        chosen = stock.pick(
            self.vendor, "videos", query, found, job.width, job.height, job.scene_index, job.duration_ms / 1000
        )
        data = await stock.download(self.settings, chosen.rendition)
        path = await asyncio.to_thread(write_clip, job.work_dir, data)
        return ClipResult(path=path, mime_type="video/mp4", model=chosen.label, credit=chosen.candidate.credit)


class PexelsVideoProvider(_StockClipProvider):
    description = ProviderDescription(
        name="pexels",
        description="Pexels stock footage searched from the visual description (looped when short); free, credited",
        offline=False,
    )
    settings_class = pexels.PexelsSettings
    required_settings = (pexels.KEY_FIELD,)
    output_settings = ("pexels_base_url",)
    vendor = pexels.VENDOR
    client_class = pexels.PexelsClient

    @classmethod
    def prices(cls, settings: pexels.PexelsSettings) -> tuple[Price, ...]:
        return pexels.prices("clip")


class PixabayVideoProvider(_StockClipProvider):
    description = ProviderDescription(
        name="pixabay",
        description="Pixabay stock footage searched from the visual description (looped when short); free, credited",
        offline=False,
    )
    settings_class = pixabay.PixabaySettings
    required_settings = (pixabay.KEY_FIELD,)
    output_settings = ("pixabay_base_url",)
    vendor = pixabay.VENDOR
    client_class = pixabay.PixabayClient

    @classmethod
    def prices(cls, settings: pixabay.PixabaySettings) -> tuple[Price, ...]:
        return pixabay.prices("clip")
