"""A fake Pixabay API (image and video search, per docs/providers/pixabay.md and pixabay.com/api/docs) with a CDN of
real files.

The catalogue is `images` and `videos`: what any search finds, in relevance order, unless the query is in `empty`.
Images honour `orientation` (horizontal, vertical); videos ignore it, since Pixabay does not document it for them.
A wrong or missing key is answered 400 with Pixabay's plain-text error; every answer carries the X-RateLimit-*
headers (the reset in seconds), 429s from `add_fault` included when the test gives them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiohttp import web

from tests.fakes.stock_media import StockMediaServer

KEY = "pixabay-test-key-93b1e7"
LIMIT = 100
BAD_KEY = "[ERROR 400] Invalid or missing API key (https://pixabay.com/api/docs/)."


@dataclass(frozen=True)
class Image:
    id: int
    width: int
    height: int
    user: str = "meadowlark"


@dataclass(frozen=True)
class Video:
    id: int
    duration: int
    # Sizes of tiny, small, medium and large, smallest first; None where Pixabay has no such size.
    sizes: tuple[tuple[int, int] | None, ...]
    user: str = "reelmaker"


class FakePixabay(StockMediaServer):
    def __init__(self) -> None:
        super().__init__()
        self._defaults()

    def _defaults(self) -> None:
        self.images: list[Image] = [Image(301, 900, 1600, "tallpines"), Image(302, 4000, 2250, "wideskies")]
        self.videos: list[Video] = [
            Video(401, 2, ((480, 270), (640, 360), None, None), "quickshots"),
            Video(402, 8, ((640, 360), (960, 540), (1280, 720), None), "slowpans"),
        ]
        self.empty: set[str] = set()

    def reset(self) -> None:
        super().reset()
        self._defaults()

    def searches(self) -> list[Any]:
        return [r for r in self.requests if r.path in ("/api/", "/api/videos/")]

    def api_routes(self, app: web.Application) -> None:
        app.router.add_get("/api/", self._images)
        app.router.add_get("/api/videos/", self._videos)

    def _answer(self, request: web.Request, hits: list[dict[str, Any]]) -> web.Response:
        headers = {"X-RateLimit-Limit": str(LIMIT), "X-RateLimit-Remaining": "99", "X-RateLimit-Reset": "60"}
        if request.query.get("key") != KEY:
            return web.Response(status=400, text=BAD_KEY, headers=headers)
        query = request.query.get("q", "")
        found = [] if query in self.empty or not query else hits
        per_page = int(request.query.get("per_page", "20"))
        body = {"total": len(found), "totalHits": len(found), "hits": found[:per_page]}
        return web.json_response(body, headers=headers)

    async def _images(self, request: web.Request) -> web.StreamResponse:
        wanted = request.query.get("orientation", "all")
        hits = [
            self._image(i) for i in self.images if wanted == "all" or (wanted == "horizontal") == (i.width >= i.height)
        ]
        return self._answer(request, hits)

    async def _videos(self, request: web.Request) -> web.StreamResponse:
        return self._answer(request, [self._video(v) for v in self.videos])

    def _image(self, image: Image) -> dict[str, Any]:
        def scaled(side: int) -> tuple[int, int]:
            scale = min(side / max(image.width, image.height), 1.0)
            return round(image.width * scale), round(image.height * scale)

        return {
            "id": image.id,
            "pageURL": f"https://pixabay.com/photos/test-{image.id}/",
            "type": "photo",
            "tags": "test, gradient",
            "previewURL": self.photo_url(image.id, *scaled(150)),
            "webformatURL": self.photo_url(image.id, *scaled(640)),
            "largeImageURL": self.photo_url(image.id, *scaled(1280)),
            "imageWidth": image.width,
            "imageHeight": image.height,
            "imageSize": image.width * image.height // 4,
            "views": 10,
            "downloads": 5,
            "likes": 1,
            "user_id": image.id * 11,
            "user": image.user,
            "userImageURL": "",
        }

    def _video(self, video: Video) -> dict[str, Any]:
        files = {}
        for name, size in zip(("tiny", "small", "medium", "large"), video.sizes, strict=True):
            if size is None:  # Pixabay lists a missing size with an empty URL and zero size
                files[name] = {"url": "", "width": 0, "height": 0, "size": 0, "thumbnail": ""}
            else:
                url = self.video_url(video.id, *size, video.duration)
                files[name] = {"url": url, "width": size[0], "height": size[1], "size": 1000, "thumbnail": ""}
        return {
            "id": video.id,
            "pageURL": f"https://pixabay.com/videos/test-{video.id}/",
            "type": "film",
            "tags": "test, pattern",
            "duration": video.duration,
            "videos": files,
            "views": 10,
            "downloads": 5,
            "likes": 1,
            "user_id": video.id * 11,
            "user": video.user,
            "userImageURL": "",
        }
