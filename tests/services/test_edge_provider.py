"""The edge provider through the real audio service and the real edge-tts package, against a fake websocket."""

from __future__ import annotations

import io
from collections.abc import Iterator
from itertools import pairwise

import av
import grpc
import numpy as np
import pytest
from scenecast.v1 import audio_service_pb2, audio_service_pb2_grpc, types_pb2

from services.audio.config import AudioSettings
from tests.fakes.edge_tts_server import FakeEdgeTTS, words_of

TEXT = "Check the ladder. Then climb."
ATTEMPTS = AudioSettings.model_fields["provider_attempts"].default


@pytest.fixture(scope="module")
def edge_server() -> Iterator[FakeEdgeTTS]:
    with FakeEdgeTTS() as server:
        yield server


@pytest.fixture
def edge(edge_server: FakeEdgeTTS, monkeypatch: pytest.MonkeyPatch) -> FakeEdgeTTS:
    edge_server.reset()
    for variable in ("EDGE_TTS_VOICE", "EDGE_TTS_RATE", "EDGE_TTS_VOLUME", "EDGE_TTS_PITCH"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("EDGE_TTS_WSS_URL", edge_server.wss_url)
    return edge_server


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


async def test_request_voice_beats_the_variable_and_prosody_comes_from_the_environment(
    audio_channel: grpc.aio.Channel, edge: FakeEdgeTTS, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDGE_TTS_VOICE", "en-US-GuyNeural")
    monkeypatch.setenv("EDGE_TTS_RATE", "-10%")
    metadata, _ = await speak(audio_channel, voice="en-GB-SoniaNeural")
    assert metadata.model == "edge-tts:en-GB-SoniaNeural"
    assert edge.utterances[0].voice == "en-GB-SoniaNeural"
    assert "rate='-10%'" in edge.utterances[0].ssml


async def test_bad_prosody_variable_is_invalid_argument_without_a_connection(
    audio_channel: grpc.aio.Channel, edge: FakeEdgeTTS, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDGE_TTS_PITCH", "high")
    error = await speak_and_fail(audio_channel)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "EDGE_TTS_PITCH='high'" in error.details()
    assert edge.connections() == 0


@pytest.mark.parametrize(("status", "failures", "connections"), [(503, 1, 2), (403, 2, 3)])
async def test_failed_handshake_is_retried(
    audio_channel: grpc.aio.Channel, edge: FakeEdgeTTS, status: int, failures: int, connections: int
) -> None:
    """A 403 costs two connections per attempt: edge-tts corrects its clock and retries once by itself."""
    edge.fail_handshakes(status, failures)
    metadata, _ = await speak(audio_channel)
    assert len(metadata.timings) == 5
    assert edge.connections() == connections


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
