"""A fake Pexels API (photo and video search, per docs/providers/pexels.md and pexels.com/api/documentation) with a
CDN of real files.

The catalogue is `photos` and `videos`: what any search finds, in relevance order, unless the query is in `empty`.
The `orientation` parameter is honoured as Pexels does (the media of that shape only). Successful answers carry the
monthly quota's X-Ratelimit-* headers (`monthly_remaining`, and the period's end `period_ends_in` seconds from now,
as a unix time); a 429 (from `add_fault`) carries none, as documented. A wrong key is answered 401.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from tests.fakes.stock_media import StockMediaServer

KEY = "pexels-test-key-5f2a9c"
MONTHLY_LIMIT = 20000


@dataclass(frozen=True)
class Photo:
    id: int
    width: int
    height: int
    photographer: str = "Jane Doe"


@dataclass(frozen=True)
class Video:
    id: int
    # Whole seconds, as Pexels gives them.
    duration: int
    # The sizes of its MP4 files.
    files: tuple[tuple[int, int], ...]
    user: str = "Joe Bloggs"
    # An HLS playlist is listed too, as Pexels does; it must never be chosen.
    hls: bool = True


def _shape(width: int, height: int) -> str:
    return "square" if width == height else "landscape" if width > height else "portrait"


class FakePexels(StockMediaServer):
    def __init__(self) -> None:
        super().__init__()
        self._defaults()

    def _defaults(self) -> None:
        self.photos: list[Photo] = [
            Photo(101, 480, 640, "Portia Tall"),
            Photo(102, 3000, 2000, "Lena Wide"),
            Photo(103, 1280, 720, "Hugo Small"),
        ]
        self.videos: list[Video] = [
            Video(201, 1, ((640, 360), (1280, 720)), "Shorty Clip"),
            Video(202, 4, ((320, 180), (640, 360), (1280, 720)), "Ava Long"),
            Video(203, 6, ((360, 640),), "Vera Tall"),
        ]
        self.empty: set[str] = set()
        self.monthly_remaining = MONTHLY_LIMIT - 1
        self.period_ends_in = 12 * 86400

    def reset(self) -> None:
        super().reset()
        self._defaults()

    def searches(self) -> list[Any]:
        return [r for r in self.requests if r.path in ("/v1/search", "/videos/search")]

    def api_routes(self, app: web.Application) -> None:
        app.router.add_get("/v1/search", self._photos)
        app.router.add_get("/videos/search", self._videos)

    def _refused(self, request: web.Request) -> web.Response | None:
        if request.headers.get("Authorization") != KEY:
            return web.json_response({"error": "Unauthorized"}, status=401)
        return None

    def _page(self, request: web.Request, name: str, items: list[dict[str, Any]]) -> web.Response:
        query = request.query.get("query", "")
        found = [] if query in self.empty or not query else items
        per_page = int(request.query.get("per_page", "15"))
        body = {"page": 1, "per_page": per_page, "total_results": len(found), name: found[:per_page]}
        headers = {
            "X-Ratelimit-Limit": str(MONTHLY_LIMIT),
            "X-Ratelimit-Remaining": str(self.monthly_remaining),
            "X-Ratelimit-Reset": str(int(time.time()) + self.period_ends_in),
        }
        return web.json_response(body, headers=headers)

    async def _photos(self, request: web.Request) -> web.StreamResponse:
        if refused := self._refused(request):
            return refused
        wanted = request.query.get("orientation")
        items = [self._photo(p) for p in self.photos if wanted in (None, _shape(p.width, p.height))]
        return self._page(request, "photos", items)

    async def _videos(self, request: web.Request) -> web.StreamResponse:
        if refused := self._refused(request):
            return refused
        wanted = request.query.get("orientation")
        items = [self._video(v) for v in self.videos if wanted in (None, _shape(*v.files[-1]))]
        return self._page(request, "videos", items)

    def _photo(self, photo: Photo) -> dict[str, Any]:
        slug = photo.photographer.lower().replace(" ", "-")
        original = self.photo_url(photo.id, photo.width, photo.height)
        # large2x: within 940x650 at twice the density (imgix "fit" keeps the shape).
        scale = min(1880 / photo.width, 1300 / photo.height, 1.0)
        large2x = self.photo_url(photo.id, int(photo.width * scale), int(photo.height * scale))
        small = self.photo_url(photo.id, max(1, photo.width * 130 // photo.height), 130)
        return {
            "id": photo.id,
            "width": photo.width,
            "height": photo.height,
            "url": f"https://www.pexels.com/photo/{photo.id}/",
            "photographer": photo.photographer,
            "photographer_url": f"https://www.pexels.com/@{slug}",
            "photographer_id": photo.id * 7,
            "avg_color": "#7A7A7A",
            "alt": "a test gradient",
            "src": {
                "original": original,
                "large2x": large2x,
                "large": large2x,
                "medium": small,
                "small": small,
                "portrait": small,
                "landscape": small,
                "tiny": small,
            },
        }

    def _video(self, video: Video) -> dict[str, Any]:
        files = [
            {
                "id": video.id * 10 + index,
                "quality": "hd" if height >= 720 or width >= 720 else "sd",
                "file_type": "video/mp4",
                "width": width,
                "height": height,
                "fps": 25,
                "link": self.video_url(video.id, width, height, video.duration),
            }
            for index, (width, height) in enumerate(video.files)
        ]
        if video.hls:
            files.append(
                {
                    "id": video.id * 10 + 9,
                    "quality": "hls",
                    "file_type": "hls",
                    "width": 4096,
                    "height": 2160,
                    "fps": 25,
                    "link": f"{self.base_url}/media/hls/{video.id}.m3u8",
                }
            )
        slug = video.user.lower().replace(" ", "-")
        return {
            "id": video.id,
            "width": video.files[-1][0],
            "height": video.files[-1][1],
            "url": f"https://www.pexels.com/video/{video.id}/",
            "image": self.photo_url(video.id, *video.files[0]),
            "duration": video.duration,
            "user": {"id": video.id * 3, "name": video.user, "url": f"https://www.pexels.com/@{slug}"},
            "video_files": files,
            "video_pictures": [],
        }
