"""The runpod provider through the real video service, against a fake RunPod serverless API on loopback."""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import runpod
from scenecast.v1 import types_pb2, video_service_pb2, video_service_pb2_grpc

from services.video.config import VideoSettings
from services.video.providers.runpod import RunPodSettings
from services.video.server import build as build_video
from tests import prices
from tests.fakes.base import Fault
from tests.fakes.runpod_server import API_KEY, DELAY_MS, ENDPOINT_ID, EXECUTION_MS, FakeRunPod
from tests.services.conftest import _serve
from tests.services.test_video_providers import PROMPT, Clip, _clip, assert_mp4, eventually, failure, picture

# A 2 s scene at 24 fps is 49 frames (8k+1); 16:9 at a 480 short side is 864x480 (multiples of 32).
FRAMES, SIZE = 49, (864, 480)
BILLED_USD = prices.RUNPOD_L40S_FLEX_PER_SECOND * math.ceil((DELAY_MS + EXECUTION_MS) / 1000)
RUN = f"/v2/{ENDPOINT_ID}/run"


pytestmark = pytest.mark.usefixtures("quick_retries")


@pytest.fixture(scope="module")
def runpod_server() -> Iterator[FakeRunPod]:
    with FakeRunPod() as fake:
        yield fake


@pytest.fixture
def fake(runpod_server: FakeRunPod) -> FakeRunPod:
    runpod_server.reset()
    return runpod_server


@pytest.fixture
async def start(fake: FakeRunPod, work_root: Path) -> AsyncIterator[Callable[..., Awaitable[tuple[Clip, Any]]]]:
    """Starts the video service with RunPod settings pointed at the fake (`changes` override any of them)."""
    async with contextlib.AsyncExitStack() as stack:

        async def run(**changes: Any) -> tuple[Clip, Any]:
            settings = RunPodSettings(
                **{
                    "runpod_api_key": API_KEY,
                    "runpod_endpoint_id": ENDPOINT_ID,
                    "runpod_base_url": fake.api_url,
                    "runpod_poll_seconds": 0.01,
                    "allow_private_output_urls": True,
                    **changes,
                }
            )
            service = VideoSettings(listen_address="127.0.0.1:0", video_tmp_dir=str(work_root), asset_cache_dir="off")
            channel = await stack.enter_async_context(
                contextlib.asynccontextmanager(_serve)(build_video(service, [settings]))
            )
            return _clip(channel), video_service_pb2_grpc.VideoServiceStub(channel)

        yield run


@pytest.fixture
async def clip(start: Callable[..., Awaitable[tuple[Clip, Any]]]) -> Clip:
    return (await start())[0]


async def test_a_clip_is_run_polled_downloaded_and_billed_by_gpu_time(clip: Clip, fake: FakeRunPod) -> None:
    fake.polls_to_finish = 3
    metadata, data = await clip("runpod", duration_ms=2000)
    assert_mp4(metadata, data, SIZE, FRAMES / 24 * 1000)
    assert (metadata.provider, metadata.model) == ("runpod", f"runpod:{ENDPOINT_ID}")
    assert metadata.estimated_cost_usd == pytest.approx(BILLED_USD)
    [run] = fake.runs()
    assert run.headers["Authorization"] == f"Bearer {API_KEY}"
    body = run.json()
    assert body["policy"] == {"executionTimeout": 1_800_000}
    assert body["input"] == {
        "prompt": PROMPT,
        "negative_prompt": body["input"]["negative_prompt"],
        "width": SIZE[0],
        "height": SIZE[1],
        "num_frames": FRAMES,
        "fps": 24,
        "seed": body["input"]["seed"],
    }
    assert isinstance(body["input"]["seed"], int) and body["input"]["negative_prompt"]
    statuses = fake.requests_to(f"/v2/{ENDPOINT_ID}/status/", "GET")
    assert len(statuses) == 3 and fake.cancels() == []


async def test_an_input_template_fits_any_worker_and_carries_the_scene_image(
    start: Callable[..., Awaitable[tuple[Clip, Any]]], fake: FakeRunPod, tmp_path: Path
) -> None:
    template = tmp_path / "worker-input.json"
    template.write_text(
        json.dumps(
            {
                "workflow": {"6": {"class_type": "CLIPTextEncode", "inputs": {"text": "cinematic, {{prompt}}"}}},
                "image": "{{image}}",
                "steps": 30,
                "length": "{{frames}}",
            }
        )
    )
    fake.output_shape = "comfyui"  # worker-comfyui answers the file as base64
    clip, _ = await start(runpod_input_template=str(template))
    metadata, data = await clip("runpod", image=picture(640, 360))
    assert metadata.mime_type == "video/mp4" and data[4:8] == b"ftyp"
    sent = fake.runs()[0].json()["input"]
    assert sent["workflow"]["6"]["inputs"]["text"] == f"cinematic, {PROMPT}"
    assert sent["image"].startswith("data:image/jpeg;base64,")
    assert (sent["steps"], sent["length"]) == (30, FRAMES)


async def test_the_ltx_video_workflow_wrapped_for_worker_comfyui_is_filled(
    start: Callable[..., Awaitable[tuple[Clip, Any]]], fake: FakeRunPod, tmp_path: Path
) -> None:
    workflow = json.loads((Path(__file__).parents[2] / "deploy" / "comfyui" / "ltx-video-workflow.json").read_text())
    template = tmp_path / "runpod-input.json"
    template.write_text(json.dumps({"workflow": workflow}))  # what `jq '{workflow: .}'` makes of it
    clip, _ = await start(runpod_input_template=str(template))
    await clip("runpod", duration_ms=2000)
    graph = fake.runs()[0].json()["input"]["workflow"]
    inputs = [node["inputs"] for node in graph.values()]
    assert {"text": PROMPT} in [{k: v for k, v in i.items() if k == "text"} for i in inputs]
    assert {"width": SIZE[0], "height": SIZE[1], "length": FRAMES} in [
        {k: v for k, v in i.items() if k in ("width", "height", "length")} for i in inputs
    ]
    assert "{{" not in json.dumps(graph)


async def test_a_template_with_an_unknown_placeholder_names_the_variable(
    start: Callable[..., Awaitable[tuple[Clip, Any]]], fake: FakeRunPod, tmp_path: Path
) -> None:
    template = tmp_path / "bad.json"
    template.write_text(json.dumps({"prompt": "{{prompt}}", "guidance": "{{cfg}}"}))
    error = await failure((await start(runpod_input_template=str(template)))[0], "runpod")
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "RUNPOD_INPUT_TEMPLATE" in error.details() and "['cfg']" in error.details()
    assert fake.runs() == []


async def test_a_failed_job_names_its_id_and_is_not_run_again(clip: Clip, fake: FakeRunPod) -> None:
    fake.fail_with = "torch.OutOfMemoryError: CUDA out of memory"
    error = await failure(clip, "runpod")
    [job_id] = fake.jobs
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert f"job {job_id} ended FAILED: torch.OutOfMemoryError: CUDA out of memory" in error.details()
    assert len(fake.runs()) == 1


async def test_corrupt_output_names_the_job_and_is_not_run_again(clip: Clip, fake: FakeRunPod) -> None:
    fake.corrupt_output = True
    error = await failure(clip, "runpod")
    [job_id] = fake.jobs
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert f"job {job_id} finished with unusable output" in error.details()
    assert "not an MP4 or WebM video" in error.details()
    assert len(fake.runs()) == 1


async def test_a_429_on_run_is_retried_since_no_job_exists(clip: Clip, fake: FakeRunPod) -> None:
    fake.add_fault(Fault(RUN, 429, {"error": "rate limited"}))
    metadata, _ = await clip("runpod")
    assert metadata.provider == "runpod"
    assert len(fake.runs()) == 2 and len(fake.jobs) == 1


async def test_failed_status_checks_only_delay_the_job(clip: Clip, fake: FakeRunPod) -> None:
    fake.add_fault(Fault(f"/v2/{ENDPOINT_ID}/status/", 500, {"error": "worker crash"}))
    fake.add_fault(Fault(f"/v2/{ENDPOINT_ID}/status/", 429, {"error": "slow down"}))
    metadata, _ = await clip("runpod")
    assert metadata.provider == "runpod" and len(fake.runs()) == 1


async def test_a_job_runpod_no_longer_knows_is_reported_not_run_again(clip: Clip, fake: FakeRunPod) -> None:
    fake.add_fault(Fault(f"/v2/{ENDPOINT_ID}/status/", 404, {"error": "job not found"}))
    error = await failure(clip, "runpod")
    [job_id] = fake.jobs
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert f"no longer knows job {job_id} (404)" in error.details()
    assert len(fake.runs()) == 1


async def test_a_run_answered_after_the_request_timeout_is_not_sent_again(
    start: Callable[..., Awaitable[tuple[Clip, Any]]], fake: FakeRunPod
) -> None:
    fake.add_fault(Fault(RUN, status=0, hang_seconds=3))
    error = await failure((await start(runpod_request_timeout_seconds=0.3))[0], "runpod")
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert "may have received the order" in error.details() and ENDPOINT_ID in error.details()
    assert len(fake.runs()) == 1


@pytest.mark.parametrize(
    ("changes", "variable"),
    [
        ({"runpod_api_key": "rp_wrong"}, "RUNPOD_API_KEY"),
        ({"runpod_api_key": ""}, "RUNPOD_API_KEY"),
        ({"runpod_endpoint_id": ""}, "RUNPOD_ENDPOINT_ID"),
        ({"runpod_endpoint_id": "nosuchendpoint"}, "RUNPOD_ENDPOINT_ID"),
    ],
)
async def test_auth_and_endpoint_failures_name_the_variable(
    start: Callable[..., Awaitable[tuple[Clip, Any]]], fake: FakeRunPod, changes: dict[str, str], variable: str
) -> None:
    error = await failure((await start(**changes))[0], "runpod")
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert variable in error.details() and "rp_wrong" not in error.details()
    assert fake.jobs == {} and len(fake.runs()) <= 1


async def test_a_caller_that_gives_up_cancels_the_job(clip: Clip, fake: FakeRunPod) -> None:
    fake.polls_to_finish = 10_000
    error = await failure(clip, "runpod", timeout=1.0)
    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    await eventually(lambda: len(fake.cancels()) == 1)
    assert [job.status for job in fake.jobs.values()] == ["CANCELLED"]


async def test_it_is_listed_and_estimated_at_its_gpu_rate(start: Callable[..., Awaitable[tuple[Clip, Any]]]) -> None:
    _, stub = await start(runpod_usd_per_gpu_second=0.001, runpod_gpu_seconds_per_clip_second=10)
    listed = (await stub.ListVideoProviders(video_service_pb2.ListVideoProvidersRequest())).providers
    [runpod] = [p for p in listed.providers if p.name == "runpod"]
    assert runpod.configured and tuple(runpod.required_env) == ("RUNPOD_API_KEY", "RUNPOD_ENDPOINT_ID")
    assert [(p.unit, p.usd_per_unit) for p in runpod.prices] == [("GPU second", 0.001)]
    spec = video_service_pb2.ClipSpec(
        scene=types_pb2.Scene(id="s1", narration="Check.", visual_prompt=PROMPT),
        output=types_pb2.OutputSettings(
            aspect_ratio=types_pb2.ASPECT_RATIO_16_9, height=360, fps=24, quality=types_pb2.QUALITY_DRAFT
        ),
        duration_ms=2000,
        provider="runpod",
    )
    [estimate] = (await stub.EstimateClipCost(video_service_pb2.EstimateClipCostRequest(specs=[spec]))).estimates
    assert estimate.usd == pytest.approx(0.001 * 10 * FRAMES / 24)


def test_the_fake_answers_runpods_own_client(fake: FakeRunPod, monkeypatch: pytest.MonkeyPatch) -> None:
    """RunPod's official client (run, status, output, cancel, a refused key) against the fake: the fake speaks the
    API the provider is written for."""
    monkeypatch.setattr(runpod, "endpoint_url_base", fake.api_url)  # what RUNPOD_ENDPOINT_BASE_URL sets at import
    fake.polls_to_finish = 1
    endpoint = runpod.Endpoint(ENDPOINT_ID, api_key=API_KEY)
    job = endpoint.run({"prompt": PROMPT, "width": 64, "height": 64, "num_frames": 9, "fps": 8})
    assert fake.runs()[0].json() == {"input": {"prompt": PROMPT, "width": 64, "height": 64, "num_frames": 9, "fps": 8}}
    assert job.status() == "COMPLETED"
    assert job.output()["video_url"] == f"{fake.base_url}/bucket/{job.job_id}.mp4"
    fake.polls_to_finish = 10
    second = endpoint.run({"prompt": PROMPT})
    assert second.cancel() == {"id": second.job_id, "status": "CANCELLED"}
    with pytest.raises(RuntimeError, match="Unauthorized"):
        runpod.Endpoint(ENDPOINT_ID, api_key="rp_wrong").run({"prompt": PROMPT})
