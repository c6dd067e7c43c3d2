"""Pexels photo and video search for the image and video services (docs/providers/pexels.md): one client, one error
mapping, one credit wording."""

from __future__ import annotations

from typing import Any

import httpx
from pydantic import SecretStr

from services.common import stock
from services.common.errors import FailedPrecondition, ProviderUnavailable
from services.common.providers import Price

VENDOR = "Pexels"
KEY_FIELD = "pexels_api_key"
PER_PAGE = 15  # Pexels' default page; enough to find one of the right shape, size and length
LICENSE = (
    "Photos and videos provided by Pexels (https://www.pexels.com), free to use under the Pexels License "
    "(https://www.pexels.com/license/)"
)
LIMITS = "200 requests an hour, 20,000 a month"
# The sizes Pexels resizes a photo's `large2x` to fit in (940x650 at twice the pixel density).
LARGE2X_BOX = (1880, 1300)


class PexelsSettings(stock.StockSettings):
    # API key; pexels requests fail with FAILED_PRECONDITION naming PEXELS_API_KEY while it is unset.
    pexels_api_key: SecretStr = SecretStr("")
    # Pexels' API (photos under /v1/, videos under /videos/), or a compatible server (a fake in tests).
    pexels_base_url: str = "https://api.pexels.com"


def prices(kind: str) -> tuple[Price, ...]:
    return (Price(f"pexels-{kind}", kind, 0.0, f"free; the render's credits name the author and Pexels ({LIMITS})"),)


class PexelsClient:
    """Searches Pexels with the provider's settings; remembers when the hourly limit resets, since a 429 does not
    say (only successful answers carry X-Ratelimit-Reset)."""

    def __init__(self, settings: PexelsSettings, provider: str) -> None:
        self.settings = settings
        self.provider = provider
        self._reset_at: float | None = None

    async def images(self, query: str, width: int, height: int) -> list[stock.Candidate]:
        found = await self._search("/v1/search", query, width, height)
        return [_photo(item) for item in found.get("photos") or ()]

    async def videos(self, query: str, width: int, height: int) -> list[stock.Candidate]:
        found = await self._search("/videos/search", query, width, height)
        return [_video(item) for item in found.get("videos") or ()]

    async def _search(self, path: str, query: str, width: int, height: int) -> dict[str, Any]:
        key = self.settings.secret(KEY_FIELD, self.provider)
        params = {"query": query, "orientation": stock.shape(width, height), "per_page": PER_PAGE}
        async with httpx.AsyncClient(
            base_url=self.settings.pexels_base_url, timeout=self.settings.stock_timeout_seconds
        ) as client:
            response = await stock.search(client, path, VENDOR, params=params, headers={"Authorization": key})
        if response.status_code == 429:
            raise stock.rate_limited(VENDOR, LIMITS, stock.reset_in(self._reset_at))
        if response.status_code in (401, 403):
            raise FailedPrecondition(
                f"Pexels refused {KEY_FIELD.upper()} (HTTP {response.status_code}); set a valid API key from "
                "https://www.pexels.com/api/"
            )
        if response.status_code >= 500:
            raise ProviderUnavailable(f"Pexels failed (HTTP {response.status_code})")
        if response.status_code != 200:
            raise FailedPrecondition(f"Pexels refused the search (HTTP {response.status_code}): {response.text[:200]}")
        reset = response.headers.get("x-ratelimit-reset")
        if reset and reset.isdigit():
            self._reset_at = float(reset)
        try:
            found: dict[str, Any] = response.json()
        except ValueError as error:
            raise ProviderUnavailable("Pexels answered the search with something other than JSON") from error
        return found


def _photo(item: dict[str, Any]) -> stock.Candidate:
    """A photo's renditions: `large2x` (within LARGE2X_BOX) and the original, whose size the search gives."""
    width, height, sources = int(item["width"]), int(item["height"]), item.get("src") or {}
    scale = min(LARGE2X_BOX[0] / width, LARGE2X_BOX[1] / height, 1.0)
    renditions = [stock.Rendition(sources["original"], width, height)] if sources.get("original") else []
    if sources.get("large2x") and scale < 1.0:
        renditions.append(stock.Rendition(sources["large2x"], int(width * scale), int(height * scale)))
    name = item.get("photographer") or "an unnamed photographer"
    return stock.Candidate(
        media_id=f"pexels photo {item['id']}",
        renditions=tuple(renditions),
        duration_s=0.0,
        credit=_credit("Photo", name, item.get("photographer_url") or "", item.get("url") or ""),
    )


def _video(item: dict[str, Any]) -> stock.Candidate:
    """A video's MP4 files (HLS playlists are left out: the assembler reads a file)."""
    renditions = tuple(
        stock.Rendition(f["link"], int(f["width"]), int(f["height"]))
        for f in item.get("video_files") or ()
        if f.get("file_type") == "video/mp4" and f.get("link") and f.get("width") and f.get("height")
    )
    user = item.get("user") or {}
    return stock.Candidate(
        media_id=f"pexels video {item['id']}",
        renditions=renditions,
        duration_s=float(item.get("duration") or 0),
        credit=_credit(
            "Video", user.get("name") or "an unnamed videographer", user.get("url") or "", item.get("url") or ""
        ),
    )


def _credit(kind: str, author: str, author_url: str, source_url: str) -> stock.Credit:
    # Pexels' wording: "Photo by <name> on Pexels", linked to the media's page.
    return stock.Credit(
        vendor=VENDOR,
        author=author,
        author_url=author_url,
        source_url=source_url,
        attribution=f"{kind} by {author} on Pexels",
        license=LICENSE,
    )
