"""Stock footage from Pexels and Pixabay, found from the scene's visual description, free and credited."""

from __future__ import annotations

import asyncio
from typing import ClassVar

from services.common import pexels, pixabay, stock
from services.common.providers import ProviderDescription
from services.video.providers.base import ClipJob, ClipResult, write_clip


class _StockClipProvider(stock.StockProvider[ClipJob]):
    """Searches with the scene's words and takes the clip that fits the frame and the narration best. The scene's
    image is not used: the footage replaces it (and so does its credit, in the render's summary)."""

    price_kind: ClassVar[str] = "clip"

    async def generate(self, job: ClipJob) -> ClipResult:
        query = stock.search_query(job.prompt, job.title)
        found = await self._client.videos(query, job.width, job.height)
        chosen = stock.pick(
            self.vendor, "videos", query, found, job.width, job.height, job.scene_index, job.duration_ms / 1000
        )
        data = await stock.download(self.settings, chosen.rendition)
        path = await asyncio.to_thread(write_clip, job.work_dir, data)
        return ClipResult(path=path, mime_type="video/mp4", model=chosen.label, credit=chosen.candidate.credit)


class PexelsVideoProvider(pexels.PexelsProvider, _StockClipProvider):
    description = ProviderDescription(
        name="pexels",
        description="Pexels stock footage searched from the visual description (looped when short); free, credited",
        offline=False,
    )


class PixabayVideoProvider(pixabay.PixabayProvider, _StockClipProvider):
    description = ProviderDescription(
        name="pixabay",
        description="Pixabay stock footage searched from the visual description (looped when short); free, credited",
        offline=False,
    )
