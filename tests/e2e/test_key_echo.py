"""Vendors (or proxies) that echo the key in an error body: the key reaches neither the caller nor any log line.

The media services run as their own processes, every cloud provider pointed at a fake that answers each request
with 400, 401, 403 or 500 and a body repeating the credentials it was sent (raw, without their scheme and, for Basic
auth, decoded). The raw status message and the raw service logs are searched for every form of every key.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from scenecast.v1 import (
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

from scenecast_cli.stack import free_port, wait_until_serving
from tests.fakes.avatar_servers import FakeHeyGen, FakeSynthesia
from tests.fakes.base import FakeServer
from tests.fakes.kokoro_server import FakeKokoroServer
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.runpod_server import ENDPOINT_ID, FakeRunPod
from tests.fakes.video_servers import FakeCogVideo, FakeComfyUI, FakeReplicateVideo

KEYS = {
    "OPENAI_API_KEY": "sk-proj-Echo1aB2cD3eF4gH5iJ6",
    "REPLICATE_API_TOKEN": "r8_Echo7kL8mN9oP0qR1sT2",
    "SYNTHESIA_API_KEY": "synth-Echo3uV4wX5yZ6",
    "HEYGEN_API_KEY": "heygen-Echo7aB8cD9eF0",
    "RUNPOD_API_KEY": "rpa_Echo1gH2iJ3kL4",
    "KOKORO_SERVER_API_KEY": "kokoro-proxy-Echo5mN6oP7",
}
SELFHOSTED_USER, SELFHOSTED_PASSWORD = "gpu", "Echo-s3lfh0sted-pw"
STATUSES = (400, 401, 403, 500)
OUTPUT = types_pb2.OutputSettings(
    aspect_ratio=types_pb2.ASPECT_RATIO_16_9, height=240, fps=15, quality=types_pb2.QUALITY_DRAFT
)
SCENE = types_pb2.Scene(id="s1", narration="Mind the gap.", visual_prompt="A platform edge.", title="Gaps")
CALL_SECONDS = 60.0


def _forms() -> list[str]:
    """Every form in which a key could come back: as sent, and base64 (Basic auth's user:password, or the key)."""
    secrets = [*KEYS.values(), SELFHOSTED_PASSWORD, f"{SELFHOSTED_USER}:{SELFHOSTED_PASSWORD}"]
    return secrets + [base64.b64encode(secret.encode()).decode() for secret in secrets]


@dataclass
class Fakes:
    openai: FakeOpenAI
    replicate: FakeReplicateVideo
    synthesia: FakeSynthesia
    heygen: FakeHeyGen
    cog: FakeCogVideo
    comfy: FakeComfyUI
    runpod: FakeRunPod
    kokoro: FakeKokoroServer

    def all(self) -> tuple[FakeServer, ...]:
        return (
            self.openai,
            self.replicate,
            self.synthesia,
            self.heygen,
            self.cog,
            self.comfy,
            self.runpod,
            self.kokoro,
        )


@pytest.fixture(scope="module")
def fakes() -> Iterator[Fakes]:
    with (
        FakeOpenAI() as openai,
        FakeReplicateVideo() as replicate,
        FakeSynthesia() as synthesia,
        FakeHeyGen() as heygen,
        FakeCogVideo() as cog,
        FakeComfyUI() as comfy,
        FakeRunPod() as runpod,
        FakeKokoroServer() as kokoro,
    ):
        yield Fakes(openai, replicate, synthesia, heygen, cog, comfy, runpod, kokoro)  # type: ignore[arg-type]


def _with_user(base_url: str) -> str:
    return base_url.replace("http://", f"http://{SELFHOSTED_USER}:{SELFHOSTED_PASSWORD}@")


@pytest.fixture(scope="module")
def services(fakes: Fakes, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """image, audio, video (self-hosted Cog), video-comfyui, assembler and the gateway as processes; their logs go to
    files."""
    logs = tmp_path_factory.mktemp("echo-logs")
    workflow = Path(__file__).parents[2] / "deploy" / "comfyui" / "ltx-video-workflow.json"
    env = {
        **os.environ,
        **KEYS,
        "OPENAI_BASE_URL": f"{fakes.openai.base_url}/v1",
        "REPLICATE_BASE_URL": fakes.replicate.base_url,
        "REPLICATE_POLL_INTERVAL": "0.02",
        "SYNTHESIA_BASE_URL": fakes.synthesia.base_url,
        "HEYGEN_BASE_URL": fakes.heygen.base_url,
        "SELFHOSTED_VIDEO_URL": _with_user(fakes.cog.base_url),
        "RUNPOD_BASE_URL": fakes.runpod.api_url,
        "RUNPOD_ENDPOINT_ID": ENDPOINT_ID,
        "KOKORO_SERVER_URL": fakes.kokoro.base_url,
        "PROVIDER_ATTEMPTS": "1",
        "ASSET_CACHE_DIR": "off",
        "IMAGE_PROVIDER": "slides",
        "TTS_PROVIDER": "piper",
        "VIDEO_PROVIDER": "",
        "AVATAR_PROVIDER": "",
        "SPEND_LEDGER_PATH": "off",
        "RENDER_OUTPUT_DIR": str(tmp_path_factory.mktemp("echo-results")),
        # The most talkative level: whatever a library logs at DEBUG must not carry a key either.
        "LOG_LEVEL": "DEBUG",
    }
    comfy_env = {
        "SELFHOSTED_VIDEO_URL": _with_user(fakes.comfy.base_url),
        "SELFHOSTED_VIDEO_API": "comfyui",
        "SELFHOSTED_COMFYUI_WORKFLOW": str(workflow),
    }
    media = {
        "image": ("services.image", {}),
        "audio": ("services.audio", {}),
        "video": ("services.video", {}),
        "video-comfyui": ("services.video", comfy_env),
        "assembler": ("services.assembler", {}),
        # The gateway is ready only while every service it calls is, the script service among them.
        "script": ("services.script", {}),
    }
    addresses = {name: f"127.0.0.1:{free_port()}" for name in (*media, "gateway")}
    gateway_env = {
        f"{name.upper()}_SERVICE_ADDRESS": addresses[name]
        for name in ("image", "audio", "video", "assembler", "script")
    }
    processes = []
    try:
        for name, (module, extra) in {**media, "gateway": ("gateway", gateway_env)}.items():
            with (logs / f"{name}.log").open("wb") as log:
                process = subprocess.Popen(
                    [sys.executable, "-m", module],
                    env={**env, **extra, "LISTEN_ADDRESS": addresses[name]},
                    stdout=log,
                    stderr=log,
                )
            processes.append(process)
            wait_until_serving(addresses[name], 60, process)
        yield {**addresses, "logs": str(logs)}
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=30)


def _image(provider: str) -> Callable[[grpc.Channel], object]:
    request = image_service_pb2.GenerateImageRequest(scene=SCENE, output=OUTPUT, provider=provider, no_cache=True)
    return lambda channel: list(
        image_service_pb2_grpc.ImageServiceStub(channel).GenerateImage(request, timeout=CALL_SECONDS)
    )


def _speech(provider: str) -> Callable[[grpc.Channel], object]:
    request = audio_service_pb2.SynthesizeSpeechRequest(text=SCENE.narration, provider=provider, no_cache=True)
    stub = audio_service_pb2_grpc.AudioServiceStub
    return lambda channel: list(stub(channel).SynthesizeSpeech(request, timeout=CALL_SECONDS))


def _clip(provider: str) -> Callable[[grpc.Channel], object]:
    spec = video_service_pb2.ClipSpec(scene=SCENE, output=OUTPUT, duration_ms=2000, provider=provider, no_cache=True)
    stub = video_service_pb2_grpc.VideoServiceStub
    return lambda channel: list(
        stub(channel).GenerateClip(iter([video_service_pb2.GenerateClipRequest(spec=spec)]), timeout=CALL_SECONDS)
    )


def _avatar(provider: str) -> Callable[[grpc.Channel], object]:
    request = video_service_pb2.GenerateAvatarVideoRequest(
        render_id="r-echo",
        scenes=[SCENE],
        output=OUTPUT,
        provider=provider,
        no_cache=True,
        avatar=types_pb2.AvatarSettings(avatar="mia_casual", voice="v-echo"),  # HeyGen has no default avatar
    )
    stub = video_service_pb2_grpc.VideoServiceStub
    return lambda channel: list(stub(channel).GenerateAvatarVideo(request, timeout=CALL_SECONDS))


# (provider, service process, the fake it talks to, the call)
CASES = [
    ("dall-e-3", "image", "openai", _image("dall-e-3")),
    ("gpt-image-1-mini", "image", "openai", _image("gpt-image-1-mini")),
    ("flux", "image", "replicate", _image("flux")),
    ("sdxl", "image", "replicate", _image("sdxl")),
    ("openai", "audio", "openai", _speech("openai")),
    ("kokoro", "audio", "replicate", _speech("kokoro")),
    ("kokoro-server", "audio", "kokoro", _speech("kokoro-server")),
    ("wan", "video", "replicate", _clip("wan")),
    ("selfhosted (cog)", "video", "cog", _clip("selfhosted")),
    ("selfhosted (comfyui)", "video-comfyui", "comfy", _clip("selfhosted")),
    ("runpod", "video", "runpod", _clip("runpod")),
    ("synthesia", "video", "synthesia", _avatar("synthesia")),
    ("heygen", "video", "heygen", _avatar("heygen")),
]


@pytest.mark.parametrize("status", STATUSES)
@pytest.mark.parametrize(("provider", "service", "fake", "call"), CASES, ids=[case[0] for case in CASES])
def test_an_echoed_key_reaches_neither_the_caller_nor_the_logs(
    services: dict[str, str],
    fakes: Fakes,
    provider: str,
    service: str,
    fake: str,
    call: Callable[[grpc.Channel], object],
    status: int,
) -> None:
    vendor: FakeServer = getattr(fakes, fake)
    vendor.reset()
    vendor.echo_key_status = status
    log = Path(services["logs"]) / f"{service}.log"
    logged_before = log.stat().st_size
    with grpc.insecure_channel(services[service]) as channel, pytest.raises(grpc.RpcError) as error:
        call(channel)
    details = error.value.details()  # type: ignore[attr-defined]
    # The vendor was reached and really echoed a key: otherwise there would be nothing to prove.
    assert vendor.requests, f"{provider} never reached its fake"
    assert any(form in str(vendor.requests[0].headers) for form in _forms())
    with log.open("rb") as lines:
        lines.seek(logged_before)
        logged = lines.read().decode("utf-8", "replace")
    leaks = [form for form in _forms() if form in details or form in logged]
    assert not leaks, (details, logged)


@pytest.mark.parametrize("status", STATUSES)
def test_an_echoed_key_does_not_reach_the_gateways_caller_or_log(
    services: dict[str, str], fakes: Fakes, status: int
) -> None:
    fakes.replicate.reset()
    fakes.replicate.echo_key_status = status
    request = render_service_pb2.RenderRequest(
        scenes=[SCENE], output=OUTPUT, providers=types_pb2.ProviderOverrides(image="flux"), no_cache=True
    )
    logs = Path(services["logs"])
    with grpc.insecure_channel(services["gateway"]) as channel, pytest.raises(grpc.RpcError) as error:
        list(render_service_pb2_grpc.RenderServiceStub(channel).Render(request, timeout=CALL_SECONDS))
    assert fakes.replicate.requests
    text = error.value.details() + "".join(  # type: ignore[attr-defined]
        (logs / f"{name}.log").read_text(errors="replace") for name in ("gateway", "image")
    )
    assert [form for form in _forms() if form in text] == []
