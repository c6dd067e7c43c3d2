"""Renders outlive their calls: re-attaching after a dropped connection, fetching from an offset, cancelling, and
orphans stopping (FFmpeg killed, temp files removed) when nobody comes back."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from scenecast.v1 import render_service_pb2, render_service_pb2_grpc, types_pb2

from scenecast_cli.client import render_to_file
from scenecast_cli.stack import LocalStack
from tests.probe import probe_mp4
from tests.processes import processes_mentioning
from tests.tcp_proxy import TcpProxy


def _request(
    scenes: int, height: int = 240, quality: int = types_pb2.QUALITY_DRAFT
) -> render_service_pb2.RenderRequest:
    return render_service_pb2.RenderRequest(
        scenes=[
            types_pb2.Scene(id=f"s{i}", title=f"Step {i}", narration=f"This is step number {i}. Take it slowly.")
            for i in range(scenes)
        ],
        output=types_pb2.OutputSettings(
            aspect_ratio=types_pb2.ASPECT_RATIO_16_9, height=height, fps=15, quality=quality
        ),
    )


@pytest.fixture(scope="module")
def work_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("reattach-tmp")


@pytest.fixture(scope="module")
def stack(work_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    # Its own temp dir, so files and FFmpeg processes of these renders can be counted; a short orphan grace.
    env = {"TMPDIR": str(work_dir), "ORPHAN_GRACE_SECONDS": "1"}
    local = LocalStack(env=env, log_dir=tmp_path_factory.mktemp("reattach-logs")).start()
    yield local
    local.stop()


def _stub(address: str) -> render_service_pb2_grpc.RenderServiceStub:
    return render_service_pb2_grpc.RenderServiceStub(grpc.insecure_channel(address))


def test_the_cli_client_reattaches_after_a_dropped_connection(stack: LocalStack, tmp_path: Path) -> None:
    proxy = TcpProxy(int(stack.gateway_address.rsplit(":", 1)[1])).start()
    cuts = threading.Event()

    def cut_once(event: render_service_pb2.RenderProgress) -> None:
        if event.stage == render_service_pb2.RENDER_STAGE_ASSET_READY and not cuts.is_set():
            cuts.set()
            proxy.cut()
            threading.Timer(0.3, proxy.start).start()  # the network comes back on the same port

    path = tmp_path / "dropped.mp4"
    summary = render_to_file(f"127.0.0.1:{proxy.port}", _request(6), path, cut_once, timeout_seconds=120)
    assert cuts.is_set()
    assert [s.scene_id for s in summary.scenes] == [f"s{i}" for i in range(6)]
    assert path.stat().st_size == summary.size_bytes
    probed = probe_mp4(path)
    assert (probed.width, probed.height) == (426, 240) and len(probed.subtitle_texts) == 12
    proxy.cut()


def test_fetch_result_resumes_from_an_offset_and_watch_replays_progress(stack: LocalStack, tmp_path: Path) -> None:
    path = tmp_path / "whole.mp4"
    summary = render_to_file(stack.gateway_address, _request(2), path, timeout_seconds=60)
    stub = _stub(stack.gateway_address)
    fetch = render_service_pb2.FetchResultRequest(render_id=summary.render_id, offset=1000)
    tail = b"".join(r.chunk.data for r in stub.FetchResult(fetch, timeout=30) if r.HasField("chunk"))
    assert tail == path.read_bytes()[1000:]
    watched = list(stub.WatchRender(render_service_pb2.WatchRenderRequest(render_id=summary.render_id), timeout=30))
    assert watched[0].progress.stage == render_service_pb2.RENDER_STAGE_ACCEPTED
    assert watched[-1].summary.size_bytes == summary.size_bytes
    assert all(w.progress.render_id == summary.render_id for w in watched[:-1])
    with pytest.raises(grpc.RpcError) as error:
        list(stub.WatchRender(render_service_pb2.WatchRenderRequest(render_id="no-such-render"), timeout=10))
    assert error.value.code() == grpc.StatusCode.NOT_FOUND  # type: ignore[attr-defined]


def _scenecast_folders(work_dir: Path) -> list[Path]:
    """The services' per-call working folders, and the MP4s of renders that did not finish (the gateway's output
    folder keeps finished ones)."""
    folders = [p for p in work_dir.iterdir() if p.name.startswith("scenecast-") and p.name != "scenecast-renders"]
    outputs = work_dir / "scenecast-renders"
    unfinished = (
        [p for p in outputs.glob("*-1*") if p.name.startswith(("orphan-1", "cancel-1"))] if outputs.exists() else []
    )
    return folders + unfinished


def _wait_until_clean(work_dir: Path, seconds: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        if not processes_mentioning(str(work_dir)) and not _scenecast_folders(work_dir):
            return time.monotonic() - started
        time.sleep(0.1)
    raise AssertionError(f"still running: {processes_mentioning(str(work_dir))}, {_scenecast_folders(work_dir)}")


def _start_and_wait_for_encoding(stub: render_service_pb2_grpc.RenderServiceStub, render_id: str, work_dir: Path):
    """Starts a long HD render and returns its call once FFmpeg is encoding in the assembler's temp folder."""
    request = _request(12, height=1080, quality=types_pb2.QUALITY_HD)
    request.render_id = render_id
    call = stub.Render(request, timeout=300)
    for response in call:
        if response.progress.stage == render_service_pb2.RENDER_STAGE_ASSET_READY and processes_mentioning(
            str(work_dir)
        ):
            return call
    raise AssertionError("the render ended before FFmpeg was seen")


def test_a_caller_that_disconnects_and_never_returns_stops_the_render(stack: LocalStack, work_dir: Path) -> None:
    stub = _stub(stack.gateway_address)
    call = _start_and_wait_for_encoding(stub, "orphan-1", work_dir)
    call.cancel()  # the caller goes away; nobody re-attaches within ORPHAN_GRACE_SECONDS (1 s)
    took = _wait_until_clean(work_dir, 10)
    assert took < 10
    with pytest.raises(grpc.RpcError) as error:
        list(stub.WatchRender(render_service_pb2.WatchRenderRequest(render_id="orphan-1"), timeout=10))
    assert error.value.code() == grpc.StatusCode.CANCELLED  # type: ignore[attr-defined]


def test_cancel_render_stops_it_at_once(stack: LocalStack, work_dir: Path) -> None:
    stub = _stub(stack.gateway_address)
    call = _start_and_wait_for_encoding(stub, "cancel-1", work_dir)
    response = stub.CancelRender(render_service_pb2.CancelRenderRequest(render_id="cancel-1"), timeout=10)
    assert response.cancelled
    with pytest.raises(grpc.RpcError) as error:
        list(call)
    assert error.value.code() == grpc.StatusCode.CANCELLED  # type: ignore[attr-defined]
    _wait_until_clean(work_dir, 5)
    assert not stub.CancelRender(render_service_pb2.CancelRenderRequest(render_id="cancel-1"), timeout=10).cancelled
