"""Pixabay image and video search for the image and video services (docs/providers/pixabay.md): one client, one error
mapping, one credit wording.

Pixabay takes its key in the query string. It is never put in a message here (errors name the variable, never the
URL), and the services' log filter redacts it from the request lines httpx logs.
"""

from __future__ import annotations

from typing import Any

import httpx
from pydantic import SecretStr

from services.common import stock
from services.common.errors import FailedPrecondition, ProviderUnavailable, RateLimited
from services.common.providers import Price

VENDOR = "Pixabay"
KEY_FIELD = "pixabay_api_key"
PER_PAGE = 20  # Pixabay's default page (3-200)
LICENSE = "Free to use under the Pixabay Content License (https://pixabay.com/service/license-summary/)"
LIMITS = "100 requests a minute"
# Longest side of `largeImageURL`, in pixels: larger sizes need full API access, which Pixabay grants on request.
LARGE_IMAGE_SIDE = 1280
_ORIENTATION = {"landscape": "horizontal", "portrait": "vertical", "square": "all"}
# The renditions of a video hit, smallest first.
_VIDEO_SIZES = ("tiny", "small", "medium", "large")


class PixabaySettings(stock.StockSettings):
    # API key; pixabay requests fail with FAILED_PRECONDITION naming PIXABAY_API_KEY while it is unset.
    pixabay_api_key: SecretStr = SecretStr("")
    # Pixabay's API (images at /, videos at /videos/), or a compatible server (a fake in tests).
    pixabay_base_url: str = "https://pixabay.com/api"


def prices(kind: str) -> tuple[Price, ...]:
    return (Price(f"pixabay-{kind}", kind, 0.0, f"free; the render's credits name the author and Pixabay ({LIMITS})"),)


class PixabayClient:
    def __init__(self, settings: PixabaySettings, provider: str) -> None:
        self.settings = settings
        self.provider = provider

    async def images(self, query: str, width: int, height: int) -> list[stock.Candidate]:
        # Photos only: vectors and illustrations come as transparent PNGs that would be framed on black.
        hits = await self._search("/", query, image_type="photo", orientation=_ORIENTATION[stock.shape(width, height)])
        return stock.candidates(VENDOR, _image, hits)

    async def videos(self, query: str, width: int, height: int) -> list[stock.Candidate]:
        # No `orientation`: whether the video search honours it is undocumented, so shapes are compared here.
        return stock.candidates(VENDOR, _video, await self._search("/videos/", query))

    async def _search(self, path: str, query: str, **params: str) -> list[dict[str, Any]]:
        key = self.settings.secret(KEY_FIELD, self.provider)
        query_params = {"key": key, "q": query, "safesearch": "true", "per_page": str(PER_PAGE), **params}
        base = self.settings.pixabay_base_url.rstrip("/")
        async with httpx.AsyncClient(timeout=self.settings.stock_timeout_seconds) as client:
            response = await stock.search(client, f"{base}{path}", VENDOR, params=query_params)
        # Errors are plain text ("[ERROR 400] Invalid or missing API key"); the body is read, never the URL.
        if response.status_code == 429:
            # X-RateLimit-Reset: seconds until the minute's limit resets; waited for if the caller's deadline allows.
            reset = response.headers.get("x-ratelimit-reset", "")
            reset_in = float(reset) if reset.isdigit() else None
            when = f"; it resets in {reset_in:.0f} s" if reset_in is not None else ""
            raise RateLimited(f"Pixabay's rate limit is reached (429; {LIMITS}){when}", reset_in)
        if response.status_code in (401, 403) or (response.status_code == 400 and "key" in response.text.lower()):
            raise FailedPrecondition(
                f"Pixabay refused {KEY_FIELD.upper()} (HTTP {response.status_code}); set a valid API key from "
                "https://pixabay.com/api/docs/"
            )
        if response.status_code >= 500:
            raise ProviderUnavailable(f"Pixabay failed (HTTP {response.status_code})")
        if response.status_code != 200:
            raise FailedPrecondition(f"Pixabay refused the search (HTTP {response.status_code}): {response.text[:200]}")
        try:
            hits: list[dict[str, Any]] = response.json().get("hits") or []
        except (ValueError, AttributeError) as error:
            raise ProviderUnavailable("Pixabay answered the search with something other than its JSON") from error
        return hits


class PixabayProvider:
    """What the Pixabay photo and clip providers declare alike: each mixes it in before its service's stock base,
    which sets `price_kind`."""

    settings_class = PixabaySettings
    required_settings = (KEY_FIELD,)
    output_settings = ("pixabay_base_url",)
    vendor = VENDOR
    client_class = PixabayClient
    price_kind: str

    @classmethod
    def prices(cls, settings: PixabaySettings) -> tuple[Price, ...]:
        return prices(cls.price_kind)


def _image(hit: dict[str, Any]) -> stock.Candidate:
    """`largeImageURL`, the largest size the API gives without full access: the original scaled to 1280 pixels."""
    width, height = int(hit["imageWidth"]), int(hit["imageHeight"])
    scale = min(LARGE_IMAGE_SIDE / max(width, height), 1.0)
    rendition = stock.Rendition(hit["largeImageURL"], round(width * scale), round(height * scale))
    return stock.Candidate(f"pixabay image {hit['id']}", (rendition,), 0.0, _credit("Image", hit))


def _video(hit: dict[str, Any]) -> stock.Candidate:
    """A missing size has an empty URL and zero size: left out."""
    files = hit.get("videos") or {}
    renditions = tuple(
        stock.Rendition(files[size]["url"], int(files[size]["width"]), int(files[size]["height"]))
        for size in _VIDEO_SIZES
        if (files.get(size) or {}).get("url") and files[size].get("width") and files[size].get("height")
    )
    return stock.Candidate(
        f"pixabay video {hit['id']}", renditions, float(hit.get("duration") or 0), _credit("Video", hit)
    )


def _credit(kind: str, hit: dict[str, Any]) -> stock.Credit:
    # Pixabay's wording: "Image by <user> from Pixabay"; a user's page is /users/<name>-<id>/.
    user = hit.get("user") or "an unnamed user"
    user_id = hit.get("user_id")
    return stock.Credit(
        vendor=VENDOR,
        author=user,
        author_url=f"https://pixabay.com/users/{user}-{user_id}/" if user_id else "",
        source_url=hit.get("pageURL") or "",
        attribution=f"{kind} by {user} from Pixabay",
        license=LICENSE,
    )
