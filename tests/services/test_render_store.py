"""Both render stores keep the same promises: a cancel sent right after a render was accepted wins over its success,
owners learn of cancels and orphans when they renew, and (Redis) a render whose owner stopped renewing ends
UNAVAILABLE for every reader while its owner's late ending is refused."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import json_format
from scenecast.v1 import render_service_pb2, types_pb2

from gateway.config import GatewaySettings
from gateway.registry import START, Ending, MemoryRenderStore, RedisRenderStore, RenderRegistry, RenderStore
from scenecast_cli.stack import free_port
from services.common.errors import AlreadyExists, NotFound, ProviderUnavailable
from tests.redis_server import RedisServer

_LEASE, _GRACE, _TTL = 0.5, 0.3, 60.0


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with RedisServer() as server:
        yield server.url


@pytest.fixture(params=["memory", "redis"])
def store(request: pytest.FixtureRequest) -> RenderStore:
    if request.param == "memory":
        return MemoryRenderStore(_LEASE, _GRACE, _TTL)
    return RedisRenderStore.from_url(request.getfixturevalue("redis_url"), _LEASE, _GRACE, _TTL)


def _summary() -> Ending:
    return Ending(summary=render_service_pb2.RenderSummary(render_id="r", size_bytes=3))


# When finished renders expire, as epoch seconds: long after these tests.
_FAR = 2e9


async def test_the_log_replays_in_order_and_ends_with_the_summary(
    store: RenderStore, request: pytest.FixtureRequest
) -> None:
    render_id = f"log-{request.node.callspec.id}"
    await store.create(render_id, "owner", f"{render_id}.ab.mp4.part", 60)
    with pytest.raises(AlreadyExists):
        await store.create(render_id, "other", "x", 60)
    accepted = render_service_pb2.RenderProgress(render_id=render_id, message="accepted")
    await store.append(render_id, accepted)
    await store.append(render_id, 3)
    page = await store.read(render_id, START, 0.1)
    assert page.entries == [accepted, 3] and page.part == f"{render_id}.ab.mp4.part"
    assert (await store.read(render_id, page.cursor, 0.1)).entries == []  # waited, nothing new
    assert await store.finish(render_id, _summary(), _FAR) == _summary()
    assert (await store.read(render_id, START, 0.1)).entries == [accepted, 3, _summary()]
    assert not await store.request_cancel(render_id)
    with pytest.raises(NotFound):
        await store.read("never-made", START, 0.1)


async def test_a_cancel_right_after_the_start_wins_over_success(
    store: RenderStore, request: pytest.FixtureRequest
) -> None:
    render_id = f"cancel-{request.node.callspec.id}"
    await store.create(render_id, "owner", "p", 60)
    assert await store.request_cancel(render_id)
    signals = await store.renew([render_id])
    assert signals[render_id].alive and signals[render_id].cancel
    ended = await store.finish(render_id, _summary(), _FAR)
    assert ended is not None and ended.summary is None and ended.code == grpc.StatusCode.CANCELLED
    assert (await store.read(render_id, START, 0.1)).entries == [ended]


async def test_a_render_nobody_watches_is_reported_orphaned(store: RenderStore, request: pytest.FixtureRequest) -> None:
    render_id = f"orphan-{request.node.callspec.id}"
    await store.create(render_id, "owner", "p", 60)
    assert (await store.renew([render_id]))[render_id].watched
    await asyncio.sleep(_GRACE * 2)
    assert not (await store.renew([render_id]))[render_id].watched
    await store.watch(render_id)
    assert (await store.renew([render_id]))[render_id].watched


async def test_a_lapsed_lease_ends_the_render_for_every_reader(redis_url: str) -> None:
    store = RedisRenderStore.from_url(redis_url, _LEASE, _GRACE, _TTL)
    await store.create("lapsed", "owner", "p", 60)
    assert await store.running("lapsed")
    await asyncio.sleep(_LEASE * 2)  # the owner never renews, as a killed replica
    assert not await store.running("lapsed")
    assert (await store.read("lapsed", START, 0.1)).entries == []  # this read ends it
    (ending,) = (await store.read("lapsed", START, 0.1)).entries
    assert isinstance(ending, Ending) and ending.code == grpc.StatusCode.UNAVAILABLE
    assert "went away" in ending.message
    assert not (await store.renew(["lapsed"]))["lapsed"].alive
    assert await store.finish("lapsed", _summary(), _FAR) is None  # the owner's late success is refused
    assert not await store.request_cancel("lapsed")


async def test_an_unreachable_redis_is_unavailable_and_its_url_is_never_shown() -> None:
    url = f"redis://:secret-password@127.0.0.1:{free_port()}/0"
    store = RedisRenderStore.from_url(url, _LEASE, _GRACE, _TTL)
    with pytest.raises(ProviderUnavailable) as error:
        await store.read("any", START, 0.1)
    assert "RENDER_STATE_URL" in str(error.value) and "secret-password" not in str(error.value)


def _result(folder: Path, render_id: str, expires_at: float, data: bytes) -> render_service_pb2.RenderSummary:
    """A finished result as a gateway leaves it: the MP4 and its sidecar."""
    summary = render_service_pb2.RenderSummary(render_id=render_id, size_bytes=len(data), width=426, height=240)
    accepted = render_service_pb2.RenderProgress(render_id=render_id, message="accepted")
    (folder / f"{render_id}.mp4").write_bytes(data)
    sidecar = {
        "render_id": render_id,
        "expires_at": expires_at,
        "summary": json_format.MessageToDict(summary),
        "progress": [json_format.MessageToDict(accepted)],
    }
    (folder / f"{render_id}.json").write_text(json.dumps(sidecar))
    return summary


def test_start_up_reindexes_results_and_removes_what_expired_or_is_partial(tmp_path: Path) -> None:
    now = time.time()
    summary = _result(tmp_path, "fresh", now + 60, b"an mp4")
    _result(tmp_path, "expired", now - 1, b"an old mp4")
    (tmp_path / "expired-too.json").write_text("{not json")
    (tmp_path / "expired-too.mp4").write_bytes(b"x")
    (tmp_path / "no-video.json").write_text(json.dumps({"expires_at": now + 60, "summary": {}, "progress": []}))
    for name in ("legacy-old.mp4", "legacy-new.mp4", "cut.0123abcd.mp4.part", "cut.89ab.json.part"):
        (tmp_path / name).write_bytes(b"partial")
    os.utime(tmp_path / "legacy-old.mp4", (now - 120, now - 120))  # older than the TTL, with no sidecar
    for name in ("spend-ledger.sqlite3", "notes.txt"):
        (tmp_path / name).write_bytes(b"not ours")

    async def scenario() -> list[object]:
        registry = RenderRegistry(MemoryRenderStore(3, 3, 60), tmp_path)
        return [event async for event in registry.follow("fresh", progress=True, chunks=True, offset=3)]

    progress, chunk, last = asyncio.run(scenario())
    assert progress == render_service_pb2.RenderProgress(render_id="fresh", message="accepted")
    assert chunk == types_pb2.MediaChunk(offset=3, data=b"mp4") and last == summary
    kept = ["fresh.json", "fresh.mp4", "legacy-new.mp4", "notes.txt", "spend-ledger.sqlite3"]
    assert sorted(p.name for p in tmp_path.iterdir()) == kept


def test_start_up_keeps_the_temp_file_another_gateway_is_writing(tmp_path: Path) -> None:
    """Two gateways on one results folder without Redis (a second `scenecast serve`, the tests' stacks): the one
    starting must not take the other's render, which its own registry does not know, for a dead one's leftover."""
    (tmp_path / "dead.0123abcd.mp4.part").write_bytes(b"left by a killed gateway")
    live = tmp_path / "live.89abcdef.mp4.part"
    with live.open("wb") as writer:
        # What the writing gateway holds (RenderRegistry.start); another open file, so it conflicts like a process.
        fcntl.flock(writer.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)

        async def scenario() -> None:
            registry = RenderRegistry(MemoryRenderStore(3, 3, 60), tmp_path)
            with pytest.raises(NotFound):
                await registry.cancel("live")

        asyncio.run(scenario())
        assert sorted(p.name for p in tmp_path.iterdir()) == [live.name]


@pytest.mark.parametrize(
    ("variable", "value"),
    [("RENDER_LEASE_SECONDS", "1"), ("ORPHAN_GRACE_SECONDS", "0"), ("RESULT_TTL_SECONDS", "0")],
)
def test_registry_times_that_cannot_work_stop_start_up(
    variable: str, value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValueError, match=variable):
        GatewaySettings()
