"""The edge provider through the real audio service and the real edge-tts package, against a fake websocket."""

from __future__ import annotations

import contextlib
import io
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from itertools import pairwise

import av
import grpc
import numpy as np
import pytest
from pydantic import ValidationError
from scenecast.v1 import audio_service_pb2, audio_service_pb2_grpc, types_pb2

from services.audio.config import AudioSettings
from services.audio.providers.edge import DEFAULT_VOICE, EdgeSettings
from services.audio.server import build as build_audio
from tests.fakes.edge_tts_server import FakeEdgeTTS, words_of
from tests.services.conftest import _serve

TEXT = "Check the ladder. Then climb."
ATTEMPTS = AudioSettings.model_fields["provider_attempts"].default


@pytest.fixture(scope="module")
def edge_server() -> Iterator[FakeEdgeTTS]:
    with FakeEdgeTTS() as server:
        yield server


@pytest.fixture
def edge(edge_server: FakeEdgeTTS) -> FakeEdgeTTS:
    edge_server.reset()
    return edge_server


@pytest.fixture
async def start(edge: FakeEdgeTTS) -> AsyncIterator[Callable[..., Awaitable[grpc.aio.Channel]]]:
    """Starts the audio service with edge settings pointed at the fake (`changes` override any of them), passed as
    a settings object: nothing is read from the environment."""
    async with contextlib.AsyncExitStack() as stack:

        async def run(**changes: str) -> grpc.aio.Channel:
            settings = EdgeSettings(
                **{
                    "edge_tts_wss_url": edge.wss_url,
                    "edge_tts_voice": DEFAULT_VOICE,
                    "edge_tts_rate": "+0%",
                    "edge_tts_volume": "+0%",
                    "edge_tts_pitch": "+0Hz",
                    **changes,
                }
            )
            server = build_audio(AudioSettings(listen_address="127.0.0.1:0", tts_provider="edge"), [settings])
            return await stack.enter_async_context(contextlib.asynccontextmanager(_serve)(server))

        yield run


@pytest.fixture
async def audio_channel(start: Callable[..., Awaitable[grpc.aio.Channel]]) -> grpc.aio.Channel:
    return await start()


async def speak(channel: grpc.aio.Channel, **fields: str) -> tuple[types_pb2.AssetMetadata, bytes]:
    stub = audio_service_pb2_grpc.AudioServiceStub(channel)
    metadata, data = None, bytearray()
    async for response in stub.SynthesizeSpeech(
        audio_service_pb2.SynthesizeSpeechRequest(text=TEXT, provider="edge", **fields)
    ):
        if response.HasField("metadata"):
            metadata = response.metadata
        else:
            data += response.chunk.data
    assert metadata is not None
    return metadata, bytes(data)


async def speak_and_fail(channel: grpc.aio.Channel, **fields: str) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await speak(channel, **fields)
    return error.value


def decode(mp3: bytes) -> tuple[np.ndarray, int]:
    with av.open(io.BytesIO(mp3)) as container:
        frames = [frame.to_ndarray().reshape(-1) for frame in container.decode(audio=0)]
        return np.concatenate(frames), container.streams.audio[0].sample_rate


async def test_speech_is_mp3_with_word_timings_that_match_the_audio(
    audio_channel: grpc.aio.Channel, edge: FakeEdgeTTS
) -> None:
    metadata, data = await speak(audio_channel)
    samples, rate = decode(data)
    assert abs(metadata.duration_ms - len(samples) * 1000 / rate) <= 50
    assert (metadata.mime_type, metadata.provider) == ("audio/mpeg", "edge")
    assert metadata.model == "edge-tts:en-US-AriaNeural"
    assert metadata.sample_rate == rate == 24000
    sent = words_of(TEXT)
    assert [t.text for t in metadata.timings] == ["Check", "the", "ladder", "Then", "climb"] == [w.text for w in sent]
    assert [(t.start_ms, t.end_ms) for t in metadata.timings] == [(w.start_ms, w.end_ms) for w in sent]
    assert {t.kind for t in metadata.timings} == {types_pb2.TIMING_KIND_WORD}

    def loudness(start_ms: float, end_ms: float) -> float:
        return float(np.abs(samples[int(start_ms * rate / 1000) : int(end_ms * rate / 1000)]).mean())

    # The audio is loud inside each word's span and silent in the gaps between them.
    for word, following in pairwise(metadata.timings):
        assert loudness(word.start_ms + 50, word.end_ms - 50) > 0.1
        assert loudness(word.end_ms + 25, following.start_ms - 25) < 0.01
    assert edge.connections() == 1
    assert (edge.utterances[0].voice, edge.utterances[0].text) == ("en-US-AriaNeural", TEXT)


async def test_request_voice_beats_the_setting_and_prosody_comes_from_the_settings(
    start: Callable[..., Awaitable[grpc.aio.Channel]], edge: FakeEdgeTTS
) -> None:
    channel = await start(edge_tts_voice="en-US-GuyNeural", edge_tts_rate="-10%")
    metadata, _ = await speak(channel, voice="en-GB-SoniaNeural")
    assert metadata.model == "edge-tts:en-GB-SoniaNeural"
    assert edge.utterances[0].voice == "en-GB-SoniaNeural"
    assert "rate='-10%'" in edge.utterances[0].ssml


def test_a_bad_prosody_variable_stops_the_start_up(edge: FakeEdgeTTS, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGE_TTS_PITCH", "high")
    with pytest.raises(ValidationError, match="edge_tts_pitch"):
        build_audio(AudioSettings(listen_address="127.0.0.1:0", tts_provider="edge"))
    assert edge.connections() == 0


async def test_a_failed_handshake_is_retried(audio_channel: grpc.aio.Channel, edge: FakeEdgeTTS) -> None:
    edge.fail_handshakes(503, 1)
    metadata, _ = await speak(audio_channel)
    assert len(metadata.timings) == 5
    assert edge.connections() == 2


async def test_a_refused_handshake_says_how_to_fix_it_and_is_not_retried(
    audio_channel: grpc.aio.Channel, edge: FakeEdgeTTS
) -> None:
    """A 403 (stale client token or clock skew) fails the same way every time: edge-tts has already corrected its
    clock from the answer's Date header and tried once more (two connections), so the service does not retry."""
    edge.fail_handshakes(403, ATTEMPTS * 2)
    error = await speak_and_fail(audio_channel)
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "HTTP 403" in error.details()
    assert "upgrade edge-tts" in error.details() and "system clock" in error.details()
    assert edge.connections() == 2


async def test_persistent_429_is_resource_exhausted(audio_channel: grpc.aio.Channel, edge: FakeEdgeTTS) -> None:
    edge.fail_handshakes(429, ATTEMPTS)
    error = await speak_and_fail(audio_channel)
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "HTTP 429" in error.details()
    assert edge.connections() == ATTEMPTS


async def test_unknown_voice_is_invalid_argument_and_not_retried(
    audio_channel: grpc.aio.Channel, edge: FakeEdgeTTS
) -> None:
    error = await speak_and_fail(audio_channel, voice="en-US-NobodyNeural")
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "'en-US-NobodyNeural'" in error.details()
    assert edge.connections() == 1


async def test_stream_cut_midway_is_retried_then_unavailable(
    audio_channel: grpc.aio.Channel, edge: FakeEdgeTTS
) -> None:
    edge.cut_streams(ATTEMPTS)
    error = await speak_and_fail(audio_channel)
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert "cut short" in error.details()
    assert edge.connections() == ATTEMPTS
