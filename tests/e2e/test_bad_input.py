"""Bad input at every service's door: the exact status, a message naming the field, and nothing left behind.

The five services run as their own processes with a private TMPDIR, so the test can see every per-call folder they
make (`scenecast-*`) and every FFmpeg they start (its command line names those folders). The gateway keeps finished
MP4s in a folder of their own (RENDER_OUTPUT_DIR), which must hold nothing of a failed render.
"""

from __future__ import annotations

import io
import time
import wave
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import av
import grpc
import pytest
from scenecast.v1 import assembler_service_pb2 as asm
from scenecast.v1 import (
    assembler_service_pb2_grpc,
    audio_service_pb2,
    audio_service_pb2_grpc,
    image_service_pb2,
    image_service_pb2_grpc,
    render_service_pb2,
    render_service_pb2_grpc,
    types_pb2,
    video_service_pb2,
    video_service_pb2_grpc,
)

from scenecast_cli.client import render_to_file
from scenecast_cli.stack import LocalStack
from services.common.chunks import iter_chunks
from services.common.server import MAX_MESSAGE_BYTES
from tests.probe import probe_mp4
from tests.processes import processes_mentioning

INVALID = grpc.StatusCode.INVALID_ARGUMENT
PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION
EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED
CALL_SECONDS = 30.0

OUTPUT = types_pb2.OutputSettings(
    aspect_ratio=types_pb2.ASPECT_RATIO_16_9, height=144, fps=10, quality=types_pb2.QUALITY_DRAFT
)
SCENE = types_pb2.Scene(id="a", narration="Mind the gap.", visual_prompt="A platform edge.", title="Gaps")


@dataclass(frozen=True)
class Assets:
    """A real slide and narration, made by the stack, for the assembler cases to send or to break."""

    png: bytes = field(repr=False)
    wav: bytes = field(repr=False)

    @property
    def truncated_png(self) -> bytes:
        return self.png[: len(self.png) // 2]


@pytest.fixture(scope="module")
def service_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bad-input-tmp")


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bad-input-results")


@pytest.fixture(scope="module")
def services(service_tmp: Path, results: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """The services with the offline defaults, whatever the caller's environment says, and our own folders."""
    env = {
        "TMPDIR": str(service_tmp),
        "RENDER_OUTPUT_DIR": str(results),
        # The spend ledger would otherwise sit among the results (its default folder), which hold only MP4s here.
        "SPEND_LEDGER_PATH": str(tmp_path_factory.mktemp("bad-input-ledger") / "spend.sqlite3"),
        "IMAGE_PROVIDER": "slides",
        "TTS_PROVIDER": "piper",
        "VIDEO_PROVIDER": "",
        "AVATAR_PROVIDER": "",
    }
    local = LocalStack(env=env, log_dir=tmp_path_factory.mktemp("bad-input-logs"))
    local.start()
    yield local
    local.stop()


@pytest.fixture(scope="module")
def assets(services: LocalStack) -> Assets:
    with grpc.insecure_channel(services.addresses["image"]) as channel:
        image = image_service_pb2_grpc.ImageServiceStub(channel).GenerateImage(
            image_service_pb2.GenerateImageRequest(scene=SCENE, output=OUTPUT), timeout=CALL_SECONDS
        )
        png = b"".join(r.chunk.data for r in image if r.HasField("chunk"))
    with grpc.insecure_channel(services.addresses["audio"]) as channel:
        speech = audio_service_pb2_grpc.AudioServiceStub(channel).SynthesizeSpeech(
            audio_service_pb2.SynthesizeSpeechRequest(text=SCENE.narration), timeout=CALL_SECONDS
        )
        wav = b"".join(r.chunk.data for r in speech if r.HasField("chunk"))
    return Assets(png=png, wav=wav)


# Calls. Each takes the stack and the assets and fails with an RpcError.

Call = Callable[[LocalStack, Assets], None]


def _drain(responses: Iterable[object]) -> None:
    for _ in responses:
        pass


def render(change: Callable[[render_service_pb2.RenderRequest], object]) -> Call:
    def call(stack: LocalStack, _: Assets) -> None:
        request = render_service_pb2.RenderRequest(scenes=[SCENE], output=OUTPUT)
        change(request)
        with grpc.insecure_channel(stack.gateway_address) as channel:
            _drain(render_service_pb2_grpc.RenderServiceStub(channel).Render(request, timeout=CALL_SECONDS))

    return call


def raw(process: str, method: str, *payloads: bytes) -> Call:
    """Sends bytes the generated classes refuse to build (invalid UTF-8, negative numbers) as the request.

    `method` is "Service/Method"; several payloads make a client stream.
    """

    def call(stack: LocalStack, _: Assets) -> None:
        path = f"/scenecast.v1.{method}"
        with grpc.insecure_channel(stack.addresses[process]) as channel:
            if len(payloads) == 1:
                responses = channel.unary_stream(path)(payloads[0], timeout=CALL_SECONDS)
            else:
                responses = channel.stream_stream(path)(iter(payloads), timeout=CALL_SECONDS)
            _drain(responses)

    return call


def image(**fields: object) -> Call:
    def call(stack: LocalStack, _: Assets) -> None:
        request = image_service_pb2.GenerateImageRequest(scene=SCENE, output=OUTPUT)
        for name, value in fields.items():
            if isinstance(value, str):
                setattr(request, name, value)
            else:
                getattr(request, name).CopyFrom(value)
        with grpc.insecure_channel(stack.addresses["image"]) as channel:
            _drain(image_service_pb2_grpc.ImageServiceStub(channel).GenerateImage(request, timeout=CALL_SECONDS))

    return call


def speech(timeout: float = CALL_SECONDS, **fields: str) -> Call:
    def call(stack: LocalStack, _: Assets) -> None:
        request = audio_service_pb2.SynthesizeSpeechRequest(**fields)
        with grpc.insecure_channel(stack.addresses["audio"]) as channel:
            _drain(audio_service_pb2_grpc.AudioServiceStub(channel).SynthesizeSpeech(request, timeout=timeout))

    return call


def avatar(**fields: str) -> Call:
    def call(stack: LocalStack, _: Assets) -> None:
        request = video_service_pb2.GenerateAvatarVideoRequest(scenes=[SCENE], output=OUTPUT, **fields)
        with grpc.insecure_channel(stack.addresses["video"]) as channel:
            stub = video_service_pb2_grpc.VideoServiceStub(channel)
            _drain(stub.GenerateAvatarVideo(request, timeout=CALL_SECONDS))

    return call


def huge(letter: str) -> str:
    """A 100 KB name: echoed whole, it would not fit in the status header (RESOURCE_EXHAUSTED instead)."""
    return letter * 100_000


def cut(letter: str) -> str:
    """How an error message quotes `huge(letter)`: a short prefix and the length."""
    return f"'{letter * 40}'... (100000 characters)"


Messages = Callable[[Assets], list]


def clip(messages: Messages) -> Call:
    def call(stack: LocalStack, assets: Assets) -> None:
        with grpc.insecure_channel(stack.addresses["video"]) as channel:
            stub = video_service_pb2_grpc.VideoServiceStub(channel)
            _drain(stub.GenerateClip(iter(messages(assets)), timeout=CALL_SECONDS))

    return call


def assemble(messages: Messages) -> Call:
    def call(stack: LocalStack, assets: Assets) -> None:
        with grpc.insecure_channel(stack.addresses["assembler"]) as channel:
            stub = assembler_service_pb2_grpc.AssemblerServiceStub(channel)
            _drain(stub.Assemble(iter(messages(assets)), timeout=CALL_SECONDS))

    return call


# Request builders.


def scenes(count: int) -> Callable[[render_service_pb2.RenderRequest], None]:
    def change(request: render_service_pb2.RenderRequest) -> None:
        del request.scenes[:]
        for index in range(count):
            request.scenes.add().CopyFrom(SCENE)
            request.scenes[index].id = f"s{index}"

    return change


def scene(**fields: object) -> Callable[[render_service_pb2.RenderRequest], None]:
    def change(request: render_service_pb2.RenderRequest) -> None:
        for name, value in fields.items():
            setattr(request.scenes[0], name, value)

    return change


def output(**fields: int) -> Callable[[render_service_pb2.RenderRequest], None]:
    def change(request: render_service_pb2.RenderRequest) -> None:
        for name, value in fields.items():
            setattr(request.output, name, value)

    return change


def finishing(**fields: object) -> Callable[[render_service_pb2.RenderRequest], None]:
    def change(request: render_service_pb2.RenderRequest) -> None:
        request.finishing.CopyFrom(types_pb2.Finishing(**fields))

    return change


def music(**fields: str) -> Callable[[render_service_pb2.RenderRequest], None]:
    def change(request: render_service_pb2.RenderRequest) -> None:
        request.music.CopyFrom(render_service_pb2.MusicSource(**fields))

    return change


def music_start(size: int, mime_type: str = "audio/wav") -> asm.AssembleRequest:
    return asm.AssembleRequest(
        music=asm.MusicStart(music=types_pb2.AssetMetadata(mime_type=mime_type, size_bytes=size))
    )


def providers(**fields: str) -> Callable[[render_service_pb2.RenderRequest], None]:
    def change(request: render_service_pb2.RenderRequest) -> None:
        for name, value in fields.items():
            setattr(request.providers, name, value)

    return change


def duplicate_ids(request: render_service_pb2.RenderRequest) -> None:
    request.scenes.add().CopyFrom(SCENE)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, payload: bytes | int) -> bytes:
    """One protobuf field: a varint, or length-delimited bytes (strings and messages)."""
    if isinstance(payload, int):
        return _varint(number << 3) + _varint(payload)
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def render_bytes(scene_bytes: bytes, output_bytes: bytes = OUTPUT.SerializeToString()) -> bytes:
    return _field(2, scene_bytes) + _field(3, output_bytes)


GOOD_SCENE_BYTES = SCENE.SerializeToString()
# A lone surrogate (U+D800) as CESU-8 bytes: what a client with a broken encoder would send. Python cannot build it.
BAD_UTF8 = b"Mind the \xed\xa0\x80 gap."
# -2 as a protobuf int32/int64 varint, as a client with a signed height would send it; uint32 keeps the low 32 bits.
NEGATIVE_HEIGHT = _field(1, 1) + _field(2, (1 << 64) - 2) + _field(5, 1)


def start(count: int = 1, **fields: object) -> asm.AssembleRequest:
    return asm.AssembleRequest(start=asm.AssemblyStart(output=OUTPUT, scene_count=count, **fields))


def scene_start(index: int, visual: tuple[str, int], narration: tuple[str, int]) -> asm.AssembleRequest:
    return asm.AssembleRequest(
        scene=asm.SceneStart(
            scene_index=index,
            scene=SCENE,
            visual=types_pb2.AssetMetadata(mime_type=visual[0], size_bytes=visual[1]),
            narration=types_pb2.AssetMetadata(mime_type=narration[0], size_bytes=narration[1]),
        )
    )


def chunk(index: int, role: int, offset: int, data: bytes) -> asm.AssembleRequest:
    return asm.AssembleRequest(
        chunk=asm.SceneChunk(scene_index=index, role=role, chunk=types_pb2.MediaChunk(offset=offset, data=data))
    )


def scene_messages(index: int, visual: tuple[str, bytes], narration: tuple[str, bytes]) -> list[asm.AssembleRequest]:
    """A whole scene: its announcement and every chunk of both assets, each announced with its real size."""
    messages = [scene_start(index, (visual[0], len(visual[1])), (narration[0], len(narration[1])))]
    for role, (_, data) in ((asm.ASSET_ROLE_VISUAL, visual), (asm.ASSET_ROLE_NARRATION, narration)):
        messages += [chunk(index, role, c.offset, c.data) for c in iter_chunks(data)]
    return messages


def narrated_scene(a: Assets, narration: str, timings: int = 0) -> asm.AssembleRequest:
    """The good scene's announcement with another narration and, optionally, that many word timings."""
    message = good_scene(a)[0]
    message.scene.scene.narration = narration
    for index in range(timings):
        message.scene.narration.timings.add(
            text="gap", start_ms=index, end_ms=index + 1, kind=types_pb2.TIMING_KIND_WORD
        )
    return message


def good_scene(a: Assets, index: int = 0) -> list[asm.AssembleRequest]:
    return scene_messages(index, ("image/png", a.png), ("audio/wav", a.wav))


def silence_wav() -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(16000)
        wav.writeframes(b"\x00\x00" * 16000)
    return buffer.getvalue()


def spec(**fields: object) -> video_service_pb2.GenerateClipRequest:
    clip_spec = video_service_pb2.ClipSpec(scene=SCENE, output=OUTPUT, provider="kenburns", duration_ms=1000)
    for name, value in fields.items():
        if isinstance(value, types_pb2.OutputSettings):
            clip_spec.output.CopyFrom(value)
        else:
            setattr(clip_spec, name, value)
    return video_service_pb2.GenerateClipRequest(spec=clip_spec)


def source(offset: int, data: bytes) -> video_service_pb2.GenerateClipRequest:
    return video_service_pb2.GenerateClipRequest(source_image_chunk=types_pb2.MediaChunk(offset=offset, data=data))


VISUAL, NARRATION = asm.ASSET_ROLE_VISUAL, asm.ASSET_ROLE_NARRATION
BAD_OUTPUT = types_pb2.OutputSettings(aspect_ratio=99, height=144, quality=types_pb2.QUALITY_DRAFT)


@dataclass(frozen=True)
class Case:
    id: str
    call: Call
    code: grpc.StatusCode
    # Text the error message must contain: the field's path, as the caller wrote it.
    names: str
    # Why the service does not give this answer yet. The case then xfails, after its cleanup was still checked, and
    # fails once the answer is right, so the note gets removed with the fix.
    bug: str = ""


def xfail(case: Case, reason: str) -> Case:
    return replace(case, bug=reason)


CASES = [
    # RenderService, through the gateway: nothing is generated for any of these.
    Case("render-no-scenes", render(scenes(0)), INVALID, "scenes is empty"),
    Case(
        "render-bad-pad-color",
        render(finishing(pad_color="red")),
        INVALID,
        "finishing.pad_color must be a colour written #RRGGBB",
    ),
    Case(
        "render-loud-target",
        render(finishing(loudness=types_pb2.LoudnessSettings(integrated_lufs=3))),
        INVALID,
        "finishing.loudness.integrated_lufs must be from -40 to -5 (got 3)",
    ),
    Case(
        "render-card-without-title",
        render(finishing(end_card=types_pb2.Card(subtitle="Bye"))),
        INVALID,
        "finishing.end_card.title is empty",
    ),
    Case("render-unknown-transition", render(finishing(transition=9)), INVALID, "finishing.transition must be"),
    Case("render-music-unknown-upload", render(music(upload_id="0" * 64)), grpc.StatusCode.NOT_FOUND, "0000"),
    Case(
        "render-music-library-traversal",
        render(music(library_file="../secrets.mp3")),
        grpc.StatusCode.FAILED_PRECONDITION,
        "MUSIC_LIBRARY_DIR",
    ),
    Case("render-too-many-scenes", render(scenes(51)), INVALID, "scenes has 51 entries; the limit is 50"),
    Case("render-empty-narration", render(scene(narration=" \n\t ")), INVALID, "scenes[0].narration is empty"),
    Case("render-long-narration", render(scene(narration="x" * 4001)), INVALID, "scenes[0].narration has 4001"),
    Case("render-huge-narration", render(scene(narration="y" * 1_000_000)), INVALID, "scenes[0].narration has 1000000"),
    Case(
        "render-over-message-limit",
        render(scene(narration="z" * (MAX_MESSAGE_BYTES + 1))),
        EXHAUSTED,
        "larger than max",
    ),
    Case("render-narration-bell", render(scene(narration="Ding\x07 dong.")), INVALID, "scenes[0].narration contains"),
    Case(
        "render-narration-nul", render(scene(narration="a\x00b")), INVALID, "scenes[0].narration contains the control"
    ),
    Case("render-narration-c1-csi", render(scene(narration="red \x9b31m text")), INVALID, "U+009B"),
    Case("render-long-prompt", render(scene(visual_prompt="p" * 4001)), INVALID, "scenes[0].visual_prompt has 4001"),
    Case("render-long-scene-title", render(scene(title="t" * 201)), INVALID, "scenes[0].title has 201"),
    Case("render-long-title", render(lambda r: setattr(r, "title", "T" * 201)), INVALID, "title has 201 characters"),
    Case("render-title-escape", render(lambda r: setattr(r, "title", "a\x1b[2Jb")), INVALID, "title contains"),
    Case(
        "render-no-visual",
        render(scene(visual_prompt="", title="")),
        INVALID,
        "scenes[0].visual_prompt and scenes[0].title are both empty",
    ),
    Case("render-duplicate-ids", render(duplicate_ids), INVALID, "scenes[1].id 'a' repeats scenes[0].id"),
    Case("render-id-with-space", render(scene(id="has space")), INVALID, "scenes[0].id must be"),
    Case("render-id-empty", render(scene(id="")), INVALID, "scenes[0].id must be"),
    Case("render-id-too-long", render(scene(id="i" * 65)), INVALID, "scenes[0].id must be"),
    Case("render-id-unicode", render(scene(id="café")), INVALID, "scenes[0].id must be"),
    Case("render-bad-render-id", render(lambda r: setattr(r, "render_id", "../etc")), INVALID, "render_id must be"),
    Case("render-aspect-99", render(output(aspect_ratio=99)), INVALID, "output.aspect_ratio must be"),
    Case("render-aspect-unset", render(output(aspect_ratio=0)), INVALID, "output.aspect_ratio must be"),
    Case("render-quality-42", render(output(quality=42)), INVALID, "output.quality must be"),
    Case("render-quality-unset", render(output(quality=0)), INVALID, "output.quality must be"),
    Case("render-height-zero", render(output(height=0)), INVALID, "output.height must be"),
    Case("render-height-odd", render(output(height=361)), INVALID, "output.height must be an even number"),
    Case("render-height-low", render(output(height=142)), INVALID, "output.height must be"),
    Case("render-height-high", render(output(height=2162)), INVALID, "output.height must be"),
    Case("render-height-max-uint32", render(output(height=2**32 - 1)), INVALID, "output.height must be"),
    Case(
        "render-height-negative-on-the-wire",
        raw("gateway", "RenderService/Render", render_bytes(GOOD_SCENE_BYTES, NEGATIVE_HEIGHT)),
        INVALID,
        "output.height must be an even number of pixels from 144 to 2160 (got 4294967294)",
    ),
    Case("render-fps-61", render(output(fps=61)), INVALID, "output.fps must be 1 to 60"),
    Case("render-visual-kind-7", render(scene(visual_kind=7)), INVALID, "scenes[0].visual_kind must be"),
    Case(
        "render-clip-without-video-provider",
        render(scene(visual_kind=types_pb2.VISUAL_KIND_CLIP)),
        INVALID,
        "scenes[0].visual_kind asks for a clip but no video provider",
    ),
    Case("render-unknown-image", render(providers(image="midjourney")), INVALID, "providers.image: unknown provider"),
    Case("render-unknown-speech", render(providers(speech="siri")), INVALID, "providers.speech: unknown provider"),
    Case("render-unknown-video", render(providers(video="sora")), INVALID, "providers.video: unknown provider 'sora'"),
    Case("render-unknown-avatar", render(providers(avatar="hal")), INVALID, "providers.avatar: unknown provider 'hal'"),
    # Found by the speech service after the render started: the render stops and the assembly is cleaned up.
    Case("render-unknown-voice", render(lambda r: setattr(r, "voice", "nobody")), INVALID, "voice 'nobody'"),
    Case(
        "render-huge-image-provider",
        render(providers(image=huge("m"))),
        INVALID,
        f"providers.image: unknown provider {cut('m')}; valid: ",
    ),
    Case(
        "render-huge-speech-provider",
        render(providers(speech=huge("s"))),
        INVALID,
        f"providers.speech: unknown provider {cut('s')}; valid: ",
    ),
    Case(
        "render-huge-video-provider",
        render(providers(video=huge("v"))),
        INVALID,
        f"providers.video: unknown provider {cut('v')}; valid: ",
    ),
    Case(
        "render-huge-avatar-provider",
        render(providers(avatar=huge("a"))),
        INVALID,
        f"providers.avatar: unknown provider {cut('a')}; valid: ",
    ),
    Case(
        "render-huge-voice",
        render(lambda r: setattr(r, "voice", huge("n"))),
        INVALID,
        "voice has 100000 characters; the limit is 200",
    ),
    Case(
        "render-huge-scene-id",
        render(scene(id=huge("i"))),
        INVALID,
        f"scenes[0].id must be 1-64 characters of A-Z, a-z, 0-9, _ and - (got {cut('i')})",
    ),
    Case("image-huge-provider", image(provider=huge("d")), INVALID, f"provider: unknown provider {cut('d')}; valid:"),
    Case(
        "speech-huge-provider",
        speech(text="Hi.", provider=huge("e")),
        INVALID,
        f"provider: unknown provider {cut('e')}; valid:",
    ),
    Case(
        "speech-huge-voice",
        speech(text="Hi.", voice=huge("n")),
        INVALID,
        "voice has 100000 characters; the limit is 200",
    ),
    Case(
        "clip-huge-provider",
        clip(lambda a: [spec(provider=huge("s"))]),
        INVALID,
        f"spec.provider: unknown provider {cut('s')}; valid:",
    ),
    Case(
        "avatar-huge-provider",
        avatar(provider=huge("h")),
        INVALID,
        f"provider: unknown provider {cut('h')}; valid:",
    ),
    Case(
        "render-narration-bad-utf8",
        raw("gateway", "RenderService/Render", render_bytes(_field(1, b"a") + _field(2, BAD_UTF8) + _field(4, b"T"))),
        INVALID,
        "RenderRequest",
    ),
    # ImageService.
    Case("image-unknown-provider", image(provider="dall-e-9"), INVALID, "provider: unknown provider 'dall-e-9'"),
    Case(
        "image-no-prompt-or-title",
        image(scene=types_pb2.Scene(id="a", narration="Hi.")),
        INVALID,
        "scene.visual_prompt and scene.title are both empty",
    ),
    Case(
        "image-long-prompt",
        image(scene=types_pb2.Scene(visual_prompt="p" * 4001)),
        INVALID,
        "scene.visual_prompt has 4001",
    ),
    Case("image-title-control", image(scene=types_pb2.Scene(title="Hi\x08")), INVALID, "scene.title contains"),
    Case(
        "image-quality-42",
        image(output=types_pb2.OutputSettings(aspect_ratio=1, height=144, quality=42)),
        INVALID,
        "output.quality",
    ),
    Case("image-aspect-99", image(output=BAD_OUTPUT), INVALID, "output.aspect_ratio"),
    # AudioService.
    Case("speech-empty", speech(text=""), INVALID, "text is empty"),
    Case("speech-too-long", speech(text="w" * 4001), INVALID, "text has 4001 characters"),
    Case("speech-escape", speech(text="Hi \x1b[31m"), INVALID, "text contains the control character U+001B"),
    Case("speech-unknown-provider", speech(text="Hi.", provider="espeak"), INVALID, "provider: unknown provider"),
    Case("speech-unknown-voice", speech(text="Hi.", voice="nobody"), INVALID, "voice 'nobody' is not installed"),
    Case(
        "speech-bad-utf8",
        raw("audio", "AudioService/SynthesizeSpeech", _field(2, BAD_UTF8)),
        INVALID,
        "SynthesizeSpeechRequest could not be parsed",
    ),
    Case("speech-nothing-to-say", speech(text="{} ...", timeout=5.0), INVALID, "text"),
    # VideoService.
    Case("clip-no-spec-first", clip(lambda a: [source(0, a.png)]), INVALID, "the first message must be `spec`"),
    Case("clip-empty-stream", clip(lambda a: []), INVALID, "the request stream was empty"),
    Case("clip-two-specs", clip(lambda a: [spec(), spec()]), INVALID, "only `source_image_chunk` messages"),
    Case("clip-unknown-provider", clip(lambda a: [spec(provider="sora")]), INVALID, "spec.provider: unknown provider"),
    Case("clip-no-provider", clip(lambda a: [spec(provider="")]), INVALID, "spec.provider is empty and VIDEO_PROVIDER"),
    Case("clip-aspect-99", clip(lambda a: [spec(output=BAD_OUTPUT)]), INVALID, "output.aspect_ratio"),
    Case("clip-too-long", clip(lambda a: [spec(duration_ms=600_001)]), INVALID, "spec.duration_ms must be at most"),
    Case("clip-no-image", clip(lambda a: [spec()]), PRECONDITION, "send the image after the spec"),
    Case(
        "clip-image-out-of-order",
        clip(lambda a: [spec(), source(5, a.png[5:]), source(0, a.png[:5])]),
        INVALID,
        "source_image: chunk at offset 5, expected 0",
    ),
    Case("clip-image-not-an-image", clip(lambda a: [spec(), source(0, b"not a png")]), INVALID, "source_image"),
    # AssemblerService.
    Case("assemble-no-start", assemble(good_scene), INVALID, "the first message must be `start`"),
    Case("assemble-empty-stream", assemble(lambda a: []), INVALID, "the request stream was empty"),
    Case("assemble-two-starts", assemble(lambda a: [start(), start()]), INVALID, "unexpected `start` message"),
    Case("assemble-no-scenes", assemble(lambda a: [start(0)]), INVALID, "start.scene_count must be 1 to 200 (got 0)"),
    Case("assemble-too-many-scenes", assemble(lambda a: [start(201)]), INVALID, "start.scene_count must be 1 to 200"),
    Case("assemble-long-title", assemble(lambda a: [start(title="T" * 201)]), INVALID, "start.title has 201"),
    Case("assemble-lead-too-long", assemble(lambda a: [start(scene_lead_ms=10_001)]), INVALID, "start.scene_lead_ms"),
    Case(
        "assemble-aspect-99",
        assemble(lambda a: [asm.AssembleRequest(start=asm.AssemblyStart(output=BAD_OUTPUT, scene_count=1))]),
        INVALID,
        "start.output.aspect_ratio",
    ),
    Case(
        "assemble-narration-bad-utf8",
        raw(
            "assembler",
            "AssemblerService/Assemble",
            start().SerializeToString(),
            _field(2, _field(2, _field(1, b"a") + _field(2, BAD_UTF8))),
        ),
        INVALID,
        "scene",
    ),
    Case(
        "assemble-index-out-of-range",
        assemble(lambda a: [start(), *good_scene(a, index=3)]),
        INVALID,
        "scene.scene_index 3 is out of range for scene_count 1",
    ),
    Case(
        "assemble-scene-twice",
        assemble(lambda a: [start(2), good_scene(a)[0], good_scene(a)[0]]),
        INVALID,
        "scene[0] was announced twice",
    ),
    Case(
        "assemble-visual-is-text",
        assemble(lambda a: [start(), *scene_messages(0, ("text/plain", b"hi"), ("audio/wav", a.wav))]),
        INVALID,
        "scene[0].visual.mime_type is 'text/plain'",
    ),
    Case(
        "assemble-narration-is-image-type",
        assemble(lambda a: [start(), *scene_messages(0, ("image/png", a.png), ("image/png", a.png))]),
        INVALID,
        "scene[0].narration.mime_type is 'image/png'",
    ),
    Case(
        "assemble-size-zero",
        assemble(lambda a: [start(), scene_start(0, ("image/png", 0), ("audio/wav", 10))]),
        INVALID,
        "scene[0].visual.size_bytes must be positive",
    ),
    Case(
        "assemble-size-over-limit",
        assemble(lambda a: [start(), scene_start(0, ("image/png", 1 << 40), ("audio/wav", 10))]),
        INVALID,
        "scene[0].visual.size_bytes is 1099511627776, over the limit",
    ),
    Case(
        "assemble-chunk-before-scene",
        assemble(lambda a: [start(), *good_scene(a)[1:]]),
        INVALID,
        "chunk for scene 0 arrived before its `scene` message",
    ),
    Case(
        "assemble-chunks-out-of-order",
        assemble(
            lambda a: [
                start(),
                scene_start(0, ("image/png", len(a.png)), ("audio/wav", len(a.wav))),
                chunk(0, VISUAL, 100, a.png[100:]),
                chunk(0, VISUAL, 0, a.png[:100]),
            ]
        ),
        INVALID,
        "scene[0].visual: chunk at offset 100, expected 0",
    ),
    Case(
        "assemble-more-than-announced",
        assemble(lambda a: [start(), scene_start(0, ("image/png", 10), ("audio/wav", 10)), chunk(0, VISUAL, 0, a.png)]),
        INVALID,
        "scene[0].visual: more bytes than the announced size_bytes 10",
    ),
    Case(
        "assemble-bad-finishing",
        assemble(lambda a: [start(finishing=types_pb2.Finishing(silence_pad_ms=5000))]),
        INVALID,
        "start.finishing.silence_pad_ms must be at most 2000 (got 5000)",
    ),
    Case(
        "assemble-music-twice",
        assemble(lambda a: [start(), music_start(10), music_start(10)]),
        INVALID,
        "music was announced twice",
    ),
    Case(
        "assemble-music-chunk-first",
        assemble(lambda a: [start(), chunk(0, asm.ASSET_ROLE_MUSIC, 0, b"x")]),
        INVALID,
        "a music chunk arrived before the `music` message",
    ),
    Case(
        "assemble-music-not-audio",
        assemble(lambda a: [start(), music_start(10, "image/png")]),
        INVALID,
        "music.music.mime_type is 'image/png'",
    ),
    Case(
        "assemble-music-is-text",
        assemble(
            lambda a: [start(), music_start(11), chunk(0, asm.ASSET_ROLE_MUSIC, 0, b"hello world"), *good_scene(a)]
        ),
        INVALID,
        "music",
    ),
    Case(
        "assemble-chunk-without-role",
        assemble(lambda a: [start(), good_scene(a)[0], chunk(0, asm.ASSET_ROLE_UNSPECIFIED, 0, b"x")]),
        INVALID,
        "chunk.role for scene 0 must be VISUAL, NARRATION or MUSIC",
    ),
    Case(
        "assemble-stream-ends-mid-asset",
        assemble(lambda a: [start(), good_scene(a)[0], chunk(0, VISUAL, 0, a.png[:5])]),
        INVALID,
        "the stream ended with scene[0] asset visual-0 at 5 of",
    ),
    Case(
        "assemble-stream-ends-before-a-scene",
        assemble(lambda a: [start(2), *good_scene(a)]),
        INVALID,
        "the stream ended before scenes [1] were sent",
    ),
    Case(
        "assemble-image-is-text",
        assemble(lambda a: [start(), *scene_messages(0, ("image/png", b"hello world"), ("audio/wav", a.wav))]),
        INVALID,
        "scene[0].visual: the picture has no size",
    ),
    Case(
        "assemble-image-truncated",
        assemble(lambda a: [start(), *scene_messages(0, ("image/png", a.truncated_png), ("audio/wav", a.wav))]),
        INVALID,
        "scene[0].visual",
    ),
    Case(
        "assemble-clip-is-audio",
        assemble(lambda a: [start(), *scene_messages(0, ("video/mp4", a.wav), ("audio/wav", a.wav))]),
        INVALID,
        "scene[0].visual has no picture",
    ),
    Case(
        "assemble-clip-is-noise",
        assemble(lambda a: [start(), *scene_messages(0, ("video/mp4", bytes(range(256)) * 8), ("audio/wav", a.wav))]),
        INVALID,
        "scene[0].visual: not a readable",
    ),
    Case(
        "assemble-audio-is-image",
        assemble(lambda a: [start(), *scene_messages(0, ("image/png", a.png), ("audio/wav", a.png))]),
        INVALID,
        "scene[0].narration has no audio",
    ),
    Case(
        "assemble-audio-is-zeros",
        assemble(lambda a: [start(), *scene_messages(0, ("image/png", a.png), ("audio/wav", bytes(64)))]),
        INVALID,
        "scene[0].narration: not a readable",
    ),
    Case(
        "assemble-narration-nul",
        assemble(lambda a: [start(), narrated_scene(a, "Mind\x00 the gap.")]),
        INVALID,
        "scene[0].scene.narration contains the control character U+0000",
    ),
    Case(
        "assemble-narration-esc",
        assemble(lambda a: [start(), narrated_scene(a, "Mind \x1b[31mthe gap.")]),
        INVALID,
        "scene[0].scene.narration contains the control character U+001B",
    ),
    Case(
        "assemble-narration-500k",
        assemble(lambda a: [start(), narrated_scene(a, "word " * 100_000)]),
        INVALID,
        "scene[0].scene.narration has 499999 characters; the limit is 4000",
    ),
    Case(
        "assemble-100000-word-timings",
        assemble(lambda a: [start(), narrated_scene(a, "Mind the gap.", timings=100_000)]),
        INVALID,
        "scene[0].narration.timings has 100000 entries; the limit is 2 per character of the narration (26)",
    ),
    Case(
        "assemble-audio-truncated-header",
        assemble(lambda a: [start(), *scene_messages(0, ("image/png", a.png), ("audio/wav", silence_wav()[:40]))]),
        INVALID,
        "scene[0].narration",
    ),
]


def _folders(root: Path) -> list[str]:
    return sorted(path.name for path in root.glob("scenecast-*"))


def _files(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


def _assert_nothing_left(stack: LocalStack, root: Path, results: Path, kept: tuple[str, ...] = ()) -> None:
    """No per-call folder, no FFmpeg and no failed render's MP4 outlive a call; every service is still running.

    `kept` names the MP4s of finished renders and their JSON sidecars, which the gateway keeps for FetchResult. The
    servers get a moment to finish their cleanup.
    """

    def clean() -> bool:
        return not _folders(root) and not processes_mentioning(str(root)) and _files(results) == sorted(kept)

    for _ in range(50):
        if clean():
            break
        time.sleep(0.1)
    assert _folders(root) == []
    assert processes_mentioning(str(root)) == []
    assert _files(results) == sorted(kept)
    assert {name: p.poll() for name, p in stack.processes.items()} == dict.fromkeys(stack.processes)


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_gets_the_exact_status_naming_the_field(
    case: Case, services: LocalStack, assets: Assets, service_tmp: Path, results: Path
) -> None:
    assert _folders(service_tmp) == [] and _files(results) == []
    with pytest.raises(grpc.RpcError) as raised:
        case.call(services, assets)
    _assert_nothing_left(services, service_tmp, results)
    error: grpc.Call = raised.value  # type: ignore[assignment]
    answer = (error.code(), case.names in error.details())
    if case.bug:
        assert answer != (case.code, True), f"fixed? remove the bug note of {case.id}"
        pytest.xfail(case.bug)
    assert answer == (case.code, True), error.details()


@pytest.mark.parametrize(
    "change",
    [
        scenes(50),
        # 4000 characters, words at the 100-character limit; surrounding whitespace is not counted.
        scene(narration=f"  {'n' * 100}{(' ' + 'n' * 99) * 39}\n"),
        scene(visual_prompt="p" * 4000, title="t" * 200),
        scene(narration="Tabs\tand\nnewlines are fine. \u00a0\u200b\u202e\U0001f600 too."),
        lambda r: setattr(r, "title", "T" * 200),
        lambda r: setattr(r, "render_id", "r" * 64),
        output(fps=0),
        output(fps=60, height=2160),
        output(aspect_ratio=types_pb2.ASPECT_RATIO_9_16, height=144),
        providers(speech="openai"),  # 4000 characters stay under OpenAI's 4096 per request
    ],
    ids=[
        "50-scenes",
        "4000-char-narration",
        "4000-char-prompt-200-char-title",
        "tabs-newlines-unicode",
        "200-char-title",
        "64-char-render-id",
        "fps-0",
        "fps-60-height-2160",
        "height-144",
        "openai-speech",
    ],
)
def test_values_at_the_limits_are_accepted(
    change: Callable[[render_service_pb2.RenderRequest], object], services: LocalStack
) -> None:
    """EstimateCost validates exactly as Render does, without generating anything."""
    request = render_service_pb2.RenderRequest(scenes=[SCENE], output=OUTPUT)
    change(request)
    with grpc.insecure_channel(services.gateway_address) as channel:
        estimate = render_service_pb2_grpc.RenderServiceStub(channel).EstimateCost(
            render_service_pb2.EstimateCostRequest(render=request), timeout=CALL_SECONDS
        )
    assert len(estimate.scenes) == len(request.scenes)


def test_good_render_still_works_with_fps_zero_meaning_30(
    services: LocalStack, service_tmp: Path, results: Path, tmp_path: Path
) -> None:
    request = render_service_pb2.RenderRequest(
        scenes=[SCENE],
        output=types_pb2.OutputSettings(aspect_ratio=types_pb2.ASPECT_RATIO_1_1, height=144, fps=0, quality=1),
        title="Still standing",
    )
    path = tmp_path / "good.mp4"
    summary = render_to_file(services.gateway_address, request, path, timeout_seconds=60)
    probed = probe_mp4(path)
    assert (probed.video_codec, probed.width, probed.height, probed.audio_codec) == ("h264", 144, 144, "aac")
    assert probed.subtitle_texts == [SCENE.narration]
    assert summary.size_bytes == path.stat().st_size
    with av.open(str(path)) as container:
        assert container.streams.video[0].average_rate == 30
    _assert_nothing_left(services, service_tmp, results, kept=(f"{summary.render_id}.json", f"{summary.render_id}.mp4"))
