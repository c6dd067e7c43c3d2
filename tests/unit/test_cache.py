"""The asset cache's keys and both backends (a folder; a real redis-server): atomic entries, damage detection, LRU
eviction, single flight within a process and across processes or replicas."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import stat
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import pytest
import redis
from prometheus_client import REGISTRY
from scenecast.v1 import image_service_pb2, types_pb2

from scenecast_cli.stack import free_port
from services.audio.providers.base import SpeechJob
from services.common import cache as cache_module
from services.common.cache import (
    AssetCache,
    CachedAsset,
    CachedTiming,
    RedisAssetCache,
    asset_responses,
    avatar_key,
    clip_key,
    image_key,
    open_cache,
    speech_key,
)
from services.common.errors import ProviderUnavailable
from services.common.providers import Quality
from services.common.stock import Credit
from services.image.providers.base import ImageJob
from services.video.avatars.base import AvatarJob, AvatarScene
from services.video.providers.base import ClipJob
from tests.redis_server import RedisServer

IMAGE_MODULE = "services.image.providers.openai_images"
SPEECH_MODULE = "services.audio.providers.openai_tts"
CLIP_MODULE = "services.video.providers.wan"
AVATAR_MODULE = "services.video.avatars.heygen"

IMAGE = ImageJob("a ladder", "Ladders", 0, 1280, 720, Quality.STANDARD, "16:9", render_id="r1")
SPEECH = SpeechJob("Check the ladder.", "alloy", Quality.STANDARD, render_id="r1")
CLIP = ClipJob("a ladder", "Ladders", 0, 1280, 720, 30, 4000, Quality.STANDARD, None, Path("/tmp/a"), "r1")
AVATAR = AvatarJob((AvatarScene("One.", "A"), AvatarScene("Two.")), 1280, 720, "16:9", "anna", "v1", "white", "r1")


# The providers' output settings (ProviderRegistry.fingerprint).
CONFIG = {"OPENAI_BASE_URL": ""}


def _keys() -> dict[str, str]:
    return {
        "image": image_key("gpt-image-1-mini", IMAGE_MODULE, CONFIG, IMAGE),
        "speech": speech_key("openai", SPEECH_MODULE, CONFIG, SPEECH),
        "clip": clip_key("wan", CLIP_MODULE, CONFIG, CLIP, "ab" * 32),
        "avatar": avatar_key("heygen", AVATAR_MODULE, CONFIG, AVATAR),
    }


def test_keys_are_stable_hex_digests_and_ignore_what_does_not_change_the_asset() -> None:
    keys = _keys()
    assert keys == _keys()
    assert all(len(key) == 64 and int(key, 16) >= 0 for key in keys.values())
    assert len(set(keys.values())) == len(keys)
    # The render id, scene index and working folder do not change what a provider makes.
    assert (
        image_key("gpt-image-1-mini", IMAGE_MODULE, CONFIG, replace(IMAGE, render_id="r2", scene_index=5))
        == keys["image"]
    )
    assert speech_key("openai", SPEECH_MODULE, CONFIG, replace(SPEECH, render_id="r2")) == keys["speech"]
    other = replace(CLIP, render_id="r2", scene_index=3, work_dir=Path("/tmp/b"))
    assert clip_key("wan", CLIP_MODULE, CONFIG, other, "ab" * 32) == keys["clip"]
    assert avatar_key("heygen", AVATAR_MODULE, CONFIG, replace(AVATAR, render_id="r2", deadline=5.0)) == keys["avatar"]


@pytest.mark.parametrize(
    "changed",
    [
        {"prompt": "a stool"},
        {"title": "Stools"},
        {"width": 1920},
        {"height": 1080},
        {"quality": Quality.HD},
        {"aspect": "1:1"},
    ],
)
def test_image_key_follows_every_input(changed: dict[str, Any]) -> None:
    assert image_key("gpt-image-1-mini", IMAGE_MODULE, CONFIG, replace(IMAGE, **changed)) != _keys()["image"]


@pytest.mark.parametrize("changed", [{"text": "Check it."}, {"voice": "nova"}, {"quality": Quality.HD}])
def test_speech_key_follows_every_input(changed: dict[str, Any]) -> None:
    assert speech_key("openai", SPEECH_MODULE, CONFIG, replace(SPEECH, **changed)) != _keys()["speech"]


@pytest.mark.parametrize(
    "changed",
    [
        {"prompt": "x"},
        {"title": "x"},
        {"width": 640},
        {"height": 360},
        {"fps": 24},
        {"duration_ms": 5000},
        {"quality": Quality.DRAFT},
    ],
)
def test_clip_key_follows_every_input(changed: dict[str, Any]) -> None:
    assert clip_key("wan", CLIP_MODULE, CONFIG, replace(CLIP, **changed), "ab" * 32) != _keys()["clip"]


def test_clip_key_follows_the_source_image() -> None:
    assert clip_key("wan", CLIP_MODULE, CONFIG, CLIP, "cd" * 32) != _keys()["clip"]
    assert clip_key("wan", CLIP_MODULE, CONFIG, CLIP, "") != _keys()["clip"]


@pytest.mark.parametrize(
    "changed",
    [
        {"scenes": (AvatarScene("One.", "A"), AvatarScene("Two!"))},
        {"scenes": (AvatarScene("One.", "B"), AvatarScene("Two."))},
        {"scenes": (AvatarScene("One.", "A"),)},
        {"width": 720},
        {"height": 1280},
        {"aspect": "9:16"},
        {"avatar": "bob"},
        {"voice": "v2"},
        {"background": "black"},
    ],
)
def test_avatar_key_follows_every_scene_and_setting(changed: dict[str, Any]) -> None:
    assert avatar_key("heygen", AVATAR_MODULE, CONFIG, replace(AVATAR, **changed)) != _keys()["avatar"]


def test_keys_follow_the_provider_its_code_and_its_configuration() -> None:
    module = "services.image.providers.replicate_images"
    before = image_key("sdxl", module, CONFIG, IMAGE)
    assert image_key("flux", module, CONFIG, IMAGE) != before
    # Another module stands in for an edited provider module: its source hash differs.
    assert image_key("sdxl", IMAGE_MODULE, CONFIG, IMAGE) != before
    # Every output setting's value (tests/unit/test_providers.py checks that a provider's settings get here).
    assert image_key("sdxl", module, {"OPENAI_BASE_URL": "http://x"}, IMAGE) != before


def _asset(data: bytes = b"picture" * 10, cost: float = 0.015) -> CachedAsset:
    return CachedAsset(
        data=data,
        mime_type="audio/wav",
        model="tts-1",
        estimated_cost_usd=cost,
        sample_rate=24000,
        duration_ms=1500,
        timings=(CachedTiming("Check the ladder.", 0, 1500),),
        # Fixed, so that an asset read back compares equal to the one stored only if its call id came back too.
        call_id="the-provider-call",
        call_render_id="render-1",
    )


KEY = "ab" + "0" * 62


def test_an_entry_round_trips_with_its_metadata(tmp_path: Path) -> None:
    cache = AssetCache(tmp_path)
    assert cache.get(KEY) is None
    cache.put(KEY, _asset())
    assert cache.get(KEY) == _asset()
    assert sorted(p.name for p in (tmp_path / "ab").iterdir()) == [".lock", f"{KEY}.bin", f"{KEY}.json"]


def test_files_move_into_place_whole_from_the_same_folder_data_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = AssetCache(tmp_path)
    moves: list[tuple[Path, Path, int]] = []
    real_replace = os.replace

    def recording_replace(source: Any, target: Any) -> None:
        moves.append((Path(source), Path(target), Path(source).stat().st_size))
        real_replace(source, target)

    monkeypatch.setattr(cache_module.os, "replace", recording_replace)
    cache.put(KEY, _asset())
    assert [target.name for _, target, _ in moves] == [f"{KEY}.bin", f"{KEY}.json"]
    assert all(source.parent == target.parent and source.suffix == ".tmp" for source, target, _ in moves)
    assert moves[0][2] == len(_asset().data)
    assert not list(tmp_path.glob("*/*.tmp"))


def test_a_write_interrupted_between_data_and_metadata_is_a_miss(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    cache = AssetCache(tmp_path)
    real_replace = os.replace

    def crash_on_metadata(source: Any, target: Any) -> None:
        if str(target).endswith(".json"):
            raise OSError("disk full")
        real_replace(source, target)

    monkeypatch.setattr(cache_module.os, "replace", crash_on_metadata)
    with pytest.raises(OSError, match="disk full"):
        cache.put(KEY, _asset())
    monkeypatch.setattr(cache_module.os, "replace", real_replace)
    assert not list(tmp_path.glob("*/*.tmp")), "temp files are removed when a write fails"
    with caplog.at_level(logging.WARNING):
        assert cache.get(KEY) is None
    assert "metadata file is missing" in caplog.text
    assert not (tmp_path / "ab" / f"{KEY}.bin").exists()


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda d, m: d.write_bytes(b"x" + d.read_bytes()[1:]), "SHA-256"),
        (lambda d, m: d.unlink(), "data file is missing"),
        (lambda d, m: m.write_text("{not json"), "unreadable"),
        (lambda d, m: m.write_text("[]"), "unreadable"),
    ],
)
def test_a_damaged_entry_is_logged_removed_and_missed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: Any, reason: str
) -> None:
    cache = AssetCache(tmp_path)
    cache.put(KEY, _asset())
    data, meta = tmp_path / "ab" / f"{KEY}.bin", tmp_path / "ab" / f"{KEY}.json"
    damage(data, meta)
    with caplog.at_level(logging.WARNING):
        assert cache.get(KEY) is None
    assert reason in caplog.text
    assert not data.exists() and not meta.exists()
    cache.put(KEY, _asset())
    assert cache.get(KEY) == _asset()


def test_least_recently_used_entries_are_evicted_beyond_the_budget(tmp_path: Path) -> None:
    keys = [f"{n:02x}" + "1" * 62 for n in range(4)]
    probe = AssetCache(tmp_path / "probe")
    probe.put(keys[0], _asset(b"x" * 1000))
    entry_bytes = sum(p.stat().st_size for p in (tmp_path / "probe").glob("*/*.*") if p.suffix in (".bin", ".json"))
    cache = AssetCache(tmp_path / "cache", max_bytes=3 * entry_bytes + entry_bytes // 2)
    for age, key in enumerate(keys[:3]):
        cache.put(key, _asset(b"x" * 1000))
        os.utime(tmp_path / "cache" / key[:2] / f"{key}.json", (1000 + age, 1000 + age))
    assert cache.get(keys[0]) is not None  # a hit makes the oldest entry the most recent
    cache.put(keys[3], _asset(b"x" * 1000))
    assert [cache.get(key) is not None for key in keys] == [True, False, True, True]


def test_an_asset_larger_than_the_budget_is_not_stored(tmp_path: Path) -> None:
    cache = AssetCache(tmp_path, max_bytes=10)
    cache.put(KEY, _asset())
    assert cache.get(KEY) is None


def test_eviction_tolerates_files_vanishing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = AssetCache(tmp_path)
    cache.put(KEY, _asset())
    listed = list(cache._files())
    (tmp_path / "ab" / f"{KEY}.bin").unlink()
    (tmp_path / "ab" / f"{KEY}.json").unlink()
    monkeypatch.setattr(cache, "_files", lambda: iter(listed))
    cache.max_bytes = 1
    cache.evict()


def _write_many(root: str, marker: int) -> None:
    cache = AssetCache(Path(root))
    for round_ in range(40):
        cache.put(KEY, _asset(bytes([marker]) * (5000 + round_)))


def test_two_processes_writing_the_same_key_leave_a_valid_entry(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = AssetCache(tmp_path)
    with caplog.at_level(logging.WARNING), ProcessPoolExecutor(2) as pool:
        writers = [pool.submit(_write_many, str(tmp_path), marker) for marker in (1, 2)]
        while not all(writer.done() for writer in writers):
            asset = cache.get(KEY)  # reads while the writers replace the entry: whole or absent, never damaged
            assert asset is None or set(asset.data) in ({1}, {2})
        for writer in writers:
            writer.result()
    final = cache.get(KEY)
    assert final is not None and set(final.data) in ({1}, {2})
    assert "damaged" not in caplog.text
    assert not list(tmp_path.glob("*/*.tmp"))


def test_empty_or_off_disables_the_cache(tmp_path: Path) -> None:
    assert AssetCache.from_settings("", 100) is None
    assert AssetCache.from_settings("off", 100) is None
    enabled = AssetCache.from_settings(str(tmp_path), 100)
    assert enabled is not None and enabled.root == tmp_path and enabled.max_bytes == 100


def _modes(root: Path) -> dict[str, int]:
    """Each folder's and file's permission bits, by path below `root` ("." for the folder itself)."""
    paths = [root, *root.rglob("*")]
    return {str(path.relative_to(root)): stat.S_IMODE(path.lstat().st_mode) for path in paths}


async def test_the_folder_cache_is_private_to_its_user(tmp_path: Path) -> None:
    previous = os.umask(0o022)  # the usual umask, under which a folder made without care is 0755 and a file 0644
    try:
        cache = open_cache("", str(tmp_path / "a" / "assets"), 10_000)
        assert isinstance(cache, AssetCache)
        lock = cache._lock_nowait(KEY)
        assert lock is not None
        held = _modes(tmp_path / "a")
        lock.release()
        cache.put(KEY, _asset())
        cache.put_file("cd" + KEY[2:], _file(tmp_path / "segment.mp4", b"segment"), "video/mp4")
    finally:
        os.umask(previous)
    assert held == {".": 0o700, "assets": 0o700, "assets/ab": 0o700, f"assets/ab/{KEY}.lock": 0o600}
    assert _modes(tmp_path / "a" / "assets") == {
        ".": 0o700,
        "ab": 0o700,
        "ab/.lock": 0o600,
        f"ab/{KEY}.bin": 0o600,
        f"ab/{KEY}.json": 0o600,
        "cd": 0o700,
        "cd/.lock": 0o600,
        f"cd/cd{KEY[2:]}.bin": 0o600,
        f"cd/cd{KEY[2:]}.json": 0o600,
    }


def _file(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


async def test_links_planted_at_the_cache_s_file_names_are_never_followed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Every name the folder cache writes: the shard lock, the key lock, the entry's data and metadata. The lock files
    are refused (logged, the asset made without them); the entry's files are written fresh and renamed over the links.
    """
    shard = tmp_path / "cache" / "ab"
    shard.mkdir(parents=True)
    victim = _file(tmp_path / "precious.txt", b"precious")
    for name in (f"{KEY}.lock", f"{KEY}.bin", f"{KEY}.json"):
        (shard / name).symlink_to(victim)
    (shard / ".lock").symlink_to(tmp_path / "created-through-a-link")
    cache = AssetCache(tmp_path / "cache")
    made = []

    async def make() -> CachedAsset:
        made.append(1)
        return _asset()

    asset, hit = await cache.fetch("image", KEY, False, make, time.monotonic() + 20)
    assert (asset, hit, made) == (_asset(), False, [1])
    assert victim.read_bytes() == b"precious" and not (tmp_path / "created-through-a-link").exists()
    assert "cannot lock image entry" in caplog.text and "cannot store image entry" in caplog.text
    # Without the shard lock, nothing is stored; once the planted link is gone, the cache works again.
    (shard / ".lock").unlink()
    (shard / f"{KEY}.lock").unlink()
    cache.put(KEY, _asset())
    assert cache.get(KEY) == _asset() and not (shard / f"{KEY}.bin").is_symlink()
    assert victim.read_bytes() == b"precious"


def test_an_unsafe_cache_folder_stops_the_service_at_start_up_naming_the_setting(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    with pytest.raises(ValueError, match=r"ASSET_CACHE_DIR=.*link is a symbolic link"):
        open_cache("", str(tmp_path / "link"), 100)
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match=r"ASSET_CACHE_DIR=.*file is not a folder"):
        open_cache("", str(tmp_path / "file"), 100)


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a folder to another user needs root")
def test_a_cache_folder_of_another_user_is_refused(tmp_path: Path) -> None:
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    os.chown(theirs, 65534, 65534)
    with pytest.raises(ValueError, match=r"ASSET_CACHE_DIR=.*theirs belongs to uid 65534"):
        open_cache("", str(theirs), 100)


def _count(outcome: str) -> float:
    return REGISTRY.get_sample_value("scenecast_asset_cache_total", {"kind": "speech", "outcome": outcome}) or 0.0


def test_lookups_count_hits_misses_and_bypasses(tmp_path: Path) -> None:
    cache = AssetCache(tmp_path)
    before = {outcome: _count(outcome) for outcome in ("hit", "miss", "bypass")}

    async def run() -> None:
        assert await cache.lookup("speech", KEY, no_cache=False) is None
        await cache.store("speech", KEY, _asset())
        assert await cache.lookup("speech", KEY, no_cache=False) == _asset()
        assert await cache.lookup("speech", KEY, no_cache=True) is None

    asyncio.run(run())
    assert {outcome: _count(outcome) - before[outcome] for outcome in before} == {"hit": 1, "miss": 1, "bypass": 1}


# ---------------------------------------------------------------- single flight on the directory backend


def _waits(where: str) -> float:
    labels = {"kind": "image", "where": where}
    return REGISTRY.get_sample_value("scenecast_asset_cache_waits_total", labels) or 0.0


class CountingMaker:
    """Stands in for a provider call: counts its calls and takes `seconds`, like a slow image model."""

    def __init__(self, seconds: float = 0.3, data: bytes = b"made once") -> None:
        self.seconds = seconds
        self.data = data
        self.calls = 0
        self.finished = 0

    async def __call__(self) -> CachedAsset:
        self.calls += 1
        await asyncio.sleep(self.seconds)
        self.finished += 1
        return _asset(self.data)


async def test_concurrent_fetches_in_one_process_make_the_asset_once(tmp_path: Path) -> None:
    cache = AssetCache(tmp_path)
    make = CountingMaker()
    waits_before = _waits("process")
    results = await asyncio.gather(*(cache.fetch("image", KEY, False, make, None) for _ in range(8)))
    assert make.calls == 1
    assert {asset for asset, _ in results} == {_asset(b"made once")}
    assert sorted(hit for _, hit in results) == [False] + [True] * 7, "one call paid; the others joined it"
    assert _waits("process") - waits_before == 7
    assert cache.get(KEY) == _asset(b"made once")
    assert not (tmp_path / "ab" / f"{KEY}.lock").exists(), "the lock file goes with the lock"
    again = await cache.fetch("image", KEY, False, make, None)
    assert again == (_asset(b"made once"), True) and make.calls == 1


async def test_a_generation_outlives_its_cancelled_caller(tmp_path: Path) -> None:
    """What lets a dead render resume: the asset it was paying for is finished and kept."""
    cache = AssetCache(tmp_path)
    make = CountingMaker(seconds=0.3)
    caller = asyncio.create_task(cache.fetch("image", KEY, False, make, None))
    await asyncio.sleep(0.05)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert make.calls == 1 and make.finished == 0
    for _ in range(50):
        if cache.get(KEY) is not None:
            break
        await asyncio.sleep(0.02)
    assert make.finished == 1 and cache.get(KEY) == _asset(b"made once")
    assert await cache.fetch("image", KEY, False, make, None) == (_asset(b"made once"), True)
    assert make.calls == 1


async def test_a_generation_stops_at_the_first_callers_deadline(tmp_path: Path) -> None:
    cache = AssetCache(tmp_path)
    make = CountingMaker(seconds=5.0)
    started = time.monotonic()
    with pytest.raises(ProviderUnavailable, match="deadline"):
        await cache.fetch("image", KEY, False, make, time.monotonic() + 0.2)
    assert 0.15 < time.monotonic() - started < 1.0
    assert make.finished == 0 and cache.get(KEY) is None
    assert not (tmp_path / "ab" / f"{KEY}.lock").exists(), "the lock is let go"


async def test_no_cache_makes_the_asset_anew_and_replaces_the_entry(tmp_path: Path) -> None:
    cache = AssetCache(tmp_path)
    cache.put(KEY, _asset(b"old"))
    bypasses = _count("bypass")
    make = CountingMaker(seconds=0.0, data=b"new")
    assert await cache.fetch("speech", KEY, True, make, None) == (_asset(b"new"), False)
    assert make.calls == 1 and cache.get(KEY) == _asset(b"new")
    assert _count("bypass") - bypasses == 1


def _fetch_in_process(root: str, marker_dir: str) -> tuple[bytes, bool, float]:
    """One "replica": fetches KEY through its own AssetCache on the shared folder, noting each provider call; returns
    the bytes, whether it was a hit, and how often it waited for another process."""

    async def make() -> CachedAsset:
        (Path(marker_dir) / f"made-by-{os.getpid()}").touch()
        await asyncio.sleep(1.0)
        return _asset(b"from one process")

    async def fetch() -> tuple[CachedAsset, bool]:
        return await AssetCache(Path(root)).fetch("image", KEY, False, make, time.monotonic() + 20)

    waits_before = _waits("shared")
    asset, hit = asyncio.run(fetch())
    return asset.data, hit, _waits("shared") - waits_before


def test_processes_sharing_a_folder_make_the_asset_once(tmp_path: Path) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    with ProcessPoolExecutor(2) as pool:
        results = list(pool.map(_fetch_in_process, [str(tmp_path / "cache")] * 2, [str(markers)] * 2))
    assert len(list(markers.iterdir())) == 1, "the flock let one process call the provider"
    assert sorted(results) == [(b"from one process", False, 0.0), (b"from one process", True, 1.0)], (
        "the other process waited for it, then read it"
    )


# ---------------------------------------------------------------- the Redis backend, against a real redis-server


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture
def client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    with redis_server.client() as connection:
        yield connection


@pytest.fixture
def prefix(request: pytest.FixtureRequest) -> str:
    """Each test's keys under their own prefix, so tests sharing the server do not see each other's entries."""
    return "test:" + re.sub(r"\W", "-", request.node.name) + ":"  # no glob characters, for SCAN MATCH


def _redis_cache(client: redis.Redis, prefix: str, **options: Any) -> RedisAssetCache:
    return RedisAssetCache(client, prefix=prefix, piece_bytes=1000, **options)


def _redis_keys(client: redis.Redis, pattern: str) -> list[str]:
    return sorted(key.decode() for key in client.scan_iter(match=pattern))


def test_a_redis_entry_round_trips_in_pieces_that_do_not_expire(client: redis.Redis, prefix: str) -> None:
    cache = _redis_cache(client, prefix)
    asset = _asset(bytes(range(256)) * 21 + b"tail")  # 5380 bytes: five whole pieces and a partial one
    assert cache.get(KEY) is None
    cache.put(KEY, asset)
    assert cache.get(KEY) == asset
    pieces = _redis_keys(client, f"{prefix}d:*")
    assert len(pieces) == 6 and all(client.pttl(piece) == -1 for piece in pieces)
    assert max(client.strlen(piece) for piece in pieces) == 1000
    assert int(client.get(f"{prefix}bytes") or 0) == len(asset.data)
    assert client.zrange(f"{prefix}lru", 0, -1) == [KEY.encode()]


def test_a_large_redis_entry_is_kept_in_4_mib_pieces(client: redis.Redis, prefix: str) -> None:
    cache = RedisAssetCache(client, prefix=prefix)
    asset = _asset(os.urandom(9 * 1024 * 1024))
    cache.put(KEY, asset)
    sizes = [client.strlen(piece) for piece in _redis_keys(client, f"{prefix}d:*")]
    assert sorted(sizes) == [1024 * 1024, 4 * 1024 * 1024, 4 * 1024 * 1024]
    assert cache.get(KEY) == asset


def test_replacing_a_redis_entry_removes_the_old_pieces(client: redis.Redis, prefix: str) -> None:
    cache = _redis_cache(client, prefix)
    cache.put(KEY, _asset(b"a" * 3500))
    cache.put(KEY, _asset(b"b" * 1500))
    assert cache.get(KEY) == _asset(b"b" * 1500)
    assert len(_redis_keys(client, f"{prefix}d:*")) == 2
    assert int(client.get(f"{prefix}bytes") or 0) == 1500


def _corrupt_piece(client: redis.Redis, prefix: str) -> None:
    piece = _redis_keys(client, f"{prefix}d:*")[0]
    data = bytearray(client.get(piece) or b"")
    data[0] ^= 0xFF
    client.set(piece, bytes(data))


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (_corrupt_piece, "SHA-256"),
        (lambda c, p: c.delete(_redis_keys(c, f"{p}d:*")[-1]), "is missing"),
        (lambda c, p: c.hset(f"{p}m:{KEY}", "asset", "{not json"), "unreadable"),
        (lambda c, p: c.hdel(f"{p}m:{KEY}", "pieces"), "unreadable"),
    ],
)
def test_a_damaged_redis_entry_is_logged_removed_and_missed(
    client: redis.Redis, prefix: str, caplog: pytest.LogCaptureFixture, damage: Any, reason: str
) -> None:
    cache = _redis_cache(client, prefix)
    cache.put(KEY, _asset(b"x" * 2500))
    damage(client, prefix)
    with caplog.at_level(logging.WARNING):
        assert cache.get(KEY) is None
    assert "damaged" in caplog.text and reason in caplog.text
    assert _redis_keys(client, f"{prefix}[dm]:*") == []
    assert int(client.get(f"{prefix}bytes") or 0) == 0 and client.zcard(f"{prefix}lru") == 0
    cache.put(KEY, _asset(b"x" * 2500))
    assert cache.get(KEY) == _asset(b"x" * 2500)


def test_a_redis_write_that_dies_before_its_commit_leaves_nothing_behind(
    client: redis.Redis, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = _redis_cache(client, prefix, pending_seconds=0.3)

    def writer_dies(**_: Any) -> None:
        raise ConnectionError("the replica was killed")

    monkeypatch.setattr(cache, "_commit", writer_dies)
    with pytest.raises(ConnectionError):
        cache.put(KEY, _asset(b"x" * 2500))
    assert len(_redis_keys(client, f"{prefix}d:*")) == 3 and cache.get(KEY) is None, (
        "pieces without metadata are no entry"
    )
    time.sleep(0.4)
    assert _redis_keys(client, f"{prefix}*") == [], "and they expire"


def test_redis_entries_are_evicted_least_recently_used_first_within_the_budget(
    client: redis.Redis, prefix: str
) -> None:
    client.set("other-app:session", b"not ours")  # the Redis is shared: eviction must keep to the cache's own keys
    keys = [f"{n:02x}" + "1" * 62 for n in range(4)]
    cache = _redis_cache(client, prefix, max_bytes=3500)
    for key in keys[:3]:
        cache.put(key, _asset(b"x" * 1000))
        time.sleep(0.002)  # last-use times come from the server's clock, in milliseconds
    assert cache.get(keys[0]) is not None  # a hit makes the oldest entry the most recent
    time.sleep(0.002)
    cache.put(keys[3], _asset(b"x" * 1000))
    assert [cache.get(key) is not None for key in keys] == [True, False, True, True]
    assert int(client.get(f"{prefix}bytes") or 0) == 3000
    assert len(_redis_keys(client, f"{prefix}d:*")) == 3
    assert client.get("other-app:session") == b"not ours"
    cache.put(KEY, _asset(b"x" * 3501))
    assert cache.get(KEY) is None, "an asset larger than the whole budget is not stored"


async def test_replicas_sharing_redis_make_an_asset_once_while_the_owner_renews_its_lock(
    client: redis.Redis, prefix: str
) -> None:
    """Two caches on one Redis stand for two replicas; making takes over two lock lifetimes, so only renewal keeps
    the second replica from taking over."""
    replicas = [_redis_cache(client, prefix, lock_seconds=0.5) for _ in range(2)]
    make = CountingMaker(seconds=1.2)
    waits_before = _waits("shared")
    results = await asyncio.gather(*(replica.fetch("image", KEY, False, make, None) for replica in replicas))
    assert make.calls == 1
    assert sorted(hit for _, hit in results) == [False, True]
    assert {asset for asset, _ in results} == {_asset(b"made once")}
    assert _waits("shared") - waits_before == 1
    assert _redis_keys(client, f"{prefix}lock:*") == [], "the owner let its lock go"


async def test_a_dead_owners_lock_expires_and_a_waiter_takes_over(client: redis.Redis, prefix: str) -> None:
    cache = _redis_cache(client, prefix, lock_seconds=0.5)
    dead = cache._lock_nowait(KEY)  # taken by a replica that then died: never renewed, never released
    assert dead is not None
    lock_name = f"{prefix}lock:{KEY}"

    async def make() -> CachedAsset:
        dead.release()  # the old owner waking up must not drop the new owner's lock
        assert client.get(lock_name) not in (None, dead.token.encode())
        return _asset(b"made by the waiter")

    started = time.monotonic()
    assert await cache.fetch("image", KEY, False, make, time.monotonic() + 10) == (_asset(b"made by the waiter"), False)
    assert 0.4 < time.monotonic() - started < 2.0
    assert client.get(lock_name) is None


async def test_a_redis_that_is_down_costs_the_call_nothing_but_the_cache(caplog: pytest.LogCaptureFixture) -> None:
    cache = open_cache(f"redis://127.0.0.1:{free_port()}/0", "off", 10_000)
    assert isinstance(cache, RedisAssetCache)
    make = CountingMaker(seconds=0.0)
    with caplog.at_level(logging.WARNING):
        assert await cache.fetch("image", KEY, False, make, None) == (_asset(b"made once"), False)
    assert make.calls == 1
    assert "cannot read" in caplog.text and "without single flight" in caplog.text and "cannot store" in caplog.text


def test_the_settings_choose_the_backend(tmp_path: Path, redis_server: RedisServer) -> None:
    assert isinstance(open_cache(redis_server.url, str(tmp_path), 100), RedisAssetCache)
    assert isinstance(open_cache("", str(tmp_path), 100), AssetCache)
    assert open_cache("", "off", 100) is None
    with pytest.raises(ValueError, match="ASSET_CACHE_URL"):
        open_cache("http://127.0.0.1:6379", "off", 100)


def test_files_go_in_and_out_of_the_folder_a_block_at_a_time_and_are_hash_checked(tmp_path: Path) -> None:
    cache = AssetCache(tmp_path / "cache", max_bytes=10 * 1024 * 1024)
    source = tmp_path / "segment.mp4"
    source.write_bytes(os.urandom(3 * 1024 * 1024 + 17))  # several copy blocks and a partial one
    key = "ab" * 32
    cache.put_file(key, source, "video/mp4")

    restored = tmp_path / "restored.mp4"
    assert cache.get_file(key, restored)
    assert restored.read_bytes() == source.read_bytes()
    assert not cache.get_file("cd" * 32, tmp_path / "missing.mp4")

    # One flipped byte: the entry is dropped, the copy removed, and the next look-up is a miss.
    data_path = next((tmp_path / "cache").rglob(f"{key}.bin"))
    damaged = bytearray(data_path.read_bytes())
    damaged[1000] ^= 0xFF
    data_path.write_bytes(bytes(damaged))
    assert not cache.get_file(key, tmp_path / "again.mp4")
    assert not (tmp_path / "again.mp4").exists()
    assert not data_path.exists()


def test_a_file_over_the_budget_is_not_stored(tmp_path: Path) -> None:
    cache = AssetCache(tmp_path / "cache", max_bytes=1000)
    source = tmp_path / "big.mp4"
    source.write_bytes(b"x" * 1001)
    cache.put_file("ef" * 32, source, "video/mp4")
    assert not cache.get_file("ef" * 32, tmp_path / "out.mp4")


# ---------------------------------------------------------------- credits of stock media travel with the entry

CREDIT = Credit(
    vendor="Pexels",
    author="Jane Doe",
    author_url="https://www.pexels.com/@jane-doe",
    source_url="https://www.pexels.com/photo/102/",
    attribution="Photo by Jane Doe on Pexels",
    license="Photos and videos provided by Pexels",
)


def test_a_credit_is_kept_with_a_folder_entry(tmp_path: Path) -> None:
    cache = AssetCache(tmp_path)
    asset = replace(_asset(), credit=CREDIT)
    cache.put(KEY, asset)
    assert cache.get(KEY) == asset
    first = next(asset_responses(image_service_pb2.GenerateImageResponse, "pexels", asset, cache_hit=True))
    assert first.metadata.credit == types_pb2.Credit(**asdict(CREDIT))


def test_a_credit_is_kept_with_a_redis_entry(client: redis.Redis, prefix: str) -> None:
    cache = _redis_cache(client, prefix)
    asset = replace(_asset(), credit=CREDIT)
    cache.put(KEY, asset)
    assert cache.get(KEY) == asset
