"""Pexels photo and video search for the image and video services (docs/providers/pexels.md): one client, one error
mapping, one credit wording."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import httpx
from pydantic import SecretStr

from services.common import stock
from services.common.errors import FailedPrecondition, ProviderUnavailable, RateLimited
from services.common.providers import Price
from services.common.retry import retry_after_seconds

VENDOR = "Pexels"
KEY_FIELD = "pexels_api_key"
PER_PAGE = 15  # Pexels' default page; enough to find one of the right shape, size and length
LICENSE = (
    "Photos and videos provided by Pexels (https://www.pexels.com), free to use under the Pexels License "
    "(https://www.pexels.com/license/)"
)
LIMITS = "200 requests an hour, 20,000 a month"
MONTHLY_LIMIT = "20,000 requests"
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
    """Searches Pexels with the provider's settings. Pexels has two limits and its 429 names neither: a monthly quota,
    whose state (X-Ratelimit-Remaining, and X-Ratelimit-Reset as a unix time) comes with every successful answer and
    is remembered here, and an hourly one, whose reset it never tells."""

    def __init__(self, settings: PexelsSettings, provider: str) -> None:
        self.settings = settings
        self.provider = provider
        self._remaining: int | None = None
        self._reset_at: float | None = None

    async def images(self, query: str, width: int, height: int) -> list[stock.Candidate]:
        found = await self._search("/v1/search", query, width, height)
        return stock.candidates(VENDOR, _photo, found.get("photos") or ())

    async def videos(self, query: str, width: int, height: int) -> list[stock.Candidate]:
        found = await self._search("/videos/search", query, width, height)
        return stock.candidates(VENDOR, _video, found.get("videos") or ())

    async def _search(self, path: str, query: str, width: int, height: int) -> dict[str, Any]:
        key = self.settings.secret(KEY_FIELD, self.provider)
        params = {"query": query, "orientation": stock.shape(width, height), "per_page": PER_PAGE}
        async with httpx.AsyncClient(
            base_url=self.settings.pexels_base_url, timeout=self.settings.stock_timeout_seconds
        ) as client:
            response = await stock.search(client, path, VENDOR, params=params, headers={"Authorization": key})
        if response.status_code == 429:
            raise self._throttled(response)
        if response.status_code in (401, 403):
            raise FailedPrecondition(
                f"Pexels refused {KEY_FIELD.upper()} (HTTP {response.status_code}); set a valid API key from "
                "https://www.pexels.com/api/"
            )
        if response.status_code >= 500:
            raise ProviderUnavailable(f"Pexels failed (HTTP {response.status_code})")
        if response.status_code != 200:
            raise FailedPrecondition(f"Pexels refused the search (HTTP {response.status_code}): {response.text[:200]}")
        remaining, reset = (
            response.headers.get("x-ratelimit-remaining", ""),
            response.headers.get("x-ratelimit-reset", ""),
        )
        if remaining.isdigit() and reset.isdigit():
            self._remaining, self._reset_at = int(remaining), float(reset)
        try:
            found = response.json()
        except ValueError:
            found = None
        if not isinstance(found, dict):
            raise ProviderUnavailable("Pexels answered the search with something other than its JSON object")
        return found

    def _throttled(self, response: httpx.Response) -> RateLimited:
        """The monthly quota, when the last answer said it was spent: it resets at the announced time, which is
        waited for only when the caller's deadline allows (it rarely does). Else the hourly limit: its reset is
        unknown, so the retry policy's short backoff (or a proxy's Retry-After) is all that is tried."""
        if self._remaining == 0 and self._reset_at is not None:
            when = datetime.fromtimestamp(self._reset_at, UTC).strftime("%Y-%m-%d %H:%M UTC")
            return RateLimited(
                f"Pexels's monthly quota ({MONTHLY_LIMIT}) is spent (429); it resets at {when}. Ask Pexels for a "
                "higher limit (free), or choose another provider until then",
                max(0.0, self._reset_at - time.time()),
            )
        return RateLimited(
            f"Pexels's rate limit is reached (429; {LIMITS}); try again within the hour",
            retry_after_seconds(response.headers.get("retry-after")),
        )


class PexelsProvider:
    """What the Pexels photo and clip providers declare alike: each mixes it in before its service's stock base,
    which sets `price_kind`."""

    settings_class = PexelsSettings
    required_settings = (KEY_FIELD,)
    output_settings = ("pexels_base_url",)
    vendor = VENDOR
    client_class = PexelsClient
    price_kind: str

    @classmethod
    def prices(cls, settings: PexelsSettings) -> tuple[Price, ...]:
        return prices(cls.price_kind)


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
