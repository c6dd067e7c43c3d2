"""The assembler over real gRPC: a good assembly is probed; broken streams get INVALID_ARGUMENT and leave nothing."""

from __future__ import annotations

import asyncio
import io
import subprocess
import wave
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import grpc
import pytest
from scenecast.v1 import (
    assembler_service_pb2 as pb,
)
from scenecast.v1 import (
    assembler_service_pb2_grpc,
    audio_service_pb2,
    audio_service_pb2_grpc,
    image_service_pb2,
    image_service_pb2_grpc,
    types_pb2,
)

from services.common.chunks import iter_chunks
from services.common.media import ffmpeg_exe
from tests.probe import audio_rms, probe_mp4
from tests.processes import processes_mentioning
from tests.services.test_media_services import OUTPUT_16_9, SCENE, collect

Asset = tuple[types_pb2.AssetMetadata, bytes]


@pytest.fixture(scope="module")
async def assets(image_channel: grpc.aio.Channel, audio_channel: grpc.aio.Channel) -> tuple[Asset, Asset]:
    image = await collect(
        image_service_pb2_grpc.ImageServiceStub(image_channel).GenerateImage(
            image_service_pb2.GenerateImageRequest(scene=SCENE, output=OUTPUT_16_9)
        )
    )
    speech = await collect(
        audio_service_pb2_grpc.AudioServiceStub(audio_channel).SynthesizeSpeech(
            audio_service_pb2.SynthesizeSpeechRequest(text=SCENE.narration)
        )
    )
    return image, speech


def scene_messages(index: int, visual: Asset, narration: Asset) -> list[pb.AssembleRequest]:
    messages = [
        pb.AssembleRequest(
            scene=pb.SceneStart(scene_index=index, scene=SCENE, visual=visual[0], narration=narration[0])
        )
    ]
    for role, (_, data) in ((pb.ASSET_ROLE_VISUAL, visual), (pb.ASSET_ROLE_NARRATION, narration)):
        messages += [
            pb.AssembleRequest(chunk=pb.SceneChunk(scene_index=index, role=role, chunk=c)) for c in iter_chunks(data)
        ]
    return messages


def start(scene_count: int) -> pb.AssembleRequest:
    return pb.AssembleRequest(start=pb.AssemblyStart(output=OUTPUT_16_9, scene_count=scene_count))


async def assemble(
    channel: grpc.aio.Channel, messages: Iterable[pb.AssembleRequest]
) -> tuple[bytes, list, pb.AssemblySummary]:
    async def requests() -> AsyncIterator[pb.AssembleRequest]:
        for message in messages:
            yield message

    movie, progress, summary = bytearray(), [], None
    async for response in assembler_service_pb2_grpc.AssemblerServiceStub(channel).Assemble(requests()):
        kind = response.WhichOneof("payload")
        if kind == "chunk":
            movie += response.chunk.data
        elif kind == "progress":
            progress.append(response.progress.stage)
        else:
            summary = response.summary
    assert summary is not None
    return bytes(movie), progress, summary


async def test_two_scenes_sent_out_of_order_make_one_mp4(
    assembler_channel: grpc.aio.Channel, assets: tuple[Asset, Asset], work_root: Path, tmp_path: Path
) -> None:
    image, speech = assets
    messages = [start(2), *scene_messages(1, image, speech), *scene_messages(0, image, speech)]
    movie, progress, summary = await assemble(assembler_channel, messages)
    path = tmp_path / "movie.mp4"
    path.write_bytes(movie)
    probed = probe_mp4(path)
    assert (probed.video_codec, probed.width, probed.height, probed.audio_codec) == ("h264", 640, 360, "aac")
    expected_s = 2 * (0.3 + speech[0].duration_ms / 1000 + 0.5)
    assert abs(probed.duration_s - expected_s) < 0.1
    assert abs(summary.duration_ms - sum(summary.scene_duration_ms)) <= len(summary.scene_duration_ms)
    assert summary.size_bytes == len(movie)
    assert probed.subtitle_texts == ["Check the ladder.", "Then climb."] * 2
    assert progress.count(pb.ASSEMBLY_STAGE_SCENE_ENCODED) == 2 and progress[-1] == pb.ASSEMBLY_STAGE_DONE
    assert list(work_root.iterdir()) == []


async def test_broken_streams_are_invalid_argument_and_leave_no_files(
    assembler_channel: grpc.aio.Channel, assets: tuple[Asset, Asset], work_root: Path
) -> None:
    image, speech = assets
    good = scene_messages(0, image, speech)
    not_an_image = (types_pb2.AssetMetadata(mime_type="image/png", size_bytes=11), b"hello world")
    not_audio = (types_pb2.AssetMetadata(mime_type="audio/wav", size_bytes=9), b"\x00" * 9)
    late_chunk = pb.AssembleRequest(
        chunk=pb.SceneChunk(scene_index=0, role=pb.ASSET_ROLE_VISUAL, chunk=types_pb2.MediaChunk(offset=100, data=b"x"))
    )
    cases = {
        "first message must be `start`": good,
        "start.scene_count": [pb.AssembleRequest(start=pb.AssemblyStart(output=OUTPUT_16_9))],
        "start.output.aspect_ratio": [pb.AssembleRequest(start=pb.AssemblyStart(scene_count=1))],
        "scene[0].visual": [start(1), *scene_messages(0, not_an_image, speech)],
        "scene[0].narration": [start(1), *scene_messages(0, image, not_audio)],
        "chunk at offset 100, expected 0": [start(1), good[0], late_chunk],
        "chunk for scene 0 arrived before its `scene` message": [start(1), *good[1:]],
        "stream ended with scene[0]": [start(1), *good[:-1]],
        "ended before scenes [1]": [start(2), *good],
        "announced twice": [start(2), good[0], good[0]],
        "out of range": [start(1), *scene_messages(3, image, speech)],
    }
    for message, requests in cases.items():
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await assemble(assembler_channel, requests)
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT, message
        assert message in error.value.details()
        assert list(work_root.iterdir()) == [], message
    # The service still works after all that.
    movie, _, _ = await assemble(assembler_channel, [start(1), *good])
    assert movie[4:8] == b"ftyp"


async def test_cancelled_assembly_kills_ffmpeg_and_removes_its_files(
    assembler_channel: grpc.aio.Channel, image_channel: grpc.aio.Channel, work_root: Path
) -> None:
    hd = types_pb2.OutputSettings(aspect_ratio=types_pb2.ASPECT_RATIO_16_9, height=1080, quality=types_pb2.QUALITY_HD)
    image = await collect(
        image_service_pb2_grpc.ImageServiceStub(image_channel).GenerateImage(
            image_service_pb2.GenerateImageRequest(scene=SCENE, output=hd)
        )
    )
    # Two minutes of silence: long enough that the encode is still running when the call is cancelled.
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(16000)
        wav.writeframes(b"\x00\x00" * 16000 * 120)
    silence = (types_pb2.AssetMetadata(mime_type="audio/wav", size_bytes=len(buffer.getvalue())), buffer.getvalue())
    never = asyncio.Event()

    async def requests() -> AsyncIterator[pb.AssembleRequest]:
        yield pb.AssembleRequest(start=pb.AssemblyStart(output=hd, scene_count=2))
        for message in scene_messages(0, image, silence):
            yield message
        await never.wait()  # keep the stream open, as a client still generating scene 2 would

    call = assembler_service_pb2_grpc.AssemblerServiceStub(assembler_channel).Assemble(requests())
    async for response in call:
        if response.progress.stage == pb.ASSEMBLY_STAGE_SCENE_RECEIVED:
            break
    for _ in range(50):
        if processes_mentioning(str(work_root)):
            break
        await asyncio.sleep(0.1)
    assert processes_mentioning(str(work_root)), "the scene's FFmpeg encode never started"
    call.cancel()
    for _ in range(50):
        if not processes_mentioning(str(work_root)) and not list(work_root.iterdir()):
            break
        await asyncio.sleep(0.1)
    assert processes_mentioning(str(work_root)) == []
    assert list(work_root.iterdir()) == []


async def test_a_clip_with_its_own_voice_is_both_picture_and_narration(
    assembler_channel: grpc.aio.Channel, tmp_path: Path
) -> None:
    # An avatar-style video: its sound is the narration, so no lead-in or tail may shift it against the lips.
    source = tmp_path / "talking.mp4"
    subprocess.run(
        [
            ffmpeg_exe(),
            "-loglevel",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=320x240:rate=25:duration=2.4",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=300:duration=2.4",
            "-c:v",
            "libx264",
            "-c:a",
            "aac",
            "-shortest",
            str(source),
        ],
        check=True,
    )
    data = source.read_bytes()
    picture = (types_pb2.AssetMetadata(mime_type="video/mp4", size_bytes=len(data)), data)
    voice = (types_pb2.AssetMetadata(mime_type="audio/mp4", size_bytes=len(data)), data)
    opening = pb.AssembleRequest(
        start=pb.AssemblyStart(output=OUTPUT_16_9, scene_count=1, scene_lead_ms=0, scene_tail_ms=0)
    )
    movie, _, summary = await assemble(assembler_channel, [opening, *scene_messages(0, picture, voice)])
    path = tmp_path / "avatar.mp4"
    path.write_bytes(movie)
    probed = probe_mp4(path)
    assert (probed.width, probed.height) == (640, 360)
    assert abs(probed.duration_s - 2.4) < 0.1
    assert abs(probed.audio_duration_s - probed.video_duration_s) < 0.05
    assert audio_rms(path, 0.1, 2.2) > 0.05


async def test_chinese_and_arabic_captions_with_the_word_highlight(
    assembler_channel: grpc.aio.Channel, assets: tuple[Asset, Asset], tmp_path: Path
) -> None:
    """Non-Latin narration, timed by syllables (no word timings), highlighted word by word, plus WebVTT sidecars.

    Each highlighted character of the Chinese scene is its own `ass` filter over the still; the CJK font reaches
    libass through the assembler's fontconfig file (`fonts.write_fontconfig`).
    """
    image, speech = assets
    texts = ["梯子使用前请检查。脚、横档和支撑都要完好。", "قبل الصعود افحص السلم جيدا."]
    untimed = types_pb2.AssetMetadata()
    untimed.CopyFrom(speech[0])
    del untimed.timings[:]
    messages = [
        pb.AssembleRequest(
            start=pb.AssemblyStart(
                output=OUTPUT_16_9,
                scene_count=2,
                finishing=types_pb2.Finishing(
                    caption_style=types_pb2.CaptionStyle(highlight_words=True),
                    sidecars=[types_pb2.SUBTITLE_FORMAT_WEBVTT],
                ),
            )
        )
    ]
    for index, text in enumerate(texts):
        scene = types_pb2.Scene(id=f"s{index}", narration=text, title="Ladder")
        messages.append(
            pb.AssembleRequest(scene=pb.SceneStart(scene_index=index, scene=scene, visual=image[0], narration=untimed))
        )
        for role, data in ((pb.ASSET_ROLE_VISUAL, image[1]), (pb.ASSET_ROLE_NARRATION, speech[1])):
            messages += [
                pb.AssembleRequest(chunk=pb.SceneChunk(scene_index=index, role=role, chunk=c))
                for c in iter_chunks(data)
            ]
    movie, _, summary = await assemble(assembler_channel, messages)
    path = tmp_path / "intl.mp4"
    path.write_bytes(movie)
    probed = probe_mp4(path)
    # The soft track holds the text as written: Chinese without spaces added, Arabic word for word.
    shown = "".join(probed.subtitle_texts[:-1]).replace(" ", "").replace("\n", "")
    assert shown == texts[0]
    assert probed.subtitle_texts[-1].split() == texts[1].split()
    (vtt,) = summary.subtitles
    assert vtt.format == types_pb2.SUBTITLE_FORMAT_WEBVTT and vtt.text.startswith("WEBVTT")
    assert "梯子" in vtt.text and "السلم" in vtt.text


def _announce(scene: types_pb2.Scene, narration: types_pb2.AssetMetadata | None = None) -> list[pb.AssembleRequest]:
    """An assembly of one scene that is announced and never sent: any error before its bytes is about the text."""
    png = types_pb2.AssetMetadata(mime_type="image/png", size_bytes=10)
    wav = narration or types_pb2.AssetMetadata(mime_type="audio/wav", size_bytes=10)
    return [start(1), pb.AssembleRequest(scene=pb.SceneStart(scene_index=0, scene=scene, visual=png, narration=wav))]


def _words(count: int) -> list[types_pb2.TextTiming]:
    return [
        types_pb2.TextTiming(text="go", start_ms=i, end_ms=i + 1, kind=types_pb2.TIMING_KIND_WORD) for i in range(count)
    ]


async def test_scene_text_over_its_limits_or_with_control_characters_is_refused(
    assembler_channel: grpc.aio.Channel, work_root: Path
) -> None:
    """A direct caller gets the gateway's rules: 4000 characters, no control characters, timings bounded by text."""
    said = types_pb2.Scene(id="s", narration="go " * 10)  # 30 characters, 29 once stripped
    cases = {
        "scene[0].scene.narration has 4001 characters; the limit is 4000": _announce(
            types_pb2.Scene(narration="a" * 4001)
        ),
        "scene[0].scene.narration contains the control character U+0000": _announce(
            types_pb2.Scene(narration="Mind\x00 the gap.")
        ),
        "scene[0].scene.narration contains the control character U+001B": _announce(
            types_pb2.Scene(narration="Mind \x1b[31mthe gap.")
        ),
        "scene[0].scene.visual_prompt has 4001 characters": _announce(
            types_pb2.Scene(narration="Hi.", visual_prompt="p" * 4001)
        ),
        "scene[0].scene.id has 65 characters": _announce(types_pb2.Scene(narration="Hi.", id="i" * 65)),
        "scene[0].narration.timings has 100000 entries; the limit is 2 per character of the narration (58)": _announce(
            said, types_pb2.AssetMetadata(mime_type="audio/wav", size_bytes=10, timings=_words(100_000))
        ),
        "scene[0].narration.timings hold 240 characters of text; the limit is 8 per character": _announce(
            said,
            types_pb2.AssetMetadata(
                mime_type="audio/wav", size_bytes=10, timings=[types_pb2.TextTiming(text="x" * 120)] * 2
            ),
        ),
        "scene[0].narration.timings[1].text contains the control character U+001B": _announce(
            said,
            types_pb2.AssetMetadata(
                mime_type="audio/wav", size_bytes=10, timings=[_words(1)[0], types_pb2.TextTiming(text="\x1b]0;")]
            ),
        ),
        "scene[0].narration.mime_type has 1006 characters": _announce(
            said, types_pb2.AssetMetadata(mime_type="audio/" + "x" * 1000, size_bytes=10)
        ),
        "start.render_id has 1000 characters": [
            pb.AssembleRequest(start=pb.AssemblyStart(output=OUTPUT_16_9, scene_count=1, render_id="r" * 1000))
        ],
    }
    for message, requests in cases.items():
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await assemble(assembler_channel, requests)
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT, message
        assert message in error.value.details(), error.value.details()
        assert list(work_root.iterdir()) == [], message
    # At the limits the announcement is accepted: the call fails only later, for the bytes never sent. An avatar
    # video's sound (audio/mp4) speaks the whole script, so its scene may hold more than 4000 characters.
    at_limits = {
        "plain": _announce(
            types_pb2.Scene(id="i" * 64, narration="a" * 4000, visual_prompt="p" * 4000, title="t" * 200),
            types_pb2.AssetMetadata(mime_type="audio/wav", size_bytes=10, timings=_words(8000)),
        ),
        "avatar": _announce(
            types_pb2.Scene(narration="word " * 20_000), types_pb2.AssetMetadata(mime_type="audio/mp4", size_bytes=10)
        ),
    }
    for name, requests in at_limits.items():
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await assemble(assembler_channel, requests)
        assert "the stream ended with scene[0] asset visual-0 at 0 of 10 bytes" in error.value.details(), name
