"""The kling video provider through the real video service, against FakeKling over HTTP."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest

from services.video.config import VideoSettings
from services.video.providers import kling
from services.video.providers.kling import KlingSettings
from services.video.server import build as build_video
from tests import prices
from tests.fakes.base import Fault
from tests.fakes.kling_server import ACCESS_KEY, REFUSAL, SECRET_KEY, THROTTLED, FakeKling
from tests.services.conftest import _serve
from tests.services.test_video_providers import PROMPT, Clip, _clip, assert_mp4, failure, picture

ATTEMPTS = VideoSettings(listen_address="127.0.0.1:0").provider_attempts
T2V = "/v1/videos/text2video"


@pytest.fixture(scope="module")
def kling_fake() -> Iterator[FakeKling]:
    with FakeKling() as fake:
        yield fake


@pytest.fixture
def fake(kling_fake: FakeKling, quick_retries: None) -> FakeKling:
    kling_fake.reset()
    return kling_fake


@pytest.fixture
async def start(fake: FakeKling, work_root: Path) -> AsyncIterator[Callable[..., Awaitable[Clip]]]:
    """Starts the video service with Kling settings pointed at the fake (`changes` override them), as objects."""
    async with contextlib.AsyncExitStack() as stack:

        async def run(**changes: Any) -> Clip:
            values = {
                "kling_access_key": ACCESS_KEY,
                "kling_secret_key": SECRET_KEY,
                "kling_base_url": fake.base_url,
                "kling_poll_seconds": 0.02,
                "allow_private_output_urls": True,
                **changes,
            }
            settings = VideoSettings(listen_address="127.0.0.1:0", video_tmp_dir=str(work_root))
            server = build_video(settings, [KlingSettings(**values)])
            return _clip(await stack.enter_async_context(contextlib.asynccontextmanager(_serve)(server)))

        yield run


@pytest.fixture
async def clip(start: Callable[..., Awaitable[Clip]]) -> Clip:
    return await start()


@pytest.mark.parametrize(
    ("aspect", "seconds", "size"), [("16:9", 5, (640, 360)), ("9:16", 10, (360, 640)), ("1:1", 5, (360, 360))]
)
async def test_text_to_video_signs_a_jwt_and_sends_a_string_duration(
    fake: FakeKling, start: Callable[..., Awaitable[Clip]], aspect: str, seconds: int, size: tuple[int, int]
) -> None:
    """The clip's length is the setting's, whatever the scene's (here 7 s): the assembler loops it."""
    clip = await start(kling_duration_seconds=seconds)
    metadata, data = await clip("kling", aspect=aspect, duration_ms=7000)
    assert_mp4(metadata, data, size, seconds * 1000)
    [create] = fake.creates()
    body = create.json()
    assert create.path == T2V
    assert {key: body[key] for key in ("model_name", "prompt", "mode", "duration", "aspect_ratio")} == {
        "model_name": "kling-v1-6",
        "prompt": PROMPT,
        "mode": "std",
        "duration": str(seconds),
        "aspect_ratio": aspect,
    }
    token = create.headers["Authorization"].removeprefix("Bearer ")
    claims = jwt.decode(token, SECRET_KEY, algorithms=["HS256"])
    assert claims["iss"] == ACCESS_KEY and 0 < claims["exp"] - time.time() <= 1800
    assert (metadata.provider, metadata.model) == ("kling", "kling-v1-6")
    assert metadata.estimated_cost_usd == pytest.approx(prices.KLING_V1_6_STD_PER_5S * seconds / 5)


async def test_image_to_video_sends_the_scene_image_as_raw_base64(fake: FakeKling, clip: Clip) -> None:
    metadata, data = await clip("kling", image=picture(1280, 720))
    assert_mp4(metadata, data, (640, 360), 5000)
    [create] = fake.creates()
    assert create.path == "/v1/videos/image2video"
    assert "aspect_ratio" not in create.json() and not create.json()["image"].startswith("data:")
    [task] = fake.tasks.values()
    assert fake.requests_to(f"/v1/videos/image2video/{task.id}", "GET")


async def test_a_slow_task_is_polled_until_it_succeeds(fake: FakeKling, clip: Clip) -> None:
    fake.polls_to_finish = 4
    metadata, _ = await clip("kling")
    [task] = fake.tasks.values()
    assert metadata.provider == "kling"
    assert (len(fake.creates()), task.polls, task.status) == (1, 4, "succeed")


async def test_a_failed_task_names_its_id_and_is_not_reordered(fake: FakeKling, clip: Clip) -> None:
    fake.fail_with = "Internal error while generating the video"
    error = await failure(clip, "kling")
    [task] = fake.tasks.values()
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert f"Kling task {task.id} failed: Internal error while generating the video" in error.details()
    assert len(fake.creates()) == 1


async def test_a_throttled_create_is_created_again_by_the_service(fake: FakeKling, clip: Clip) -> None:
    fake.add_fault(Fault(T2V, status=429, body=THROTTLED, method="POST"))
    metadata, _ = await clip("kling")
    assert metadata.provider == "kling"
    assert (len(fake.creates()), len(fake.tasks)) == (2, 1)


async def test_a_create_throttled_every_time_is_resource_exhausted(fake: FakeKling, clip: Clip) -> None:
    for _ in range(ATTEMPTS):
        fake.add_fault(Fault(T2V, status=429, body=THROTTLED, method="POST"))
    error = await failure(clip, "kling")
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "too fast" in error.details() and "code 1302" in error.details()
    assert (len(fake.creates()), len(fake.tasks)) == (ATTEMPTS, 0)


async def test_corrupt_output_names_the_task_and_is_not_reordered(fake: FakeKling, clip: Clip) -> None:
    fake.garbage_output = True
    error = await failure(clip, "kling")
    [task] = fake.tasks.values()
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert f"job {task.id} finished with unusable output" in error.details() and "not an MP4" in error.details()
    assert (len(fake.creates()), len(fake.requests_to("/files/"))) == (1, 1)


async def test_a_rejected_key_is_failed_precondition_naming_both_keys(
    fake: FakeKling, start: Callable[..., Awaitable[Clip]]
) -> None:
    error = await failure(await start(kling_secret_key="not-the-secret-but-as-long-as-one-0123"), "kling")
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "code 1002" in error.details() and "KLING_ACCESS_KEY and KLING_SECRET_KEY" in error.details()
    assert "not-the-secret-but-as-long-as-one-0123" not in error.details()
    assert len(fake.requests) == 1


@pytest.mark.parametrize("unset", ["kling_access_key", "kling_secret_key"])
async def test_a_missing_key_names_its_variable(
    fake: FakeKling, start: Callable[..., Awaitable[Clip]], unset: str
) -> None:
    error = await failure(await start(**{unset: ""}), "kling")
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert unset.upper() in error.details()
    assert fake.requests == []


async def test_a_create_answered_after_the_timeout_is_found_by_its_key_not_reordered(
    fake: FakeKling, clip: Clip, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kling, "REQUEST_TIMEOUT_SECONDS", 0.3)
    fake.answer_delay = 1.0
    metadata, _ = await clip("kling")
    assert metadata.provider == "kling"
    [create] = fake.creates()
    [task] = fake.tasks.values()
    assert fake.requests_to(f"{T2V}/{create.json()['external_task_id']}", "GET")  # looked up by our key
    assert task.status == "succeed"


async def test_a_lost_create_that_made_no_task_is_created_again(fake: FakeKling, clip: Clip) -> None:
    fake.add_fault(Fault(T2V, status=503, body={"code": 5001, "message": "Server is busy"}, method="POST"))
    metadata, _ = await clip("kling")
    assert metadata.provider == "kling"
    first, second = fake.creates()
    assert fake.requests_to(f"{T2V}/{first.json()['external_task_id']}", "GET")  # 404: no such task
    assert first.json()["external_task_id"] != second.json()["external_task_id"] and len(fake.tasks) == 1


async def test_a_content_refusal_is_invalid_argument(fake: FakeKling, clip: Clip) -> None:
    error = await failure(clip, "kling", prompt="A forbidden scene.")
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert REFUSAL in error.details() and "content policy" in error.details()
    assert len(fake.creates()) == 1


async def test_an_echoed_token_does_not_reach_the_caller(fake: FakeKling, clip: Clip) -> None:
    """A proxy that repeats the request's Authorization header in its 401: the JWT is cut out of the message."""
    fake.echo_key_status = 401
    error = await failure(clip, "kling")
    [create] = fake.creates()
    token = create.headers["Authorization"].removeprefix("Bearer ")
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "Incorrect API key provided" in error.details() and "[REDACTED]" in error.details()
    assert token not in error.details() and token.split(".")[2] not in error.details()
