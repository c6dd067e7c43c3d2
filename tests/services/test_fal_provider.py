"""The fal-flux image provider through the real image service, against FakeFal over HTTP."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import grpc
import pytest
from scenecast.v1 import image_service_pb2, image_service_pb2_grpc, types_pb2

from services.image.config import ImageSettings
from services.image.providers import fal_images
from services.image.providers.fal_images import FalSettings
from services.image.server import build as build_image
from tests import prices
from tests.fakes.base import Fault
from tests.fakes.fal_server import KEY, SUBMIT, FakeFal
from tests.services.conftest import _serve
from tests.services.outputs import ASPECTS
from tests.services.test_media_services import collect
from tests.services.test_replicate_providers import assert_frame_png

ATTEMPTS = ImageSettings(listen_address="127.0.0.1:0").provider_attempts
Call = Callable[..., Awaitable[tuple[types_pb2.AssetMetadata, bytes]]]


@pytest.fixture(scope="module")
def fal_fake() -> Iterator[FakeFal]:
    with FakeFal() as fake:
        yield fake


@pytest.fixture
def fake(fal_fake: FakeFal, quick_retries: None) -> FakeFal:
    fal_fake.reset()
    return fal_fake


@pytest.fixture
async def start(fake: FakeFal) -> AsyncIterator[Callable[..., Awaitable[Call]]]:
    """Starts the image service with Fal settings pointed at the fake (`changes` override them), as objects."""
    async with contextlib.AsyncExitStack() as stack:

        async def run(**changes: Any) -> Call:
            settings = FalSettings(
                **{
                    "fal_key": KEY,
                    "fal_queue_url": fake.base_url,
                    "fal_poll_seconds": 0.02,
                    "allow_private_output_urls": True,
                    **changes,
                }
            )
            server = build_image(ImageSettings(listen_address="127.0.0.1:0"), [settings])
            channel = await stack.enter_async_context(contextlib.asynccontextmanager(_serve)(server))
            stub = image_service_pb2_grpc.ImageServiceStub(channel)

            async def call(
                prompt: str = "A ladder against a wall.", aspect: str = "16:9", timeout: float | None = None
            ) -> tuple[types_pb2.AssetMetadata, bytes]:
                output = types_pb2.OutputSettings(
                    aspect_ratio=ASPECTS[aspect], height=360, quality=types_pb2.QUALITY_STANDARD
                )
                scene = types_pb2.Scene(id="s1", narration="Climb.", visual_prompt=prompt, title="Ladders")
                request = image_service_pb2.GenerateImageRequest(scene=scene, output=output, provider="fal-flux")
                return await collect(stub.GenerateImage(request, timeout=timeout))

            return call

        yield run


@pytest.fixture
async def call(start: Callable[..., Awaitable[Call]]) -> Call:
    return await start()


async def failure(call: Call, **kwargs: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await call(**kwargs)
    return error.value


@pytest.mark.parametrize(
    ("aspect", "size", "frame"),
    [("16:9", (1280, 720), (640, 360)), ("9:16", (720, 1280), (202, 360)), ("1:1", (992, 992), (360, 360))],
)
async def test_an_image_is_submitted_once_polled_and_fitted(
    fake: FakeFal, call: Call, aspect: str, size: tuple[int, int], frame: tuple[int, int]
) -> None:
    metadata, data = await call(aspect=aspect)
    assert_frame_png(metadata, data, frame)
    [submit] = fake.submits()
    body = submit.json()
    assert submit.headers["Authorization"] == f"Key {KEY}"
    assert (body["image_size"], body["num_inference_steps"], body["num_images"], body["output_format"]) == (
        {"width": size[0], "height": size[1]},
        28,
        1,
        "png",
    )
    assert body["prompt"].startswith("A ladder against a wall.") and body["enable_safety_checker"] is True
    assert (metadata.provider, metadata.model) == ("fal-flux", "fal-ai/flux/dev")
    assert metadata.estimated_cost_usd == prices.FAL_FLUX_DEV_PER_MEGAPIXEL  # under one megapixel
    assert len(fake.requests_to("/files/", "GET")) == 1


async def test_a_slow_job_is_polled_until_completed(fake: FakeFal, call: Call) -> None:
    fake.polls_to_finish = 4
    metadata, _ = await call()
    assert metadata.provider == "fal-flux"
    [job] = fake.jobs.values()
    assert (len(fake.submits()), len(fake.status_checks()), job.status) == (1, 4, "COMPLETED")


async def test_a_failed_status_check_is_checked_again(fake: FakeFal, call: Call) -> None:
    fake.add_fault(Fault(f"{SUBMIT.rsplit('/', 1)[0]}/requests/", status=503, body={"detail": "down"}, method="GET"))
    metadata, _ = await call()
    assert metadata.provider == "fal-flux"
    assert (len(fake.submits()), len(fake.status_checks())) == (1, 2)


async def test_a_vendor_failure_names_the_request_and_is_not_reordered(fake: FakeFal, call: Call) -> None:
    fake.fail_with = "Runner disconnected during inference"
    error = await failure(call)
    [job] = fake.jobs.values()
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert f"request {job.id} failed (runner_disconnected)" in error.details()
    assert "Runner disconnected during inference" in error.details()
    assert len(fake.submits()) == 1


async def test_a_throttled_submit_is_submitted_again_by_the_service(fake: FakeFal, call: Call) -> None:
    fake.add_fault(Fault(SUBMIT, status=429, body={"detail": "Too many requests"}, headers={"Retry-After": "0"}))
    metadata, _ = await call()
    assert metadata.provider == "fal-flux"
    assert (len(fake.submits()), len(fake.jobs)) == (2, 1)


async def test_a_submit_throttled_every_time_is_resource_exhausted(fake: FakeFal, call: Call) -> None:
    for _ in range(ATTEMPTS):
        fake.add_fault(Fault(SUBMIT, status=429, body={"detail": "Too many requests"}, headers={"Retry-After": "0"}))
    error = await failure(call)
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "Fal throttled the submit (429): Too many requests" in error.details()
    assert (len(fake.submits()), len(fake.jobs)) == (ATTEMPTS, 0)


async def test_corrupt_output_names_the_request_and_is_not_reordered(fake: FakeFal, call: Call) -> None:
    fake.garbage_output = True
    error = await failure(call)
    [job] = fake.jobs.values()
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert f"job {job.id} finished with unusable output" in error.details() and "not an image" in error.details()
    assert (len(fake.submits()), len(fake.requests_to("/files/", "GET"))) == (1, 1)


async def test_a_rejected_key_is_failed_precondition_naming_it(
    fake: FakeFal, start: Callable[..., Awaitable[Call]]
) -> None:
    error = await failure(await start(fal_key="fal-revoked"))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "Fal rejected FAL_KEY (401" in error.details() and "fal-revoked" not in error.details()
    assert len(fake.requests) == 1


async def test_a_missing_key_names_the_variable(fake: FakeFal, start: Callable[..., Awaitable[Call]]) -> None:
    error = await failure(await start(fal_key=""))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "FAL_KEY" in error.details()
    assert fake.requests == []


async def test_a_submit_answered_after_the_timeout_is_not_submitted_again(
    fake: FakeFal, call: Call, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fal cannot list requests, so a submit whose answer was lost may be a billed job: it is never sent again."""
    monkeypatch.setattr(fal_images, "REQUEST_TIMEOUT_SECONDS", 0.3)
    fake.answer_delay = 1.0
    error = await failure(call)
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert "Fal fal-ai/flux/dev may have received the order" in error.details()
    assert "not ordered again" in error.details()
    assert (len(fake.submits()), len(fake.jobs)) == (1, 1)


async def test_a_content_policy_refusal_is_invalid_argument(fake: FakeFal, call: Call) -> None:
    error = await failure(call, prompt="A forbidden scene.")
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "refused the prompt (submit, content policy)" in error.details()
    assert len(fake.submits()) == 1


async def test_a_flagged_image_is_invalid_argument_not_a_black_frame(fake: FakeFal, call: Call) -> None:
    fake.nsfw = True
    error = await failure(call)
    [job] = fake.jobs.values()
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"safety checker, request {job.id}" in error.details() and "change the visual prompt" in error.details()
    assert (len(fake.submits()), len(fake.requests_to("/files/"))) == (1, 0)


async def test_a_job_over_the_time_limit_is_cancelled(fake: FakeFal, start: Callable[..., Awaitable[Call]]) -> None:
    fake.polls_to_finish = 10**6
    error = await failure(await start(fal_timeout_seconds=0.3))
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert "did not finish within 0.3 s (FAL_TIMEOUT_SECONDS)" in error.details()
    assert len(fake.cancels()) == len(fake.jobs) == ATTEMPTS
    assert {job.status for job in fake.jobs.values()} == {"CANCELLED"}


async def test_an_abandoned_call_cancels_its_job(fake: FakeFal, call: Call) -> None:
    fake.polls_to_finish = 10**6
    error = await failure(call, timeout=0.5)
    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    for _ in range(100):  # the server side learns of the deadline on its own clock
        if fake.cancels():
            break
        await asyncio.sleep(0.02)
    [job] = fake.jobs.values()
    assert job.status == "CANCELLED"


async def test_an_echoed_key_does_not_reach_the_caller(fake: FakeFal, call: Call) -> None:
    fake.echo_key_status = 401
    error = await failure(call)
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "Fal rejected FAL_KEY" in error.details() and "[REDACTED]" in error.details()
    assert KEY not in error.details() and KEY.partition(":")[2] not in error.details()
