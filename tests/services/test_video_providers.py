"""The wan and selfhosted video providers through the real video service, against fake Replicate, Cog and ComfyUI."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from PIL import Image
from pydantic import ValidationError
from scenecast.v1 import types_pb2, video_service_pb2, video_service_pb2_grpc

from services.common.chunks import iter_chunks
from services.common.media import probe
from services.common.providers import Quality
from services.common.replicate_runner import ReplicateSettings
from services.video.config import VideoSettings
from services.video.providers.selfhosted import SelfHostedSettings
from services.video.server import build as build_video
from tests import prices
from tests.fakes.base import Fault
from tests.fakes.replicate_server import THROTTLED, TOKEN
from tests.fakes.video_servers import (
    COMFY_CHECKPOINTS,
    WAN_I2V,
    WAN_T2V,
    FakeCogVideo,
    FakeComfyUI,
    FakeReplicateVideo,
    decode_image_uri,
)
from tests.services.conftest import _serve
from tests.services.outputs import ASPECTS, QUALITIES
from tests.services.test_media_services import collect

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = ROOT / "deploy" / "comfyui" / "ltx-video-workflow.json"
PROMPT = "A ladder against a sunny wall, slow push in."
WAN_T2V_CREATE = f"/v1/models/{WAN_T2V}/predictions"
# How many times GenerateClip asks a provider. It does not wrap providers in call_with_retries yet (avatar videos
# do), so a failure is reported at once; when it does, this becomes VideoSettings(...).provider_attempts.
ATTEMPTS = VideoSettings(listen_address="127.0.0.1:0").provider_attempts
# Duration is measured from the file; an AAC track ends on a whole 1024-sample frame.
DURATION_TOLERANCE_MS = 50

Clip = Callable[..., Awaitable[tuple[types_pb2.AssetMetadata, bytes]]]


pytestmark = pytest.mark.usefixtures("quick_retries")


@pytest.fixture(scope="module")
def replicate_server() -> Iterator[FakeReplicateVideo]:
    with FakeReplicateVideo() as fake:
        yield fake


@pytest.fixture(scope="module")
def cog_server() -> Iterator[FakeCogVideo]:
    with FakeCogVideo() as fake:
        yield fake


@pytest.fixture(scope="module")
def comfy_server() -> Iterator[FakeComfyUI]:
    with FakeComfyUI() as fake:
        yield fake


@pytest.fixture
def values() -> dict[str, Any]:
    """The provider settings the video service is started with; the fakes' fixtures point them at themselves."""
    return {"allow_private_output_urls": True}


@pytest.fixture
def replicate(replicate_server: FakeReplicateVideo, values: dict[str, Any]) -> FakeReplicateVideo:
    replicate_server.reset()
    values.update(replicate_api_token=TOKEN, replicate_base_url=replicate_server.base_url, replicate_poll_interval=0.02)
    return replicate_server


@pytest.fixture
def cog(cog_server: FakeCogVideo, values: dict[str, Any]) -> FakeCogVideo:
    cog_server.reset()
    values.update(
        selfhosted_video_url=cog_server.base_url, selfhosted_video_api="cog", selfhosted_video_poll_seconds=0.01
    )
    return cog_server


@pytest.fixture
def comfy(comfy_server: FakeComfyUI, values: dict[str, Any]) -> FakeComfyUI:
    comfy_server.reset()
    values.update(
        selfhosted_video_url=comfy_server.base_url,
        selfhosted_video_api="comfyui",
        selfhosted_video_poll_seconds=0.01,
        selfhosted_comfyui_workflow=str(WORKFLOW),
    )
    return comfy_server


@pytest.fixture
async def start(values: dict[str, Any], work_root: Path) -> AsyncIterator[Callable[..., Awaitable[Clip]]]:
    """Starts the video service with the provider settings in `values` (`changes` override any of them), as settings
    objects: nothing is read from the environment."""
    async with contextlib.AsyncExitStack() as stack:

        async def run(**changes: Any) -> Clip:
            given = {**values, **changes}
            settings = VideoSettings(listen_address="127.0.0.1:0", video_tmp_dir=str(work_root))
            server = build_video(settings, [ReplicateSettings(**given), SelfHostedSettings(**given)])
            channel = await stack.enter_async_context(contextlib.asynccontextmanager(_serve)(server))
            return _clip(channel)

        yield run


@pytest.fixture
def clip(start: Callable[..., Awaitable[Clip]]) -> Clip:
    """A clip call on a service started (on first use) with the fixtures' settings."""
    started: list[Clip] = []

    async def run(*args: Any, **kwargs: Any) -> tuple[types_pb2.AssetMetadata, bytes]:
        if not started:
            started.append(await start())
        return await started[0](*args, **kwargs)

    return run


def _clip(video_channel: grpc.aio.Channel) -> Clip:
    """Asks the video service for one clip (with the scene's image when `image` is given) and collects it."""

    async def run(
        provider: str,
        aspect: str = "16:9",
        duration_ms: int = 2000,
        image: bytes | None = None,
        quality: str = "standard",
        timeout: float | None = None,
        prompt: str = PROMPT,
        title: str = "Ladders",
    ) -> tuple[types_pb2.AssetMetadata, bytes]:
        output = types_pb2.OutputSettings(
            aspect_ratio=ASPECTS[aspect], height=360, fps=24, quality=QUALITIES[Quality(quality)]
        )
        spec = video_service_pb2.ClipSpec(
            scene=types_pb2.Scene(id="s1", narration="Check the ladder.", visual_prompt=prompt, title=title),
            output=output,
            duration_ms=duration_ms,
            provider=provider,
            render_id="r-1",
            source_image_mime_type="image/png" if image is not None else "",
        )

        async def requests() -> AsyncIterator[video_service_pb2.GenerateClipRequest]:
            yield video_service_pb2.GenerateClipRequest(spec=spec)
            for chunk in iter_chunks(image or b""):
                yield video_service_pb2.GenerateClipRequest(source_image_chunk=chunk)

        stub = video_service_pb2_grpc.VideoServiceStub(video_channel)
        return await collect(stub.GenerateClip(requests(), timeout=timeout))

    return run


async def failure(clip: Clip, provider: str, **kwargs: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await clip(provider, **kwargs)
    return error.value


def picture(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.linear_gradient("L").resize((width, height)).convert("RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def assert_mp4(metadata: types_pb2.AssetMetadata, data: bytes, size: tuple[int, int], duration_ms: float) -> None:
    """Metadata agrees with the file itself, and the file is the clip the fake was asked for."""
    info = probe(io.BytesIO(data), "clip")
    assert (metadata.mime_type, metadata.size_bytes) == ("video/mp4", len(data))
    assert (metadata.width, metadata.height, metadata.duration_ms) == (info.width, info.height, info.duration_ms)
    assert (info.width, info.height) == size
    assert abs(info.duration_ms - duration_ms) <= DURATION_TOLERANCE_MS


async def eventually(condition: Callable[[], object]) -> None:
    """The server side learns of a client's deadline on its own clock."""
    for _ in range(100):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the condition never held")


# --- wan --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("aspect", "quality", "aspect_ratio", "steps", "fast_mode", "size"),
    [
        ("16:9", "standard", "16:9", 30, "Balanced", (832, 480)),
        ("9:16", "draft", "9:16", 20, "Fast", (480, 832)),
        ("1:1", "hd", "16:9", 40, "Off", (832, 480)),  # Wan has no square; the assembler crops or pads
    ],
)
async def test_wan_text_to_video(
    replicate: FakeReplicateVideo,
    clip: Clip,
    aspect: str,
    quality: str,
    aspect_ratio: str,
    steps: int,
    fast_mode: str,
    size: tuple[int, int],
) -> None:
    metadata, data = await clip("wan", aspect=aspect, quality=quality)
    assert_mp4(metadata, data, size, 81 / 16 * 1000)
    [create] = replicate.creates()
    assert create.path == WAN_T2V_CREATE and "version" not in create.json()
    assert create.json()["input"] == {
        "prompt": PROMPT,
        "num_frames": 81,
        "frames_per_second": 16,
        "sample_steps": steps,
        "fast_mode": fast_mode,
        "aspect_ratio": aspect_ratio,
    }
    assert (metadata.provider, metadata.model) == ("wan", WAN_T2V)
    assert metadata.estimated_cost_usd == pytest.approx(prices.WAN_PER_OUTPUT_SECOND * 81 / 16)


@pytest.mark.parametrize(
    ("aspect", "max_area", "size"), [("16:9", "832x480", (832, 480)), ("9:16", "480x832", (480, 832))]
)
async def test_wan_image_to_video_sends_the_scene_image(
    replicate: FakeReplicateVideo, clip: Clip, aspect: str, max_area: str, size: tuple[int, int]
) -> None:
    image_size = (1280, 720) if aspect == "16:9" else (720, 1280)
    metadata, data = await clip("wan", aspect=aspect, image=picture(*image_size))
    assert_mp4(metadata, data, size, 81 / 16 * 1000)
    [create] = replicate.creates()
    assert create.path == f"/v1/models/{WAN_I2V}/predictions"
    model_input = create.json()["input"]
    assert {
        key: model_input[key] for key in ("prompt", "num_frames", "max_area", "frames_per_second", "fast_mode")
    } == {
        "prompt": PROMPT,
        "num_frames": 81,
        "max_area": max_area,
        "frames_per_second": 16,
        "fast_mode": "Balanced",
    }
    assert "aspect_ratio" not in model_input
    sent = decode_image_uri(model_input["image"])
    assert sent is not None and sent.format == "JPEG"
    # Scaled down to the model's working area, keeping the image's shape.
    assert (
        sent.width * sent.height <= 832 * 480 and abs(sent.width / sent.height - image_size[0] / image_size[1]) < 0.01
    )
    assert metadata.model == WAN_I2V


async def test_wan_polls_a_slow_prediction(replicate: FakeReplicateVideo, clip: Clip) -> None:
    replicate.polls_to_finish = 3
    metadata, _ = await clip("wan")
    assert metadata.provider == "wan"
    [prediction] = replicate.predictions.values()
    assert prediction.history == ["starting", "processing", "processing", "succeeded"]


async def test_wan_failed_prediction_is_unavailable(replicate: FakeReplicateVideo, clip: Clip) -> None:
    replicate.fail_with = "CUDA error: out of memory"
    error = await failure(clip, "wan")
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert WAN_T2V in error.details() and "CUDA error: out of memory" in error.details()
    assert len(replicate.creates()) == ATTEMPTS


async def test_wan_throttled_create(replicate: FakeReplicateVideo, clip: Clip) -> None:
    replicate.add_fault(Fault(WAN_T2V_CREATE, status=429, body=THROTTLED, headers={"Retry-After": "0"}, method="POST"))
    if ATTEMPTS > 1:
        metadata, _ = await clip("wan")  # the service's retry policy asks again
        assert metadata.provider == "wan" and len(replicate.creates()) == 2
    else:
        error = await failure(clip, "wan")
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "429" in error.details() and len(replicate.creates()) == 1


async def test_wan_corrupt_video_is_unavailable_naming_the_prediction(
    replicate: FakeReplicateVideo, clip: Clip
) -> None:
    """A finished prediction's bad clip is reported, never ordered (and paid for) again."""
    replicate.corrupt_video = True
    error = await failure(clip, "wan")
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    [prediction] = replicate.predictions.values()
    assert f"job {prediction.id} finished with unusable output" in error.details() and "not an MP4" in error.details()
    assert len(replicate.creates()) == 1


async def test_wan_without_a_token_is_failed_precondition(
    replicate: FakeReplicateVideo, start: Callable[..., Awaitable[Clip]]
) -> None:
    error = await failure(await start(replicate_api_token=""), "wan")
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "REPLICATE_API_TOKEN" in error.details() and "'wan'" in error.details()
    assert replicate.requests == []


# --- selfhosted: Cog --------------------------------------------------------------------------------------------


def assert_ltx_shape(width: int, height: int, frames: int) -> None:
    assert width % 32 == 0 and height % 32 == 0 and (frames - 1) % 8 == 0


async def test_cog_synchronous_prediction(
    cog: FakeCogVideo, start: Callable[..., Awaitable[Clip]], work_root: Path
) -> None:
    clip = await start(selfhosted_video_usd_per_second=0.01)
    metadata, data = await clip("selfhosted", duration_ms=2000)
    [create] = cog.creates()
    assert "prefer" not in {key.lower() for key in create.headers}
    model_input = create.json()["input"]
    assert model_input == {
        "prompt": PROMPT,
        "negative_prompt": model_input["negative_prompt"],
        "width": 864,  # 480p at 16:9, each side a multiple of 32
        "height": 480,
        "num_frames": 49,  # 2 s at 24 fps is 48 frames; the nearest 8k+1 is 49
        "fps": 24,
        "seed": model_input["seed"],
    }
    assert isinstance(model_input["seed"], int) and "blurry" in model_input["negative_prompt"]
    assert_mp4(metadata, data, (864, 480), 49 / 24 * 1000)
    assert (metadata.provider, metadata.model) == ("selfhosted", "selfhosted-cog")
    assert metadata.estimated_cost_usd == pytest.approx(0.01 * 49 / 24)
    assert cog.requests_to("/predictions/") == []  # answered in one request
    assert list(work_root.iterdir()) == []


@pytest.mark.parametrize(
    ("aspect", "duration_ms", "env", "size", "frames"),
    [
        ("9:16", 5000, {}, (480, 864), 121),
        ("16:9", 60000, {}, (864, 480), 121),  # capped at SELFHOSTED_VIDEO_MAX_FRAMES
        ("1:1", 10000, {"SELFHOSTED_VIDEO_HEIGHT": "500", "SELFHOSTED_VIDEO_MAX_FRAMES": "100"}, (512, 512), 97),
        ("16:9", 3000, {"SELFHOSTED_VIDEO_HEIGHT": "720", "SELFHOSTED_VIDEO_FPS": "30"}, (1280, 704), 89),
    ],
)
async def test_cog_sizes_and_frame_counts_suit_ltx_video(
    cog: FakeCogVideo,
    start: Callable[..., Awaitable[Clip]],
    aspect: str,
    duration_ms: int,
    env: dict[str, str],
    size: tuple[int, int],
    frames: int,
) -> None:
    clip = await start(**{variable.lower(): value for variable, value in env.items()})
    fps = int(env.get("SELFHOSTED_VIDEO_FPS", "24"))
    metadata, data = await clip("selfhosted", aspect=aspect, duration_ms=duration_ms)
    model_input = cog.creates()[0].json()["input"]
    assert (model_input["width"], model_input["height"], model_input["num_frames"], model_input["fps"]) == (
        *size,
        frames,
        fps,
    )
    assert_ltx_shape(model_input["width"], model_input["height"], model_input["num_frames"])
    assert_mp4(metadata, data, size, frames / fps * 1000)


async def test_cog_asynchronous_prediction_is_polled(cog: FakeCogVideo, clip: Clip) -> None:
    cog.async_mode, cog.polls_to_finish = True, 3
    cog.url_output, cog.with_audio, cog.model_name = True, True, "ltx-video-0.9.5"
    image = picture(640, 360)
    metadata, data = await clip("selfhosted", image=image)
    [prediction] = cog.predictions.values()
    assert prediction.history == ["processing", "processing", "processing", "succeeded"]
    assert len(cog.requests_to(f"/predictions/{prediction.id}", "GET")) == 3
    assert prediction.input["image"].startswith("data:image/png;base64,")
    sent = decode_image_uri(prediction.input["image"])
    assert sent is not None and sent.size == (640, 360)
    assert len(cog.requests_to("/files/", "GET")) == 1
    assert_mp4(metadata, data, (864, 480), 49 / 24 * 1000)
    assert probe(io.BytesIO(data), "clip").has_audio
    assert metadata.model == "selfhosted-cog:ltx-video-0.9.5"


async def test_cog_failed_prediction_is_unavailable(cog: FakeCogVideo, clip: Clip) -> None:
    cog.fail_with = "CUDA out of memory. Tried to allocate 2.00 GiB"
    error = await failure(clip, "selfhosted")
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert "selfhosted (cog)" in error.details() and "'failed'" in error.details()
    assert "CUDA out of memory" in error.details()
    assert len(cog.creates()) == ATTEMPTS


async def test_cog_throttled_poll_is_waited_out(cog: FakeCogVideo, clip: Clip) -> None:
    cog.async_mode, cog.polls_to_finish = True, 1
    cog.add_fault(Fault("/predictions/", status=429, body={"detail": "slow down"}, headers={"Retry-After": "0"}))
    metadata, _ = await clip("selfhosted")
    assert metadata.provider == "selfhosted"
    assert (len(cog.creates()), len(cog.requests_to("/predictions/", "GET"))) == (1, 2)


async def test_cog_throttled_create(cog: FakeCogVideo, clip: Clip) -> None:
    cog.add_fault(Fault("/predictions", status=429, body={"detail": "slow down"}, headers={"Retry-After": "0"}))
    if ATTEMPTS > 1:
        metadata, _ = await clip("selfhosted")  # the service's retry policy asks again
        assert metadata.provider == "selfhosted" and len(cog.creates()) == 2
    else:
        error = await failure(clip, "selfhosted")
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "429" in error.details() and "slow down" in error.details()
        assert len(cog.creates()) == 1


async def test_cog_corrupt_video_is_reported_not_made_again(cog: FakeCogVideo, clip: Clip) -> None:
    cog.corrupt_output = True
    error = await failure(clip, "selfhosted")
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    [prediction] = cog.predictions.values()
    assert f"job {prediction.id} finished with unusable output" in error.details()
    assert "not an MP4 or WebM video" in error.details()
    assert len(cog.creates()) == 1


async def test_cog_order_whose_answer_is_lost_is_reported_not_sent_again(cog: FakeCogVideo, clip: Clip) -> None:
    """Cog keeps no list to look in: a create that may have reached the server is not risked twice."""
    cog.add_fault(Fault("/predictions", reset=True, method="POST"))
    error = await failure(clip, "selfhosted")
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert "selfhosted (cog) may have received the order" in error.details()
    assert "not ordered again" in error.details()
    assert len(cog.creates()) == 1


async def test_cog_failed_download_is_downloaded_again(cog: FakeCogVideo, clip: Clip) -> None:
    cog.url_output, cog.failing_downloads = True, 2
    metadata, _ = await clip("selfhosted")
    assert metadata.provider == "selfhosted"
    assert (len(cog.creates()), len(cog.requests_to("/files/", "GET"))) == (1, 3)


@pytest.mark.parametrize(
    ("fault", "code", "message"),
    [
        (
            Fault("/predictions", status=422, body={"detail": [{"loc": ["body", "input", "fps"], "msg": "bad fps"}]}),
            grpc.StatusCode.INVALID_ARGUMENT,
            "body.input.fps: bad fps",
        ),
        (
            Fault("/predictions", status=409, body={"detail": "Already running a prediction"}),
            grpc.StatusCode.UNAVAILABLE,
            "busy",
        ),
        (Fault("/predictions", status=404, body={"detail": "Not Found"}), grpc.StatusCode.FAILED_PRECONDITION, "API"),
    ],
    ids=["422", "409-busy", "404-wrong-api"],
)
async def test_cog_errors_are_mapped(
    cog: FakeCogVideo, clip: Clip, fault: Fault, code: grpc.StatusCode, message: str
) -> None:
    cog.add_fault(fault)
    if code == grpc.StatusCode.UNAVAILABLE and ATTEMPTS > 1:
        metadata, _ = await clip("selfhosted")
        assert metadata.provider == "selfhosted"
        return
    error = await failure(clip, "selfhosted")
    assert error.code() == code
    assert message in error.details() and "selfhosted" in error.details()


async def test_cog_over_the_time_limit_is_canceled(cog: FakeCogVideo, start: Callable[..., Awaitable[Clip]]) -> None:
    cog.async_mode, cog.never_finish = True, True
    error = await failure(await start(selfhosted_video_timeout_seconds=0.3), "selfhosted")
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert "did not finish within 0.3 s" in error.details() and "SELFHOSTED_VIDEO_TIMEOUT_SECONDS" in error.details()
    assert len(cog.cancels()) == ATTEMPTS
    assert {p.status for p in cog.predictions.values()} == {"canceled"}


@pytest.mark.parametrize("api", ["cog", "comfyui"])
async def test_selfhosted_without_a_url_is_failed_precondition(
    cog: FakeCogVideo, start: Callable[..., Awaitable[Clip]], api: str
) -> None:
    error = await failure(await start(selfhosted_video_url="", selfhosted_video_api=api), "selfhosted")
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "SELFHOSTED_VIDEO_URL" in error.details() and "'selfhosted'" in error.details()
    assert cog.requests == []


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("selfhosted_video_api", "gradio", "Input should be 'cog' or 'comfyui'"),
        ("selfhosted_video_fps", "fast", "Input should be a valid integer"),
        ("selfhosted_video_max_frames", "4", "Input should be greater than or equal to 9"),
    ],
)
def test_selfhosted_bad_settings_are_refused_at_start_up(variable: str, value: str, message: str) -> None:
    with pytest.raises(ValidationError) as error:
        SelfHostedSettings(**{variable: value})
    assert variable in str(error.value) and message in str(error.value)


# --- selfhosted: ComfyUI ----------------------------------------------------------------------------------------


async def test_comfyui_fills_the_shipped_template(comfy: FakeComfyUI, clip: Clip) -> None:
    metadata, data = await clip("selfhosted", duration_ms=2000)
    [submit] = comfy.requests_to("/prompt", "POST")
    body = submit.json()
    assert body["client_id"]
    graph = body["prompt"]
    assert "{{" not in json.dumps(graph)
    # Whole-string placeholders take their value's type: numbers are JSON numbers, text is text.
    assert graph["3"]["inputs"]["text"] == PROMPT
    assert "blurry" in graph["4"]["inputs"]["text"]
    latent = graph["5"]["inputs"]
    assert (latent["width"], latent["height"], latent["length"], latent["batch_size"]) == (864, 480, 49, 1)
    assert_ltx_shape(latent["width"], latent["height"], latent["length"])
    assert graph["6"]["inputs"]["frame_rate"] == 24 and graph["11"]["inputs"]["fps"] == 24
    assert isinstance(graph["9"]["inputs"]["noise_seed"], int)
    # The rest of the template is untouched.
    template = json.loads(WORKFLOW.read_text())
    assert graph["7"] == template["7"] and graph["1"] == template["1"]
    # Core SaveVideo reports the MP4 under `images`; it is fetched through /view.
    [view] = comfy.requests_to("/view", "GET")
    assert view.query == {"filename": "clip_00001_.mp4", "subfolder": "scenecast", "type": "output"}
    assert_mp4(metadata, data, (864, 480), 49 / 24 * 1000)
    assert (metadata.provider, metadata.model) == ("selfhosted", f"selfhosted-comfyui:{COMFY_CHECKPOINTS[0]}")


def write_template(folder: Path, text_input: str) -> Path:
    """A variant template: the prompt inside longer text, VideoHelperSuite output, a thumbnail saved first."""
    template = json.loads(WORKFLOW.read_text())
    template["3"]["inputs"]["text"] = text_input
    template["0"] = {"class_type": "SaveImage", "inputs": {"images": ["10", 0], "filename_prefix": "thumbs/t"}}
    del template["11"], template["12"]
    template["13"] = {
        "class_type": "VHS_VideoCombine",
        "inputs": {
            "images": ["10", 0],
            "frame_rate": "{{fps}}",
            "loop_count": 0,
            "filename_prefix": "LTXVideo",
            "format": "video/h264-mp4",
            "pingpong": False,
            "save_output": True,
        },
    }
    path = folder / "workflow.json"
    path.write_text(json.dumps({"0": template.pop("0"), **template}))
    return path


async def test_comfyui_polls_and_finds_a_video_helper_suite_output(
    comfy: FakeComfyUI, start: Callable[..., Awaitable[Clip]], tmp_path: Path
) -> None:
    clip = await start(selfhosted_comfyui_workflow=str(write_template(tmp_path, "cinematic, {{ prompt }}, 4k")))
    comfy.polls_to_finish, comfy.with_audio = 3, True
    metadata, data = await clip("selfhosted", aspect="9:16", duration_ms=5000)
    [prompt] = comfy.prompts.values()
    assert len(comfy.requests_to(f"/history/{prompt.id}", "GET")) == 4  # three empty answers, then the entry
    assert prompt.graph["3"]["inputs"]["text"] == f"cinematic, {PROMPT}, 4k"
    assert prompt.graph["13"]["inputs"]["frame_rate"] == 24
    [view] = comfy.requests_to("/view", "GET")  # the thumbnail, listed first, is not a video
    assert view.query["filename"].endswith(".mp4") and view.query["subfolder"] == ""
    assert_mp4(metadata, data, (480, 864), 121 / 24 * 1000)


async def test_comfyui_text_is_json_escaped(
    comfy: FakeComfyUI, start: Callable[..., Awaitable[Clip]], tmp_path: Path
) -> None:
    """Quotes, backslashes and newlines in the prompt reach the node as the same text (no string-built JSON)."""
    clip = await start(selfhosted_comfyui_workflow=str(write_template(tmp_path, 'Scene: "{{prompt}}"')))
    tricky = 'He said "go\\now"\n}, {"x": 1 {{seed}}'
    metadata, _ = await clip("selfhosted", aspect="1:1", duration_ms=1000, prompt=tricky)
    [prompt] = comfy.prompts.values()
    assert prompt.graph["3"]["inputs"]["text"] == f'Scene: "{tricky}"'
    assert (metadata.width, metadata.height) == (480, 480)


async def test_comfyui_node_errors_are_failed_precondition(
    comfy: FakeComfyUI, start: Callable[..., Awaitable[Clip]], tmp_path: Path
) -> None:
    template = json.loads(WORKFLOW.read_text())
    template["1"]["inputs"]["ckpt_name"] = "ltx-video-13b.safetensors"
    path = tmp_path / "wrong-model.json"
    path.write_text(json.dumps(template))
    error = await failure(await start(selfhosted_comfyui_workflow=str(path)), "selfhosted")
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    details = error.details()
    assert str(path) in details and "SELFHOSTED_COMFYUI_WORKFLOW" in details
    assert "node 1 (CheckpointLoaderSimple): Value not in list" in details and "ltx-video-13b" in details
    assert comfy.prompts == {}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "needs SELFHOSTED_COMFYUI_WORKFLOW"),
        ("{not json", "cannot read the ComfyUI workflow"),
        ('{"nodes": [], "links": []}', "UI-format workflow"),
        ('{"1": {"class_type": "CLIPTextEncode", "inputs": {"text": "{{promt}}"}}}', "unknown placeholders ['promt']"),
        ('{"1": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat"}}}', "no {{prompt}} placeholder"),
    ],
)
async def test_comfyui_bad_templates_are_failed_precondition(
    comfy: FakeComfyUI, start: Callable[..., Awaitable[Clip]], tmp_path: Path, content: str | None, message: str
) -> None:
    workflow = ""
    if content is not None:
        (tmp_path / "workflow.json").write_text(content)
        workflow = str(tmp_path / "workflow.json")
    error = await failure(await start(selfhosted_comfyui_workflow=workflow), "selfhosted")
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert message in error.details()
    assert comfy.requests == []


async def test_comfyui_execution_error_is_unavailable(comfy: FakeComfyUI, clip: Clip) -> None:
    comfy.fail_with = "CUDA out of memory. Tried to allocate 4.00 GiB"
    error = await failure(clip, "selfhosted")
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    details = error.details()
    assert "selfhosted (comfyui)" in details and "node 9 (SamplerCustom)" in details and "CUDA out of memory" in details
    assert len(comfy.prompts) == ATTEMPTS


async def test_comfyui_throttled_history_is_waited_out(comfy: FakeComfyUI, clip: Clip) -> None:
    comfy.add_fault(Fault("/history/", status=429, body={"error": "busy"}, headers={"Retry-After": "0"}))
    comfy.add_fault(Fault("/history/", status=503, body="proxy restarting"))
    metadata, _ = await clip("selfhosted")
    assert metadata.provider == "selfhosted"
    assert (len(comfy.prompts), len(comfy.requests_to("/history/"))) == (1, 3)


async def test_comfyui_corrupt_video_is_reported_not_made_again(comfy: FakeComfyUI, clip: Clip) -> None:
    comfy.corrupt_output = True
    error = await failure(clip, "selfhosted")
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    [prompt] = comfy.prompts.values()
    assert f"selfhosted (comfyui): job {prompt.id} finished with unusable output" in error.details()
    assert "not an MP4 or WebM video" in error.details()
    assert len(comfy.requests_to("/view")) == 1


async def test_comfyui_prompt_whose_answer_is_lost_is_found_not_queued_again(comfy: FakeComfyUI, clip: Clip) -> None:
    """The queue shows the prompt (by its client_id) arrived: that prompt is waited for and used."""
    comfy.lose_answers = 1
    metadata, _ = await clip("selfhosted")
    assert metadata.provider == "selfhosted"
    [submit] = comfy.requests_to("/prompt", "POST")
    [prompt] = comfy.prompts.values()
    assert prompt.client_id == submit.json()["client_id"]
    assert len(comfy.requests_to("/queue", "GET")) == 1 and len(comfy.requests_to("/view")) == 1


async def test_comfyui_failed_download_is_downloaded_again(comfy: FakeComfyUI, clip: Clip) -> None:
    comfy.failing_views = 2
    metadata, _ = await clip("selfhosted")
    assert metadata.provider == "selfhosted"
    assert (len(comfy.prompts), len(comfy.requests_to("/view"))) == (1, 3)


async def test_comfyui_abandoned_call_drops_the_prompt(comfy: FakeComfyUI, clip: Clip) -> None:
    comfy.never_finish = True
    error = await failure(clip, "selfhosted", timeout=0.5)
    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    await eventually(lambda: comfy.interrupts)
    [prompt] = comfy.prompts.values()
    assert comfy.deleted == [prompt.id]
    assert comfy.interrupts == [{"prompt_id": prompt.id}]


@pytest.mark.parametrize("provider", ["wan", "selfhosted"])
async def test_a_scene_without_prompt_or_title_is_invalid_argument(
    replicate: FakeReplicateVideo, cog: FakeCogVideo, clip: Clip, provider: str
) -> None:
    error = await failure(clip, provider, prompt="", title="")
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "visual_prompt and spec.scene.title are both empty" in error.details()
    assert replicate.requests == cog.requests == []


async def test_video_providers_are_listed_with_their_settings(
    replicate: FakeReplicateVideo, values: dict[str, Any], work_root: Path
) -> None:
    server = build_video(
        VideoSettings(listen_address="127.0.0.1:0", video_tmp_dir=str(work_root)),
        [
            ReplicateSettings(**values),
            SelfHostedSettings(selfhosted_video_url="", selfhosted_video_usd_per_second=0.002),
        ],
    )
    async with contextlib.asynccontextmanager(_serve)(server) as channel:
        stub = video_service_pb2_grpc.VideoServiceStub(channel)
        response = await stub.ListVideoProviders(video_service_pb2.ListVideoProvidersRequest())
    by_name = {p.name: p for p in response.providers.providers}
    assert {"kenburns", "wan", "selfhosted"} <= set(by_name)
    wan, selfhosted = by_name["wan"], by_name["selfhosted"]
    assert (wan.offline, list(wan.required_env), wan.configured) == (False, ["REPLICATE_API_TOKEN"], True)
    assert [price.model for price in wan.prices] == [WAN_T2V, WAN_I2V]
    assert (selfhosted.offline, list(selfhosted.required_env), selfhosted.configured) == (
        False,
        ["SELFHOSTED_VIDEO_URL"],
        False,
    )
    assert [(price.unit, price.usd_per_unit) for price in selfhosted.prices] == [("output second", 0.002)]
