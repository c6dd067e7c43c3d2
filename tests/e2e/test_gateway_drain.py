"""A gateway replica removed mid-render (scale-down, rollout, drain: SIGTERM) as deploy/k8s/base/gateway.yaml
documents it: it drains for SHUTDOWN_GRACE_SECONDS, finishing the renders it runs (whoever follows them, here or
through another replica), exits cleanly, and a render it could not finish ends UNAVAILABLE for its callers on every
replica, with nothing left behind in the shared results folder."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from scenecast.v1 import render_service_pb2, render_service_pb2_grpc, types_pb2

from scenecast_cli.stack import LocalStack
from tests.e2e.test_work_in_flight import wait_for
from tests.fakes.base import Fault
from tests.fakes.openai_server import FakeOpenAI
from tests.gateway_replicas import GatewayReplicas
from tests.probe import probe_mp4
from tests.redis_server import RedisServer

IMAGES_PATH = "/v1/images/generations"
RENDER_ID = "drained-1"
OUTPUT = types_pb2.OutputSettings(
    aspect_ratio=types_pb2.ASPECT_RATIO_16_9, height=240, fps=15, quality=types_pb2.QUALITY_DRAFT
)
# Short, so the test does not wait long; Kubernetes gives the gateway 300 s. Long enough for a one-scene render.
DRAIN_SECONDS = "10"


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("drain-results")


@pytest.fixture(scope="module")
def stack(
    openai_fake: FakeOpenAI, results: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[LocalStack, GatewayReplicas]]:
    """LocalStack's gateway and `gateway-2` sharing a real Redis and a results folder; images from a fake OpenAI."""
    env = {
        "IMAGE_PROVIDER": "dall-e-3",
        **openai_fake.service_env(),
        "ASSET_CACHE_DIR": "off",
        "RESULTS_DIR": str(results),
        "SPEND_LEDGER_PATH": "off",
        "SHUTDOWN_GRACE_SECONDS": DRAIN_SECONDS,
    }
    logs = tmp_path_factory.mktemp("drain-logs")
    with RedisServer() as redis_server:
        env["RENDER_STATE_URL"] = redis_server.url
        local = LocalStack(env=env, log_dir=logs).start()
        replicas = GatewayReplicas(local, env, logs)
        try:
            replicas.start("gateway-2")
            yield local, replicas
        finally:
            replicas.stop()
            local.stop()


def _follow(call: Iterator[object], errors: list[grpc.RpcError]) -> None:
    try:
        for _ in call:
            pass
    except grpc.RpcError as error:
        errors.append(error)


def test_a_replica_removed_mid_render_drains_then_ends_it_unavailable_everywhere(
    stack: tuple[LocalStack, GatewayReplicas], openai_fake: FakeOpenAI, results: Path
) -> None:
    local, replicas = stack
    # The render's only image call hangs at the provider, longer than the drain: the render cannot finish.
    openai_fake.add_fault(Fault(IMAGES_PATH, status=0, hang_seconds=300))
    request = render_service_pb2.RenderRequest(
        render_id=RENDER_ID,
        scenes=[types_pb2.Scene(id="s0", title="Held", narration="This scene waits for its picture.")],
        output=OUTPUT,
    )
    removed = grpc.insecure_channel(replicas.addresses["gateway-2"])
    survivor = grpc.insecure_channel(local.gateway_address)
    try:
        owner_errors: list[grpc.RpcError] = []
        render = render_service_pb2_grpc.RenderServiceStub(removed).Render(request, timeout=120)
        threading.Thread(target=_follow, args=(render, owner_errors), daemon=True).start()
        wait_for(lambda: bool(openai_fake.requests_to(IMAGES_PATH)), "asking the provider for the image")
        # A second caller follows the same render through the replica that stays.
        watch_errors: list[grpc.RpcError] = []
        watch = render_service_pb2_grpc.RenderServiceStub(survivor).WatchRender(
            render_service_pb2.WatchRenderRequest(render_id=RENDER_ID), timeout=120
        )
        watcher = threading.Thread(target=_follow, args=(watch, watch_errors), daemon=True)
        watcher.start()

        process = replicas.processes["gateway-2"]
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0, "a drained gateway exits cleanly"
        watcher.join(timeout=60)

        [watched] = watch_errors
        assert watched.code() == grpc.StatusCode.UNAVAILABLE
        assert "the gateway replica running it went away; run the script again" in (watched.details() or "")
        [owned] = owner_errors
        assert owned.code() == grpc.StatusCode.UNAVAILABLE, owned
        assert sorted(path.name for path in results.iterdir() if path.name.startswith(RENDER_ID)) == []
    finally:
        removed.close()
        survivor.close()
        openai_fake.reset()


def test_a_replica_removed_mid_render_finishes_a_render_followed_through_another_replica(
    stack: tuple[LocalStack, GatewayReplicas], openai_fake: FakeOpenAI, results: Path, tmp_path: Path
) -> None:
    """The caller left after ACCEPTED (it re-attaches through whichever replica it reaches): the draining replica still
    finishes the render, and the MP4 is fetched through the replica that stays."""
    local, replicas = stack
    if replicas.processes["gateway-2"].poll() is not None:
        replicas.start("gateway-2")
    # The image comes after a second: the render is running when SIGTERM arrives, and can finish within the drain.
    openai_fake.add_fault(Fault(IMAGES_PATH, status=0, hang_seconds=1))
    narration = "This scene is finished by a replica on its way out."
    request = render_service_pb2.RenderRequest(
        render_id="drained-2", scenes=[types_pb2.Scene(id="s0", title="Finished", narration=narration)], output=OUTPUT
    )
    removed = grpc.insecure_channel(replicas.addresses["gateway-2"])
    survivor = grpc.insecure_channel(local.gateway_address)
    try:
        render = render_service_pb2_grpc.RenderServiceStub(removed).Render(request, timeout=120)
        first = next(render)
        assert first.progress.stage == render_service_pb2.RENDER_STAGE_ACCEPTED
        render.cancel()  # the caller goes away; the render goes on
        wait_for(lambda: bool(openai_fake.requests_to(IMAGES_PATH)), "asking the provider for the image")
        process = replicas.processes["gateway-2"]
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0, "a drained gateway exits cleanly"

        video, summaries = bytearray(), []
        fetch = render_service_pb2_grpc.RenderServiceStub(survivor).FetchResult(
            render_service_pb2.FetchResultRequest(render_id="drained-2"), timeout=60
        )
        for response in fetch:
            if response.HasField("chunk"):
                assert response.chunk.offset == len(video)
                video += response.chunk.data
            else:
                summaries.append(response.summary)
        [summary] = summaries
        path = tmp_path / "drained-2.mp4"
        path.write_bytes(video)
        probed = probe_mp4(path)
        assert (probed.video_codec, probed.width, probed.height) == ("h264", 426, 240)
        assert probed.duration_s == pytest.approx(summary.duration_ms / 1000, abs=0.2)
        assert probed.subtitle_texts == [narration]
        kept = sorted(path.name for path in results.iterdir() if path.name.startswith("drained-2"))
        assert kept == ["drained-2.json", "drained-2.mp4"], "the MP4 and its summary, no partial file"
    finally:
        removed.close()
        survivor.close()
        openai_fake.reset()
