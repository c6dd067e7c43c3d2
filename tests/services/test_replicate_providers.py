"""The sdxl, flux and kokoro providers through the real services and replicate client, against FakeReplicate."""

from __future__ import annotations

import asyncio
import contextlib
import io
import wave
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import grpc
import httpx
import pytest
from PIL import Image
from replicate.exceptions import ReplicateError
from scenecast.v1 import audio_service_pb2, audio_service_pb2_grpc, image_service_pb2, image_service_pb2_grpc, types_pb2

from services.audio.config import AudioSettings
from services.audio.providers.kokoro import KokoroSettings
from services.audio.server import build as build_audio
from services.common import jobs, replicate_runner
from services.common.errors import RateLimited
from services.common.providers import Quality
from services.common.replicate_runner import SYNC_WAIT_SECONDS, ReplicateModel, ReplicateSettings, _mapped
from services.image.config import ImageSettings
from services.image.providers.replicate_images import SdxlSettings
from services.image.server import build as build_image
from tests import prices
from tests.fakes.base import Fault
from tests.fakes.replicate_server import (
    KOKORO_MS_PER_CHAR,
    KOKORO_VERSION,
    NSFW_ERROR,
    SDXL_VERSION,
    THROTTLED,
    TOKEN,
    FakeReplicate,
)
from tests.services.conftest import _serve
from tests.services.outputs import ASPECTS, QUALITIES
from tests.services.test_media_services import collect

FLUX_CREATE = "/v1/models/black-forest-labs/flux-dev/predictions"
CREATE_PATHS = {"sdxl": "/v1/predictions", "flux": FLUX_CREATE, "kokoro": "/v1/predictions"}
PROVIDERS = list(CREATE_PATHS)
IMAGE_PROVIDERS = ["sdxl", "flux"]
NARRATION = "Check the ladder. Then climb."
# The services in conftest are built from default settings, so this is the attempt count they use.
ATTEMPTS = ImageSettings(listen_address="127.0.0.1:0").provider_attempts

Call = Callable[..., Awaitable[tuple[types_pb2.AssetMetadata, bytes]]]


@pytest.fixture(scope="module")
def replicate_fake() -> Iterator[FakeReplicate]:
    with FakeReplicate() as fake:
        yield fake


@pytest.fixture
def fake(replicate_fake: FakeReplicate, quick_retries: None) -> FakeReplicate:
    replicate_fake.reset()
    return replicate_fake


@pytest.fixture
async def start(fake: FakeReplicate) -> AsyncIterator[Callable[..., Awaitable[Call]]]:
    """Starts the image or audio service (the one a call needs, when it needs it) with Replicate settings pointed at
    the fake (`changes` override any of them), as settings objects: nothing is read from the environment."""
    async with contextlib.AsyncExitStack() as stack:

        async def run(**changes: Any) -> Call:
            values = {
                "replicate_api_token": TOKEN,
                "replicate_base_url": fake.base_url,
                "replicate_poll_interval": 0.02,
                "allow_private_output_urls": True,
                **changes,
            }
            servers = {
                "image": lambda: build_image(
                    ImageSettings(listen_address="127.0.0.1:0"), [SdxlSettings(**values), ReplicateSettings(**values)]
                ),
                "audio": lambda: build_audio(AudioSettings(listen_address="127.0.0.1:0"), [KokoroSettings(**values)]),
            }
            channels: dict[str, grpc.aio.Channel] = {}

            async def channel(kind: str) -> grpc.aio.Channel:
                if kind not in channels:
                    served = contextlib.asynccontextmanager(_serve)
                    channels[kind] = await stack.enter_async_context(served(servers[kind]()))
                return channels[kind]

            return _call(channel)

        yield run


@pytest.fixture
async def call(start: Callable[..., Awaitable[Call]]) -> Call:
    return await start()


def _call(channel: Callable[[str], Awaitable[grpc.aio.Channel]]) -> Call:
    """Asks the image or audio service (by provider name) for one asset and collects it."""

    async def run(
        provider: str,
        text: str = "A ladder against a wall.",
        aspect: str = "16:9",
        quality: Quality = Quality.STANDARD,
        voice: str = "",
        timeout: float | None = None,
    ) -> tuple[types_pb2.AssetMetadata, bytes]:
        if provider == "kokoro":
            stub = audio_service_pb2_grpc.AudioServiceStub(await channel("audio"))
            return await collect(
                stub.SynthesizeSpeech(
                    audio_service_pb2.SynthesizeSpeechRequest(
                        text=text,
                        provider=provider,
                        voice=voice,
                        quality=QUALITIES[quality],
                    ),
                    timeout=timeout,
                )
            )
        output = types_pb2.OutputSettings(aspect_ratio=ASPECTS[aspect], height=360, quality=QUALITIES[quality])
        scene = types_pb2.Scene(id="s1", narration=NARRATION, visual_prompt=text, title="Ladders")
        stub = image_service_pb2_grpc.ImageServiceStub(await channel("image"))
        return await collect(
            stub.GenerateImage(
                image_service_pb2.GenerateImageRequest(scene=scene, output=output, provider=provider), timeout=timeout
            )
        )

    return run


async def failure(call: Call, provider: str, **kwargs: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await call(provider, **kwargs)
    return error.value


def assert_frame_png(metadata: types_pb2.AssetMetadata, data: bytes, size: tuple[int, int]) -> None:
    assert (metadata.mime_type, metadata.width, metadata.height) == ("image/png", *size)
    assert metadata.size_bytes == len(data)
    with Image.open(io.BytesIO(data)) as image:
        assert (image.format, image.size) == ("PNG", size)


async def test_sdxl_pins_its_version_and_sizes_for_the_aspect(fake: FakeReplicate, call: Call) -> None:
    metadata, data = await call("sdxl")
    assert_frame_png(metadata, data, (640, 360))
    [create] = fake.creates()
    body = create.json()
    assert (create.path, body["version"], create.headers["Prefer"]) == (
        "/v1/predictions",
        SDXL_VERSION,
        f"wait={SYNC_WAIT_SECONDS}",
    )
    assert {key: body["input"][key] for key in ("prompt", "width", "height", "num_inference_steps")} == {
        "prompt": "A ladder against a wall.",
        "width": 1344,
        "height": 768,
        "num_inference_steps": 35,
    }
    assert "fingers" in body["input"]["negative_prompt"]
    assert (metadata.provider, metadata.model) == ("sdxl", "stability-ai/sdxl:39ed52f2")
    assert metadata.estimated_cost_usd == pytest.approx(prices.L40S_PER_SECOND * fake.predict_time)
    assert fake.requests_to("/v1/predictions/", "GET") == []  # finished within the create's `Prefer: wait`


async def test_flux_runs_the_official_model_at_the_aspect_ratio(fake: FakeReplicate, call: Call) -> None:
    metadata, data = await call("flux", aspect="9:16")
    assert_frame_png(metadata, data, (202, 360))
    [create] = fake.creates()
    model_input = create.json()["input"]
    assert "version" not in create.json()
    assert (model_input["aspect_ratio"], model_input["num_inference_steps"], model_input["output_format"]) == (
        "9:16",
        28,
        "png",
    )
    assert model_input["prompt"].startswith("A ladder against a wall.") and "five fingers" in model_input["prompt"]
    assert (metadata.provider, metadata.model) == ("flux", "black-forest-labs/flux-dev")
    assert metadata.estimated_cost_usd == prices.FLUX_DEV_PER_IMAGE


async def test_kokoro_speech_is_a_wav_of_measured_length(fake: FakeReplicate, call: Call) -> None:
    metadata, data = await call("kokoro", text=NARRATION)
    with wave.open(io.BytesIO(data)) as wav:
        measured_ms = round(wav.getnframes() * 1000 / wav.getframerate())
        assert wav.getframerate() == metadata.sample_rate
    assert metadata.duration_ms == measured_ms == len(NARRATION) * KOKORO_MS_PER_CHAR
    assert (metadata.mime_type, metadata.provider) == ("audio/wav", "kokoro")
    assert metadata.model == "jaaari/kokoro-82m:f559560e"
    assert list(metadata.timings) == []
    assert metadata.estimated_cost_usd == pytest.approx(prices.T4_PER_SECOND * fake.predict_time)
    [create] = fake.creates()
    assert create.json() == {"version": KOKORO_VERSION, "input": {"text": NARRATION, "voice": "af_bella", "speed": 1}}


@pytest.mark.parametrize(
    ("provider", "quality", "steps"),
    [("sdxl", Quality.DRAFT, 25), ("sdxl", Quality.HD, 50), ("flux", Quality.DRAFT, 20), ("flux", Quality.HD, 50)],
)
async def test_steps_follow_the_quality(
    fake: FakeReplicate, call: Call, provider: str, quality: Quality, steps: int
) -> None:
    metadata, _ = await call(provider, quality=quality, aspect="1:1")
    assert (metadata.width, metadata.height) == (360, 360)
    [create] = fake.creates()
    assert create.json()["input"]["num_inference_steps"] == steps
    if provider == "sdxl":
        assert (create.json()["input"]["width"], create.json()["input"]["height"]) == (1024, 1024)
        assert metadata.estimated_cost_usd == pytest.approx(prices.L40S_PER_SECOND * fake.predict_time)


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize(
    "fault",
    [
        Fault("", status=429, body=THROTTLED, headers={"Retry-After": "0"}),
        Fault("", status=500, body={"title": "Internal Server Error", "detail": "upstream failed", "status": 500}),
        Fault("", reset=True),
    ],
    ids=["429-retry-after", "500", "reset"],
)
async def test_a_failed_create_is_retried_by_the_service(
    fake: FakeReplicate, call: Call, provider: str, fault: Fault
) -> None:
    fault.path_prefix, fault.method = CREATE_PATHS[provider], "POST"
    fake.add_fault(fault)
    metadata, _ = await call(provider)
    assert metadata.provider == provider
    # The replicate transport never retries a POST: both creates come from the service's retry policy, the second
    # (after a 500 or reset, which may have reached Replicate) only once the list showed no prediction made.
    assert len(fake.creates()) == 2
    assert len(list_requests(fake)) == (0 if fault.status == 429 else 1)


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_invalid_input_is_not_retried(fake: FakeReplicate, call: Call, provider: str) -> None:
    detail = "- input.num_inference_steps: Must be less than or equal to 50"
    fake.add_fault(
        Fault(
            CREATE_PATHS[provider],
            status=422,
            method="POST",
            body={"title": "Input validation failed", "detail": detail, "status": 422},
        )
    )
    error = await failure(call, provider)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert detail in error.details()
    assert len(fake.creates()) == 1


async def test_the_fakes_own_validation_reaches_the_caller(fake: FakeReplicate, call: Call) -> None:
    error = await failure(call, "kokoro", voice="Not A Voice")
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "input.voice" in error.details()
    assert len(fake.creates()) == 1


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_missing_token_is_failed_precondition(
    fake: FakeReplicate, start: Callable[..., Awaitable[Call]], provider: str
) -> None:
    error = await failure(await start(replicate_api_token=""), provider)
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "REPLICATE_API_TOKEN" in error.details()
    assert fake.requests == []


async def test_rejected_token_is_failed_precondition(
    fake: FakeReplicate, start: Callable[..., Awaitable[Call]]
) -> None:
    error = await failure(await start(replicate_api_token="r8_revoked"), "flux")
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "rejected REPLICATE_API_TOKEN" in error.details() and "valid authentication token" in error.details()
    assert len(fake.requests) == 1


async def test_unknown_version_names_its_variable(fake: FakeReplicate, start: Callable[..., Awaitable[Call]]) -> None:
    error = await failure(await start(sdxl_version="0" * 64), "sdxl")
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "stability-ai/sdxl:00000000" in error.details() and "SDXL_VERSION" in error.details()
    assert len(fake.creates()) == 1


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_failed_prediction_is_unavailable_after_every_attempt(
    fake: FakeReplicate, call: Call, provider: str
) -> None:
    fake.fail_with = "CUDA error: out of memory"
    error = await failure(call, provider)
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert "CUDA error: out of memory" in error.details()
    assert len(fake.creates()) == ATTEMPTS


@pytest.mark.parametrize("provider", IMAGE_PROVIDERS)
async def test_a_safety_refusal_is_invalid_argument(fake: FakeReplicate, call: Call, provider: str) -> None:
    fake.fail_with = NSFW_ERROR
    error = await failure(call, provider)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "NSFW content detected" in error.details()
    assert len(fake.creates()) == 1


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_download_that_keeps_failing_is_retried_but_never_reordered(
    fake: FakeReplicate, call: Call, provider: str
) -> None:
    fake.truncate_output = True
    error = await failure(call, provider)
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    [prediction] = fake.predictions.values()
    assert f"job {prediction.id} finished, but its output could not be downloaded" in error.details()
    assert "not ordered again" in error.details()
    assert (len(fake.creates()), len(fake.downloads())) == (1, jobs.DOWNLOAD_ATTEMPTS)


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_failed_download_of_a_finished_prediction_downloads_again(
    fake: FakeReplicate, call: Call, provider: str
) -> None:
    fake.failing_downloads = 2
    metadata, _ = await call(provider)
    assert metadata.provider == provider
    assert (len(fake.creates()), len(fake.downloads())) == (1, 3)


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_unusable_output_names_the_prediction_and_is_not_reordered(
    fake: FakeReplicate, call: Call, provider: str
) -> None:
    """Bytes that do not decode are the finished prediction's fault: reported, never a new (paid) prediction."""
    fake.garbage_output = True
    error = await failure(call, provider)
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    [prediction] = fake.predictions.values()
    assert f"job {prediction.id} finished with unusable output" in error.details()
    assert "not ordered again" in error.details()
    assert (len(fake.creates()), len(fake.downloads())) == (1, 1)


@pytest.fixture
def short_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    """A one-second `Prefer: wait`, so that an answer later than the client's read timeout costs seconds, not 30."""
    monkeypatch.setattr(replicate_runner, "SYNC_WAIT_SECONDS", 1)


@pytest.mark.usefixtures("short_wait")
@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_create_answered_after_its_wait_is_still_read(fake: FakeReplicate, call: Call, provider: str) -> None:
    """The client reads a waited create well past the wait (it used to give up 0.5 s after it, and order again)."""
    fake.answer_delay = 2.0
    metadata, _ = await call(provider)
    assert metadata.provider == provider
    [create] = fake.creates()
    assert create.headers["Prefer"] == "wait=1"
    assert list_requests(fake) == []


@pytest.mark.usefixtures("short_wait")
@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_create_answered_after_the_timeout_is_found_not_reordered(
    fake: FakeReplicate, call: Call, provider: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The answer comes after the client stopped reading: the prediction is found in the list and used."""
    monkeypatch.setattr(replicate_runner, "CREATE_READ_MARGIN_SECONDS", 0.5)
    fake.answer_delay = 3.0
    fake.list_page_size = 1  # the prediction is looked for page by page
    metadata, _ = await call(provider)
    assert metadata.provider == provider
    assert len(fake.creates()) == 1 and len(list_requests(fake)) == 1
    [prediction] = fake.predictions.values()
    assert prediction.status == "succeeded" and len(fake.downloads()) == 1


def list_requests(fake: FakeReplicate) -> list[object]:
    return [r for r in fake.requests_to("/v1/predictions", "GET") if r.path == "/v1/predictions"]


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_polling_until_succeeded(fake: FakeReplicate, call: Call, provider: str) -> None:
    fake.polls_to_finish = 3
    metadata, _ = await call(provider)
    assert metadata.provider == provider
    [prediction] = fake.predictions.values()
    assert prediction.history == ["starting", "processing", "processing", "succeeded"]
    assert len(fake.requests_to(f"/v1/predictions/{prediction.id}", "GET")) == 3


async def test_a_throttled_poll_is_retried_by_the_replicate_transport(fake: FakeReplicate, call: Call) -> None:
    fake.polls_to_finish = 1
    fake.add_fault(Fault("/v1/predictions/", status=429, body=THROTTLED, headers={"Retry-After": "0"}, method="GET"))
    metadata, _ = await call("kokoro")
    assert metadata.provider == "kokoro"
    assert (len(fake.creates()), len(fake.requests_to("/v1/predictions/", "GET"))) == (1, 2)


@pytest.mark.parametrize("provider", ["flux", "kokoro"])
async def test_data_uri_outputs_are_decoded_and_sniffed(fake: FakeReplicate, call: Call, provider: str) -> None:
    fake.data_uri_output = True
    fake.file_content_type = "application/octet-stream"  # the type must come from the bytes
    metadata, data = await call(provider)
    if provider == "kokoro":
        assert metadata.mime_type == "audio/wav" and data[:4] == b"RIFF"
    else:
        assert_frame_png(metadata, data, (640, 360))
    assert fake.requests_to("/files/") == []


async def test_a_prediction_over_the_time_limit_is_canceled(
    fake: FakeReplicate, start: Callable[..., Awaitable[Call]]
) -> None:
    fake.never_finish = True
    error = await failure(await start(replicate_timeout_seconds=0.3), "flux")
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert "did not finish within 0.3 s" in error.details()
    assert len(fake.cancels()) == ATTEMPTS
    assert {p.status for p in fake.predictions.values()} == {"canceled"}


async def test_an_abandoned_call_cancels_its_prediction(fake: FakeReplicate, call: Call) -> None:
    fake.never_finish = True
    error = await failure(call, "sdxl", timeout=0.5)
    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    for _ in range(100):  # the server side learns of the deadline on its own clock
        if fake.cancels():
            break
        await asyncio.sleep(0.02)
    [prediction] = fake.predictions.values()
    assert prediction.status == "canceled"


@pytest.mark.parametrize(
    ("path", "body", "message"),
    [
        (FLUX_CREATE, {"input": {"prompt": "x", "num_inference_steps": 51}}, "less than or equal to 50"),
        (FLUX_CREATE, {"input": {"prompt": "x", "aspect_ratio": "7:5"}}, "aspect_ratio must be one of"),
        ("/v1/predictions", {"version": SDXL_VERSION, "input": {"prompt": "x", "width": 1001}}, "multiple of 8"),
        ("/v1/predictions", {"version": KOKORO_VERSION, "input": {"text": "Hi.", "speed": 6}}, "or equal to 5"),
    ],
)
async def test_the_fake_checks_documented_ranges(
    fake: FakeReplicate, path: str, body: dict[str, object], message: str
) -> None:
    async with httpx.AsyncClient(base_url=fake.base_url, headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        response = await client.post(path, json=body)
    assert response.status_code == 422
    assert response.json()["status"] == 422 and message in response.json()["detail"]


def test_a_throttle_without_retry_after_waits_for_the_advertised_reset() -> None:
    error = _mapped(ReplicateError(status=429, detail=THROTTLED["detail"]), ReplicateModel("a/b"))
    assert isinstance(error, RateLimited) and error.retry_after == 30.0
