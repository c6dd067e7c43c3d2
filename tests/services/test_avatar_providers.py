"""The synthesia and heygen avatar providers through the real video service, against FakeSynthesia and FakeHeyGen."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from pydantic import ValidationError
from scenecast.v1 import types_pb2, video_service_pb2, video_service_pb2_grpc

from services.common import jobs
from services.common.media import probe
from services.video.avatars import heygen, synthesia
from services.video.avatars.heygen import HeyGenSettings
from services.video.avatars.synthesia import SynthesiaSettings
from services.video.config import VideoSettings
from services.video.server import build as build_video
from tests import prices
from tests.fakes.avatar_servers import HEYGEN_KEY, SYNTHESIA_KEY, FakeHeyGen, FakeSynthesia, spoken_ms
from tests.fakes.base import Fault
from tests.services.conftest import _serve
from tests.services.outputs import ASPECTS
from tests.services.test_media_services import collect

# The service in conftest is built from default settings, so this is the attempt count it uses.
ATTEMPTS = VideoSettings(listen_address="127.0.0.1:0").provider_attempts
SCENES = (
    types_pb2.Scene(id="intro", narration="Check the ladder.", title="Ladders"),
    types_pb2.Scene(id="climb", narration="Then climb, one rung at a time."),
)
NARRATIONS = [scene.narration for scene in SCENES]
KEY_ENVS = {"synthesia": "SYNTHESIA_API_KEY", "heygen": "HEYGEN_API_KEY"}
HEYGEN_AVATAR = "Angela-inblackskirt-20220820"
HEYGEN_VOICE = "1bd001e7e50f421d891986aad5158bc8"

Fake = FakeSynthesia | FakeHeyGen


@pytest.fixture(scope="module")
def synthesia_server() -> Iterator[FakeSynthesia]:
    with FakeSynthesia() as fake:
        yield fake


@pytest.fixture(scope="module")
def heygen_server() -> Iterator[FakeHeyGen]:
    with FakeHeyGen() as fake:
        yield fake


pytestmark = pytest.mark.usefixtures("quick_retries")


@pytest.fixture
def synthesia_fake(synthesia_server: FakeSynthesia) -> FakeSynthesia:
    synthesia_server.reset()
    return synthesia_server


@pytest.fixture
def heygen_fake(heygen_server: FakeHeyGen) -> FakeHeyGen:
    heygen_server.reset()
    return heygen_server


@pytest.fixture
def heygen_v2(heygen_fake: FakeHeyGen) -> FakeHeyGen:
    """The fake on HeyGen's legacy v2 API (a service for it is started with heygen_api_version="v2")."""
    heygen_fake.version = "v2"
    return heygen_fake


@pytest.fixture(params=["synthesia", "heygen"])
def vendor(request: pytest.FixtureRequest) -> tuple[str, Fake]:
    """Each vendor in turn, as (provider name, its fake)."""
    return request.param, request.getfixturevalue(f"{request.param}_fake")


Start = Callable[..., Awaitable[video_service_pb2_grpc.VideoServiceStub]]


@pytest.fixture
async def start(synthesia_fake: FakeSynthesia, heygen_fake: FakeHeyGen, work_root: Path) -> AsyncIterator[Start]:
    """Starts the video service with both vendors' settings pointed at their fakes (`changes` override any of them),
    as settings objects: nothing is read from the environment."""
    async with contextlib.AsyncExitStack() as stack:

        async def run(avatar_provider: str = "", **changes: Any) -> video_service_pb2_grpc.VideoServiceStub:
            given = {
                "synthesia_api_key": SYNTHESIA_KEY,
                "synthesia_base_url": synthesia_fake.base_url,
                "synthesia_poll_seconds": 0.02,
                "heygen_api_key": HEYGEN_KEY,
                "heygen_base_url": heygen_fake.base_url,
                "heygen_poll_seconds": 0.02,
                "heygen_avatar_id": HEYGEN_AVATAR,
                "heygen_voice_id": HEYGEN_VOICE,
                "allow_private_output_urls": True,
                **changes,
            }
            settings = VideoSettings(
                listen_address="127.0.0.1:0", video_tmp_dir=str(work_root), avatar_provider=avatar_provider
            )
            server = build_video(settings, [SynthesiaSettings(**given), HeyGenSettings(**given)])
            channel = await stack.enter_async_context(contextlib.asynccontextmanager(_serve)(server))
            return video_service_pb2_grpc.VideoServiceStub(channel)

        yield run


@pytest.fixture
async def stub(start: Start) -> video_service_pb2_grpc.VideoServiceStub:
    return await start()


def avatar_request(
    provider: str,
    aspect: str = "16:9",
    height: int = 360,
    scenes: tuple[types_pb2.Scene, ...] = SCENES,
    avatar: types_pb2.AvatarSettings | None = None,
) -> video_service_pb2.GenerateAvatarVideoRequest:
    return video_service_pb2.GenerateAvatarVideoRequest(
        render_id="r-avatar",
        scenes=scenes,
        output=types_pb2.OutputSettings(aspect_ratio=ASPECTS[aspect], height=height, quality=types_pb2.QUALITY_DRAFT),
        provider=provider,
        avatar=avatar,
    )


async def failure(
    stub: video_service_pb2_grpc.VideoServiceStub,
    request: video_service_pb2.GenerateAvatarVideoRequest,
    **kwargs: float,
) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await collect(stub.GenerateAvatarVideo(request, **kwargs))
    return error.value


def assert_video(
    metadata: types_pb2.AssetMetadata,
    data: bytes,
    path: Path,
    size: tuple[int, int],
    provider: str,
    model: str,
    spoken: list[str] = NARRATIONS,
) -> None:
    """The metadata describes the file exactly, and the voice lasts as long as the fake's tone for `spoken`."""
    path.write_bytes(data)
    info = probe(path, "avatar video")
    assert info.has_video and info.has_audio
    assert (metadata.mime_type, metadata.size_bytes) == ("video/mp4", len(data))
    assert (metadata.width, metadata.height) == (info.width, info.height) == size
    assert metadata.duration_ms == info.duration_ms
    assert abs(metadata.duration_ms - spoken_ms(spoken)) <= 100
    assert (metadata.provider, metadata.model) == (provider, model)


@pytest.mark.parametrize(
    ("aspect", "env", "settings", "expected", "size"),
    [
        ("1:1", {}, None, ("anna_costume1_cameraA", "off_white", None, False), (320, 320)),
        (
            "16:9",
            {"SYNTHESIA_AVATAR": "env_avatar", "SYNTHESIA_BACKGROUND": "white_studio", "SYNTHESIA_VOICE": "v-env"},
            None,
            ("env_avatar", "white_studio", "v-env", False),
            (320, 180),
        ),
        (
            "9:16",
            {"SYNTHESIA_AVATAR": "env_avatar", "SYNTHESIA_TEST": "true"},
            types_pb2.AvatarSettings(avatar="mia_casual", voice="v-request", background="green_screen"),
            ("mia_casual", "green_screen", "v-request", True),
            (180, 320),
        ),
    ],
)
async def test_synthesia_video_has_one_scene_per_narration(
    start: Start,
    synthesia_fake: FakeSynthesia,
    work_root: Path,
    tmp_path: Path,
    aspect: str,
    env: dict[str, str],
    settings: types_pb2.AvatarSettings | None,
    expected: tuple[str, str, str | None, bool],
    size: tuple[int, int],
) -> None:
    stub = await start(**{variable.lower(): value for variable, value in env.items()})
    metadata, data = await collect(stub.GenerateAvatarVideo(avatar_request("synthesia", aspect, avatar=settings)))
    avatar, background, voice, test = expected
    assert_video(metadata, data, tmp_path / "avatar.mp4", size, "synthesia", avatar)
    assert metadata.estimated_cost_usd == pytest.approx(
        prices.SYNTHESIA_ASSUMED_PER_MINUTE * spoken_ms(NARRATIONS) / 60_000
    )
    (create,) = synthesia_fake.creates()
    assert create.headers["Authorization"] == SYNTHESIA_KEY
    body = create.json()
    assert (body["aspectRatio"], body["visibility"], body["test"], body["title"]) == (
        aspect,
        "private",
        test,
        "Ladders",
    )
    assert [scene["scriptText"] for scene in body["input"]] == NARRATIONS
    assert {(scene["avatar"], scene["background"]) for scene in body["input"]} == {(avatar, background)}
    assert {scene.get("avatarSettings", {}).get("voice") for scene in body["input"]} == {voice}
    # The pre-signed download gets no key, and the call's folder is gone.
    (download,) = synthesia_fake.downloads()
    assert "Authorization" not in download.headers
    assert list(work_root.iterdir()) == []


@pytest.mark.parametrize(
    ("aspect", "height", "env", "settings", "expected"),
    [
        # 2160x2160 is over HeyGen's sizes: asked for at 1920 on the long side.
        ("1:1", 2160, {}, None, (HEYGEN_AVATAR, HEYGEN_VOICE, {"type": "color", "value": "#FAFAFA"}, 1920, 1920)),
        (
            "16:9",
            360,
            {"HEYGEN_TEST": "1", "HEYGEN_BACKGROUND": "#000000"},
            types_pb2.AvatarSettings(avatar="Tyler-incasual", voice="voice-2", background="#112233"),
            ("Tyler-incasual", "voice-2", {"type": "color", "value": "#112233"}, 640, 360),
        ),
        (
            "9:16",
            1280,
            {"HEYGEN_BACKGROUND": "https://example.com/office.png"},
            None,
            (HEYGEN_AVATAR, HEYGEN_VOICE, {"type": "image", "url": "https://example.com/office.png"}, 720, 1280),
        ),
    ],
)
async def test_heygen_v2_video_has_one_input_per_narration(
    start: Start,
    heygen_v2: FakeHeyGen,
    tmp_path: Path,
    aspect: str,
    height: int,
    env: dict[str, str],
    settings: types_pb2.AvatarSettings | None,
    expected: tuple[str, str, dict[str, str], int, int],
) -> None:
    stub = await start(heygen_api_version="v2", **{variable.lower(): value for variable, value in env.items()})
    metadata, data = await collect(
        stub.GenerateAvatarVideo(avatar_request("heygen", aspect, height=height, avatar=settings))
    )
    avatar, voice, background, width, asked_height = expected
    fake_size = (320, 320) if aspect == "1:1" else (320, 180) if aspect == "16:9" else (180, 320)
    assert_video(metadata, data, tmp_path / "avatar.mp4", fake_size, "heygen", avatar)
    assert metadata.estimated_cost_usd == pytest.approx(prices.heygen_v2(spoken_ms(NARRATIONS) / 1000))
    (create,) = heygen_v2.creates()
    assert create.headers["X-Api-Key"] == HEYGEN_KEY
    body = create.json()
    assert body["dimension"] == {"width": width, "height": asked_height}
    assert body["test"] is ("HEYGEN_TEST" in env)
    assert [item["voice"] for item in body["video_inputs"]] == [
        {"type": "text", "voice_id": voice, "input_text": text} for text in NARRATIONS
    ]
    assert {tuple(item["character"].items()) for item in body["video_inputs"]} == {
        (("type", "avatar"), ("avatar_id", avatar), ("avatar_style", "normal"))
    }
    assert all(item["background"] == background for item in body["video_inputs"])
    assert heygen_v2.status_checks()[0].query == {"video_id": next(iter(heygen_v2.videos))}
    (download,) = heygen_v2.downloads()
    assert "X-Api-Key" not in download.headers


@pytest.mark.parametrize(
    ("aspect", "height", "env", "settings", "expected"),
    [
        ("16:9", 360, {}, None, (HEYGEN_AVATAR, HEYGEN_VOICE, {"type": "color", "value": "#FAFAFA"}, "720p")),
        (
            "9:16",
            1920,
            {"HEYGEN_BACKGROUND": "https://example.com/office.mp4"},
            types_pb2.AvatarSettings(avatar="Tyler-incasual", voice="voice-2"),
            ("Tyler-incasual", "voice-2", {"type": "video", "url": "https://example.com/office.mp4"}, "1080p"),
        ),
    ],
)
async def test_heygen_v3_video_speaks_the_script_of_every_scene(
    start: Start,
    heygen_fake: FakeHeyGen,
    tmp_path: Path,
    aspect: str,
    height: int,
    env: dict[str, str],
    settings: types_pb2.AvatarSettings | None,
    expected: tuple[str, str, dict[str, str], str],
) -> None:
    stub = await start(**{variable.lower(): value for variable, value in env.items()})
    metadata, data = await collect(
        stub.GenerateAvatarVideo(avatar_request("heygen", aspect, height=height, avatar=settings))
    )
    avatar, voice, background, resolution = expected
    (create,) = heygen_fake.creates()
    body = create.json()
    assert body == {
        "type": "avatar",
        "avatar_id": avatar,
        "script": "\n\n".join(NARRATIONS),
        "voice_id": voice,
        "title": "Ladders",
        "resolution": resolution,
        "aspect_ratio": aspect,
        "background": background,
        "callback_id": "r-avatar",
    }
    assert create.headers["X-Api-Key"] == HEYGEN_KEY and create.headers["Idempotency-Key"].startswith("scenecast-")
    fake_size = (320, 180) if aspect == "16:9" else (180, 320)
    assert_video(metadata, data, tmp_path / "avatar.mp4", fake_size, "heygen", avatar, [body["script"]])
    assert metadata.estimated_cost_usd == pytest.approx(prices.heygen_v3(spoken_ms([body["script"]]) / 1000))
    (video_id,) = heygen_fake.videos
    assert {check.path for check in heygen_fake.status_checks()} == {f"/v3/videos/{video_id}"}
    (download,) = heygen_fake.downloads()
    assert "X-Api-Key" not in download.headers


@pytest.mark.parametrize(
    ("env", "scenes", "code", "message"),
    [
        ({"HEYGEN_TEST": "true"}, SCENES, "FAILED_PRECONDITION", "unset HEYGEN_TEST, or set HEYGEN_API_VERSION=v2"),
        (
            {},
            tuple(types_pb2.Scene(id=f"s{index}", narration="word " * 700) for index in range(2)),
            "INVALID_ARGUMENT",
            "the narration is 7000 characters; a HeyGen v3 video speaks at most 5000",
        ),
    ],
)
async def test_heygen_v3_refuses_what_it_cannot_do_before_any_order(
    start: Start,
    heygen_fake: FakeHeyGen,
    env: dict[str, str],
    scenes: tuple[types_pb2.Scene, ...],
    code: str,
    message: str,
) -> None:
    stub = await start(**{variable.lower(): value for variable, value in env.items()})
    error = await failure(stub, avatar_request("heygen", scenes=scenes))
    assert error.code().name == code and message in error.details()
    assert heygen_fake.requests == []


def test_an_unknown_heygen_api_version_is_refused_at_start_up() -> None:
    with pytest.raises(ValidationError) as error:
        HeyGenSettings(heygen_api_version="v4")
    assert "heygen_api_version" in str(error.value) and "Input should be 'v3' or 'v2'" in str(error.value)


async def test_slow_video_is_polled_through_a_failed_status_check(
    stub: video_service_pb2_grpc.VideoServiceStub, vendor: tuple[str, Fake]
) -> None:
    """A 503 on a status check is not the end of the video: polling goes on, and it is ordered only once."""
    name, fake = vendor
    fake.polls_to_finish = 4
    fake.add_fault(Fault(fake.status_path, status=503, body={"error": "Service Unavailable"}, method="GET"))
    metadata, _ = await collect(stub.GenerateAvatarVideo(avatar_request(name)))
    assert metadata.provider == name
    assert (len(fake.creates()), len(fake.status_checks())) == (1, 5)
    (video,) = fake.videos.values()
    assert video.history == [fake.in_progress] + [fake.rendering] * 3 + [video.status]
    assert video.status in ("complete", "completed")


@pytest.mark.parametrize(
    ("name", "knobs", "height", "code", "message", "orders"),
    [
        ("synthesia", {"fail_with": "Avatar rendering failed"}, 360, "UNAVAILABLE", "Avatar rendering failed", 0),
        (
            "synthesia",
            {"reject_with": "The script breaks the acceptable use policy"},
            360,
            "INVALID_ARGUMENT",
            "rejected video",
            1,
        ),
        ("heygen", {"fail_with": "Voice synthesis failed"}, 360, "UNAVAILABLE", "Voice synthesis failed", 0),
        ("heygen_v2", {"fail_with": "Voice synthesis failed"}, 360, "UNAVAILABLE", "Voice synthesis failed", 0),
        ("heygen_v2", {"plan_max_side": 1280}, 1080, "FAILED_PRECONDITION", "higher plan", 1),
    ],
)
async def test_failed_video_reports_the_vendors_reason(
    start: Start,
    request: pytest.FixtureRequest,
    name: str,
    knobs: dict[str, object],
    height: int,
    code: str,
    message: str,
    orders: int,
) -> None:
    """A render the vendor reports failed is ordered again (the bounded attempts): it made no video to pay for, and
    a new one usually works. A refusal or plan limit is reported at once."""
    fake: Fake = request.getfixturevalue(name if name == "heygen_v2" else f"{name}_fake")
    for knob, value in knobs.items():
        setattr(fake, knob, value)
    stub = await start(heygen_api_version="v2" if name == "heygen_v2" else "v3")
    error = await failure(stub, avatar_request(name.removesuffix("_v2"), height=height))
    assert error.code().name == code
    assert message in error.details()
    assert len(fake.creates()) == (orders or ATTEMPTS)


async def test_throttled_order_is_retried_after_retry_after(
    stub: video_service_pb2_grpc.VideoServiceStub, vendor: tuple[str, Fake]
) -> None:
    name, fake = vendor
    fake.throttle_creates, fake.retry_after = 1, "1"
    started = time.monotonic()
    metadata, _ = await collect(stub.GenerateAvatarVideo(avatar_request(name)))
    assert time.monotonic() - started >= 1.0
    assert metadata.provider == name
    assert len(fake.creates()) == 2


@pytest.mark.parametrize(
    ("knob", "message"), [("corrupt_video", "not a readable image, audio or video"), ("silent_video", "no audio track")]
)
async def test_unusable_video_names_the_video_and_is_not_reordered(
    stub: video_service_pb2_grpc.VideoServiceStub, vendor: tuple[str, Fake], knob: str, message: str
) -> None:
    """The vendor made (and billed) the video: a bad file is reported naming it, never ordered again."""
    name, fake = vendor
    setattr(fake, knob, True)
    error = await failure(stub, avatar_request(name))
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    (video_id,) = fake.videos
    assert f"job {video_id} finished with unusable output" in error.details() and message in error.details()
    assert len(fake.creates()) == len(fake.downloads()) == 1


async def test_a_failed_download_of_a_finished_video_downloads_again(
    stub: video_service_pb2_grpc.VideoServiceStub, vendor: tuple[str, Fake]
) -> None:
    name, fake = vendor
    fake.failing_downloads = 2
    metadata, _ = await collect(stub.GenerateAvatarVideo(avatar_request(name)))
    assert metadata.provider == name
    assert (len(fake.creates()), len(fake.downloads())) == (1, 3)


async def test_a_download_that_keeps_failing_is_reported_not_reordered(
    stub: video_service_pb2_grpc.VideoServiceStub, vendor: tuple[str, Fake]
) -> None:
    name, fake = vendor
    fake.failing_downloads = 10**6
    error = await failure(stub, avatar_request(name))
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    (video_id,) = fake.videos
    assert f"job {video_id} finished, but its output could not be downloaded" in error.details()
    assert (len(fake.creates()), len(fake.downloads())) == (1, jobs.DOWNLOAD_ATTEMPTS)


@pytest.fixture
def impatient(monkeypatch: pytest.MonkeyPatch) -> None:
    """The vendors' answers are read for 0.3 s, so that a late answer costs a second, not 30."""
    for module in (synthesia, heygen):
        monkeypatch.setattr(module, "REQUEST_TIMEOUT", httpx.Timeout(0.3, connect=5.0))


@pytest.mark.usefixtures("impatient")
async def test_a_synthesia_order_answered_late_is_found_not_reordered(
    stub: video_service_pb2_grpc.VideoServiceStub, synthesia_fake: FakeSynthesia
) -> None:
    """The video list shows the order (by its callbackId) arrived: that video is used."""
    synthesia_fake.answer_delay = 1.0
    metadata, _ = await collect(stub.GenerateAvatarVideo(avatar_request("synthesia")))
    assert metadata.provider == "synthesia"
    (create,) = synthesia_fake.creates()
    assert create.json()["callbackId"].startswith("scenecast:r-avatar:")
    assert len(synthesia_fake.videos) == 1 and synthesia_fake.requests_to("/v2/videos", "GET")[0].path == "/v2/videos"


@pytest.mark.usefixtures("impatient")
async def test_a_heygen_v3_order_answered_late_is_sent_again_under_its_key(
    stub: video_service_pb2_grpc.VideoServiceStub, heygen_fake: FakeHeyGen, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HeyGen answers a re-sent key with 409 while the first is being taken, then replays its answer: one video."""
    monkeypatch.setattr(jobs, "IDEMPOTENT_RESEND_SECONDS", 0.5)
    heygen_fake.answer_delay = 1.0
    metadata, _ = await collect(stub.GenerateAvatarVideo(avatar_request("heygen")))
    assert metadata.provider == "heygen"
    creates = heygen_fake.creates()
    assert len(creates) >= 2 and len({create.headers["Idempotency-Key"] for create in creates}) == 1
    assert len(heygen_fake.videos) == 1


@pytest.mark.usefixtures("impatient")
async def test_a_heygen_v2_order_answered_late_is_reported_not_reordered(start: Start, heygen_v2: FakeHeyGen) -> None:
    """v2 has no idempotency key and no list to look in: the order is reported, not risked twice."""
    heygen_v2.answer_delay = 1.0
    error = await failure(await start(heygen_api_version="v2"), avatar_request("heygen"))
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert "HeyGen (v2) may have received the order" in error.details()
    assert "not ordered again, so it is not paid twice" in error.details()
    assert len(heygen_v2.creates()) == 1


@pytest.mark.parametrize("key", ["", "not-the-key"])
async def test_missing_or_wrong_key_is_failed_precondition(start: Start, vendor: tuple[str, Fake], key: str) -> None:
    name, fake = vendor
    error = await failure(await start(**{KEY_ENVS[name].lower(): key}), avatar_request(name))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert KEY_ENVS[name] in error.details()
    assert len(fake.creates()) == (1 if key else 0)


@pytest.mark.parametrize("variable", ["HEYGEN_AVATAR_ID", "HEYGEN_VOICE_ID"])
async def test_heygen_without_avatar_or_voice_is_failed_precondition(
    start: Start, heygen_fake: FakeHeyGen, variable: str
) -> None:
    error = await failure(await start(**{variable.lower(): ""}), avatar_request("heygen"))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert variable in error.details()
    assert heygen_fake.creates() == []


async def test_deadline_shorter_than_the_render_stops_polling(
    stub: video_service_pb2_grpc.VideoServiceStub, vendor: tuple[str, Fake]
) -> None:
    """The vendor is given up on just before the call's deadline, with a status that says so, and polled no more."""
    name, fake = vendor
    fake.polls_to_finish = 10**6
    error = await failure(stub, avatar_request(name), timeout=1.5)
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert "did not finish before the render's deadline" in error.details()
    checks = len(fake.status_checks())
    assert checks >= 2 and len(fake.creates()) == 1
    await asyncio.sleep(0.5)
    assert len(fake.status_checks()) == checks


async def test_cancelled_call_stops_polling(
    stub: video_service_pb2_grpc.VideoServiceStub, synthesia_fake: FakeSynthesia, work_root: Path
) -> None:
    synthesia_fake.polls_to_finish = 10**6
    call = stub.GenerateAvatarVideo(avatar_request("synthesia"))
    receiving = asyncio.create_task(collect(call))
    async with asyncio.timeout(5):
        while len(synthesia_fake.status_checks()) < 2:
            await asyncio.sleep(0.01)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await receiving
    await asyncio.sleep(0.2)  # the server learns of the cancellation
    checks = len(synthesia_fake.status_checks())
    await asyncio.sleep(0.5)
    assert len(synthesia_fake.status_checks()) == checks
    assert list(work_root.iterdir()) == []


@pytest.mark.parametrize(
    ("provider", "change", "message"),
    [
        ("", {}, "set AVATAR_PROVIDER on the video service or name one of: heygen, synthesia"),
        ("d-id", {}, "provider: unknown provider 'd-id'; valid: heygen, synthesia"),
        ("synthesia", {"scenes": ()}, "scenes is empty"),
        ("synthesia", {"scenes": (SCENES[0], types_pb2.Scene(id="b", narration=" "))}, "scenes[1].narration is empty"),
        ("synthesia", {"scenes": SCENES[:1] * 26}, "scenes has 26 entries; synthesia takes at most 25"),
        ("heygen", {"scenes": SCENES[:1] * 51}, "scenes has 51 entries; heygen takes at most 50"),
        ("synthesia", {"height": 100}, "output.height"),
    ],
)
async def test_bad_request_is_invalid_argument_before_any_order(
    stub: video_service_pb2_grpc.VideoServiceStub,
    synthesia_fake: FakeSynthesia,
    heygen_fake: FakeHeyGen,
    provider: str,
    change: dict[str, object],
    message: str,
) -> None:
    error = await failure(stub, avatar_request(provider, **change))  # type: ignore[arg-type]
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in error.details()
    assert synthesia_fake.requests == heygen_fake.requests == []


async def test_avatar_providers_are_listed_and_avatar_provider_is_the_default(
    start: Start, heygen_fake: FakeHeyGen
) -> None:
    # AVATAR_PROVIDER is a setting of the service, read once at start-up.
    await _listed_and_default(await start(avatar_provider="heygen", synthesia_api_key=""), heygen_fake)


async def _listed_and_default(stub: video_service_pb2_grpc.VideoServiceStub, heygen_fake: FakeHeyGen) -> None:
    response = await stub.ListVideoProviders(video_service_pb2.ListVideoProvidersRequest())
    avatars = response.avatar_providers
    assert (avatars.kind, avatars.default_provider) == (types_pb2.MEDIA_KIND_AVATAR, "heygen")
    listed = {p.name: (p.offline, tuple(p.required_env), p.configured) for p in avatars.providers}
    assert listed == {
        "heygen": (False, ("HEYGEN_API_KEY",), True),
        "synthesia": (False, ("SYNTHESIA_API_KEY",), False),
    }
    assert all(p.prices for p in avatars.providers)
    assert "heygen" not in {p.name for p in response.providers.providers}
    # A request that names no vendor goes to AVATAR_PROVIDER.
    metadata, _ = await collect(stub.GenerateAvatarVideo(avatar_request("")))
    assert metadata.provider == "heygen" and len(heygen_fake.creates()) == 1
