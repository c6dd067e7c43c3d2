"""Pexels and Pixabay photos and clips through the real image and video services, against FakePexels and FakePixabay
over HTTP: the choice of media by shape, size and length, the credit that travels with it, and every failure."""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from PIL import Image
from scenecast.v1 import image_service_pb2, image_service_pb2_grpc, types_pb2

from services.common import retry
from services.common.pexels import PexelsSettings
from services.common.pixabay import PixabaySettings
from services.common.redact import RedactingFilter
from services.image.config import ImageSettings
from services.image.server import build as build_image
from services.video.config import VideoSettings
from services.video.server import build as build_video
from tests.fakes import pexels_server, pixabay_server
from tests.fakes.base import Fault
from tests.fakes.pexels_server import FakePexels
from tests.fakes.pixabay_server import FakePixabay
from tests.services.conftest import _serve
from tests.services.test_media_services import collect
from tests.services.test_replicate_providers import ASPECTS
from tests.services.test_video_providers import Clip, _clip, assert_mp4

Picture = Callable[..., Awaitable[tuple[types_pb2.AssetMetadata, bytes]]]
ATTEMPTS = ImageSettings(listen_address="127.0.0.1:0").provider_attempts
PEXELS_LICENSE = (
    "Photos and videos provided by Pexels (https://www.pexels.com), free to use under the Pexels License "
    "(https://www.pexels.com/license/)"
)
PIXABAY_LICENSE = "Free to use under the Pixabay Content License (https://pixabay.com/service/license-summary/)"
# What the services search for with test_video_providers' PROMPT ("A ladder against a sunny wall, slow push in.").
CLIP_QUERY = "ladder sunny wall"


@pytest.fixture(scope="module")
def pexels_fake() -> Iterator[FakePexels]:
    with FakePexels() as fake:
        yield fake


@pytest.fixture(scope="module")
def pixabay_fake() -> Iterator[FakePixabay]:
    with FakePixabay() as fake:
        yield fake


@pytest.fixture
def pexels(pexels_fake: FakePexels, monkeypatch: pytest.MonkeyPatch) -> FakePexels:
    pexels_fake.reset()
    monkeypatch.setattr(retry, "BACKOFF_MIN_SECONDS", 0.01)
    monkeypatch.setattr(retry, "BACKOFF_MAX_SECONDS", 0.05)
    return pexels_fake


@pytest.fixture
def pixabay(pixabay_fake: FakePixabay, monkeypatch: pytest.MonkeyPatch) -> FakePixabay:
    pixabay_fake.reset()
    monkeypatch.setattr(retry, "BACKOFF_MIN_SECONDS", 0.01)
    monkeypatch.setattr(retry, "BACKOFF_MAX_SECONDS", 0.05)
    return pixabay_fake


def _settings(pexels: FakePexels, pixabay: FakePixabay, **changes: Any) -> list[Any]:
    """Both vendors' settings, pointed at the fakes; `pexels_*` and `pixabay_*` changes go to their own."""
    pexels_values = {"pexels_api_key": pexels_server.KEY, "pexels_base_url": pexels.base_url}
    pixabay_values = {"pixabay_api_key": pixabay_server.KEY, "pixabay_base_url": f"{pixabay.base_url}/api"}
    for name, value in changes.items():
        (pexels_values if name.startswith("pexels_") else pixabay_values)[name] = value
    return [
        PexelsSettings(allow_private_output_urls=True, **pexels_values),
        PixabaySettings(allow_private_output_urls=True, **pixabay_values),
    ]


@pytest.fixture
async def images(
    pexels: FakePexels, pixabay: FakePixabay, tmp_path: Path
) -> AsyncIterator[Callable[..., Awaitable[Picture]]]:
    """Starts an image service (`cache`: an asset cache folder, else none) and returns its GenerateImage call."""
    async with contextlib.AsyncExitStack() as stack:

        async def start(cache: bool = False, **changes: Any) -> Picture:
            settings = ImageSettings(listen_address="127.0.0.1:0", asset_cache_dir=str(tmp_path) if cache else "off")
            server = build_image(settings, _settings(pexels, pixabay, **changes))
            stub = image_service_pb2_grpc.ImageServiceStub(
                await stack.enter_async_context(contextlib.asynccontextmanager(_serve)(server))
            )

            async def call(
                provider: str,
                aspect: str = "16:9",
                height: int = 360,
                prompt: str = "A misty pine forest at dawn, soft golden light",
                timeout: float | None = None,
            ) -> tuple[types_pb2.AssetMetadata, bytes]:
                output = types_pb2.OutputSettings(
                    aspect_ratio=ASPECTS[aspect], height=height, quality=types_pb2.QUALITY_STANDARD
                )
                scene = types_pb2.Scene(id="s1", narration="Walk.", visual_prompt=prompt, title="Forests")
                request = image_service_pb2.GenerateImageRequest(scene=scene, output=output, provider=provider)
                return await collect(stub.GenerateImage(request, timeout=timeout))

            return call

        yield start


@pytest.fixture
async def clips(pexels: FakePexels, pixabay: FakePixabay, work_root: Path) -> AsyncIterator[Clip]:
    async with contextlib.AsyncExitStack() as stack:
        settings = VideoSettings(listen_address="127.0.0.1:0", video_tmp_dir=str(work_root), asset_cache_dir="off")
        server = build_video(settings, _settings(pexels, pixabay))
        yield _clip(await stack.enter_async_context(contextlib.asynccontextmanager(_serve)(server)))


async def _failure(call: Awaitable[object]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await call
    return error.value


def _png_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "PNG"
        return image.size


def _credit(**fields: str) -> types_pb2.Credit:
    return types_pb2.Credit(**fields)


# --- Pexels photos ----------------------------------------------------------------------------------------------


async def test_pexels_takes_the_first_landscape_photo_large_enough_at_its_smallest_sufficient_size(
    pexels: FakePexels, images: Callable[..., Awaitable[Picture]]
) -> None:
    """Photo 102 (3000x2000) comes first of the landscape ones; its large2x (1880x1253) covers 640x360, so the
    original is not downloaded. The image is fitted to the frame and keeps the photographer's credit."""
    metadata, data = await (await images())("pexels")
    [search] = pexels.searches()
    assert (search.path, search.headers["Authorization"]) == ("/v1/search", pexels_server.KEY)
    assert search.query == {"query": "misty pine forest dawn", "orientation": "landscape", "per_page": "15"}
    assert [r.path for r in pexels.requests_to("/media/")] == ["/media/photo/102-1880x1253.jpeg"]
    assert _png_size(data) == (640, 360)
    assert (metadata.provider, metadata.model, metadata.estimated_cost_usd) == (
        "pexels",
        "pexels photo 102 1880x1253",
        0,
    )
    assert metadata.credit == _credit(
        vendor="Pexels",
        author="Lena Wide",
        author_url="https://www.pexels.com/@lena-wide",
        source_url="https://www.pexels.com/photo/102/",
        attribution="Photo by Lena Wide on Pexels",
        license=PEXELS_LICENSE,
    )


async def test_pexels_asks_for_the_output_s_orientation(
    pexels: FakePexels, images: Callable[..., Awaitable[Picture]]
) -> None:
    metadata, data = await (await images())("pexels", aspect="9:16", height=640)
    assert pexels.searches()[0].query["orientation"] == "portrait"
    assert metadata.model == "pexels photo 101 480x640" and metadata.credit.author == "Portia Tall"
    assert _png_size(data) == (360, 640)


async def test_pexels_takes_the_original_when_large2x_is_too_small(
    pexels: FakePexels, images: Callable[..., Awaitable[Picture]]
) -> None:
    metadata, _ = await (await images())("pexels", height=1080)
    assert metadata.model == "pexels photo 102 3000x2000"


async def test_when_no_photo_is_large_enough_the_largest_is_taken_and_logged(
    pexels: FakePexels, images: Callable[..., Awaitable[Picture]], caplog: pytest.LogCaptureFixture
) -> None:
    pexels.photos = [pexels_server.Photo(111, 800, 450), pexels_server.Photo(112, 1280, 720, "Hugo Small")]
    with caplog.at_level(logging.WARNING):
        metadata, data = await (await images())("pexels", height=1080)
    assert metadata.model == "pexels photo 112 1280x720" and _png_size(data) == (1920, 1080)
    assert "the largest is 1280x720, under 1920x1080, so it is upscaled" in caplog.text


async def test_no_photo_found_is_not_found_naming_the_search(
    pexels: FakePexels, images: Callable[..., Awaitable[Picture]]
) -> None:
    pexels.empty.add("misty pine forest dawn")
    error = await _failure((await images())("pexels"))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert "Pexels has no photos for the search 'misty pine forest dawn'" in (error.details() or "")
    assert "describe the visual in other, plainer words" in (error.details() or "")


async def test_a_refused_pexels_key_names_the_variable(
    pexels: FakePexels, pixabay: FakePixabay, images: Callable[..., Awaitable[Picture]]
) -> None:
    error = await _failure((await images(pexels_api_key="wrong-pexels-key-123"))("pexels"))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "Pexels refused PEXELS_API_KEY (HTTP 401)" in (error.details() or "")
    assert "wrong-pexels-key-123" not in (error.details() or "")
    assert len(pexels.searches()) == 1  # a refused key is not retried


async def test_a_missing_pexels_key_names_the_variable_before_any_request(
    pexels: FakePexels, images: Callable[..., Awaitable[Picture]]
) -> None:
    error = await _failure((await images(pexels_api_key=""))("pexels"))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION and "PEXELS_API_KEY" in (error.details() or "")
    assert pexels.searches() == []


async def test_a_pexels_429_within_the_monthly_quota_is_the_hourly_limit_and_retried(
    pexels: FakePexels, images: Callable[..., Awaitable[Picture]]
) -> None:
    """Pexels' 429 carries no headers and the hourly limit's reset is never told: the policy's backoff retries it."""
    pexels.add_fault(Fault("/v1/search", status=429, body={"error": "Too many requests"}))
    metadata, _ = await (await images())("pexels")
    assert metadata.credit.author == "Lena Wide" and len(pexels.searches()) == 2


async def test_a_pexels_429_that_persists_is_resource_exhausted_naming_the_hourly_limit(
    pexels: FakePexels, images: Callable[..., Awaitable[Picture]]
) -> None:
    for _ in range(ATTEMPTS):
        pexels.add_fault(Fault("/v1/search", status=429, body={"error": "Too many requests"}))
    error = await _failure((await images())("pexels"))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error.details() == (
        "Pexels's rate limit is reached (429; 200 requests an hour, 20,000 a month); try again within the hour"
    )


async def test_a_pexels_429_once_the_monthly_quota_is_spent_is_resource_exhausted_at_once(
    pexels: FakePexels, images: Callable[..., Awaitable[Picture]]
) -> None:
    """The last answer said no request is left until the period ends (in 12 days): nothing to wait for."""
    pexels.monthly_remaining = 0
    call = await images()
    await call("pexels")
    pexels.add_fault(Fault("/v1/search", status=429, body={"error": "Too many requests"}))
    error = await _failure(call("pexels", prompt="A quiet harbour"))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "Pexels's monthly quota (20,000 requests) is spent (429); it resets at " in (error.details() or "")
    assert len(pexels.searches()) == 2


async def test_a_search_result_missing_documented_fields_is_unavailable_not_internal(
    pexels: FakePexels, images: Callable[..., Awaitable[Picture]]
) -> None:
    for _ in range(ATTEMPTS):
        pexels.add_fault(Fault("/v1/search", status=200, body={"page": 1, "photos": [{"id": 7, "src": {}}]}))
    error = await _failure((await images())("pexels"))
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert "Pexels answered with a search result missing what it documents (KeyError('width'))" in (
        error.details() or ""
    )


async def test_a_cached_photo_keeps_its_credit_and_asks_pexels_once(
    pexels: FakePexels, images: Callable[..., Awaitable[Picture]]
) -> None:
    call = await images(cache=True)
    first, data = await call("pexels")
    again, cached = await call("pexels")
    assert (first.cache_hit, again.cache_hit, cached == data) == (False, True, True)
    assert again.credit == first.credit and again.credit.author == "Lena Wide"
    assert len(pexels.searches()) == 1


# --- Pixabay images ---------------------------------------------------------------------------------------------


async def test_pixabay_takes_a_horizontal_photo_and_credits_its_user(
    pixabay: FakePixabay, images: Callable[..., Awaitable[Picture]]
) -> None:
    metadata, data = await (await images())("pixabay")
    [search] = pixabay.searches()
    assert search.path == "/api/"
    assert {k: v for k, v in search.query.items() if k != "key"} == {
        "q": "misty pine forest dawn",
        "image_type": "photo",
        "orientation": "horizontal",
        "safesearch": "true",
        "per_page": "20",
    }
    assert [r.path for r in pixabay.requests_to("/media/")] == ["/media/photo/302-1280x720.jpeg"]
    assert metadata.model == "pixabay image 302 1280x720" and _png_size(data) == (640, 360)
    assert metadata.credit == _credit(
        vendor="Pixabay",
        author="wideskies",
        author_url="https://pixabay.com/users/wideskies-3322/",
        source_url="https://pixabay.com/photos/test-302/",
        attribution="Image by wideskies from Pixabay",
        license=PIXABAY_LICENSE,
    )


def _pixabay_429(reset_seconds: int) -> Fault:
    headers = {"X-RateLimit-Limit": "100", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(reset_seconds)}
    return Fault("/api/", status=429, body="[ERROR 429] Too many requests", headers=headers)


async def test_a_pixabay_429_is_retried_after_its_reset(
    pixabay: FakePixabay, images: Callable[..., Awaitable[Picture]]
) -> None:
    pixabay.add_fault(_pixabay_429(1))
    metadata, _ = await (await images())("pixabay")
    assert metadata.credit.author == "wideskies" and len(pixabay.searches()) == 2


async def test_a_pixabay_429_resetting_after_the_deadline_is_resource_exhausted_at_once(
    pixabay: FakePixabay, images: Callable[..., Awaitable[Picture]]
) -> None:
    """A reset within the retry policy's longest wait (120 s) is waited for only if the caller's deadline allows."""
    pixabay.add_fault(_pixabay_429(60))
    error = await _failure((await images())("pixabay", timeout=10))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error.details() == "Pixabay's rate limit is reached (429; 100 requests a minute); it resets in 60 s"
    assert len(pixabay.searches()) == 1


async def test_a_refused_pixabay_key_is_named_and_never_shown_in_errors_or_logs(
    pixabay: FakePixabay, images: Callable[..., Awaitable[Picture]]
) -> None:
    """Pixabay's key travels in the query string: httpx logs the request line, which the services' log filter
    (installed here as the services install it) redacts; no message of ours holds the URL."""
    key = "wrong-pixabay-key-4d8e2f"
    logs = io.StringIO()
    handler = logging.StreamHandler(logs)
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    root.addHandler(handler)
    previous = root.level
    root.setLevel(logging.DEBUG)
    try:
        call = await images(pixabay_api_key=key)
        error = await _failure(call("pixabay"))
        for _ in range(ATTEMPTS):
            pixabay.add_fault(Fault("/api/", status=500, body="[ERROR 500] down"))
        unavailable = await _failure(call("pixabay"))
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "Pixabay refused PIXABAY_API_KEY (HTTP 400)" in (error.details() or "")
    assert unavailable.code() == grpc.StatusCode.UNAVAILABLE
    assert pixabay.searches()[0].query["key"] == key  # it was sent, as Pixabay wants it
    assert "HTTP Request: GET" in logs.getvalue()  # the request lines were logged...
    for text in (error.details() or "", unavailable.details() or "", logs.getvalue()):
        assert key not in text  # ...without the key


# --- Pexels and Pixabay clips -----------------------------------------------------------------------------------


async def test_pexels_takes_a_clip_long_enough_at_the_smallest_size_covering_the_output(
    pexels: FakePexels, clips: Clip
) -> None:
    """Video 201 lasts 1 s, under the 3 s asked; 202 (4 s) has 320x180, 640x360 and 1280x720 files: 640x360."""
    metadata, data = await clips("pexels", duration_ms=3000)
    [search] = pexels.searches()
    assert search.path == "/videos/search"
    assert search.query == {"query": CLIP_QUERY, "orientation": "landscape", "per_page": "15"}
    assert_mp4(metadata, data, (640, 360), 4000)
    assert (metadata.provider, metadata.model, metadata.estimated_cost_usd) == (
        "pexels",
        "pexels video 202 640x360 4 s",
        0,
    )
    assert metadata.credit == _credit(
        vendor="Pexels",
        author="Ava Long",
        author_url="https://www.pexels.com/@ava-long",
        source_url="https://www.pexels.com/video/202/",
        attribution="Video by Ava Long on Pexels",
        license=PEXELS_LICENSE,
    )


async def test_when_no_clip_is_long_enough_the_longest_is_taken_to_loop(pexels: FakePexels, clips: Clip) -> None:
    metadata, data = await clips("pexels", duration_ms=9000)
    assert metadata.model == "pexels video 202 640x360 4 s"
    assert_mp4(metadata, data, (640, 360), 4000)


async def test_a_portrait_output_takes_a_portrait_clip(pexels: FakePexels, clips: Clip) -> None:
    metadata, data = await clips("pexels", aspect="9:16", duration_ms=2000)
    assert pexels.searches()[0].query["orientation"] == "portrait"
    assert metadata.model == "pexels video 203 360x640 6 s" and metadata.credit.author == "Vera Tall"
    assert_mp4(metadata, data, (360, 640), 6000)


async def test_no_clip_found_is_not_found_naming_the_search(pexels: FakePexels, clips: Clip) -> None:
    pexels.empty.add(CLIP_QUERY)
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await clips("pexels")
    assert error.value.code() == grpc.StatusCode.NOT_FOUND
    assert f"Pexels has no videos for the search {CLIP_QUERY!r}" in (error.value.details() or "")


async def test_pixabay_compares_shapes_itself_and_skips_missing_sizes(pixabay: FakePixabay, clips: Clip) -> None:
    """Video 401 (2 s) is too short for 3 s; 402 (8 s) has no `large`, and its 640x360 covers the output."""
    metadata, data = await clips("pixabay", duration_ms=3000)
    [search] = pixabay.searches()
    assert search.path == "/api/videos/" and "orientation" not in search.query
    assert metadata.model == "pixabay video 402 640x360 8 s"
    assert_mp4(metadata, data, (640, 360), 8000)
    assert metadata.credit.attribution == "Video by slowpans from Pixabay"
    assert metadata.credit.source_url == "https://pixabay.com/videos/test-402/"
