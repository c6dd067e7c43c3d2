"""The OpenAI image and speech providers through the real services and the real openai SDK, against FakeOpenAI."""

from __future__ import annotations

import contextlib
import io
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import av
import grpc
import pytest
from PIL import Image
from pydantic import ValidationError
from scenecast.v1 import audio_service_pb2, audio_service_pb2_grpc, image_service_pb2, image_service_pb2_grpc, types_pb2

from services.audio.config import AudioSettings
from services.audio.providers.base import SpeechJob
from services.audio.providers.openai_tts import OpenAISpeechProvider, OpenAISpeechSettings
from services.audio.server import build as build_audio
from services.common.errors import InvalidArgument
from services.common.openai_errors import OpenAISettings
from services.common.providers import Quality
from services.image.config import ImageSettings
from services.image.server import build as build_image
from tests.fakes.base import Fault
from tests.fakes.openai_server import (
    COLOUR,
    CONTENT_POLICY_MESSAGE,
    MS_PER_CHARACTER,
    SAMPLE_RATE,
    FakeOpenAI,
    error_body,
    rate_limit_body,
)
from tests.services.conftest import _serve
from tests.services.outputs import ASPECTS, QUALITIES
from tests.services.test_media_services import collect

KEY = "sk-test-0123456789"
IMAGES, SPEECH = "/v1/images/generations", "/v1/audio/speech"
PATHS = {"dall-e-3": IMAGES, "gpt-image-1-mini": IMAGES, "openai": SPEECH}
PROVIDERS = list(PATHS)
NARRATION = "Check the ladder. Then climb."
# The services here are built from default service settings, so this is the attempt count they use.
ATTEMPTS = ImageSettings(listen_address="127.0.0.1:0").provider_attempts
# USD per image of each (provider, quality, square) and per character of speech, as published (providers.md).
IMAGE_USD = {
    ("dall-e-3", Quality.HD, False): 0.120,
    ("dall-e-3", Quality.DRAFT, True): 0.040,
    ("gpt-image-1-mini", Quality.STANDARD, False): 0.015,
    ("gpt-image-1-mini", Quality.DRAFT, False): 0.006,
}
SPEECH_USD_PER_CHAR = {Quality.DRAFT: 15e-6, Quality.STANDARD: 15e-6, Quality.HD: 30e-6}

Call = Callable[..., Awaitable[tuple[types_pb2.AssetMetadata, bytes]]]


@pytest.fixture(scope="module")
def openai_fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key=KEY) as fake:
        yield fake


@pytest.fixture
def fake(openai_fake: FakeOpenAI) -> FakeOpenAI:
    openai_fake.reset()
    return openai_fake


@pytest.fixture
async def start(fake: FakeOpenAI) -> AsyncIterator[Callable[..., Awaitable[Call]]]:
    """Starts the image and audio services with OpenAI settings pointed at the fake (`changes` override any of
    them), as settings objects: nothing is read from the environment."""
    async with contextlib.AsyncExitStack() as stack:

        async def run(**changes: Any) -> Call:
            speech = OpenAISpeechSettings(
                **{
                    "openai_api_key": KEY,
                    "openai_base_url": f"{fake.base_url}/v1",
                    "openai_tts_format": "wav",
                    "openai_tts_voice": "alloy",
                    **changes,
                }
            )
            images = OpenAISettings(openai_api_key=speech.openai_api_key, openai_base_url=speech.openai_base_url)
            image = build_image(ImageSettings(listen_address="127.0.0.1:0"), [images])
            audio = build_audio(AudioSettings(listen_address="127.0.0.1:0", tts_provider="openai"), [speech])
            served = contextlib.asynccontextmanager(_serve)
            return _call(await stack.enter_async_context(served(image)), await stack.enter_async_context(served(audio)))

        yield run


@pytest.fixture
async def call(start: Callable[..., Awaitable[Call]]) -> Call:
    return await start()


def _call(image_channel: grpc.aio.Channel, audio_channel: grpc.aio.Channel) -> Call:
    """Asks the image or audio service (by provider name) for one asset and collects it."""

    async def run(
        provider: str,
        text: str = "A ladder against a wall.",
        aspect: str = "16:9",
        height: int = 360,
        quality: Quality = Quality.STANDARD,
        voice: str = "",
    ) -> tuple[types_pb2.AssetMetadata, bytes]:
        if PATHS[provider] == SPEECH:
            stub = audio_service_pb2_grpc.AudioServiceStub(audio_channel)
            return await collect(
                stub.SynthesizeSpeech(
                    audio_service_pb2.SynthesizeSpeechRequest(
                        text=text,
                        provider=provider,
                        voice=voice,
                        quality=QUALITIES[quality],
                    )
                )
            )
        output = types_pb2.OutputSettings(aspect_ratio=ASPECTS[aspect], height=height, quality=QUALITIES[quality])
        scene = types_pb2.Scene(id="s1", narration=NARRATION, visual_prompt=text, title="Ladders")
        stub = image_service_pb2_grpc.ImageServiceStub(image_channel)
        return await collect(
            stub.GenerateImage(image_service_pb2.GenerateImageRequest(scene=scene, output=output, provider=provider))
        )

    return run


async def failure(call: Call, provider: str, **fields: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await call(provider, **fields)
    return error.value


@pytest.mark.parametrize(
    ("provider", "aspect", "height", "quality", "frame", "sent", "cost"),
    [
        (
            "dall-e-3",
            "16:9",
            360,
            Quality.HD,
            (640, 360),
            {"size": "1792x1024", "quality": "hd", "response_format": "b64_json"},
            IMAGE_USD["dall-e-3", Quality.HD, False],
        ),
        (
            "dall-e-3",
            "1:1",
            256,
            Quality.DRAFT,
            (256, 256),
            {"size": "1024x1024", "quality": "standard", "response_format": "b64_json"},
            IMAGE_USD["dall-e-3", Quality.DRAFT, True],
        ),
        (
            "gpt-image-1-mini",
            "9:16",
            640,
            Quality.STANDARD,
            (360, 640),
            {"size": "1024x1536", "quality": "medium", "output_format": "png"},
            IMAGE_USD["gpt-image-1-mini", Quality.STANDARD, False],
        ),
        (
            "gpt-image-1-mini",
            "16:9",
            360,
            Quality.DRAFT,
            (640, 360),
            {"size": "1536x1024", "quality": "low", "output_format": "png"},
            IMAGE_USD["gpt-image-1-mini", Quality.DRAFT, False],
        ),
    ],
)
async def test_image_is_fitted_to_the_frame_and_priced(
    fake: FakeOpenAI,
    call: Call,
    provider: str,
    aspect: str,
    height: int,
    quality: Quality,
    frame: tuple[int, int],
    sent: dict[str, str],
    cost: float,
) -> None:
    metadata, data = await call(provider, aspect=aspect, height=height, quality=quality)
    image = Image.open(io.BytesIO(data))
    assert (image.format, image.size) == ("PNG", frame)
    assert image.convert("RGB").getpixel((frame[0] // 2, frame[1] // 2)) == COLOUR
    assert (metadata.provider, metadata.model, metadata.mime_type) == (provider, provider, "image/png")
    assert (metadata.width, metadata.height, metadata.size_bytes) == (*frame, len(data))
    assert metadata.estimated_cost_usd == pytest.approx(cost)
    [request] = fake.requests_to(IMAGES)
    assert request.headers["Authorization"] == f"Bearer {KEY}"
    body = request.json()
    assert {key: body.get(key) for key in sent} == sent
    assert (body["model"], body["n"], body["prompt"]) == (provider, 1, "A ladder against a wall.")
    if provider != "dall-e-3":
        assert "response_format" not in body


@pytest.mark.parametrize(
    ("settings", "quality", "voice", "sent"),
    [
        ({}, Quality.STANDARD, "", {"model": "tts-1", "voice": "alloy", "response_format": "wav"}),
        (
            {"openai_tts_format": "mp3"},
            Quality.HD,
            "nova",
            {"model": "tts-1-hd", "voice": "nova", "response_format": "mp3"},
        ),
        (
            {"openai_tts_voice": "echo"},
            Quality.DRAFT,
            "",
            {"model": "tts-1", "voice": "echo", "response_format": "wav"},
        ),
    ],
)
async def test_speech_duration_is_measured_from_the_audio(
    fake: FakeOpenAI,
    start: Callable[..., Awaitable[Call]],
    settings: dict[str, str],
    quality: Quality,
    voice: str,
    sent: dict[str, str],
) -> None:
    call = await start(**settings)
    metadata, data = await call("openai", text=NARRATION, quality=quality, voice=voice)
    with av.open(io.BytesIO(data)) as container:
        samples = sum(frame.samples for frame in container.decode(audio=0))
    assert metadata.duration_ms == round(samples * 1000 / SAMPLE_RATE)
    # The fake speaks 60 ms per character; MP3 adds at most a frame or two of padding.
    assert abs(metadata.duration_ms - len(NARRATION) * MS_PER_CHARACTER) <= 60
    assert metadata.sample_rate == SAMPLE_RATE
    assert metadata.mime_type == ("audio/mpeg" if sent["response_format"] == "mp3" else "audio/wav")
    assert (metadata.provider, metadata.model) == ("openai", sent["model"])
    assert list(metadata.timings) == []
    assert metadata.estimated_cost_usd == pytest.approx(SPEECH_USD_PER_CHAR[quality] * len(NARRATION))
    [request] = fake.requests_to(SPEECH)
    assert request.json() == {**sent, "input": NARRATION}


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize(
    "fault",
    [
        Fault("", status=429, body=rate_limit_body(), headers={"Retry-After": "0"}),
        Fault("", status=429, body=rate_limit_body(), headers={"retry-after-ms": "0"}),
        Fault("", status=500, body=error_body("The server had an error processing your request.", "server_error")),
        Fault("", reset=True),
    ],
    ids=["429-retry-after", "429-retry-after-ms", "500", "reset"],
)
async def test_a_transient_failure_is_retried_once(fake: FakeOpenAI, call: Call, provider: str, fault: Fault) -> None:
    fake.add_fault(Fault(PATHS[provider], fault.status, fault.body, fault.headers, reset=fault.reset))
    metadata, data = await call(provider, text=NARRATION)
    assert metadata.provider == provider and data
    # The SDK's own retries are off: both attempts come from the service's retry policy.
    assert len(fake.requests_to(PATHS[provider])) == 2


async def test_a_persistent_429_is_resource_exhausted(fake: FakeOpenAI, call: Call) -> None:
    for _ in range(ATTEMPTS):
        fake.add_fault(Fault(IMAGES, 429, rate_limit_body("gpt-image-1-mini"), {"Retry-After": "0"}))
    error = await failure(call, "gpt-image-1-mini")
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "Rate limit exceeded for images per minute" in error.details()
    assert len(fake.requests_to(IMAGES)) == ATTEMPTS


@pytest.mark.parametrize(
    ("provider", "field"),
    [("dall-e-3", "scene.visual_prompt"), ("gpt-image-1-mini", "scene.visual_prompt"), ("openai", "text")],
)
async def test_a_content_policy_refusal_is_not_retried(fake: FakeOpenAI, call: Call, provider: str, field: str) -> None:
    if provider == "openai":  # speech has no documented refusal marker, so the refusal is scripted
        fake.add_fault(Fault(SPEECH, 400, error_body(CONTENT_POLICY_MESSAGE, code="content_policy_violation")))
    error = await failure(call, provider, text=f"A {fake.refuse_marker} scene.")
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"{field} was refused by OpenAI's safety system" in error.details()
    assert "Your request was rejected as a result of our safety system" in error.details()
    assert len(fake.requests_to(PATHS[provider])) == 1


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_missing_key_is_failed_precondition(
    fake: FakeOpenAI, start: Callable[..., Awaitable[Call]], provider: str
) -> None:
    error = await failure(await start(openai_api_key=""), provider)
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "OPENAI_API_KEY" in error.details()
    assert fake.requests == []


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_rejected_key_is_failed_precondition_without_the_key(
    fake: FakeOpenAI, start: Callable[..., Awaitable[Call]], provider: str
) -> None:
    error = await failure(await start(openai_api_key="sk-wrong-5678"), provider)
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "rejected OPENAI_API_KEY" in error.details()
    assert "5678" not in error.details()
    assert [r.headers["Authorization"] for r in fake.requests] == ["Bearer sk-wrong-5678"]


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_malformed_answer_is_retried_then_unavailable(fake: FakeOpenAI, call: Call, provider: str) -> None:
    fake.malformed = True
    error = await failure(call, provider)
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert ("not valid base64" if provider != "openai" else "no audio") in error.details()
    assert len(fake.requests_to(PATHS[provider])) == ATTEMPTS


async def test_a_retired_dall_e_3_suggests_gpt_image_1_mini(fake: FakeOpenAI, call: Call) -> None:
    fake.retired_models.add("dall-e-3")
    error = await failure(call, "dall-e-3")
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "model_not_found" not in error.details()  # the caller gets advice, not the code
    assert "2026-05-12" in error.details() and "IMAGE_PROVIDER=gpt-image-1-mini" in error.details()
    assert len(fake.requests_to(IMAGES)) == 1


async def test_an_unknown_voice_is_invalid_argument_with_openais_words(fake: FakeOpenAI, call: Call) -> None:
    error = await failure(call, "openai", voice="nobody")
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "Invalid value: 'nobody'" in error.details()
    assert len(fake.requests) == 1


def test_an_unsupported_tts_format_stops_the_start_up(monkeypatch: pytest.MonkeyPatch) -> None:
    """Read once at start-up, a bad format is found then, naming its variable, not at the first paid call."""
    monkeypatch.setenv("OPENAI_TTS_FORMAT", "ogg")
    with pytest.raises(ValidationError) as error:
        build_audio(AudioSettings(listen_address="127.0.0.1:0", tts_provider="openai"))
    assert "openai_tts_format" in str(error.value) and "'wav' or 'mp3'" in str(error.value)
    assert "ogg" not in str(error.value)  # settings' values stay out of start-up errors


async def test_speech_over_openais_input_limit_names_text(fake: FakeOpenAI) -> None:
    # The audio service already caps text below 4096 characters, so the provider's own check is called directly.
    with pytest.raises(InvalidArgument, match="^text has 4097 characters"):
        await OpenAISpeechProvider(OpenAISpeechSettings(openai_api_key=KEY)).synthesize(
            SpeechJob(text="a" * 4097, voice="", quality=Quality.STANDARD)
        )
    assert fake.requests == []
