"""What a caller who can reach the services gets: media services that need the gateway's service token, `serve`
restarting what dies with the gateway's readiness following, ports nobody can share, and every port printed with
metrics on loopback."""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from scenecast.v1 import (
    assembler_service_pb2,
    assembler_service_pb2_grpc,
    audio_service_pb2,
    audio_service_pb2_grpc,
    image_service_pb2,
    image_service_pb2_grpc,
    render_service_pb2,
    types_pb2,
    video_service_pb2,
    video_service_pb2_grpc,
)

from scenecast_cli.client import get_config, render_to_file
from scenecast_cli.stack import LocalStack
from services.common.auth import REFUSAL
from services.common.healthcheck import check
from services.common.server import LIVENESS
from services.common.tls import client_channel
from tests.probe import probe_mp4

SERVICE_TOKEN = "service-token-" + "5f0c" * 8
RENDER_SERVICE = "scenecast.v1.RenderService"
# Long enough for a service to start on a busy machine; the tests wait for states, they never time them.
WAIT_SECONDS = 90.0


def _request(narration: str) -> render_service_pb2.RenderRequest:
    return render_service_pb2.RenderRequest(
        scenes=[types_pb2.Scene(id="one", title="Guarded", narration=narration)],
        output=types_pb2.OutputSettings(
            aspect_ratio=types_pb2.ASPECT_RATIO_16_9, height=240, fps=15, quality=types_pb2.QUALITY_DRAFT
        ),
    )


def _wait_for(what: str, condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"still waiting after {WAIT_SECONDS:.0f} s for {what}")
        time.sleep(0.1)


def _status(address: str, service: str = "") -> str:
    """The health status name a server gives for `service`, or the error code name."""
    return check(address, service, timeout=2.0)[1].rpartition(": ")[2]


# ---------------------------------------------------------------- item 2: the media services need the service token


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with LocalStack(log_dir=tmp_path_factory.mktemp("guarded-logs"), service_token=SERVICE_TOKEN) as stack:
        yield stack


def _direct_calls(channel: grpc.Channel) -> dict[str, Callable[[], object]]:
    """The paid (or CPU-heavy) call of each media service, made directly; the requests are empty, since a refused
    call is answered before its request is read."""
    return {
        "image": lambda: list(
            image_service_pb2_grpc.ImageServiceStub(channel).GenerateImage(
                image_service_pb2.GenerateImageRequest(), timeout=20
            )
        ),
        "audio": lambda: list(
            audio_service_pb2_grpc.AudioServiceStub(channel).SynthesizeSpeech(
                audio_service_pb2.SynthesizeSpeechRequest(), timeout=20
            )
        ),
        "video": lambda: list(
            video_service_pb2_grpc.VideoServiceStub(channel).GenerateClip(
                iter([video_service_pb2.GenerateClipRequest()]), timeout=20
            )
        ),
        "assembler": lambda: list(
            assembler_service_pb2_grpc.AssemblerServiceStub(channel).Assemble(
                iter([assembler_service_pb2.AssembleRequest()]), timeout=20
            )
        ),
    }


def test_render_through_the_gateway_presents_the_service_token(guarded: LocalStack, tmp_path: Path) -> None:
    out = tmp_path / "guarded.mp4"
    render_to_file(guarded.gateway_address, _request("Only the gateway may call us."), out, timeout_seconds=120)
    assert probe_mp4(out).subtitle_texts == ["Only the gateway may call us."]
    # GetConfig asks the image, audio and video services for their providers: the video service, which a render of
    # stills never calls, takes the token too.
    kinds = {provider_set.kind for provider_set in get_config(guarded.gateway_address).provider_sets}
    assert {types_pb2.MEDIA_KIND_IMAGE, types_pb2.MEDIA_KIND_SPEECH, types_pb2.MEDIA_KIND_VIDEO} <= kinds


@pytest.mark.parametrize("token", [None, "wrong-token", SERVICE_TOKEN + "x"], ids=["no-token", "wrong", "longer"])
@pytest.mark.parametrize("service", ["image", "audio", "video", "assembler"])
def test_direct_calls_without_the_service_token_are_unauthenticated(
    guarded: LocalStack, service: str, token: str | None
) -> None:
    with client_channel(guarded.addresses[service], token=token) as channel:
        with pytest.raises(grpc.RpcError) as refused:
            _direct_calls(channel)[service]()
    assert (refused.value.code(), refused.value.details()) == (grpc.StatusCode.UNAUTHENTICATED, REFUSAL)  # type: ignore[attr-defined]
    # Health stays open for probes.
    assert _status(guarded.addresses[service]) == "SERVING"


@pytest.mark.parametrize("service", ["image", "audio", "video", "assembler"])
def test_the_service_token_is_let_in(guarded: LocalStack, service: str) -> None:
    """With the token the call reaches the servicer, which judges the (empty) request itself."""
    with client_channel(guarded.addresses[service], token=SERVICE_TOKEN) as channel:
        with pytest.raises(grpc.RpcError) as judged:
            _direct_calls(channel)[service]()
    assert judged.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]


# ---------------------------------------------------------------- item 8: readiness, restarts, ports nobody shares


def test_gateway_readiness_follows_its_services_and_liveness_does_not(guarded: LocalStack, tmp_path: Path) -> None:
    gateway = guarded.gateway_address
    assert (_status(gateway), _status(gateway, RENDER_SERVICE), _status(gateway, LIVENESS)) == ("SERVING",) * 3
    guarded.kill("assembler")
    _wait_for("the gateway to be NOT_SERVING", lambda: _status(gateway) == "NOT_SERVING")
    assert _status(gateway, RENDER_SERVICE) == "NOT_SERVING"
    assert _status(gateway, LIVENESS) == "SERVING"
    reports: list[str] = []

    def restarted() -> bool:
        guarded.restart_dead(reports.append)
        return _status(gateway) == "SERVING"

    _wait_for("the restarted assembler to make the gateway ready", restarted)
    assert reports[0] == f"assembler ({guarded.addresses['assembler']}) exited with -9; restarting in 1 s"
    assert reports[1].startswith("assembler restarted (process ")
    out = tmp_path / "after.mp4"
    render_to_file(gateway, _request("Back in one piece."), out, timeout_seconds=120)
    assert probe_mp4(out).subtitle_texts == ["Back in one piece."]


def _start_service(module: str, address: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LISTEN_ADDRESS": address, "METRICS_PORT": "0", "LOG_FORMAT": "text"}
    return subprocess.run(
        [sys.executable, "-m", module], env=env, capture_output=True, text=True, timeout=WAIT_SECONDS, check=False
    )


def test_a_second_instance_cannot_bind_and_says_what_holds_the_port(guarded: LocalStack) -> None:
    image = guarded.addresses["image"]
    second = _start_service("services.image", image)
    assert second.returncode == 1
    assert (
        f"image did not start: could not listen on {image}: another scenecast.v1.ImageService already serves there "
        "(a second scenecast instance?); stop it or pick another port"
    ) in second.stderr
    # The first instance keeps every call.
    assert _status(image) == "SERVING"
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        address = f"127.0.0.1:{holder.getsockname()[1]}"
        other = _start_service("services.audio", address)
    assert other.returncode == 1
    assert (
        f"audio did not start: could not listen on {address}: something already listens there, and it does not "
        "answer gRPC health in plaintext"
    ) in other.stderr


# ---------------------------------------------------------------- `scenecast serve`: items 8 and 10


class _Serve:
    """`scenecast serve --free-ports` as a user runs it, its stdout lines collected as they come."""

    def __init__(self, folder: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "scenecast_cli.main", "serve", "--free-ports"],
            cwd=folder,  # no developer .env
            stdout=subprocess.PIPE,
            stderr=(folder / "serve.log").open("wb"),
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))

    def next_line(self) -> str:
        try:
            return self.lines.get(timeout=WAIT_SECONDS)
        except queue.Empty:
            pytest.fail(f"scenecast serve printed nothing more within {WAIT_SECONDS:.0f} s")

    def children(self) -> dict[str, int]:
        """Module run by each child process -> its pid (a child that has not yet started Python shows no module)."""
        pids = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text().split()
        commands = {int(pid): Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") for pid in pids}
        return {command[2].decode(): pid for pid, command in commands.items() if len(command) > 2}


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[_Serve, list[str]]]:
    started = _Serve(tmp_path_factory.mktemp("serve"))
    try:
        printed = [started.next_line() for _ in range(8)]  # six services, the web API, the summary
        yield started, printed
    finally:
        started.process.send_signal(signal.SIGINT)
        assert started.process.wait(timeout=60) == 0


def _listening_hosts(port: int) -> set[str]:
    """The local addresses of the sockets listening on `port`, from the kernel's tables ("0100007F" is 127.0.0.1)."""
    hosts = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            host, _, port_hex = local.partition(":")
            if state == "0A" and int(port_hex, 16) == port:
                hosts.add(host)
    return hosts


def test_serve_prints_every_port_and_keeps_metrics_on_loopback(serve: tuple[_Serve, list[str]]) -> None:
    _, printed = serve
    names = ["image", "audio", "video", "assembler", "script", "gateway"]
    ports = {}
    for name, line in zip(names, printed, strict=False):
        words = line.split()
        assert (words[0], words[1], words[3]) == (name, "gRPC", "metrics"), line
        ports[name] = (words[2], words[4])
    gateway = ports["gateway"][0]
    web, http, api, openapi = printed[6].split(maxsplit=3)
    studio = api.removesuffix("/v1") + "/"
    assert (web, http, openapi) == ("web", "HTTP", f"(OpenAPI: {api}/openapi.json; studio: {studio})"), printed[6]
    web_port = int(api.removeprefix("http://127.0.0.1:").removesuffix("/v1"))
    with urllib.request.urlopen(f"{api}/health", timeout=10) as response:
        assert response.status == 200
    assert _listening_hosts(web_port) == {"0100007F"}, "the HTTP API listens beyond loopback"
    assert printed[7] == (
        f"gateway listening on {gateway}; no authentication: any local user or process can render (set "
        "GATEWAY_AUTH_TOKENS to require a token); Ctrl-C stops"
    )
    for name, (address, metrics_url) in ports.items():
        assert address.startswith("127.0.0.1:") and _status(address) == "SERVING", name
        with urllib.request.urlopen(metrics_url, timeout=10) as response:
            assert b"# HELP scenecast_rpc_requests_total" in response.read(), name
        metrics_port = int(metrics_url.rsplit(":", 1)[1].split("/")[0])
        assert _listening_hosts(metrics_port) == {"0100007F"}, f"{name}'s metrics listen beyond loopback"


def test_serve_restarts_a_killed_service(serve: tuple[_Serve, list[str]], tmp_path: Path) -> None:
    started, printed = serve
    image_address = printed[0].split()[2]
    gateway = printed[5].split()[2]
    killed = started.children()["services.image"]
    os.kill(killed, signal.SIGKILL)
    assert started.next_line() == f"image ({image_address}) exited with -9; restarting in 1 s"
    restarted = started.next_line()
    assert restarted.startswith("image restarted (process ")
    _wait_for("the new image process", lambda: started.children().get("services.image", killed) != killed)
    _wait_for("the restarted image service", lambda: _status(image_address) == "SERVING")
    _wait_for("the gateway to be ready again", lambda: _status(gateway) == "SERVING")
    out = tmp_path / "after-restart.mp4"
    render_to_file(gateway, _request("Restarted and rendering."), out, timeout_seconds=120)
    assert probe_mp4(out).subtitle_texts == ["Restarted and rendering."]
    # Under serve the media services take calls only from the gateway, even on loopback.
    with client_channel(image_address) as channel:
        with pytest.raises(grpc.RpcError) as refused:
            _direct_calls(channel)["image"]()
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED  # type: ignore[attr-defined]
