"""Background music for renders: uploads stored by content hash for RESULT_TTL_SECONDS (in the Redis that every
gateway replica shares, when there is one), and the music library."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import mimetypes
import os
import re
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from redis.exceptions import RedisError
from scenecast.v1 import types_pb2

from services.common.cache import CachedAsset, RedisAssetCache
from services.common.chunks import ChunkSink
from services.common.errors import FailedPrecondition, InvalidArgument, NotFound, ProviderUnavailable
from services.common.media import MediaInfo, probe
from services.common.state import private_dir, write_private_file

_LOGGER = logging.getLogger(__name__)

# How often expired uploads are looked for, in seconds.
_JANITOR_SECONDS = 30.0
_UPLOAD_ID = re.compile(r"[0-9a-f]{64}")
# An audio/* type as RFC 6838 allows its subtype: no spaces, parameters or path characters.
_AUDIO_MIME = re.compile(r"audio/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}")
_MAX_NAME_CHARS = 255
# Key prefix of uploaded music in the shared Redis: a key set apart from the media services' assets, with its own
# budget (MUSIC_UPLOADS_MAX_BYTES), so that neither evicts the other.
REDIS_PREFIX = "scenecast:music:"


@dataclass(frozen=True)
class MusicFile:
    """Music a render streams to the assembler."""

    path: Path
    mime_type: str
    size_bytes: int


@dataclass(frozen=True)
class StoredMusic:
    upload_id: str
    duration_ms: int
    expires_in_seconds: int


class MusicStore:
    """Keeps uploaded music in `folder`, named by the SHA-256 of its bytes (the same file uploaded twice is stored
    once), next to a small JSON file with its MIME type; and finds music in the operator's `library_dir`.

    An upload is kept for `ttl_seconds` after it was last uploaded or used by a render, then removed.

    With `shared` storage (the Redis that every replica shares), an upload is also stored there under its hash, and
    Redis is what says whether an upload exists and when it was last used; `folder` then holds this replica's copies
    of the uploads its renders stream (renders read music from a file), fetched on first use. Redis keeps uploads
    within its own byte budget, dropping the least recently used first: an upload past its time to live is refused
    at once, and its bytes go when a newer upload needs their room.
    """

    def __init__(
        self,
        folder: Path,
        max_bytes: int,
        ttl_seconds: float,
        library_dir: str,
        shared: RedisAssetCache | None = None,
    ) -> None:
        self._folder = folder
        self._max_bytes = max_bytes
        self._ttl = ttl_seconds
        self._library = Path(library_dir) if library_dir else None
        self._shared = shared
        # One transfer to or from Redis at a time: each holds a whole upload in memory (up to MAX_MUSIC_BYTES, twice
        # while its pieces are joined), which must stay well inside the gateway's memory limit.
        self._transfers = asyncio.Semaphore(1)
        self._janitor: asyncio.Task[None] | None = None

    async def upload(self, mime_type: str, size_bytes: int, chunks: AsyncIterator[types_pb2.MediaChunk]) -> StoredMusic:
        """Receives the bytes, checks they decode as audio, and stores them under their hash."""
        if not _AUDIO_MIME.fullmatch(mime_type):
            raise InvalidArgument(
                f"start.mime_type must be an audio/* type such as audio/mpeg or audio/wav (got {mime_type[:100]!r})"
            )
        if size_bytes > self._max_bytes:
            raise InvalidArgument(
                f"start.size_bytes is {size_bytes}, over the gateway's MAX_MUSIC_BYTES of {self._max_bytes}; "
                "shorten or compress the music"
            )
        private_dir(self._folder, "RENDER_OUTPUT_DIR")
        self._start_janitor()
        partial = self._folder / f".upload-{uuid.uuid4().hex}"
        try:
            sink = ChunkSink(partial, size_bytes, "start", self._max_bytes)
            digest = hashlib.sha256()
            try:
                async for chunk in chunks:
                    sink.write(chunk)
                    digest.update(chunk.data)
            finally:
                sink.close()
            if not sink.complete:
                raise InvalidArgument(
                    f"the upload ended after {sink.received_bytes} of the {size_bytes} bytes that start.size_bytes "
                    "announced; send the whole file"
                )
            info = await asyncio.to_thread(_probe_audio, partial, "music")
            upload_id = digest.hexdigest()
            if self._shared is not None:
                async with self._transfers:
                    await asyncio.to_thread(self._share, self._shared, partial, upload_id, mime_type, info)
            await asyncio.to_thread(self._keep, partial, upload_id, mime_type)
        finally:
            partial.unlink(missing_ok=True)
        _LOGGER.info("stored music %s (%d bytes, %d ms)", upload_id, size_bytes, info.duration_ms)
        return StoredMusic(upload_id, info.duration_ms, round(self._ttl))

    def _start_janitor(self) -> None:
        if self._janitor is None:
            self._janitor = asyncio.create_task(self._expire_uploads())

    def _keep(self, partial: Path, upload_id: str, mime_type: str) -> None:
        """Both files appear whole or not at all (written beside, then renamed); the metadata first, since a lookup
        needs both."""
        write_private_file(self._folder / f"{upload_id}.json", json.dumps({"mime_type": mime_type}).encode())
        os.replace(partial, self._folder / upload_id)

    async def uploaded(self, upload_id: str) -> MusicFile:
        """An upload by its id; using it renews its time to live, so it outlasts the render that streams it."""
        if not _UPLOAD_ID.fullmatch(upload_id):
            raise InvalidArgument(
                f"music.upload_id must be the 64-character id that UploadMusic returned (got {upload_id[:100]!r})"
            )
        if self._shared is None:
            music = await asyncio.to_thread(self._local_copy, upload_id, self._ttl)
        else:
            music = await self._shared_upload(self._shared, upload_id)
        if music is None:
            raise NotFound(
                f"music.upload_id {upload_id} is unknown or has expired (uploads are kept {self._ttl:.0f} s after "
                "their last use); upload the music again"
            )
        return music

    def _local_copy(self, upload_id: str, max_age: float | None) -> MusicFile | None:
        """The upload in `folder`, renewed, unless it is missing or (with `max_age`) untouched for that long."""
        audio = self._folder / upload_id
        metadata = self._folder / f"{upload_id}.json"
        try:
            if max_age is not None and audio.stat().st_mtime < time.time() - max_age:
                return None  # expired, even if the janitor has not removed it yet
            mime_type = json.loads(metadata.read_text())["mime_type"]
            for path in (audio, metadata):
                os.utime(path)
            return MusicFile(audio, mime_type, audio.stat().st_size)
        except FileNotFoundError:
            return None

    async def _shared_upload(self, shared: RedisAssetCache, upload_id: str) -> MusicFile | None:
        """The upload as Redis knows it, from this replica's copy or fetched into one."""
        try:
            age, now_ms = await asyncio.to_thread(_age_seconds, shared, upload_id)
            if age is None or age > self._ttl:
                return None
            # This replica's copy may be older than the time to live (used meanwhile through other replicas): Redis
            # has just said the upload is alive.
            music = await asyncio.to_thread(self._local_copy, upload_id, None)
            if music is not None:
                await asyncio.to_thread(_mark_used, shared, upload_id, now_ms)
                return music
            private_dir(self._folder, "RENDER_OUTPUT_DIR")
            self._start_janitor()
            async with self._transfers:
                return await asyncio.to_thread(self._fetch, shared, upload_id)
        except RedisError as error:
            raise _storage_unavailable(error) from None

    def _share(self, shared: RedisAssetCache, path: Path, upload_id: str, mime_type: str, info: MediaInfo) -> None:
        asset = CachedAsset(data=path.read_bytes(), mime_type=mime_type, model="", duration_ms=info.duration_ms)
        try:
            shared.put(upload_id, asset)
            stored = _age_seconds(shared, upload_id)[0] is not None
        except RedisError as error:
            raise _storage_unavailable(error) from None
        if not stored:  # put() logs why, and does not raise: for a cache a lost entry is a miss, here it is a failure
            raise ProviderUnavailable("the shared music storage did not keep the upload; try again")

    def _fetch(self, shared: RedisAssetCache, upload_id: str) -> MusicFile | None:
        """Copies the upload from Redis into `folder` (its get renews it there), unless a render that waited for the
        same transfer has just done so."""
        if (music := self._local_copy(upload_id, None)) is not None:
            return music
        asset = shared.get(upload_id)
        if asset is None:
            return None
        partial = self._folder / f".fetch-{uuid.uuid4().hex}"
        try:
            partial.write_bytes(asset.data)
            self._keep(partial, upload_id, asset.mime_type)
        finally:
            partial.unlink(missing_ok=True)
        return MusicFile(self._folder / upload_id, asset.mime_type, len(asset.data))

    async def library_file(self, name: str) -> MusicFile:
        """A file of the music library, by its plain name; it must decode as audio."""
        if self._library is None:
            raise FailedPrecondition(
                "music.library_file needs a music library, and the gateway's MUSIC_LIBRARY_DIR is not set; upload "
                "the music with UploadMusic instead"
            )
        if not name or len(name) > _MAX_NAME_CHARS or ".." in name or any(c in name for c in "/\\\x00"):
            raise InvalidArgument(
                f"music.library_file must be a plain file name in the music library, without folders or '..' "
                f"(got {name[:100]!r})"
            )
        path = self._library / name
        if not path.is_file():
            raise NotFound(f"music.library_file {name!r} is not in the music library (MUSIC_LIBRARY_DIR)")
        mime_type = mimetypes.guess_type(name)[0] or ""
        if not mime_type.startswith("audio/"):
            raise InvalidArgument(f"music.library_file {name!r} is not named as audio (.mp3, .m4a, .wav, .ogg, .flac)")
        await asyncio.to_thread(_probe_audio, path, f"music.library_file {name!r}")
        return MusicFile(path, mime_type, path.stat().st_size)

    async def _expire_uploads(self) -> None:
        while True:
            await asyncio.sleep(min(_JANITOR_SECONDS, self._ttl))
            await asyncio.to_thread(self.expire)

    def expire(self) -> None:
        """Removes uploads (and partial files of abandoned uploads) untouched for the time to live."""
        cutoff = time.time() - self._ttl
        with contextlib.suppress(FileNotFoundError):
            for path in self._folder.iterdir():
                with contextlib.suppress(FileNotFoundError):
                    if path.stat().st_mtime < cutoff:
                        path.unlink()


def shared_storage(url: str, max_bytes: int) -> RedisAssetCache | None:
    """The Redis at ASSET_CACHE_URL as music storage (under its own prefix and budget), or None when it is not set."""
    if not url:
        return None
    try:
        # from_url makes the client the media services' cache uses (fail fast, one retry), reused here as it is.
        client = RedisAssetCache.from_url(url, max_bytes).client
    except ValueError as error:
        raise ValueError(f"ASSET_CACHE_URL: {error}") from None
    return RedisAssetCache(client, max_bytes, prefix=REDIS_PREFIX)


def _age_seconds(shared: RedisAssetCache, upload_id: str) -> tuple[float | None, int]:
    """Seconds since the upload was stored or last used (None when Redis does not hold it), and the server's time in
    milliseconds: both by the Redis server's clock, as replicas' clocks may differ. The cache keeps each entry's last
    use in its `lru` sorted set."""
    with shared.client.pipeline(transaction=False) as pipe:
        pipe.zscore(f"{shared.prefix}lru", upload_id)
        pipe.time()
        last_used_ms, (seconds, microseconds) = pipe.execute()
    now_ms = seconds * 1000 + microseconds // 1000
    return (None if last_used_ms is None else (now_ms - last_used_ms) / 1000), now_ms


def _mark_used(shared: RedisAssetCache, upload_id: str, now_ms: int) -> None:
    """Renews the upload in Redis as a read from it would (XX: never adds an upload that was dropped meanwhile)."""
    shared.client.zadd(f"{shared.prefix}lru", {upload_id: now_ms}, xx=True)


def _storage_unavailable(error: Exception) -> ProviderUnavailable:
    """Redis's own message is logged, not returned: it names the operator's hosts."""
    _LOGGER.warning("shared music storage (ASSET_CACHE_URL) failed: %s", error)
    return ProviderUnavailable("the shared music storage is unavailable; try again")


def _probe_audio(path: Path, field: str) -> MediaInfo:
    """Decodes the file's audio; FFmpeg's own message is left out, since it names the gateway's folders."""
    try:
        info = probe(path, field)
    except InvalidArgument:
        raise InvalidArgument(f"{field}: the file does not decode as audio") from None
    if not info.has_audio:
        raise InvalidArgument(f"{field}: the file has no audio stream")
    return info
