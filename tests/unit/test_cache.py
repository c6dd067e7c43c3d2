"""The asset cache's keys and its directory backend: atomic entries, damage detection, LRU eviction, shared use."""

from __future__ import annotations

import asyncio
import logging
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from services.audio.providers.base import SpeechJob
from services.common import cache as cache_module
from services.common.cache import (
    AssetCache,
    CachedAsset,
    CachedTiming,
    avatar_key,
    clip_key,
    image_key,
    speech_key,
)
from services.common.providers import Quality
from services.image.providers.base import ImageJob
from services.video.avatars.base import AvatarJob, AvatarScene
from services.video.providers.base import ClipJob

IMAGE_MODULE = "services.image.providers.openai_images"
SPEECH_MODULE = "services.audio.providers.openai_tts"
CLIP_MODULE = "services.video.providers.wan"
AVATAR_MODULE = "services.video.avatars.heygen"

IMAGE = ImageJob("a ladder", "Ladders", 0, 1280, 720, Quality.STANDARD, "16:9", render_id="r1")
SPEECH = SpeechJob("Check the ladder.", "alloy", Quality.STANDARD, render_id="r1")
CLIP = ClipJob("a ladder", "Ladders", 0, 1280, 720, 30, 4000, Quality.STANDARD, None, Path("/tmp/a"), "r1")
AVATAR = AvatarJob((AvatarScene("One.", "A"), AvatarScene("Two.")), 1280, 720, "16:9", "anna", "v1", "white", "r1")


def _keys() -> dict[str, str]:
    return {
        "image": image_key("gpt-image-1-mini", IMAGE_MODULE, IMAGE),
        "speech": speech_key("openai", SPEECH_MODULE, SPEECH),
        "clip": clip_key("wan", CLIP_MODULE, CLIP, "ab" * 32),
        "avatar": avatar_key("heygen", AVATAR_MODULE, AVATAR),
    }


def test_keys_are_stable_hex_digests_and_ignore_what_does_not_change_the_asset() -> None:
    keys = _keys()
    assert keys == _keys()
    assert all(len(key) == 64 and int(key, 16) >= 0 for key in keys.values())
    assert len(set(keys.values())) == len(keys)
    # The render id, scene index and working folder do not change what a provider makes.
    assert image_key("gpt-image-1-mini", IMAGE_MODULE, replace(IMAGE, render_id="r2", scene_index=5)) == keys["image"]
    assert speech_key("openai", SPEECH_MODULE, replace(SPEECH, render_id="r2")) == keys["speech"]
    other = replace(CLIP, render_id="r2", scene_index=3, work_dir=Path("/tmp/b"))
    assert clip_key("wan", CLIP_MODULE, other, "ab" * 32) == keys["clip"]
    assert avatar_key("heygen", AVATAR_MODULE, replace(AVATAR, render_id="r2", deadline=5.0)) == keys["avatar"]


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
    assert image_key("gpt-image-1-mini", IMAGE_MODULE, replace(IMAGE, **changed)) != _keys()["image"]


@pytest.mark.parametrize("changed", [{"text": "Check it."}, {"voice": "nova"}, {"quality": Quality.HD}])
def test_speech_key_follows_every_input(changed: dict[str, Any]) -> None:
    assert speech_key("openai", SPEECH_MODULE, replace(SPEECH, **changed)) != _keys()["speech"]


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
    assert clip_key("wan", CLIP_MODULE, replace(CLIP, **changed), "ab" * 32) != _keys()["clip"]


def test_clip_key_follows_the_source_image() -> None:
    assert clip_key("wan", CLIP_MODULE, CLIP, "cd" * 32) != _keys()["clip"]
    assert clip_key("wan", CLIP_MODULE, CLIP, "") != _keys()["clip"]


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
    assert avatar_key("heygen", AVATAR_MODULE, replace(AVATAR, **changed)) != _keys()["avatar"]


def test_keys_follow_the_provider_its_code_and_its_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    before = image_key("sdxl", "services.image.providers.replicate_images", IMAGE)
    assert image_key("flux", "services.image.providers.replicate_images", IMAGE) != before
    # Another module stands in for an edited provider module: its source hash differs.
    assert image_key("sdxl", IMAGE_MODULE, IMAGE) != before
    monkeypatch.setenv("SDXL_VERSION", "1" * 64)
    assert image_key("sdxl", "services.image.providers.replicate_images", IMAGE) != before
    for variable in ("OPENAI_TTS_VOICE", "OPENAI_TTS_FORMAT", "OPENAI_BASE_URL"):
        monkeypatch.delenv(variable, raising=False)
    plain = speech_key("openai", SPEECH_MODULE, SPEECH)
    for variable, value in (
        ("OPENAI_TTS_VOICE", "nova"),
        ("OPENAI_TTS_FORMAT", "mp3"),
        ("OPENAI_BASE_URL", "http://x"),
    ):
        monkeypatch.setenv(variable, value)
        assert speech_key("openai", SPEECH_MODULE, SPEECH) != plain
        monkeypatch.delenv(variable)


def _asset(data: bytes = b"picture" * 10, cost: float = 0.015) -> CachedAsset:
    return CachedAsset(
        data=data,
        mime_type="audio/wav",
        model="tts-1",
        estimated_cost_usd=cost,
        sample_rate=24000,
        duration_ms=1500,
        timings=(CachedTiming("Check the ladder.", 0, 1500),),
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
