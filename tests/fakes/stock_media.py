"""What the Pexels and Pixabay fakes share: a CDN serving real JPEG and MP4 files whose size (and length) is the one
their URL names, so a search result and the file behind it always agree."""

from __future__ import annotations

import functools
import io
import re

from aiohttp import web
from PIL import Image

from tests.fakes.base import FakeServer
from tests.fakes.video_servers import make_clip

# Frames per second of the fake footage: few, so that making it is fast.
CLIP_FPS = 5
_PHOTO = re.compile(r"^/media/photo/(\d+)-(\d+)x(\d+)\.jpe?g$")
_VIDEO = re.compile(r"^/media/video/(\d+)-(\d+)x(\d+)-(\d+)s\.mp4$")


@functools.lru_cache(maxsize=64)
def make_jpeg(width: int, height: int) -> bytes:
    """A real JPEG of exactly width x height: a gradient, so it is not a flat colour a decoder might shortcut."""
    image = Image.linear_gradient("L").resize((width, height)).convert("RGB")
    out = io.BytesIO()
    image.save(out, "JPEG", quality=80)
    return out.getvalue()


class StockMediaServer(FakeServer):
    """Subclasses add their API's routes in `api_routes`; files are at `photo_url` and `video_url`."""

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/media/{kind}/{name}", self._media)
        self.api_routes(app)

    def api_routes(self, app: web.Application) -> None:
        raise NotImplementedError

    def photo_url(self, media_id: int, width: int, height: int) -> str:
        return f"{self.base_url}/media/photo/{media_id}-{width}x{height}.jpeg"

    def video_url(self, media_id: int, width: int, height: int, seconds: int) -> str:
        return f"{self.base_url}/media/video/{media_id}-{width}x{height}-{seconds}s.mp4"

    async def _media(self, request: web.Request) -> web.StreamResponse:
        if photo := _PHOTO.match(request.path):
            _, width, height = (int(part) for part in photo.groups())
            return web.Response(body=make_jpeg(width, height), content_type="image/jpeg")
        if video := _VIDEO.match(request.path):
            _, width, height, seconds = (int(part) for part in video.groups())
            return web.Response(body=make_clip(width, height, seconds * CLIP_FPS, CLIP_FPS), content_type="video/mp4")
        raise web.HTTPNotFound()
