"""A content-addressed cache of generated assets, so an unchanged scene is paid for once, by any replica.

Keys are SHA-256 digests of a canonical JSON of everything that determines an asset: the provider's name, the
provider's own code (the SHA-256 of its module file, so any edit to a provider invalidates what it made; simpler and
more honest than a hand-bumped version constant that someone forgets), the settings the provider declares as changing
its output (its `output_settings`: pinned versions, voices, formats, base URLs), and the job's content fields. What
does not change the asset (render id, scene index, deadlines, working folders) is left out; the self-hosted video seed
derives from the render id, so a cached clip is one fair sample for its prompt rather than the exact clip that render
would have made.

Two backends behind one interface (`CacheBackend`): `AssetCache`, a folder on local disk (the default; replicas on
one disk may share it), and `RedisAssetCache`, a Redis server that replicas on any machine share (ASSET_CACHE_URL).
Both write atomically, detect a damaged entry (and drop it as a miss) and evict the least recently used entries
beyond a byte budget; their classes say how.

`CacheBackend.fetch` adds single flight: however many calls want the same missing asset at once, it is made once.
Calls in one process share one generation (an asyncio task); processes and replicas take a lock per key (flock on a
lock file in the folder; SET NX PX in Redis, renewed while its owner works) and the others poll until the owner has
stored the asset. An owner that dies loses its lock (the kernel drops the flock; the Redis key expires) and a waiter
takes over. A generation, once started, runs to its end even when all its callers are gone, bounded only by the first
caller's deadline: its provider call is paid for either way, so its result is kept. This is also how a render that
died halfway resumes: its re-render finds what was made in the cache, and joins what is still being made.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import fcntl
import functools
import hashlib
import importlib.util
import json
import logging
import os
import secrets
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import redis
from prometheus_client import Counter
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry
from scenecast.v1 import types_pb2

from services.common.chunks import iter_chunks, iter_file_chunks
from services.common.errors import ProviderUnavailable
from services.common.state import cache_path, private_dir
from services.common.stock import Credit

if TYPE_CHECKING:
    from services.audio.providers.base import SpeechJob
    from services.image.providers.base import ImageJob
    from services.video.avatars.base import AvatarJob
    from services.video.providers.base import ClipJob

_LOGGER = logging.getLogger(__name__)

ResponseT = TypeVar("ResponseT")

# Bumped when the key's fields or the entry layout change, so old entries are simply never found again.
FORMAT_VERSION = 1
# The user's own cache folder ($XDG_CACHE_HOME/scenecast/assets, else ~/.cache/scenecast/assets), fixed at start-up.
DEFAULT_DIR = str(cache_path("assets"))
DEFAULT_MAX_BYTES = 2 * 1024**3
# ASSET_CACHE_DIR values that turn the cache off.
DISABLED = ("", "off")
# Temp files older than this are left over from a crashed writer and removed by the next eviction scan.
STALE_TEMP_SECONDS = 3600.0

# The Redis backend's defaults: key prefix; piece size; lock expiry (its owner renews it while it works, so this is how
# long a dead owner holds up the waiters); how long an uncommitted piece lives if its writer dies before the commit.
REDIS_PREFIX = "scenecast:assets:"
REDIS_PIECE_BYTES = 4 * 1024 * 1024
REDIS_LOCK_SECONDS = 10.0
REDIS_PENDING_SECONDS = 120.0


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
    # The provider call that made the asset: a fresh id per call, kept with the entry and reported on every delivery,
    # so that the spend ledger records each paid call once however many renders receive the asset; and the render
    # that ordered it.
    call_id: str = field(default_factory=lambda: secrets.token_hex(16))
    call_render_id: str = ""
    # The credit stock media asks for, kept with the entry so that every delivery of the asset carries it.
    credit: Credit | None = None


def asset_responses(
    message: Callable[..., ResponseT], provider: str, asset: CachedAsset, cache_hit: bool, path: Path | None = None
) -> Iterator[ResponseT]:
    """An asset as a media service answers it: `message(metadata=...)`, then `message(chunk=...)` for the bytes.

    The metadata says what the asset is (a hit keeps its model, size, duration and timings); a hit cost nothing.
    With `path`, the bytes are that file's, read a chunk at a time (an asset too large to hold whole, such as a long
    4K clip; `asset.data` is then empty).
    """
    yield message(
        metadata=types_pb2.AssetMetadata(
            mime_type=asset.mime_type,
            size_bytes=path.stat().st_size if path is not None else len(asset.data),
            width=asset.width,
            height=asset.height,
            sample_rate=asset.sample_rate,
            duration_ms=asset.duration_ms,
            provider=provider,
            model=asset.model,
            estimated_cost_usd=0.0 if cache_hit else asset.estimated_cost_usd,
            timings=[
                types_pb2.TextTiming(
                    text=t.text,
                    start_ms=t.start_ms,
                    end_ms=t.end_ms,
                    kind=types_pb2.TIMING_KIND_WORD if t.is_word else types_pb2.TIMING_KIND_SENTENCE,
                )
                for t in asset.timings
            ],
            cache_hit=cache_hit,
            provider_call=types_pb2.ProviderCall(
                id=asset.call_id, cost_usd=asset.estimated_cost_usd, render_id=asset.call_render_id
            )
            if asset.call_id
            else None,
            credit=types_pb2.Credit(**asdict(asset.credit)) if asset.credit is not None else None,
        )
    )
    for chunk in iter_file_chunks(path) if path is not None else iter_chunks(asset.data):
        yield message(chunk=chunk)


ASSET_CACHE = Counter(
    "scenecast_asset_cache",
    "Asset cache lookups, by media kind and outcome: hit (answered from the cache, or by another call that made the "
    "same asset), miss (this call paid for it), or bypass (the request asked for no_cache).",
    ["kind", "outcome"],
)
SINGLE_FLIGHT_WAITS = Counter(
    "scenecast_asset_cache_waits",
    "Calls that waited for another call making the same asset instead of paying for it again, by media kind and where "
    "that call ran: in this process, or in another process or replica (behind the cache's lock).",
    ["kind", "where"],
)

# Block size of file-to-file copies in and out of the folder cache: large files are never held whole in memory.
_COPY_BLOCK = 1024 * 1024

# Lock files are shared by every process using the folder, so opened as they are, but never through a link planted at
# their name (which would create or lock a file elsewhere).
_LOCK_FILE = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC

# Seconds between a waiter's checks for an asset that another process or replica is making.
POLL_SECONDS = 0.1

# Makes an asset on a miss: the provider call with its retries, returning what the cache stores.
Make = Callable[[], Awaitable[CachedAsset]]


# ---------------------------------------------------------------- keys


def image_key(provider: str, provider_module: str, config: Mapping[str, str], job: ImageJob) -> str:
    """The stored image is the one fitted to the frame, so the fitting code is part of its identity too."""
    return _key(
        "image",
        provider,
        (provider_module, "services.image.fit"),
        config,
        prompt=job.prompt,
        title=job.title,
        width=job.width,
        height=job.height,
        aspect=job.aspect,
        quality=job.quality.value,
    )


def speech_key(provider: str, provider_module: str, config: Mapping[str, str], job: SpeechJob) -> str:
    return _key(
        "speech", provider, (provider_module,), config, text=job.text, voice=job.voice, quality=job.quality.value
    )


def clip_key(provider: str, provider_module: str, config: Mapping[str, str], job: ClipJob, source_sha256: str) -> str:
    """`source_sha256` is the digest of the scene image sent with the clip ("" when none was sent)."""
    return _key(
        "clip",
        provider,
        (provider_module,),
        config,
        prompt=job.prompt,
        title=job.title,
        width=job.width,
        height=job.height,
        fps=job.fps,
        duration_ms=job.duration_ms,
        quality=job.quality.value,
        source_sha256=source_sha256,
    )


def avatar_key(provider: str, provider_module: str, config: Mapping[str, str], job: AvatarJob) -> str:
    return _key(
        "avatar",
        provider,
        (provider_module,),
        config,
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


def _key(kind: str, provider: str, modules: Sequence[str], config: Mapping[str, str], **fields: Any) -> str:
    """`config` holds the provider's output settings (ProviderRegistry.fingerprint)."""
    document = {
        "format": FORMAT_VERSION,
        "kind": kind,
        "provider": provider,
        "code": {module: source_digest(module) for module in modules},
        "config": dict(config),
        "fields": fields,
    }
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


@functools.lru_cache(maxsize=64)
def source_digest(module: str) -> str:
    """SHA-256 of a module's source file; read once per process (code does not change under a running service)."""
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise ValueError(f"cannot find the source of {module}")
    return hashlib.sha256(Path(spec.origin).read_bytes()).hexdigest()


# ---------------------------------------------------------------- what both backends share


class HeldLock(Protocol):
    """A per-key lock held across processes while the asset is made."""

    def renew(self) -> bool:
        """Extends a lock that expires; False when it was lost (it expired and another owner may hold it)."""
        ...

    def release(self) -> None: ...


class _NoLock:
    """Stands in for a lock the storage could not give (it is down): the asset is made without single flight."""

    def renew(self) -> bool:
        return True

    def release(self) -> None:
        return None


class CacheBackend(abc.ABC):
    """Counted look-ups, stores that never fail the call being served, and single-flight `fetch`.

    Subclasses give the blocking `get` and `put` and a per-key lock across processes (`_lock_nowait`); the async
    methods run them in threads.
    """

    # Failures of the storage itself (full disk, a Redis that is down): logged, and the call goes on without it.
    failures: tuple[type[Exception], ...] = (OSError,)
    # Seconds between renewals of a held lock; None when the lock lasts as long as its holder (flock).
    renew_seconds: float | None = None

    def __init__(self) -> None:
        self._flights: dict[str, asyncio.Task[tuple[CachedAsset, bool]]] = {}

    @abc.abstractmethod
    def get(self, key: str) -> CachedAsset | None:
        """The entry, or None when there is none or it is damaged (then it is removed)."""

    @abc.abstractmethod
    def put(self, key: str, asset: CachedAsset) -> None:
        """Stores (or replaces) an entry, then evicts the least recently used entries over the budget."""

    @abc.abstractmethod
    def _lock_nowait(self, key: str) -> HeldLock | None:
        """The key's lock across processes, or None when another process or replica holds it."""

    async def fetch(
        self, kind: str, key: str, no_cache: bool, make: Make, deadline: float | None
    ) -> tuple[CachedAsset, bool]:
        """The asset for `key`, and whether this call got it without paying (from the cache or another call).

        On a miss, `make` runs once for every call that wants the key meanwhile, here or in any process sharing the
        cache. It runs as a task of its own, bounded by `deadline` (a time.monotonic() value: the first caller's gRPC
        deadline) but not cancelled with its callers, so an asset that is being paid for is always kept. `no_cache`
        skips reading (and waiting) and stores the new asset over the old.
        """
        if no_cache:
            ASSET_CACHE.labels(kind, "bypass").inc()
            asset = await make()
            await self.store(kind, key, asset)
            return asset, False
        flight = self._flights.get(key)
        joined = flight is not None
        if flight is None:
            flight = asyncio.create_task(self._fill(kind, key, make, deadline))
            self._flights[key] = flight
            flight.add_done_callback(functools.partial(self._landed, key))
        else:
            SINGLE_FLIGHT_WAITS.labels(kind, "process").inc()
        asset, made = await asyncio.shield(flight)
        hit = joined or not made
        ASSET_CACHE.labels(kind, "hit" if hit else "miss").inc()
        return asset, hit

    async def lookup(self, kind: str, key: str, no_cache: bool) -> CachedAsset | None:
        """A plain counted read, for callers that make and store the asset themselves."""
        if no_cache:
            ASSET_CACHE.labels(kind, "bypass").inc()
            return None
        asset = await self._read(kind, key)
        ASSET_CACHE.labels(kind, "hit" if asset is not None else "miss").inc()
        return asset

    async def store(self, kind: str, key: str, asset: CachedAsset) -> None:
        try:
            await asyncio.to_thread(self.put, key, asset)
        except self.failures as error:
            _LOGGER.warning("asset cache: cannot store %s entry %s: %s", kind, key, error)

    async def _fill(self, kind: str, key: str, make: Make, deadline: float | None) -> tuple[CachedAsset, bool]:
        """The asset and whether this process made it, by the deadline."""
        scope = asyncio.timeout_at(deadline)
        try:
            async with scope:
                return await self._read_or_make(kind, key, make)
        except TimeoutError:
            if scope.expired():
                raise ProviderUnavailable(f"the {kind} was not ready by the call's deadline; try again") from None
            raise

    async def _read_or_make(self, kind: str, key: str, make: Make) -> tuple[CachedAsset, bool]:
        """Reads the entry; else takes the key's lock and makes the asset; else waits for the lock's owner."""
        waiting = False
        while True:
            asset = await self._read(kind, key)
            if asset is not None:
                return asset, False
            lock = await self._try_lock(kind, key)
            if lock is not None:
                async with self._holding(kind, key, lock):
                    # Read again: the owner before us may have stored the asset just before it let go.
                    asset = await self._read(kind, key)
                    if asset is not None:
                        return asset, False
                    asset = await make()
                    await self.store(kind, key, asset)
                    return asset, True
            if not waiting:
                waiting = True
                SINGLE_FLIGHT_WAITS.labels(kind, "shared").inc()
                _LOGGER.info("asset cache: %s %s is being made by another process; waiting for it", kind, key)
            await asyncio.sleep(POLL_SECONDS)

    async def _read(self, kind: str, key: str) -> CachedAsset | None:
        try:
            return await asyncio.to_thread(self.get, key)
        except self.failures as error:
            _LOGGER.warning("asset cache: cannot read %s entry %s: %s", kind, key, error)
            return None

    async def _try_lock(self, kind: str, key: str) -> HeldLock | None:
        try:
            return await asyncio.to_thread(self._lock_nowait, key)
        except self.failures as error:
            _LOGGER.warning(
                "asset cache: cannot lock %s entry %s (%s); making it without single flight", kind, key, error
            )
            return _NoLock()

    @contextlib.asynccontextmanager
    async def _holding(self, kind: str, key: str, lock: HeldLock) -> AsyncIterator[None]:
        """Keeps a lock that expires alive while the asset is made, and lets it go afterwards."""
        every = self.renew_seconds
        renewal = asyncio.create_task(self._keep(kind, key, lock, every)) if every else None
        try:
            yield
        finally:
            if renewal is not None:
                renewal.cancel()
            try:
                await asyncio.to_thread(lock.release)
            except self.failures as error:
                _LOGGER.warning("asset cache: cannot release the lock on %s entry %s: %s", kind, key, error)

    async def _keep(self, kind: str, key: str, lock: HeldLock, every: float) -> None:
        while True:
            await asyncio.sleep(every)
            try:
                kept = await asyncio.to_thread(lock.renew)
            except self.failures as error:
                _LOGGER.warning("asset cache: cannot renew the lock on %s entry %s: %s", kind, key, error)
                continue
            if not kept:
                _LOGGER.warning(
                    "asset cache: the lock on %s entry %s expired; another replica may make it too", kind, key
                )
                return

    def _landed(self, key: str, flight: asyncio.Task[tuple[CachedAsset, bool]]) -> None:
        del self._flights[key]
        # Retrieved so that a failure nobody waits for any more (every caller went away) is logged once, not as an
        # asyncio "exception was never retrieved"; callers still waiting raise it themselves.
        if not flight.cancelled() and (error := flight.exception()) is not None:
            _LOGGER.info("asset cache: making %s failed: %s", key, error)


async def get_or_make(
    cache: CacheBackend | None, kind: str, key: str, no_cache: bool, make: Make, deadline: float | None
) -> tuple[CachedAsset, bool]:
    """What the media services call: `fetch` through the cache, or just `make` when there is none (turned off, or an
    offline provider whose output is cheaper to make than to store). Returns the asset and whether it was a hit."""
    if cache is None:
        return await make(), False
    return await cache.fetch(kind, key, no_cache, make, deadline)


def open_cache(url: str, directory: str, max_bytes: int) -> CacheBackend | None:
    """The backend the settings ask for: Redis at ASSET_CACHE_URL when it is set, else the folder ASSET_CACHE_DIR
    (None when that is empty or "off"). A malformed URL fails here, at start-up."""
    if url:
        try:
            return RedisAssetCache.from_url(url, max_bytes)
        except ValueError as error:
            raise ValueError(f"ASSET_CACHE_URL: {error}") from None
    return AssetCache.from_settings(directory, max_bytes)


# ---------------------------------------------------------------- the directory backend


# ---------------------------------------------------------------- the directory backend


class AssetCache(CacheBackend):
    """Entries in a folder on local disk, bounded by `max_bytes` with least-recently-used eviction.

    An entry is two files, `<dir>/<key[:2]>/<key>.bin` (the bytes) and `<key>.json` (metadata, with the bytes'
    SHA-256), each written to a temp file in the same folder and moved into place with os.replace, data first. Several
    processes may share a folder: a per-shard `flock` orders each entry's two moves against readers and eviction, and
    an entry that fails its checks (hash mismatch, missing file, bad JSON) is logged, removed and treated as a miss.
    The folder is bounded by a byte budget, evicting the least recently used entries (a hit touches the metadata
    file's mtime). The single-flight lock is a `flock` on `<key>.lock`, which exists only while it is held.

    The folder and its shards are private (0700, checked when the cache opens: an unsafe folder stops the service at
    start-up, naming `setting`), its files 0600, and no file is opened through a link: entries are written to fresh
    temp names (mkstemp) and renamed into place, and lock files are opened with O_NOFOLLOW.
    """

    def __init__(self, root: Path, max_bytes: int = DEFAULT_MAX_BYTES, setting: str = "ASSET_CACHE_DIR") -> None:
        super().__init__()
        self.root = private_dir(root, setting)
        self.max_bytes = max_bytes
        self._setting = setting

    @classmethod
    def from_settings(cls, directory: str, max_bytes: int, setting: str = "ASSET_CACHE_DIR") -> AssetCache | None:
        """None when the folder setting (ASSET_CACHE_DIR, or the segment cache's `setting`) is empty or "off"."""
        if directory.strip().lower() in DISABLED:
            return None
        return cls(Path(directory), max_bytes, setting)

    def get(self, key: str) -> CachedAsset | None:
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
        size = len(asset.data)
        if size > self.max_bytes:
            _LOGGER.info("asset cache: %d bytes exceed ASSET_CACHE_MAX_BYTES; not stored", size)
            return
        folder = self._shard(key)
        meta = {"sha256": hashlib.sha256(asset.data).hexdigest(), "size": size, "asset": _metadata_of(asset)}
        self._install(key, _write_temp(folder, key, asset.data), meta)

    def put_file(self, key: str, source: Path, mime_type: str) -> None:
        """Stores a file as an entry, copied a block at a time (for large outputs such as encoded segments)."""
        size = _size(source)
        if size > self.max_bytes:
            _LOGGER.info("cache: %d bytes exceed the folder's byte budget; not stored", size)
            return
        folder = self._shard(key)
        handle, name = tempfile.mkstemp(dir=folder, prefix=f".{key}.", suffix=".tmp")
        digest = hashlib.sha256()
        try:
            with source.open("rb") as reader, os.fdopen(handle, "wb") as writer:
                while block := reader.read(_COPY_BLOCK):
                    digest.update(block)
                    writer.write(block)
        except BaseException:
            os.unlink(name)
            raise
        asset = CachedAsset(data=b"", mime_type=mime_type, model="")
        self._install(key, Path(name), {"sha256": digest.hexdigest(), "size": size, "asset": _metadata_of(asset)})

    def _install(self, key: str, data_temp: Path, meta: dict[str, Any]) -> None:
        """Moves a written data file and its metadata into place (data first, under the shard lock), then evicts."""
        data_path, meta_path = self._paths(key)
        temps = [data_temp]
        try:
            temps.append(_write_temp(data_path.parent, key, json.dumps(meta, ensure_ascii=False).encode()))
            with self._shard_lock(key):
                os.replace(data_temp, data_path)
                os.replace(temps[1], meta_path)
        finally:
            for temp in temps:
                with contextlib.suppress(FileNotFoundError):
                    temp.unlink()
        self.evict()

    def get_file(self, key: str, destination: Path) -> bool:
        """Copies an entry's bytes to `destination` a block at a time, checking its hash; False on a miss."""
        data_path, meta_path = self._paths(key)
        if not meta_path.parent.is_dir():
            return False
        with self._shard_lock(key):
            try:
                expected = json.loads(meta_path.read_text(encoding="utf-8"))["sha256"]
                digest = hashlib.sha256()
                with data_path.open("rb") as reader, destination.open("wb") as writer:
                    while block := reader.read(_COPY_BLOCK):
                        digest.update(block)
                        writer.write(block)
            except FileNotFoundError:
                if data_path.exists() or meta_path.exists():
                    self._discard(key, "one of its files is missing")
                return False
            except (ValueError, KeyError, TypeError) as error:
                self._discard(key, f"metadata is unreadable ({error!r})")
                return False
            if digest.hexdigest() != expected:
                self._discard(key, "data does not match its recorded SHA-256")
                destination.unlink()
                return False
            with contextlib.suppress(FileNotFoundError):
                os.utime(meta_path)
        return True

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

    def _lock_nowait(self, key: str) -> _FileLock | None:
        path = self._shard(key) / f"{key}.lock"
        handle = os.open(path, _LOCK_FILE, 0o600)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            # Owners remove the file before they let go, so a lock taken on a file that is no longer there is no lock.
            if os.fstat(handle).st_ino == os.stat(path).st_ino:
                return _FileLock(path, handle)
        except (BlockingIOError, FileNotFoundError):
            pass
        os.close(handle)
        return None

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

    def _shard(self, key: str) -> Path:
        """The entry's shard folder, made private if it is missing (and the cache's folder with it, if removed)."""
        return private_dir(self._paths(key)[0].parent, self._setting)

    def _paths(self, key: str) -> tuple[Path, Path]:
        if len(key) != 64 or not all(c in "0123456789abcdef" for c in key):
            raise ValueError(f"not a SHA-256 hex key: {key!r}")
        shard = self.root / key[:2]
        return shard / f"{key}.bin", shard / f"{key}.json"

    @contextlib.contextmanager
    def _shard_lock(self, key: str) -> Iterator[None]:
        """An exclusive lock on the entry's shard, shared by every process using the folder (flock on .lock)."""
        handle = os.open(self._shard(key) / ".lock", _LOCK_FILE, 0o600)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield
        finally:
            os.close(handle)  # which lets go of the lock

    def _discard(self, key: str, reason: str) -> None:
        _LOGGER.warning("asset cache: entry %s is damaged (%s); removed", key, reason)
        self._remove(key)

    def _remove(self, key: str) -> None:
        for path in self._paths(key):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


@dataclass
class _FileLock:
    """A `flock` held through an open file descriptor: the kernel lets go of it if the process dies."""

    path: Path
    handle: int

    def renew(self) -> bool:
        return True

    def release(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        os.close(self.handle)


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
    # Entries stored before calls had ids have none: a fresh id would make every hit on them look like an unrecorded
    # paid call.
    fields.setdefault("call_id", "")
    credit = fields.pop("credit", None)
    return CachedAsset(data=data, timings=timings, credit=Credit(**credit) if credit else None, **fields)


# ---------------------------------------------------------------- the Redis backend

# Lua shared by the entry scripts: ARGV[1] is the key prefix, and every key of an entry is named from its cache key.
_ENTRY_LUA = """
local prefix = ARGV[1]
local function remove(key)
  local meta = prefix .. 'm:' .. key
  local entry = redis.call('HMGET', meta, 'token', 'pieces')
  if entry[1] then
    local data, count, index = prefix .. 'd:' .. key .. ':' .. entry[1] .. ':', tonumber(entry[2]) or 0, 0
    -- Every piece up to the recorded count (one may be missing), then on while there are more (the count may be lost).
    while redis.call('DEL', data .. index) == 1 or index < count do index = index + 1 end
  end
  redis.call('DEL', meta)
  redis.call('ZREM', prefix .. 'lru', key)
  local size = redis.call('HGET', prefix .. 'sizes', key)
  if size then
    redis.call('HDEL', prefix .. 'sizes', key)
    redis.call('DECRBY', prefix .. 'bytes', size)
  end
end
local function now_ms()
  local time = redis.call('TIME')
  return tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
end
"""
# ARGV: prefix, key, token, pieces, size, sha256, asset JSON, max bytes. Returns nil when a piece is missing, else the
# keys evicted to bring the entries' bytes within the budget.
_COMMIT_LUA = (
    _ENTRY_LUA
    + """
local key, token, pieces = ARGV[2], ARGV[3], tonumber(ARGV[4])
local data = prefix .. 'd:' .. key .. ':' .. token .. ':'
for index = 0, pieces - 1 do
  if redis.call('EXISTS', data .. index) == 0 then return false end
end
for index = 0, pieces - 1 do redis.call('PERSIST', data .. index) end
remove(key)
redis.call('HSET', prefix .. 'm:' .. key, 'token', token, 'pieces', pieces, 'size', ARGV[5], 'sha256', ARGV[6],
  'asset', ARGV[7])
redis.call('ZADD', prefix .. 'lru', now_ms(), key)
redis.call('HSET', prefix .. 'sizes', key, ARGV[5])
redis.call('INCRBY', prefix .. 'bytes', ARGV[5])
local evicted = {}
while (tonumber(redis.call('GET', prefix .. 'bytes')) or 0) > tonumber(ARGV[8]) do
  local oldest = redis.call('ZRANGE', prefix .. 'lru', 0, 0)
  if #oldest == 0 then
    -- No entries left, so nothing to count: a sum that drifted (keys removed by hand) starts again from zero.
    redis.call('DEL', prefix .. 'bytes')
    break
  end
  remove(oldest[1])
  table.insert(evicted, oldest[1])
end
return evicted
"""
)
# ARGV: prefix, key, token read. Removes the entry only if it is still the one that was read (not since replaced).
_DISCARD_LUA = (
    _ENTRY_LUA
    + """
if (redis.call('HGET', prefix .. 'm:' .. ARGV[2], 'token') or '') ~= ARGV[3] then return 0 end
remove(ARGV[2])
return 1
"""
)
# ARGV: prefix, key. A hit makes the entry the most recently used, by the server's clock (replicas' clocks may differ).
_TOUCH_LUA = _ENTRY_LUA + "return redis.call('ZADD', prefix .. 'lru', 'XX', now_ms(), ARGV[2])"
# KEYS[1] the lock, ARGV[1] the owner's token (ARGV[2] the new expiry in ms): only the owner renews or releases.
_RENEW_LUA = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0"
_RELEASE_LUA = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"


class RedisAssetCache(CacheBackend):
    """Entries in a Redis server that every replica shares, bounded by `max_bytes` with least-recently-used eviction.

    Keys, all under `prefix`: `m:<key>`, a hash of the entry's metadata (`token`, `pieces`, `size`, `sha256`, and
    `asset`, the JSON of what AssetMetadata says); `d:<key>:<token>:<n>`, the bytes in pieces of `piece_bytes` (4 MiB:
    one huge value would block the server while it is copied and need as much again in buffers on both sides);
    `lru`, a sorted set of keys by last use; `sizes` and `bytes`, each entry's bytes and their sum; `lock:<key>`, the
    single-flight lock, holding its owner's token.

    A write sends the pieces under a fresh token, each with an expiry (a writer that dies leaves nothing behind for
    long), then one script checks they are all there, makes them permanent, points the metadata at them, deletes the
    replaced entry's pieces and evicts: readers see the old entry or the new one, never a mix. A read takes the
    metadata, then the pieces one at a time, and checks their count, size and SHA-256; a damaged entry is removed
    (only if its metadata still names the pieces that were read) and is a miss.

    The budget (`max_bytes`, counting the assets' bytes) is kept here, for this key set only, rather than left to
    `maxmemory-policy allkeys-lru`, which is server-wide: on a Redis shared with other data it would evict their keys
    to make room for ours (and ours for theirs), and it evicts single keys, tearing pieces out of entries. Give the
    server a maxmemory above `max_bytes` plus its other data (if it evicts anyway, a torn entry fails its checks and is
    dropped). For a standalone Redis (with or without replicas), not Redis Cluster: the scripts name an entry's keys
    themselves, which Cluster does not allow.
    """

    failures = (OSError, RedisError)

    def __init__(
        self,
        client: redis.Redis,
        max_bytes: int = DEFAULT_MAX_BYTES,
        *,
        prefix: str = REDIS_PREFIX,
        piece_bytes: int = REDIS_PIECE_BYTES,
        lock_seconds: float = REDIS_LOCK_SECONDS,
        pending_seconds: float = REDIS_PENDING_SECONDS,
    ) -> None:
        super().__init__()
        self.client = client
        self.max_bytes = max_bytes
        self.prefix = prefix
        self.piece_bytes = piece_bytes
        self.lock_ms = round(lock_seconds * 1000)
        # Renewed three times per expiry, so one slow renewal does not lose the lock.
        self.renew_seconds = lock_seconds / 3
        self._pending_ms = round(pending_seconds * 1000)
        self._commit = client.register_script(_COMMIT_LUA)
        self._discard = client.register_script(_DISCARD_LUA)
        self._touch = client.register_script(_TOUCH_LUA)
        self._renew = client.register_script(_RENEW_LUA)
        self._release = client.register_script(_RELEASE_LUA)

    @classmethod
    def from_url(cls, url: str, max_bytes: int) -> RedisAssetCache:
        """A client that fails fast: a cache that is down must cost a call little (one immediate retry covers a
        pooled connection that a Redis restart closed)."""
        client = redis.Redis.from_url(url, socket_timeout=10.0, socket_connect_timeout=1.0, retry=Retry(NoBackoff(), 1))
        return cls(client, max_bytes)

    def get(self, key: str) -> CachedAsset | None:
        meta = self.client.hgetall(self._name("m", key))
        if not meta:
            return None
        token = meta.get(b"token", b"").decode(errors="replace")
        try:
            pieces, size, sha256 = int(meta[b"pieces"]), int(meta[b"size"]), meta[b"sha256"].decode()
            fields = json.loads(meta[b"asset"])
        except (KeyError, ValueError) as error:
            self._damaged(key, token, f"metadata is unreadable ({error!r})")
            return None
        digest = hashlib.sha256()
        parts: list[bytes] = []
        for index in range(pieces):
            part = self.client.get(self._name("d", key, token, str(index)))
            if part is None:
                self._damaged(key, token, f"piece {index} of {pieces} is missing")
                return None
            digest.update(part)
            parts.append(part)
        if sum(map(len, parts)) != size or digest.hexdigest() != sha256:
            self._damaged(key, token, "data does not match its recorded size and SHA-256")
            return None
        # Joined once, and the pieces let go; a single piece (any asset up to 4 MiB) is used as it is, not copied.
        data = b"".join(parts)
        del parts
        try:
            asset = _asset_from(data, fields)
        except (ValueError, KeyError, TypeError) as error:
            self._damaged(key, token, f"metadata is unreadable ({error!r})")
            return None
        # The asset is read and whole: failing to mark it as used is no reason to miss it (and pay again).
        try:
            self._touch(args=[self.prefix, key])
        except RedisError as error:
            _LOGGER.warning("asset cache: cannot mark entry %s as used: %s", key, error)
        return asset

    def put(self, key: str, asset: CachedAsset) -> None:
        size = len(asset.data)
        if size > self.max_bytes:
            _LOGGER.info("asset cache: %d bytes exceed ASSET_CACHE_MAX_BYTES; not stored", size)
            return
        token = secrets.token_hex(8)
        view = memoryview(asset.data)  # pieces are slices of the asset, sent without copying it
        offsets = range(0, size, self.piece_bytes)
        with self.client.pipeline(transaction=False) as pipe:
            for index, offset in enumerate(offsets):
                name = self._name("d", key, token, str(index))
                pipe.set(name, view[offset : offset + self.piece_bytes], px=self._pending_ms)
            pipe.execute()
        meta = json.dumps(_metadata_of(asset), ensure_ascii=False)
        sha256 = hashlib.sha256(asset.data).hexdigest()
        evicted = self._commit(args=[self.prefix, key, token, len(offsets), size, sha256, meta, self.max_bytes])
        if evicted is None:
            _LOGGER.warning("asset cache: pieces of entry %s expired before they were committed; not stored", key)
            return
        for old in evicted:
            _LOGGER.info("asset cache: evicted %s", old.decode())

    def _lock_nowait(self, key: str) -> _RedisLock | None:
        lock = _RedisLock(self, self._name("lock", key), secrets.token_hex(8))
        return lock if self.client.set(lock.name, lock.token, nx=True, px=self.lock_ms) else None

    def _damaged(self, key: str, token: str, reason: str) -> None:
        if self._discard(args=[self.prefix, key, token]):
            _LOGGER.warning("asset cache: entry %s is damaged (%s); removed", key, reason)
        else:
            _LOGGER.info("asset cache: entry %s was replaced while it was read; a miss", key)

    def _name(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)


@dataclass
class _RedisLock:
    """SET NX PX with a random token: it expires unless its owner renews it, and only the owner can drop it."""

    cache: RedisAssetCache
    name: str
    token: str

    def renew(self) -> bool:
        return bool(self.cache._renew(keys=[self.name], args=[self.token, self.cache.lock_ms]))

    def release(self) -> None:
        self.cache._release(keys=[self.name], args=[self.token])
