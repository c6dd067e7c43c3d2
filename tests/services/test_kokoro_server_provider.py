"""The kokoro-server provider through the real audio service, against a fake Kokoro-FastAPI server on loopback."""

from __future__ import annotations

import contextlib
import io
import wave
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import grpc
import openai
import pytest
from scenecast.v1 import audio_service_pb2, audio_service_pb2_grpc, types_pb2

from services.audio.config import AudioSettings
from services.audio.providers.kokoro_server import KokoroServerSettings
from services.audio.server import build as build_audio
from tests.fakes.base import Fault
from tests.fakes.kokoro_server import FakeKokoroServer, error_body, word_timestamps
from tests.fakes.openai_server import MS_PER_CHARACTER, SAMPLE_RATE
from tests.services.conftest import _serve
from tests.services.test_media_services import collect

TEXT = "Check the ladder. Then climb."
CAPTIONED, SPEECH = "/dev/captioned_speech", "/v1/audio/speech"
ATTEMPTS = AudioSettings(listen_address="127.0.0.1:0").provider_attempts

Stub = audio_service_pb2_grpc.AudioServiceStub


@pytest.fixture(scope="module")
def kokoro_fake() -> Iterator[FakeKokoroServer]:
    with FakeKokoroServer() as fake:
        yield fake


@pytest.fixture
def fake(kokoro_fake: FakeKokoroServer) -> FakeKokoroServer:
    kokoro_fake.reset()
    kokoro_fake.api_key = ""
    return kokoro_fake


@pytest.fixture
async def start(fake: FakeKokoroServer) -> AsyncIterator[Callable[..., Awaitable[Stub]]]:
    """Starts the audio service with kokoro-server settings pointed at the fake (`changes` override any of them);
    the asset cache is off, so every call reaches the server."""
    async with contextlib.AsyncExitStack() as stack:

        async def run(**changes: Any) -> Stub:
            settings = KokoroServerSettings(**{"kokoro_server_url": fake.base_url, **changes})
            service = AudioSettings(listen_address="127.0.0.1:0", tts_provider="kokoro-server", asset_cache_dir="off")
            channel = await stack.enter_async_context(
                contextlib.asynccontextmanager(_serve)(build_audio(service, [settings]))
            )
            return Stub(channel)

        yield run


@pytest.fixture
async def stub(start: Callable[..., Awaitable[Stub]]) -> Stub:
    return await start()


async def speak(stub: Stub, **fields: str) -> tuple[types_pb2.AssetMetadata, bytes]:
    return await collect(stub.SynthesizeSpeech(audio_service_pb2.SynthesizeSpeechRequest(text=TEXT, **fields)))


async def failure(stub: Stub, **fields: str) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await speak(stub, **fields)
    return error.value


async def test_speech_is_the_servers_wav_with_its_word_timings(stub: Stub, fake: FakeKokoroServer) -> None:
    metadata, data = await speak(stub)
    with wave.open(io.BytesIO(data)) as wav:
        assert (wav.getframerate(), wav.getnframes()) == (
            SAMPLE_RATE,
            len(TEXT) * MS_PER_CHARACTER * SAMPLE_RATE // 1000,
        )
    assert (metadata.provider, metadata.model, metadata.mime_type) == ("kokoro-server", "kokoro", "audio/wav")
    assert metadata.duration_ms == len(TEXT) * MS_PER_CHARACTER
    words = [stamp for stamp in word_timestamps(TEXT) if stamp["word"] != "."]  # punctuation is no word
    assert [(t.text, t.start_ms, t.end_ms) for t in metadata.timings] == [
        (w["word"], round(w["start_time"] * 1000), round(w["end_time"] * 1000)) for w in words
    ]
    assert {t.kind for t in metadata.timings} == {types_pb2.TIMING_KIND_WORD}
    [sent] = fake.requests_to(CAPTIONED)
    assert sent.json() == {
        "model": "kokoro",
        "input": TEXT,
        "voice": "af_heart",
        "response_format": "wav",
        "speed": 1.0,
        "stream": False,
        "return_timestamps": True,
    }
    assert "Authorization" not in sent.headers
    assert fake.requests_to(SPEECH) == []


async def test_the_request_voice_beats_the_setting_and_an_unknown_one_names_the_servers_reason(
    start: Callable[..., Awaitable[Stub]], fake: FakeKokoroServer
) -> None:
    stub = await start(kokoro_server_voice="bm_george")
    await speak(stub)
    await speak(stub, voice="af_bella+af_sky")
    assert [r.json()["voice"] for r in fake.requests_to(CAPTIONED)] == ["bm_george", "af_bella+af_sky"]
    error = await failure(stub, voice="zz_nobody")
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "Voice 'zz_nobody' not found" in error.details()
    assert len(fake.requests_to(CAPTIONED)) == 3  # a refusal is not retried


async def test_a_server_without_captions_speaks_through_the_openai_route_without_timings(
    stub: Stub, fake: FakeKokoroServer
) -> None:
    fake.captions = False
    metadata, data = await speak(stub)
    assert data[:4] == b"RIFF" and metadata.duration_ms == len(TEXT) * MS_PER_CHARACTER
    assert not [t for t in metadata.timings if t.kind == types_pb2.TIMING_KIND_WORD]
    await speak(stub)
    # The missing route is learnt once: the second narration goes straight to the speech route.
    assert (len(fake.requests_to(CAPTIONED)), len(fake.requests_to(SPEECH))) == (1, 2)
    assert fake.requests_to(SPEECH)[0].json()["response_format"] == "wav"


async def test_a_server_failure_is_retried_and_a_lasting_one_names_the_server(
    stub: Stub, fake: FakeKokoroServer
) -> None:
    fake.add_fault(Fault(CAPTIONED, 500, error_body("synthesis failed", "processing_error")))
    metadata, _ = await speak(stub)
    assert metadata.timings and len(fake.requests_to(CAPTIONED)) == 2
    fake.reset()
    for _ in range(ATTEMPTS):
        fake.add_fault(Fault(CAPTIONED, 500, error_body("synthesis failed", "processing_error")))
    error = await failure(stub)
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert "kokoro-server: the server failed (500): synthesis failed" in error.details()
    assert len(fake.requests_to(CAPTIONED)) == ATTEMPTS


async def test_429_is_retried_and_a_lasting_one_is_resource_exhausted(stub: Stub, fake: FakeKokoroServer) -> None:
    fake.add_fault(Fault(CAPTIONED, 429, {"detail": "slow down"}, {"Retry-After": "0"}))
    await speak(stub)
    fake.reset()
    for _ in range(ATTEMPTS):
        fake.add_fault(Fault(CAPTIONED, 429, {"detail": "slow down"}, {"Retry-After": "0"}))
    error = await failure(stub)
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "throttled the request (429): slow down" in error.details()


async def test_corrupt_audio_is_refused(stub: Stub, fake: FakeKokoroServer) -> None:
    fake.corrupt = True
    error = await failure(stub)
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert "bytes that are not WAV audio" in error.details()


async def test_a_proxy_key_is_sent_and_a_refusal_names_the_variable(
    start: Callable[..., Awaitable[Stub]], fake: FakeKokoroServer
) -> None:
    fake.api_key = "proxy-key-123"
    error = await failure(await start())
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "refused access (401); check KOKORO_SERVER_API_KEY" in error.details()
    assert len(fake.requests_to(CAPTIONED)) == 1  # a refused key is not retried
    metadata, _ = await speak(await start(kokoro_server_api_key="proxy-key-123"))
    assert metadata.timings
    assert fake.requests_to(CAPTIONED)[-1].headers["Authorization"] == "Bearer proxy-key-123"
    assert "proxy-key-123" not in error.details()


async def test_an_unset_url_names_the_variable(start: Callable[..., Awaitable[Stub]], fake: FakeKokoroServer) -> None:
    error = await failure(await start(kokoro_server_url=""))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "KOKORO_SERVER_URL" in error.details()
    assert fake.requests == []


async def test_a_slow_answer_within_the_time_limit_is_waited_for(stub: Stub, fake: FakeKokoroServer) -> None:
    fake.add_fault(Fault(CAPTIONED, status=0, hang_seconds=1.5))
    metadata, _ = await speak(stub)
    assert metadata.timings and len(fake.requests_to(CAPTIONED)) == 1


async def test_an_answer_after_the_time_limit_is_asked_again(
    start: Callable[..., Awaitable[Stub]], fake: FakeKokoroServer
) -> None:
    # Speech on your own server costs nothing per request, so a narration that timed out is simply asked again.
    fake.add_fault(Fault(CAPTIONED, status=0, hang_seconds=5))
    metadata, _ = await speak(await start(kokoro_server_timeout_seconds=0.5))
    assert metadata.timings
    assert len(fake.requests_to(CAPTIONED)) == 2


async def test_it_is_listed_and_priced_at_the_configured_rate(start: Callable[..., Awaitable[Stub]]) -> None:
    stub = await start(kokoro_server_usd_per_million_chars=2.0)
    listed = (await stub.ListSpeechProviders(audio_service_pb2.ListSpeechProvidersRequest())).providers
    [kokoro] = [p for p in listed.providers if p.name == "kokoro-server"]
    assert (listed.default_provider, kokoro.configured, tuple(kokoro.required_env)) == (
        "kokoro-server",
        True,
        ("KOKORO_SERVER_URL",),
    )
    assert [(p.unit, p.usd_per_unit) for p in kokoro.prices] == [("1M characters", 2.0)]
    request = audio_service_pb2.SynthesizeSpeechRequest(text=TEXT, provider="kokoro-server")
    [estimate] = (
        await stub.EstimateSpeechCost(audio_service_pb2.EstimateSpeechCostRequest(requests=[request]))
    ).estimates
    assert estimate.usd == pytest.approx(len(TEXT) * 2.0 / 1_000_000)


async def test_the_fake_answers_the_openai_client_as_kokoro_fastapi_does(fake: FakeKokoroServer) -> None:
    """Kokoro-FastAPI's suggested client is the openai SDK: its speech call, and its error for an unknown voice."""
    client = openai.AsyncOpenAI(base_url=f"{fake.base_url}/v1", api_key="not-needed", max_retries=0)
    response = await client.audio.speech.create(model="kokoro", voice="nova", input=TEXT, response_format="wav")
    with wave.open(io.BytesIO(response.content)) as wav:
        assert wav.getnframes() == len(TEXT) * MS_PER_CHARACTER * SAMPLE_RATE // 1000
    with pytest.raises(openai.BadRequestError) as error:
        await client.audio.speech.create(model="kokoro", voice="zz_nobody", input=TEXT, response_format="wav")
    assert error.value.body == error_body("Voice 'zz_nobody' not found")
