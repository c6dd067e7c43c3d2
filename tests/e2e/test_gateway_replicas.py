"""Any gateway replica serves any call: three gateway processes share a real Redis (RENDER_STATE_URL) and a results
folder behind a round-robin TCP proxy; one gateway alone (no Redis) re-indexes its results after a restart."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from scenecast.v1 import render_service_pb2, render_service_pb2_grpc, types_pb2

from scenecast_cli.stack import LocalStack
from tests.gateway_replicas import GatewayReplicas, RoundRobinProxy
from tests.processes import processes_mentioning
from tests.redis_server import RedisServer

_LEASE_SECONDS = "3"


def _request(
    scenes: int, render_id: str = "", height: int = 240, quality: int = types_pb2.QUALITY_DRAFT
) -> render_service_pb2.RenderRequest:
    return render_service_pb2.RenderRequest(
        render_id=render_id,
        scenes=[
            types_pb2.Scene(id=f"s{i}", title=f"Step {i}", narration=f"This is step number {i}. Take it slowly.")
            for i in range(scenes)
        ],
        output=types_pb2.OutputSettings(
            aspect_ratio=types_pb2.ASPECT_RATIO_16_9, height=height, fps=15, quality=quality
        ),
    )


def _stub(address: str) -> render_service_pb2_grpc.RenderServiceStub:
    return render_service_pb2_grpc.RenderServiceStub(grpc.insecure_channel(address))


def _error(call: object) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as error:
        list(call)  # type: ignore[call-overload]
    return error.value


@pytest.fixture(scope="module")
def work_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("replicas-tmp")


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The results folder every replica shares (a ReadWriteMany volume in Kubernetes)."""
    return tmp_path_factory.mktemp("replicas-results")


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="module")
def stack(
    work_dir: Path, results: Path, redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[LocalStack, GatewayReplicas]]:
    """The media services and `gateway` (LocalStack's), plus `gateway-2` and `gateway-3`, all on one Redis."""
    env = {
        "TMPDIR": str(work_dir),
        "RENDER_STATE_URL": redis_server.url,
        "RESULTS_DIR": str(results),
        "RENDER_LEASE_SECONDS": _LEASE_SECONDS,
        "SPEND_LEDGER_PATH": "off",
    }
    logs = tmp_path_factory.mktemp("replicas-logs")
    local = LocalStack(env=env, log_dir=logs).start()
    replicas = GatewayReplicas(local, env, logs)
    try:
        replicas.start("gateway-2")
        replicas.start("gateway-3")
        yield local, replicas
    finally:
        replicas.stop()
        local.stop()


def _addresses(stack: tuple[LocalStack, GatewayReplicas]) -> list[str]:
    local, replicas = stack
    return [local.gateway_address, replicas.addresses["gateway-2"], replicas.addresses["gateway-3"]]


def _parts(results: Path) -> list[str]:
    return sorted(p.name for p in results.glob("*.part"))


def _wait_until(condition: object, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {seconds} s: {what}")
        time.sleep(0.1)


def test_watch_and_fetch_are_answered_by_replicas_that_did_not_run_the_render(
    stack: tuple[LocalStack, GatewayReplicas],
) -> None:
    owner, watcher, fetcher = (_stub(address) for address in _addresses(stack))
    call = owner.Render(_request(3, "shared-1"), timeout=120)
    first = next(call)
    assert first.progress.stage == render_service_pb2.RENDER_STAGE_ACCEPTED
    # While it runs: another replica replays its progress from the start and follows it to the summary.
    watched = list(watcher.WatchRender(render_service_pb2.WatchRenderRequest(render_id="shared-1"), timeout=120))
    rest = list(call)
    owned_bytes = b"".join(r.chunk.data for r in rest if r.HasField("chunk"))
    owned_progress = [first.progress, *(r.progress for r in rest if r.HasField("progress"))]
    assert [w.progress for w in watched[:-1]] == owned_progress
    assert sum(bool(p.preview_jpeg) for p in owned_progress) == 3  # each scene's preview is in the shared log
    assert watched[-1].summary == rest[-1].summary
    assert len(owned_bytes) == rest[-1].summary.size_bytes > 0
    # The third replica streams the MP4 from the shared folder, whole and from an offset.
    fetched = list(fetcher.FetchResult(render_service_pb2.FetchResultRequest(render_id="shared-1"), timeout=60))
    assert b"".join(r.chunk.data for r in fetched if r.HasField("chunk")) == owned_bytes
    assert fetched[-1].summary == rest[-1].summary
    tail = fetcher.FetchResult(render_service_pb2.FetchResultRequest(render_id="shared-1", offset=1000), timeout=60)
    assert b"".join(r.chunk.data for r in tail if r.HasField("chunk")) == owned_bytes[1000:]
    # A reused id is refused by any replica, not only the owner.
    error = _error(fetcher.Render(_request(1, "shared-1"), timeout=30))
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS  # type: ignore[attr-defined]


def test_a_cancel_sent_through_another_replica_stops_the_render(
    stack: tuple[LocalStack, GatewayReplicas], work_dir: Path, results: Path
) -> None:
    owner, canceller, watcher = (_stub(address) for address in _addresses(stack))
    call = owner.Render(_request(12, "cancel-far", height=1080, quality=types_pb2.QUALITY_HD), timeout=300)
    assert next(call).progress.stage == render_service_pb2.RENDER_STAGE_ACCEPTED
    # Sent at once, before the owner's first lease renewal could have seen anything.
    cancelled = canceller.CancelRender(render_service_pb2.CancelRenderRequest(render_id="cancel-far"), timeout=10)
    assert cancelled.cancelled
    assert _error(call).code() == grpc.StatusCode.CANCELLED  # type: ignore[attr-defined]
    watch = watcher.WatchRender(render_service_pb2.WatchRenderRequest(render_id="cancel-far"), timeout=30)
    assert _error(watch).code() == grpc.StatusCode.CANCELLED  # type: ignore[attr-defined]
    _wait_until(lambda: not _parts(results) and not processes_mentioning(str(work_dir)), 10, "render stopped")
    assert not (results / "cancel-far.mp4").exists()
    again = canceller.CancelRender(render_service_pb2.CancelRenderRequest(render_id="cancel-far"), timeout=10)
    assert not again.cancelled


def test_the_cli_renders_through_a_round_robin_proxy_five_times_of_five(
    stack: tuple[LocalStack, GatewayReplicas], tmp_path: Path
) -> None:
    proxy = RoundRobinProxy([int(address.rsplit(":", 1)[1]) for address in _addresses(stack)])
    script = tmp_path / "script.yaml"
    script.write_text(
        "output: {aspect_ratio: '16:9', height: 240, fps: 15, quality: draft}\n"
        "scenes:\n"
        "  - {id: one, title: One, narration: The first scene is short.}\n"
        "  - {id: two, title: Two, narration: The second scene is short too.}\n"
    )
    cli = Path(sys.executable).with_name("scenecast")
    try:
        for attempt in range(5):
            output = tmp_path / f"out-{attempt}.mp4"
            done = subprocess.run(
                [str(cli), "render", str(script), "-o", str(output), "--gateway", proxy.address],
                capture_output=True,
                timeout=120,
            )
            assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
            assert output.stat().st_size > 0
    finally:
        proxy.close()
    assert all(count > 0 for count in proxy.connections.values()), proxy.connections


def test_a_replica_killed_mid_render_ends_it_clearly_everywhere(
    stack: tuple[LocalStack, GatewayReplicas], results: Path
) -> None:
    local, replicas = stack
    survivor, other = _stub(local.gateway_address), _stub(replicas.addresses["gateway-3"])
    call = _stub(replicas.addresses["gateway-2"]).Render(
        _request(12, "killed-1", height=1080, quality=types_pb2.QUALITY_HD), timeout=300
    )
    for response in call:
        if response.progress.stage == render_service_pb2.RENDER_STAGE_ASSET_READY:
            break
    replicas.kill("gateway-2")
    assert _error(call).code() == grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]
    assert _parts(results), "the killed replica's temp file should still be there"
    # Once its lease runs out, the survivors end it for every caller: UNAVAILABLE, saying what happened.
    watch = survivor.WatchRender(render_service_pb2.WatchRenderRequest(render_id="killed-1"), timeout=60)
    watched = _error(watch)
    assert watched.code() == grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]
    assert "replica running it went away" in watched.details()  # type: ignore[attr-defined]
    fetch = other.FetchResult(render_service_pb2.FetchResultRequest(render_id="killed-1"), timeout=60)
    assert _error(fetch).code() == grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]
    cancel = other.CancelRender(render_service_pb2.CancelRenderRequest(render_id="killed-1"), timeout=10)
    assert not cancel.cancelled
    # The restarted replica removes the partial MP4 at start-up (its render runs nowhere), in a task of its own that
    # may finish just after the replica answers health.
    replicas.start("gateway-2")
    _wait_until(lambda: not _parts(results), 10, "the partial MP4 removed at start-up")
    assert not (results / "killed-1.mp4").exists()


@pytest.mark.parametrize("method", ["WatchRender", "FetchResult", "CancelRender"])
def test_render_ids_are_checked_before_they_are_looked_up(
    stack: tuple[LocalStack, GatewayReplicas], method: str
) -> None:
    stub = _stub(_addresses(stack)[1])
    request_type = getattr(render_service_pb2, f"{method}Request")

    def call(render_id: str) -> grpc.RpcError:
        with pytest.raises(grpc.RpcError) as error:
            answer = getattr(stub, method)(request_type(render_id=render_id), timeout=10)
            if method != "CancelRender":
                list(answer)
        return error.value

    for bad in ("x" * 1_000_000, "a/../b", "é", "x" * 65):
        error = call(bad)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
        assert "render_id must be 1-64 characters of A-Z, a-z, 0-9, _ and -" in error.details()  # type: ignore[attr-defined]
        assert len(error.details()) < 200  # type: ignore[attr-defined]
    empty = call("")
    assert empty.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    assert "render_id is empty" in empty.details()  # type: ignore[attr-defined]
    unknown = call("x" * 64)
    assert unknown.code() == grpc.StatusCode.NOT_FOUND  # type: ignore[attr-defined]


def test_one_gateway_reindexes_its_results_after_a_restart_and_drops_partial_files(
    stack: tuple[LocalStack, GatewayReplicas], tmp_path: Path
) -> None:
    """No Redis: a gateway of its own (on the same media services) whose results folder outlives it."""
    local, _ = stack
    folder = tmp_path / "results"
    env = {"RENDER_OUTPUT_DIR": str(folder), "RENDER_STATE_URL": "", "SPEND_LEDGER_PATH": "off"}
    alone = GatewayReplicas(local, env, tmp_path)
    try:
        stub = _stub(alone.start("alone"))
        finished = list(stub.Render(_request(2, "kept-1"), timeout=120))
        kept = b"".join(r.chunk.data for r in finished if r.HasField("chunk"))
        call = stub.Render(_request(12, "killed-2", height=1080, quality=types_pb2.QUALITY_HD), timeout=300)
        for response in call:
            if response.progress.stage == render_service_pb2.RENDER_STAGE_ASSET_READY:
                break
        alone.kill("alone")  # SIGKILL mid-render: its temp file stays behind
        planted = folder / "planted.0123456789abcdef.mp4.part"
        planted.write_bytes(b"half an mp4")
        assert len(_parts(folder)) == 2
        stub = _stub(alone.start("alone"))
        assert _parts(folder) == []
        fetched = list(stub.FetchResult(render_service_pb2.FetchResultRequest(render_id="kept-1"), timeout=30))
        assert b"".join(r.chunk.data for r in fetched if r.HasField("chunk")) == kept
        assert fetched[-1].summary == finished[-1].summary
        watched = list(stub.WatchRender(render_service_pb2.WatchRenderRequest(render_id="kept-1"), timeout=30))
        assert [w.progress for w in watched[:-1]] == [r.progress for r in finished if r.HasField("progress")]
        assert sum(bool(w.progress.preview_jpeg) for w in watched) == 2  # the previews survive in the sidecar
        lost = _error(stub.WatchRender(render_service_pb2.WatchRenderRequest(render_id="killed-2"), timeout=30))
        assert lost.code() == grpc.StatusCode.NOT_FOUND  # type: ignore[attr-defined]
        assert sorted(p.name for p in folder.iterdir() if p.is_file()) == ["kept-1.json", "kept-1.mp4"]
    finally:
        alone.stop()
