"""The web service (`python -m web`) as a process in front of the five services, through a real HTTP client."""

from __future__ import annotations

import http.client
import io
import json
import os
import subprocess
import sys
import time
import wave
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pysubs2
import pytest
import yaml
from PIL import Image
from scenecast.v1 import image_service_pb2_grpc, render_service_pb2, render_service_pb2_grpc, types_pb2

from gateway.render import image_request
from scenecast_cli.script import checked_request, parse_script
from scenecast_cli.stack import LocalStack, free_port
from tests.e2e.web_script import SCRIPT
from tests.probe import probe_mp4

OPENAPI = Path(__file__).resolve().parents[2] / "web" / "openapi.json"
PROBLEM = "application/problem+json"


@dataclass(frozen=True)
class Web:
    url: str
    process: subprocess.Popen[bytes]


@contextmanager
def _web(env: dict[str, str], log: Path) -> Iterator[Web]:
    """`python -m web` with `env`, once it answers HTTP; stopped with SIGTERM, which must end it cleanly."""
    port = free_port()
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "web"],
            env={**os.environ, **env, "WEB_PORT": str(port)},
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        while True:  # until it answers: start-up is not what these tests measure
            assert process.poll() is None, log.read_text()
            try:
                httpx.get(f"{url}/v1/health")
                break
            except httpx.TransportError:
                time.sleep(0.1)
        yield Web(url, process)
    finally:
        process.terminate()
        # SIGTERM is a graceful shutdown: open streams end and the process exits cleanly.
        assert process.wait(timeout=30) == 0, log.read_text()[-3000:]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """The services with the web API in front, started as `scenecast serve` starts them."""
    logs = tmp_path_factory.mktemp("web-logs")
    local = LocalStack(log_dir=logs, web=True).start()
    yield local
    local.stop()
    # SIGTERM is a graceful shutdown for the API too: open streams end and the process exits cleanly.
    assert {name: p.returncode for name, p in local.processes.items()} == dict.fromkeys(local.processes, 0), [
        (path.name, path.read_text()[-2000:]) for path in logs.iterdir()
    ]


@pytest.fixture(scope="module")
def web(stack: LocalStack) -> Web:
    assert httpx.get(f"{stack.web_url}/v1/health").json() == {"status": "ready"}
    return Web(stack.web_url, stack.processes["web"])


@pytest.fixture(scope="module")
def client(web: Web) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=web.url, timeout=120) as http:
        yield http


def _events(response: httpx.Response) -> Iterator[str]:
    """The raw text of each SSE event (its lines up to the blank line), comments (pings) left out."""
    lines: list[str] = []
    for line in response.iter_lines():
        if line:
            if not line.startswith(":"):
                lines.append(line)
        elif lines:
            yield "\n".join(lines)
            lines = []


def _field(event: str, name: str) -> str:
    return next(line.removeprefix(f"{name}: ") for line in event.split("\n") if line.startswith(f"{name}: "))


@dataclass(frozen=True)
class Finished:
    render_id: str
    created: httpx.Response
    first_part: list[str]
    resumed: list[str]
    replay: list[str]


@pytest.fixture(scope="module")
def finished(client: httpx.Client) -> Finished:
    """A render made from YAML, followed live for a few events, then resumed with Last-Event-ID to its end."""
    created = client.post("/v1/renders", content=SCRIPT, headers={"Content-Type": "application/yaml"})
    assert created.status_code == 202, created.text
    render_id = created.json()["render_id"]
    first_part: list[str] = []
    with client.stream("GET", f"/v1/renders/{render_id}/events") as stream:
        assert stream.status_code == 200 and stream.headers["content-type"].startswith("text/event-stream")
        for event in _events(stream):
            first_part.append(event)
            if len(first_part) == 3:
                break  # the connection drops mid-render
    resume = {"Last-Event-ID": _field(first_part[-1], "id")}
    with client.stream("GET", f"/v1/renders/{render_id}/events", headers=resume) as stream:
        assert stream.status_code == 200
        resumed = list(_events(stream))
    with client.stream("GET", f"/v1/renders/{render_id}/events") as stream:
        replay = list(_events(stream))
    return Finished(render_id, created, first_part, resumed, replay)


def test_a_render_from_yaml_is_accepted_with_its_location_and_streams_per_scene_events(finished: Finished) -> None:
    assert finished.created.headers["location"] == f"/v1/renders/{finished.render_id}"
    names = [_field(event, "event") for event in finished.replay]
    assert names[0] == "accepted" and names[-1] == "summary"
    assert [_field(event, "id") for event in finished.replay] == [str(n) for n in range(1, len(names) + 1)]
    encoded = [event for event in finished.replay if _field(event, "event") == "scene_encoded"]
    assert {'"scene_id": "check"', '"scene_id": "three"'} <= {
        part for event in encoded for part in _field(event, "data").split(", ") if part.startswith('"scene_id"')
    }


def test_resuming_with_last_event_id_sends_exactly_the_events_after_it(finished: Finished) -> None:
    # What the client saw across the dropped connection is the whole stream, nothing repeated, nothing missing.
    assert finished.first_part + finished.resumed == finished.replay
    assert _field(finished.resumed[0], "id") == "4"


def test_a_last_event_id_that_is_not_a_count_is_400_naming_the_header(client: httpx.Client, finished: Finished) -> None:
    response = client.get(f"/v1/renders/{finished.render_id}/events", headers={"Last-Event-ID": "yesterday"})
    assert response.status_code == 400 and response.headers["content-type"] == PROBLEM
    assert response.json()["field"] == "Last-Event-ID"


def test_resuming_after_the_last_event_is_204_so_eventsource_stops(client: httpx.Client, finished: Finished) -> None:
    last = _field(finished.replay[-1], "id")
    response = client.get(f"/v1/renders/{finished.render_id}/events", headers={"Last-Event-ID": last})
    assert response.status_code == 204 and response.content == b""


def test_the_mp4_comes_whole_and_by_range(client: httpx.Client, finished: Finished, tmp_path: Path) -> None:
    video = f"/v1/renders/{finished.render_id}/video.mp4"
    whole = client.get(video)
    assert whole.status_code == 200 and whole.headers["accept-ranges"] == "bytes"
    assert whole.headers["content-type"] == "video/mp4"
    size = len(whole.content)
    assert whole.headers["content-length"] == str(size)
    status = client.get(f"/v1/renders/{finished.render_id}").json()
    assert status["state"] == "succeeded" and status["summary"]["size_bytes"] == str(size)
    path = tmp_path / "out.mp4"
    path.write_bytes(whole.content)
    probed = probe_mp4(path)
    assert (probed.video_codec, probed.audio_codec, probed.width, probed.height) == ("h264", "aac", 640, 360)
    assert abs(probed.duration_s * 1000 - status["summary"]["duration_ms"]) < 100

    for header, first, last in (
        ("bytes=100-299", 100, 299),
        ("bytes=-500", size - 500, size - 1),
        (f"bytes={size - 10}-", size - 10, size - 1),
        (f"bytes={size - 10}-{size + 1000}", size - 10, size - 1),
    ):
        part = client.get(video, headers={"Range": header})
        assert part.status_code == 206, header
        assert part.headers["content-range"] == f"bytes {first}-{last}/{size}"
        assert part.content == whole.content[first : last + 1]
    past = client.get(video, headers={"Range": f"bytes={size}-"})
    assert past.status_code == 416 and past.headers["content-range"] == f"bytes */{size}"
    assert past.headers["content-type"] == PROBLEM and past.json()["field"] == "Range"


def test_the_captions_are_the_narration_in_srt_and_webvtt(client: httpx.Client, finished: Finished) -> None:
    srt = client.get(f"/v1/renders/{finished.render_id}/captions.srt")
    vtt = client.get(f"/v1/renders/{finished.render_id}/captions.vtt")
    assert srt.status_code == vtt.status_code == 200
    assert srt.headers["content-type"] == "application/x-subrip; charset=utf-8"
    assert vtt.headers["content-type"] == "text/vtt; charset=utf-8"
    cues = pysubs2.SSAFile.from_string(srt.text, format_="srt")
    narration = " ".join(scene["narration"] for scene in yaml.safe_load(SCRIPT)["scenes"])
    assert " ".join(event.plaintext.replace("\n", " ") for event in cues).split() == narration.split()
    assert vtt.text.startswith("WEBVTT") and vtt.text.count(" --> ") == len(cues)


def _generated_image(stack: LocalStack, render_id: str, index: int) -> Image.Image:
    """The image the image service makes for a scene of SCRIPT, asked for directly, as the render asked for it."""
    request = image_request(checked_request(parse_script(SCRIPT, "YAML")), index, render_id)
    with grpc.insecure_channel(stack.addresses["image"]) as channel:
        responses = list(image_service_pb2_grpc.ImageServiceStub(channel).GenerateImage(request))
    data = b"".join(response.chunk.data for response in responses if response.HasField("chunk"))
    return Image.open(io.BytesIO(data)).convert("RGB")


def test_each_scene_image_event_carries_a_small_jpeg_preview_of_the_image(
    client: httpx.Client, finished: Finished, stack: LocalStack
) -> None:
    with grpc.insecure_channel(stack.gateway_address) as channel:
        watched = list(
            render_service_pb2_grpc.RenderServiceStub(channel).WatchRender(
                render_service_pb2.WatchRenderRequest(render_id=finished.render_id)
            )
        )
    previews = {r.progress.scene_id: r.progress for r in watched if r.progress.preview_jpeg}
    assert sorted(previews) == ["check", "three"]
    for progress in previews.values():
        assert progress.stage == render_service_pb2.RENDER_STAGE_ASSET_READY
        assert progress.media_kind == types_pb2.MEDIA_KIND_IMAGE
    originals = [_generated_image(stack, finished.render_id, index) for index in range(2)]
    for index, scene_id in enumerate(("check", "three")):
        jpeg = previews[scene_id].preview_jpeg
        assert len(jpeg) <= 30_000
        preview = Image.open(io.BytesIO(jpeg))
        assert (preview.format, preview.size) == ("JPEG", (320, 180))  # the 640x360 frame, halved
        # It shows its own scene's image: far closer to it than to the other scene's.
        pixels = np.asarray(preview.convert("RGB"), dtype=np.int16)
        own, other = (
            np.abs(pixels - np.asarray(original.resize(preview.size), dtype=np.int16)).mean()
            for original in (originals[index], originals[1 - index])
        )
        assert own < 4 < other, (own, other)
        # The web route serves the event's bytes as they are.
        served = client.get(f"/v1/renders/{finished.render_id}/scenes/{scene_id}/preview.jpg")
        assert served.status_code == 200 and served.headers["content-type"] == "image/jpeg"
        assert served.content == jpeg


def test_the_sse_image_event_links_its_preview_instead_of_carrying_it(client: httpx.Client, finished: Finished) -> None:
    linked = {}
    for event in finished.replay:
        data = json.loads(_field(event, "data"))
        assert "preview_jpeg" not in data, event  # no base64 in the events
        if "preview" in data:
            assert (_field(event, "event"), data["media_kind"]) == ("asset_ready", "MEDIA_KIND_IMAGE")
            linked[data["scene_id"]] = data["preview"]
    assert linked == {
        scene_id: f"/v1/renders/{finished.render_id}/scenes/{scene_id}/preview.jpg" for scene_id in ("check", "three")
    }
    missing = client.get(f"/v1/renders/{finished.render_id}/scenes/nosuch/preview.jpg")
    assert missing.status_code == 404 and missing.headers["content-type"] == PROBLEM
    assert missing.json()["field"] == "scene_id"


def test_a_bad_script_is_problem_json_naming_the_field(client: httpx.Client) -> None:
    bad = SCRIPT.replace("id: check", "id: 'check it!'")
    response = client.post("/v1/renders", content=bad, headers={"Content-Type": "application/yaml"})
    assert response.status_code == 400 and response.headers["content-type"] == PROBLEM
    problem = response.json()
    assert problem["field"] == "scenes[0].id" and problem["detail"].startswith("scenes[0].id: String should match")


def test_a_gateway_refusal_has_the_grpc_wording(client: httpx.Client, stack: LocalStack) -> None:
    script = SCRIPT.replace("title: Ladders", "title: Ladders\nproviders: {image: nosuch}")
    response = client.post("/v1/estimate", content=script, headers={"Content-Type": "application/yaml"})
    with grpc.insecure_channel(stack.gateway_address) as channel:
        with pytest.raises(grpc.RpcError) as raised:
            render_service_pb2_grpc.RenderServiceStub(channel).EstimateCost(
                render_service_pb2.EstimateCostRequest(render=checked_request(parse_script(script, "YAML")))
            )
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert response.status_code == 400 and response.headers["content-type"] == PROBLEM
    assert response.json() == {
        "type": "about:blank",
        "title": "Bad Request",
        "status": 400,
        "detail": raised.value.details(),
        "field": "providers.image",
        "grpc_status": "INVALID_ARGUMENT",
    }


def test_a_body_over_the_cap_is_413(client: httpx.Client) -> None:
    huge = (SCRIPT + "#" * (1024 * 1024)).encode()

    def chunked() -> Iterator[bytes]:  # no Content-Length: the cap is met while the body arrives
        yield from (huge[start : start + 65536] for start in range(0, len(huge), 65536))

    for body in (huge, chunked()):
        response = client.post("/v1/renders", content=body, headers={"Content-Type": "application/yaml"})
        assert response.status_code == 413 and response.headers["content-type"] == PROBLEM
        assert response.json()["detail"].endswith("this server takes at most 1048576 (WEB_MAX_BODY_BYTES)")


def test_an_unknown_render_is_404(client: httpx.Client) -> None:
    for path in ("", "/events", "/video.mp4", "/captions.vtt", "/scenes/check/preview.jpg"):
        response = client.get(f"/v1/renders/nosuchrender{path}")
        assert response.status_code == 404 and response.headers["content-type"] == PROBLEM, path


def test_cancel_stops_a_running_render(client: httpx.Client) -> None:
    many = yaml.safe_load(SCRIPT)
    many["scenes"] = [{**many["scenes"][0], "id": f"s{n}"} for n in range(8)]
    created = client.post("/v1/renders", json=many)
    assert created.status_code == 202, created.text
    render_id = created.json()["render_id"]
    assert client.post(f"/v1/renders/{render_id}/cancel").json() == {"cancelled": True}
    video = client.get(f"/v1/renders/{render_id}/video.mp4")
    assert video.status_code == 409 and video.json()["grpc_status"] == "CANCELLED"
    assert client.get(f"/v1/renders/{render_id}").json()["state"] == "cancelled"
    with client.stream("GET", f"/v1/renders/{render_id}/events") as stream:
        events = list(_events(stream))
    assert [_field(event, "event") for event in events][-1] == "error"
    assert _field(events[-1], "id") == str(len(events))
    assert json.loads(_field(events[-1], "data"))["grpc_status"] == "CANCELLED"
    assert client.post(f"/v1/renders/{render_id}/cancel").json() == {"cancelled": False}


def test_the_served_openapi_document_is_the_committed_one(client: httpx.Client) -> None:
    response = client.get("/v1/openapi.json")
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    assert response.content == OPENAPI.read_bytes()
    assert response.json()["openapi"].startswith("3.1")


def test_config_estimate_and_spend(client: httpx.Client) -> None:
    config = client.get("/v1/config").json()
    assert {provider_set["kind"] for provider_set in config["provider_sets"]} >= {"MEDIA_KIND_IMAGE"}
    estimate = client.post("/v1/estimate", content=SCRIPT, headers={"Content-Type": "application/yaml"}).json()
    assert [scene["scene_id"] for scene in estimate["scenes"]] == ["check", "three"]
    spend = client.get("/v1/spend", params={"group_by": "render"})
    assert spend.status_code == 200 and "total_usd" in spend.json()
    bad = client.get("/v1/spend", params={"group_by": "week"})
    assert bad.status_code == 400 and bad.json()["field"] == "group_by"


def _wav(seconds: float) -> bytes:
    """A silent 16 kHz mono WAV file."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(16000)
        writer.writeframes(b"\0\0" * int(16000 * seconds))
    return buffer.getvalue()


def test_music_is_uploaded_and_named_by_its_id_in_a_script(client: httpx.Client) -> None:
    uploaded = client.post("/v1/music", content=_wav(2.0), headers={"Content-Type": "audio/wav"})
    assert uploaded.status_code == 201, uploaded.text
    answer = uploaded.json()
    assert answer["duration_ms"] == 2000 and answer["expires_in_seconds"] > 0
    script = yaml.safe_load(SCRIPT) | {"finishing": {"music": {"upload": answer["upload_id"]}}}
    assert client.post("/v1/estimate", json=script).status_code == 200
    script["finishing"]["music"]["upload"] = "0" * 64
    unknown = client.post("/v1/estimate", json=script)
    assert unknown.status_code == 404 and unknown.headers["content-type"] == PROBLEM
    script["finishing"]["music"]["upload"] = "short"
    malformed = client.post("/v1/estimate", json=script).json()
    assert malformed["status"] == 400 and malformed["field"] == "music.upload_id"


def test_music_uploads_are_checked_before_they_reach_the_gateway(client: httpx.Client, web: Web) -> None:
    wav = _wav(0.5)
    not_audio = client.post("/v1/music", content=wav, headers={"Content-Type": "text/plain"})
    assert not_audio.status_code == 415 and not_audio.json()["field"] == "Content-Type"
    unsized = client.post("/v1/music", content=iter([wav]), headers={"Content-Type": "audio/wav"})
    assert unsized.status_code == 411 and unsized.json()["field"] == "Content-Length"
    # Announced over the cap: refused before a byte of the body is read (http.client sends what it is told).
    connection = http.client.HTTPConnection(httpx.URL(web.url).host, httpx.URL(web.url).port, timeout=60)
    try:
        connection.putrequest("POST", "/v1/music")
        connection.putheader("Content-Type", "audio/wav")
        connection.putheader("Content-Length", str(50 * 1024 * 1024 + 1))
        connection.endheaders(wav)
        huge = connection.getresponse()
        assert huge.status == 413 and huge.getheader("content-type") == PROBLEM
        assert json.loads(huge.read())["detail"].endswith("(WEB_MAX_UPLOAD_BYTES)")
    finally:
        connection.close()


def test_a_music_path_in_a_script_is_refused_over_http(client: httpx.Client) -> None:
    script = yaml.safe_load(SCRIPT) | {"finishing": {"music": {"file": "../../etc/passwd"}}}
    response = client.post("/v1/renders", json=script)
    assert response.status_code == 400 and response.json()["field"] == "finishing.music.file"


def test_the_gateway_token_is_passed_on_and_never_shown(tmp_path: Path) -> None:
    """A gateway that takes one token, with nothing behind it: with the token a call reaches the gateway's own code
    (which cannot list providers: 503 from the gateway); without it the gateway refuses the call (502, since the
    HTTP caller cannot fix this service's token)."""
    token = "web-test-token-5f1c9a"
    nowhere = f"127.0.0.1:{free_port()}"
    gateway_address = f"127.0.0.1:{free_port()}"
    gateway_env = {
        **os.environ,
        "LISTEN_ADDRESS": gateway_address,
        "GATEWAY_AUTH_TOKENS": token,
        "RESULTS_DIR": str(tmp_path / "results"),
        **dict.fromkeys(
            ("IMAGE_SERVICE_ADDRESS", "AUDIO_SERVICE_ADDRESS", "VIDEO_SERVICE_ADDRESS", "ASSEMBLER_SERVICE_ADDRESS"),
            nowhere,
        ),
    }
    with (tmp_path / "gateway.log").open("wb") as output:
        gateway = subprocess.Popen([sys.executable, "-m", "gateway"], env=gateway_env, stdout=output, stderr=output)
    try:
        base = {"SCENECAST_GATEWAY": gateway_address}
        with (
            _web({**base, "SCENECAST_TOKEN": token}, tmp_path / "with.log") as with_token,
            _web(base, tmp_path / "without.log") as without_token,
        ):
            while (
                (health := httpx.get(f"{with_token.url}/v1/health"))
                .json()
                .get("detail", "")
                .startswith("the gateway cannot be reached")
            ):
                time.sleep(0.1)  # the gateway is still starting
            assert health.status_code == 503 and health.headers["content-type"] == PROBLEM
            reached = httpx.get(f"{with_token.url}/v1/config")
            refused = httpx.get(f"{without_token.url}/v1/config")
        assert (reached.status_code, reached.json()["grpc_status"]) == (503, "UNAVAILABLE")
        assert (refused.status_code, refused.json()["grpc_status"]) == (502, "UNAUTHENTICATED")
        for text in (reached.text, refused.text, (tmp_path / "with.log").read_text()):
            assert token not in text
    finally:
        gateway.terminate()
        gateway.wait(timeout=30)


def test_cors_is_off_unless_origins_are_configured(web: Web, stack: LocalStack, tmp_path: Path) -> None:
    def preflight(url: str, origin: str) -> httpx.Response:
        headers = {"Origin": origin, "Access-Control-Request-Method": "POST"}
        return httpx.options(f"{url}/v1/renders", headers=headers)

    other_site = "https://elsewhere.example"
    assert "access-control-allow-origin" not in preflight(web.url, other_site).headers
    assert (
        "access-control-allow-origin" not in httpx.get(f"{web.url}/v1/config", headers={"Origin": other_site}).headers
    )
    studio = "https://studio.example"
    env = {"SCENECAST_GATEWAY": stack.gateway_address, "WEB_CORS_ORIGINS": studio}
    with _web(env, tmp_path / "cors.log") as configured:
        allowed = preflight(configured.url, studio)
        refused = preflight(configured.url, other_site)
    assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == studio
    assert "access-control-allow-origin" not in refused.headers


def test_a_document_is_drafted_into_a_script_the_api_renders(client: httpx.Client) -> None:
    document = "# Ladders\n\n![A ladder against a brick wall](ladder.png)\n\nSet the feet on level ground. Then climb."
    response = client.post("/v1/drafts", json={"document": {"text": document, "format": "markdown"}})
    assert response.status_code == 201, response.text
    created = response.json()
    assert created.pop("draft_id").startswith("draft-")
    assert created == {
        "provider": "outline",
        "model": "outline",
        "cost_usd": 0.0,
        "calls": [],
        "script": {
            "title": "Ladders",
            "scenes": [
                {
                    "id": "scene-1",
                    "title": "Ladders",
                    "narration": "Set the feet on level ground. Then climb.",
                    "visual": "A ladder against a brick wall",
                }
            ],
        },
    }
    estimate = client.post("/v1/estimate", json=created["script"])
    assert estimate.status_code == 200 and [s["scene_id"] for s in estimate.json()["scenes"]] == ["scene-1"]


@pytest.mark.parametrize(
    ("body", "field", "detail"),
    [
        ({"topic": "tides", "document": {"text": "Tides.", "format": "plain"}}, "body", "not both"),
        ({"document": {"text": "Tides.", "format": "docx"}}, "document.format", "'markdown' or 'plain'"),
        ({"topic": "tides", "seconds": -1}, "seconds", "greater than or equal to 0"),
        ({"topic": "tides"}, None, "topic: the outline provider drafts from a document"),
        ({"document": {"text": "# Only a heading", "format": "markdown"}}, None, "document.text has no paragraph"),
    ],
)
def test_a_bad_draft_is_problem_json_naming_the_field(
    client: httpx.Client, body: dict[str, Any], field: str | None, detail: str
) -> None:
    response = client.post("/v1/drafts", json=body)
    assert response.status_code == 400 and response.headers["content-type"] == PROBLEM
    problem = response.json()
    assert problem.get("field") == field and detail in problem["detail"], problem
