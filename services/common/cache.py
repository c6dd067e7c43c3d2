"""A content-addressed cache of generated assets on local disk, so an unchanged scene is paid for once.

Keys are SHA-256 digests of a canonical JSON of everything that determines an asset: the provider's name, the
provider's own code (the SHA-256 of its module file, so any edit to a provider invalidates what it made; simpler and
more honest than a hand-bumped version constant that someone forgets), the environment variables that configure its
model or output (pinned versions, voices, formats, base URLs), and the job's content fields. What does not change the
asset (render id, scene index, deadlines, working folders) is left out; the self-hosted video seed derives from the
render id, so a cached clip is one fair sample for its prompt rather than the exact clip that render would have made.

An entry is two files, `<dir>/<key[:2]>/<key>.bin` (the bytes) and `<key>.json` (metadata, with the bytes' SHA-256),
each written to a temp file in the same folder and moved into place with os.replace, data first. Several processes
may share a folder: a per-shard `flock` orders each entry's two moves against readers and eviction, and an entry
that fails its checks (hash mismatch, missing file, bad JSON) is logged, removed and treated as a miss. The folder is
bounded by a byte budget, evicting the least recently used entries (a hit touches the metadata file's mtime).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import hashlib
import importlib.util
import json
import logging
import os
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter

if TYPE_CHECKING:
    from services.audio.providers.base import SpeechJob
    from services.image.providers.base import ImageJob
    from services.video.avatars.base import AvatarJob
    from services.video.providers.base import ClipJob

_LOGGER = logging.getLogger(__name__)

# Bumped when the key's fields or the entry layout change, so old entries are simply never found again.
FORMAT_VERSION = 1
DEFAULT_DIR = str(Path(tempfile.gettempdir()) / "scenecast-asset-cache")
DEFAULT_MAX_BYTES = 2 * 1024**3
# ASSET_CACHE_DIR values that turn the cache off.
DISABLED = ("", "off")
# Temp files older than this are left over from a crashed writer and removed by the next eviction scan.
STALE_TEMP_SECONDS = 3600.0

# Environment variables that change what a cloud provider makes, read when the key is built (the providers read them
# per request too). A new cloud provider adds its own here; offline providers bypass the cache and need none.
_OPENAI = ("OPENAI_BASE_URL",)
_REPLICATE = ("REPLICATE_BASE_URL",)
CONFIG_ENV: dict[str, tuple[str, ...]] = {
    "dall-e-3": _OPENAI,
    "gpt-image-1-mini": _OPENAI,
    "sdxl": (*_REPLICATE, "SDXL_VERSION"),
    "flux": _REPLICATE,
    "openai": (*_OPENAI, "OPENAI_TTS_FORMAT", "OPENAI_TTS_VOICE"),
    "kokoro": (*_REPLICATE, "KOKORO_VERSION", "KOKORO_VOICE"),
    "edge": ("EDGE_TTS_WSS_URL", "EDGE_TTS_VOICE", "EDGE_TTS_RATE", "EDGE_TTS_VOLUME", "EDGE_TTS_PITCH"),
    "wan": _REPLICATE,
    "selfhosted": (
        "SELFHOSTED_VIDEO_URL",
        "SELFHOSTED_VIDEO_API",
        "SELFHOSTED_COMFYUI_WORKFLOW",
        "SELFHOSTED_VIDEO_HEIGHT",
        "SELFHOSTED_VIDEO_FPS",
        "SELFHOSTED_VIDEO_MAX_FRAMES",
    ),
    "synthesia": (
        "SYNTHESIA_BASE_URL",
        "SYNTHESIA_AVATAR",
        "SYNTHESIA_VOICE",
        "SYNTHESIA_BACKGROUND",
        "SYNTHESIA_TEST",
    ),
    "heygen": ("HEYGEN_BASE_URL", "HEYGEN_AVATAR_ID", "HEYGEN_VOICE_ID", "HEYGEN_BACKGROUND", "HEYGEN_TEST"),
}

ASSET_CACHE = Counter(
    "scenecast_asset_cache",
    "Asset cache lookups, by media kind and outcome (hit, miss, or bypass when a request asked for no_cache).",
    ["kind", "outcome"],
)


@dataclass(frozen=True)
class CachedTiming:
    text: str
    start_ms: int
    end_ms: int
    is_word: bool = False


@dataclass(frozen=True)
class CachedAsset:
    """An asset as the service answered it: the bytes and what AssetMetadata said about them.

    `estimated_cost_usd` is what the original provider call cost; a hit reports zero, since nothing is spent again.
    """

    data: bytes
    mime_type: str
    model: str
    estimated_cost_usd: float = 0.0
    width: int = 0
    height: int = 0
    sample_rate: int = 0
    duration_ms: int = 0
    timings: tuple[CachedTiming, ...] = field(default_factory=tuple)


# ---------------------------------------------------------------- keys


def image_key(provider: str, provider_module: str, job: ImageJob) -> str:
    """The stored image is the one fitted to the frame, so the fitting code is part of its identity too."""
    return _key(
        "image",
        provider,
        (provider_module, "services.image.fit"),
        prompt=job.prompt,
        title=job.title,
        width=job.width,
        height=job.height,
        aspect=job.aspect,
        quality=job.quality.value,
    )


def speech_key(provider: str, provider_module: str, job: SpeechJob) -> str:
    return _key("speech", provider, (provider_module,), text=job.text, voice=job.voice, quality=job.quality.value)


def clip_key(provider: str, provider_module: str, job: ClipJob, source_sha256: str) -> str:
    """`source_sha256` is the digest of the scene image sent with the clip ("" when none was sent)."""
    return _key(
        "clip",
        provider,
        (provider_module,),
        prompt=job.prompt,
        title=job.title,
        width=job.width,
        height=job.height,
        fps=job.fps,
        duration_ms=job.duration_ms,
        quality=job.quality.value,
        source_sha256=source_sha256,
    )


def avatar_key(provider: str, provider_module: str, job: AvatarJob) -> str:
    return _key(
        "avatar",
        provider,
        (provider_module,),
        scenes=[[scene.narration, scene.title] for scene in job.scenes],
        width=job.width,
        height=job.height,
        aspect=job.aspect,
        avatar=job.avatar,
        voice=job.voice,
        background=job.background,
    )


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1024 * 1024):
            digest.update(block)
    return digest.hexdigest()


def _key(kind: str, provider: str, modules: Sequence[str], **fields: Any) -> str:
    document = {
        "format": FORMAT_VERSION,
        "kind": kind,
        "provider": provider,
        "code": {module: _source_digest(module) for module in modules},
        "config": {variable: os.environ.get(variable, "") for variable in CONFIG_ENV.get(provider, ())},
        "fields": fields,
    }
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


@functools.lru_cache(maxsize=64)
def _source_digest(module: str) -> str:
    """SHA-256 of a module's source file; read once per process (code does not change under a running service)."""
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise ValueError(f"cannot find the source of {module}")
    return hashlib.sha256(Path(spec.origin).read_bytes()).hexdigest()


# ---------------------------------------------------------------- the directory backend


class AssetCache:
    """Entries in a folder on local disk, bounded by `max_bytes` with least-recently-used eviction.

    The blocking methods (`get`, `put`) do file I/O; the services call `lookup` and `store`, which run them in a
    thread and never let a cache failure (full disk, unreadable folder) fail the call that is being served.
    """

    def __init__(self, root: Path, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.root = root
        self.max_bytes = max_bytes

    @classmethod
    def from_settings(cls, directory: str, max_bytes: int) -> AssetCache | None:
        """None when ASSET_CACHE_DIR is empty or "off"."""
        if directory.strip().lower() in DISABLED:
            return None
        return cls(Path(directory), max_bytes)

    async def lookup(self, kind: str, key: str, no_cache: bool) -> CachedAsset | None:
        if no_cache:
            ASSET_CACHE.labels(kind, "bypass").inc()
            return None
        try:
            asset = await asyncio.to_thread(self.get, key)
        except OSError as error:
            _LOGGER.warning("asset cache: cannot read %s entry %s: %s", kind, key, error)
            asset = None
        ASSET_CACHE.labels(kind, "hit" if asset is not None else "miss").inc()
        return asset

    async def store(self, kind: str, key: str, asset: CachedAsset) -> None:
        try:
            await asyncio.to_thread(self.put, key, asset)
        except OSError as error:
            _LOGGER.warning("asset cache: cannot store %s entry %s: %s", kind, key, error)

    def get(self, key: str) -> CachedAsset | None:
        """The entry, or None when there is none or it is damaged (then it is removed)."""
        data_path, meta_path = self._paths(key)
        if not meta_path.parent.is_dir():
            return None
        with self._shard_lock(key):
            try:
                meta_text = meta_path.read_text(encoding="utf-8")
            except FileNotFoundError:
                if data_path.exists():
                    self._discard(key, "metadata file is missing")
                return None
            try:
                data = data_path.read_bytes()
            except FileNotFoundError:
                self._discard(key, "data file is missing")
                return None
            try:
                meta = json.loads(meta_text)
                if hashlib.sha256(data).hexdigest() != meta["sha256"]:
                    self._discard(key, "data does not match its recorded SHA-256")
                    return None
                asset = _asset_from(data, meta["asset"])
            except (ValueError, KeyError, TypeError) as error:
                self._discard(key, f"metadata is unreadable ({error!r})")
                return None
            # The metadata file's mtime is the entry's last use: set explicitly, since atime is often not kept.
            with contextlib.suppress(FileNotFoundError):
                os.utime(meta_path)
        return asset

    def put(self, key: str, asset: CachedAsset) -> None:
        """Stores (or replaces) an entry, then evicts the least recently used entries over the budget."""
        size = len(asset.data)
        if size > self.max_bytes:
            _LOGGER.info("asset cache: %d bytes exceed ASSET_CACHE_MAX_BYTES; not stored", size)
            return
        data_path, meta_path = self._paths(key)
        data_path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"sha256": hashlib.sha256(asset.data).hexdigest(), "size": size, "asset": _metadata_of(asset)}
        data_temp = _write_temp(data_path.parent, key, asset.data)
        meta_temp = _write_temp(data_path.parent, key, json.dumps(meta, ensure_ascii=False).encode())
        try:
            with self._shard_lock(key):
                os.replace(data_temp, data_path)
                os.replace(meta_temp, meta_path)
        finally:
            for temp in (data_temp, meta_temp):
                with contextlib.suppress(FileNotFoundError):
                    temp.unlink()
        self.evict()

    def evict(self) -> None:
        """Removes least recently used entries until the folder fits `max_bytes`; files may vanish meanwhile."""
        entries: list[tuple[float, int, str]] = []
        total = 0
        now = time.time()
        for path in self._files():
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue
            if path.suffix == ".tmp":
                if now - stat.st_mtime > STALE_TEMP_SECONDS:
                    with contextlib.suppress(FileNotFoundError):
                        path.unlink()
                continue
            total += stat.st_size
            if path.suffix == ".json":
                data_size = _size(path.with_suffix(".bin"))
                entries.append((stat.st_mtime, stat.st_size + data_size, path.stem))
        if total <= self.max_bytes:
            return
        for _, size, key in sorted(entries):
            with self._shard_lock(key):
                self._remove(key)
            total -= size
            _LOGGER.info("asset cache: evicted %s (%d bytes)", key, size)
            if total <= self.max_bytes:
                return

    def _files(self) -> Iterator[Path]:
        try:
            shards = [entry for entry in os.scandir(self.root) if entry.is_dir() and len(entry.name) == 2]
        except FileNotFoundError:
            return
        for shard in shards:
            try:
                names = [entry.name for entry in os.scandir(shard.path) if entry.name != ".lock"]
            except FileNotFoundError:
                continue
            yield from (Path(shard.path) / name for name in names)

    def _paths(self, key: str) -> tuple[Path, Path]:
        if len(key) != 64 or not all(c in "0123456789abcdef" for c in key):
            raise ValueError(f"not a SHA-256 hex key: {key!r}")
        shard = self.root / key[:2]
        return shard / f"{key}.bin", shard / f"{key}.json"

    @contextlib.contextmanager
    def _shard_lock(self, key: str) -> Iterator[None]:
        """An exclusive lock on the entry's shard, shared by every process using the folder (flock on .lock)."""
        path = self.root / key[:2] / ".lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _discard(self, key: str, reason: str) -> None:
        _LOGGER.warning("asset cache: entry %s is damaged (%s); removed", key, reason)
        self._remove(key)

    def _remove(self, key: str) -> None:
        for path in self._paths(key):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def _write_temp(folder: Path, key: str, content: bytes) -> Path:
    """A temp file in the entry's own folder, so os.replace is an atomic rename on the same file system."""
    handle, name = tempfile.mkstemp(dir=folder, prefix=f".{key}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(content)
    except BaseException:
        os.unlink(name)
        raise
    return Path(name)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _metadata_of(asset: CachedAsset) -> dict[str, Any]:
    fields = asdict(asset)
    del fields["data"]
    return fields


def _asset_from(data: bytes, fields: dict[str, Any]) -> CachedAsset:
    timings = tuple(CachedTiming(**timing) for timing in fields.pop("timings", ()))
    return CachedAsset(data=data, timings=timings, **fields)
