"""The gateway in-process over real gRPC: music uploads and the music library, finishing checks, and what a render
sends the assembler (finishing, then the music's bytes) and reports back (subtitles, loudness, spend).

The image, audio and video services are the real ones with their offline providers. The assembler is a recording
stand-in that answers like an assembler, so these tests see exactly the messages the gateway sends it.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import sqlite3
import subprocess
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, closing
from pathlib import Path
from typing import Any

import grpc
import pytest
from pydantic import ValidationError
from scenecast.v1 import assembler_service_pb2 as pb
from scenecast.v1 import assembler_service_pb2_grpc, render_service_pb2, render_service_pb2_grpc, types_pb2

from gateway.config import GatewaySettings
from gateway.server import build as build_gateway
from scenecast_cli.stack import free_port
from services.audio.config import AudioSettings
from services.audio.server import build as build_audio
from services.common.chunks import CHUNK_BYTES, iter_chunks
from services.common.media import ffmpeg_exe
from services.common.server import Server, build_server
from services.image.config import ImageSettings
from services.image.server import build as build_image
from services.video.avatars.synthesia import SynthesiaSettings
from services.video.config import VideoSettings
from services.video.server import build as build_video
from tests.fakes.avatar_servers import SYNTHESIA_KEY, FakeSynthesia
from tests.redis_server import RedisServer

MAX_MUSIC_BYTES = 1024 * 1024
MP4 = b"\x00\x00\x00\x18ftypisom" + bytes(1000)
SUBTITLES = [
    types_pb2.SubtitleFile(format=types_pb2.SUBTITLE_FORMAT_SRT, text="1\n00:00:00,000 --> 00:00:01,000\nHi\n"),
    types_pb2.SubtitleFile(format=types_pb2.SUBTITLE_FORMAT_WEBVTT, text="WEBVTT\n\n00:00.000 --> 00:01.000\nHi\n"),
]
LUFS = -16.2
FINISHING = types_pb2.Finishing(
    transition=types_pb2.TRANSITION_CROSSFADE,
    transition_ms=400,
    fit=types_pb2.FIT_PAD_BLUR,
    sidecars=[types_pb2.SUBTITLE_FORMAT_SRT, types_pb2.SUBTITLE_FORMAT_WEBVTT],
    music=types_pb2.MusicMix(gain_db=-18, duck=True),
)
SCENES = [
    types_pb2.Scene(id="one", title="One", narration="First, look up."),
    types_pb2.Scene(id="two", title="Two", narration="Then, climb."),
]
OUTPUT = types_pb2.OutputSettings(
    aspect_ratio=types_pb2.ASPECT_RATIO_16_9, height=144, fps=10, quality=types_pb2.QUALITY_DRAFT
)
ASSEMBLER_SERVICE = pb.DESCRIPTOR.services_by_name["AssemblerService"].full_name


class RecordingAssembler(assembler_service_pb2_grpc.AssemblerServiceServicer):
    """Keeps every message of every assembly, then answers with a small MP4 and a summary with finishing results."""

    def __init__(self) -> None:
        self.assemblies: list[list[pb.AssembleRequest]] = []

    async def Assemble(  # noqa: N802 - the RPC's name
        self, request_iterator: AsyncIterator[pb.AssembleRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.AssembleResponse]:
        received: list[pb.AssembleRequest] = []
        self.assemblies.append(received)
        async for message in request_iterator:
            received.append(message)
        count = received[0].start.scene_count
        yield pb.AssembleResponse(chunk=types_pb2.MediaChunk(offset=0, data=MP4))
        yield pb.AssembleResponse(
            summary=pb.AssemblySummary(
                duration_ms=1000 * count,
                size_bytes=len(MP4),
                width=256,
                height=144,
                scene_duration_ms=[1000] * count,
                scene_start_ms=[1000 * index for index in range(count)],
                subtitles=SUBTITLES,
                integrated_lufs=LUFS,
            )
        )


def _ffmpeg(*arguments: str) -> None:
    subprocess.run([ffmpeg_exe(), "-v", "error", "-y", *arguments], check=True, timeout=60)


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A 2-second stereo WAV (over one chunk), an MP3 for the library, and a picture-only MP4."""
    folder = tmp_path_factory.mktemp("music-media")
    files = {"wav": folder / "bed.wav", "mp3": folder / "bed.mp3", "silent_video": folder / "picture.mp4"}
    _ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:duration=2", "-ac", "2", "-ar", "48000", str(files["wav"]))
    _ffmpeg("-f", "lavfi", "-i", "sine=frequency=330:duration=1", "-c:a", "libmp3lame", str(files["mp3"]))
    _ffmpeg("-f", "lavfi", "-i", "color=c=red:s=64x64:d=0.5", "-pix_fmt", "yuv420p", str(files["silent_video"]))
    return files


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory, media: dict[str, Path]) -> Path:
    folder = tmp_path_factory.mktemp("music-library")
    (folder / "bed.mp3").write_bytes(media["mp3"].read_bytes())
    (folder / "notes.txt").write_text("not music")
    (folder / "broken.mp3").write_text("not music either")
    (folder / "sub").mkdir()
    return folder


@pytest.fixture(scope="module")
def synthesia() -> Iterator[FakeSynthesia]:
    with FakeSynthesia() as fake:
        yield fake


@pytest.fixture(scope="module")
async def downstream(
    tmp_path_factory: pytest.TempPathFactory, synthesia: FakeSynthesia
) -> AsyncIterator[tuple[dict[str, int], Any]]:
    assembler = RecordingAssembler()
    synthesia_settings = SynthesiaSettings(
        synthesia_api_key=SYNTHESIA_KEY,
        synthesia_base_url=synthesia.base_url,
        synthesia_poll_seconds=0.02,
        allow_private_output_urls=True,
    )
    servers: dict[str, Server] = {
        "image": build_image(ImageSettings(listen_address="127.0.0.1:0")),
        "audio": build_audio(AudioSettings(listen_address="127.0.0.1:0")),
        "video": build_video(
            VideoSettings(listen_address="127.0.0.1:0", video_tmp_dir=str(tmp_path_factory.mktemp("video"))),
            [synthesia_settings],
        ),
        "assembler": build_server("127.0.0.1:0", assembler, ASSEMBLER_SERVICE),
    }
    for server in servers.values():
        await server.start()
    yield {name: server.port for name, server in servers.items()}, assembler
    for server in servers.values():
        await server.stop(0)


Gateway = Callable[..., AbstractAsyncContextManager[tuple[render_service_pb2_grpc.RenderServiceStub, Path]]]


@pytest.fixture
def gateway(downstream: tuple[dict[str, int], Any], tmp_path: Path) -> Gateway:
    """Starts a gateway with the given settings; yields its stub and its output folder."""
    ports, _ = downstream

    @asynccontextmanager
    async def running(**settings: Any) -> AsyncIterator[tuple[render_service_pb2_grpc.RenderServiceStub, Path]]:
        output = Path(tempfile.mkdtemp(dir=tmp_path))  # each gateway its own
        server = build_gateway(
            GatewaySettings(
                listen_address="127.0.0.1:0",
                image_service_address=f"127.0.0.1:{ports['image']}",
                audio_service_address=f"127.0.0.1:{ports['audio']}",
                video_service_address=f"127.0.0.1:{ports['video']}",
                assembler_service_address=f"127.0.0.1:{ports['assembler']}",
                render_output_dir=str(output),
                max_music_bytes=MAX_MUSIC_BYTES,
                **settings,
            )
        )
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
                yield render_service_pb2_grpc.RenderServiceStub(channel), output
        finally:
            await server.stop(0)

    return running


async def _upload(
    stub: render_service_pb2_grpc.RenderServiceStub,
    data: bytes,
    mime_type: str = "audio/wav",
    size_bytes: int | None = None,
    start: bool = True,
) -> render_service_pb2.UploadMusicResponse:
    async def requests() -> AsyncIterator[render_service_pb2.UploadMusicRequest]:
        if start:
            size = len(data) if size_bytes is None else size_bytes
            yield render_service_pb2.UploadMusicRequest(
                start=render_service_pb2.UploadMusicStart(mime_type=mime_type, size_bytes=size)
            )
        for chunk in iter_chunks(data):
            yield render_service_pb2.UploadMusicRequest(chunk=chunk)

    return await stub.UploadMusic(requests())


def _request(**fields: Any) -> render_service_pb2.RenderRequest:
    return render_service_pb2.RenderRequest(scenes=SCENES, output=OUTPUT, **fields)


async def _estimate_error(
    stub: render_service_pb2_grpc.RenderServiceStub, request: render_service_pb2.RenderRequest
) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await stub.EstimateCost(render_service_pb2.EstimateCostRequest(render=request))
    return error.value.code(), error.value.details() or ""


async def test_an_upload_is_checked_and_stored_once_under_its_content_hash(
    gateway: Gateway, media: dict[str, Path]
) -> None:
    data = media["wav"].read_bytes()
    assert len(data) > CHUNK_BYTES
    async with gateway() as (stub, output):
        first = await _upload(stub, data)
        again = await _upload(stub, data, mime_type="audio/x-wav")
    assert first.upload_id == again.upload_id == hashlib.sha256(data).hexdigest()
    assert abs(first.duration_ms - 2000) <= 25
    assert first.expires_in_seconds == 3600
    music = output / "music"
    assert (music / first.upload_id).read_bytes() == data
    assert sorted(path.name for path in music.iterdir()) == [first.upload_id, f"{first.upload_id}.json"]


async def test_uploads_that_are_not_music_or_too_big_are_refused_and_leave_nothing(
    gateway: Gateway, media: dict[str, Path]
) -> None:
    wav = media["wav"].read_bytes()
    cases = [
        (dict(data=wav, size_bytes=MAX_MUSIC_BYTES + 1), "over the gateway's MAX_MUSIC_BYTES of 1048576"),
        (dict(data=wav, mime_type="image/png"), "start.mime_type must be an audio/* type"),
        (dict(data=wav, mime_type="audio/wav; rate=8000"), "start.mime_type must be an audio/* type"),
        (
            dict(data=b"plain text, not audio. " * 40, mime_type="audio/mpeg"),
            "music: the file does not decode as audio",
        ),
        (dict(data=media["silent_video"].read_bytes(), mime_type="audio/mp4"), "the file has no audio stream"),
        (dict(data=wav[:1000], size_bytes=len(wav)), f"ended after 1000 of the {len(wav)} bytes"),
        (dict(data=wav, size_bytes=100), "more bytes than the announced size_bytes 100"),
        (dict(data=wav, start=False), "the first message must be `start`"),
    ]
    async with gateway() as (stub, output):
        for arguments, message in cases:
            with pytest.raises(grpc.aio.AioRpcError) as error:
                await _upload(stub, **arguments)  # type: ignore[arg-type]
            assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT, message
            assert message in (error.value.details() or ""), error.value.details()
    music = output / "music"
    assert not music.exists() or list(music.iterdir()) == []


async def test_library_files_are_plain_names_of_audio_files_in_the_library(gateway: Gateway, library: Path) -> None:
    async with gateway(music_library_dir=str(library)) as (stub, _):
        estimate = await stub.EstimateCost(
            render_service_pb2.EstimateCostRequest(
                render=_request(music=render_service_pb2.MusicSource(library_file="bed.mp3"))
            )
        )
        assert estimate.total_usd == 0.0
        for name, code, message in [
            ("../bed.mp3", grpc.StatusCode.INVALID_ARGUMENT, "music.library_file must be a plain file name"),
            ("sub/bed.mp3", grpc.StatusCode.INVALID_ARGUMENT, "music.library_file must be a plain file name"),
            ("..", grpc.StatusCode.INVALID_ARGUMENT, "music.library_file must be a plain file name"),
            (str(library / "bed.mp3"), grpc.StatusCode.INVALID_ARGUMENT, "music.library_file must be a plain file"),
            ("sub", grpc.StatusCode.NOT_FOUND, "music.library_file 'sub' is not in the music library"),
            ("missing.mp3", grpc.StatusCode.NOT_FOUND, "'missing.mp3' is not in the music library"),
            ("notes.txt", grpc.StatusCode.INVALID_ARGUMENT, "'notes.txt' is not named as audio"),
            (
                "broken.mp3",
                grpc.StatusCode.INVALID_ARGUMENT,
                "music.library_file 'broken.mp3': the file does not decode",
            ),
        ]:
            request = _request(music=render_service_pb2.MusicSource(library_file=name))
            got_code, details = await _estimate_error(stub, request)
            assert got_code == code and message in details, (name, got_code, details)
        assert str(library) not in details, "the server's folders are not disclosed"
        for source, code, message in [
            (dict(upload_id="abc"), grpc.StatusCode.INVALID_ARGUMENT, "music.upload_id must be the 64-character id"),
            (dict(upload_id="0" * 64), grpc.StatusCode.NOT_FOUND, "is unknown or has expired"),
            ({}, grpc.StatusCode.INVALID_ARGUMENT, "music is set but names neither upload_id nor library_file"),
        ]:
            request = _request()
            request.music.CopyFrom(render_service_pb2.MusicSource(**source))
            got_code, details = await _estimate_error(stub, request)
            assert got_code == code and message in details, (source, got_code, details)


async def test_a_library_file_needs_a_configured_library(gateway: Gateway) -> None:
    async with gateway() as (stub, _):
        request = _request(music=render_service_pb2.MusicSource(library_file="bed.mp3"))
        code, details = await _estimate_error(stub, request)
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "MUSIC_LIBRARY_DIR is not set" in details


async def test_uploads_expire_after_the_result_ttl(gateway: Gateway, media: dict[str, Path]) -> None:
    async with gateway(result_ttl_seconds=1.0) as (stub, output):
        uploaded = await _upload(stub, media["wav"].read_bytes())
        assert uploaded.expires_in_seconds == 1
        await asyncio.sleep(1.2)
        request = _request(music=render_service_pb2.MusicSource(upload_id=uploaded.upload_id))
        code, details = await _estimate_error(stub, request)
        assert code == grpc.StatusCode.NOT_FOUND and "upload the music again" in details
        for _ in range(40):  # the janitor looks every TTL (1 s here)
            if not any((output / "music").iterdir()):
                break
            await asyncio.sleep(0.1)
        assert list((output / "music").iterdir()) == []


async def test_bad_finishing_is_refused_before_anything_is_spent(
    gateway: Gateway, downstream: tuple[dict[str, int], RecordingAssembler]
) -> None:
    _, assembler = downstream
    assemblies = len(assembler.assemblies)
    cases = [
        (types_pb2.Finishing(transition_ms=9000), "finishing.transition_ms must be at most 3000"),
        (types_pb2.Finishing(pad_color="red"), "finishing.pad_color must be a colour"),
        (
            types_pb2.Finishing(loudness=types_pb2.LoudnessSettings(integrated_lufs=-70)),
            "finishing.loudness.integrated_lufs must be from -40 to -5",
        ),
        (types_pb2.Finishing(transition=42), "finishing.transition must be"),
    ]
    async with gateway() as (stub, _):
        for finishing, message in cases:
            code, details = await _estimate_error(stub, _request(finishing=finishing))
            assert code == grpc.StatusCode.INVALID_ARGUMENT and message in details, details
            with pytest.raises(grpc.aio.AioRpcError) as error:
                async for _ in stub.Render(_request(finishing=finishing)):
                    pass
            assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT and message in (error.value.details() or "")
    assert len(assembler.assemblies) == assemblies, "no assembly was opened"


async def _render(
    stub: render_service_pb2_grpc.RenderServiceStub, request: render_service_pb2.RenderRequest
) -> tuple[bytes, render_service_pb2.RenderSummary]:
    video, summary = bytearray(), None
    async for response in stub.Render(request):
        if response.HasField("chunk"):
            video += response.chunk.data
        elif response.HasField("summary"):
            summary = response.summary
    assert summary is not None
    return bytes(video), summary


def _music_sent(assembly: list[pb.AssembleRequest]) -> tuple[types_pb2.AssetMetadata, list[types_pb2.MediaChunk]]:
    """The music announcement, which must come right after `start`, and the music chunks, which must follow it."""
    assert assembly[0].HasField("start") and assembly[1].HasField("music")
    chunks = []
    for message in assembly[2:]:
        if not (message.HasField("chunk") and message.chunk.role == pb.ASSET_ROLE_MUSIC):
            break
        assert message.chunk.scene_index == 0
        chunks.append(message.chunk.chunk)
    later = [m for m in assembly[2 + len(chunks) :] if m.HasField("chunk") and m.chunk.role == pb.ASSET_ROLE_MUSIC]
    assert later == [], "all music chunks come before the first scene"
    return assembly[1].music.music, chunks


async def test_a_render_sends_finishing_and_music_first_and_reports_what_the_assembler_measured(
    gateway: Gateway, downstream: tuple[dict[str, int], RecordingAssembler], media: dict[str, Path], library: Path
) -> None:
    _, assembler = downstream
    data = media["wav"].read_bytes()
    async with gateway(music_library_dir=str(library)) as (stub, _):
        uploaded = await _upload(stub, data)
        request = _request(finishing=FINISHING, music=render_service_pb2.MusicSource(upload_id=uploaded.upload_id))
        estimate = await stub.EstimateCost(render_service_pb2.EstimateCostRequest(render=request))
        video, summary = await _render(stub, request)
        uploaded_assembly = assembler.assemblies[-1]
        _, from_library = await _render(stub, _request(music=render_service_pb2.MusicSource(library_file="bed.mp3")))
        library_assembly = assembler.assemblies[-1]
        spend = await stub.GetSpend(render_service_pb2.GetSpendRequest(render_id=summary.render_id))

    assert uploaded_assembly[0].start.finishing == FINISHING
    metadata, chunks = _music_sent(uploaded_assembly)
    assert (metadata.mime_type, metadata.size_bytes) == ("audio/wav", len(data))
    assert len(chunks) == math.ceil(len(data) / CHUNK_BYTES)
    assert [chunk.offset for chunk in chunks] == [i * CHUNK_BYTES for i in range(len(chunks))]
    assert b"".join(chunk.data for chunk in chunks) == data
    scenes = [m.scene.scene_index for m in uploaded_assembly if m.HasField("scene")]
    assert sorted(scenes) == [0, 1]

    assert video == MP4
    assert list(summary.subtitles) == SUBTITLES
    assert summary.integrated_lufs == pytest.approx(LUFS)
    assert summary.pre_render_estimate_usd == estimate.total_usd
    # Offline providers cost nothing and are not recorded.
    assert summary.recorded_spend_usd == 0.0 and list(spend.rows) == []

    metadata, chunks = _music_sent(library_assembly)
    assert (metadata.mime_type, metadata.size_bytes) == ("audio/mpeg", (library / "bed.mp3").stat().st_size)
    assert b"".join(chunk.data for chunk in chunks) == (library / "bed.mp3").read_bytes()
    assert library_assembly[0].start.finishing == types_pb2.Finishing()
    assert list(from_library.subtitles) == SUBTITLES


async def test_an_avatar_render_gets_finishing_and_music_and_its_video_is_recorded(
    gateway: Gateway,
    downstream: tuple[dict[str, int], RecordingAssembler],
    media: dict[str, Path],
) -> None:
    _, assembler = downstream
    async with gateway() as (stub, output):
        uploaded = await _upload(stub, media["wav"].read_bytes())
        request = _request(
            finishing=FINISHING,
            music=render_service_pb2.MusicSource(upload_id=uploaded.upload_id),
            providers=types_pb2.ProviderOverrides(avatar="synthesia"),
        )
        _, summary = await _render(stub, request)
    assembly = assembler.assemblies[-1]
    assert assembly[0].start.finishing == FINISHING and assembly[0].start.scene_count == 1
    _, chunks = _music_sent(assembly)
    assert b"".join(chunk.data for chunk in chunks) == media["wav"].read_bytes()

    video = summary.scenes[0].visual
    assert video.provider == "synthesia" and video.estimated_cost_usd > 0
    assert summary.recorded_spend_usd == pytest.approx(video.estimated_cost_usd)
    with closing(sqlite3.connect(output / "spend-ledger.sqlite3")) as db:
        rows = db.execute("SELECT render_id, scene_id, media_kind, provider, model, units, unit, cache_hit FROM spend")
        assert rows.fetchall() == [
            (summary.render_id, "avatar", "avatar", "synthesia", video.model, video.duration_ms / 1000, "second", 0)
        ]


async def test_get_spend_checks_its_arguments(gateway: Gateway) -> None:
    async with gateway() as (stub, _):
        for request, message in [
            (render_service_pb2.GetSpendRequest(since_day="2026-02-30"), "since_day must be a date written"),
            (render_service_pb2.GetSpendRequest(since_day="20261128"), "since_day must be a date written"),
            (render_service_pb2.GetSpendRequest(group_by=9), "group_by must be DAY, PROVIDER or RENDER"),
            (render_service_pb2.GetSpendRequest(render_id="a b"), "render_id must be 1-64 characters"),
        ]:
            with pytest.raises(grpc.aio.AioRpcError) as error:
                await stub.GetSpend(request)
            assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT and message in (error.value.details() or "")
        empty = await stub.GetSpend(render_service_pb2.GetSpendRequest(since_day="2026-11-28"))
        assert (list(empty.rows), empty.total_usd) == ([], 0.0)
    async with gateway(spend_ledger_path="off") as (stub, output):
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await stub.GetSpend(render_service_pb2.GetSpendRequest())
        assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "SPEND_LEDGER_PATH is off" in (error.value.details() or "")
        assert not (output / "spend-ledger.sqlite3").exists()


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture
def shared(redis_server: RedisServer) -> dict[str, Any]:
    """Settings of a gateway replica that keeps uploads in the shared Redis, emptied for each test."""
    with redis_server.client() as client:
        client.flushall()
    return {"asset_cache_url": redis_server.url, "music_uploads_max_bytes": MAX_MUSIC_BYTES}


def _tone(folder: Path, hertz: int) -> bytes:
    path = folder / f"tone-{hertz}.wav"
    _ffmpeg("-f", "lavfi", "-i", f"sine=frequency={hertz}:duration=2", "-ac", "2", "-ar", "48000", str(path))
    return path.read_bytes()


async def test_an_upload_through_one_replica_is_used_by_a_render_through_another(
    gateway: Gateway, downstream: tuple[dict[str, int], RecordingAssembler], media: dict[str, Path], shared: Any
) -> None:
    _, assembler = downstream
    data = media["wav"].read_bytes()
    async with gateway(**shared) as (replica_a, _), gateway(**shared) as (replica_b, folder_b):
        uploaded = await _upload(replica_a, data)
        assert not (folder_b / "music").exists(), "replica B has no copy of its own yet"
        music = render_service_pb2.MusicSource(upload_id=uploaded.upload_id)
        _, summary = await _render(replica_b, _request(music=music))
        again = await _upload(replica_b, data)
    assert summary.render_id and again.upload_id == uploaded.upload_id
    metadata, chunks = _music_sent(assembler.assemblies[-1])
    assert (metadata.mime_type, metadata.size_bytes) == ("audio/wav", len(data))
    assert b"".join(chunk.data for chunk in chunks) == data
    assert (folder_b / "music" / uploaded.upload_id).read_bytes() == data


async def test_shared_uploads_expire_by_last_use_on_any_replica(
    gateway: Gateway, media: dict[str, Path], shared: Any
) -> None:
    async with (
        gateway(result_ttl_seconds=2.0, **shared) as (replica_a, _),
        gateway(result_ttl_seconds=2.0, **shared) as (replica_b, _),
    ):
        uploaded = await _upload(replica_a, media["wav"].read_bytes())
        request = _request(music=render_service_pb2.MusicSource(upload_id=uploaded.upload_id))
        await asyncio.sleep(1.2)
        await replica_b.EstimateCost(render_service_pb2.EstimateCostRequest(render=request))  # a use renews it
        await asyncio.sleep(1.2)
        # 2.4 s after the upload, 1.2 s after its use through B: still there for A, whose own copy is older.
        await replica_a.EstimateCost(render_service_pb2.EstimateCostRequest(render=request))
        await asyncio.sleep(2.2)
        for replica in (replica_a, replica_b):
            code, details = await _estimate_error(replica, request)
            assert code == grpc.StatusCode.NOT_FOUND and "upload the music again" in details, details


async def test_the_shared_uploads_keep_within_their_budget_dropping_the_least_recently_used(
    gateway: Gateway, shared: Any, tmp_path: Path
) -> None:
    tones = [_tone(tmp_path, hertz) for hertz in (300, 400, 500)]
    assert 2 * len(tones[0]) <= MAX_MUSIC_BYTES < 3 * len(tones[0])
    async with gateway(**shared) as (replica_a, _), gateway(**shared) as (replica_b, _):
        ids = [(await _upload(replica_a, tone)).upload_id for tone in tones]
        found = []
        for upload_id in ids:
            request = _request(music=render_service_pb2.MusicSource(upload_id=upload_id))
            try:
                await replica_b.EstimateCost(render_service_pb2.EstimateCostRequest(render=request))
                found.append(True)
            except grpc.aio.AioRpcError as error:
                assert error.code() == grpc.StatusCode.NOT_FOUND
                found.append(False)
    assert found == [False, True, True]


async def test_uploads_fail_clearly_while_the_shared_storage_is_down(
    gateway: Gateway, media: dict[str, Path], shared: Any
) -> None:
    down = {**shared, "asset_cache_url": f"redis://127.0.0.1:{free_port()}/0"}
    async with gateway(**down) as (stub, output):
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await _upload(stub, media["wav"].read_bytes())
        assert error.value.code() == grpc.StatusCode.UNAVAILABLE
        assert error.value.details() == "the shared music storage is unavailable; try again"
        request = _request(music=render_service_pb2.MusicSource(upload_id="0" * 64))
        assert await _estimate_error(stub, request) == (error.value.code(), error.value.details())
    assert list((output / "music").iterdir()) == [], "no partial file is left behind"


def test_the_shared_uploads_budget_must_hold_the_largest_upload() -> None:
    with pytest.raises(ValidationError) as error:
        GatewaySettings(asset_cache_url="redis://127.0.0.1:1/0", max_music_bytes=10, music_uploads_max_bytes=9)
    assert "MUSIC_UPLOADS_MAX_BYTES (9) is below MAX_MUSIC_BYTES (10)" in str(error.value)
